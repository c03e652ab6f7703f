//! The compiled pipelines: every WGSL entry point of `src/shaders/`, compiled once per device. The ops
//! that dispatch them live in [`crate::ops`], one module per WGSL file.

use kiln_core::format::DType;

use crate::context::{Gpu, GpuError};
use crate::ops::gemm::GemmMode;

/// Every pipeline, compiled once per device.
#[derive(Debug)]
pub struct Kernels {
    pub(crate) gemm_module: wgpu::ShaderModule,
    /// One explicit layout for every GEMM variant, so each binds the same six buffers whether or not its
    /// weight type reads the scales.
    gemm_layout: wgpu::PipelineLayout,
    gemm_bind_layout: wgpu::BindGroupLayout,
    gemm: [wgpu::ComputePipeline; 6],
    pub(crate) pad_forward: wgpu::ComputePipeline,
    pub(crate) pad_backward: wgpu::ComputePipeline,
    pub(crate) pool_forward: wgpu::ComputePipeline,
    pub(crate) pool_backward: wgpu::ComputePipeline,
    pub(crate) relu_forward: wgpu::ComputePipeline,
    pub(crate) relu_backward: wgpu::ComputePipeline,
    pub(crate) softmax_xent: wgpu::ComputePipeline,
    pub(crate) column_sums: wgpu::ComputePipeline,
    pub(crate) sgd: wgpu::ComputePipeline,
    pub(crate) momentum: wgpu::ComputePipeline,
    pub(crate) adam: wgpu::ComputePipeline,
}

impl Kernels {
    pub fn new(gpu: &Gpu) -> Result<Kernels, GpuError> {
        gpu.scoped(|| {
            let module = |name: &str, source: &str| {
                gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
            };
            let gemm = module("gemm.wgsl", include_str!("shaders/gemm.wgsl"));
            let layers = module("layers.wgsl", include_str!("shaders/layers.wgsl"));
            let loss = module("loss.wgsl", include_str!("shaders/loss.wgsl"));
            let optimizer = module("optimizer.wgsl", include_str!("shaders/optimizer.wgsl"));
            let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let uniform = wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            };
            let gemm_bind_layout = gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("gemm"),
                entries: &[
                    uniform,
                    storage(1, true),
                    storage(2, true),
                    storage(3, true),
                    storage(4, false),
                    storage(5, true),
                ],
            });
            let gemm_layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("gemm"),
                bind_group_layouts: &[Some(&gemm_bind_layout)],
                immediate_size: 0,
            });
            let gemm_pipeline = |mode: GemmMode, dtype: DType| {
                gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("gemm"),
                    layout: Some(&gemm_layout),
                    module: &gemm,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[("MODE", mode as u32 as f64), ("DTYPE", f64::from(dtype.code()))],
                        ..Default::default()
                    },
                    cache: None,
                })
            };
            let pipeline = |module: &wgpu::ShaderModule, entry: &str, constants: &[(&str, f64)]| {
                gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
                    cache: None,
                })
            };
            Kernels {
                gemm: GemmMode::ALL.map(|mode| gemm_pipeline(mode, DType::F32)),
                pad_forward: pipeline(&layers, "pad_forward", &[]),
                pad_backward: pipeline(&layers, "pad_backward", &[]),
                pool_forward: pipeline(&layers, "pool_forward", &[]),
                pool_backward: pipeline(&layers, "pool_backward", &[]),
                relu_forward: pipeline(&layers, "relu_forward", &[]),
                relu_backward: pipeline(&layers, "relu_backward", &[]),
                softmax_xent: pipeline(&loss, "softmax_xent", &[]),
                column_sums: pipeline(&loss, "column_sums", &[]),
                sgd: pipeline(&optimizer, "sgd", &[]),
                momentum: pipeline(&optimizer, "momentum", &[]),
                adam: pipeline(&optimizer, "adam", &[]),
                gemm_module: gemm,
                gemm_layout,
                gemm_bind_layout,
            }
        })
    }

    /// The f32 GEMM pipeline of `mode`.
    pub fn gemm(&self, mode: GemmMode) -> &wgpu::ComputePipeline {
        &self.gemm[mode as usize]
    }

    /// The one bind group layout every GEMM pipeline shares.
    pub(crate) fn gemm_bind_layout(&self) -> &wgpu::BindGroupLayout {
        &self.gemm_bind_layout
    }

    /// A forward GEMM pipeline that dequantizes B from `dtype` (compiled on demand, at setup time).
    pub fn packed_gemm(&self, gpu: &Gpu, mode: GemmMode, dtype: DType) -> Result<wgpu::ComputePipeline, GpuError> {
        if dtype == DType::F32 {
            return Ok(self.gemm[mode as usize].clone());
        }
        gpu.scoped(|| {
            gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("gemm (packed)"),
                layout: Some(&self.gemm_layout),
                module: &self.gemm_module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("MODE", mode as u32 as f64), ("DTYPE", f64::from(dtype.code()))],
                    ..Default::default()
                },
                cache: None,
            })
        })
    }
}

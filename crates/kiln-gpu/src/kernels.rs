//! The compiled kernels, and one small struct per op: its parameters (a uniform buffer), its bind group
//! and its grid, all made once. Encoding an op later creates nothing.
//!
//! WGSL sources live in `src/shaders/`; each names its CPU reference. Parameters travel in uniform
//! buffers rather than push constants, which WebGPU does not have.

use bytemuck::{Pod, Zeroable};
use kiln_core::format::DType;

use crate::context::{Gpu, GpuError};

/// Invocations per workgroup of the element-wise kernels.
const LANES: u32 = 256;
/// Largest workgroup count in one grid dimension (WebGPU's default limit).
const MAX_GROUPS: u32 = 65_535;

/// How [`GemmOp`] reads its operands (the MODE override in gemm.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmMode {
    DenseForward = 0,
    ConvForward = 1,
    DenseInputGrad = 2,
    ConvInputGrad = 3,
    DenseWeightGrad = 4,
    ConvWeightGrad = 5,
}

/// Optimizer kernels (entry points of optimizer.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    Sgd,
    Momentum,
    Adam,
}

/// Every pipeline, compiled once per device.
#[derive(Debug)]
pub struct Kernels {
    gemm_module: wgpu::ShaderModule,
    /// One explicit layout for every GEMM variant, so each binds the same six buffers whether or not its
    /// weight type reads the scales.
    gemm_layout: wgpu::PipelineLayout,
    gemm_bind_layout: wgpu::BindGroupLayout,
    gemm: [wgpu::ComputePipeline; 6],
    pad_forward: wgpu::ComputePipeline,
    pad_backward: wgpu::ComputePipeline,
    pool_forward: wgpu::ComputePipeline,
    pool_backward: wgpu::ComputePipeline,
    relu_forward: wgpu::ComputePipeline,
    relu_backward: wgpu::ComputePipeline,
    softmax_xent: wgpu::ComputePipeline,
    column_sums: wgpu::ComputePipeline,
    sgd: wgpu::ComputePipeline,
    momentum: wgpu::ComputePipeline,
    adam: wgpu::ComputePipeline,
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
            let modes = [
                GemmMode::DenseForward,
                GemmMode::ConvForward,
                GemmMode::DenseInputGrad,
                GemmMode::ConvInputGrad,
                GemmMode::DenseWeightGrad,
                GemmMode::ConvWeightGrad,
            ];
            Kernels {
                gemm: modes.map(|mode| gemm_pipeline(mode, DType::F32)),
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

/// A grid covering `count` workgroups within the per-dimension limit.
fn grid(count: u32) -> (u32, u32) {
    let count = count.max(1);
    let x = count.min(MAX_GROUPS);
    (x, count.div_ceil(x))
}

/// One dispatch: pipeline, bind group, parameters, grid.
#[derive(Debug)]
pub struct Op {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    groups: (u32, u32),
    label: &'static str,
}

impl Op {
    fn new(
        gpu: &Gpu,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<Op, GpuError> {
        Self::with_layout(gpu, label, pipeline, &pipeline.get_bind_group_layout(0), params, buffers, groups)
    }

    fn with_layout(
        gpu: &Gpu,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<Op, GpuError> {
        gpu.scoped(|| {
            let params_buffer = gpu.uniform(label, params);
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params_buffer.as_entire_binding() }];
            entries.extend(
                buffers
                    .iter()
                    .map(|&(binding, buffer)| wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() }),
            );
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries: &entries,
            });
            Op { pipeline: pipeline.clone(), bind_group, params: params_buffer, groups, label }
        })
    }

    /// Records the dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }

    /// New parameters and grid (a different batch size): a queue write, no new objects.
    fn update(&mut self, queue: &wgpu::Queue, params: &[u8], groups: (u32, u32)) {
        queue.write_buffer(&self.params, 0, params);
        self.groups = groups;
    }

    pub fn label(&self) -> &'static str {
        self.label
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    h: u32,
    w: u32,
    cin: u32,
    cout: u32,
    flags: u32,
    block: u32,
    pad: [u32; 2],
}

/// Geometry of one conv or dense layer on a batch: `h = w = 1` for dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerGeometry {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
}

impl LayerGeometry {
    /// A conv or dense layer's geometry on `batch` images of shape `input`: a dense layer sees each image
    /// as one pixel of `input.len()` channels.
    pub fn of(conv: bool, input: kiln_core::Shape, cout: usize, batch: usize) -> LayerGeometry {
        if conv {
            LayerGeometry { batch, h: input.h, w: input.w, cin: input.c, cout }
        } else {
            LayerGeometry { batch, h: 1, w: 1, cin: input.len(), cout }
        }
    }
}

/// B as stored: the value words, the scales (any buffer for f32 and f16) and the values per scale.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    pub words: &'a wgpu::Buffer,
    pub scales: &'a wgpu::Buffer,
    pub block: usize,
}

/// A matrix product in one of the [`GemmMode`]s.
#[derive(Debug)]
pub struct GemmOp {
    op: Op,
    mode: GemmMode,
    flags: u32,
    block: usize,
}

impl GemmOp {
    /// `a`, `b`, `c` as the mode describes (see gemm.wgsl); `bias` added when given; `relu` applied last.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        mode: GemmMode,
        geometry: LayerGeometry,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        relu: bool,
        c: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Result<GemmOp, GpuError> {
        let pipeline = &kernels.gemm[mode as usize];
        let b = PackedB { words: b, scales: dummy, block: 0 };
        Self::build(gpu, kernels, pipeline, mode, geometry, a, b, bias, relu, c, dummy)
    }

    /// As [`GemmOp::new`] with B stored as a packed tensor, dequantized by `pipeline` (from
    /// [`Kernels::packed_gemm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        gpu: &Gpu,
        kernels: &Kernels,
        pipeline: &wgpu::ComputePipeline,
        mode: GemmMode,
        geometry: LayerGeometry,
        a: &wgpu::Buffer,
        b: PackedB<'_>,
        bias: Option<&wgpu::Buffer>,
        relu: bool,
        c: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Result<GemmOp, GpuError> {
        let flags = u32::from(bias.is_some()) | (u32::from(relu) << 1);
        let (params, groups) = Self::layout(mode, geometry, flags, b.block);
        let op = Op::with_layout(
            gpu,
            "gemm",
            pipeline,
            &kernels.gemm_bind_layout,
            bytemuck::bytes_of(&params),
            &[(1, a), (2, b.words), (3, bias.unwrap_or(dummy)), (4, c), (5, b.scales)],
            groups,
        )?;
        Ok(GemmOp { op, mode, flags, block: b.block })
    }

    fn layout(mode: GemmMode, g: LayerGeometry, flags: u32, block: usize) -> (GemmParams, (u32, u32)) {
        let pixels = g.batch * g.h * g.w;
        let (m, n, k) = match mode {
            GemmMode::DenseForward => (g.batch, g.cout, g.cin),
            GemmMode::ConvForward => (pixels, g.cout, 9 * g.cin),
            GemmMode::DenseInputGrad => (g.batch, g.cin, g.cout),
            GemmMode::ConvInputGrad => (pixels, g.cin, 9 * g.cout),
            GemmMode::DenseWeightGrad => (g.cin, g.cout, g.batch),
            GemmMode::ConvWeightGrad => (9 * g.cin, g.cout, pixels),
        };
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: g.batch as u32,
            h: g.h as u32,
            w: g.w as u32,
            cin: g.cin as u32,
            cout: g.cout as u32,
            flags,
            block: block as u32,
            pad: [0; 2],
        };
        (params, (n.div_ceil(64) as u32, m.div_ceil(64) as u32))
    }

    pub fn set_geometry(&mut self, queue: &wgpu::Queue, geometry: LayerGeometry) {
        let (params, groups) = Self::layout(self.mode, geometry, self.flags, self.block);
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct LayerParams {
    len: u32,
    batch: u32,
    h: u32,
    w: u32,
    c: u32,
    top: u32,
    left: u32,
    out_h: u32,
    out_w: u32,
    pad: [u32; 3],
}

/// Pad, pool and ReLU passes (layers.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPass {
    /// `src` [batch, h, w, c] → `dst` [batch, out_h, out_w, c].
    PadForward { top: usize, left: usize, out_h: usize, out_w: usize },
    /// `src` [batch, out_h, out_w, c] → `dst` [batch, h, w, c].
    PadBackward { top: usize, left: usize, out_h: usize, out_w: usize },
    /// `src` [batch, h, w, c] → `dst` [batch, h/2, w/2, c] and `winners`.
    PoolForward,
    /// `src` = dy [batch, h/2, w/2, c], `winners` → `dst` = dx [batch, h, w, c].
    PoolBackward,
    /// `dst` in place.
    ReluForward,
    /// `dst` (a gradient) in place, masked by `src` (the ReLU's output).
    ReluBackward,
}

/// One of the [`LayerPass`]es over a `[batch, h, w, c]` input.
#[derive(Debug)]
pub struct LayerOp {
    op: Op,
    pass: LayerPass,
}

impl LayerOp {
    /// `(batch, h, w, c)` is the layer's input shape. Buffers the pass does not use may be any buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        pass: LayerPass,
        shape: (usize, usize, usize, usize),
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        winners: Option<&wgpu::Buffer>,
    ) -> Result<LayerOp, GpuError> {
        let (params, groups) = Self::layout(pass, shape);
        let (pipeline, buffers): (&wgpu::ComputePipeline, Vec<(u32, &wgpu::Buffer)>) = match pass {
            LayerPass::PadForward { .. } => (&kernels.pad_forward, vec![(1, src), (2, dst)]),
            LayerPass::PadBackward { .. } => (&kernels.pad_backward, vec![(1, src), (2, dst)]),
            LayerPass::PoolForward | LayerPass::PoolBackward => {
                let winners = winners.ok_or_else(|| GpuError::Shape("pooling needs a winners buffer".into()))?;
                let pipeline =
                    if pass == LayerPass::PoolForward { &kernels.pool_forward } else { &kernels.pool_backward };
                (pipeline, vec![(1, src), (2, dst), (3, winners)])
            }
            LayerPass::ReluForward => (&kernels.relu_forward, vec![(2, dst)]),
            LayerPass::ReluBackward => (&kernels.relu_backward, vec![(1, src), (2, dst)]),
        };
        let op = Op::new(gpu, "layer", pipeline, bytemuck::bytes_of(&params), &buffers, groups)?;
        Ok(LayerOp { op, pass })
    }

    fn layout(pass: LayerPass, (batch, h, w, c): (usize, usize, usize, usize)) -> (LayerParams, (u32, u32)) {
        let (top, left, out_h, out_w) = match pass {
            LayerPass::PadForward { top, left, out_h, out_w } | LayerPass::PadBackward { top, left, out_h, out_w } => {
                (top, left, out_h, out_w)
            }
            LayerPass::PoolForward | LayerPass::PoolBackward => (0, 0, h / 2, w / 2),
            LayerPass::ReluForward | LayerPass::ReluBackward => (0, 0, h, w),
        };
        let len = match pass {
            LayerPass::PadForward { .. } | LayerPass::PoolForward => batch * out_h * out_w * c,
            _ => batch * h * w * c,
        };
        let params = LayerParams {
            len: len as u32,
            batch: batch as u32,
            h: h as u32,
            w: w as u32,
            c: c as u32,
            top: top as u32,
            left: left as u32,
            out_h: out_h as u32,
            out_w: out_w as u32,
            pad: [0; 3],
        };
        (params, grid((len as u32).div_ceil(LANES)))
    }

    pub fn set_shape(&mut self, queue: &wgpu::Queue, shape: (usize, usize, usize, usize)) {
        let (params, groups) = Self::layout(self.pass, shape);
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct LossParams {
    rows: u32,
    cols: u32,
    pad: [u32; 2],
}

/// Softmax cross-entropy: `logits` [rows, cols], `labels` (u32) → `dlogits`, `per_example` [rows, 2].
#[derive(Debug)]
pub struct SoftmaxXentOp {
    op: Op,
}

impl SoftmaxXentOp {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        (rows, cols): (usize, usize),
        logits: &wgpu::Buffer,
        labels: &wgpu::Buffer,
        dlogits: &wgpu::Buffer,
        per_example: &wgpu::Buffer,
    ) -> Result<SoftmaxXentOp, GpuError> {
        let params = LossParams { rows: rows as u32, cols: cols as u32, pad: [0; 2] };
        let buffers = [(1, logits), (2, labels), (3, dlogits), (4, per_example)];
        let op = Op::new(
            gpu,
            "softmax_xent",
            &kernels.softmax_xent,
            bytemuck::bytes_of(&params),
            &buffers,
            grid(rows.div_ceil(64) as u32),
        )?;
        Ok(SoftmaxXentOp { op })
    }

    pub fn set_rows(&mut self, queue: &wgpu::Queue, (rows, cols): (usize, usize)) {
        let params = LossParams { rows: rows as u32, cols: cols as u32, pad: [0; 2] };
        self.op.update(queue, bytemuck::bytes_of(&params), grid(rows.div_ceil(64) as u32));
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

/// Column sums of a `[rows, cols]` matrix (bias gradients, batch totals), in a fixed order.
#[derive(Debug)]
pub struct ColumnSumsOp {
    op: Op,
}

impl ColumnSumsOp {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        (rows, cols): (usize, usize),
        matrix: &wgpu::Buffer,
        sums: &wgpu::Buffer,
    ) -> Result<ColumnSumsOp, GpuError> {
        let params = LossParams { rows: rows as u32, cols: cols as u32, pad: [0; 2] };
        let op = Op::new(
            gpu,
            "column_sums",
            &kernels.column_sums,
            bytemuck::bytes_of(&params),
            &[(5, matrix), (6, sums)],
            grid(cols as u32),
        )?;
        Ok(ColumnSumsOp { op })
    }

    pub fn set_rows(&mut self, queue: &wgpu::Queue, (rows, cols): (usize, usize)) {
        let params = LossParams { rows: rows as u32, cols: cols as u32, pad: [0; 2] };
        self.op.update(queue, bytemuck::bytes_of(&params), grid(cols as u32));
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

/// Hyper-parameters of one update, as the shader reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct UpdateParams {
    pub len: u32,
    pub lr: f32,
    /// Adam's bias-corrected rate, `lr · sqrt(1 − β2^t) / (1 − β1^t)`.
    pub lr_t: f32,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub pad: u32,
}

/// One parameter tensor's update: `weights` −= f(`grad`, slots).
#[derive(Debug)]
pub struct UpdateOp {
    op: Op,
    len: u32,
}

impl UpdateOp {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        rule: UpdateRule,
        len: usize,
        grad: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        slots: &[wgpu::Buffer],
    ) -> Result<UpdateOp, GpuError> {
        let mut buffers = vec![(1, grad), (2, weights)];
        let pipeline = match rule {
            UpdateRule::Sgd => &kernels.sgd,
            UpdateRule::Momentum => &kernels.momentum,
            UpdateRule::Adam => &kernels.adam,
        };
        let wanted = match rule {
            UpdateRule::Sgd => 0,
            UpdateRule::Momentum => 1,
            UpdateRule::Adam => 2,
        };
        if slots.len() != wanted {
            return Err(GpuError::Shape(format!("{rule:?} needs {wanted} slot buffers, got {}", slots.len())));
        }
        buffers.extend(slots.iter().enumerate().map(|(i, s)| (3 + i as u32, s)));
        let params = UpdateParams { len: len as u32, ..Default::default() };
        let op = Op::new(
            gpu,
            "update",
            pipeline,
            bytemuck::bytes_of(&params),
            &buffers,
            grid((len as u32).div_ceil(LANES)),
        )?;
        Ok(UpdateOp { op, len: len as u32 })
    }

    /// This step's hyper-parameters (`len` is filled in).
    pub fn set(&mut self, queue: &wgpu::Queue, params: UpdateParams) {
        let params = UpdateParams { len: self.len, ..params };
        let groups = self.op.groups;
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

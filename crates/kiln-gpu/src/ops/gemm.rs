//! The tiled matrix product of gemm.wgsl: every conv and dense pass (forward, input gradient, weight
//! gradient), with implicit im2col for convs and f16/int8/int4/int2 weights dequantized as they load.

use bytemuck::{Pod, Zeroable};

use super::{Op, wgsl_struct_size};
use crate::context::{Gpu, GpuError};
use crate::kernels::Kernels;

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

impl GemmMode {
    pub const ALL: [GemmMode; 6] = [
        GemmMode::DenseForward,
        GemmMode::ConvForward,
        GemmMode::DenseInputGrad,
        GemmMode::ConvInputGrad,
        GemmMode::DenseWeightGrad,
        GemmMode::ConvWeightGrad,
    ];

    /// The forward, weight-gradient and input-gradient modes of a conv (`true`) or dense layer.
    pub fn passes(conv: bool) -> (GemmMode, GemmMode, GemmMode) {
        if conv {
            (GemmMode::ConvForward, GemmMode::ConvWeightGrad, GemmMode::ConvInputGrad)
        } else {
            (GemmMode::DenseForward, GemmMode::DenseWeightGrad, GemmMode::DenseInputGrad)
        }
    }
}

/// gemm.wgsl's `Params`.
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

const _: () = assert!(size_of::<GemmParams>() == wgsl_struct_size(include_str!("../shaders/gemm.wgsl"), "Params"));

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
    geometry: LayerGeometry,
    flags: u32,
    block: usize,
}

impl GemmOp {
    /// `a`, `b`, `c` as the mode describes (see gemm.wgsl), all f32; `bias` added when given; `relu` applied
    /// last. `geometry.batch` is the batch the op starts at.
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
        let pipeline = kernels.gemm(mode);
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
            kernels.gemm_bind_layout(),
            bytemuck::bytes_of(&params),
            &[(1, a), (2, b.words), (3, bias.unwrap_or(dummy)), (4, c), (5, b.scales)],
            groups,
        )?;
        Ok(GemmOp { op, mode, geometry, flags, block: b.block })
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

    /// Re-targets the product at `batch` images of the same geometry.
    pub fn set_batch(&mut self, queue: &wgpu::Queue, batch: usize) {
        self.geometry.batch = batch;
        let (params, groups) = Self::layout(self.mode, self.geometry, self.flags, self.block);
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

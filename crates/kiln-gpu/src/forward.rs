//! The forward pass on the device, recorded once from the network's plan. [`GpuNetwork`](crate::GpuNetwork)
//! (training) and [`GpuSession`](crate::GpuSession) (packed models) both build theirs here; they differ only
//! in where activations, pool winners and weights live, which the caller's closures say.

use kiln_core::format::DType;
use kiln_core::network::{Layer, Shape};
use kiln_core::plan::{Plan, Step};

use crate::context::{Gpu, GpuError};
use crate::kernels::Kernels;
use crate::ops::Dispatch;
use crate::ops::gemm::{GemmMode, GemmOp, LayerGeometry, PackedB};
use crate::ops::layers::{LayerOp, LayerPass};

/// A conv or dense layer's weights as the device holds them, and its f32 bias.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerWeights<'b> {
    pub dtype: DType,
    pub b: PackedB<'b>,
    pub bias: &'b wgpu::Buffer,
}

/// Where a forward pass reads and writes.
pub(crate) struct ForwardBuffers<'b, A, P, W> {
    /// The buffer that holds activation `k` (see [`Step::src`]).
    pub activation: A,
    /// The winners buffer of the pool layer with this index.
    pub winners: P,
    /// The weights of a conv or dense step.
    pub weights: W,
    /// Bound where an op reads nothing.
    pub dummy: &'b wgpu::Buffer,
}

/// One dispatch per step that does work, for batches of `batch` images (ops re-target later with
/// `set_batch`). ReLUs after a conv or dense layer run in its epilogue; flatten is free.
pub(crate) fn build<'b, A, P, W>(
    gpu: &Gpu,
    kernels: &Kernels,
    plan: &Plan<'_>,
    batch: usize,
    buffers: &ForwardBuffers<'b, A, P, W>,
) -> Result<Vec<Dispatch>, GpuError>
where
    A: Fn(usize) -> &'b wgpu::Buffer,
    P: Fn(usize) -> &'b wgpu::Buffer,
    W: Fn(&Step) -> Result<LayerWeights<'b>, GpuError>,
{
    let mut dispatches = Vec::new();
    for step in plan.steps() {
        let (src, dst) = ((buffers.activation)(step.src), (buffers.activation)(step.dst));
        let Shape { h, w, c } = step.input;
        let image = (batch, h, w, c);
        let op = match step.layer {
            Layer::Pad { top, left, .. } => {
                let pass = LayerPass::PadForward { top, left, out_h: step.output.h, out_w: step.output.w };
                Dispatch::Layer(LayerOp::new(gpu, kernels, pass, image, src, dst, None)?)
            }
            Layer::Conv2d { filters } | Layer::Dense { units: filters } => {
                let conv = matches!(step.layer, Layer::Conv2d { .. });
                let (mode, _, _) = GemmMode::passes(conv);
                let geometry = LayerGeometry::of(conv, step.input, filters, batch);
                let weights = (buffers.weights)(&step)?;
                let pipeline = kernels.packed_gemm(gpu, mode, weights.dtype)?;
                let relu = step.fuses_relu;
                let (b, bias) = (weights.b, Some(weights.bias));
                Dispatch::Gemm(GemmOp::build(
                    gpu,
                    kernels,
                    &pipeline,
                    mode,
                    geometry,
                    src,
                    b,
                    bias,
                    relu,
                    dst,
                    buffers.dummy,
                )?)
            }
            Layer::MaxPool => {
                let winners = Some((buffers.winners)(step.index));
                Dispatch::Layer(LayerOp::new(gpu, kernels, LayerPass::PoolForward, image, src, dst, winners)?)
            }
            Layer::Relu if step.fused => continue,
            Layer::Relu => Dispatch::Layer(LayerOp::new(gpu, kernels, LayerPass::ReluForward, image, src, dst, None)?),
            Layer::Flatten | Layer::Dropout { .. } => continue,
            layer => return Err(GpuError::UnsupportedLayer { layer: step.index, kind: layer.kind(), path: "yet" }),
        };
        dispatches.push(op);
    }
    Ok(dispatches)
}

//! The pad, max-pool and ReLU passes of layers.wgsl, forward beside backward.

use bytemuck::{Pod, Zeroable};

use super::{LANES, Op, grid, wgsl_struct_size};
use crate::context::{Gpu, GpuError};
use crate::kernels::Kernels;

/// layers.wgsl's `Params`.
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

const _: () = assert!(size_of::<LayerParams>() == wgsl_struct_size(include_str!("../shaders/layers.wgsl"), "Params"));

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
    /// The per-image input shape `(h, w, c)`.
    image: (usize, usize, usize),
}

impl LayerOp {
    /// `(batch, h, w, c)` is the layer's input shape at the batch the op starts at. Buffers the pass does
    /// not use may be any buffer.
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        pass: LayerPass,
        (batch, h, w, c): (usize, usize, usize, usize),
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        winners: Option<&wgpu::Buffer>,
    ) -> Result<LayerOp, GpuError> {
        let (params, groups) = Self::layout(pass, (batch, h, w, c));
        let (pipeline, buffers): (&wgpu::ComputePipeline, Vec<(u32, &wgpu::Buffer)>) = match pass {
            LayerPass::PadForward { .. } => (&kernels.pad_forward, vec![(1, src), (2, dst)]),
            LayerPass::PadBackward { .. } => (&kernels.pad_backward, vec![(1, src), (2, dst)]),
            LayerPass::PoolForward | LayerPass::PoolBackward => {
                let winners = winners.ok_or(GpuError::NoWinnersBuffer)?;
                let pipeline =
                    if pass == LayerPass::PoolForward { &kernels.pool_forward } else { &kernels.pool_backward };
                (pipeline, vec![(1, src), (2, dst), (3, winners)])
            }
            LayerPass::ReluForward => (&kernels.relu_forward, vec![(2, dst)]),
            LayerPass::ReluBackward => (&kernels.relu_backward, vec![(1, src), (2, dst)]),
        };
        let op = Op::new(gpu, "layer", pipeline, bytemuck::bytes_of(&params), &buffers, groups)?;
        Ok(LayerOp { op, pass, image: (h, w, c) })
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

    /// Re-targets the pass at `batch` images of the same shape.
    pub fn set_batch(&mut self, queue: &wgpu::Queue, batch: usize) {
        let (h, w, c) = self.image;
        let (params, groups) = Self::layout(self.pass, (batch, h, w, c));
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

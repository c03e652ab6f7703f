//! loss.wgsl: softmax cross-entropy with its gradient, and deterministic column sums (bias gradients, the
//! batch's loss and correct count).

use bytemuck::{Pod, Zeroable};

use super::{Op, grid, wgsl_struct_size};
use crate::context::{Gpu, GpuError};
use crate::kernels::Kernels;

/// loss.wgsl's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct LossParams {
    rows: u32,
    cols: u32,
    pad: [u32; 2],
}

const _: () = assert!(size_of::<LossParams>() == wgsl_struct_size(include_str!("../shaders/loss.wgsl"), "Params"));

impl LossParams {
    fn new(rows: usize, cols: usize) -> Self {
        LossParams { rows: rows as u32, cols: cols as u32, pad: [0; 2] }
    }
}

/// Softmax cross-entropy: `logits` [batch, classes], `labels` (u32) → `dlogits`, `per_example` [batch, 2].
#[derive(Debug)]
pub struct SoftmaxXentOp {
    op: Op,
    classes: usize,
}

impl SoftmaxXentOp {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        (batch, classes): (usize, usize),
        logits: &wgpu::Buffer,
        labels: &wgpu::Buffer,
        dlogits: &wgpu::Buffer,
        per_example: &wgpu::Buffer,
    ) -> Result<SoftmaxXentOp, GpuError> {
        let params = LossParams::new(batch, classes);
        let buffers = [(1, logits), (2, labels), (3, dlogits), (4, per_example)];
        let groups = grid(batch.div_ceil(64) as u32);
        let op = Op::new(gpu, "softmax_xent", &kernels.softmax_xent, bytemuck::bytes_of(&params), &buffers, groups)?;
        Ok(SoftmaxXentOp { op, classes })
    }

    pub fn set_batch(&mut self, queue: &wgpu::Queue, batch: usize) {
        let params = LossParams::new(batch, self.classes);
        self.op.update(queue, bytemuck::bytes_of(&params), grid(batch.div_ceil(64) as u32));
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

/// Column sums of a `[batch × rows_per_image, cols]` matrix (bias gradients, batch totals), in a fixed
/// order.
#[derive(Debug)]
pub struct ColumnSumsOp {
    op: Op,
    rows_per_image: usize,
    cols: usize,
}

impl ColumnSumsOp {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        (batch, rows_per_image, cols): (usize, usize, usize),
        matrix: &wgpu::Buffer,
        sums: &wgpu::Buffer,
    ) -> Result<ColumnSumsOp, GpuError> {
        let params = LossParams::new(batch * rows_per_image, cols);
        let buffers = [(5, matrix), (6, sums)];
        let op = Op::new(
            gpu,
            "column_sums",
            &kernels.column_sums,
            bytemuck::bytes_of(&params),
            &buffers,
            grid(cols as u32),
        )?;
        Ok(ColumnSumsOp { op, rows_per_image, cols })
    }

    pub fn set_batch(&mut self, queue: &wgpu::Queue, batch: usize) {
        let params = LossParams::new(batch * self.rows_per_image, self.cols);
        self.op.update(queue, bytemuck::bytes_of(&params), grid(self.cols as u32));
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

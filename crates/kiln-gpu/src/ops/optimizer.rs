//! optimizer.wgsl: SGD, Momentum and Adam with TensorFlow 1's semantics, one dispatch per tensor.

use bytemuck::{Pod, Zeroable};

use super::{LANES, Op, grid, wgsl_struct_size};
use crate::context::{Gpu, GpuError};
use crate::kernels::Kernels;

/// Optimizer kernels (entry points of optimizer.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    Sgd,
    Momentum,
    Adam,
}

impl UpdateRule {
    /// Slot tensors per parameter tensor: Momentum's accumulator, Adam's two moments.
    pub fn slot_count(self) -> usize {
        match self {
            UpdateRule::Sgd => 0,
            UpdateRule::Momentum => 1,
            UpdateRule::Adam => 2,
        }
    }
}

/// Hyper-parameters of one update, as the shader reads them (optimizer.wgsl's `Params`).
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

const _: () =
    assert!(size_of::<UpdateParams>() == wgsl_struct_size(include_str!("../shaders/optimizer.wgsl"), "Params"));

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
        if slots.len() != rule.slot_count() {
            return Err(GpuError::SlotBuffers {
                rule: format!("{rule:?}"),
                wanted: rule.slot_count(),
                got: slots.len(),
            });
        }
        buffers.extend(slots.iter().enumerate().map(|(i, s)| (3 + i as u32, s)));
        let params = UpdateParams { len: len as u32, ..Default::default() };
        let groups = grid((len as u32).div_ceil(LANES));
        let op = Op::new(gpu, "update", pipeline, bytemuck::bytes_of(&params), &buffers, groups)?;
        Ok(UpdateOp { op, len: len as u32 })
    }

    /// This step's hyper-parameters (`len` is filled in).
    pub fn set(&mut self, queue: &wgpu::Queue, params: UpdateParams) {
        let params = UpdateParams { len: self.len, ..params };
        let groups = self.op.groups();
        self.op.update(queue, bytemuck::bytes_of(&params), groups);
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.op.encode(pass)
    }
}

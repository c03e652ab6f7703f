//! A whole network on the GPU: forward, loss, backward and the optimizer update in one submission per
//! step. Parameters, gradients, optimizer slots and every activation stay on the device; a step uploads
//! the batch (images and labels) plus each tensor's update parameters, and reads back two numbers (the
//! summed loss and the correct count).
//!
//! The buffers follow the network's plan, as kiln-train's `Model` does: one buffer per activation (layer
//! `i` reads `steps[i].src` and writes `steps[i].dst`; ReLU and flatten work in place), and the backward
//! pass ping-pongs between two gradient buffers. The forward pass is [`crate::forward`]'s, shared with
//! [`GpuSession`](crate::GpuSession).

use kiln_core::format::DType;
use kiln_core::network::{Layer, Shape};
use kiln_core::plan::Plan;

use crate::context::{Gpu, GpuError, Readback};
use crate::forward::{self, ForwardBuffers, LayerWeights};
use crate::kernels::Kernels;
use crate::ops::Dispatch;
use crate::ops::gemm::{GemmMode, GemmOp, LayerGeometry, PackedB};
use crate::ops::layers::{LayerOp, LayerPass};
use crate::ops::loss::{ColumnSumsOp, SoftmaxXentOp};
use crate::ops::optimizer::{UpdateOp, UpdateParams, UpdateRule};

/// Optimizer settings, as kiln-train's `OptimizerConfig` holds them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSpec {
    pub rule: UpdateRule,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl OptimizerSpec {
    pub fn slot_count(&self) -> usize {
        self.rule.slot_count()
    }
}

/// Summary of one training step, read back from the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScore {
    /// Mean softmax cross-entropy over the batch.
    pub cost: f32,
    pub correct: usize,
}

/// A network, its parameters and (when training) its gradients and optimizer state, on one device.
#[derive(Debug)]
pub struct GpuNetwork<'g> {
    gpu: &'g Gpu,
    layers: Vec<Layer>,
    input: Shape,
    classes: usize,
    max_batch: usize,
    /// The batch size the ops are configured for.
    batch: usize,
    /// The flat parameter list in the plan's convention (weights `2k`, bias `2k + 1`).
    params: Vec<wgpu::Buffer>,
    param_lens: Vec<usize>,
    grads: Vec<wgpu::Buffer>,
    /// `slots[i]`: tensor `i`'s optimizer slots.
    slots: Vec<Vec<wgpu::Buffer>>,
    acts: Vec<wgpu::Buffer>,
    labels: wgpu::Buffer,
    per_example: wgpu::Buffer,
    totals: wgpu::Buffer,
    totals_readback: Readback,
    logits_readback: Readback,
    forward: Vec<Dispatch>,
    /// The loss, its totals and the backward pass, when training.
    backward: Vec<Dispatch>,
    updates: Vec<UpdateOp>,
    optimizer: Option<OptimizerSpec>,
    /// β1^t and β2^t for the next Adam update (TF1 starts them at β1 and β2).
    adam_powers: (f32, f32),
    /// Bytes the host wrote to the device in the last step (batch, labels, parameters of the ops).
    last_upload_bytes: u64,
}

impl<'g> GpuNetwork<'g> {
    /// Uploads `params` (the flat parameter list: weights then bias of each conv/dense layer, kiln-train's
    /// layouts) and builds every op for batches of up to `max_batch`. With an optimizer, it also builds the
    /// backward pass, the loss and the updates, with zeroed slots.
    pub fn new(
        gpu: &'g Gpu,
        kernels: &Kernels,
        layers: &[Layer],
        input: Shape,
        params: &[&[f32]],
        max_batch: usize,
        optimizer: Option<OptimizerSpec>,
    ) -> Result<Self, GpuError> {
        if max_batch == 0 {
            return Err(GpuError::ZeroBatch);
        }
        let plan = Plan::new(layers, input)?;
        let steps: Vec<_> = plan.steps().collect();
        // GPU training runs the series' layers (dropout as the identity is not training it).
        if let Some(step) = steps.iter().find(|s| !s.layer.is_series()) {
            let (layer, kind) = (step.index, step.layer.kind());
            return Err(GpuError::UnsupportedLayer { layer, kind, path: "in training" });
        }
        // Parameter buffers, checked against the plan.
        let wanted: Vec<usize> = steps
            .iter()
            .filter(|s| s.params.is_some())
            .flat_map(|s| {
                let (w, b) = s.param_lens();
                [w, b]
            })
            .collect();
        if params.len() != wanted.len() || params.iter().zip(&wanted).any(|(p, &w)| p.len() != w) {
            return Err(GpuError::ParamLengths { expected: wanted, got: params.iter().map(|p| p.len()).collect() });
        }
        let f32_bytes = |len: usize| (len * 4) as u64;
        let param_buffers = params
            .iter()
            .enumerate()
            .map(|(i, p)| gpu.storage_with(&format!("parameter {i}"), bytemuck::cast_slice(p)))
            .collect::<Result<Vec<_>, _>>()?;
        // One buffer per activation, as long as the largest shape it holds.
        let mut act_lens = vec![input.len() * max_batch; plan.activations()];
        for step in &steps {
            act_lens[step.dst] = act_lens[step.dst].max(step.output.len() * max_batch);
        }
        let acts = act_lens
            .iter()
            .enumerate()
            .map(|(k, &len)| gpu.storage(&format!("activation {k}"), f32_bytes(len)))
            .collect::<Result<Vec<_>, _>>()?;
        let dummy = gpu.storage("unused", 4)?;
        let winners = steps
            .iter()
            .map(|s| match s.layer {
                Layer::MaxPool => {
                    gpu.storage(&format!("pool {} winners", s.index), f32_bytes(s.output.len() * max_batch))
                }
                _ => Ok(dummy.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let buffers = ForwardBuffers {
            activation: |k: usize| &acts[k],
            winners: |layer: usize| &winners[layer],
            weights: |step: &kiln_core::plan::Step| {
                let slot = step.params.ok_or(GpuError::MissingWeights { layer: step.index })?;
                let b = PackedB { words: &param_buffers[slot.weights()], scales: &dummy, block: 0 };
                Ok(LayerWeights { dtype: DType::F32, b, bias: &param_buffers[slot.bias()] })
            },
            dummy: &dummy,
        };
        let forward = forward::build(gpu, kernels, &plan, max_batch, &buffers)?;

        let classes = plan.output().len();
        let logits = &acts[plan.activations() - 1];
        let largest = plan.max_activation_len() * max_batch;
        let labels = gpu.storage("labels", (max_batch * 4) as u64)?;
        let per_example = gpu.storage("per-example loss", (max_batch * 8) as u64)?;
        let totals = gpu.storage("batch totals", 8)?;
        let mut grads = Vec::new();
        let mut slots = Vec::new();
        let mut backward = Vec::new();
        let mut updates = Vec::new();
        if let Some(spec) = optimizer {
            for (k, &len) in wanted.iter().enumerate() {
                grads.push(gpu.storage(&format!("gradient {k}"), f32_bytes(len))?);
                slots.push(
                    (0..spec.slot_count())
                        .map(|s| gpu.storage(&format!("slot {k}.{s}"), f32_bytes(len)))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            let grad_bufs =
                [gpu.storage("gradient a", f32_bytes(largest))?, gpu.storage("gradient b", f32_bytes(largest))?];
            let xent =
                SoftmaxXentOp::new(gpu, kernels, (max_batch, classes), logits, &labels, &grad_bufs[0], &per_example)?;
            backward.push(Dispatch::SoftmaxXent(xent));
            backward.push(Dispatch::ColumnSums(ColumnSumsOp::new(
                gpu,
                kernels,
                (max_batch, 1, 2),
                &per_example,
                &totals,
            )?));
            // Backward steps: `current` is the gradient buffer holding d(layer output). Layers up to the first
            // parametric one need no input gradient: nothing before them learns.
            let first_param = steps.iter().position(|s| s.params.is_some()).unwrap_or(steps.len());
            let mut current = 0;
            for step in steps[first_param..].iter().rev() {
                let Shape { h, w, c } = step.input;
                let image = (max_batch, h, w, c);
                let (grad, spare) = (&grad_bufs[current], &grad_bufs[1 - current]);
                let input = &acts[step.src];
                match step.layer {
                    Layer::Pad { top, left, .. } => {
                        let pass = LayerPass::PadBackward { top, left, out_h: step.output.h, out_w: step.output.w };
                        backward.push(Dispatch::Layer(LayerOp::new(gpu, kernels, pass, image, grad, spare, None)?));
                    }
                    Layer::Conv2d { filters } | Layer::Dense { units: filters } => {
                        let slot = step.params.ok_or(GpuError::MissingWeights { layer: step.index })?;
                        let conv = matches!(step.layer, Layer::Conv2d { .. });
                        let (_, weight_mode, input_mode) = GemmMode::passes(conv);
                        let g = LayerGeometry::of(conv, step.input, filters, max_batch);
                        let dweights = &grads[slot.weights()];
                        let op = GemmOp::new(gpu, kernels, weight_mode, g, input, grad, None, false, dweights, &dummy)?;
                        backward.push(Dispatch::Gemm(op));
                        let pixels = g.h * g.w;
                        let op =
                            ColumnSumsOp::new(gpu, kernels, (max_batch, pixels, filters), grad, &grads[slot.bias()])?;
                        backward.push(Dispatch::ColumnSums(op));
                        if step.index > first_param {
                            let weights = &param_buffers[slot.weights()];
                            let op =
                                GemmOp::new(gpu, kernels, input_mode, g, grad, weights, None, false, spare, &dummy)?;
                            backward.push(Dispatch::Gemm(op));
                        }
                    }
                    Layer::MaxPool => {
                        let op = LayerOp::new(
                            gpu,
                            kernels,
                            LayerPass::PoolBackward,
                            image,
                            grad,
                            spare,
                            Some(&winners[step.index]),
                        )?;
                        backward.push(Dispatch::Layer(op));
                    }
                    Layer::Relu => {
                        let Shape { h, w, c } = step.output;
                        let output = &acts[step.dst];
                        let op = LayerOp::new(
                            gpu,
                            kernels,
                            LayerPass::ReluBackward,
                            (max_batch, h, w, c),
                            output,
                            grad,
                            None,
                        )?;
                        backward.push(Dispatch::Layer(op));
                    }
                    Layer::Flatten => {}
                    layer => {
                        let (layer_index, kind) = (step.index, layer.kind());
                        return Err(GpuError::UnsupportedLayer { layer: layer_index, kind, path: "in training" });
                    }
                }
                // Out-of-place layers wrote the input gradient into the spare buffer (the first parametric
                // layer writes none, and nothing reads past it).
                if !step.in_place {
                    current = 1 - current;
                }
            }
            for (k, &len) in wanted.iter().enumerate() {
                updates.push(UpdateOp::new(gpu, kernels, spec.rule, len, &grads[k], &param_buffers[k], &slots[k])?);
            }
        }
        Ok(GpuNetwork {
            gpu,
            layers: layers.to_vec(),
            input,
            classes,
            max_batch,
            batch: max_batch,
            params: param_buffers,
            param_lens: wanted,
            grads,
            slots,
            labels,
            per_example,
            totals,
            totals_readback: Readback::new(gpu, "totals readback", 2),
            logits_readback: Readback::new(gpu, "logits readback", max_batch * classes),
            forward,
            backward,
            updates,
            acts,
            adam_powers: optimizer.map_or((0.9, 0.999), |o| (o.beta1, o.beta2)),
            optimizer,
            last_upload_bytes: 0,
        })
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// β1^t and β2^t for the next Adam update.
    pub fn adam_powers(&self) -> (f32, f32) {
        self.adam_powers
    }

    /// Restores β1^t and β2^t (a resumed run).
    pub fn set_adam_powers(&mut self, powers: (f32, f32)) {
        self.adam_powers = powers;
    }

    /// Bytes the host wrote to the device in the last step (batch, labels, parameters of the ops).
    pub fn last_upload_bytes(&self) -> u64 {
        self.last_upload_bytes
    }

    /// Re-targets every op at `batch` images (parameter writes only).
    fn set_batch(&mut self, batch: usize) {
        if batch == self.batch {
            return;
        }
        let queue = &self.gpu.queue;
        for op in self.forward.iter_mut().chain(self.backward.iter_mut()) {
            op.set_batch(queue, batch);
        }
        self.batch = batch;
        self.last_upload_bytes += 48 * (self.forward.len() + self.backward.len()) as u64;
    }

    fn upload_batch(&mut self, images: &[f32], n: usize) -> Result<(), GpuError> {
        if n == 0 || n > self.max_batch {
            return Err(GpuError::BatchSize { batch: n, max: self.max_batch });
        }
        let per_image = self.input.len();
        if images.len() != n * per_image {
            return Err(GpuError::InputLength { what: "input values", got: images.len(), images: n, per_image });
        }
        self.last_upload_bytes = 0;
        self.set_batch(n);
        self.gpu.queue.write_buffer(&self.acts[0], 0, bytemuck::cast_slice(images));
        self.last_upload_bytes += (images.len() * 4) as u64;
        Ok(())
    }

    /// Records `dispatches` in one compute pass, then `after` (copies), and submits.
    fn submit<'a>(
        &self,
        dispatches: impl Iterator<Item = &'a Dispatch>,
        updates: &[UpdateOp],
        after: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<(), GpuError> {
        self.gpu.scoped(|| {
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for op in dispatches {
                    op.encode(&mut pass);
                }
                for update in updates {
                    update.encode(&mut pass);
                }
            }
            after(&mut encoder);
            self.gpu.queue.submit([encoder.finish()]);
        })
    }

    /// The logits `[n, classes]` for `n` images (`images`: `[n, input]`, normalised).
    pub fn forward(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>, GpuError> {
        self.upload_batch(images, n)?;
        let len = n * self.classes;
        let logits = &self.acts[self.acts.len() - 1];
        self.submit(self.forward.iter(), &[], |encoder| self.logits_readback.copy_from(encoder, logits, len))?;
        let mut out = vec![0.0; len];
        self.logits_readback.read(self.gpu, &mut out)?;
        Ok(out)
    }

    /// One training step on `n` images with learning rate `lr`: forward, loss, backward, update. Returns
    /// the batch's mean cost and correct count (the only values read back).
    pub fn train_step(&mut self, images: &[f32], labels: &[u8], lr: f32) -> Result<StepScore, GpuError> {
        let spec = self.optimizer.ok_or(GpuError::NoOptimizer)?;
        let n = labels.len();
        self.upload_batch(images, n)?;
        let classes = self.classes;
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(GpuError::Label { label: bad, classes });
        }
        let labels32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        self.gpu.queue.write_buffer(&self.labels, 0, bytemuck::cast_slice(&labels32));
        self.last_upload_bytes += (labels32.len() * 4) as u64;
        let (beta1_power, beta2_power) = self.adam_powers;
        let lr_t = lr * (1.0 - beta2_power).sqrt() / (1.0 - beta1_power);
        let params = UpdateParams {
            len: 0,
            lr,
            lr_t,
            momentum: spec.momentum,
            beta1: spec.beta1,
            beta2: spec.beta2,
            epsilon: spec.epsilon,
            pad: 0,
        };
        for update in &mut self.updates {
            update.set(&self.gpu.queue, params);
        }
        self.last_upload_bytes += (self.updates.len() * std::mem::size_of::<UpdateParams>()) as u64;
        let mut totals = [0.0f32; 2];
        let dispatches = self.forward.iter().chain(&self.backward);
        self.submit(dispatches, &self.updates, |encoder| self.totals_readback.copy_from(encoder, &self.totals, 2))?;
        self.totals_readback.read(self.gpu, &mut totals)?;
        if spec.rule == UpdateRule::Adam {
            self.adam_powers = (beta1_power * spec.beta1, beta2_power * spec.beta2);
        }
        Ok(StepScore { cost: totals[0] / n as f32, correct: totals[1].round() as usize })
    }

    /// Every parameter tensor, back on the host (weights then bias per layer).
    pub fn read_params(&self) -> Result<Vec<Vec<f32>>, GpuError> {
        self.params.iter().zip(&self.param_lens).map(|(b, &len)| self.gpu.read_f32(b, len)).collect()
    }

    /// The last step's parameter gradients.
    pub fn read_grads(&self) -> Result<Vec<Vec<f32>>, GpuError> {
        self.grads.iter().zip(&self.param_lens).map(|(b, &len)| self.gpu.read_f32(b, len)).collect()
    }

    /// Every tensor's optimizer slots.
    pub fn read_slots(&self) -> Result<Vec<Vec<Vec<f32>>>, GpuError> {
        self.slots
            .iter()
            .zip(&self.param_lens)
            .map(|(slots, &len)| slots.iter().map(|b| self.gpu.read_f32(b, len)).collect())
            .collect()
    }

    /// Replaces the parameters (and, when training, the slots) with `params` / `slots` (a resumed run).
    pub fn write_state(&mut self, params: &[&[f32]], slots: &[Vec<&[f32]>]) -> Result<(), GpuError> {
        if params.len() != self.params.len() || params.iter().zip(&self.param_lens).any(|(p, &l)| p.len() != l) {
            let got = params.iter().map(|p| p.len()).collect();
            return Err(GpuError::ParamLengths { expected: self.param_lens.clone(), got });
        }
        for (buffer, p) in self.params.iter().zip(params) {
            self.gpu.queue.write_buffer(buffer, 0, bytemuck::cast_slice(p));
        }
        if !slots.is_empty() {
            let fits = slots.len() == self.slots.len()
                && slots
                    .iter()
                    .zip(&self.slots)
                    .zip(&self.param_lens)
                    .all(|((s, b), &l)| s.len() == b.len() && s.iter().all(|v| v.len() == l));
            if !fits {
                return Err(GpuError::SlotLengths);
            }
            for (buffers, values) in self.slots.iter().zip(slots) {
                for (b, v) in buffers.iter().zip(values) {
                    self.gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(v));
                }
            }
        }
        self.gpu.queue.submit([]);
        self.gpu.check_lost()
    }

    /// Bytes of device memory this network holds.
    pub fn device_bytes(&self) -> u64 {
        let all = self.params.iter().chain(&self.grads).chain(self.slots.iter().flatten()).chain(&self.acts);
        all.map(|b| b.size()).sum::<u64>() + self.per_example.size() + self.labels.size()
    }
}

//! A whole network on the GPU: forward, loss, backward and the optimizer update in one submission per
//! step. Parameters, gradients, optimizer slots and every activation stay on the device; a step uploads
//! the batch (images and labels) plus each tensor's update parameters, and reads back two numbers (the
//! summed loss and the correct count).
//!
//! The buffer plan mirrors kiln-train's `Model`: layer `i` reads activation buffer `buffer_of[i]`, ReLU and
//! flatten work in place, and the backward pass ping-pongs between two gradient buffers. ReLU is fused
//! into the epilogue of the conv or dense layer before it.

use kiln_core::network::{Layer, Shape};

use crate::context::{Gpu, GpuError};
use crate::kernels::{
    ColumnSumsOp, GemmMode, GemmOp, Kernels, LayerGeometry, LayerOp, LayerPass, SoftmaxXentOp, UpdateOp, UpdateParams,
    UpdateRule,
};

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
        match self.rule {
            UpdateRule::Sgd => 0,
            UpdateRule::Momentum => 1,
            UpdateRule::Adam => 2,
        }
    }
}

/// One forward or backward step, in order.
#[derive(Debug)]
enum Step {
    /// The geometry at the largest batch; `resize` swaps in the batch size.
    Gemm(GemmOp, LayerGeometry),
    Layer(LayerOp, (usize, usize, usize)),
    BiasGrad(ColumnSumsOp, (usize, usize)),
}

impl Step {
    fn resize(&mut self, queue: &wgpu::Queue, batch: usize) {
        match self {
            Step::Gemm(op, g) => op.set_geometry(queue, LayerGeometry { batch, ..*g }),
            Step::Layer(op, (h, w, c)) => op.set_shape(queue, (batch, *h, *w, *c)),
            Step::BiasGrad(op, (pixels, cout)) => op.set_rows(queue, (batch * *pixels, *cout)),
        }
    }

    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Step::Gemm(op, _) => op.encode(pass),
            Step::Layer(op, _) => op.encode(pass),
            Step::BiasGrad(op, _) => op.encode(pass),
        }
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
    shapes: Vec<Shape>,
    max_batch: usize,
    /// The batch size the ops are configured for.
    batch: usize,
    /// Weights then bias per parametric layer (kiln-train's order).
    params: Vec<wgpu::Buffer>,
    param_lens: Vec<usize>,
    grads: Vec<wgpu::Buffer>,
    /// `slots[i]`: tensor `i`'s optimizer slots.
    slots: Vec<Vec<wgpu::Buffer>>,
    acts: Vec<wgpu::Buffer>,
    logits_buffer: usize,
    labels: wgpu::Buffer,
    per_example: wgpu::Buffer,
    totals: wgpu::Buffer,
    staging: wgpu::Buffer,
    forward: Vec<Step>,
    loss: Option<(SoftmaxXentOp, ColumnSumsOp)>,
    backward: Vec<Step>,
    updates: Vec<UpdateOp>,
    optimizer: Option<OptimizerSpec>,
    /// β1^t and β2^t for the next Adam update (TF1 starts them at β1 and β2).
    pub beta1_power: f32,
    pub beta2_power: f32,
    /// Bytes the host wrote to the device in the last step (batch, labels, parameters of the ops).
    pub last_upload_bytes: u64,
}

impl<'g> GpuNetwork<'g> {
    /// Uploads `params` (weights then bias of each conv/dense layer, kiln-train's order and layouts) and
    /// builds every op for batches of up to `max_batch`. With an optimizer, it also builds the backward
    /// pass, the loss and the updates, with zeroed slots.
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
            return Err(GpuError::Shape("the batch size must be at least 1".into()));
        }
        let mut shapes = vec![input];
        for (i, layer) in layers.iter().enumerate() {
            let next = layer.output_shape(i, shapes[i]).map_err(|e| GpuError::Shape(e.to_string()))?;
            shapes.push(next);
        }
        // Parameter buffers, checked against the layers.
        let mut param_of = vec![None; layers.len()];
        let mut wanted = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            if layer.has_params() {
                param_of[i] = Some(wanted.len());
                let (w, b) = layer.param_lens(shapes[i]);
                wanted.extend([w, b]);
            }
        }
        if params.len() != wanted.len() || params.iter().zip(&wanted).any(|(p, &w)| p.len() != w) {
            return Err(GpuError::Shape(format!(
                "the network needs parameter tensors of lengths {wanted:?}, got {:?}",
                params.iter().map(|p| p.len()).collect::<Vec<_>>()
            )));
        }
        let f32_bytes = |len: usize| (len * 4) as u64;
        let param_buffers = params
            .iter()
            .enumerate()
            .map(|(i, p)| gpu.storage_with(&format!("parameter {i}"), bytemuck::cast_slice(p)))
            .collect::<Result<Vec<_>, _>>()?;
        // Activations: buffer k holds the input of every layer with buffer_of == k.
        let mut buffer_of = vec![0];
        for layer in layers {
            let last = *buffer_of.last().expect("starts with the input");
            buffer_of.push(if matches!(layer, Layer::Relu | Layer::Flatten) { last } else { last + 1 });
        }
        let mut act_lens = vec![0; buffer_of.last().map_or(1, |&b| b + 1)];
        for (i, &b) in buffer_of.iter().enumerate() {
            act_lens[b] = act_lens[b].max(shapes[i].len() * max_batch);
        }
        let acts = act_lens
            .iter()
            .enumerate()
            .map(|(k, &len)| gpu.storage(&format!("activation {k}"), f32_bytes(len)))
            .collect::<Result<Vec<_>, _>>()?;
        let dummy = gpu.storage("unused", 4)?;
        let kernels_ref = kernels;
        let winners = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if *l == Layer::MaxPool {
                    gpu.storage(&format!("pool {i} winners"), f32_bytes(shapes[i + 1].len() * max_batch)).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Forward steps.
        let mut forward = Vec::new();
        let mut i = 0;
        while i < layers.len() {
            let Shape { h, w, c } = shapes[i];
            let (src, dst) = (&acts[buffer_of[i]], &acts[buffer_of[i + 1]]);
            let fuse_relu = layers.get(i + 1) == Some(&Layer::Relu);
            match layers[i] {
                Layer::Pad { top, left, .. } => {
                    let (out_h, out_w) = (shapes[i + 1].h, shapes[i + 1].w);
                    let pass = LayerPass::PadForward { top, left, out_h, out_w };
                    let op = LayerOp::new(gpu, kernels_ref, pass, (max_batch, h, w, c), src, dst, None)?;
                    forward.push(Step::Layer(op, (h, w, c)));
                }
                Layer::Conv2d { filters } | Layer::Dense { units: filters } => {
                    let p = param_of[i].expect("conv and dense have parameters");
                    let conv = matches!(layers[i], Layer::Conv2d { .. });
                    let shape = LayerGeometry::of(conv, shapes[i], filters, max_batch);
                    let mode = if conv { GemmMode::ConvForward } else { GemmMode::DenseForward };
                    let (weights, bias) = (&param_buffers[p], &param_buffers[p + 1]);
                    let op =
                        GemmOp::new(gpu, kernels_ref, mode, shape, src, weights, Some(bias), fuse_relu, dst, &dummy)?;
                    forward.push(Step::Gemm(op, shape));
                    if fuse_relu {
                        i += 1; // the ReLU ran in the epilogue
                    }
                }
                Layer::MaxPool => {
                    let op = LayerOp::new(
                        gpu,
                        kernels_ref,
                        LayerPass::PoolForward,
                        (max_batch, h, w, c),
                        src,
                        dst,
                        winners[i].as_ref(),
                    )?;
                    forward.push(Step::Layer(op, (h, w, c)));
                }
                Layer::Relu => {
                    let op =
                        LayerOp::new(gpu, kernels_ref, LayerPass::ReluForward, (max_batch, h, w, c), src, dst, None)?;
                    forward.push(Step::Layer(op, (h, w, c)));
                }
                Layer::Flatten => {}
            }
            i += 1;
        }

        let classes = shapes.last().map_or(0, Shape::len);
        let logits_buffer = buffer_of[layers.len()];
        let largest = shapes.iter().map(Shape::len).max().unwrap_or(1) * max_batch;
        let labels = gpu.storage("labels", (max_batch * 4) as u64)?;
        let per_example = gpu.storage("per-example loss", (max_batch * 8) as u64)?;
        let totals = gpu.storage("batch totals", 8)?;
        let staging = gpu.staging("totals readback", 8);
        let mut grads = Vec::new();
        let mut slots = Vec::new();
        let mut backward = Vec::new();
        let mut updates = Vec::new();
        let mut loss = None;
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
            let xent = SoftmaxXentOp::new(
                gpu,
                kernels_ref,
                (max_batch, classes),
                &acts[logits_buffer],
                &labels,
                &grad_bufs[0],
                &per_example,
            )?;
            let sums = ColumnSumsOp::new(gpu, kernels_ref, (max_batch, 2), &per_example, &totals)?;
            loss = Some((xent, sums));
            // Backward steps: `current` is the gradient buffer holding d(layer output).
            let first_param = param_of.iter().position(Option::is_some).unwrap_or(layers.len());
            let mut current = 0;
            for i in (first_param..layers.len()).rev() {
                let Shape { h, w, c } = shapes[i];
                let (grad, spare) = (&grad_bufs[current], &grad_bufs[1 - current]);
                let want_input_grad = i > first_param;
                let input = &acts[buffer_of[i]];
                match layers[i] {
                    Layer::Pad { top, left, .. } => {
                        let (out_h, out_w) = (shapes[i + 1].h, shapes[i + 1].w);
                        let pass = LayerPass::PadBackward { top, left, out_h, out_w };
                        let op = LayerOp::new(gpu, kernels_ref, pass, (max_batch, h, w, c), grad, spare, None)?;
                        backward.push(Step::Layer(op, (h, w, c)));
                        current = 1 - current;
                    }
                    Layer::Conv2d { filters } | Layer::Dense { units: filters } => {
                        let p = param_of[i].expect("conv and dense have parameters");
                        let conv = matches!(layers[i], Layer::Conv2d { .. });
                        let shape = LayerGeometry::of(conv, shapes[i], filters, max_batch);
                        let (weight_mode, input_mode) = if conv {
                            (GemmMode::ConvWeightGrad, GemmMode::ConvInputGrad)
                        } else {
                            (GemmMode::DenseWeightGrad, GemmMode::DenseInputGrad)
                        };
                        let g = shape;
                        let op =
                            GemmOp::new(gpu, kernels_ref, weight_mode, g, input, grad, None, false, &grads[p], &dummy)?;
                        backward.push(Step::Gemm(op, shape));
                        let pixels = shape.h * shape.w;
                        let op =
                            ColumnSumsOp::new(gpu, kernels_ref, (max_batch * pixels, filters), grad, &grads[p + 1])?;
                        backward.push(Step::BiasGrad(op, (pixels, filters)));
                        if want_input_grad {
                            let weights = &param_buffers[p];
                            let op = GemmOp::new(
                                gpu,
                                kernels_ref,
                                input_mode,
                                g,
                                grad,
                                weights,
                                None,
                                false,
                                spare,
                                &dummy,
                            )?;
                            backward.push(Step::Gemm(op, shape));
                            current = 1 - current;
                        }
                    }
                    Layer::MaxPool => {
                        let op = LayerOp::new(
                            gpu,
                            kernels_ref,
                            LayerPass::PoolBackward,
                            (max_batch, h, w, c),
                            grad,
                            spare,
                            winners[i].as_ref(),
                        )?;
                        backward.push(Step::Layer(op, (h, w, c)));
                        current = 1 - current;
                    }
                    Layer::Relu => {
                        let Shape { h, w, c } = shapes[i + 1];
                        let output = &acts[buffer_of[i + 1]];
                        let op = LayerOp::new(
                            gpu,
                            kernels_ref,
                            LayerPass::ReluBackward,
                            (max_batch, h, w, c),
                            output,
                            grad,
                            None,
                        )?;
                        backward.push(Step::Layer(op, (h, w, c)));
                    }
                    Layer::Flatten => {}
                }
            }
            for (k, &len) in wanted.iter().enumerate() {
                updates.push(UpdateOp::new(gpu, kernels_ref, spec.rule, len, &grads[k], &param_buffers[k], &slots[k])?);
            }
        }
        Ok(GpuNetwork {
            gpu,
            layers: layers.to_vec(),
            shapes,
            max_batch,
            batch: max_batch,
            params: param_buffers,
            param_lens: wanted,
            grads,
            slots,
            acts,
            logits_buffer,
            labels,
            per_example,
            totals,
            staging,
            forward,
            loss,
            backward,
            updates,
            beta1_power: optimizer.map_or(0.9, |o| o.beta1),
            beta2_power: optimizer.map_or(0.999, |o| o.beta2),
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

    fn classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    /// Re-targets every op at `batch` images (parameter writes only).
    fn set_batch(&mut self, batch: usize) {
        if batch == self.batch {
            return;
        }
        let queue = &self.gpu.queue;
        for step in self.forward.iter_mut().chain(self.backward.iter_mut()) {
            step.resize(queue, batch);
        }
        if let Some((xent, sums)) = &mut self.loss {
            xent.set_rows(queue, (batch, self.shapes.last().map_or(0, Shape::len)));
            sums.set_rows(queue, (batch, 2));
        }
        self.batch = batch;
        self.last_upload_bytes += 48 * (self.forward.len() + self.backward.len() + 2) as u64;
    }

    fn upload_batch(&mut self, images: &[f32], n: usize) -> Result<(), GpuError> {
        if n == 0 || n > self.max_batch {
            return Err(GpuError::Shape(format!(
                "a batch of {n} images; this network was built for 1 to {}",
                self.max_batch
            )));
        }
        let len = self.shapes[0].len();
        if images.len() != n * len {
            return Err(GpuError::Shape(format!("{} input values for {n} images of {len}", images.len())));
        }
        self.last_upload_bytes = 0;
        self.set_batch(n);
        self.gpu.queue.write_buffer(&self.acts[0], 0, bytemuck::cast_slice(images));
        self.last_upload_bytes += (images.len() * 4) as u64;
        Ok(())
    }

    /// The logits `[n, classes]` for `n` images (`images`: `[n, input]`, normalised).
    pub fn forward(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>, GpuError> {
        self.upload_batch(images, n)?;
        self.gpu.scoped(|| {
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for step in &self.forward {
                    step.encode(&mut pass);
                }
            }
            self.gpu.queue.submit([encoder.finish()]);
        })?;
        self.gpu.read_f32(&self.acts[self.logits_buffer], n * self.classes())
    }

    /// One training step on `n` images with learning rate `lr`: forward, loss, backward, update. Returns
    /// the batch's mean cost and correct count (the only values read back).
    pub fn train_step(&mut self, images: &[f32], labels: &[u8], lr: f32) -> Result<StepScore, GpuError> {
        let spec =
            self.optimizer.ok_or_else(|| GpuError::Shape("this network was built without an optimizer".into()))?;
        let n = labels.len();
        self.upload_batch(images, n)?;
        let classes = self.classes();
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(GpuError::Shape(format!("label {bad} for a network with {classes} classes")));
        }
        let labels32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        self.gpu.queue.write_buffer(&self.labels, 0, bytemuck::cast_slice(&labels32));
        self.last_upload_bytes += (labels32.len() * 4) as u64;
        let lr_t = lr * (1.0 - self.beta2_power).sqrt() / (1.0 - self.beta1_power);
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
        self.gpu.scoped(|| {
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for step in &self.forward {
                    step.encode(&mut pass);
                }
                if let Some((xent, sums)) = &self.loss {
                    xent.encode(&mut pass);
                    sums.encode(&mut pass);
                }
                for step in &self.backward {
                    step.encode(&mut pass);
                }
                for update in &self.updates {
                    update.encode(&mut pass);
                }
            }
            encoder.copy_buffer_to_buffer(&self.totals, 0, &self.staging, 0, Some(8));
            self.gpu.queue.submit([encoder.finish()]);
        })?;
        self.gpu.read_staging(&self.staging, &mut totals)?;
        if spec.rule == UpdateRule::Adam {
            self.beta1_power *= spec.beta1;
            self.beta2_power *= spec.beta2;
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
            return Err(GpuError::Shape("the parameters do not fit this network".into()));
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
                return Err(GpuError::Shape("the optimizer slots do not fit this network".into()));
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

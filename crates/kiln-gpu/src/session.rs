//! Inference on a packed `.kiln` model: the weights are uploaded as stored (f32, f16, int8, int4, int2) and
//! dequantized inside the GEMM shader as they are loaded, so a 4-bit model takes 4 bits of device memory per
//! weight. Everything is created in [`GpuSession::new`]; [`GpuSession::run`] writes the batch, records the
//! dispatches and reads the logits back into the caller's slice, creating no buffers, bind groups or
//! pipelines and allocating nothing on the host in Kiln's code.

use kiln_core::Model;
use kiln_core::format::DType;
use kiln_core::plan::Step;

use crate::context::{Gpu, GpuError, Readback};
use crate::forward::{self, ForwardBuffers, LayerWeights};
use crate::kernels::Kernels;
use crate::ops::Dispatch;
use crate::ops::gemm::PackedB;

/// A packed model on the device, ready to run batches of up to `max_batch` images.
#[derive(Debug)]
pub struct GpuSession {
    gpu: Gpu,
    dispatches: Vec<Dispatch>,
    /// The tensors as stored, kept alive for the bind groups.
    _tensors: Vec<wgpu::Buffer>,
    /// Ping-pong activations: the input goes into the first; the logits end in `activations[logits_in]`.
    activations: [wgpu::Buffer; 2],
    logits_in: usize,
    readback: Readback,
    input_len: usize,
    classes: usize,
    max_batch: usize,
    batch: usize,
    mean: f32,
    std: f32,
    /// Normalised pixels for `run_pixels`, sized once.
    scratch: Vec<f32>,
}

/// A layer's tensors on the device: weight words, scales and bias, as stored in the file.
struct Uploaded {
    dtype: DType,
    block: usize,
    words: wgpu::Buffer,
    scales: wgpu::Buffer,
    bias: wgpu::Buffer,
}

impl GpuSession {
    /// Builds every pipeline, buffer and bind group for `model` (already validated by `Model::from_bytes`).
    /// Fails before anything runs if a tensor or activation exceeds the device's buffer limits.
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model<'_>,
        max_batch: usize,
    ) -> Result<Self, GpuError> {
        let gpu = Gpu::from_device(device, queue);
        let kernels = Kernels::new(&gpu)?;
        Self::with_kernels(gpu, &kernels, model, max_batch)
    }

    /// As [`GpuSession::new`], reusing compiled kernels.
    pub fn with_kernels(gpu: Gpu, kernels: &Kernels, model: &Model<'_>, max_batch: usize) -> Result<Self, GpuError> {
        if max_batch == 0 {
            return Err(GpuError::ZeroBatch);
        }
        let plan = model.plan();
        let largest = plan.max_activation_len() * max_batch;
        let f32_bytes = |len: usize| (len * 4) as u64;
        let buffers =
            [gpu.storage("activation a", f32_bytes(largest))?, gpu.storage("activation b", f32_bytes(largest))?];
        let winners = gpu.storage("pool winners", f32_bytes(largest))?;
        let dummy = gpu.storage("unused", 4)?;
        // Every conv and dense layer's tensors, uploaded as stored, by layer index.
        let mut uploads: Vec<Option<Uploaded>> = (0..plan.layers().len()).map(|_| None).collect();
        for step in plan.steps().filter(|s| s.params.is_some()) {
            let binding = model.binding(step.index).ok_or(GpuError::MissingWeights { layer: step.index })?;
            let (weights, bias) = (model.tensor(binding.weights), model.tensor(binding.bias));
            if bias.dtype != DType::F32 {
                return Err(GpuError::BiasNotF32 { tensor: bias.name.to_string() });
            }
            uploads[step.index] = Some(Uploaded {
                dtype: weights.dtype,
                block: weights.block.max(1),
                words: gpu.storage_with(weights.name, weights.data)?,
                scales: gpu.storage_with(weights.name, weights.scales)?,
                bias: gpu.storage_with(bias.name, bias.data)?,
            });
        }
        let forward_buffers = ForwardBuffers {
            activation: |k: usize| &buffers[k % 2],
            winners: |_layer: usize| &winners,
            weights: |step: &Step| {
                let t = uploads[step.index].as_ref().ok_or(GpuError::MissingWeights { layer: step.index })?;
                let b = PackedB { words: &t.words, scales: &t.scales, block: t.block };
                Ok(LayerWeights { dtype: t.dtype, b, bias: &t.bias })
            },
            dummy: &dummy,
        };
        let dispatches = forward::build(&gpu, kernels, &plan, max_batch, &forward_buffers)?;
        let tensors = uploads.into_iter().flatten().flat_map(|t| [t.words, t.scales, t.bias]).collect();
        let classes = plan.output().len();
        let meta = model.metadata();
        let input_len = plan.input().len();
        Ok(GpuSession {
            readback: Readback::new(&gpu, "logits readback", max_batch * classes),
            gpu,
            dispatches,
            _tensors: tensors,
            activations: buffers,
            logits_in: plan.output_buffer(),
            input_len,
            classes,
            max_batch,
            batch: max_batch,
            mean: meta.mean,
            std: meta.std,
            scratch: vec![0.0; max_batch * input_len],
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The device this session runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Runs `n` images (`input`: `[n, input]`, normalised) and writes their logits (`[n, classes]`) into
    /// `logits`.
    pub fn run(&mut self, input: &[f32], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        let out_len = self.submit(input, n, logits.len())?;
        self.readback.read(&self.gpu, &mut logits[..out_len])
    }

    /// [`GpuSession::run`] for the browser, where the logits can only be read once the event loop has run:
    /// awaits the mapping instead of blocking on it.
    pub async fn run_async(&mut self, input: &[f32], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        let out_len = self.submit(input, n, logits.len())?;
        self.readback.read_async(&self.gpu, &mut logits[..out_len]).await
    }

    /// Checks the request, writes the batch, records and submits the dispatches and the copy of the logits
    /// to the staging buffer. Returns the number of logits.
    fn submit(&mut self, input: &[f32], n: usize, out_capacity: usize) -> Result<usize, GpuError> {
        if n == 0 || n > self.max_batch {
            return Err(GpuError::BatchSize { batch: n, max: self.max_batch });
        }
        if input.len() != n * self.input_len {
            let (got, per_image) = (input.len(), self.input_len);
            return Err(GpuError::InputLength { what: "input values", got, images: n, per_image });
        }
        if let Some(index) = input.iter().position(|v| !v.is_finite()) {
            return Err(GpuError::NonFiniteInput { index, value: input[index] });
        }
        let out_len = n * self.classes;
        if out_capacity < out_len {
            return Err(GpuError::OutputTooSmall { needed: out_len, got: out_capacity });
        }
        self.gpu.check_lost()?;
        if n != self.batch {
            for op in &mut self.dispatches {
                op.set_batch(&self.gpu.queue, n);
            }
            self.batch = n;
        }
        self.gpu.queue.write_buffer(&self.activations[0], 0, bytemuck::cast_slice(input));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in &self.dispatches {
                op.encode(&mut pass);
            }
        }
        self.readback.copy_from(&mut encoder, &self.activations[self.logits_in], out_len);
        self.gpu.queue.submit([encoder.finish()]);
        Ok(out_len)
    }

    /// Normalises 8-bit pixels into the scratch buffer as the model's metadata says.
    fn normalise(&mut self, pixels: &[u8], n: usize) -> Result<Vec<f32>, GpuError> {
        if pixels.len() != n * self.input_len || n > self.max_batch {
            let (got, per_image) = (pixels.len(), self.input_len);
            return Err(GpuError::InputLength { what: "pixels", got, images: n, per_image });
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (x, &p) in scratch.iter_mut().zip(pixels) {
            *x = (p as f32 / 255.0 - self.mean) / self.std;
        }
        Ok(scratch)
    }

    /// As [`GpuSession::run`] for 8-bit pixels, normalised as the model's metadata says.
    pub fn run_pixels(&mut self, pixels: &[u8], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        let scratch = self.normalise(pixels, n)?;
        let result = self.run(&scratch[..pixels.len()], n, logits);
        self.scratch = scratch;
        result
    }

    /// [`GpuSession::run_pixels`] for the browser.
    pub async fn run_pixels_async(&mut self, pixels: &[u8], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        let scratch = self.normalise(pixels, n)?;
        let result = self.run_async(&scratch[..pixels.len()], n, logits).await;
        self.scratch = scratch;
        result
    }
}

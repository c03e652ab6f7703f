//! Inference on a packed `.kiln` model: the weights are uploaded as stored (f32, f16, int8, int4, int2) and
//! dequantized inside the GEMM shader as they are loaded, so a 4-bit model takes 4 bits of device memory per
//! weight. Everything is created in [`GpuSession::new`]; [`GpuSession::run`] writes the batch, records the
//! dispatches and reads the logits back into the caller's slice, creating no buffers, bind groups or
//! pipelines and allocating nothing on the host in Kiln's code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kiln_core::Model;
use kiln_core::format::DType;
use kiln_core::network::{Layer, Shape};

use crate::context::{Gpu, GpuError};
use crate::kernels::{GemmMode, GemmOp, Kernels, LayerGeometry, LayerOp, LayerPass, PackedB};

#[derive(Debug)]
enum Step {
    Gemm(GemmOp, LayerGeometry),
    Layer(LayerOp, (usize, usize, usize)),
}

/// A packed model on the device, ready to run batches of up to `max_batch` images.
#[derive(Debug)]
pub struct GpuSession {
    gpu: Gpu,
    steps: Vec<Step>,
    /// The tensors as stored, kept alive for the bind groups.
    _tensors: Vec<wgpu::Buffer>,
    /// Ping-pong activations: the input goes into the first; the logits end in `activations[logits_in]`.
    activations: [wgpu::Buffer; 2],
    logits_in: usize,
    staging: wgpu::Buffer,
    input_len: usize,
    classes: usize,
    max_batch: usize,
    batch: usize,
    mean: f32,
    std: f32,
    /// Normalised pixels for `run_pixels`, sized once.
    scratch: Vec<f32>,
    /// Set by the map callback: 1 done, 2 failed.
    mapped: Arc<AtomicU8>,
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
            return Err(GpuError::Shape("max_batch must be at least 1".into()));
        }
        let layers = model.layers();
        let mut shapes = vec![model.input_shape()];
        for (i, layer) in layers.iter().enumerate() {
            shapes.push(layer.output_shape(i, shapes[i]).map_err(|e| GpuError::Shape(e.to_string()))?);
        }
        let largest = shapes.iter().map(Shape::len).max().unwrap_or(1) * max_batch;
        let f32_bytes = |len: usize| (len * 4) as u64;
        let buffers =
            [gpu.storage("activation a", f32_bytes(largest))?, gpu.storage("activation b", f32_bytes(largest))?];
        let winners = gpu.storage("pool winners", f32_bytes(largest))?;
        let dummy = gpu.storage("unused", 4)?;
        let mut tensors = Vec::new();
        let mut steps = Vec::new();
        // `current`: which activation buffer holds the input of layer i.
        let mut current = 0;
        let mut i = 0;
        let upload = |gpu: &Gpu, name: &str, bytes: &[u8]| gpu.storage_with(name, bytes);
        while i < layers.len() {
            let Shape { h, w, c } = shapes[i];
            let (src, dst) = (&buffers[current], &buffers[1 - current]);
            let fuse_relu = layers.get(i + 1) == Some(&Layer::Relu);
            match layers[i] {
                Layer::Pad { top, left, .. } => {
                    let pass = LayerPass::PadForward { top, left, out_h: shapes[i + 1].h, out_w: shapes[i + 1].w };
                    let op = LayerOp::new(&gpu, kernels, pass, (max_batch, h, w, c), src, dst, None)?;
                    steps.push(Step::Layer(op, (h, w, c)));
                    current = 1 - current;
                }
                Layer::Conv2d { filters } | Layer::Dense { units: filters } => {
                    let binding = model
                        .binding(i)
                        .ok_or_else(|| GpuError::Shape(format!("layer {i} has no weights in the model")))?;
                    let (weights, bias) = (model.tensor(binding.weights), model.tensor(binding.bias));
                    if bias.dtype != DType::F32 {
                        return Err(GpuError::Shape(format!("{}: biases must be f32", bias.name)));
                    }
                    let words = upload(&gpu, weights.name, weights.data)?;
                    let scales = upload(&gpu, weights.name, weights.scales)?;
                    let bias_buffer = upload(&gpu, bias.name, bias.data)?;
                    let conv = matches!(layers[i], Layer::Conv2d { .. });
                    let mode = if conv { GemmMode::ConvForward } else { GemmMode::DenseForward };
                    let geometry = LayerGeometry::of(conv, shapes[i], filters, max_batch);
                    let pipeline = kernels.packed_gemm(&gpu, mode, weights.dtype)?;
                    let b = PackedB { words: &words, scales: &scales, block: weights.block.max(1) };
                    let op = GemmOp::build(
                        &gpu,
                        kernels,
                        &pipeline,
                        mode,
                        geometry,
                        src,
                        b,
                        Some(&bias_buffer),
                        fuse_relu,
                        dst,
                        &dummy,
                    )?;
                    steps.push(Step::Gemm(op, geometry));
                    tensors.extend([words, scales, bias_buffer]);
                    current = 1 - current;
                    if fuse_relu {
                        i += 1;
                    }
                }
                Layer::MaxPool => {
                    let op = LayerOp::new(
                        &gpu,
                        kernels,
                        LayerPass::PoolForward,
                        (max_batch, h, w, c),
                        src,
                        dst,
                        Some(&winners),
                    )?;
                    steps.push(Step::Layer(op, (h, w, c)));
                    current = 1 - current;
                }
                Layer::Relu => {
                    let op = LayerOp::new(&gpu, kernels, LayerPass::ReluForward, (max_batch, h, w, c), src, src, None)?;
                    steps.push(Step::Layer(op, (h, w, c)));
                }
                Layer::Flatten => {}
            }
            i += 1;
        }
        let classes = shapes.last().map_or(0, Shape::len);
        let meta = model.metadata();
        let input_len = shapes[0].len();
        Ok(GpuSession {
            staging: gpu.staging("logits readback", f32_bytes(max_batch * classes)),
            gpu,
            steps,
            _tensors: tensors,
            activations: buffers,
            logits_in: current,
            input_len,
            classes,
            max_batch,
            batch: max_batch,
            mean: meta.mean,
            std: meta.std,
            scratch: vec![0.0; max_batch * input_len],
            mapped: Arc::new(AtomicU8::new(0)),
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
        self.read_back(&mut logits[..out_len])
    }

    /// [`GpuSession::run`] for the browser, where the logits can only be read once the event loop has run:
    /// awaits the mapping instead of blocking on it.
    pub async fn run_async(&mut self, input: &[f32], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        let out_len = self.submit(input, n, logits.len())?;
        let bytes = (out_len * 4) as u64;
        let slice = self.staging.slice(..bytes);
        let mapped = MapFuture::default();
        let done = mapped.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| done.finish(r.is_ok()));
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        if !mapped.await {
            return Err(GpuError::Readback("mapping the logits failed (was the device lost?)".into()));
        }
        {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            logits[..out_len].copy_from_slice(bytemuck::cast_slice(&view[..]));
        }
        self.staging.unmap();
        Ok(())
    }

    /// Checks the request, writes the batch, records and submits the dispatches and the copy of the logits
    /// to the staging buffer. Returns the number of logits.
    fn submit(&mut self, input: &[f32], n: usize, out_capacity: usize) -> Result<usize, GpuError> {
        if n == 0 || n > self.max_batch {
            return Err(GpuError::Shape(format!("a batch of {n}; this session takes 1 to {}", self.max_batch)));
        }
        if input.len() != n * self.input_len {
            return Err(GpuError::Shape(format!("{} input values for {n} images of {}", input.len(), self.input_len)));
        }
        if let Some(bad) = input.iter().position(|v| !v.is_finite()) {
            return Err(GpuError::Shape(format!("input value {bad} is {}", input[bad])));
        }
        let out_len = n * self.classes;
        if out_capacity < out_len {
            return Err(GpuError::Shape(format!("{out_len} logits requested, the output slice holds {out_capacity}")));
        }
        self.gpu.check_lost()?;
        if n != self.batch {
            for step in &mut self.steps {
                match step {
                    Step::Gemm(op, g) => op.set_geometry(&self.gpu.queue, LayerGeometry { batch: n, ..*g }),
                    Step::Layer(op, (h, w, c)) => op.set_shape(&self.gpu.queue, (n, *h, *w, *c)),
                }
            }
            self.batch = n;
        }
        self.gpu.queue.write_buffer(&self.activations[0], 0, bytemuck::cast_slice(input));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for step in &self.steps {
                match step {
                    Step::Gemm(op, _) => op.encode(&mut pass),
                    Step::Layer(op, _) => op.encode(&mut pass),
                }
            }
        }
        let logits_buffer = &self.activations[self.logits_in];
        encoder.copy_buffer_to_buffer(logits_buffer, 0, &self.staging, 0, Some((out_len * 4) as u64));
        self.gpu.queue.submit([encoder.finish()]);
        Ok(out_len)
    }

    /// As [`GpuSession::run`] for 8-bit pixels, normalised as the model's metadata says.
    pub fn run_pixels(&mut self, pixels: &[u8], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        if pixels.len() != n * self.input_len || n > self.max_batch {
            return Err(GpuError::Shape(format!("{} pixels for {n} images of {}", pixels.len(), self.input_len)));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (x, &p) in scratch.iter_mut().zip(pixels) {
            *x = (p as f32 / 255.0 - self.mean) / self.std;
        }
        let result = self.run(&scratch[..pixels.len()], n, logits);
        self.scratch = scratch;
        result
    }

    /// [`GpuSession::run_pixels`] for the browser.
    pub async fn run_pixels_async(&mut self, pixels: &[u8], n: usize, logits: &mut [f32]) -> Result<(), GpuError> {
        if pixels.len() != n * self.input_len || n > self.max_batch {
            return Err(GpuError::Shape(format!("{} pixels for {n} images of {}", pixels.len(), self.input_len)));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (x, &p) in scratch.iter_mut().zip(pixels) {
            *x = (p as f32 / 255.0 - self.mean) / self.std;
        }
        let result = self.run_async(&scratch[..pixels.len()], n, logits).await;
        self.scratch = scratch;
        result
    }

    fn read_back(&self, out: &mut [f32]) -> Result<(), GpuError> {
        let bytes = (out.len() * 4) as u64;
        let slice = self.staging.slice(..bytes);
        self.mapped.store(0, Ordering::SeqCst);
        let flag = self.mapped.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| flag.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst));
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        self.gpu.check_lost()?;
        if self.mapped.load(Ordering::SeqCst) != 1 {
            return Err(GpuError::Readback("mapping the logits failed".into()));
        }
        {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[..]));
        }
        self.staging.unmap();
        Ok(())
    }
}

/// Resolves when a buffer mapping's callback has run (to `true` if it succeeded). A few lines instead of a
/// channel crate: the callback stores the outcome and wakes the task.
#[derive(Clone, Debug, Default)]
struct MapFuture {
    state: Arc<std::sync::Mutex<(Option<bool>, Option<std::task::Waker>)>>,
}

impl MapFuture {
    fn finish(&self, ok: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.0 = Some(ok);
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        }
    }
}

impl std::future::Future for MapFuture {
    type Output = bool;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        let Ok(mut state) = self.state.lock() else { return std::task::Poll::Ready(false) };
        match state.0 {
            Some(ok) => std::task::Poll::Ready(ok),
            None => {
                state.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

//! The device: adapter choice, limits, errors, and the few buffer helpers every op uses.

use std::sync::{Arc, Mutex};

use thiserror::Error;
use wgpu::util::DeviceExt;

/// Everything that can go wrong on the GPU side. Each message says what to do about it.
#[derive(Debug, Error)]
pub enum GpuError {
    /// wgpu found no adapter (no GPU driver, and no CPU Vulkan driver either).
    #[error(
        "no GPU adapter found ({0}). Install your GPU's Vulkan, Metal or DX12 driver, or Mesa's CPU Vulkan \
         driver (Debian/Ubuntu: apt install mesa-vulkan-drivers libvulkan1), or use --device cpu"
    )]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("the GPU adapter {adapter} refused to open a device: {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// The device was lost (driver reset, GPU removed, or a fatal error).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// A buffer or dispatch did not fit the device's memory.
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),
    /// A tensor is larger than one binding or buffer may be on this device.
    #[error("{what} needs {bytes} bytes, more than this device allows in one buffer ({limit} bytes)")]
    TooLarge { what: String, bytes: u64, limit: u64 },
    /// wgpu rejected a call (a bug in Kiln, or a driver problem).
    #[error("the GPU rejected a command: {0}")]
    Validation(String),
    /// Reading results back failed.
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    /// The GPU path has no kernel for this layer yet; the CPU runs it (`--device cpu`).
    #[error("layer {layer} ({kind}) does not run on the GPU {path}; use --device cpu")]
    UnsupportedLayer { layer: usize, kind: &'static str, path: &'static str },
    /// A batch of zero images was asked for when building a network or session.
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    /// A batch larger than the network or session was built for, or empty.
    #[error("a batch of {batch} images; this was built for 1 to {max}")]
    BatchSize { batch: usize, max: usize },
    /// The input holds `got` values (`what`: "input values" or "pixels"), not `images × per_image`.
    #[error("{got} {what} for {images} images of {per_image}")]
    InputLength { what: &'static str, got: usize, images: usize, per_image: usize },
    /// An input value is NaN or infinite.
    #[error("input value {index} is {value}")]
    NonFiniteInput { index: usize, value: f32 },
    /// The caller's output slice is too short for the logits.
    #[error("{needed} logits requested, the output slice holds {got}")]
    OutputTooSmall { needed: usize, got: usize },
    /// A label is not one of the network's classes.
    #[error("label {label} for a network with {classes} classes")]
    Label { label: u8, classes: usize },
    /// `train_step` on a network built for inference only.
    #[error("this network was built without an optimizer")]
    NoOptimizer,
    /// The parameter tensors given do not have the lengths the network needs.
    #[error("the network needs parameter tensors of lengths {expected:?}, got {got:?}")]
    ParamLengths { expected: Vec<usize>, got: Vec<usize> },
    /// The optimizer slots given do not fit the network's parameters.
    #[error("the optimizer slots do not fit this network")]
    SlotLengths,
    /// An optimizer rule was given the wrong number of slot buffers (a bug in the caller).
    #[error("{rule} needs {wanted} slot buffers, got {got}")]
    SlotBuffers { rule: String, wanted: usize, got: usize },
    /// The network description is invalid.
    #[error("{0}")]
    Network(#[from] kiln_core::NetworkError),
    /// A conv or dense layer of a packed model has no tensors bound.
    #[error("layer {layer} has no weights in the model")]
    MissingWeights { layer: usize },
    /// A packed model's bias tensor is not f32.
    #[error("{tensor}: biases must be f32")]
    BiasNotF32 { tensor: String },
    /// A pooling pass was built without its winners buffer (a bug in the caller).
    #[error("pooling needs a winners buffer")]
    NoWinnersBuffer,
}

/// An open device and its queue, with the adapter it came from.
#[derive(Debug)]
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// The first adapter wgpu offers (a discrete GPU before an integrated one before a CPU driver), with
    /// that adapter's own limits (larger buffers than WebGPU's defaults where the hardware allows).
    pub fn new() -> Result<Gpu, GpuError> {
        pollster::block_on(Self::open())
    }

    /// [`Gpu::new`] for the browser, where nothing may block: the adapter and device come from promises.
    pub async fn open() -> Result<Gpu, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;
        let lost = Arc::new(Mutex::new(None));
        let record = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = record.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        Ok(Gpu { device, queue, info, lost })
    }

    /// Wraps a device the caller opened (an app with its own wgpu setup). The app's device-lost callback
    /// is left in place, so a lost device shows up here as a failed readback rather than `DeviceLost`.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue) -> Gpu {
        let lost = Arc::new(Mutex::new(None));
        Gpu { device: device.clone(), queue: queue.clone(), info: device.adapter_info(), lost }
    }

    /// The device, for an app that records its own work on it.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter the device came from.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// "NAME (BACKEND)", e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether this adapter is a CPU implementation (lavapipe, SwiftShader, WARP).
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// An error if the device has been lost since it was opened.
    pub fn check_lost(&self) -> Result<(), GpuError> {
        match self.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Err(GpuError::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// Runs `make` inside out-of-memory and validation error scopes, so that a failure becomes an error
    /// value instead of wgpu's default panic.
    pub(crate) fn scoped<T>(&self, make: impl FnOnce() -> T) -> Result<T, GpuError> {
        // In the browser an error scope resolves only after control returns to the event loop, so it cannot
        // be awaited here; errors there reach the device's uncaptured-error handler (and the console).
        #[cfg(target_arch = "wasm32")]
        return Ok(make());
        #[cfg(not(target_arch = "wasm32"))]
        self.scoped_native(make)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn scoped_native<T>(&self, make: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = make();
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        self.check_lost()?;
        if let Some(e) = oom {
            return Err(GpuError::OutOfMemory(e.to_string()));
        }
        if let Some(e) = invalid {
            return Err(GpuError::Validation(e.to_string()));
        }
        Ok(value)
    }

    /// Checks that a buffer of `bytes` may be created and bound whole on this device.
    pub(crate) fn check_size(&self, what: &str, bytes: u64) -> Result<(), GpuError> {
        let limits = self.device.limits();
        let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if bytes > limit {
            return Err(GpuError::TooLarge { what: what.to_string(), bytes, limit });
        }
        Ok(())
    }

    /// A zeroed storage buffer of `bytes` (at least 4), readable and writable by shaders and copies.
    pub(crate) fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
        let bytes = bytes.max(4).next_multiple_of(4);
        self.check_size(label, bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `values`.
    pub(crate) fn storage_with(&self, label: &str, values: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        if values.is_empty() {
            return self.storage(label, 4);
        }
        self.check_size(label, values.len() as u64)?;
        let mut padded;
        let contents = if values.len().is_multiple_of(4) {
            values
        } else {
            padded = values.to_vec();
            padded.resize(values.len().next_multiple_of(4), 0);
            &padded[..]
        };
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        }))
    }

    /// A uniform buffer for one op's parameters.
    pub(crate) fn uniform(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Copies `len` f32 from `buffer` to the host (a one-off staging buffer: for tests and checkpoints,
    /// not per-step work).
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, GpuError> {
        let readback = Readback::new(self, "readback", len);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        readback.copy_from(&mut encoder, buffer, len);
        self.queue.submit([encoder.finish()]);
        let mut out = vec![0.0; len];
        readback.read(self, &mut out)?;
        Ok(out)
    }
}

/// The one way results come back to the host: a mappable staging buffer, made once, that a submitted copy
/// fills. [`Readback::read`] blocks until the map is done (native); [`Readback::read_async`] awaits it (the
/// browser, where only the event loop completes a map). Reading allocates nothing in Kiln's code.
#[derive(Debug)]
pub struct Readback {
    staging: wgpu::Buffer,
    capacity: usize,
    state: Arc<Mutex<MapState>>,
}

/// What the map callback reported, and who to wake.
#[derive(Debug, Default)]
struct MapState {
    outcome: Option<Result<(), String>>,
    waker: Option<std::task::Waker>,
}

impl Readback {
    /// A staging buffer for up to `capacity` f32.
    pub fn new(gpu: &Gpu, label: &str, capacity: usize) -> Readback {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (capacity as u64 * 4).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback { staging, capacity, state: Arc::default() }
    }

    /// Records a copy of the first `len` f32 of `source` into the staging buffer.
    pub fn copy_from(&self, encoder: &mut wgpu::CommandEncoder, source: &wgpu::Buffer, len: usize) {
        let len = len.min(self.capacity);
        encoder.copy_buffer_to_buffer(source, 0, &self.staging, 0, Some((len as u64 * 4).max(4)));
    }

    /// Waits for the queue and copies the first `out.len()` f32 of the last copy into `out`.
    pub fn read(&self, gpu: &Gpu, out: &mut [f32]) -> Result<(), GpuError> {
        self.check_capacity(out.len())?;
        self.start(out.len());
        #[cfg(not(target_arch = "wasm32"))]
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        gpu.check_lost()?;
        self.finish(out)
    }

    /// [`Readback::read`] for the browser: awaits the map instead of blocking on it.
    pub async fn read_async(&self, gpu: &Gpu, out: &mut [f32]) -> Result<(), GpuError> {
        self.check_capacity(out.len())?;
        self.start(out.len());
        #[cfg(not(target_arch = "wasm32"))]
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        MapDone { state: &self.state }.await;
        gpu.check_lost()?;
        self.finish(out)
    }

    fn check_capacity(&self, len: usize) -> Result<(), GpuError> {
        if len > self.capacity {
            return Err(GpuError::OutputTooSmall { needed: len, got: self.capacity });
        }
        Ok(())
    }

    fn bytes(&self, len: usize) -> u64 {
        (len.min(self.capacity) as u64 * 4).max(4)
    }

    fn start(&self, len: usize) {
        if let Ok(mut state) = self.state.lock() {
            *state = MapState::default();
        }
        let state = self.state.clone();
        self.staging.slice(..self.bytes(len)).map_async(wgpu::MapMode::Read, move |result| {
            if let Ok(mut state) = state.lock() {
                state.outcome = Some(result.map_err(|e| e.to_string()));
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            }
        });
    }

    fn finish(&self, out: &mut [f32]) -> Result<(), GpuError> {
        let outcome = self.state.lock().ok().and_then(|mut s| s.outcome.take());
        match outcome {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(GpuError::Readback(format!("mapping the results failed: {e}"))),
            None => return Err(GpuError::Readback("the map callback never ran (was the device lost?)".into())),
        }
        {
            let view = self.staging.slice(..self.bytes(out.len())).get_mapped_range();
            let view = view.map_err(|e| GpuError::Readback(e.to_string()))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[..out.len() * 4]));
        }
        self.staging.unmap();
        Ok(())
    }
}

/// Resolves once the map callback has reported.
struct MapDone<'a> {
    state: &'a Mutex<MapState>,
}

impl std::future::Future for MapDone<'_> {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let Ok(mut state) = self.state.lock() else { return std::task::Poll::Ready(()) };
        if state.outcome.is_some() {
            std::task::Poll::Ready(())
        } else {
            state.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }
}

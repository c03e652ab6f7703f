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
    /// The model or data given to a GPU op do not fit it.
    #[error("{0}")]
    Shape(String),
}

/// An open device and its queue, with the adapter it came from.
#[derive(Debug)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
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

    /// A buffer the host can map to read `bytes` of results.
    pub(crate) fn staging(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Waits for the queue, maps the first `out.len()` f32 of `staging` (already filled by a submitted
    /// copy) into `out`, and unmaps it.
    pub(crate) fn read_staging(&self, staging: &wgpu::Buffer, out: &mut [f32]) -> Result<(), GpuError> {
        let bytes = (out.len() * 4) as u64;
        let slice = staging.slice(..bytes.max(4));
        let result = Arc::new(Mutex::new(None));
        let done = result.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            if let Ok(mut slot) = done.lock() {
                *slot = Some(r);
            }
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        self.check_lost()?;
        match result.lock().ok().and_then(|mut r| r.take()) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(GpuError::Readback(e.to_string())),
            None => return Err(GpuError::Readback("the map callback never ran".into())),
        }
        {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[..out.len() * 4]));
        }
        staging.unmap();
        Ok(())
    }

    /// Copies `len` f32 from `buffer` to the host (a one-off staging buffer: for tests and checkpoints,
    /// not per-step work).
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, GpuError> {
        let staging = self.staging("readback", (len * 4) as u64);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, Some((len * 4).max(4) as u64));
        self.queue.submit([encoder.finish()]);
        let mut out = vec![0.0; len];
        self.read_staging(&staging, &mut out)?;
        Ok(out)
    }
}

//! Kiln's GPU kernels: WGSL compute shaders run through wgpu (Vulkan, Metal, DX12, or WebGPU in the
//! browser), one set shared by training and inference.
//!
//! - [`context`]: opening a device, its limits, and [`GpuError`].
//! - [`kernels`]: the compiled pipelines (WGSL in `src/shaders/`).
//! - [`ops`]: one small op struct per dispatch, one module per WGSL file.
//! - `forward`: the forward pass recorded from the network's plan, shared by the two below.
//! - [`network`]: a whole network on the device: forward, loss, backward and optimizer updates.
//! - [`session`]: inference on a packed `.kiln` model, dequantizing in the shader.
//! - [`test_support`]: [`test_support::gpu_or_skip`], how every GPU test gets its device or skips.

pub mod context;
mod forward;
pub mod kernels;
pub mod network;
pub mod ops;
pub mod session;
pub mod test_support;

pub use context::{Gpu, GpuError, Readback};
pub use kernels::Kernels;
pub use network::{GpuNetwork, OptimizerSpec, StepScore};
pub use ops::optimizer::UpdateRule;
pub use session::GpuSession;

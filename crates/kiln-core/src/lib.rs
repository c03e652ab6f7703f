//! Kiln's core: the network description, shape inference and the reference CPU kernels.
//!
//! `no_std` and no `alloc`: every kernel writes into slices the caller provides, so the same code runs on
//! a server, in wasm and on a microcontroller. The kernels here are the *reference*: plain loops that every
//! faster path (the trainer's GEMM kernels, the GPU shaders) is tested against.
//!
//! Layout follows TensorFlow: activations NHWC, conv weights HWIO `[3,3,in,out]`, dense weights `[in,out]`.
#![no_std]
// `unsafe_code` is denied workspace-wide; the audited exceptions are the SIMD micro-kernels in
// kernels/packed.rs and kernels/quantized.rs, chosen after run-time feature detection, and the worker
// threads of parallel.rs.

#[cfg(feature = "std")]
extern crate std;

pub mod format;
pub mod kernels;
pub mod network;
pub mod parallel;
pub mod plan;
pub mod preprocess;
pub mod reference;
pub mod runtime;
pub mod session;

pub use format::{FormatError, Model};
pub use kernels::Isa;
pub use network::{Layer, NetworkError, Shape};
pub use parallel::{Parallel, Serial};
pub use plan::{ParamSlot, Plan, Step};
pub use session::{Output, RunError, Session, SessionError};

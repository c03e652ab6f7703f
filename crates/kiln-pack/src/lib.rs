//! Kiln's packer: the weight quantizers and the writer of `.kiln` files (docs/FORMAT.md), the quantization
//! plan, the parallel evaluator, and with the `convert` feature the whole path from a kiln-train model to
//! a packed file.
//!
//! - [`quant::to_f16`]: half precision.
//! - [`quant::int8_per_channel`]: symmetric int8, one f32 scale per output channel.
//! - [`quant::int4_blocks`]: symmetric int4 in blocks of 32 with one f16 scale each: 18 bytes per 32 weights,
//!   4.5 bits per weight, the same budget as GGML's Q4_0.
//! - [`quant::int2_blocks`]: levels ±0.5, ±1.5 in blocks of 32 with one f16 scale: 2.5 bits per weight.
//! - [`writer::write`]: lays the tensors out, 256-byte aligned, with the graph and metadata, and checks the
//!   result with `kiln_core`'s reader.
//! - [`quant_plan::QuantPlan`]: the weight type of each layer, from a base type or the `mixed` policy plus per-layer
//!   overrides (`dense1=int2`).
//! - [`eval::predict_all`]: every test image's class through kiln-core's runtime, on worker threads: how a
//!   packed model's accuracy is measured.
//! - `convert` (feature `convert`): a kiln-train checkpoint or model to a packed file, its metadata (input
//!   normalisation from the network description), and the accuracy cost measured against f32.
//!
//! - `gptq` (feature `convert`): error-compensating rounding of int4/int2 layers on calibration images.
//!
//! Every quantizer rounds to nearest and picks each scale to minimise the squared error of the values it
//! covers (a search over candidate scales that includes the max-abs one), not just max|w| / qmax.

#[cfg(feature = "convert")]
pub mod convert;
pub mod eval;
#[cfg(feature = "convert")]
pub mod gptq;
pub mod quant;
pub mod quant_plan;
pub mod writer;

pub use quant_plan::{LayerWeights, QuantPlan, QuantPlanError};
pub use writer::{Metadata, PackError, PackedTensor, Quant, pack_tensor, write};

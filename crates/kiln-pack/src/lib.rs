//! Kiln's packer: the weight quantizers and the writer of `.kiln` files (docs/FORMAT.md).
//!
//! - [`quant::to_f16`]: half precision.
//! - [`quant::int8_per_channel`]: symmetric int8, one f32 scale per output channel.
//! - [`quant::int4_blocks`]: symmetric int4 in blocks of 32 with one f16 scale each: 18 bytes per 32 weights,
//!   4.5 bits per weight, the same budget as GGML's Q4_0.
//! - [`quant::int2_blocks`]: levels ±0.5, ±1.5 in blocks of 32 with one f16 scale: 2.5 bits per weight.
//! - [`writer::write`]: lays the tensors out, 256-byte aligned, with the graph and metadata, and checks the
//!   result with `kiln_core`'s reader.
//!
//! Every quantizer rounds to nearest and picks each scale to minimise the squared error of the values it
//! covers (a search over candidate scales that includes the max-abs one), not just max|w| / qmax.

pub mod quant;
pub mod writer;

pub use writer::{Metadata, PackError, PackedTensor, Quant, pack_tensor, write};

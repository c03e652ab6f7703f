//! Kiln's packer. For now: the weight quantizers that the compact model format will store.
//!
//! - [`quant::to_f16`]: half precision.
//! - [`quant::int8_per_channel`]: symmetric int8, one f32 scale per output channel.
//! - [`quant::int4_blocks`]: symmetric int4 in blocks of 32 with one f16 scale each: 18 bytes per 32 weights,
//!   4.5 bits per weight, the same budget as GGML's Q4_0.
//!
//! Every quantizer rounds to nearest and picks each scale to minimise the squared error of the values it
//! covers (a search over candidate scales that includes the max-abs one), not just max|w| / qmax.

pub mod quant;

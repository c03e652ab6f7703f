//! The trainer's layers: each file holds one layer's forward pass right next to its backward pass, and
//! tests that check the forward pass against kiln-core's reference kernel and the backward pass against
//! finite differences.
//!
//! Buffers are batch-major NHWC, as everywhere in Kiln; every argument carries its shape in the docs.

pub mod conv2d;
pub mod dense;
pub mod elementwise;
pub mod loss;
pub mod maxpool;
pub mod pad;
pub mod pool;
pub mod relu;

#[cfg(test)]
pub(crate) mod gradcheck;

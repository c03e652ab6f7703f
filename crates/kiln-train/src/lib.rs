//! Kiln's CPU trainer for the "Learn TensorFlow Now" networks.
//!
//! - [`presets`]: the shipped networks (the series' `fc3`, `convnet4`, `vgg`, and `lenet5`), each a
//!   [`description`] in `nets/*.txt`, read into a [`network::Network`].
//! - [`config`]: a run's settings (length, schedule, optimizer, initializer) and their parsing.
//! - [`init`], [`optim`]: the initializers and optimizers, with TensorFlow 1 semantics.
//! - [`layers`]: each layer's fast forward pass right next to its backward pass, with gradient checks.
//! - [`model`]: parameters plus the forward and backward passes over a whole network.
//! - [`data`]: the IDX (MNIST) reader; [`batch`]: batches and augmentation.
//! - [`train`]: the training loop, on the CPU or (feature `gpu`) through kiln-gpu; [`eval`]: test-set evaluation.
//! - Storage: [`tensor_file`] (the safetensors checkpoint and weights files), [`checkpoint`] (the Saver:
//!   cadence, keep-K, the `checkpoint` state file, recovery), [`fs`] (atomic writes).
//!
//! The `gpu` feature (off by default; the `kiln` CLI turns it on) adds [`train::Trainer::new_on_gpu`] and
//! pulls in kiln-gpu and wgpu; without it the crate is CPU-only.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod description;
pub mod eval;
pub mod fs;
pub mod gemm;
pub mod init;
pub mod layers;
pub mod model;
pub mod network;
pub mod optim;
pub mod presets;
pub mod rng;
pub mod tensor_file;
pub mod train;

pub use config::TrainConfig;
pub use data::{DataError, Dataset, Mnist};
pub use model::Model;
pub use network::Network;
pub use train::TrainError;

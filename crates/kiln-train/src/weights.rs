//! Trained weights in a safetensors file, with the network description in its metadata so the file
//! alone rebuilds the model. A weights file is a checkpoint without the optimizer slots and training state,
//! written and read by the same code in [`crate::checkpoint`].

use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::model::Model;

/// Metadata key holding the network description as JSON.
pub const NETWORK_KEY: &str = "kiln.network";
/// Metadata key holding the number of updates the weights have had.
pub const STEP_KEY: &str = "kiln.step";
/// Metadata key holding the kiln version that wrote the file.
pub const VERSION_KEY: &str = "kiln.version";

/// Writes `model`'s parameters to `path` atomically (see [`checkpoint::write_atomic`]), with the network
/// description, the step, the kiln version and a CRC-32 per tensor in the metadata.
pub fn save(path: &Path, model: &Model, step: u64) -> Result<(), CheckpointError> {
    let network = serde_json::to_string(&model.network).expect("a network always serialises");
    let metadata = HashMap::from([(NETWORK_KEY.to_string(), network), (STEP_KEY.to_string(), step.to_string())]);
    let tensors: Vec<(String, &[usize], &[f32])> =
        model.params.iter().map(|t| (t.name.clone(), &t.dims[..], &t.data[..])).collect();
    checkpoint::write_tensors(path, &tensors, metadata)
}

/// Reads a weights file or a checkpoint and rebuilds the model from it alone. Returns the model and
/// its step.
pub fn load(path: &Path) -> Result<(Model, u64), CheckpointError> {
    let ckpt = Checkpoint::open(path)?;
    Ok((ckpt.model()?, ckpt.step()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::InitChoice;
    use crate::presets;

    #[test]
    fn round_trip_rebuilds_the_model() {
        let dir = std::env::temp_dir().join(format!("kiln-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fc3.safetensors");
        let model = Model::new(presets::fc3(), InitChoice::Default, 5).unwrap();
        save(&path, &model, 42).unwrap();
        let (loaded, step) = load(&path).unwrap();
        assert_eq!(step, 42);
        assert_eq!(loaded.network, model.network);
        assert_eq!(loaded.params, model.params);

        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("fc3.safetensors") && err.contains("not a valid safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Trained weights in a safetensors file, with the network description in its metadata so the file
//! alone rebuilds the model. (Full training checkpoints, with optimizer state, build on this.)

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use thiserror::Error;

use crate::model::Model;
use crate::network::Network;

/// Metadata key holding the network description as JSON.
pub const NETWORK_KEY: &str = "kiln.network";
/// Metadata key holding the number of updates the weights have had.
pub const STEP_KEY: &str = "kiln.step";
/// Metadata key holding the kiln version that wrote the file.
pub const VERSION_KEY: &str = "kiln.version";

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {source}")]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{path}: no network description (metadata key {NETWORK_KEY}); was it written by kiln?")]
    NoNetwork { path: PathBuf },
    #[error("{path}: bad network description: {message}")]
    BadNetwork { path: PathBuf, message: String },
    #[error("{path}: tensor {name}: {problem}")]
    BadTensor { path: PathBuf, name: String, problem: String },
}

/// Writes `model`'s parameters to `path` atomically: a temporary file in the same directory, fsync,
/// rename, fsync the directory. A crash leaves either the old file or the new one, never a torn one.
pub fn save(path: &Path, model: &Model, step: u64) -> Result<(), WeightsError> {
    let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
    let network = serde_json::to_string(&model.network).expect("a network always serialises");
    let metadata = HashMap::from([
        (NETWORK_KEY.to_string(), network),
        (STEP_KEY.to_string(), step.to_string()),
        (VERSION_KEY.to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    let views: Vec<(String, TensorView<'_>)> = model
        .params
        .iter()
        .map(|t| {
            let view = TensorView::new(Dtype::F32, t.dims.clone(), bytemuck::cast_slice(&t.data))
                .expect("dims match the data by construction");
            (t.name.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|source| WeightsError::Format { path: path.to_path_buf(), source })?;

    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| io(std::io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Reads a weights file and rebuilds the model from it alone. Returns the model and its step.
pub fn load(path: &Path) -> Result<(Model, u64), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), source })?;
    let format = |source| WeightsError::Format { path: path.to_path_buf(), source };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(format)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let json = meta.get(NETWORK_KEY).ok_or_else(|| WeightsError::NoNetwork { path: path.to_path_buf() })?;
    let bad_network = |message: String| WeightsError::BadNetwork { path: path.to_path_buf(), message };
    let network: Network = serde_json::from_str(json).map_err(|e| bad_network(e.to_string()))?;
    // Refuse before allocating: a network can claim billions of parameters in a few bytes of JSON.
    let declared = network.param_count().map_err(|e| bad_network(e.to_string()))?;
    if declared.saturating_mul(4) > bytes.len() {
        return Err(bad_network(format!(
            "it declares {declared} parameters but the file holds only {} bytes",
            bytes.len()
        )));
    }
    let mut model = Model::zeroed(network).map_err(|e| bad_network(e.to_string()))?;
    let step = meta.get(STEP_KEY).and_then(|s| s.parse().ok()).unwrap_or(0);
    for t in &mut model.params {
        let bad = |problem: String| WeightsError::BadTensor { path: path.to_path_buf(), name: t.name.clone(), problem };
        let view = tensors.tensor(&t.name).map_err(|_| bad("missing".into()))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("dtype {:?}, expected F32", view.dtype())));
        }
        if view.shape() != t.dims.as_slice() {
            return Err(bad(format!("shape {:?}, expected {:?}", view.shape(), t.dims)));
        }
        for (dst, src) in t.data.iter_mut().zip(view.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
    Ok((model, step))
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

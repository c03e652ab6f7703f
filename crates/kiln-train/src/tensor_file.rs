//! The tensor file codec: a safetensors file of named f32 tensors, with the network description, the step,
//! the kiln version and a CRC-32 of every tensor in its `__metadata__`, so the file alone rebuilds the model.
//!
//! Two kinds of file share it (docs/FORMAT.md has the details):
//! - a training checkpoint ([`write_checkpoint`]): every variable under its scope name (`conv1/weights`, ...),
//!   the optimizer slots under TF's slot names (`conv1/weights/Adam`, `conv1/weights/Adam_1`,
//!   `conv1/weights/Momentum`), and in the metadata the training settings, the optimizer state and the run's
//!   progress (step, epoch, position, augmentation stream);
//! - a weights-only file ([`save_weights`]): just the variables.
//!
//! [`Checkpoint::open`] reads either kind and checks all of it. Which files a run keeps, and the `checkpoint`
//! state file that lists them, are [`crate::checkpoint`]'s business; every write goes through
//! [`crate::fs::write_atomic`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{OptimizerConfig, TrainConfig};
use crate::fs::{self, WriteError};
use crate::model::Model;
use crate::network::Network;
use crate::optim::Optimizer;
use crate::train::Progress;

/// Metadata key holding the network description as JSON.
pub const NETWORK_KEY: &str = "kiln.network";
/// Metadata key holding the number of updates the weights have had.
pub const STEP_KEY: &str = "kiln.step";
/// Metadata key holding the kiln version that wrote the file.
pub const VERSION_KEY: &str = "kiln.version";
/// Metadata key marking a training checkpoint, and its value.
pub const FORMAT_KEY: &str = "kiln.format";
pub const FORMAT: &str = "kiln-checkpoint-1";
pub const CONFIG_KEY: &str = "kiln.train_config";
pub const OPTIMIZER_KEY: &str = "kiln.optimizer";
pub const PROGRESS_KEY: &str = "kiln.progress";
pub const CHECKSUMS_KEY: &str = "kiln.crc32";
/// Largest activation (values per image) a file may ask for: 2^24 floats, 64 MiB, 256 times the VGG's largest.
pub const MAX_ACTIVATION_VALUES: usize = 1 << 24;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {source}")]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: tensor {name} is corrupt: CRC-32 {found:08x}, expected {expected:08x}")]
    Checksum { path: PathBuf, name: String, found: u32, expected: u32 },
}

impl From<WriteError> for CheckpointError {
    fn from(WriteError { path, source }: WriteError) -> Self {
        CheckpointError::Io { path, source }
    }
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// The optimizer state saved beside the slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OptimizerState {
    config: OptimizerConfig,
    beta1_power: f32,
    beta2_power: f32,
    updates: u64,
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

/// Writes named f32 tensors (`(name, dims, values)`) to a safetensors file at `path`, atomically. Adds the
/// kiln version and a CRC-32 of every tensor to `metadata`. Shared by checkpoints and weights-only files.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, &[usize], &[f32])],
    mut metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let checksums: HashMap<&str, String> = tensors
        .iter()
        .map(|(n, _, d)| (n.as_str(), format!("{:08x}", crc32fast::hash(bytemuck::cast_slice(d)))))
        .collect();
    metadata.insert(CHECKSUMS_KEY.to_string(), to_json(&checksums));
    metadata.insert(VERSION_KEY.to_string(), env!("CARGO_PKG_VERSION").to_string());
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dims, data)| {
            let view = TensorView::new(Dtype::F32, dims.to_vec(), bytemuck::cast_slice(data))
                .expect("dims match the data by construction");
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|source| CheckpointError::Format { path: path.to_path_buf(), source })?;
    Ok(fs::write_atomic(path, &bytes)?)
}

/// Writes a training checkpoint of a run to `path`: the weights, the optimizer slots and state, the
/// settings and the progress.
pub fn write_checkpoint(
    path: &Path,
    model: &Model,
    optimizer: &Optimizer,
    config: &TrainConfig,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    let mut named: Vec<(String, &[usize], &[f32])> = Vec::new();
    for (i, t) in model.params.iter().enumerate() {
        named.push((t.name.clone(), &t.dims, &t.data));
        for (slot_name, slot) in optimizer.slot_names(&t.name).into_iter().zip(&optimizer.slots[i]) {
            named.push((slot_name, &t.dims, slot));
        }
    }
    let state = OptimizerState {
        config: optimizer.config,
        beta1_power: optimizer.beta1_power,
        beta2_power: optimizer.beta2_power,
        updates: optimizer.updates,
    };
    let metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (NETWORK_KEY.to_string(), to_json(&model.network)),
        (STEP_KEY.to_string(), progress.step.to_string()),
        (CONFIG_KEY.to_string(), to_json(config)),
        (OPTIMIZER_KEY.to_string(), to_json(&state)),
        (PROGRESS_KEY.to_string(), to_json(progress)),
    ]);
    write_tensors(path, &named, metadata)
}

/// Writes `model`'s parameters to `path` atomically, with the network description, the step, the kiln
/// version and a CRC-32 per tensor in the metadata: a weights-only file.
pub fn save_weights(path: &Path, model: &Model, step: u64) -> Result<(), CheckpointError> {
    let network = serde_json::to_string(&model.network).expect("a network always serialises");
    let metadata = HashMap::from([(NETWORK_KEY.to_string(), network), (STEP_KEY.to_string(), step.to_string())]);
    let tensors: Vec<(String, &[usize], &[f32])> =
        model.params.iter().map(|t| (t.name.clone(), &t.dims[..], &t.data[..])).collect();
    write_tensors(path, &tensors, metadata)
}

/// Reads a weights file or a checkpoint and rebuilds the model from it alone. Returns the model and
/// its step.
pub fn load_weights(path: &Path) -> Result<(Model, u64), CheckpointError> {
    let ckpt = Checkpoint::open(path)?;
    Ok((ckpt.model()?, ckpt.step()))
}

/// An opened checkpoint or weights file.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    network: Network,
    step: u64,
    metadata: HashMap<String, String>,
    /// name → (dims, values)
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// Opens and fully checks a checkpoint file: format, network, tensor shapes and checksums.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Self::read(path, true)
    }

    /// Runs every check of [`Checkpoint::open`] without keeping the tensors: whether the file is intact.
    pub fn verify(path: &Path) -> Result<(), CheckpointError> {
        Self::read(path, false).map(drop)
    }

    fn read(path: &Path, keep_tensors: bool) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let format = |source| CheckpointError::Format { path: path.to_path_buf(), source };
        let invalid = |problem: String| CheckpointError::Invalid { path: path.to_path_buf(), problem };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
        let st = SafeTensors::deserialize(&bytes).map_err(format)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| metadata.get(key).ok_or_else(|| invalid(format!("no {key} in the metadata")));
        let network: Network =
            serde_json::from_str(get(NETWORK_KEY)?).map_err(|e| invalid(format!("bad network: {e}")))?;
        network.validate().map_err(|e| invalid(format!("bad network: {e}")))?;
        // Refuse before allocating: a network can claim billions of parameters in a few bytes of JSON.
        let declared = network.param_count().map_err(|e| invalid(format!("bad network: {e}")))?;
        if declared.saturating_mul(4) > bytes.len() {
            return Err(invalid(format!(
                "the network declares {declared} parameters but the file holds only {} bytes",
                bytes.len()
            )));
        }
        // The same for activations: a pad layer can ask for a gigantic image in a few bytes.
        let largest = kiln_core::network::max_activation_len(&network.layers, network.input)
            .map_err(|e| invalid(format!("bad network: {e}")))?;
        if largest > MAX_ACTIVATION_VALUES {
            return Err(invalid(format!(
                "the network has an activation of {largest} values per image; kiln allocates at most {MAX_ACTIVATION_VALUES}"
            )));
        }
        let step = get(STEP_KEY)?.parse().map_err(|e| invalid(format!("bad step: {e}")))?;
        let checksums: HashMap<String, String> = match metadata.get(CHECKSUMS_KEY) {
            Some(s) => serde_json::from_str(s).map_err(|e| invalid(format!("bad checksums: {e}")))?,
            None => HashMap::new(),
        };
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(invalid(format!("tensor {name} has dtype {:?}, expected F32", view.dtype())));
            }
            if let Some(expected) = checksums.get(&name) {
                let expected = u32::from_str_radix(expected, 16).map_err(|e| invalid(format!("bad checksum: {e}")))?;
                let found = crc32fast::hash(view.data());
                if found != expected {
                    return Err(CheckpointError::Checksum { path: path.to_path_buf(), name, found, expected });
                }
            }
            if keep_tensors {
                let data: Vec<f32> =
                    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                tensors.insert(name, (view.shape().to_vec(), data));
            }
        }
        Ok(Checkpoint { path: path.to_path_buf(), network, step, metadata, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The network, rebuilt from the file alone.
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// A tensor by name, like TF's `get_tensor_by_name`: its dims and values.
    pub fn tensor(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors.get(name).map(|(d, v)| (d.as_slice(), v.as_slice()))
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The metadata, as stored.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The model with its weights. A mismatch lists every missing, unexpected and wrong-shaped tensor.
    pub fn model(&self) -> Result<Model, CheckpointError> {
        let invalid = |problem: String| CheckpointError::Invalid { path: self.path.clone(), problem };
        let mut model = Model::zeroed(self.network.clone()).map_err(|e| invalid(e.to_string()))?;
        self.restore_into(&mut model)?;
        Ok(model)
    }

    /// Copies the weights into `model`, whose tensors must match by name and shape.
    pub fn restore_into(&self, model: &mut Model) -> Result<(), CheckpointError> {
        let (mut missing, mut wrong) = (Vec::new(), Vec::new());
        for t in &model.params {
            match self.tensors.get(&t.name) {
                None => missing.push(t.name.clone()),
                Some((dims, _)) if *dims != t.dims => {
                    wrong.push(format!("{} is {dims:?}, expected {:?}", t.name, t.dims))
                }
                Some(_) => {}
            }
        }
        let expected: Vec<&str> = model.params.iter().map(|t| t.name.as_str()).collect();
        let unexpected: Vec<&str> = self
            .names()
            .into_iter()
            .filter(|n| !expected.contains(n) && !expected.iter().any(|e| n.starts_with(&format!("{e}/"))))
            .collect();
        if !(missing.is_empty() && wrong.is_empty() && unexpected.is_empty()) {
            return Err(CheckpointError::Invalid {
                path: self.path.clone(),
                problem: format!(
                    "does not fit the network: missing {missing:?}, unexpected {unexpected:?}, wrong shape {wrong:?}"
                ),
            });
        }
        for t in &mut model.params {
            t.data.copy_from_slice(&self.tensors[&t.name].1);
        }
        Ok(())
    }

    /// The training settings, optimizer state (with slots) and progress saved with the run.
    pub fn training_state(&self, model: &Model) -> Result<(TrainConfig, Optimizer, Progress), CheckpointError> {
        let invalid = |problem: String| CheckpointError::Invalid { path: self.path.clone(), problem };
        let get =
            |key: &str| self.metadata.get(key).ok_or_else(|| invalid(format!("no {key}: not a training checkpoint")));
        let config: TrainConfig = serde_json::from_str(get(CONFIG_KEY)?).map_err(|e| invalid(e.to_string()))?;
        let state: OptimizerState = serde_json::from_str(get(OPTIMIZER_KEY)?).map_err(|e| invalid(e.to_string()))?;
        let progress: Progress = serde_json::from_str(get(PROGRESS_KEY)?).map_err(|e| invalid(e.to_string()))?;
        let mut optimizer = Optimizer::new(state.config, &model.param_lens());
        for (i, t) in model.params.iter().enumerate() {
            for (slot_name, slot) in optimizer.slot_names(&t.name).into_iter().zip(&mut optimizer.slots[i]) {
                let (dims, values) =
                    self.tensor(&slot_name).ok_or_else(|| invalid(format!("optimizer slot {slot_name} is missing")))?;
                if dims != t.dims.as_slice() {
                    return Err(invalid(format!("optimizer slot {slot_name} is {dims:?}, expected {:?}", t.dims)));
                }
                slot.copy_from_slice(values);
            }
        }
        optimizer.beta1_power = state.beta1_power;
        optimizer.beta2_power = state.beta2_power;
        optimizer.updates = state.updates;
        Ok((config, optimizer, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InitChoice;
    use crate::config::OptimizerKind;
    use crate::config::tests::config;
    use crate::presets;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-tensor-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn weights_round_trip_rebuilds_the_model() {
        let dir = scratch("weights");
        let path = dir.join("fc3.safetensors");
        let model = Model::new(presets::fc3(), InitChoice::Default, 5).unwrap();
        save_weights(&path, &model, 42).unwrap();
        let (loaded, step) = load_weights(&path).unwrap();
        assert_eq!(step, 42);
        assert_eq!(loaded.network, model.network);
        assert_eq!(loaded.params, model.params);
        let ckpt = Checkpoint::open(&path).unwrap();
        assert!(!ckpt.metadata().contains_key(FORMAT_KEY), "a weights file is not a training checkpoint");
        let err = ckpt.training_state(&loaded).unwrap_err().to_string();
        assert!(err.contains("not a training checkpoint"), "{err}");

        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = load_weights(&path).unwrap_err().to_string();
        assert!(err.contains("fc3.safetensors") && err.contains("not a valid safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checkpoint_round_trip_verify_and_corruption() {
        let dir = scratch("ckpt");
        let path = dir.join("fc3-10.safetensors");
        let model = Model::new(presets::fc3(), InitChoice::Default, 3).unwrap();
        let mut optimizer = Optimizer::new(OptimizerConfig::new(OptimizerKind::Adam), &model.param_lens());
        optimizer.slots[0][1][5] = 0.25;
        optimizer.beta1_power = 0.5;
        let progress = Progress { step: 10, epoch: 0, position: 80, augment_word_pos: 7 };
        write_checkpoint(&path, &model, &optimizer, &config(), &progress).unwrap();

        Checkpoint::verify(&path).unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        assert_eq!(ckpt.step(), 10);
        assert_eq!(ckpt.network(), &model.network);
        assert_eq!(ckpt.metadata()[FORMAT_KEY], FORMAT);
        assert_eq!(ckpt.metadata()[VERSION_KEY], env!("CARGO_PKG_VERSION"));
        assert_eq!(ckpt.tensor("dense1/weights").unwrap().1, &model.params[0].data[..]);
        assert!(ckpt.names().contains(&"dense1/weights/Adam_1"));
        let restored = ckpt.model().unwrap();
        assert_eq!(restored.params, model.params);
        let (cfg, opt, back) = ckpt.training_state(&restored).unwrap();
        assert_eq!(cfg, config());
        assert_eq!((opt.slots[0][1][5], opt.beta1_power), (0.25, 0.5));
        assert_eq!(back, progress);

        // Flip one byte in the data: the checksum names the tensor, for open and verify alike.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        for err in [Checkpoint::open(&path).unwrap_err(), Checkpoint::verify(&path).unwrap_err()] {
            let err = err.to_string();
            assert!(err.contains("fc3-10.safetensors") && err.contains("corrupt"), "{err}");
        }

        // Another network's checkpoint does not restore into this one.
        write_checkpoint(&path, &model, &optimizer, &config(), &progress).unwrap();
        let mut conv = Model::new(presets::convnet4(), InitChoice::Default, 3).unwrap();
        let err = Checkpoint::open(&path).unwrap().restore_into(&mut conv).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("conv1/weights") && err.contains("wrong shape"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Training checkpoints in the manner of `tf.train.Saver`: one safetensors file per save, named
//! `<prefix>-<step>.safetensors`, and a JSON state file `checkpoint` listing the latest and the kept ones.
//!
//! A checkpoint holds every variable under its scope name (`conv1/weights`, ...), the optimizer slots under
//! TF's slot names (`conv1/weights/Adam`, `conv1/weights/Adam_1`, `conv1/weights/Momentum`), and in its
//! `__metadata__` the network, the training settings, the optimizer state, the run's progress (step, epoch,
//! position, augmentation stream), a CRC-32 of every tensor and the kiln version. docs/FORMAT.md has the
//! details. Every write is atomic: a temporary file, fsync, rename, fsync of the directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Model;
use crate::network::Network;
use crate::optim::Optimizer;
use crate::train::{Progress, TrainConfig};
use crate::weights::{NETWORK_KEY, STEP_KEY, VERSION_KEY};

/// Metadata keys beyond those of [`crate::weights`].
pub const FORMAT_KEY: &str = "kiln.format";
pub const FORMAT: &str = "kiln-checkpoint-1";
pub const CONFIG_KEY: &str = "kiln.train_config";
pub const OPTIMIZER_KEY: &str = "kiln.optimizer";
pub const PROGRESS_KEY: &str = "kiln.progress";
pub const CHECKSUMS_KEY: &str = "kiln.crc32";
/// Largest activation (values per image) a file may ask for: 2^24 floats, 64 MiB, 256 times the VGG's largest.
pub const MAX_ACTIVATION_VALUES: usize = 1 << 24;
/// The state file's name, as TensorFlow's.
pub const STATE_FILE: &str = "checkpoint";

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

/// The optimizer state saved beside the slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OptimizerState {
    config: crate::optim::OptimizerConfig,
    beta1_power: f32,
    beta2_power: f32,
    updates: u64,
}

/// One entry of the state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// File name, relative to the directory.
    pub file: String,
    pub step: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Test accuracy (0..=1) measured on this checkpoint, if any was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f32>,
}

/// The state file: the latest checkpoint and all kept ones, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub latest: Option<String>,
    pub checkpoints: Vec<Entry>,
}

/// An opened checkpoint file.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    network: Network,
    step: u64,
    metadata: HashMap<String, String>,
    /// name → (dims, values)
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Deletes temporary files that a killed save left in `dir` (`.<name>.tmp-<pid>` of another process).
/// A checkpoint directory has one writer at a time, so any such file is garbage — up to 184 MB for the VGG.
fn remove_stale_temporaries(dir: &Path) {
    let ours = format!(".tmp-{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && !name.ends_with(&ours) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Saves a checkpoint of a run into `dir` as `<prefix>-<step>.safetensors`, then updates the state file
/// and deletes all but the newest `keep` checkpoints it lists. Returns the new file's path.
pub fn save(
    dir: &Path,
    prefix: &str,
    model: &Model,
    optimizer: &Optimizer,
    config: &TrainConfig,
    progress: &Progress,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    remove_stale_temporaries(dir);
    // The prefix comes from a network name, which a file can set: keep it a plain file name.
    let prefix: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    let file = format!("{prefix}-{}.safetensors", progress.step);
    let path = dir.join(&file);

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
    write_tensors(&path, &named, metadata)?;

    // Only now that the new file is safely on disk: list it, then drop the oldest beyond `keep`.
    let mut state = read_state(dir).unwrap_or_default();
    state.checkpoints.retain(|e| e.file != file);
    let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    state.checkpoints.push(Entry { file: file.clone(), step: progress.step, time, test_accuracy: None });
    state.latest = Some(file);
    let drop_count = state.checkpoints.len().saturating_sub(keep.max(1));
    let dropped: Vec<Entry> = state.checkpoints.drain(..drop_count).collect();
    write_state(dir, &state)?;
    for old in dropped {
        let _ = std::fs::remove_file(dir.join(&old.file));
    }
    Ok(path)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

/// Writes named f32 tensors (`(name, dims, values)`) to a safetensors file at `path`, atomically. Adds the
/// kiln version and a CRC-32 of every tensor to `metadata`. Shared by checkpoints and weights-only files.
pub(crate) fn write_tensors(
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
    write_atomic(path, &bytes)
}

/// Notes a measured test accuracy against `file` in the state file (atomically, like every write).
pub fn record_accuracy(dir: &Path, file: &Path, accuracy: f32) -> Result<(), CheckpointError> {
    let mut state = read_state(dir)?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(entry) = state.checkpoints.iter_mut().find(|e| Some(&e.file) == name.as_ref()) {
        entry.test_accuracy = Some(accuracy);
        write_state(dir, &state)?;
    }
    Ok(())
}

/// Reads `dir/checkpoint`.
pub fn read_state(dir: &Path) -> Result<State, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid { path, problem: format!("bad state file: {e}") })
}

fn write_state(dir: &Path, state: &State) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(state).expect("plain data always serialises");
    write_atomic(&dir.join(STATE_FILE), text.as_bytes())
}

/// The latest checkpoint of `dir`, as its state file names it.
pub fn latest(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let state = read_state(dir)?;
    let file = state.latest.ok_or_else(|| CheckpointError::Invalid {
        path: dir.join(STATE_FILE),
        problem: "the state file lists no checkpoint".into(),
    })?;
    let path = dir.join(&file);
    if !path.is_file() {
        return Err(CheckpointError::Invalid {
            path: dir.join(STATE_FILE),
            problem: format!("the latest checkpoint {file} is missing"),
        });
    }
    Ok(path)
}

impl Checkpoint {
    /// Opens and fully checks a checkpoint file: format, network, tensor shapes and checksums.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
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
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if let Some(expected) = checksums.get(&name) {
                let expected = u32::from_str_radix(expected, 16).map_err(|e| invalid(format!("bad checksum: {e}")))?;
                let found = crc32fast::hash(view.data());
                if found != expected {
                    return Err(CheckpointError::Checksum { path: path.to_path_buf(), name, found, expected });
                }
            }
            tensors.insert(name, (view.shape().to_vec(), data));
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

/// A checkpoint path from a directory (its latest) or a file. Without a state file, or when the latest
/// checkpoint it names is corrupt, the newest checkpoint in the directory that opens cleanly is taken, with
/// a warning for the caller to show.
pub fn resolve(path: &Path) -> Result<(PathBuf, Option<String>), CheckpointError> {
    if !path.is_dir() {
        return Ok((path.to_path_buf(), None));
    }
    let state = path.join(STATE_FILE);
    if state.exists() {
        let latest = latest(path)?;
        // Bit rot or a bad copy: fall back to the newest intact checkpoint. When there is none, the caller's
        // own open of the latest reports what is wrong with it.
        if let Err(problem) = Checkpoint::open(&latest)
            && let Some(newest) = newest_intact(path)?
        {
            let warning = format!(
                "{problem}; {} names it as the latest, using the newest intact checkpoint instead, {}",
                state.display(),
                newest.file_name().unwrap_or_default().to_string_lossy()
            );
            return Ok((newest, Some(warning)));
        }
        return Ok((latest, None));
    }
    let newest = newest_intact(path)?.ok_or_else(|| CheckpointError::Invalid {
        path: path.to_path_buf(),
        problem: format!("no {STATE_FILE} state file and no intact checkpoint"),
    })?;
    let warning = format!(
        "{} is missing; using the newest intact checkpoint, {}",
        state.display(),
        newest.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok((newest, Some(warning)))
}

/// The checkpoint `*-<step>.safetensors` in `dir` with the highest step that opens and checks out.
fn newest_intact(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let stem = p.file_name()?.to_str()?.strip_suffix(".safetensors")?.to_string();
            let step = stem.rsplit_once('-')?.1.parse().ok()?;
            Some((step, p))
        })
        .collect();
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    Ok(found.into_iter().map(|(_, p)| p).find(|p| Checkpoint::open(p).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::InitChoice;
    use crate::optim::{OptimizerConfig, OptimizerKind};
    use crate::presets;
    use crate::train::tests::config;

    #[test]
    fn save_open_keep_and_corruption() {
        let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = Model::new(presets::fc3(), InitChoice::Default, 3).unwrap();
        let mut optimizer = Optimizer::new(OptimizerConfig::new(OptimizerKind::Adam), &model.param_lens());
        optimizer.slots[0][1][5] = 0.25;
        optimizer.beta1_power = 0.5;
        for step in 1..=10 {
            let progress = Progress { step, epoch: 0, position: 8 * step as usize, augment_word_pos: 7 };
            save(&dir, "fc3", &model, &optimizer, &config(), &progress, 3).unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files.len(), 4, "3 checkpoints and the state file: {files:?}");
        let state = read_state(&dir).unwrap();
        assert_eq!(state.latest.as_deref(), Some("fc3-10.safetensors"));
        assert_eq!(state.checkpoints.iter().map(|e| e.step).collect::<Vec<_>>(), [8, 9, 10]);

        let ckpt = Checkpoint::open(&latest(&dir).unwrap()).unwrap();
        assert_eq!(ckpt.step(), 10);
        assert_eq!(ckpt.network(), &model.network);
        assert_eq!(ckpt.tensor("dense1/weights").unwrap().1, &model.params[0].data[..]);
        assert!(ckpt.names().contains(&"dense1/weights/Adam_1"));
        let restored = ckpt.model().unwrap();
        assert_eq!(restored.params, model.params);
        let (cfg, opt, progress) = ckpt.training_state(&restored).unwrap();
        assert_eq!(cfg, config());
        assert_eq!((opt.slots[0][1][5], opt.beta1_power), (0.25, 0.5));
        assert_eq!(progress.position, 80);

        // Flip one byte in the data: the checksum names the tensor.
        let path = latest(&dir).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = Checkpoint::open(&path).unwrap_err().to_string();
        assert!(err.contains("fc3-10.safetensors") && err.contains("corrupt"), "{err}");

        // A hostile network name cannot steer where checkpoints go.
        let mut sneaky = model.clone();
        sneaky.network.name = "../../escape".into();
        let progress = Progress { step: 11, epoch: 0, position: 0, augment_word_pos: 0 };
        let path = save(&dir, &sneaky.network.name, &sneaky, &optimizer, &config(), &progress, 3).unwrap();
        assert_eq!(path, dir.join("______escape-11.safetensors"));

        // Another network's checkpoint does not restore into this one.
        let mut conv = Model::new(presets::convnet4(), InitChoice::Default, 3).unwrap();
        let err = Checkpoint::open(&dir.join("fc3-9.safetensors")).unwrap().restore_into(&mut conv).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("missing") && err.contains("conv1/weights") && err.contains("wrong shape"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

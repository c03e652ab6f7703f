//! Training checkpoints in the manner of `tf.train.Saver`: one file per save, named
//! `<prefix>-<step>.safetensors`, and a JSON state file `checkpoint` listing the latest and the kept ones.
//!
//! [`Saver`] owns a checkpoint directory: the cadence (every N steps), keeping the newest K, the state file,
//! and recovery when the state file or the checkpoint it names is missing or corrupt ([`recover`]). What a
//! checkpoint file holds is [`crate::tensor_file`]'s ([`Checkpoint`], [`CheckpointError`]);
//! every write is atomic through [`crate::fs::write_atomic`]. docs/FORMAT.md has the formats.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::fs;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::tensor_file::{self, io};
use crate::train::Progress;

use crate::tensor_file::{Checkpoint, CheckpointError};

/// The state file's name, as TensorFlow's.
pub const STATE_FILE: &str = "checkpoint";

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

/// Saves a run's checkpoints into one directory, like `tf.train.Saver`: `<prefix>-<step>.safetensors`
/// every N steps (see [`Saver::is_due`]), the newest `keep` of them kept, and the state file listing them.
#[derive(Clone, Debug)]
pub struct Saver {
    dir: PathBuf,
    prefix: String,
    keep: usize,
    every: Option<u64>,
}

impl Saver {
    /// A saver into `dir` that keeps the newest `keep` checkpoints (at least one). The prefix comes from a
    /// network name, which a file can set: anything but ASCII letters, digits, `_` and `-` becomes `_`, so
    /// it stays a plain file name inside `dir`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str, keep: usize) -> Saver {
        let prefix =
            prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
        Saver { dir: dir.into(), prefix, keep: keep.max(1), every: None }
    }

    /// Saves due every `steps` steps (none when 0).
    pub fn every(mut self, steps: u64) -> Saver {
        self.every = (steps > 0).then_some(steps);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the cadence asks for a save after update `step`.
    pub fn is_due(&self, step: u64) -> bool {
        self.every.is_some_and(|every| step.is_multiple_of(every))
    }

    /// The file name a save at `step` gets.
    pub fn file_name(&self, step: u64) -> String {
        format!("{}-{step}.safetensors", self.prefix)
    }

    /// Saves a checkpoint of a run (see [`Saver::save_with`]). Returns the new file's path.
    pub fn save(
        &self,
        model: &Model,
        optimizer: &Optimizer,
        config: &TrainConfig,
        progress: &Progress,
    ) -> Result<PathBuf, CheckpointError> {
        self.save_with(progress.step, |path| tensor_file::write_checkpoint(path, model, optimizer, config, progress))
    }

    /// Has `write` put the checkpoint for `step` at the path it is given (atomically), then lists it as the
    /// latest in the state file and deletes the oldest listed beyond `keep`. Files are deleted only after the
    /// state file no longer names them, so a crash at any moment leaves the previous latest listed and intact.
    /// Also deletes what killed saves left behind first. Returns the new file's path.
    pub fn save_with(
        &self,
        step: u64,
        write: impl FnOnce(&Path) -> Result<(), CheckpointError>,
    ) -> Result<PathBuf, CheckpointError> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        fs::remove_stale_temporaries(dir);
        let file = self.file_name(step);
        let path = dir.join(&file);
        write(&path)?;

        // Only now that the new file is safely on disk: list it, then drop the oldest beyond `keep`.
        let mut state = read_state(dir).unwrap_or_default();
        state.checkpoints.retain(|e| e.file != file);
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        state.checkpoints.push(Entry { file: file.clone(), step, time, test_accuracy: None });
        state.latest = Some(file);
        let drop_count = state.checkpoints.len().saturating_sub(self.keep);
        let dropped: Vec<Entry> = state.checkpoints.drain(..drop_count).collect();
        write_state(dir, &state)?;
        for old in dropped {
            let _ = std::fs::remove_file(dir.join(&old.file));
        }
        Ok(path)
    }

    /// The state file.
    pub fn state(&self) -> Result<State, CheckpointError> {
        read_state(&self.dir)
    }

    /// Notes a measured test accuracy against `file` in the state file.
    pub fn record_accuracy(&self, file: &Path, accuracy: f32) -> Result<(), CheckpointError> {
        record_accuracy(&self.dir, file, accuracy)
    }

    /// The checkpoint to restore from, with a warning when it is not the one the state file names:
    /// see [`recover`].
    pub fn recover(&self) -> Result<(PathBuf, Option<String>), CheckpointError> {
        recover(&self.dir)
    }
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
    Ok(fs::write_atomic(&dir.join(STATE_FILE), text.as_bytes())?)
}

/// The latest checkpoint of `dir`, as its state file names it (not opened: see [`recover`]).
pub fn latest(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let state = read_state(dir)?;
    latest_of(dir, &state).map(|(path, _)| path)
}

fn latest_of(dir: &Path, state: &State) -> Result<(PathBuf, String), CheckpointError> {
    let file = state.latest.clone().ok_or_else(|| CheckpointError::Invalid {
        path: dir.join(STATE_FILE),
        problem: "the state file lists no checkpoint".into(),
    })?;
    Ok((dir.join(&file), file))
}

/// A checkpoint path from a directory (see [`recover`]) or a file (taken as it is).
pub fn resolve(path: &Path) -> Result<(PathBuf, Option<String>), CheckpointError> {
    if !path.is_dir() {
        return Ok((path.to_path_buf(), None));
    }
    recover(path)
}

/// The checkpoint of `dir` to restore from: the state file's latest, checked to be intact (every CRC-32).
/// When the state file is missing or unreadable, or the latest is missing or corrupt, the newest intact
/// checkpoint is taken instead (those the state file lists first, newest first, then any `*-<step>.safetensors`
/// in `dir` by step), with a warning for the caller to show that names what was wrong and what is used.
/// With no intact checkpoint at all, the error says why the latest is unusable.
pub fn recover(dir: &Path) -> Result<(PathBuf, Option<String>), CheckpointError> {
    let state_path = dir.join(STATE_FILE);
    let state = match read_state(dir) {
        Ok(state) => state,
        Err(err) => {
            let missing = !state_path.exists();
            let newest = newest_intact(dir, &State::default(), None)?.ok_or_else(|| CheckpointError::Invalid {
                path: dir.to_path_buf(),
                problem: match missing {
                    true => format!("no {STATE_FILE} state file and no intact checkpoint"),
                    false => format!("{err}, and no intact checkpoint"),
                },
            })?;
            let problem = match missing {
                true => format!("{} is missing", state_path.display()),
                false => err.to_string(),
            };
            let warning = format!("{problem}; using the newest intact checkpoint, {}", file_name(&newest));
            return Ok((newest, Some(warning)));
        }
    };
    let (latest, file) = latest_of(dir, &state)?;
    let err = match Checkpoint::verify(&latest) {
        Ok(()) => return Ok((latest, None)),
        Err(err) => err,
    };
    let missing = !latest.exists();
    let Some(newest) = newest_intact(dir, &state, Some(&file))? else {
        return Err(match missing {
            true => CheckpointError::Invalid {
                path: state_path,
                problem: format!("the latest checkpoint {file} is missing"),
            },
            false => err,
        });
    };
    let problem = match missing {
        true => "is missing".to_string(),
        false => format!("is corrupt ({err})"),
    };
    let warning =
        format!("the latest checkpoint {file} {problem}; using the newest intact checkpoint, {}", file_name(&newest));
    Ok((newest, Some(warning)))
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// The newest checkpoint of `dir` that opens and checks out, other than `skip`: first those `state` lists
/// (newest first), then any `*-<step>.safetensors` in `dir` by descending step.
fn newest_intact(dir: &Path, state: &State, skip: Option<&str>) -> Result<Option<PathBuf>, CheckpointError> {
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
    let listed = state.checkpoints.iter().rev().map(|e| dir.join(&e.file));
    let mut tried = HashSet::new();
    Ok(listed
        .chain(found.into_iter().map(|(_, p)| p))
        .filter(|p| skip.is_none_or(|skip| file_name(p) != skip))
        .filter(|p| tried.insert(p.clone()))
        .find(|p| Checkpoint::verify(p).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InitChoice;
    use crate::config::tests::config;
    use crate::config::{OptimizerConfig, OptimizerKind};
    use crate::presets;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-saver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// A stand-in for a checkpoint writer: any bytes will do for the Saver's bookkeeping.
    fn placeholder(path: &Path) -> Result<(), CheckpointError> {
        Ok(fs::write_atomic(path, path.to_string_lossy().as_bytes())?)
    }

    /// A real (small) checkpoint, for recovery, which opens the files.
    fn real_save(saver: &Saver, step: u64) -> PathBuf {
        let model = Model::new(presets::fc3(), InitChoice::Default, 3).unwrap();
        let optimizer = Optimizer::new(OptimizerConfig::new(OptimizerKind::Sgd), &model.param_lens());
        let progress = Progress { step, epoch: 0, position: 0, augment_word_pos: 0 };
        saver.save(&model, &optimizer, &config(), &progress).unwrap()
    }

    fn corrupt(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() - 5;
        bytes[at] ^= 0x08;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn keep_deletes_the_oldest_and_the_state_lists_latest_and_kept() {
        let dir = scratch("keep");
        let saver = Saver::new(&dir, "net", 3);
        for step in [2, 4, 6, 8, 10] {
            let path = saver.save_with(step, placeholder).unwrap();
            assert_eq!(path, dir.join(format!("net-{step}.safetensors")));
        }
        assert_eq!(listing(&dir), ["checkpoint", "net-10.safetensors", "net-6.safetensors", "net-8.safetensors"]);
        let state = saver.state().unwrap();
        assert_eq!(state.latest.as_deref(), Some("net-10.safetensors"));
        let kept: Vec<(&str, u64)> = state.checkpoints.iter().map(|e| (e.file.as_str(), e.step)).collect();
        assert_eq!(kept, [("net-6.safetensors", 6), ("net-8.safetensors", 8), ("net-10.safetensors", 10)]);
        assert_eq!(latest(&dir).unwrap(), dir.join("net-10.safetensors"));

        // Saving a step again replaces its entry rather than listing it twice.
        saver.save_with(8, placeholder).unwrap();
        let state = saver.state().unwrap();
        assert_eq!(state.latest.as_deref(), Some("net-8.safetensors"));
        assert_eq!(state.checkpoints.iter().map(|e| e.step).collect::<Vec<_>>(), [6, 10, 8]);

        // The accuracy lands on its entry and survives the next save.
        saver.record_accuracy(&dir.join("net-10.safetensors"), 0.5).unwrap();
        saver.save_with(12, placeholder).unwrap();
        let state = saver.state().unwrap();
        let accuracies: Vec<_> = state.checkpoints.iter().map(|e| (e.step, e.test_accuracy)).collect();
        assert_eq!(accuracies, [(10, Some(0.5)), (8, None), (12, None)]);
        assert_eq!(listing(&dir), ["checkpoint", "net-10.safetensors", "net-12.safetensors", "net-8.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keep_zero_still_keeps_the_latest() {
        let dir = scratch("keep0");
        let saver = Saver::new(&dir, "net", 0);
        saver.save_with(1, placeholder).unwrap();
        saver.save_with(2, placeholder).unwrap();
        assert_eq!(listing(&dir), ["checkpoint", "net-2.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_state_and_the_kept_files() {
        let dir = scratch("failed");
        let saver = Saver::new(&dir, "net", 1);
        saver.save_with(1, placeholder).unwrap();
        let before = saver.state().unwrap();
        let err = saver
            .save_with(2, |path| Err(CheckpointError::Invalid { path: path.into(), problem: "disk full".into() }))
            .unwrap_err();
        assert!(err.to_string().contains("net-2.safetensors: disk full"), "{err}");
        assert_eq!(saver.state().unwrap(), before);
        assert_eq!(listing(&dir), ["checkpoint", "net-1.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporaries_go_on_the_next_save() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".net-1.safetensors.tmp-1"), b"half a checkpoint").unwrap();
        Saver::new(&dir, "net", 5).save_with(2, placeholder).unwrap();
        assert_eq!(listing(&dir), ["checkpoint", "net-2.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cadence_and_prefix() {
        let saver = Saver::new("d", "fc3", 5);
        assert!(!saver.is_due(10), "no cadence: only explicit saves");
        let saver = saver.every(5);
        assert_eq!([4, 5, 6, 10].map(|s| saver.is_due(s)), [false, true, false, true]);
        assert!(!Saver::new("d", "fc3", 5).every(0).is_due(5));
        // A hostile network name cannot steer where checkpoints go.
        assert_eq!(Saver::new("d", "../../escape", 5).file_name(11), "______escape-11.safetensors");
        assert_eq!(Saver::new("d", "vgg_16-b", 5).file_name(3), "vgg_16-b-3.safetensors");
    }

    #[test]
    fn save_writes_a_checkpoint_that_opens() {
        let dir = scratch("real");
        let saver = Saver::new(&dir, "fc3", 2);
        let path = real_save(&saver, 7);
        assert_eq!(path, dir.join("fc3-7.safetensors"));
        let ckpt = Checkpoint::open(&path).unwrap();
        assert_eq!(ckpt.step(), 7);
        assert_eq!(ckpt.training_state(&ckpt.model().unwrap()).unwrap().2.step, 7);
        assert_eq!(resolve(&dir).unwrap(), (path.clone(), None));
        assert_eq!(resolve(&path).unwrap(), (path, None), "a file is taken as it is");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recovery_from_a_missing_or_corrupt_state_file() {
        let dir = scratch("state");
        let saver = Saver::new(&dir, "fc3", 5);
        for step in 1..=3 {
            real_save(&saver, step);
        }
        corrupt(&dir.join("fc3-3.safetensors"));

        std::fs::write(dir.join(STATE_FILE), b"{ not json").unwrap();
        let (path, warning) = saver.recover().unwrap();
        assert_eq!(path, dir.join("fc3-2.safetensors"), "the newest intact one");
        let warning = warning.unwrap();
        assert!(warning.contains("bad state file") && warning.contains("fc3-2.safetensors"), "{warning}");

        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let (path, warning) = saver.recover().unwrap();
        assert_eq!(path, dir.join("fc3-2.safetensors"));
        let warning = warning.unwrap();
        assert!(warning.contains("checkpoint is missing") && warning.contains("fc3-2.safetensors"), "{warning}");

        // The next save writes a fresh state file.
        real_save(&saver, 4);
        assert_eq!(saver.recover().unwrap(), (dir.join("fc3-4.safetensors"), None));

        // Nothing intact at all: an error, not a guess.
        let empty = scratch("state-empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = recover(&empty).unwrap_err().to_string();
        assert!(err.contains("no checkpoint state file and no intact checkpoint"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn a_corrupt_or_missing_latest_falls_back_to_the_newest_intact() {
        let dir = scratch("latest");
        let saver = Saver::new(&dir, "fc3", 3);
        for step in [10, 20, 30] {
            real_save(&saver, step);
        }
        // A stray file of a higher step that the state file does not list is no better than the kept ones.
        std::fs::write(dir.join("fc3-99.safetensors"), b"junk").unwrap();
        corrupt(&dir.join("fc3-30.safetensors"));
        let (path, warning) = saver.recover().unwrap();
        assert_eq!(path, dir.join("fc3-20.safetensors"));
        let warning = warning.unwrap();
        assert!(
            warning.contains("fc3-30.safetensors is corrupt")
                && warning.contains("CRC-32")
                && warning.ends_with("using the newest intact checkpoint, fc3-20.safetensors"),
            "{warning}"
        );

        // Two bad in a row: the next one down.
        corrupt(&dir.join("fc3-20.safetensors"));
        assert_eq!(saver.recover().unwrap().0, dir.join("fc3-10.safetensors"));

        std::fs::remove_file(dir.join("fc3-30.safetensors")).unwrap();
        let (path, warning) = resolve(&dir).unwrap();
        assert_eq!(path, dir.join("fc3-10.safetensors"));
        assert!(warning.unwrap().contains("the latest checkpoint fc3-30.safetensors is missing"));

        // No intact checkpoint left: the error is about the latest, as without a fallback.
        corrupt(&dir.join("fc3-10.safetensors"));
        let err = recover(&dir).unwrap_err().to_string();
        assert!(err.contains("fc3-30.safetensors is missing"), "{err}");
        std::fs::write(dir.join("fc3-30.safetensors"), b"junk").unwrap();
        let err = recover(&dir).unwrap_err().to_string();
        assert!(err.contains("fc3-30.safetensors") && err.contains("not a valid safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

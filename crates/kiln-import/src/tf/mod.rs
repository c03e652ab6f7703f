//! TensorFlow 1.x Saver checkpoints (the V2 format `tf.compat.v1.train.Saver` writes):
//! `PREFIX.index`, `PREFIX.data-NNNNN-of-MMMMM`, `PREFIX.meta` and the text `checkpoint` state file.
//!
//! [`TfCheckpoint::open`] takes a prefix, any of those files, or a directory (its `checkpoint` file's latest).
//! The tensors come from the bundle ([`bundle`]), every CRC32C checked; the network from the `.meta` graph
//! ([`graph`]) or, without one, from a preset matched by name and shape ([`TfCheckpoint::to_model_as`]).

pub mod bundle;
pub mod graph;
pub mod proto;
pub mod table;

use std::path::{Path, PathBuf};

use kiln_train::model::Model;
use kiln_train::network::Network;
use prost::Message;
use thiserror::Error;

use bundle::Bundle;

/// Why a TensorFlow checkpoint could not be read or mapped. Every variant names the file.
#[derive(Debug, Error)]
pub enum TfError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The path is not a checkpoint: no `.index` beside it, or a directory without a `checkpoint` file.
    #[error("{}: {reason}", path.display())]
    NotACheckpoint { path: PathBuf, reason: String },
    /// The text `checkpoint` state file is malformed or names no checkpoint.
    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    /// The `.index` table is malformed (its footer, a block, a block's CRC32C, the header).
    #[error("{file}: {reason}")]
    Index { file: String, reason: String },
    /// One tensor's index entry is malformed or describes something Kiln does not read.
    #[error("{file}: tensor \"{tensor}\": {reason}")]
    Entry { file: String, tensor: String, reason: String },
    /// A `.data` shard the index names does not exist.
    #[error("{}: missing (the .index names this data shard)", path.display())]
    MissingShard { path: PathBuf },
    /// A tensor's bytes run past the end of its shard.
    #[error("{file}: tensor \"{tensor}\" is at bytes {offset}..+{size}, but the file has {len} bytes: truncated")]
    Truncated { file: String, tensor: String, offset: i64, size: i64, len: usize },
    /// A tensor's bytes do not match the CRC32C the index stores.
    #[error(
        "{file}: tensor \"{tensor}\" fails its CRC32C check (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt"
    )]
    Crc { file: String, tensor: String, stored: u32, computed: u32 },
    /// The `.meta` file is not a MetaGraphDef, or its graph has no recognisable input and output.
    #[error("{file}: {reason}")]
    Meta { file: String, reason: String },
    /// A node on the chain from the input to the logits is an op (or has attributes) Kiln does not map.
    #[error("{file}: node \"{node}\" (op {op}): {reason}")]
    UnsupportedOp { file: String, node: String, op: String, reason: String },
    /// Without a `.meta`, the checkpoint's tensors do not match the named preset.
    #[error("{file}: {reason}")]
    Mapping { file: String, reason: String },
    /// The mapped network is not a valid Kiln network.
    #[error("{file}: the network found is not valid: {source}")]
    Network { file: String, source: kiln_core::network::NetworkError },
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TfError> {
    std::fs::read(path).map_err(|source| TfError::Io { path: path.to_path_buf(), source })
}

/// Whether `path` looks like a TensorFlow checkpoint (a prefix with an `.index`, one of its files, or a
/// directory whose `checkpoint` file is TF's text state), without reading tensors.
pub fn is_tf_checkpoint(path: &Path) -> bool {
    if path.is_dir() {
        return std::fs::read_to_string(path.join("checkpoint"))
            .is_ok_and(|s| s.trim_start().starts_with("model_checkpoint_path"));
    }
    prefix_of(path).is_some_and(|p| bundle::index_path(&p).is_file())
}

/// The checkpoint prefix a file path stands for: `x.index`, `x.meta`, `x.data-00000-of-00001` → `x`.
fn prefix_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = if let Some(s) = name.strip_suffix(".index").or_else(|| name.strip_suffix(".meta")) {
        s
    } else if let Some(at) = name.find(".data-") {
        &name[..at]
    } else {
        name
    };
    Some(path.with_file_name(stem))
}

/// The latest checkpoint a directory's text `checkpoint` file names. Its paths may be absolute paths from
/// the machine that trained; like TF, a path that is not there is looked up by its file name in `dir`.
fn latest_in(dir: &Path) -> Result<PathBuf, TfError> {
    let state = dir.join("checkpoint");
    let text = std::fs::read_to_string(&state).map_err(|source| TfError::Io { path: state.clone(), source })?;
    let bad = |reason: &str| TfError::State { path: state.clone(), reason: reason.to_string() };
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("model_checkpoint_path:"))
        .ok_or_else(|| bad("no model_checkpoint_path line (is it Kiln's own JSON state file?)"))?;
    let quoted = line.trim();
    let written = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or_else(|| bad("model_checkpoint_path is not a quoted string"))?;
    let written = Path::new(written);
    let local = dir.join(written.file_name().ok_or_else(|| bad("model_checkpoint_path is empty"))?);
    let as_written = if written.is_absolute() { written.to_path_buf() } else { dir.join(written) };
    // The directory the user pointed at comes first: a copied directory keeps its old absolute paths.
    for candidate in [local, as_written] {
        if bundle::index_path(&candidate).is_file() {
            return Ok(candidate);
        }
    }
    Err(bad(&format!("its latest checkpoint {} has no .index here or at that path", written.display())))
}

/// An opened TensorFlow checkpoint.
#[derive(Debug)]
pub struct TfCheckpoint {
    pub prefix: PathBuf,
    pub bundle: Bundle,
    /// The graph walked from `PREFIX.meta`, when there is one (an error walking it is kept for the caller).
    pub graph: Option<Result<graph::Walked, TfError>>,
    /// The global step: the `global_step` variable, else the `-N` suffix of the prefix.
    pub step: u64,
}

/// Optimizer state and bookkeeping that a checkpoint holds besides the weights (dropped on conversion).
pub fn is_slot(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    matches!(last, "Adam" | "Adam_1" | "Momentum" | "RMSProp" | "RMSProp_1" | "Adagrad")
        || matches!(name, "global_step" | "beta1_power" | "beta2_power")
        || name.ends_with("/ExponentialMovingAverage")
}

impl TfCheckpoint {
    pub fn open(path: &Path) -> Result<TfCheckpoint, TfError> {
        let prefix = if path.is_dir() {
            latest_in(path)?
        } else {
            let prefix = prefix_of(path).ok_or_else(|| TfError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "not a file name".into(),
            })?;
            if !bundle::index_path(&prefix).is_file() {
                return Err(TfError::NotACheckpoint {
                    path: path.to_path_buf(),
                    reason: format!("no {} beside it", bundle::index_path(&prefix).display()),
                });
            }
            prefix
        };
        let bundle = Bundle::open(&prefix)?;
        let step = match bundle.contains("global_step") {
            true => read_step(&bundle),
            false => None,
        }
        .or_else(|| prefix.to_str()?.rsplit('-').next()?.parse().ok())
        .unwrap_or(0);
        let mut meta = prefix.as_os_str().to_owned();
        meta.push(".meta");
        let meta = PathBuf::from(meta);
        let graph = meta.is_file().then(|| {
            let bytes = read(&meta)?;
            let file = meta.display().to_string();
            let def = proto::MetaGraphDef::decode(&bytes[..])
                .map_err(|e| TfError::Meta { file: file.clone(), reason: format!("not a MetaGraphDef: {e}") })?
                .graph_def
                .ok_or_else(|| TfError::Meta {
                    file: file.clone(),
                    reason: "the MetaGraphDef holds no graph".into(),
                })?;
            let dims_of = |name: &str| {
                bundle
                    .entries()
                    .into_iter()
                    .find(|e| e.name == name)
                    .map(|e| e.shape.iter().map(|&d| d.max(0) as usize).collect())
            };
            graph::walk(&def, &file, &dims_of)
        });
        Ok(TfCheckpoint { prefix, bundle, graph, step })
    }

    fn file(&self) -> String {
        bundle::index_path(&self.prefix).display().to_string()
    }

    /// The model the `.meta` graph describes, its weights from the bundle.
    pub fn to_model(&self, name: &str) -> Result<Model, TfError> {
        let walked = match &self.graph {
            Some(Ok(walked)) => walked,
            Some(Err(e)) => return Err(clone_error(e)),
            None => {
                return Err(TfError::Meta {
                    file: format!("{}.meta", self.prefix.display()),
                    reason: "missing: name the network with --model fc3|convnet4|vgg".into(),
                });
            }
        };
        let network = Network { name: name.to_string(), ..walked.network.clone() };
        self.fill(network, &walked.params)
    }

    /// The preset `network` with its weights matched by shape, in the natural order of the tensor names
    /// (`layer2` before `layer10`). Returns the model and the mapping, `(kiln name, checkpoint name)`.
    pub fn to_model_as(&self, network: Network) -> Result<(Model, Vec<(String, String)>), TfError> {
        let file = self.file();
        let mut candidates: Vec<bundle::EntryInfo> =
            self.bundle.entries().into_iter().filter(|e| !is_slot(&e.name) && e.dtype == "float32").collect();
        candidates.sort_by_key(|e| natural(&e.name));
        let zeroed =
            Model::zeroed(network.clone()).map_err(|source| TfError::Network { file: file.clone(), source })?;
        let mut used = vec![false; candidates.len()];
        let mut params = Vec::new();
        let mut mapping = Vec::new();
        for pair in zeroed.params.chunks(2) {
            let mut names = Vec::new();
            for tensor in pair {
                let want: Vec<i64> = tensor.dims.iter().map(|&d| d as i64).collect();
                let found = candidates.iter().enumerate().find(|(i, e)| !used[*i] && e.shape == want);
                let Some((i, entry)) = found else {
                    return Err(TfError::Mapping {
                        file,
                        reason: format!(
                            "no unused float32 tensor of shape {want:?} for {} of the {} network",
                            tensor.name, network.name
                        ),
                    });
                };
                used[i] = true;
                mapping.push((tensor.name.clone(), entry.name.clone()));
                names.push(entry.name.clone());
            }
            params.push((names[0].clone(), Some(names[1].clone())));
        }
        if let Some(extra) = candidates.iter().zip(&used).find(|(_, u)| !**u) {
            return Err(TfError::Mapping {
                file,
                reason: format!(
                    "tensor \"{}\" {:?} matches no parameter of the {} network",
                    extra.0.name, extra.0.shape, network.name
                ),
            });
        }
        Ok((self.fill(network, &params)?, mapping))
    }

    fn fill(&self, network: Network, params: &[(String, Option<String>)]) -> Result<Model, TfError> {
        let file = self.file();
        let mut model = Model::zeroed(network).map_err(|source| TfError::Network { file: file.clone(), source })?;
        if model.params.len() != 2 * params.len() {
            return Err(TfError::Mapping { file, reason: "the graph's parameters do not match its layers".into() });
        }
        for (pair, (weights, bias)) in model.params.chunks_mut(2).zip(params) {
            for (tensor, name) in pair.iter_mut().zip([Some(weights), bias.as_ref()]) {
                let Some(name) = name else { continue }; // no bias op: zeros
                let (dims, data) = self.bundle.tensor_f32(name)?;
                if dims != tensor.dims {
                    return Err(TfError::Entry {
                        file: file.clone(),
                        tensor: name.clone(),
                        reason: format!("shape {dims:?}, but {} needs {:?}", tensor.name, tensor.dims),
                    });
                }
                tensor.data = data;
            }
        }
        Ok(model)
    }

    /// Whether the checkpoint holds optimizer slots.
    pub fn has_optimizer_state(&self) -> bool {
        self.bundle.entries().iter().any(|e| is_slot(&e.name) && e.name != "global_step")
    }

    /// The shard files and the index: what the checkpoint's size and hash cover.
    pub fn files(&self) -> Vec<PathBuf> {
        let shards = self.bundle.shard_count();
        let mut files = vec![bundle::index_path(&self.prefix)];
        files.extend((0..shards).map(|s| bundle::shard_path(&self.prefix, s, shards)));
        files
    }
}

fn read_step(bundle: &Bundle) -> Option<u64> {
    bundle.int64_scalar("global_step")
}

/// A sort key that orders digit runs by value: `layer2` before `layer10`.
fn natural(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut digits = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            out.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
        } else {
            text.push(c);
            chars.next();
        }
    }
    out.push((text, 0));
    out
}

/// `TfError` holds `io::Error`, which is not `Clone`; the walk's error is reported by message.
fn clone_error(e: &TfError) -> TfError {
    match e {
        TfError::UnsupportedOp { file, node, op, reason } => {
            TfError::UnsupportedOp { file: file.clone(), node: node.clone(), op: op.clone(), reason: reason.clone() }
        }
        TfError::Meta { file, reason } => TfError::Meta { file: file.clone(), reason: reason.clone() },
        other => TfError::Meta { file: String::from("(.meta)"), reason: other.to_string() },
    }
}

//! A V2 tensor bundle: `PREFIX.index` (a table of `BundleEntryProto`s, keyed by tensor name) and the shards
//! `PREFIX.data-NNNNN-of-MMMMM` holding the raw little-endian tensor bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::proto::{BundleEntryProto, BundleHeaderProto, dtype};
use super::{TfError, read, table};

/// An opened bundle: every entry parsed and every tensor's CRC32C checked.
#[derive(Debug)]
pub struct Bundle {
    pub prefix: PathBuf,
    entries: BTreeMap<String, BundleEntryProto>,
    shards: Vec<Vec<u8>>,
}

/// One tensor as listed in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub bytes: u64,
}

pub fn shard_path(prefix: &Path, shard: usize, shards: usize) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".data-{shard:05}-of-{shards:05}"));
    PathBuf::from(name)
}

pub fn index_path(prefix: &Path) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

impl Bundle {
    pub fn open(prefix: &Path) -> Result<Bundle, TfError> {
        let bytes = read(&index_path(prefix))?;
        Bundle::from_parts(prefix, &bytes, |count| {
            (0..count)
                .map(|shard| {
                    let path = shard_path(prefix, shard, count);
                    if !path.exists() {
                        return Err(TfError::MissingShard { path });
                    }
                    read(&path)
                })
                .collect()
        })
    }

    /// A bundle from the bytes of its `.index` and its shards (`shards(count)` reads them); `prefix` names
    /// the files in errors. Every entry is parsed and every tensor's CRC32C checked.
    pub fn from_parts(
        prefix: &Path,
        bytes: &[u8],
        shards: impl FnOnce(usize) -> Result<Vec<Vec<u8>>, TfError>,
    ) -> Result<Bundle, TfError> {
        let file = index_path(prefix).display().to_string();
        let bad =
            |tensor: &str, reason: String| TfError::Entry { file: file.clone(), tensor: tensor.to_string(), reason };
        let mut header = None;
        let mut entries = BTreeMap::new();
        for (key, value) in table::entries(bytes, &file)? {
            if key.is_empty() {
                header =
                    Some(BundleHeaderProto::decode(&value[..]).map_err(|e| TfError::Index {
                        file: file.clone(),
                        reason: format!("the bundle header: {e}"),
                    })?);
                continue;
            }
            let name = String::from_utf8(key)
                .map_err(|_| TfError::Index { file: file.clone(), reason: "a tensor name is not UTF-8".into() })?;
            let entry = BundleEntryProto::decode(&value[..]).map_err(|e| bad(&name, format!("its entry: {e}")))?;
            entries.insert(name, entry);
        }
        let header = header
            .ok_or_else(|| TfError::Index { file: file.clone(), reason: "no bundle header (empty key)".into() })?;
        if header.endianness != 0 {
            return Err(TfError::Index {
                file,
                reason: "the bundle is big-endian; Kiln reads little-endian bundles".into(),
            });
        }
        let count = usize::try_from(header.num_shards).ok().filter(|&n| (1..=4096).contains(&n)).ok_or_else(|| {
            TfError::Index { file: file.clone(), reason: format!("the header names {} shards", header.num_shards) }
        })?;
        let shards = shards(count)?;
        let bundle = Bundle { prefix: prefix.to_path_buf(), entries, shards };
        for name in bundle.entries.keys() {
            bundle.bytes_of(name)?;
        }
        Ok(bundle)
    }

    pub fn entries(&self) -> Vec<EntryInfo> {
        self.entries
            .iter()
            .map(|(name, e)| EntryInfo {
                name: name.clone(),
                dtype: dtype::name(e.dtype),
                shape: e.shape.as_ref().map(|s| s.dims()).unwrap_or_default(),
                bytes: e.size.max(0) as u64,
            })
            .collect()
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// An int64 scalar (the `global_step` variable), if the bundle holds one under `name`.
    pub fn int64_scalar(&self, name: &str) -> Option<u64> {
        let entry = self.entries.get(name).filter(|e| e.dtype == dtype::INT64)?;
        let bytes = self.bytes_of(name).ok()?;
        let value = i64::from_le_bytes(bytes.try_into().ok()?);
        let _ = entry;
        u64::try_from(value).ok()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A tensor's bytes, its CRC32C checked.
    fn bytes_of(&self, name: &str) -> Result<&[u8], TfError> {
        let entry = &self.entries[name];
        let shard_count = self.shards.len();
        let shard_file = |shard: usize| shard_path(&self.prefix, shard, shard_count).display().to_string();
        let bad = |reason: String| TfError::Entry {
            file: index_path(&self.prefix).display().to_string(),
            tensor: name.to_string(),
            reason,
        };
        if !entry.slices.is_empty() {
            return Err(bad("it is a partitioned variable (saved in slices), which Kiln does not read".into()));
        }
        let shard = usize::try_from(entry.shard_id)
            .ok()
            .filter(|&s| s < shard_count)
            .ok_or_else(|| bad(format!("its shard {} is not one of the {shard_count} shards", entry.shard_id)))?;
        let data = &self.shards[shard];
        let (offset, size) = (usize::try_from(entry.offset), usize::try_from(entry.size));
        let range = match (offset, size) {
            (Ok(o), Ok(s)) if o.checked_add(s).is_some_and(|end| end <= data.len()) => o..o + s,
            _ => {
                return Err(TfError::Truncated {
                    file: shard_file(shard),
                    tensor: name.to_string(),
                    offset: entry.offset,
                    size: entry.size,
                    len: data.len(),
                });
            }
        };
        let bytes = &data[range];
        let stored = table::unmask(entry.crc32c);
        let computed = crc32c::crc32c(bytes);
        if stored != computed {
            return Err(TfError::Crc { file: shard_file(shard), tensor: name.to_string(), stored, computed });
        }
        Ok(bytes)
    }

    /// A float32 tensor's dims and values.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), TfError> {
        let file = index_path(&self.prefix).display().to_string();
        let bad = |reason: String| TfError::Entry { file: file.clone(), tensor: name.to_string(), reason };
        let entry = self.entries.get(name).ok_or_else(|| bad("no tensor of this name in the bundle".into()))?;
        if entry.dtype != dtype::FLOAT {
            return Err(bad(format!("its dtype is {}, not float32", dtype::name(entry.dtype))));
        }
        let dims: Vec<usize> = entry
            .shape
            .as_ref()
            .map(|s| s.dims())
            .unwrap_or_default()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("its shape has a negative dimension".into()))?;
        let count =
            dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("its shape overflows".into()))?;
        let bytes = self.bytes_of(name)?;
        if bytes.len() != count * 4 {
            return Err(bad(format!("{} bytes stored for {count} float32 values of shape {dims:?}", bytes.len())));
        }
        Ok((dims, bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()))
    }
}

//! TensorFlow's table format (LevelDB's SSTable), as the `.index` file of a tensor bundle uses it.
//!
//! ```text
//! file   = data block* | metaindex block | index block | footer (48 bytes)
//! footer = metaindex handle | index handle (varint64 offset, varint64 size each) | zero padding to 40 bytes
//!          | magic 0xdb4775248b80fb57 (little-endian)
//! block  = entry* | restart offsets (u32 each) | restart count (u32) | trailer: type (1 byte) | masked CRC32C
//!          of the block and the type byte (u32)
//! entry  = shared key bytes (varint32) | unshared key bytes (varint32) | value length (varint32)
//!          | unshared key bytes | value
//! ```
//! The index block maps each data block's last key to its handle. Hand-written: the format is small and no
//! maintained crate reads TF's variant of it.

use super::TfError;

const FOOTER: usize = 48;
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const TRAILER: usize = 5;

/// LevelDB's CRC mask: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn unmask(masked: u32) -> u32 {
    let rotated = masked.wrapping_sub(0xa282_ead8);
    rotated.rotate_left(15)
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Where a block is: offset and size, not counting the trailer.
#[derive(Clone, Copy, Debug)]
struct Handle {
    offset: usize,
    size: usize,
}

fn handle(bytes: &[u8], at: &mut usize) -> Option<Handle> {
    let offset = usize::try_from(varint(bytes, at)?).ok()?;
    let size = usize::try_from(varint(bytes, at)?).ok()?;
    Some(Handle { offset, size })
}

/// A table's keys and values, in order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key and value of a table, in order. `what` names the file in errors.
pub fn entries(file: &[u8], what: &str) -> Result<Entries, TfError> {
    let bad = |reason: String| TfError::Index { file: what.to_string(), reason };
    if file.len() < FOOTER {
        return Err(bad(format!("{} bytes, shorter than the 48-byte footer", file.len())));
    }
    let footer = &file[file.len() - FOOTER..];
    let magic = u64::from_le_bytes(footer[40..].try_into().expect("8 bytes"));
    if magic != MAGIC {
        return Err(bad(format!("the footer's magic number is {magic:#018x}, not {MAGIC:#018x}: not a table")));
    }
    let mut at = 0;
    let (_metaindex, index) = handle(footer, &mut at)
        .zip(handle(footer, &mut at))
        .ok_or_else(|| bad("the footer's block handles are malformed".into()))?;
    let mut out = Vec::new();
    for (_, value) in block(file, index, what)? {
        let mut at = 0;
        let data = handle(&value, &mut at).ok_or_else(|| bad("an index entry is not a block handle".into()))?;
        out.extend(block(file, data, what)?);
    }
    Ok(out)
}

/// The entries of one block, its trailer's CRC checked.
fn block(file: &[u8], handle: Handle, what: &str) -> Result<Entries, TfError> {
    let bad = |reason: String| TfError::Index { file: what.to_string(), reason };
    let end = handle.offset.checked_add(handle.size).and_then(|e| e.checked_add(TRAILER));
    let Some(end) = end.filter(|&e| e <= file.len() - FOOTER) else {
        return Err(bad(format!(
            "a block at {} of {} bytes runs past the end: truncated?",
            handle.offset, handle.size
        )));
    };
    let contents = &file[handle.offset..handle.offset + handle.size];
    let trailer = &file[handle.offset + handle.size..end];
    let stored = unmask(u32::from_le_bytes(trailer[1..5].try_into().expect("4 bytes")));
    let actual = crc32c::crc32c_append(crc32c::crc32c(contents), &trailer[..1]);
    if stored != actual {
        return Err(bad(format!(
            "the block at byte {} fails its CRC32C check (stored {stored:#010x}, computed {actual:#010x})",
            handle.offset
        )));
    }
    match trailer[0] {
        0 => {}
        1 => {
            return Err(bad(
                "a block is Snappy-compressed, which Kiln does not read (TF writes tensor-bundle indexes uncompressed)"
                    .into(),
            ));
        }
        other => return Err(bad(format!("a block has compression type {other}, unknown"))),
    }
    if contents.len() < 4 {
        return Err(bad("a block is shorter than its restart count".into()));
    }
    let restarts = u32::from_le_bytes(contents[contents.len() - 4..].try_into().expect("4 bytes")) as usize;
    let entries_end = restarts
        .checked_mul(4)
        .and_then(|r| contents.len().checked_sub(4 + r))
        .ok_or_else(|| bad(format!("a block claims {restarts} restart points, more than it holds")))?;
    let data = &contents[..entries_end];
    let (mut at, mut key, mut out) = (0, Vec::new(), Vec::new());
    while at < data.len() {
        let mut field = || varint(data, &mut at).and_then(|v| usize::try_from(v).ok());
        let (Some(shared), Some(unshared), Some(len)) = (field(), field(), field()) else {
            return Err(bad("a block entry's lengths are malformed".into()));
        };
        if shared > key.len() || at + unshared + len > data.len() {
            return Err(bad("a block entry runs past its block".into()));
        }
        key.truncate(shared);
        key.extend_from_slice(&data[at..at + unshared]);
        at += unshared;
        out.push((key.clone(), data[at..at + len].to_vec()));
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips() {
        let mask = |c: u32| c.rotate_right(15).wrapping_add(0xa282_ead8);
        for crc in [0, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(unmask(mask(crc)), crc);
        }
    }
}

//! IDX files (the MNIST format), gzip or raw, and MNIST-style directories.
//!
//! An IDX file is a big-endian header — two zero bytes, a type byte (0x08 = unsigned byte) and the
//! number of dimensions — then one u32 per dimension, then the values. Images are `[count, rows, cols]`
//! (magic 0x00000803), labels `[count]` (magic 0x00000801).

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Everything that can be wrong with a data set. Every variant names the file.
#[derive(Debug, Error)]
pub enum DataError {
    /// The directory has no file under any accepted name.
    #[error("{dir}: no {what} file (looked for {tried})")]
    Missing { dir: PathBuf, what: &'static str, tried: String },
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The gzip stream is corrupt or cut short.
    #[error("{path}: bad or truncated gzip data: {source}")]
    Gzip { path: PathBuf, source: std::io::Error },
    /// The first four bytes are not the expected IDX magic number.
    #[error("{path}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})")]
    BadMagic { path: PathBuf, found: u32, expected: u32, what: &'static str },
    /// The file ends before the header or the data it declares.
    #[error("{path}: truncated: the header declares {expected} bytes, the file has {found}")]
    Truncated { path: PathBuf, expected: u64, found: u64 },
    /// The file has bytes after the data it declares.
    #[error("{path}: {extra} unexpected bytes after the declared data")]
    TrailingBytes { path: PathBuf, extra: u64 },
    /// A dimension is zero or the sizes overflow.
    #[error("{path}: bad dimensions {dims:?}")]
    BadDimensions { path: PathBuf, dims: Vec<u32> },
    /// The images and labels files disagree on the count.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch { images: PathBuf, image_count: usize, labels: PathBuf, label_count: usize },
    /// A label is outside `0..classes`.
    #[error("{path}: label {label} at index {index} is not below {classes}")]
    BadLabel { path: PathBuf, index: usize, label: u8, classes: usize },
    /// The training and test images have different sizes.
    #[error("training images are {train_rows}x{train_cols} but test images are {test_rows}x{test_cols}")]
    SizeMismatch { train_rows: usize, train_cols: usize, test_rows: usize, test_cols: usize },
}

/// Labelled images: `pixels` is `[count, rows, cols]` bytes, `labels` is `[count]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `index`th image's bytes.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * self.rows * self.cols..][..self.rows * self.cols]
    }

    /// The first `count` examples (for tests and quick runs).
    pub fn take(&self, count: usize) -> Dataset {
        let count = count.min(self.len());
        Dataset {
            rows: self.rows,
            cols: self.cols,
            pixels: self.pixels[..count * self.rows * self.cols].to_vec(),
            labels: self.labels[..count].to_vec(),
        }
    }
}

/// A training and a test set from one directory.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub dir: PathBuf,
    pub train: Dataset,
    pub test: Dataset,
}

/// MNIST's ten digit classes.
pub const CLASSES: usize = 10;

/// The four standard MNIST file stems. Each is found as `stem`, `stem.gz`, or with `.` for the last `-`
/// (`t10k-images.idx3-ubyte`, as some mirrors name them).
const FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte", "training images"),
    ("train-labels-idx1-ubyte", "training labels"),
    ("t10k-images-idx3-ubyte", "test images"),
    ("t10k-labels-idx1-ubyte", "test labels"),
];

/// The bundled data set, relative to the repository root.
pub const BUNDLED_DIR: &str = "data/mnist";

impl Mnist {
    /// Loads the four standard MNIST files from `dir`.
    pub fn load(dir: &Path) -> Result<Mnist, DataError> {
        let mut paths = Vec::new();
        for (stem, what) in FILES {
            paths.push(find(dir, stem, what)?);
        }
        let train = read_pair(&paths[0], &paths[1])?;
        let test = read_pair(&paths[2], &paths[3])?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(DataError::SizeMismatch {
                train_rows: train.rows,
                train_cols: train.cols,
                test_rows: test.rows,
                test_cols: test.cols,
            });
        }
        Ok(Mnist { dir: dir.to_path_buf(), train, test })
    }
}

fn find(dir: &Path, stem: &str, what: &'static str) -> Result<PathBuf, DataError> {
    let dotted = match stem.rfind('-') {
        Some(i) => format!("{}.{}", &stem[..i], &stem[i + 1..]),
        None => stem.to_string(),
    };
    let candidates = [format!("{stem}.gz"), stem.to_string(), format!("{dotted}.gz"), dotted];
    candidates.iter().map(|name| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| DataError::Missing {
        dir: dir.to_path_buf(),
        what,
        tried: candidates.join(", "),
    })
}

/// Reads an images file and a labels file and checks that they agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let (dims, pixels) = read_idx(images, 3, "images")?;
    let (label_dims, label_bytes) = read_idx(labels, 1, "labels")?;
    let (count, rows, cols) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    if label_dims[0] as usize != count {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: count,
            labels: labels.to_path_buf(),
            label_count: label_dims[0] as usize,
        });
    }
    if let Some((index, &label)) = label_bytes.iter().enumerate().find(|&(_, &l)| l as usize >= CLASSES) {
        return Err(DataError::BadLabel { path: labels.to_path_buf(), index, label, classes: CLASSES });
    }
    Ok(Dataset { rows, cols, pixels, labels: label_bytes })
}

/// Reads an unsigned-byte IDX file with `rank` dimensions; returns the dimensions and the data.
pub fn read_idx(path: &Path, rank: u8, what: &'static str) -> Result<(Vec<u32>, Vec<u8>), DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip { path: path.to_path_buf(), source })?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes, rank, what).map(|(dims, data)| (dims, data.to_vec()))
}

/// Validates an IDX byte buffer; returns the dimensions and the data slice.
pub fn parse_idx<'b>(
    path: &Path,
    bytes: &'b [u8],
    rank: u8,
    what: &'static str,
) -> Result<(Vec<u32>, &'b [u8]), DataError> {
    let header_len = 4 + 4 * rank as usize;
    let truncated =
        |expected: u64| DataError::Truncated { path: path.to_path_buf(), expected, found: bytes.len() as u64 };
    if bytes.len() < 4 {
        return Err(truncated(header_len as u64));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | rank as u32;
    if magic != expected {
        return Err(DataError::BadMagic { path: path.to_path_buf(), found: magic, expected, what });
    }
    if bytes.len() < header_len {
        return Err(truncated(header_len as u64));
    }
    let dims: Vec<u32> =
        bytes[4..header_len].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    let payload = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let payload = match payload {
        Some(p) if dims.iter().all(|&d| d > 0) => p,
        _ => return Err(DataError::BadDimensions { path: path.to_path_buf(), dims }),
    };
    let total = header_len as u64 + payload;
    match (bytes.len() as u64).cmp(&total) {
        std::cmp::Ordering::Less => Err(truncated(total)),
        std::cmp::Ordering::Greater => {
            Err(DataError::TrailingBytes { path: path.to_path_buf(), extra: bytes.len() as u64 - total })
        }
        std::cmp::Ordering::Equal => Ok((dims, &bytes[header_len..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    #[test]
    fn parses_a_valid_file() {
        let bytes = idx(0x803, &[2, 2, 3], &[1; 12]);
        let (dims, data) = parse_idx(Path::new("x"), &bytes, 3, "images").unwrap();
        assert_eq!(dims, [2, 2, 3]);
        assert_eq!(data.len(), 12);
    }

    #[test]
    fn rejects_bad_files_naming_them() {
        let p = Path::new("some/file");
        let err = parse_idx(p, &idx(0x801, &[2, 2, 3], &[0; 12]), 3, "images").unwrap_err();
        assert!(err.to_string().contains("some/file: wrong magic number 0x00000801, expected 0x00000803"), "{err}");
        let err = parse_idx(p, &idx(0x803, &[2, 2, 3], &[0; 11]), 3, "images").unwrap_err();
        assert!(err.to_string().contains("truncated: the header declares 28 bytes, the file has 27"), "{err}");
        let err = parse_idx(p, &idx(0x803, &[2, 2], &[]), 3, "images").unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let err = parse_idx(p, &idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], &[]), 3, "images").unwrap_err();
        assert!(matches!(err, DataError::BadDimensions { .. }), "{err}");
        let err = parse_idx(p, &idx(0x801, &[2], &[0; 3]), 1, "labels").unwrap_err();
        assert!(matches!(err, DataError::TrailingBytes { extra: 1, .. }), "{err}");
    }

    #[test]
    fn bundled_data_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(BUNDLED_DIR);
        let mnist = Mnist::load(&dir).unwrap();
        assert_eq!((mnist.train.len(), mnist.test.len()), (10_000, 10_000));
        assert_eq!((mnist.train.rows, mnist.train.cols), (28, 28));
        // The official test set starts 7 2 1 0 4 1 4 9 5 9.
        assert_eq!(mnist.test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    }
}

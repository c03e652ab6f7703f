//! Tensor entries and zero-copy access to their (possibly quantized) values.

/// How a tensor's values are stored. The codes are the `dtype` byte of a tensor entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// Little-endian IEEE f32.
    F32 = 1,
    /// Little-endian IEEE half precision.
    F16 = 2,
    /// Symmetric int8, one f32 scale per output channel (the last dimension): `value = q × scale[c]`.
    Int8 = 3,
    /// Symmetric 4-bit two's complement in blocks of `block` consecutive values, one f16 scale per block:
    /// `value = q × scale`, `q` in -8..=7. Two values per byte, the even-indexed one in the low nibble.
    Int4 = 4,
    /// 2-bit levels in blocks with one f16 scale: `value = (q + 0.5) × scale`, `q` in -2..=1 (two's
    /// complement), so the four levels are ±0.5 and ±1.5 scales. Four values per byte, lowest bits first.
    Int2 = 5,
}

impl DType {
    pub fn from_code(code: u8) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::F16,
            3 => DType::Int8,
            4 => DType::Int4,
            5 => DType::Int2,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// `f32`, `f16`, `int8`, `int4`, `int2`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Int8 => "int8",
            DType::Int4 => "int4",
            DType::Int2 => "int2",
        }
    }

    /// Whether values are stored in blocks with one scale each.
    pub fn is_blocked(self) -> bool {
        matches!(self, DType::Int4 | DType::Int2)
    }

    /// Bytes of the value region for `count` values; `None` on overflow.
    pub fn data_bytes(self, count: u64) -> Option<u64> {
        match self {
            DType::F32 => count.checked_mul(4),
            DType::F16 => count.checked_mul(2),
            DType::Int8 => Some(count),
            DType::Int4 => Some(count.div_ceil(2)),
            DType::Int2 => Some(count.div_ceil(4)),
        }
    }

    /// Bytes of the scale region for `count` values whose last dimension is `channels`.
    pub fn scale_bytes(self, count: u64, channels: u64, block: u64) -> Option<u64> {
        match self {
            DType::F32 | DType::F16 => Some(0),
            DType::Int8 => channels.checked_mul(4),
            DType::Int4 | DType::Int2 => count.div_ceil(block.max(1)).checked_mul(2),
        }
    }
}

/// One validated tensor: its name, shape and the bytes of its regions, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    /// Used dimensions first; unused ones are 0.
    pub dims: [usize; 4],
    pub rank: usize,
    /// Values per scale for block dtypes, else 0.
    pub block: usize,
    /// The value region.
    pub data: &'a [u8],
    /// The scale region (empty for f32 and f16).
    pub scales: &'a [u8],
    /// Offsets of the two regions in the file (for `kiln inspect` and GPU uploads).
    pub data_offset: u64,
    pub scales_offset: u64,
}

impl TensorView<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims[..self.rank].iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored bytes, values plus scales.
    pub fn stored_bytes(&self) -> usize {
        self.data.len() + self.scales.len()
    }

    /// The last dimension: output channels for weights.
    pub fn channels(&self) -> usize {
        self.dims[self.rank - 1]
    }

    /// A decoder for this tensor's values.
    pub fn values(&self) -> Values<'_> {
        Values { dtype: self.dtype, data: self.data, scales: self.scales, channels: self.channels(), block: self.block }
    }
}

/// Decodes a tensor's values to f32, a run at a time, straight from the file's bytes.
///
/// Only built from a validated [`TensorView`], so every index inside `0..len` is in bounds.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    dtype: DType,
    data: &'a [u8],
    scales: &'a [u8],
    channels: usize,
    block: usize,
}

fn f32_at(bytes: &[u8], index: usize) -> f32 {
    let b = &bytes[4 * index..4 * index + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn f16_at(bytes: &[u8], index: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]])).to_f32()
}

impl<'a> Values<'a> {
    /// f32 values from little-endian bytes, for kernel tests that need no file around them.
    #[cfg(test)]
    pub(crate) fn f32_le(data: &'a [u8], channels: usize) -> Values<'a> {
        Values { dtype: DType::F32, data, scales: &[], channels, block: 0 }
    }

    /// The values themselves, when they are f32 and this machine can read them in place (little-endian,
    /// and the file's bytes 4-aligned in memory, which the format's 256-byte alignment makes the rule).
    #[inline]
    pub fn as_f32(&self) -> Option<&[f32]> {
        if cfg!(target_endian = "little") && self.dtype == DType::F32 {
            bytemuck::try_cast_slice(self.data).ok()
        } else {
            None
        }
    }

    /// Writes values `start .. start + out.len()` (flat, row-major) into `out`.
    ///
    /// Panics only if the range passes the tensor's end, which the kernels' length checks rule out.
    #[inline(always)]
    pub fn decode(&self, start: usize, out: &mut [f32]) {
        match self.dtype {
            DType::F32 => {
                let bytes = &self.data[4 * start..4 * (start + out.len())];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            DType::F16 => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = f16_at(self.data, start + i);
                }
            }
            DType::Int8 => {
                let levels = &self.data[start..start + out.len()];
                let first = start % self.channels;
                if first + out.len() <= self.channels {
                    // One row of channels (every kernel call): a straight, vectorizable zip.
                    let scales = &self.scales[4 * first..4 * (first + out.len())];
                    for ((o, &q), s) in out.iter_mut().zip(levels).zip(scales.chunks_exact(4)) {
                        *o = q as i8 as f32 * f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    }
                } else {
                    for (i, (o, &q)) in out.iter_mut().zip(levels).enumerate() {
                        *o = q as i8 as f32 * f32_at(self.scales, (first + i) % self.channels);
                    }
                }
            }
            DType::Int4 => self.decode_blocked(start, out, 2, |byte, out: &mut [f32], scale| {
                // Sign-extend each 4-bit two's complement level: low nibble first.
                out[0] = (((byte << 4) as i8) >> 4) as f32 * scale;
                out[1] = ((byte as i8) >> 4) as f32 * scale;
            }),
            DType::Int2 => self.decode_blocked(start, out, 4, |byte, out: &mut [f32], scale| {
                for (k, o) in out.iter_mut().enumerate() {
                    let q = (((byte >> (2 * k)) << 6) as i8) >> 6;
                    *o = (q as f32 + 0.5) * scale;
                }
            }),
        }
    }

    /// Block dtypes: `per_byte` values per byte; `unpack(byte, values, scale)` writes one byte's values.
    /// Whole bytes inside one block (all of a kernel's runs: they start at multiples of 64 in rows whose
    /// length is a multiple of 4) go through `unpack`; ragged edges decode value by value.
    #[inline(always)]
    fn decode_blocked(&self, start: usize, out: &mut [f32], per_byte: usize, unpack: impl Fn(u8, &mut [f32], f32)) {
        let mut done = 0;
        let mut one = [0.0f32; 4];
        while done < out.len() {
            let i = start + done;
            let scale = f16_at(self.scales, i / self.block);
            let run = (self.block - i % self.block).min(out.len() - done);
            let run_out = &mut out[done..done + run];
            if i.is_multiple_of(per_byte) {
                let whole = run / per_byte * per_byte;
                let bytes = &self.data[i / per_byte..(i + whole) / per_byte];
                for (&byte, values) in bytes.iter().zip(run_out[..whole].chunks_exact_mut(per_byte)) {
                    unpack(byte, values, scale);
                }
                for (j, o) in run_out.iter_mut().enumerate().skip(whole) {
                    unpack(self.data[(i + j) / per_byte], &mut one[..per_byte], scale);
                    *o = one[(i + j) % per_byte];
                }
            } else {
                for (j, o) in run_out.iter_mut().enumerate() {
                    unpack(self.data[(i + j) / per_byte], &mut one[..per_byte], scale);
                    *o = one[(i + j) % per_byte];
                }
            }
            done += run;
        }
    }
}

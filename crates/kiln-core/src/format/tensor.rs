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

impl<'a> TensorView<'a> {
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
    pub fn values(&self) -> Values<'a> {
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

/// A block scale: a finite, non-negative half (validation guarantees it), widened exactly without a table
/// or a branch: the exponent is rebased by multiplying by 2^112, which also handles subnormals. (The `half`
/// crate's software conversion, which the baseline x86-64 target gets, costs more than the block it
/// scales.)
#[inline(always)]
fn scale_at(bytes: &[u8], index: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]]) as u32;
    f32::from_bits((bits & 0x7fff) << 13) * f32::from_bits(0x7780_0000)
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
/// int4/int2 values whose blocks tile the rows ([`Values::tiled_blocks`]).
#[derive(Clone, Copy)]
pub(crate) struct TiledBlocks<'a> {
    pub dtype: DType,
    pub data: &'a [u8],
    /// One little-endian f16 per block.
    pub scales: &'a [u8],
    pub block: usize,
}

/// The largest multiplier [`block_multiplier`] gives: `k × m + 128` stays inside an i16 for every `k` of the
/// dtype (−8..=7 for int4, ±1 and ±3 for int2), so vector builds can compute levels in 16-bit lanes. Writer
/// files never come near it (their ratios are at most 127/8 and 127/3, so `m` ≤ 4,064 and 10,837).
pub(crate) const fn multiplier_max(dtype: DType) -> i32 {
    match dtype {
        DType::Int2 => 10_879,
        _ => 4_112,
    }
}

/// Requantizing a block: the int8 level of the block's small integer `k` (the int4 level, or 2q + 1 for
/// int2) is `clamp((k × m + 128) >> 8, ±127)` with `m` the ratio of block scale to channel scale in 1/256ths
/// (an error of at most 8/512 of a step). Every kernel build uses exactly this integer, so they agree bit
/// for bit.
#[inline(always)]
pub(crate) fn block_multiplier(dtype: DType, block_scale: f32, inverse_channel_scale: f32) -> i32 {
    let ratio = block_scale * inverse_channel_scale * if dtype == DType::Int2 { 0.5 } else { 1.0 };
    ((ratio * 256.0 + 0.5) as i32).clamp(0, multiplier_max(dtype))
}

#[inline(always)]
fn f16_at(bytes: &[u8], index: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]])).to_f32()
}

impl<'a> Values<'a> {
    /// f32 values from little-endian bytes, for kernel tests that need no file around them.
    #[cfg(test)]
    pub(crate) fn f32_le(data: &'a [u8], channels: usize) -> Values<'a> {
        Values { dtype: DType::F32, data, scales: &[], channels, block: 0 }
    }

    /// int8 levels and little-endian f32 scales, for kernel tests.
    #[cfg(test)]
    pub(crate) fn int8_raw(data: &'a [u8], scales: &'a [u8], channels: usize) -> Values<'a> {
        Values { dtype: DType::Int8, data, scales, channels, block: 0 }
    }

    /// int4/int2 values and f16 block scales, for kernel tests.
    #[cfg(test)]
    pub(crate) fn blocked_raw(
        dtype: DType,
        data: &'a [u8],
        scales: &'a [u8],
        channels: usize,
        block: usize,
    ) -> Values<'a> {
        Values { dtype, data, scales, channels, block }
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

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// int8 levels read in place, for the integer path (`None` for every other dtype).
    #[inline]
    pub fn int8_levels(&self) -> Option<&'a [i8]> {
        (self.dtype == DType::Int8).then(|| bytemuck::cast_slice(self.data))
    }

    /// Output channel `c`'s scale, for int8 (`value = level × scale`). Panics for other dtypes.
    #[inline]
    pub fn int8_scale(&self, c: usize) -> f32 {
        assert_eq!(self.dtype, DType::Int8, "per-channel scales are int8's");
        f32_at(self.scales, c)
    }

    /// For int4/int2: the largest `|value|` each level can stand for, in scales (`-8` for int4, `±1.5` for
    /// int2); `None` for other dtypes.
    fn peak_level(&self) -> Option<f32> {
        match self.dtype {
            DType::Int4 => Some(8.0),
            DType::Int2 => Some(1.5),
            _ => None,
        }
    }

    /// For int4/int2 weights, the integer path's per-channel int8 scale of each output channel: the
    /// largest value any block of that channel can hold, over 127. `out` has one entry per channel. Reads
    /// only the block scales (one pass when blocks tile the rows, as the writer's always do).
    #[inline(always)]
    pub fn requantized_scales(&self, out: &mut [f32]) {
        let Some(peak) = self.peak_level() else { return };
        let (channels, block) = (self.channels, self.block.max(1));
        let blocks = self.scales.len() / 2;
        out[..channels].fill(0.0);
        if channels.is_multiple_of(block) {
            // Block `b` covers channels `(b % per_row) * block ..` of one row: the max per block column.
            let per_row = channels / block;
            match bytemuck::try_cast_slice::<u8, u16>(self.scales) {
                // Non-negative halves order as their bits do, so the maxima are taken on the bits in place
                // (the format's alignment makes that the rule), in loops the compiler vectorizes, and
                // widened once per lane. Rows of fewer than 32 blocks are read 32 blocks at a time (a
                // multiple of the row when it divides 32), so the loop stays wide.
                Ok(halves) if cfg!(target_endian = "little") => {
                    let width = if per_row < 32 && 32 % per_row == 0 { 32 } else { per_row };
                    let mut peaks = [0u16; 256];
                    for c0 in (0..width).step_by(peaks.len()) {
                        let lanes = peaks.len().min(width - c0);
                        let peaks = &mut peaks[..lanes];
                        peaks.fill(0);
                        let rows = halves.chunks_exact(width);
                        let rest = rows.remainder();
                        for row in rows {
                            for (p, &bits) in peaks.iter_mut().zip(&row[c0..c0 + lanes]) {
                                *p = (*p).max(bits & 0x7fff);
                            }
                        }
                        for (p, &bits) in peaks.iter_mut().zip(rest.iter().skip(c0)) {
                            *p = (*p).max(bits & 0x7fff);
                        }
                        for (j, &p) in peaks.iter().enumerate() {
                            let column = &mut out[(c0 + j) % per_row];
                            *column = column.max(scale_at(&p.to_le_bytes(), 0) * peak);
                        }
                    }
                }
                _ => {
                    for b in 0..blocks {
                        let column = &mut out[b % per_row];
                        *column = column.max(scale_at(self.scales, b) * peak);
                    }
                }
            }
            for c in (0..channels).rev() {
                out[c] = out[c / block];
            }
        } else {
            let len = self.data.len() * if self.dtype == DType::Int4 { 2 } else { 4 };
            for b in 0..blocks {
                let s = scale_at(self.scales, b) * peak;
                // The block's values, a run of consecutive channels at a time.
                let (mut i, end) = (b * block, ((b + 1) * block).min(len));
                while i < end {
                    let c = i % channels;
                    let run = (channels - c).min(end - i);
                    for column in &mut out[c..c + run] {
                        *column = column.max(s);
                    }
                    i += run;
                }
            }
        }
        for s in &mut out[..channels] {
            *s /= 127.0;
        }
    }

    /// For int4/int2: values `start .. start + out.len()` of one row as int8 levels on the per-channel
    /// scales whose inverses `inverse_scales` holds for the run's channels (`level = round(value /
    /// scale)`, so the level never passes ±127).
    #[inline(always)]
    pub fn requantize(&self, start: usize, inverse_scales: &[f32], out: &mut [i8]) {
        // Adding 128.5 and truncating rounds half up without a branch; clamping first (which also maps
        // NaN to 1) keeps the level in ±127 and lets the conversion skip `as`'s saturation, which the
        // compiler would not vectorize.
        // `max`/`min`, not `clamp`: `clamp` passes NaN through.
        #[allow(unsafe_code, clippy::manual_clamp)]
        fn level(v: f32, inv: f32) -> i8 {
            let t = (v * inv + 128.5).max(1.0).min(255.0);
            // SAFETY: `t` is finite and within 1..=255, which an i32 holds.
            (unsafe { t.to_int_unchecked::<i32>() } - 128) as i8
        }
        let per_byte = match self.dtype {
            DType::Int4 => 2,
            DType::Int2 => 4,
            _ => 0,
        };
        let block = if self.block == 0 { usize::MAX } else { self.block };
        let mut done = 0;
        while done < out.len() {
            let i = start + done;
            let run = (block - i % block).min(out.len() - done);
            let (o, inv) = (&mut out[done..done + run], &inverse_scales[done..done + run]);
            let whole_bytes = per_byte > 0 && i.is_multiple_of(per_byte) && run.is_multiple_of(per_byte);
            if whole_bytes && self.channels.is_multiple_of(block) {
                // Whole bytes inside one block whose channels share one int8 scale (blocks tile the rows:
                // every file the writer makes): the level is `round(k × ratio)` for a small integer `k` (the
                // int4 level, or 2q + 1 for int2) and one ratio per block, so it is computed in integers,
                // `(k × m + 128) >> 8` with `m` = ratio in 1/256ths (an error of at most 8/512 of a step),
                // which vectorizes to a few instructions per 32 weights.
                let m = block_multiplier(self.dtype, scale_at(self.scales, i / block), inv[0]);
                let level = |k: i32| ((k * m + 128) >> 8).clamp(-127, 127) as i8;
                let bytes = &self.data[i / per_byte..(i + run) / per_byte];
                if per_byte == 2 {
                    for (&byte, o) in bytes.iter().zip(o.chunks_exact_mut(2)) {
                        o[0] = level((((byte << 4) as i8) >> 4) as i32);
                        o[1] = level(((byte as i8) >> 4) as i32);
                    }
                } else {
                    // Each byte's four levels computed in one 32-bit lane and stored as one word.
                    for (&byte, o) in bytes.iter().zip(o.chunks_exact_mut(4)) {
                        let b = byte as i32;
                        // The 2-bit two's-complement code `c` is `(c ^ 2) − 2`; the level's `k` is 2q + 1.
                        let k = |at: i32| 2 * ((((b >> at) & 3) ^ 2) - 2) + 1;
                        let word =
                            u32::from_le_bytes([level(k(0)), level(k(2)), level(k(4)), level(k(6))].map(|l| l as u8));
                        o.copy_from_slice(&word.to_le_bytes().map(|b| b as i8));
                    }
                }
            } else if whole_bytes {
                // Whole bytes inside one block: one scale, and the same arithmetic as `decode`'s (so the
                // same bits as the general path below). Two simple loops, unpacking then scaling, which
                // the compiler vectorizes for the caller's kernel build.
                let scale = scale_at(self.scales, i / block);
                let mut q = [0.0f32; 128];
                for j0 in (0..run).step_by(q.len()) {
                    let part = q.len().min(run - j0);
                    let bytes = &self.data[(i + j0) / per_byte..(i + j0 + part) / per_byte];
                    if per_byte == 2 {
                        for (&byte, q) in bytes.iter().zip(q.chunks_exact_mut(2)) {
                            q[0] = (((byte << 4) as i8) >> 4) as f32;
                            q[1] = ((byte as i8) >> 4) as f32;
                        }
                    } else {
                        for (&byte, q) in bytes.iter().zip(q.chunks_exact_mut(4)) {
                            for (k, q) in q.iter_mut().enumerate() {
                                *q = ((((byte >> (2 * k)) << 6) as i8) >> 6) as f32 + 0.5;
                            }
                        }
                    }
                    for ((o, &q), &inv) in o[j0..j0 + part].iter_mut().zip(&q[..part]).zip(&inv[j0..j0 + part]) {
                        *o = level(q * scale, inv);
                    }
                }
            } else {
                let mut values = [0.0f32; 64];
                for (j0, chunk) in (0..run).step_by(values.len()).zip(o.chunks_mut(values.len())) {
                    let part = &mut values[..chunk.len()];
                    self.decode(i + j0, part);
                    for ((o, &v), &inv) in chunk.iter_mut().zip(part.iter()).zip(&inv[j0..]) {
                        *o = level(v, inv);
                    }
                }
            }
            done += run;
        }
    }

    /// The stored bytes that hold values `start..start + len` of an int8, int4 or int2 tensor (`None` for
    /// other dtypes or a range past the end), for prefetching.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    pub(crate) fn level_bytes(&self, start: usize, len: usize) -> Option<&'a [u8]> {
        let per_byte = match self.dtype {
            DType::Int8 => 1,
            DType::Int4 => 2,
            DType::Int2 => 4,
            _ => return None,
        };
        self.data.get(start / per_byte..(start + len).div_ceil(per_byte))
    }

    /// The parts of int4/int2 values whose blocks tile the rows (each block inside one row, and its
    /// channels sharing one requantized scale), for kernels that requantize in registers; `None` otherwise.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    pub(crate) fn tiled_blocks(&self) -> Option<TiledBlocks<'a>> {
        let tiled = self.dtype.is_blocked() && self.block > 0 && self.channels.is_multiple_of(self.block);
        tiled.then_some(TiledBlocks { dtype: self.dtype, data: self.data, scales: self.scales, block: self.block })
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
            let scale = scale_at(self.scales, i / self.block);
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

/// Rounds half away from zero (`core` has no `f32::round`); saturates like `as`.
#[inline(always)]
pub fn round_to_i32(v: f32) -> i32 {
    if v >= 0.0 { (v + 0.5) as i32 } else { (v - 0.5) as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_widen_exactly_like_half() {
        // Every finite non-negative half: zero, subnormals, normals up to 65504.
        for bits in 0u16..0x7c00 {
            let bytes = bits.to_le_bytes();
            assert_eq!(scale_at(&bytes, 0).to_bits(), half::f16::from_bits(bits).to_f32().to_bits(), "{bits:#06x}");
        }
    }

    // The per-channel scales taken on the halves' bits, in place and from a buffer at an odd address,
    // against the max of the widened values; more block columns than one pass of the bit maxima holds.
    #[test]
    fn requantized_scales_are_each_columns_largest_block() {
        let shapes = [(DType::Int4, 8.0f32, 7, 300), (DType::Int2, 1.5, 7, 300), (DType::Int4, 8.0, 9, 2)];
        let more =
            [(DType::Int4, 8.0, 5, 3), (DType::Int2, 1.5, 9, 16), (DType::Int4, 8.0, 3, 1), (DType::Int4, 8.0, 2, 64)];
        for (dtype, peak, rows, per_row) in shapes.into_iter().chain(more) {
            let block = 32;
            let channels = block * per_row;
            let halves: std::vec::Vec<u16> = (0..rows * per_row)
                .map(|b| half::f16::from_f32(((b * 7919) % 1000) as f32 * 1e-4 + 1e-7).to_bits())
                .collect();
            let mut want = std::vec![0.0f32; channels];
            for (b, &h) in halves.iter().enumerate() {
                let c = b % per_row * block;
                let v = half::f16::from_bits(h).to_f32() * peak;
                for w in &mut want[c..c + block] {
                    *w = w.max(v);
                }
            }
            // The int8 scale: the largest value over 127.
            for w in &mut want {
                *w /= 127.0;
            }
            let aligned: &[u8] = bytemuck::cast_slice(&halves);
            let mut shifted = std::vec![0u8; aligned.len() + 1];
            shifted[1..].copy_from_slice(aligned);
            for scales in [aligned, &shifted[1..]] {
                let values = Values { dtype, data: &[], scales, channels, block };
                let mut got = std::vec![f32::NAN; channels];
                values.requantized_scales(&mut got);
                let wrong = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
                assert_eq!(wrong, None, "{dtype:?}, {rows} rows of {per_row} blocks: first wrong channel");
            }
        }
        // Blocks that do not tile the rows (a 10-class layer at block 32): element by element.
        for (channels, block, count) in [(10usize, 32usize, 4096usize * 10), (48, 32, 48 * 5), (10, 8, 70)] {
            let halves: std::vec::Vec<u16> = (0..count.div_ceil(block))
                .map(|b| half::f16::from_f32(((b * 31) % 17) as f32 * 1e-3).to_bits())
                .collect();
            let mut want = std::vec![0.0f32; channels];
            for i in 0..count {
                let w = &mut want[i % channels];
                *w = w.max(half::f16::from_bits(halves[i / block]).to_f32() * 8.0);
            }
            for w in &mut want {
                *w /= 127.0;
            }
            let data = std::vec![0u8; count / 2];
            let values =
                Values { dtype: DType::Int4, data: &data, scales: bytemuck::cast_slice(&halves), channels, block };
            let mut got = std::vec![f32::NAN; channels];
            values.requantized_scales(&mut got);
            assert_eq!(got, want, "{channels} channels at block {block}");
        }
    }
}

//! Symmetric weight quantizers with error-minimising scales.

use std::fmt;

use half::f16;

/// Why a tensor cannot be quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuantError {
    /// A value is NaN or infinite.
    NonFinite { index: usize, value: f32 },
    /// The tensor's length is not a multiple of its channel count.
    Shape { len: usize, channels: usize },
    /// A block size that is not a power of two from 8 to 4096.
    Block { block: usize },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::NonFinite { index, value } => write!(f, "value {value} at index {index} is not finite"),
            QuantError::Shape { len, channels } => {
                write!(f, "{len} values do not split into {channels} output channels")
            }
            QuantError::Block { block } => write!(f, "block size {block} is not a power of two from 8 to 4096"),
        }
    }
}

impl std::error::Error for QuantError {}

fn check_finite(values: &[f32]) -> Result<(), QuantError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(QuantError::NonFinite { index, value: values[index] }),
        None => Ok(()),
    }
}

/// Candidate divisors tried per group: scale = max|x| / divisor, for divisors spread evenly from half the
/// top level to one past it. The max-abs scale (divisor = top level) is always among them.
const CANDIDATES: usize = 64;

/// A grid of levels: `snap(x / scale)` is the level value `x` is stored as (in units of the scale), and
/// `top` is the largest level magnitude.
#[derive(Clone, Copy)]
struct Grid {
    top: f32,
    snap: fn(f32) -> f32,
}

/// Integer levels -127..=127.
const INT8_GRID: Grid = Grid { top: 127.0, snap: |t| t.round().clamp(-127.0, 127.0) };
/// Integer levels -8..=7.
const INT4_GRID: Grid = Grid { top: 7.0, snap: |t| t.round().clamp(-8.0, 7.0) };
/// Half-integer levels ±0.5, ±1.5: the nearest is `floor(t) + 0.5`.
const INT2_GRID: Grid = Grid { top: 1.5, snap: |t| t.floor().clamp(-2.0, 1.0) + 0.5 };

/// The scale with the least squared error for `values` on `grid`, after the scale is rounded by
/// `round_scale` (the precision it will be stored in). Returns 0 for an all-zero group.
fn best_scale(values: &[f32], grid: Grid, round_scale: impl Fn(f32) -> f32) -> f32 {
    let max_abs = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max_abs == 0.0 {
        return 0.0;
    }
    let top = grid.top;
    let (first, last) = (top * 0.5, top + 1.0);
    let mut best = (f64::INFINITY, round_scale(max_abs / top));
    for i in 0..=CANDIDATES {
        let divisor = if i == CANDIDATES { top } else { first + (last - first) * i as f32 / (CANDIDATES - 1) as f32 };
        let scale = round_scale(max_abs / divisor);
        if scale <= 0.0 || !scale.is_finite() {
            continue;
        }
        let error: f64 = values
            .iter()
            .map(|&x| {
                let d = (x - (grid.snap)(x / scale) * scale) as f64;
                d * d
            })
            .sum();
        if error < best.0 {
            best = (error, scale);
        }
    }
    best.1
}

/// The level value (in units of the scale) that `x` is stored as.
fn level(x: f32, scale: f32, grid: Grid) -> f32 {
    if scale == 0.0 { (grid.snap)(0.0) } else { (grid.snap)(x / scale) }
}

/// Half precision, round to nearest even.
pub fn to_f16(values: &[f32]) -> Result<Vec<f16>, QuantError> {
    check_finite(values)?;
    Ok(values.iter().map(|&v| f16::from_f32(v)).collect())
}

/// Symmetric int8 with one scale per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8PerChannel {
    /// Same layout as the input: `[k, channels]`, output channel last (TensorFlow's HWIO and `[in,out]`).
    pub values: Vec<i8>,
    /// `[channels]`; value = level × scale.
    pub scales: Vec<f32>,
}

/// Quantizes `weights` (`[k, channels]`) to int8 levels -127..=127, one error-minimising scale per channel.
pub fn int8_per_channel(weights: &[f32], channels: usize) -> Result<Int8PerChannel, QuantError> {
    if channels == 0 || !weights.len().is_multiple_of(channels) {
        return Err(QuantError::Shape { len: weights.len(), channels });
    }
    check_finite(weights)?;
    let scales: Vec<f32> = (0..channels)
        .map(|c| {
            let column: Vec<f32> = weights.iter().skip(c).step_by(channels).copied().collect();
            best_scale(&column, INT8_GRID, |s| s)
        })
        .collect();
    let values = weights.iter().enumerate().map(|(i, &w)| level(w, scales[i % channels], INT8_GRID) as i8).collect();
    Ok(Int8PerChannel { values, scales })
}

impl Int8PerChannel {
    pub fn dequantize(&self) -> Vec<f32> {
        let channels = self.scales.len();
        self.values.iter().enumerate().map(|(i, &q)| q as f32 * self.scales[i % channels]).collect()
    }

    /// Stored bytes: one per weight plus four per channel.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }
}

/// Values per scale in the block formats, unless asked otherwise: GGML's Q4_0 block.
pub const DEFAULT_BLOCK: usize = 32;

/// Low-bit levels in blocks of consecutive values (flat, row-major order), one f16 scale per block.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocks {
    /// 4: levels -8..=7, value = level × scale, two per byte, the even-indexed value in the low nibble.
    /// 2: levels ±0.5, ±1.5 stored as q = -2..=1 (value = (q + 0.5) × scale), four per byte, lowest bits first.
    /// Levels are two's complement.
    pub bits: u8,
    /// Values per scale (the last block may be shorter).
    pub block: usize,
    pub packed: Vec<u8>,
    /// One per block.
    pub scales: Vec<f16>,
    /// Number of values.
    pub len: usize,
}

/// Symmetric int4 (4.5 bits per weight at block 32: 16 bytes of levels + a 2-byte scale).
pub fn int4_blocks(values: &[f32], block: usize) -> Result<Blocks, QuantError> {
    blocks(values, block, 4, INT4_GRID)
}

/// 2-bit levels ±0.5, ±1.5 (2.5 bits per weight at block 32). No zero level: for bell-shaped weights four
/// evenly spread non-zero levels lose less than the three of a symmetric -1, 0, 1 grid.
pub fn int2_blocks(values: &[f32], block: usize) -> Result<Blocks, QuantError> {
    blocks(values, block, 2, INT2_GRID)
}

fn blocks(values: &[f32], block: usize, bits: u8, grid: Grid) -> Result<Blocks, QuantError> {
    if !block.is_power_of_two() || !(8..=4096).contains(&block) {
        return Err(QuantError::Block { block });
    }
    check_finite(values)?;
    let round = |s: f32| f16::from_f32(s).to_f32();
    let per_byte = 8 / bits as usize;
    let mut packed = vec![0u8; values.len().div_ceil(per_byte)];
    let mut scales = Vec::with_capacity(values.len().div_ceil(block));
    // int2 levels are stored as q = value - 0.5.
    let offset = if bits == 2 { 0.5 } else { 0.0 };
    let mask = (1u8 << bits) - 1;
    for (b, group) in values.chunks(block).enumerate() {
        let scale = best_scale(group, grid, round);
        scales.push(f16::from_f32(scale));
        for (j, &x) in group.iter().enumerate() {
            let i = b * block + j;
            let q = (level(x, scale, grid) - offset) as i8 as u8 & mask;
            packed[i / per_byte] |= q << (bits as usize * (i % per_byte));
        }
    }
    Ok(Blocks { bits, block, packed, scales, len: values.len() })
}

impl Blocks {
    /// The level value of entry `i` in units of its scale: -8..=7 for int4, ±0.5 or ±1.5 for int2.
    pub fn level(&self, i: usize) -> f32 {
        let per_byte = 8 / self.bits as usize;
        let raw = (self.packed[i / per_byte] >> (self.bits as usize * (i % per_byte))) & ((1 << self.bits) - 1);
        let shift = 8 - self.bits;
        let q = ((raw << shift) as i8 >> shift) as f32;
        if self.bits == 2 { q + 0.5 } else { q }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.len).map(|i| self.level(i) * self.scales[i / self.block].to_f32()).collect()
    }

    /// Stored bytes: the packed levels plus two per block.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 2 * self.scales.len()
    }

    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes() as f64 / self.len.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn normal(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dist = Normal::new(0.0f32, 0.05).unwrap();
        (0..len).map(|_| dist.sample(&mut rng)).collect()
    }

    fn mse(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn int4_packs_levels_known_answer() {
        // Levels -8..=7 with scale 1 round-trip exactly; the first two land in byte 0 as 0x98 (-7 = 0x9, -8 = 0x8).
        let values: Vec<f32> = (-8..8).map(|v| v as f32).collect();
        let q = int4_blocks(&values, DEFAULT_BLOCK).unwrap();
        assert_eq!(q.dequantize(), values);
        assert_eq!(q.packed[0], 0x98);
        assert_eq!((q.level(0), q.level(15)), (-8.0, 7.0));
    }

    #[test]
    fn int4_is_four_and_a_half_bits() {
        let q = int4_blocks(&normal(4096, 1), DEFAULT_BLOCK).unwrap();
        assert_eq!(q.bytes(), 4096 / 32 * 18);
        assert_eq!(q.bits_per_weight(), 4.5);
        // A short last block still works.
        let q = int4_blocks(&normal(45, 2), DEFAULT_BLOCK).unwrap();
        assert_eq!((q.scales.len(), q.packed.len(), q.dequantize().len()), (2, 23, 45));
    }

    #[test]
    fn searched_scales_beat_max_abs() {
        // Normal weights plus a few outliers, the case where max|w| wastes most levels.
        let mut w = normal(32 * 256, 3);
        for i in (0..w.len()).step_by(97) {
            w[i] *= 6.0;
        }
        let searched = mse(&w, &int4_blocks(&w, DEFAULT_BLOCK).unwrap().dequantize());
        let max_abs: Vec<f32> = w
            .chunks(DEFAULT_BLOCK)
            .flat_map(|b| {
                let s = f16::from_f32(b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 7.0).to_f32();
                b.iter().map(move |&x| (x / s).round().clamp(-8.0, 7.0) * s)
            })
            .collect();
        let plain = mse(&w, &max_abs);
        assert!(searched < 0.9 * plain, "searched {searched} vs max-abs {plain}");
    }

    #[test]
    fn int2_levels_known_answer() {
        // With scale 1 the four levels -1.5, -0.5, 0.5, 1.5 round-trip and pack as q = -2, -1, 0, 1.
        let values = [-1.5, -0.5, 0.5, 1.5, 1.5, 1.5, 1.5, 1.5];
        let q = int2_blocks(&values, 8).unwrap();
        assert_eq!(q.dequantize(), values);
        assert_eq!(q.packed[0], 0b01_00_11_10);
        assert_eq!(q.bytes(), 2 + 2);
        // Zero has no level of its own: it goes to +0.5 × scale.
        assert_eq!(int2_blocks(&[0.0; 8], 8).unwrap().dequantize(), [0.0; 8]);
    }

    #[test]
    fn int8_per_channel_round_trip() {
        let (k, channels) = (576, 64);
        let mut w = normal(k * channels, 4);
        // Channel 5 is ten times larger, channel 9 is all zero: each gets its own scale.
        for r in 0..k {
            w[r * channels + 5] *= 10.0;
            w[r * channels + 9] = 0.0;
        }
        let q = int8_per_channel(&w, channels).unwrap();
        assert_eq!(q.scales[9], 0.0);
        assert!(q.scales[5] > 5.0 * q.scales[4]);
        let back = q.dequantize();
        // The searched scale may clip the largest value a little; overall it is never worse than max-abs,
        // which is one of its candidates.
        let max_abs: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = i % channels;
                let top = w.iter().skip(c).step_by(channels).fold(0.0f32, |m, v| m.max(v.abs()));
                if top == 0.0 { 0.0 } else { (x / (top / 127.0)).round() * (top / 127.0) }
            })
            .collect();
        assert!(mse(&w, &back) <= mse(&w, &max_abs) * (1.0 + 1e-9), "{} vs {}", mse(&w, &back), mse(&w, &max_abs));
        assert!(mse(&w, &back) < 1e-6);
        assert_eq!(q.bytes(), k * channels + 4 * channels);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(int8_per_channel(&[0.0; 10], 3), Err(QuantError::Shape { len: 10, channels: 3 }));
        let err = int4_blocks(&[0.0, f32::NAN], DEFAULT_BLOCK).unwrap_err();
        assert!(matches!(err, QuantError::NonFinite { index: 1, .. }));
        assert!(to_f16(&[f32::INFINITY]).is_err());
        assert_eq!(int2_blocks(&[0.0; 4], 24), Err(QuantError::Block { block: 24 }));
        assert_eq!(to_f16(&[1.5]).unwrap()[0].to_f32(), 1.5);
    }
}

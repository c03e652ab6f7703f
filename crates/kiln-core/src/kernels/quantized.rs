//! Conv and dense layers in integer arithmetic, for int8, int4 and int2 weights.
//!
//! Each image's input activations are quantized to 8 bits ([`quantize_activations`]): `x ≈ (q − zero) ×
//! scale`, with `zero = 0` whenever the input has no negative values (after ReLU, and pixels on [0, 1]).
//! Weights are int8 levels per output channel: int8 files' own, read in place; int4 and int2 blocks are
//! requantized into an int8 panel on per-channel scales (`Values::requantize`; the AVX-512 build does it
//! in registers, one `vpshufb` table per 128-bit lane of packed levels). The products of u8
//! activations and s8 weights add up in i32, exactly, in the output buffer itself; one epilogue per tile
//! turns them into `acc × (activation scale × weight scale) + bias`. Integer sums do not depend on their
//! order, and the quantization and the epilogue are shared scalar code, so every kernel build gives
//! bit-identical logits.
//!
//! Hand-written because this crate is `no_std` without `alloc`; the AVX-512 VNNI micro-kernel uses
//! intrinsics because the compiler does not form `vpdpbusd` from plain loops.

// As in `packed`: the SIMD micro-kernel is an `unsafe fn` behind run-time feature detection.
#![allow(unsafe_code)]

use core::marker::PhantomData;

use super::{Isa, LengthError, check};
use crate::format::{DType, Values, round_to_i32};
use crate::network::Window;
use crate::parallel::Parallel;

/// Output pixels per tile: their accumulators are the output rows themselves.
const TILE_PIXELS: usize = 64;
/// Output channels per micro-kernel sweep: four AVX-512 registers of i32 per pixel.
const COLS: usize = 64;
/// Output channels per pass over the weights.
const WIDTH: usize = 512;
/// Bytes of the int8 panel that int4 and int2 rows are requantized into (stays in L1).
const PANEL_BYTES: usize = 16384;
/// Bytes of packed int8 weights per pass: deep passes load and store each pixel's accumulators less
/// often (one block of them, `rows × 64` bytes, is what a pixel group sweeps, and stays in L1).
const PACKED_BYTES: usize = 65536;

/// How one image's input was quantized: `x ≈ (q − zero) × scale`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct ActivationScale {
    pub scale: f32,
    /// 0 when the input had no negative values; then no correction term is needed.
    pub zero: i32,
}

// SAFETY: `repr(C)` of an f32 and an i32: no padding, and every bit pattern is a valid value. (So the
// runtime can carve these out of the caller's arena.)
unsafe impl bytemuck::Zeroable for ActivationScale {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for ActivationScale {}

/// Quantizes `images` images of `input` (`[images, len]`) to 8 bits each, over `[min(0, min), max(0,
/// max)]`, into `out` (same length), and writes each image's scale and zero point.
pub fn quantize_activations(
    input: &[f32],
    images: usize,
    out: &mut [u8],
    scales: &mut [ActivationScale],
) -> Result<(), LengthError> {
    check("output", out.len(), input.len())?;
    check("scales", scales.len(), images)?;
    if images == 0 {
        return Ok(());
    }
    let len = input.len() / images;
    check("input", input.len(), images * len)?;
    for ((x, q), s) in input.chunks_exact(len).zip(out.chunks_exact_mut(len)).zip(scales.iter_mut()) {
        let (scale, inverse) = image_scale(x);
        *s = scale;
        for (q, &v) in q.iter_mut().zip(x) {
            *q = level(v, inverse, scale.zero);
        }
    }
    Ok(())
}

/// One image's scale and zero point over `[min(0, min), max(0, max)]`, and the inverse scale.
fn image_scale(x: &[f32]) -> (ActivationScale, f32) {
    let (lo, hi) = image_range(x);
    if hi - lo <= 0.0 || !(hi - lo).is_finite() {
        // All zero (or not finite, which no finite network input produces): every level 0.
        return (ActivationScale { scale: 0.0, zero: 0 }, 0.0);
    }
    let inverse = 255.0 / (hi - lo);
    let zero = if lo < 0.0 { round_to_i32(-lo * inverse).clamp(0, 255) } else { 0 };
    (ActivationScale { scale: (hi - lo) / 255.0, zero }, inverse)
}

/// `(min(0, min x), max(0, max x))`, NaNs skipped. In `RANGE_LANES` independent running extremes, so the
/// loop vectorizes: a single running pair is a chain the compiler must keep in order (18% of a VGG digit
/// when it did). Extremes do not depend on the order they are taken in, so the result is the plain fold's.
#[inline(always)]
fn image_range(x: &[f32]) -> (f32, f32) {
    const RANGE_LANES: usize = 16;
    let (mut lo, mut hi) = ([0.0f32; RANGE_LANES], [0.0f32; RANGE_LANES]);
    let mut take = |chunk: &[f32]| {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(chunk) {
            *l = super::min_f32(*l, v);
            *h = super::max_f32(*h, v);
        }
    };
    let chunks = x.chunks_exact(RANGE_LANES);
    let rest = chunks.remainder();
    // Whole chunks (a fixed trip count, which vectorizes), then the ragged end into the first lanes.
    chunks.for_each(&mut take);
    take(rest);
    let lo = lo.iter().fold(0.0f32, |a, &b| super::min_f32(a, b));
    let hi = hi.iter().fold(0.0f32, |a, &b| super::max_f32(a, b));
    (lo, hi)
}

/// `round(v × inverse) + zero`, halves rounded up, clamped to 0..=255. The sum is at least −0.5 for every
/// `v` of the image, so truncating after adding 0.5 rounds (without a branch, so it vectorizes).
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` passes NaN through
fn level(v: f32, inverse: f32, zero: i32) -> u8 {
    // Clamping first (which also maps NaN to 0) lets the conversion skip `as`'s saturation, which the
    // compiler would not vectorize.
    let t = super::min_f32(super::max_f32(v * inverse + (zero as f32 + 0.5), 0.0), 255.0);
    // SAFETY: `t` is finite and within 0..=255.
    unsafe { t.to_int_unchecked::<i32>() as u8 }
}

/// The 8-bit level of `v` on a scale whose inverse is `inverse`, with zero point `zero`: what
/// [`quantize_activations`] computes for each value.
#[inline(always)]
pub fn quantized_level(v: f32, inverse: f32, zero: i32) -> u8 {
    level(v, inverse, zero)
}

/// What the integer path sees of `values` (`[images, len]`): each value replaced by its 8-bit level's
/// value, `(q − zero) × scale`, with the same per-image scales as [`quantize_activations`]. For
/// references that run the integer path's arithmetic in f32.
pub fn fake_quantize_in_place(values: &mut [f32], images: usize) {
    if images == 0 || values.is_empty() {
        return;
    }
    let len = values.len() / images;
    for x in values.chunks_exact_mut(len) {
        let (scale, inverse) = image_scale(x);
        for v in x.iter_mut() {
            *v = (level(*v, inverse, scale.zero) as i32 - scale.zero) as f32 * scale.scale;
        }
    }
}

/// Whether the integer path runs weights of this dtype.
pub fn runs_on_integers(dtype: DType) -> bool {
    matches!(dtype, DType::Int8 | DType::Int4 | DType::Int2)
}

/// Scratch the integer path needs besides its input: per-channel scales and their inverses for int4/int2
/// weights, `2 × cout` values.
pub fn channel_scratch_len(cout: usize) -> usize {
    2 * cout
}

/// Where an integer layer's outputs go.
#[derive(Debug)]
pub enum QuantizedOutput<'a> {
    /// f32 values (the accumulators live in this memory until the epilogue).
    F32(&'a mut [f32]),
    /// 8-bit levels on `scale` (the next layer's static input scale), with `accumulators` as scratch (at
    /// most [`REQUANTIZED_ACCUMULATORS`] values are used).
    Levels { out: &'a mut [u8], scale: ActivationScale, accumulators: &'a mut [i32] },
}

impl QuantizedOutput<'_> {
    fn len(&self) -> usize {
        match self {
            QuantizedOutput::F32(out) => out.len(),
            QuantizedOutput::Levels { out, .. } => out.len(),
        }
    }
}

/// 3x3 convolution, stride 1, SAME padding, plus bias, on quantized input `[n,h,w,cin]` (one
/// [`ActivationScale`] per image) with int8/int4/int2 weights `[3,3,cin,cout]`; output `[n,h,w,cout]`.
/// `channels` is scratch of [`channel_scratch_len`]`(cout)` values. `parallel` runs the layer's parts
/// (ranges of output pixels or channels) at once.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_3x3_same_quantized(
    isa: Isa,
    parallel: &dyn Parallel,
    input: &[u8],
    scales: &[ActivationScale],
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    channels: &mut [f32],
    output: QuantizedOutput<'_>,
) -> Result<(), LengthError> {
    check("input", input.len(), n * h * w * cin)?;
    check("output", output.len(), n * h * w * cout)?;
    check("scales", scales.len(), n)?;
    let geometry = Geometry::Conv3x3 { h, w, cin };
    let pixels = n * h * w;
    let whole = Part { pixels: (0, pixels), channels: (0, cout) };
    let g = IntGemm { input, scales, pixels_per_image: h * w, pixels, taps: 9, cin, geometry, cout, part: whole };
    run(isa, parallel, &g, cin <= PATCH_MAX_CIN, weights, bias, channels, output)
}

/// Convolution with any window, plus bias, on quantized input `[n,h,w,cin]` (one [`ActivationScale`] per
/// image) with int8/int4/int2 weights `[kh,kw,cin,cout]`; output `[n,oh,ow,cout]`. As
/// [`conv2d_3x3_same_quantized`] otherwise.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_quantized(
    isa: Isa,
    parallel: &dyn Parallel,
    input: &[u8],
    scales: &[ActivationScale],
    n: usize,
    (h, w, cin): (usize, usize, usize),
    window: &Window,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    channels: &mut [f32],
    output: QuantizedOutput<'_>,
) -> Result<(), LengthError> {
    let (oh, ow) = window.output(h, w).unwrap_or((0, 0));
    check("input", input.len(), n * h * w * cin)?;
    check("output", output.len(), n * oh * ow * cout)?;
    check("scales", scales.len(), n)?;
    let geometry = Geometry::Conv { h, w, cin, oh, ow, window: *window };
    let pixels = n * oh * ow;
    let whole = Part { pixels: (0, pixels), channels: (0, cout) };
    let taps = window.taps();
    let g = IntGemm { input, scales, pixels_per_image: oh * ow, pixels, taps, cin, geometry, cout, part: whole };
    run(isa, parallel, &g, cin <= PATCH_MAX_CIN, weights, bias, channels, output)
}

/// Convs with at most this many input channels gather each pixel's patch first.
const PATCH_MAX_CIN: usize = 4;
/// Pixels per batch of gathered patches (fewer for patches over 36 bytes: see [`PATCH_BYTES`]).
const PATCH_PIXELS: usize = 512;
/// The gathered patches' stack buffer: 512 pixels of a 3×3 patch on 4 channels.
const PATCH_BYTES: usize = PATCH_PIXELS * 9 * PATCH_MAX_CIN;

/// One part of a conv on few input channels (a network's first layer: one channel), as a dense layer over
/// patches gathered a tile at a time: one pass of `taps · cin` rows instead of `taps` passes of `cin` rows,
/// which would leave the four-row dot products mostly empty. Taps outside the image take the zero point.
fn conv_by_patches(isa: Isa, layer: &IntLayer<'_>, part: Part, accumulators: &mut [i32]) {
    let IntGemm { input, scales, cin, geometry, taps, .. } = layer.g;
    let k = taps * cin;
    let mut patches = [0u8; PATCH_BYTES];
    let mut pixel_scales = [ActivationScale::default(); PATCH_PIXELS];
    let (first, end) = part.pixels;
    let mut at = geometry.locate(first);
    let tile_pixels = (PATCH_BYTES / k).min(PATCH_PIXELS);
    for p0 in (first..end).step_by(tile_pixels) {
        let tile = tile_pixels.min(end - p0);
        for t in 0..tile {
            let scale = scales[at.image];
            pixel_scales[t] = scale;
            for tap in 0..taps {
                let patch = &mut patches[t * k + tap * cin..][..cin];
                // Byte by byte: `cin` is at most 4, and a `memcpy` call per tap would cost more than the copy.
                match geometry.source(at, tap) {
                    Some(start) => {
                        for (p, &q) in patch.iter_mut().zip(&input[start..start + cin]) {
                            *p = q;
                        }
                    }
                    None => {
                        for p in patch.iter_mut() {
                            *p = scale.zero as u8;
                        }
                    }
                }
            }
            at = geometry.next(at);
        }
        let g = IntGemm {
            input: &patches[..tile * k],
            scales: &pixel_scales[..tile],
            pixels_per_image: 1,
            pixels: tile,
            taps: 1,
            cin: k,
            geometry: Geometry::Rows { cin: k },
            cout: layer.g.cout,
            part: Part { pixels: (0, tile), channels: part.channels },
        };
        layer.sweep(isa, &g, p0, accumulators);
    }
}

/// Fully connected layer on quantized input `[n,cin]` with int8/int4/int2 weights `[cin,cout]`; output
/// `[n,cout]`. `channels` is scratch of [`channel_scratch_len`]`(cout)` values; `parallel` as for
/// [`conv2d_3x3_same_quantized`].
#[allow(clippy::too_many_arguments)]
pub fn dense_quantized(
    isa: Isa,
    parallel: &dyn Parallel,
    input: &[u8],
    scales: &[ActivationScale],
    n: usize,
    cin: usize,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    channels: &mut [f32],
    output: QuantizedOutput<'_>,
) -> Result<(), LengthError> {
    check("input", input.len(), n * cin)?;
    check("output", output.len(), n * cout)?;
    check("scales", scales.len(), n)?;
    let part = Part { pixels: (0, n), channels: (0, cout) };
    let geometry = Geometry::Rows { cin };
    let g = IntGemm { input, scales, pixels_per_image: 1, pixels: n, taps: 1, cin, geometry, cout, part };
    run(isa, parallel, &g, false, weights, bias, channels, output)
}

/// One implicit GEMM in integers: `acc[p, o] = Σ_tap Σ_c (input[source(p, tap) + c] − zero) · level[(tap·cin
/// + c)·cout + o]`, where a tap whose [`Geometry::source`] is `None` reads the quantized zero.
#[derive(Clone, Copy)]
struct IntGemm<'a> {
    input: &'a [u8],
    scales: &'a [ActivationScale],
    pixels_per_image: usize,
    pixels: usize,
    taps: usize,
    cin: usize,
    geometry: Geometry,
    cout: usize,
    /// The output pixels and channels this call computes.
    part: Part,
}

/// A range of a layer's output pixels and one of its output channels, `(first, end)` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    pixels: (usize, usize),
    channels: (usize, usize),
}

/// How a layer is cut into parts for [`Parallel::run`]: by output pixels where each part still fills whole
/// tiles (every part then reads all the weights), else by output channels in whole blocks (each part
/// reads its own share of the weights: the small images at a VGG's end, and dense layers on one image).
fn parts(g: &IntGemm<'_>, threads: usize) -> (usize, impl Fn(usize) -> Part) {
    let (pixels, cout) = (g.pixels, g.cout);
    let blocks = cout.div_ceil(COLS);
    let by_pixels = !taps_one_and_few_rows(g) && pixels >= threads * TILE_PIXELS;
    let count = if threads < 2 {
        1
    } else if by_pixels {
        threads
    } else {
        threads.min(blocks)
    };
    let part = move |i: usize| {
        if count == 1 {
            Part { pixels: (0, pixels), channels: (0, cout) }
        } else if by_pixels {
            Part { pixels: (pixels * i / count, pixels * (i + 1) / count), channels: (0, cout) }
        } else {
            let edge = |i: usize| (blocks * i / count * COLS).min(cout);
            Part { pixels: (0, pixels), channels: (edge(i), edge(i + 1)) }
        }
    };
    (count, part)
}

/// Accumulators a part keeps on its own stack when the layer runs in several parts (parts computing a
/// range of channels, and parts with 8-bit outputs, need scratch; the arena's serves one part only).
const PART_ACCUMULATORS: usize = 8192;

/// A layer's output, written by its parts at once: each part writes only its own pixels or channels.
struct Rows<'a, T> {
    start: *mut T,
    len: usize,
    _out: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Rows<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Rows<'_, T> {}

// SAFETY: `Rows` is a `&mut [T]` cut into regions that distinct parts own (see `region`).
unsafe impl<T: Send> Send for Rows<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Rows<'_, T> {}

impl<'a, T> Rows<'a, T> {
    fn new(out: &'a mut [T]) -> Self {
        Rows { start: out.as_mut_ptr(), len: out.len(), _out: PhantomData }
    }

    /// Values `start..start + len`.
    ///
    /// # Safety
    /// No other reference to these values may be live: a layer's parts write disjoint regions, and each
    /// part holds one region at a time.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn region(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len), "output region out of bounds");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.start.add(start), len) }
    }
}

/// Where a layer's outputs go, shared by its parts.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// f32 values, seen as i32 (they hold accumulators until the epilogue).
    F32(Rows<'a, i32>),
    /// 8-bit levels on the next layer's input scale.
    Levels(Rows<'a, u8>, ActivationScale),
}

/// Everything a part of one layer reads.
struct IntLayer<'a> {
    g: IntGemm<'a>,
    levels: Levels<'a>,
    bias: &'a Values<'a>,
    target: Target<'a>,
    /// Whether the input is few-channel conv input, gathered into patches ([`conv_by_patches`]).
    patches: bool,
}

impl IntLayer<'_> {
    /// Computes `part`; `accumulators` is its scratch, or empty for scratch on this stack.
    fn part(&self, isa: Isa, part: Part, accumulators: &mut [i32]) {
        let mut local = [0i32; 0];
        let mut stack;
        let accumulators = if accumulators.is_empty() && self.needs_scratch(part) {
            stack = [0i32; PART_ACCUMULATORS];
            &mut stack[..]
        } else if accumulators.is_empty() {
            &mut local[..]
        } else {
            accumulators
        };
        if self.patches {
            conv_by_patches(isa, self, part, accumulators)
        } else {
            let g = IntGemm { part, ..self.g };
            self.sweep(isa, &g, 0, accumulators)
        }
    }

    fn needs_scratch(&self, part: Part) -> bool {
        matches!(self.target, Target::Levels(..)) || part.channels != (0, self.g.cout)
    }

    /// Runs `g` (its output pixel `p` is the layer's `offset + p`) into the layer's target.
    fn sweep(&self, isa: Isa, g: &IntGemm<'_>, offset: usize, accumulators: &mut [i32]) {
        let (cout, part) = (self.g.cout, g.part);
        match self.target {
            Target::F32(out) if part.channels == (0, cout) => {
                dispatch(isa, g, self.levels, self.bias, &mut InPlace { out, cout, offset })
            }
            target => dispatch(isa, g, self.levels, self.bias, &mut Staged { accumulators, target, cout, offset }),
        }
    }
}

/// Where each output pixel's input rows are.
#[derive(Clone, Copy, Debug)]
enum Geometry {
    /// Row `p` of `[pixels, cin]` (dense layers, gathered patches): one tap.
    Rows { cin: usize },
    /// A 3×3 SAME conv over `[n, h, w, cin]` images: nine taps.
    Conv3x3 { h: usize, w: usize, cin: usize },
    /// A conv with any window over `[n, h, w, cin]` images, giving `[n, oh, ow, cout]`.
    Conv { h: usize, w: usize, cin: usize, oh: usize, ow: usize, window: Window },
}

/// An output pixel's image and position, stepped through without dividing.
#[derive(Clone, Copy, Debug)]
struct Location {
    pixel: usize,
    image: usize,
    y: usize,
    x: usize,
}

impl Geometry {
    #[inline(always)]
    fn locate(&self, pixel: usize) -> Location {
        match *self {
            Geometry::Rows { .. } => Location { pixel, image: pixel, y: 0, x: 0 },
            Geometry::Conv3x3 { h, w, .. } | Geometry::Conv { oh: h, ow: w, .. } => {
                Location { pixel, image: pixel / (h * w), y: pixel / w % h, x: pixel % w }
            }
        }
    }

    #[inline(always)]
    fn next(&self, at: Location) -> Location {
        match *self {
            Geometry::Rows { .. } => Location { pixel: at.pixel + 1, image: at.image + 1, y: 0, x: 0 },
            Geometry::Conv3x3 { h, w, .. } | Geometry::Conv { oh: h, ow: w, .. } => {
                let (mut image, mut y, mut x) = (at.image, at.y, at.x + 1);
                if x == w {
                    (x, y) = (0, y + 1);
                    if y == h {
                        (y, image) = (0, image + 1);
                    }
                }
                Location { pixel: at.pixel + 1, image, y, x }
            }
        }
    }

    /// Where tap `tap` of the pixel at `at` reads its `cin` inputs, or `None` outside the image (SAME
    /// padding: the tap at offset (ky−1, kx−1) reads the quantized zero there).
    #[inline(always)]
    fn source(&self, at: Location, tap: usize) -> Option<usize> {
        match *self {
            Geometry::Rows { cin } => Some(at.pixel * cin),
            Geometry::Conv3x3 { h, w, cin } => {
                let iy = (at.y + tap / 3).checked_sub(1).filter(|&iy| iy < h)?;
                let ix = (at.x + tap % 3).checked_sub(1).filter(|&ix| ix < w)?;
                Some(((at.image * h + iy) * w + ix) * cin)
            }
            Geometry::Conv { h, w, cin, window, .. } => {
                let (iy, ix) = window.source(at.y, at.x, tap / window.kw, tap % window.kw, h, w)?;
                Some(((at.image * h + iy) * w + ix) * cin)
            }
        }
    }
}

/// The weights as the kernels read them.
#[derive(Clone, Copy)]
enum Levels<'a> {
    /// int8 levels in place, with the file's per-channel scales.
    Int8 { levels: &'a [i8], values: &'a Values<'a> },
    /// int4/int2, requantized a panel at a time on per-channel `scales` (`inverse` = 1 / scale).
    Requantized { values: &'a Values<'a>, scales: &'a [f32], inverse: &'a [f32] },
}

impl<'a> Levels<'a> {
    fn values(&self) -> &'a Values<'a> {
        match *self {
            Levels::Int8 { values, .. } | Levels::Requantized { values, .. } => values,
        }
    }

    fn scale(&self, c: usize) -> f32 {
        match self {
            Levels::Int8 { values, .. } => values.int8_scale(c),
            Levels::Requantized { scales, .. } => scales[c],
        }
    }
}

/// Prepares the weights and cuts the layer into parts for `parallel`.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    parallel: &dyn Parallel,
    g: &IntGemm<'_>,
    patches: bool,
    weights: &Values<'_>,
    bias: &Values<'_>,
    channels: &mut [f32],
    output: QuantizedOutput<'_>,
) -> Result<(), LengthError> {
    let weights_len = g.taps * g.cin * g.cout;
    let levels = match weights.int8_levels() {
        Some(levels) => {
            check("weights", levels.len(), weights_len)?;
            Levels::Int8 { levels, values: weights }
        }
        None => {
            check("channel scratch", channels.len(), channel_scratch_len(g.cout))?;
            let (scales, inverse) = channels.split_at_mut(g.cout);
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            if isa != Isa::Portable && Isa::Avx2Fma.is_available() {
                // SAFETY: AVX2 detected at run time.
                unsafe { x86::requantized_scales_avx2(weights, scales) };
            } else {
                weights.requantized_scales(scales);
            }
            #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
            weights.requantized_scales(scales);
            for (inv, &s) in inverse.iter_mut().zip(scales.iter()) {
                *inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            }
            Levels::Requantized { values: weights, scales, inverse }
        }
    };
    let (target, accumulators) = match output {
        QuantizedOutput::F32(out) => (Target::F32(Rows::new(bytemuck::cast_slice_mut(out))), &mut [][..]),
        QuantizedOutput::Levels { out, scale, accumulators } => {
            if accumulators.len() < g.cout.min(COLS) {
                return Err(LengthError { what: "accumulators", expected: g.cout.min(COLS), got: accumulators.len() });
            }
            if !(scale.scale.is_finite() && scale.scale > 0.0) {
                // Only a validated file's scales reach here; anything else writes zero levels.
                return Err(LengthError { what: "output scale", expected: 1, got: 0 });
            }
            (Target::Levels(Rows::new(out), scale), accumulators)
        }
    };
    let layer = IntLayer { g: *g, levels, bias, target, patches };
    let (count, part) = parts(g, parallel.threads());
    if count == 1 {
        // One part: the caller's scratch serves it (a bare-metal build never needs more stack).
        layer.part(isa, part(0), accumulators);
    } else {
        parallel.run(count, &|i| layer.part(isa, part(i), &mut []));
    }
    Ok(())
}

/// Runs [`gemm`] compiled for `isa`, or the portable build if this CPU lacks it.
#[inline]
fn dispatch<K: Sink>(isa: Isa, g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if isa == Isa::Avx512Vnni && isa.is_available() {
            // SAFETY: `is_available` detected AVX-512F, AVX-512BW and AVX-512 VNNI at run time.
            return unsafe { x86::gemm_vnni(g, levels, bias, out) };
        }
        if isa == Isa::AvxVnni && isa.is_available() {
            // SAFETY: `is_available` detected AVX2, FMA and AVX-VNNI at run time.
            return unsafe { x86::gemm_avx_vnni(g, levels, bias, out) };
        }
        if isa != Isa::Portable && Isa::Avx2Fma.is_available() {
            // SAFETY: `is_available` detected AVX2 at run time.
            return unsafe { x86::gemm_avx2(g, levels, bias, out) };
        }
    }
    let _ = isa;
    // A wasm module built with simd128 has `i32x4.dot_i16x8_s`: its portable build is the dot kernel.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    // SAFETY: simd128 is enabled at compile time.
    return unsafe { gemm::<K, wasm::WasmDot, 2>(g, levels, bias, out) };
    // SAFETY: the portable micro-kernel needs no CPU feature.
    #[allow(unreachable_code)]
    unsafe {
        gemm::<K, Portable, 4>(g, levels, bias, out)
    }
}

/// One build's innermost loops over a block of [`COLS`] output channels.
///
/// A build may keep each block's accumulators in its own order: [`IntMicro::channel`] says which
/// channel of the block position `s` holds (the epilogue puts them back).
///
/// # Safety
/// Every `unsafe fn` here needs the CPU features its build is compiled for; lengths are checked inside.
trait IntMicro {
    /// The channel (within its block) that accumulator position `s` holds.
    fn channel(s: usize) -> usize;

    /// Puts one block's accumulators back in channel order.
    unsafe fn unpermute(block: &mut [i32; COLS]);

    /// Copies rows `0..rows` of one block (`COLS` levels from `w[j·stride]`) into `packed`, in the layout
    /// [`IntMicro::group`] reads; `packed` holds `rows` rounded up to 4, times `COLS`, bytes.
    unsafe fn pack(w: &[i8], stride: usize, rows: usize, packed: &mut [i8]);

    /// `acc[offsets[p]..][..COLS] += Σ_j xs[p][j] · row j`, for `PIX` pixels, from a packed block.
    unsafe fn group<const PIX: usize>(
        xs: [&[u8]; PIX],
        packed: &[i8],
        rows: usize,
        acc: &mut [i32],
        offsets: [usize; PIX],
    );

    /// A hint that levels `start..start + len` are read soon (builds without a prefetch ignore it).
    #[inline(always)]
    unsafe fn prefetch(_values: &Values<'_>, _start: usize, _len: usize) {}

    /// [`Values::requantize`] (int4/int2 levels as int8 on per-channel scales), in this build's registers
    /// where it has a faster way to the same integers.
    #[inline(always)]
    unsafe fn requantize(values: &Values<'_>, start: usize, inverse: &[f32], out: &mut [i8]) {
        values.requantize(start, inverse, out)
    }

    /// `acc[..cols] += Σ_t x[t] · rows[t][..cols]`: four rows of a matrix–vector product at once. `cols`
    /// is a multiple of `COLS`, and `acc` holds whole blocks in this build's order.
    unsafe fn rows4(x: [u8; 4], rows: [&[i8]; 4], cols: usize, acc: &mut [i32]);

    /// The same straight from the rows `w[j·stride..][..COLS]`, for tiles too small to repay packing.
    unsafe fn group_direct<const PIX: usize>(
        xs: [&[u8]; PIX],
        w: &[i8],
        stride: usize,
        rows: usize,
        acc: &mut [i32],
        offsets: [usize; PIX],
    );
}

/// Bytes of one packed block of `rows` rows.
const fn packed_len(rows: usize) -> usize {
    rows.div_ceil(4) * 4 * COLS
}

/// Checks every access a micro-kernel's [`IntMicro::group`] makes on a packed block.
#[cfg(any(all(feature = "std", target_arch = "x86_64"), all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn check_packed_group<const PIX: usize>(
    xs: &[&[u8]; PIX],
    packed: &[i8],
    rows: usize,
    acc: &[i32],
    offsets: &[usize; PIX],
) {
    assert!(packed.len() >= packed_len(rows));
    assert!(xs.iter().all(|x| x.len() >= rows));
    assert!(offsets.iter().all(|&o| o + COLS <= acc.len()));
}

/// Checks every access a micro-kernel makes.
#[inline(always)]
fn check_group<const PIX: usize>(
    xs: &[&[u8]; PIX],
    w: &[i8],
    stride: usize,
    rows: usize,
    acc: &[i32],
    offsets: &[usize; PIX],
) {
    assert!(rows == 0 || (rows - 1) * stride + COLS <= w.len());
    assert!(xs.iter().all(|x| x.len() >= rows));
    assert!(offsets.iter().all(|&o| o + COLS <= acc.len()));
}

/// The scalar reference: plain loops the compiler vectorizes for whatever the target has. Packed blocks
/// are the rows themselves, `COLS` apart.
enum Portable {}

impl IntMicro for Portable {
    #[inline(always)]
    fn channel(s: usize) -> usize {
        s
    }

    #[inline(always)]
    unsafe fn unpermute(_: &mut [i32; COLS]) {}

    #[inline(always)]
    unsafe fn pack(w: &[i8], stride: usize, rows: usize, packed: &mut [i8]) {
        for (j, row) in packed[..rows * COLS].chunks_exact_mut(COLS).enumerate() {
            row.copy_from_slice(&w[j * stride..][..COLS]);
        }
    }

    #[inline(always)]
    unsafe fn rows4(x: [u8; 4], rows: [&[i8]; 4], cols: usize, acc: &mut [i32]) {
        let acc = &mut acc[..cols];
        for (&x, row) in x.iter().zip(rows) {
            for (a, &w) in acc.iter_mut().zip(&row[..cols]) {
                *a += x as i32 * w as i32;
            }
        }
    }

    #[inline(always)]
    unsafe fn group<const PIX: usize>(
        xs: [&[u8]; PIX],
        packed: &[i8],
        rows: usize,
        acc: &mut [i32],
        offsets: [usize; PIX],
    ) {
        // SAFETY: no CPU features needed.
        unsafe { Self::group_direct(xs, packed, COLS, rows, acc, offsets) }
    }

    #[inline(always)]
    unsafe fn group_direct<const PIX: usize>(
        xs: [&[u8]; PIX],
        w: &[i8],
        stride: usize,
        rows: usize,
        acc: &mut [i32],
        offsets: [usize; PIX],
    ) {
        check_group(&xs, w, stride, rows, acc, &offsets);
        let mut r: [[i32; COLS]; PIX] = core::array::from_fn(|p| acc[offsets[p]..][..COLS].try_into().unwrap());
        for j in 0..rows {
            let row: &[i8; COLS] = w[j * stride..][..COLS].try_into().unwrap();
            for (rp, x) in r.iter_mut().zip(&xs) {
                let x = x[j] as i32;
                for (a, &wt) in rp.iter_mut().zip(row) {
                    *a += x * wt as i32;
                }
            }
        }
        for (&o, rp) in offsets.iter().zip(&r) {
            acc[o..][..COLS].copy_from_slice(rp);
        }
    }
}

/// wasm simd128: `i32x4.dot_i16x8_s` multiplies pairs of i16 and adds each pair, so two rows go at once:
/// their levels interleaved channel by channel and widened to i16, against the two inputs as one i16 pair.
/// Packed blocks hold the rows interleaved in pairs (128 bytes per pair, 32 per quarter of 16 channels);
/// the accumulators stay in channel order. A block runs a quarter at a time, so that two pixels'
/// accumulators (8 registers) and the weights fit the 16 vector registers a wasm engine has on x86-64.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::*;
    use core::arch::wasm32::*;

    pub(super) enum WasmDot {}

    /// 16 channels of two rows, interleaved and widened: four operands of 4 channels × 2 rows.
    #[inline(always)]
    fn pairs(a: v128, b: v128) -> [v128; 4] {
        let lo = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(a, b);
        let hi = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(a, b);
        widen(lo, hi)
    }

    #[inline(always)]
    fn widen(lo: v128, hi: v128) -> [v128; 4] {
        [
            i16x8_extend_low_i8x16(lo),
            i16x8_extend_high_i8x16(lo),
            i16x8_extend_low_i8x16(hi),
            i16x8_extend_high_i8x16(hi),
        ]
    }

    /// Two inputs as the i16 pair every lane of a dot multiplies.
    #[inline(always)]
    fn input_pair(x0: u8, x1: u8) -> v128 {
        i32x4_splat(x0 as i32 | (x1 as i32) << 16)
    }

    /// 16 bytes from `p`.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline(always)]
    unsafe fn load(p: *const i8) -> v128 {
        // SAFETY: passed on from the caller.
        unsafe { v128_load(p.cast()) }
    }

    /// `acc[offsets[p]..][..COLS] += Σ_j xs[p][j] · row j`, where `weights(j, q)` gives quarter `q` of rows
    /// `j, j + 1` (`j` even) as [`pairs`] operands.
    ///
    /// # Safety
    /// `offsets[p] + COLS <= acc.len()` and `xs[p].len() >= rows` for every pixel.
    #[inline(always)]
    unsafe fn sweep<const PIX: usize>(
        xs: &[&[u8]; PIX],
        rows: usize,
        acc: &mut [i32],
        offsets: &[usize; PIX],
        weights: impl Fn(usize, usize) -> [v128; 4],
    ) {
        let base = acc.as_mut_ptr();
        for q in 0..4 {
            // SAFETY: `offsets[p] + 16q + 4v + 4 <= offsets[p] + COLS`, inside `acc` (the caller's contract).
            let at = |p: usize, v: usize| unsafe { base.add(offsets[p] + 16 * q + 4 * v) };
            // SAFETY: as above.
            let mut r: [[v128; 4]; PIX] =
                core::array::from_fn(|p| core::array::from_fn(|v| unsafe { v128_load(at(p, v).cast()) }));
            for j in (0..rows).step_by(2) {
                let w = weights(j, q);
                for (rp, x) in r.iter_mut().zip(xs) {
                    let pair = input_pair(x[j], if j + 1 < rows { x[j + 1] } else { 0 });
                    for (a, &w) in rp.iter_mut().zip(&w) {
                        *a = i32x4_add(*a, i32x4_dot_i16x8(w, pair));
                    }
                }
            }
            for (p, rp) in r.iter().enumerate() {
                for (v, a) in rp.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { v128_store(at(p, v).cast(), *a) };
                }
            }
        }
    }

    impl IntMicro for WasmDot {
        #[inline(always)]
        fn channel(s: usize) -> usize {
            s
        }

        #[inline(always)]
        unsafe fn unpermute(_: &mut [i32; COLS]) {}

        #[inline(always)]
        unsafe fn pack(w: &[i8], stride: usize, rows: usize, packed: &mut [i8]) {
            assert!(rows == 0 || (rows - 1) * stride + COLS <= w.len());
            assert!(packed.len() >= packed_len(rows));
            let zero = i8x16_splat(0);
            for j in (0..rows).step_by(2) {
                for q in 0..4 {
                    // SAFETY: rows `j` and `j + 1` (when there is one) hold COLS bytes each, checked above.
                    let (a, b) = unsafe {
                        let a = load(w.as_ptr().add(j * stride + 16 * q));
                        (a, if j + 1 < rows { load(w.as_ptr().add((j + 1) * stride + 16 * q)) } else { zero })
                    };
                    let lo = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(a, b);
                    let hi = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(a, b);
                    let at = j / 2 * 2 * COLS + 32 * q;
                    // SAFETY: `at + 32 <= packed_len(rows)`, checked above.
                    unsafe {
                        v128_store(packed.as_mut_ptr().add(at).cast(), lo);
                        v128_store(packed.as_mut_ptr().add(at + 16).cast(), hi);
                    }
                }
            }
        }

        #[inline(always)]
        unsafe fn rows4(x: [u8; 4], rows: [&[i8]; 4], cols: usize, acc: &mut [i32]) {
            assert!(cols.is_multiple_of(COLS) && acc.len() >= cols && rows.iter().all(|r| r.len() >= cols));
            let (x01, x23) = (input_pair(x[0], x[1]), input_pair(x[2], x[3]));
            for c in (0..cols).step_by(16) {
                // SAFETY: `c + 16 <= cols`, inside every row and `acc` (checked above).
                unsafe {
                    let row = |t: usize| load(rows[t].as_ptr().add(c));
                    let (w01, w23) = (pairs(row(0), row(1)), pairs(row(2), row(3)));
                    for v in 0..4 {
                        let at = acc.as_mut_ptr().add(c + 4 * v).cast();
                        let sum = i32x4_add(i32x4_dot_i16x8(w01[v], x01), i32x4_dot_i16x8(w23[v], x23));
                        v128_store(at, i32x4_add(v128_load(at), sum));
                    }
                }
            }
        }

        #[inline(always)]
        unsafe fn group<const PIX: usize>(
            xs: [&[u8]; PIX],
            packed: &[i8],
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_packed_group(&xs, packed, rows, acc, &offsets);
            let p = packed.as_ptr();
            // SAFETY: checked above; pair `j` is 128 bytes from `j / 2 · 128`, inside `packed_len(rows)`.
            unsafe {
                sweep(&xs, rows, acc, &offsets, |j, q| {
                    let at = j / 2 * 2 * COLS + 32 * q;
                    widen(load(p.add(at)), load(p.add(at + 16)))
                })
            }
        }

        #[inline(always)]
        unsafe fn group_direct<const PIX: usize>(
            xs: [&[u8]; PIX],
            w: &[i8],
            stride: usize,
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_group(&xs, w, stride, rows, acc, &offsets);
            let p = w.as_ptr();
            // SAFETY: rows `0..rows` of COLS bytes from `w`, checked above.
            unsafe {
                sweep(&xs, rows, acc, &offsets, |j, q| {
                    let second = if j + 1 < rows { load(p.add((j + 1) * stride + 16 * q)) } else { i8x16_splat(0) };
                    pairs(load(p.add(j * stride + 16 * q)), second)
                })
            }
        }
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86 {
    use super::*;
    use core::arch::x86_64::*;

    /// The portable loops compiled with AVX2 (the compiler widens to 16 bits and uses `vpmaddwd`).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    pub(super) unsafe fn gemm_avx2<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn inner<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
            // SAFETY: the portable loops need only what `inner` is compiled for.
            unsafe { gemm::<K, Portable, 4>(g, levels, bias, out) }
        }
        // SAFETY: the caller guarantees AVX2 (and FMA, which every AVX2 CPU Kiln detects has).
        unsafe { inner(g, levels, bias, out) }
    }

    /// [`Values::requantized_scales`] compiled with AVX2 (the maxima of the scales' bits vectorize to
    /// `vpmaxuw`, which the x86-64 baseline lacks). The same values: integer maxima, then the same float
    /// operations.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn requantized_scales_avx2(weights: &Values<'_>, out: &mut [f32]) {
        weights.requantized_scales(out)
    }

    /// # Safety
    /// The CPU must support AVX-512F, BW, VL and VNNI (`Isa::Avx512Vnni.is_available()`).
    pub(super) unsafe fn gemm_vnni<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
        unsafe fn inner<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
            // SAFETY: `inner` runs only with the features `Vnni` needs.
            unsafe { gemm::<K, Vnni, 6>(g, levels, bias, out) }
        }
        // SAFETY: the caller guarantees the features.
        unsafe { inner(g, levels, bias, out) }
    }

    /// `vpdpbusd`: 64 u8 × s8 multiply-adds per instruction. The weights are stored `[k][channel]`, and
    /// `vpdpbusd` wants four consecutive `k` of one channel in each 32-bit lane, so four rows are
    /// interleaved (two rounds of byte and word unpacks): once per tile into a packed block, or in
    /// registers for small tiles. The unpacks work inside 128-bit lanes, which permutes the channels:
    /// register `v`, lane `L`, element `e` holds channel `16L + 4v + e`. The accumulators stay in that
    /// order until the epilogue.
    pub(super) enum Vnni {}

    /// Rows `j..j + 4` of a block interleaved into `vpdpbusd` operands (rows past `left` read as zeros).
    #[inline(always)]
    unsafe fn interleave(w: *const i8, stride: usize, left: usize) -> [__m512i; 4] {
        // SAFETY: the caller checked that rows `0..left.min(4)` of COLS bytes from `w` are readable; the
        // caller has AVX-512F and BW.
        unsafe {
            let row = |t: usize| {
                if t < left { _mm512_loadu_si512(w.add(t * stride).cast()) } else { _mm512_setzero_si512() }
            };
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let (a, b) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
            let (c, d) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
            [
                _mm512_unpacklo_epi16(a, c),
                _mm512_unpackhi_epi16(a, c),
                _mm512_unpacklo_epi16(b, d),
                _mm512_unpackhi_epi16(b, d),
            ]
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and AVX-VNNI (`Isa::AvxVnni.is_available()`).
    pub(super) unsafe fn gemm_avx_vnni<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
        #[target_feature(enable = "avx2,fma,avxvnni")]
        unsafe fn inner<K: Sink>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, out: &mut K) {
            // SAFETY: `inner` runs only with the features `AvxVnni` needs.
            unsafe { gemm::<K, AvxVnni, 2>(g, levels, bias, out) }
        }
        // SAFETY: the caller guarantees the features.
        unsafe { inner(g, levels, bias, out) }
    }

    /// AVX-VNNI: `vpdpbusd` on 256-bit registers, for CPUs that have it without AVX-512 (and the 16
    /// registers AVX2 has). Each block of [`COLS`] channels runs as two halves of 32, two pixels at a time
    /// (8 accumulators, 4 weight operands). The four-row interleave is [`Vnni`]'s on 256 bits, so register
    /// `v`, 128-bit lane `L`, element `e` of half `h` holds channel `32h + 16L + 4v + e`; it is stored at
    /// position `32h + 8v + 4L + e` of the block until the epilogue.
    pub(super) enum AvxVnni {}

    /// Four rows' 32 bytes interleaved into `vpdpbusd` operands.
    #[inline(always)]
    unsafe fn interleave_rows256(r: [__m256i; 4]) -> [__m256i; 4] {
        // SAFETY: register operations; the caller has AVX2.
        unsafe {
            let (a, b) = (_mm256_unpacklo_epi8(r[0], r[1]), _mm256_unpackhi_epi8(r[0], r[1]));
            let (c, d) = (_mm256_unpacklo_epi8(r[2], r[3]), _mm256_unpackhi_epi8(r[2], r[3]));
            [
                _mm256_unpacklo_epi16(a, c),
                _mm256_unpackhi_epi16(a, c),
                _mm256_unpacklo_epi16(b, d),
                _mm256_unpackhi_epi16(b, d),
            ]
        }
    }

    /// Rows `j..j + 4` of one 32-channel half, `stride` apart (rows past `left` read as zeros), interleaved.
    #[inline(always)]
    unsafe fn interleave256(w: *const i8, stride: usize, left: usize) -> [__m256i; 4] {
        // SAFETY: the caller checked that rows `0..left.min(4)` of 32 bytes from `w` are readable.
        unsafe {
            let row = |t: usize| {
                if t < left { _mm256_loadu_si256(w.add(t * stride).cast()) } else { _mm256_setzero_si256() }
            };
            interleave_rows256([row(0), row(1), row(2), row(3)])
        }
    }

    /// [`sweep`] on 256 bits: `weights(h, j, left)` gives half `h`'s operands for rows `j..j + 4`.
    #[inline(always)]
    unsafe fn sweep256<const PIX: usize>(
        xs: &[*const u8; PIX],
        rows: usize,
        acc: *mut i32,
        offsets: &[usize; PIX],
        weights: impl Fn(usize, usize, usize) -> [__m256i; 4],
    ) {
        // SAFETY (every pointer access): the callers checked `rows` inputs per pixel and COLS
        // accumulators per offset; they run with AVX2 and AVX-VNNI.
        unsafe {
            for h in 0..2 {
                let at = |p: usize, v: usize| acc.add(offsets[p] + 32 * h + 8 * v);
                let mut r: [[__m256i; 4]; PIX] =
                    core::array::from_fn(|p| core::array::from_fn(|v| _mm256_loadu_si256(at(p, v).cast())));
                let mut j = 0;
                while j < rows {
                    let left = (rows - j).min(4);
                    let u = weights(h, j, left);
                    for (rp, x) in r.iter_mut().zip(xs) {
                        let x = _mm256_set1_epi32(four_inputs(x.add(j), left));
                        for (a, &w) in rp.iter_mut().zip(&u) {
                            *a = _mm256_dpbusd_avx_epi32(*a, x, w);
                        }
                    }
                    j += 4;
                }
                for (p, rp) in r.iter().enumerate() {
                    for (v, a) in rp.iter().enumerate() {
                        _mm256_storeu_si256(at(p, v).cast(), *a);
                    }
                }
            }
        }
    }

    impl IntMicro for AvxVnni {
        #[inline(always)]
        fn channel(s: usize) -> usize {
            let (h, v, lane, e) = (s / 32, s % 32 / 8, s % 8 / 4, s % 4);
            32 * h + 16 * lane + 4 * v + e
        }

        #[inline(always)]
        unsafe fn unpermute(block: &mut [i32; COLS]) {
            let held = *block;
            for (s, &a) in held.iter().enumerate() {
                block[Self::channel(s)] = a;
            }
        }

        #[inline(always)]
        unsafe fn pack(w: &[i8], stride: usize, rows: usize, packed: &mut [i8]) {
            assert!(rows == 0 || (rows - 1) * stride + COLS <= w.len());
            assert!(packed.len() >= packed_len(rows));
            #[target_feature(enable = "avx2")]
            unsafe fn inner(w: *const i8, stride: usize, rows: usize, packed: *mut i8) {
                // SAFETY: bounds checked by the caller; 2 halves × 4 × 32 bytes per group of 4 rows.
                unsafe {
                    for j in (0..rows).step_by(4) {
                        for h in 0..2 {
                            let u = interleave256(w.add(j * stride + 32 * h), stride, rows - j);
                            for (v, u) in u.iter().enumerate() {
                                _mm256_storeu_si256(packed.add(j * COLS + 128 * h + 32 * v).cast(), *u);
                            }
                        }
                    }
                }
            }
            // SAFETY: bounds checked above; the caller has the features (the trait's contract).
            unsafe { inner(w.as_ptr(), stride, rows, packed.as_mut_ptr()) }
        }

        #[inline(always)]
        unsafe fn rows4(x: [u8; 4], rows: [&[i8]; 4], cols: usize, acc: &mut [i32]) {
            assert!(cols.is_multiple_of(COLS) && acc.len() >= cols && rows.iter().all(|r| r.len() >= cols));
            #[target_feature(enable = "avx2,avxvnni")]
            unsafe fn inner(x: i32, rows: [*const i8; 4], cols: usize, acc: *mut i32) {
                // SAFETY: `cols` values of each row and of `acc`, checked by the caller.
                unsafe {
                    let x = _mm256_set1_epi32(x);
                    for c in (0..cols).step_by(32) {
                        let u = interleave_rows256(rows.map(|r| _mm256_loadu_si256(r.add(c).cast())));
                        for (v, u) in u.iter().enumerate() {
                            let at = acc.add(c + 8 * v);
                            let sum = _mm256_dpbusd_avx_epi32(_mm256_loadu_si256(at.cast()), x, *u);
                            _mm256_storeu_si256(at.cast(), sum);
                        }
                    }
                }
            }
            // SAFETY: bounds checked above; the caller has the features (the trait's contract).
            unsafe { inner(i32::from_le_bytes(x), rows.map(|r| r.as_ptr()), cols, acc.as_mut_ptr()) }
        }

        #[inline(always)]
        unsafe fn group<const PIX: usize>(
            xs: [&[u8]; PIX],
            packed: &[i8],
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_packed_group(&xs, packed, rows, acc, &offsets);
            #[target_feature(enable = "avx2,avxvnni")]
            unsafe fn inner<const PIX: usize>(
                xs: &[*const u8; PIX],
                packed: *const i8,
                rows: usize,
                acc: *mut i32,
                offsets: &[usize; PIX],
            ) {
                // SAFETY: the packed block holds `rows` rounded up to 4 rows, checked by the caller.
                unsafe {
                    sweep256(xs, rows, acc, offsets, |h, j, _| {
                        core::array::from_fn(|v| _mm256_loadu_si256(packed.add(j * COLS + 128 * h + 32 * v).cast()))
                    })
                }
            }
            let xs = xs.map(|x| x.as_ptr());
            // SAFETY: bounds checked above; the caller has the features.
            unsafe { inner::<PIX>(&xs, packed.as_ptr(), rows, acc.as_mut_ptr(), &offsets) }
        }

        #[inline(always)]
        unsafe fn group_direct<const PIX: usize>(
            xs: [&[u8]; PIX],
            w: &[i8],
            stride: usize,
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_group(&xs, w, stride, rows, acc, &offsets);
            #[target_feature(enable = "avx2,avxvnni")]
            unsafe fn inner<const PIX: usize>(
                xs: &[*const u8; PIX],
                w: *const i8,
                stride: usize,
                rows: usize,
                acc: *mut i32,
                offsets: &[usize; PIX],
            ) {
                // SAFETY: rows `0..rows` of COLS bytes from `w` checked by the caller.
                unsafe {
                    sweep256(xs, rows, acc, offsets, |h, j, left| {
                        interleave256(w.add(j * stride + 32 * h), stride, left)
                    })
                }
            }
            let xs = xs.map(|x| x.as_ptr());
            // SAFETY: bounds checked above; the caller has the features.
            unsafe { inner::<PIX>(&xs, w.as_ptr(), stride, rows, acc.as_mut_ptr(), &offsets) }
        }
    }

    /// A mask of the first `n` of 64 bytes.
    #[inline(always)]
    fn first_bytes(n: usize) -> __mmask64 {
        if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
    }

    /// [`Values::requantize`] in AVX-512 registers, for int4/int2 whose blocks tile the rows: each 128-bit
    /// lane of packed levels (32 int4 or 64 int2 weights) lies inside one block, so its int8 levels are a
    /// 16-entry `vpshufb` table, `clamp((k × m + 128) >> 8, ±127)` for the lane's block multiplier `m`
    /// (`block_multiplier` in the format module, for 16 lanes at once), computed in 16-bit lanes
    /// (`m` is bounded so that they never overflow). The same integers as the scalar code, which takes
    /// every other case and the ragged end.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn requantize_avx512(values: &Values<'_>, start: usize, inverse: &[f32], out: &mut [i8]) {
        let Some(t) = values.tiled_blocks() else { return values.requantize(start, inverse, out) };
        let (per_byte, per_lane) = if t.dtype == DType::Int4 { (2, 32) } else { (4, 64) };
        if t.block < per_lane || !start.is_multiple_of(per_lane) {
            return values.requantize(start, inverse, out);
        }
        // The scalar code computes a block's run in integers only when it is whole bytes: a last run that
        // is not goes back to it whole, so that it gets the same levels.
        let end = start + out.len();
        let last_run = end - (end / t.block * t.block).max(start);
        let n = if last_run.is_multiple_of(per_byte) { out.len() } else { out.len() - last_run };
        assert!(inverse.len() >= out.len() && (start + n) / per_byte <= t.data.len());
        assert!((start + n).div_ceil(t.block) * 2 <= t.scales.len());
        let lanes_per_block = (t.block / per_lane).trailing_zeros() as i32;
        let half = if t.dtype == DType::Int2 { 0.5 } else { 1.0 };
        let max = crate::format::multiplier_max(t.dtype);
        // SAFETY: every load and store below is masked to, or asserted inside, the slices above.
        unsafe {
            // The small integer `k` each table entry stands for: a nibble's two's complement, or 2q + 1 for
            // an int2 code (entries past 3 are never looked up).
            let k: [i16; 16] = if t.dtype == DType::Int4 {
                core::array::from_fn(|e| ((e as i16) ^ 8) - 8)
            } else {
                core::array::from_fn(|e| [1, 3, -3, -1].get(e).copied().unwrap_or(0))
            };
            let k = _mm512_broadcast_i64x4(_mm256_loadu_si256(k.as_ptr().cast()));
            let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let mut done = 0;
            while done < n {
                let group = (16 * per_lane).min(n - done);
                let lanes = group.div_ceil(per_lane);
                let first = start + done;
                let first_block = first / t.block;
                // Lane `L`'s block, from the group's first: ((first mod block) / per_lane + L) >> log2(lanes per block).
                let offset = _mm512_set1_epi32(((first % t.block) / per_lane) as i32);
                let rel = _mm512_srlv_epi32(_mm512_add_epi32(offset, iota), _mm512_set1_epi32(lanes_per_block));
                let blocks = ((first % t.block + (lanes - 1) * per_lane) / t.block) + 1;
                let bits = _mm256_maskz_loadu_epi16(
                    ((1u32 << blocks) - 1) as __mmask16,
                    t.scales.as_ptr().add(2 * first_block).cast(),
                );
                let bits = _mm256_and_si256(
                    _mm256_permutexvar_epi16(_mm512_cvtepi32_epi16(rel), bits),
                    _mm256_set1_epi16(0x7fff),
                );
                let scale = _mm512_cvtph_ps(bits);
                let inverse = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    ((1u32 << lanes) - 1) as __mmask16,
                    _mm512_mullo_epi32(iota, _mm512_set1_epi32(per_lane as i32)),
                    inverse.as_ptr().add(done),
                );
                // As `block_multiplier`: the same roundings, in the same order (no fused multiply-add).
                let ratio = _mm512_mul_ps(_mm512_mul_ps(scale, inverse), _mm512_set1_ps(half));
                let m = _mm512_cvttps_epi32(_mm512_add_ps(
                    _mm512_mul_ps(ratio, _mm512_set1_ps(256.0)),
                    _mm512_set1_ps(0.5),
                ));
                let m = _mm512_min_epi32(_mm512_max_epi32(m, _mm512_setzero_si512()), _mm512_set1_epi32(max));
                let m = _mm512_zextsi256_si512(_mm512_cvtepi32_epi16(m));
                for q in 0..lanes.div_ceil(4) {
                    let at = done + q * 4 * per_lane;
                    let left = (n - at).min(4 * per_lane);
                    // Tables for lanes 4q..4q + 4: 16 words per lane, two lanes per register.
                    let table = |a: i16| {
                        let lane = _mm512_mask_blend_epi16(
                            0xFFFF_0000,
                            _mm512_set1_epi16(4 * q as i16 + a),
                            _mm512_set1_epi16(4 * q as i16 + a + 1),
                        );
                        let words = _mm512_mullo_epi16(k, _mm512_permutexvar_epi16(lane, m));
                        _mm512_cvtsepi16_epi8(_mm512_srai_epi16::<8>(_mm512_add_epi16(words, _mm512_set1_epi16(128))))
                    };
                    let table = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(table(0)), table(2));
                    let table = _mm512_max_epi8(table, _mm512_set1_epi8(-127));
                    let v = _mm512_maskz_loadu_epi8(
                        first_bytes(left / per_byte),
                        t.data.as_ptr().add((start + at) / per_byte).cast(),
                    );
                    let code = |shift: u32, mask: i8| {
                        let field = _mm512_and_si512(
                            _mm512_srl_epi16(v, _mm_cvtsi32_si128(shift as i32)),
                            _mm512_set1_epi8(mask),
                        );
                        _mm512_shuffle_epi8(table, field)
                    };
                    let o = out.as_mut_ptr().add(at);
                    let store = |j: usize, r: __m512i| {
                        if 64 * j < left {
                            _mm512_mask_storeu_epi8(o.add(64 * j), first_bytes(left - 64 * j), r);
                        }
                    };
                    if per_byte == 2 {
                        // Element 2j is byte j's low nibble: interleave, then put each lane's two halves together.
                        let (lo, hi) = (code(0, 0x0f), code(4, 0x0f));
                        let (a, b) = (_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi));
                        store(0, _mm512_permutex2var_epi64(a, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), b));
                        store(1, _mm512_permutex2var_epi64(a, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), b));
                    } else {
                        // Element 4j + i is byte j's bits 2i..2i + 2: interleave four streams, then a 4×4
                        // transpose of 128-bit lanes.
                        let s: [__m512i; 4] = core::array::from_fn(|i| code(2 * i as u32, 0x03));
                        let (a, c) = (_mm512_unpacklo_epi8(s[0], s[1]), _mm512_unpackhi_epi8(s[0], s[1]));
                        let (b, d) = (_mm512_unpacklo_epi8(s[2], s[3]), _mm512_unpackhi_epi8(s[2], s[3]));
                        let r = [
                            _mm512_unpacklo_epi16(a, b),
                            _mm512_unpackhi_epi16(a, b),
                            _mm512_unpacklo_epi16(c, d),
                            _mm512_unpackhi_epi16(c, d),
                        ];
                        let t0 = _mm512_shuffle_i32x4::<0x44>(r[0], r[1]);
                        let t1 = _mm512_shuffle_i32x4::<0xEE>(r[0], r[1]);
                        let t2 = _mm512_shuffle_i32x4::<0x44>(r[2], r[3]);
                        let t3 = _mm512_shuffle_i32x4::<0xEE>(r[2], r[3]);
                        store(0, _mm512_shuffle_i32x4::<0x88>(t0, t2));
                        store(1, _mm512_shuffle_i32x4::<0xDD>(t0, t2));
                        store(2, _mm512_shuffle_i32x4::<0x88>(t1, t3));
                        store(3, _mm512_shuffle_i32x4::<0xDD>(t1, t3));
                    }
                }
                done += group;
            }
        }
        if n < out.len() {
            values.requantize(start + n, &inverse[n..], &mut out[n..]);
        }
    }

    /// Four inputs `x[j..j + 4]` as one 32-bit lane (past `left`, zeros).
    #[inline(always)]
    unsafe fn four_inputs(x: *const u8, left: usize) -> i32 {
        // SAFETY: the caller checked that `left.min(4)` bytes from `x` are readable.
        unsafe {
            if left >= 4 {
                (x as *const i32).read_unaligned()
            } else {
                let mut four = [0u8; 4];
                core::ptr::copy_nonoverlapping(x, four.as_mut_ptr(), left);
                i32::from_le_bytes(four)
            }
        }
    }

    /// [`four_inputs`], broadcast.
    #[inline(always)]
    unsafe fn broadcast4(x: *const u8, left: usize) -> __m512i {
        // SAFETY: passed on from the caller.
        unsafe { _mm512_set1_epi32(four_inputs(x, left)) }
    }

    /// The sweep shared by both entry points: `weights(j, left)` gives the operands for rows `j..j + 4`
    /// (`left` of them real).
    #[inline(always)]
    unsafe fn sweep<const PIX: usize>(
        xs: &[*const u8; PIX],
        rows: usize,
        acc: *mut i32,
        offsets: &[usize; PIX],
        weights: impl Fn(usize, usize) -> [__m512i; 4],
    ) {
        // SAFETY (every pointer access): the callers checked `rows` inputs per pixel and COLS
        // accumulators per offset; they run with AVX-512F, BW and VNNI.
        unsafe {
            let mut r: [[__m512i; 4]; PIX] = core::array::from_fn(|p| {
                core::array::from_fn(|v| _mm512_loadu_si512(acc.add(offsets[p] + 16 * v).cast()))
            });
            // Whole groups of four rows without a branch (`left` is the constant 4), then the rest.
            let full = rows / 4 * 4;
            let mut j = 0;
            while j < full {
                let u = weights(j, 4);
                for (rp, x) in r.iter_mut().zip(xs) {
                    let x = _mm512_set1_epi32((x.add(j) as *const i32).read_unaligned());
                    for (a, &w) in rp.iter_mut().zip(&u) {
                        *a = _mm512_dpbusd_epi32(*a, x, w);
                    }
                }
                j += 4;
            }
            if j < rows {
                let u = weights(j, rows - j);
                for (rp, x) in r.iter_mut().zip(xs) {
                    let x = broadcast4(x.add(j), rows - j);
                    for (a, &w) in rp.iter_mut().zip(&u) {
                        *a = _mm512_dpbusd_epi32(*a, x, w);
                    }
                }
            }
            for (rp, &o) in r.iter().zip(offsets) {
                for (v, a) in rp.iter().enumerate() {
                    _mm512_storeu_si512(acc.add(o + 16 * v).cast(), *a);
                }
            }
        }
    }

    impl IntMicro for Vnni {
        #[inline(always)]
        fn channel(s: usize) -> usize {
            let (v, lane, e) = (s / 16, s % 16 / 4, s % 4);
            16 * lane + 4 * v + e
        }

        /// The permutation swaps register and 128-bit lane: a 4×4 transpose of lanes.
        #[inline(always)]
        unsafe fn unpermute(block: &mut [i32; COLS]) {
            #[target_feature(enable = "avx512f")]
            unsafe fn inner(block: *mut i32) {
                // SAFETY: 64 values from `block`.
                unsafe {
                    let c: [__m512i; 4] = core::array::from_fn(|v| _mm512_loadu_si512(block.add(16 * v).cast()));
                    let t0 = _mm512_shuffle_i32x4::<0x44>(c[0], c[1]);
                    let t1 = _mm512_shuffle_i32x4::<0xEE>(c[0], c[1]);
                    let t2 = _mm512_shuffle_i32x4::<0x44>(c[2], c[3]);
                    let t3 = _mm512_shuffle_i32x4::<0xEE>(c[2], c[3]);
                    let out = [
                        _mm512_shuffle_i32x4::<0x88>(t0, t2),
                        _mm512_shuffle_i32x4::<0xDD>(t0, t2),
                        _mm512_shuffle_i32x4::<0x88>(t1, t3),
                        _mm512_shuffle_i32x4::<0xDD>(t1, t3),
                    ];
                    for (v, o) in out.iter().enumerate() {
                        _mm512_storeu_si512(block.add(16 * v).cast(), *o);
                    }
                }
            }
            // SAFETY: the caller has the features (the trait's contract).
            unsafe { inner(block.as_mut_ptr()) }
        }

        #[inline(always)]
        unsafe fn pack(w: &[i8], stride: usize, rows: usize, packed: &mut [i8]) {
            assert!(rows == 0 || (rows - 1) * stride + COLS <= w.len());
            assert!(packed.len() >= packed_len(rows));
            #[target_feature(enable = "avx512f,avx512bw")]
            unsafe fn inner(w: *const i8, stride: usize, rows: usize, packed: *mut i8) {
                // SAFETY: bounds checked by the caller; 4 × 64 bytes per group of 4 rows.
                unsafe {
                    // Whole groups of four rows without a branch (`left` is the constant 4), then the rest.
                    let store = |j: usize, u: [__m512i; 4]| {
                        for (v, u) in u.iter().enumerate() {
                            _mm512_storeu_si512(packed.add((j + v) * COLS).cast(), *u);
                        }
                    };
                    let full = rows / 4 * 4;
                    for j in (0..full).step_by(4) {
                        store(j, interleave(w.add(j * stride), stride, 4));
                    }
                    if full < rows {
                        store(full, interleave(w.add(full * stride), stride, rows - full));
                    }
                }
            }
            // SAFETY: bounds checked above; the caller has the features (the trait's contract).
            unsafe { inner(w.as_ptr(), stride, rows, packed.as_mut_ptr()) }
        }

        #[inline(always)]
        unsafe fn requantize(values: &Values<'_>, start: usize, inverse: &[f32], out: &mut [i8]) {
            // SAFETY: the caller has the features (the trait's contract).
            unsafe { requantize_avx512(values, start, inverse, out) }
        }

        /// For int4/int2 only: int8 rows are read four at a time by the packing pass, which keeps enough
        /// loads in flight, and its panels (up to 64 KiB) would push the current one out of L1.
        #[inline(always)]
        unsafe fn prefetch(values: &Values<'_>, start: usize, len: usize) {
            if values.dtype() == DType::Int8 {
                return;
            }
            if let Some(bytes) = values.level_bytes(start, len) {
                for line in bytes.chunks(64) {
                    // SAFETY: a prefetch of an address inside a live slice; SSE is baseline on x86-64.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
                }
            }
        }

        #[inline(always)]
        unsafe fn rows4(x: [u8; 4], rows: [&[i8]; 4], cols: usize, acc: &mut [i32]) {
            assert!(cols.is_multiple_of(COLS) && acc.len() >= cols && rows.iter().all(|r| r.len() >= cols));
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            unsafe fn inner(x: i32, rows: [*const i8; 4], cols: usize, acc: *mut i32) {
                // SAFETY: `cols` values of each row and of `acc`, checked by the caller. Each row is read
                // once, front to back: the prefetcher streams them.
                unsafe {
                    let x = _mm512_set1_epi32(x);
                    for c in (0..cols).step_by(COLS) {
                        let row = |t: usize| _mm512_loadu_si512(rows[t].add(c).cast());
                        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                        let (a, b) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
                        let (cc, d) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
                        let u = [
                            _mm512_unpacklo_epi16(a, cc),
                            _mm512_unpackhi_epi16(a, cc),
                            _mm512_unpacklo_epi16(b, d),
                            _mm512_unpackhi_epi16(b, d),
                        ];
                        for (v, u) in u.iter().enumerate() {
                            let at = acc.add(c + 16 * v);
                            let sum = _mm512_dpbusd_epi32(_mm512_loadu_si512(at.cast()), x, *u);
                            _mm512_storeu_si512(at.cast(), sum);
                        }
                    }
                }
            }
            // SAFETY: bounds checked above; the caller has the features (the trait's contract).
            unsafe { inner(i32::from_le_bytes(x), rows.map(|r| r.as_ptr()), cols, acc.as_mut_ptr()) }
        }

        #[inline(always)]
        unsafe fn group<const PIX: usize>(
            xs: [&[u8]; PIX],
            packed: &[i8],
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_packed_group(&xs, packed, rows, acc, &offsets);
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            unsafe fn inner<const PIX: usize>(
                xs: &[*const u8; PIX],
                packed: *const i8,
                rows: usize,
                acc: *mut i32,
                offsets: &[usize; PIX],
            ) {
                // SAFETY: the packed block holds `rows` rounded up to 4 rows, checked by the caller.
                unsafe {
                    sweep(xs, rows, acc, offsets, |j, _| {
                        core::array::from_fn(|v| _mm512_loadu_si512(packed.add((j + v) * COLS).cast()))
                    })
                }
            }
            let xs = xs.map(|x| x.as_ptr());
            // SAFETY: bounds checked above; the caller has the features.
            unsafe { inner::<PIX>(&xs, packed.as_ptr(), rows, acc.as_mut_ptr(), &offsets) }
        }

        #[inline(always)]
        unsafe fn group_direct<const PIX: usize>(
            xs: [&[u8]; PIX],
            w: &[i8],
            stride: usize,
            rows: usize,
            acc: &mut [i32],
            offsets: [usize; PIX],
        ) {
            check_group(&xs, w, stride, rows, acc, &offsets);
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            unsafe fn inner<const PIX: usize>(
                xs: &[*const u8; PIX],
                w: *const i8,
                stride: usize,
                rows: usize,
                acc: *mut i32,
                offsets: &[usize; PIX],
            ) {
                // SAFETY: rows `0..rows` of COLS bytes from `w` checked by the caller.
                unsafe { sweep(xs, rows, acc, offsets, |j, left| interleave(w.add(j * stride), stride, left)) }
            }
            let xs = xs.map(|x| x.as_ptr());
            // SAFETY: bounds checked above; the caller has the features.
            unsafe { inner::<PIX>(&xs, w.as_ptr(), stride, rows, acc.as_mut_ptr(), &offsets) }
        }
    }
}

fn taps_one_and_few_rows(g: &IntGemm<'_>) -> bool {
    g.taps == 1 && g.pixels <= GEMV_MAX_ROWS
}

/// Bytes of accumulators a span of pixels keeps in L2 (see [`gemm`]).
const SPAN_ACCUMULATOR_BYTES: usize = 256 * 1024;

/// Tiles with at least this many pixels on a tap pack their weights first.
const PACK_MIN_PIXELS: usize = 6;

/// The tiled implicit GEMM in integers, then the epilogue. `out` is the f32 output seen as i32: it holds
/// the accumulators until the epilogue turns each tile into f32 values.
///
/// # Safety
/// The CPU must have the features micro-kernel `M` is built for.
#[inline(always)]
unsafe fn gemm<K: Sink, M: IntMicro, const PIX: usize>(
    g: &IntGemm<'_>,
    levels: Levels<'_>,
    bias: &Values<'_>,
    sink: &mut K,
) {
    if taps_one_and_few_rows(g) {
        // SAFETY: passed on from this function's caller.
        return unsafe { gemv::<K, M>(g, levels, bias, sink) };
    }
    let IntGemm { input, scales, pixels_per_image, taps, cin, geometry, cout, part, .. } = *g;
    let ((first_pixel, end_pixel), (first_channel, end_channel)) = (part.pixels, part.channels);
    let mut staged = [0i8; PANEL_BYTES];
    let mut packed = [0i8; PACKED_BYTES];
    let mut column_sums = [0i32; WIDTH];
    let pass_width = sink.pass_width();
    let (mut scale_run, mut bias_run) = ([0.0f32; WIDTH], [0.0f32; WIDTH]);
    for w0 in (first_channel..end_channel).step_by(pass_width) {
        let width = pass_width.min(end_channel - w0);
        for (j, s) in scale_run[..width].iter_mut().enumerate() {
            *s = levels.scale(w0 + j);
        }
        bias.decode(w0, &mut bias_run[..width]);
        let run = Channels { scales: &scale_run[..width], bias: &bias_run[..width] };
        let blocks = width / COLS;
        // Rows per pass: a multiple of 4 whose packed blocks (and requantized rows) fit their buffers.
        let budget = if matches!(levels, Levels::Int8 { .. }) { PACKED_BYTES } else { PANEL_BYTES };
        let panel_rows = (budget / width / 4 * 4).clamp(4, budget / COLS).min(cin);
        // Pixels per span: the span's accumulators (in `out`) stay in L2 while each pass's weights are
        // requantized and packed once and swept by every tile of the span.
        let span_pixels = sink.span_pixels(width);
        for s0 in (first_pixel..end_pixel).step_by(span_pixels) {
            let span = span_pixels.min(end_pixel - s0);
            let (acc_stride, acc_base) = sink.layout(w0, width);
            let at = |p: usize| (p - s0) * acc_stride + acc_base;
            // SAFETY: this part owns pixels `s0..s0 + span` of channels `w0..w0 + width`.
            let out = unsafe { sink.accumulators(s0, span) };
            for p in s0..s0 + span {
                out[at(p)..][..width].fill(0);
            }
            let image_of = |p: usize| p / pixels_per_image;
            let zero_points = (image_of(s0)..=image_of(s0 + span - 1)).any(|i| scales[i].zero != 0);
            for tap in 0..taps {
                let span_start = geometry.locate(s0);
                let mut here = span_start;
                let mut any = false;
                for _ in 0..span {
                    any |= geometry.source(here, tap).is_some();
                    here = geometry.next(here);
                }
                if !any {
                    continue;
                }
                for k0 in (0..cin).step_by(panel_rows) {
                    let kn = panel_rows.min(cin - k0);
                    let first = (tap * cin + k0) * cout + w0;
                    let block_len = packed_len(kn);
                    // The next panel's rows (the next rows of the flat `[taps·cin][cout]` order) are fetched
                    // while this one is swept: rows `cout` apart are too far apart for the hardware
                    // prefetcher, and one row's `width` levels are only a line or two.
                    let next = (tap * cin + k0 + kn) * cout + w0;
                    for j in 0..panel_rows.min((taps * cin).saturating_sub(tap * cin + k0 + kn)) {
                        // SAFETY: this function's caller vouches for M's CPU features.
                        unsafe { M::prefetch(levels.values(), next + j * cout, width) };
                    }
                    let (w, stride): (&[i8], usize) = match levels {
                        Levels::Int8 { levels, .. } => (&levels[first..first + (kn - 1) * cout + width], cout),
                        Levels::Requantized { values, inverse, .. } => {
                            for (j, row) in staged[..kn * width].chunks_exact_mut(width).enumerate() {
                                // SAFETY: this function's caller vouches for M's CPU features.
                                unsafe { M::requantize(values, first + j * cout, &inverse[w0..w0 + width], row) };
                            }
                            (&staged[..kn * width], width)
                        }
                    };
                    let mut packed_yet = false;
                    let mut tile_start = span_start;
                    let mut sums_yet = false;
                    for p0 in (s0..s0 + span).step_by(TILE_PIXELS) {
                        let tile = TILE_PIXELS.min(s0 + span - p0);
                        // The tile's pixels whose tap lands inside the image; the others read the quantized
                        // zero, `q = zero`, whose product `(q − zero) · w` is 0.
                        let mut valid = [(0, 0); TILE_PIXELS];
                        let mut count = 0;
                        let mut here = tile_start;
                        for p in p0..p0 + tile {
                            if let Some(start) = geometry.source(here, tap) {
                                valid[count] = (p, start);
                                count += 1;
                            }
                            here = geometry.next(here);
                        }
                        tile_start = here;
                        let valid = &valid[..count];
                        if valid.is_empty() {
                            continue;
                        }
                        let pack = valid.len() >= PACK_MIN_PIXELS;
                        if pack && !packed_yet {
                            for (b, block) in packed[..blocks * block_len].chunks_exact_mut(block_len).enumerate() {
                                // SAFETY: this function's caller vouches for M's CPU features.
                                unsafe { M::pack(&w[b * COLS..], stride, kn, block) };
                            }
                            packed_yet = true;
                        }
                        let x_of = |start: usize| &input[start + k0..start + k0 + kn];
                        for b in 0..blocks {
                            let c = b * COLS;
                            let (wb, pb) = (&w[c..], &packed[b * block_len..][..block_len]);
                            macro_rules! run {
                                ($n:tt, $group:expr) => {{
                                    let group = $group;
                                    let xs: [&[u8]; $n] = core::array::from_fn(|q| x_of(group[q].1));
                                    let o: [usize; $n] = core::array::from_fn(|q| at(group[q].0) + c);
                                    // SAFETY: this function's caller vouches for M's CPU features.
                                    unsafe {
                                        if pack {
                                            M::group::<$n>(xs, pb, kn, out, o)
                                        } else {
                                            M::group_direct::<$n>(xs, wb, stride, kn, out, o)
                                        }
                                    }
                                }};
                            }
                            // Groups of PIX, then 4, 2 and 1: small images (4×4 at the VGG's end) leave a
                            // large remainder, and single pixels would pay each weight load alone.
                            let mut groups = valid.chunks_exact(PIX);
                            for g in &mut groups {
                                run!(PIX, g)
                            }
                            let rest = groups.remainder();
                            let (fours, rest) = rest.split_at(rest.len() / 4 * 4);
                            for g in fours.chunks_exact(4) {
                                run!(4, g)
                            }
                            let (twos, rest) = rest.split_at(rest.len() / 2 * 2);
                            for g in twos.chunks_exact(2) {
                                run!(2, g)
                            }
                            for g in rest.chunks_exact(1) {
                                run!(1, g)
                            }
                        }
                        // The ragged channels past the last whole block, in plain loops.
                        let c = blocks * COLS;
                        if c < width {
                            for &(p, start) in valid {
                                let acc = &mut out[at(p) + c..][..width - c];
                                for (j, &x) in x_of(start).iter().enumerate() {
                                    for (a, &wt) in acc.iter_mut().zip(&w[j * stride + c..][..width - c]) {
                                        *a += x as i32 * wt as i32;
                                    }
                                }
                            }
                        }
                        if zero_points {
                            // Σ (q − zero)·w = Σ q·w − zero · Σ w, over this pass's rows.
                            let sums = &mut column_sums[..width];
                            if !sums_yet {
                                sums.fill(0);
                                for j in 0..kn {
                                    for (s, &wt) in sums.iter_mut().zip(&w[j * stride..][..width]) {
                                        *s += wt as i32;
                                    }
                                }
                                sums_yet = true;
                            }
                            for &(p, _) in valid {
                                let zero = scales[image_of(p)].zero;
                                if zero != 0 {
                                    let row = &mut out[at(p)..][..width];
                                    for (s, a) in row.iter_mut().enumerate() {
                                        let channel =
                                            if s < blocks * COLS { s / COLS * COLS + M::channel(s % COLS) } else { s };
                                        *a -= zero * sums[channel];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for p in s0..s0 + span {
                // SAFETY: this function's caller vouches for M's CPU features.
                unsafe { sink.finish::<M>(p, at(p), w0, scales[image_of(p)].scale, run) };
            }
        }
    }
}

/// Where a layer's i32 accumulators live, and what its epilogue writes.
trait Sink {
    /// The accumulators of the span of pixels `s0..s0 + span`.
    ///
    /// # Safety
    /// The calling part must own those pixels (of the channels it asks [`Sink::layout`] for): another part
    /// running at once must not write them.
    unsafe fn accumulators(&mut self, s0: usize, span: usize) -> &mut [i32];
    /// For the channels `w0..w0 + width` of a span from `s0`: pixel `p`'s accumulators start at `(p − s0) ×
    /// stride + base` in [`Sink::accumulators`].
    fn layout(&self, w0: usize, width: usize) -> (usize, usize);
    /// The most pixels a span of `width` channels may hold.
    fn span_pixels(&self, width: usize) -> usize;
    /// Channels per pass over the weights (at most [`WIDTH`], a multiple of [`COLS`]).
    fn pass_width(&self) -> usize;
    /// The most channels one pass of a matrix–vector product may hold.
    fn gemv_width(&self) -> usize;
    /// Pixel `p` is done: its accumulators for channels `w0..w0 + width` start at `at`.
    ///
    /// # Safety
    /// The CPU must have the features micro-kernel `M` is built for, and the calling part must own pixel
    /// `p`'s channels `w0..w0 + width`.
    unsafe fn finish<M: IntMicro>(&mut self, p: usize, at: usize, w0: usize, sx: f32, channels: Channels<'_>);
}

/// f32 outputs whose own memory holds the accumulators: no scratch at all. Only for parts that compute
/// every channel of their pixels (a span's accumulators are whole output rows).
struct InPlace<'a> {
    out: Rows<'a, i32>,
    cout: usize,
    /// The layer's output pixel of this call's pixel 0.
    offset: usize,
}

impl Sink for InPlace<'_> {
    unsafe fn accumulators(&mut self, s0: usize, span: usize) -> &mut [i32] {
        // SAFETY: passed on from the caller, which owns these pixels' whole rows.
        unsafe { self.out.region((self.offset + s0) * self.cout, span * self.cout) }
    }
    fn layout(&self, w0: usize, _: usize) -> (usize, usize) {
        (self.cout, w0)
    }
    fn span_pixels(&self, width: usize) -> usize {
        (SPAN_ACCUMULATOR_BYTES / (4 * width) / TILE_PIXELS * TILE_PIXELS).clamp(TILE_PIXELS, 1024)
    }
    fn gemv_width(&self) -> usize {
        GEMV_WIDTH
    }
    fn pass_width(&self) -> usize {
        WIDTH
    }
    #[inline(always)]
    unsafe fn finish<M: IntMicro>(&mut self, p: usize, _: usize, w0: usize, sx: f32, channels: Channels<'_>) {
        let width = channels.scales.len();
        // SAFETY: passed on from the caller.
        let row = unsafe { self.out.region((self.offset + p) * self.cout + w0, width) };
        // SAFETY: passed on from the caller.
        unsafe { epilogue::<M>(row, sx, channels.scales, channels.bias) };
    }
}

/// Accumulators in scratch, then outputs written channel range by channel range: 8-bit levels on the next
/// layer's static scale, or f32 values for a part that computes some of the channels.
struct Staged<'a, 'b> {
    accumulators: &'b mut [i32],
    target: Target<'a>,
    cout: usize,
    offset: usize,
}

impl Sink for Staged<'_, '_> {
    unsafe fn accumulators(&mut self, _: usize, _: usize) -> &mut [i32] {
        self.accumulators
    }
    fn layout(&self, _: usize, width: usize) -> (usize, usize) {
        (width, 0)
    }
    fn span_pixels(&self, width: usize) -> usize {
        (self.accumulators.len() / width).max(1)
    }
    fn gemv_width(&self) -> usize {
        self.accumulators.len().min(GEMV_WIDTH)
    }
    fn pass_width(&self) -> usize {
        // Narrow passes, so that a span holds at least 32 pixels to share each packed panel.
        (self.accumulators.len() / 32 / COLS * COLS).clamp(COLS, WIDTH)
    }
    #[inline(always)]
    unsafe fn finish<M: IntMicro>(&mut self, p: usize, at: usize, w0: usize, sx: f32, channels: Channels<'_>) {
        let width = channels.scales.len();
        let row = &mut self.accumulators[at..][..width];
        // SAFETY: passed on from the caller.
        unsafe { epilogue::<M>(row, sx, channels.scales, channels.bias) };
        let start = (self.offset + p) * self.cout + w0;
        match self.target {
            Target::F32(out) => {
                // SAFETY: the caller owns these outputs.
                unsafe { out.region(start, width) }.copy_from_slice(row);
            }
            Target::Levels(out, next) => {
                let inverse = 1.0 / next.scale;
                // SAFETY: the caller owns these outputs.
                for (q, &v) in unsafe { out.region(start, width) }.iter_mut().zip(row.iter()) {
                    *q = level(f32::from_bits(v as u32), inverse, next.zero);
                }
            }
        }
    }
}

/// Accumulator scratch a layer with 8-bit outputs works best with (32 pixels × 64 channels per pass);
/// it needs at least `min(cout, 64)` values, and passes shrink to fit.
pub const REQUANTIZED_ACCUMULATORS: usize = 2048;

/// Turns one output row's accumulators (whole blocks in `M`'s order) into f32 values, `acc × (sx ×
/// scales[c]) + bias[c]`, in channel order. The same scalar code in every build, so every build rounds
/// alike.
///
/// # Safety
/// The CPU must have the features micro-kernel `M` is built for.
#[inline(always)]
unsafe fn epilogue<M: IntMicro>(row: &mut [i32], sx: f32, scales: &[f32], bias: &[f32]) {
    for block in row.chunks_exact_mut(COLS) {
        // SAFETY: passed on from this function's caller.
        unsafe { M::unpermute(block.try_into().unwrap()) };
    }
    for ((a, &s), &b) in row.iter_mut().zip(scales).zip(bias) {
        *a = ((*a as f32) * (sx * s) + b).to_bits() as i32;
    }
}

/// One pass's per-channel weight scales and biases.
#[derive(Clone, Copy)]
struct Channels<'a> {
    scales: &'a [f32],
    bias: &'a [f32],
}

/// The weights of one pass of [`gemv`]: channels `w0..w0 + width`, the first `whole` in whole blocks.
/// (Methods, not closures: closures do not inherit the caller's `target_feature`s, and these must be
/// compiled, and vectorized, for the kernel build that inlines them.)
#[derive(Clone, Copy)]
struct GemvRows<'a> {
    levels: Levels<'a>,
    cout: usize,
    w0: usize,
    width: usize,
    whole: usize,
}

impl GemvRows<'_> {
    /// Row `k`'s levels for these channels, copied (or requantized) into slot `t` of `staged`.
    ///
    /// # Safety
    /// The CPU must have the features micro-kernel `M` is built for.
    #[inline(always)]
    unsafe fn row<M: IntMicro>(&self, k: usize, t: usize, staged: &mut [i8; PANEL_BYTES]) {
        let (first, width) = (k * self.cout + self.w0, self.width);
        let row = &mut staged[t * width..][..width];
        match self.levels {
            Levels::Int8 { levels, .. } => row.copy_from_slice(&levels[first..first + width]),
            // SAFETY: passed on from this function's caller.
            Levels::Requantized { values, inverse, .. } => unsafe {
                M::requantize(values, first, &inverse[self.w0..self.w0 + width], row)
            },
        }
    }

    /// `acc += Σ_t xs[t] · row ks[t]` for the first `used` rows (the others have input 0).
    ///
    /// # Safety
    /// The CPU must have the features micro-kernel `M` is built for.
    #[inline(always)]
    unsafe fn flush<M: IntMicro>(
        &self,
        ks: [usize; 4],
        xs: [u8; 4],
        used: usize,
        staged: &mut [i8; PANEL_BYTES],
        acc: &mut [i32],
    ) {
        let (cout, w0, width) = (self.cout, self.w0, self.width);
        let rows: [&[i8]; 4] = match self.levels {
            // int8 rows are read in place.
            Levels::Int8 { levels, .. } => ks.map(|k| &levels[k * cout + w0..][..width]),
            Levels::Requantized { .. } => {
                for (t, &k) in ks.iter().enumerate().take(used) {
                    // SAFETY: passed on from this function's caller.
                    unsafe { self.row::<M>(k, t, staged) };
                }
                let staged = &*staged;
                core::array::from_fn(|t| &staged[t.min(used - 1) * width..][..width])
            }
        };
        // SAFETY: passed on from this function's caller.
        unsafe { M::rows4(xs, rows, self.whole, acc) };
        // The ragged channels past the last whole block (all of them for a 10-class layer): row by row, so
        // that the loop over channels vectorizes.
        let tail = &mut acc[self.whole..width];
        for (&x, row) in xs.iter().zip(rows) {
            for (a, &w) in tail.iter_mut().zip(&row[self.whole..width]) {
                *a += x as i32 * w as i32;
            }
        }
    }
}

/// Dense layers on at most this many rows run as matrix–vector products ([`gemv`]).
const GEMV_MAX_ROWS: usize = 2;
/// Output channels a matrix–vector product accumulates at once (four requantized rows fill the panel).
const GEMV_WIDTH: usize = PANEL_BYTES / 4;

/// A dense layer on few rows: each row's non-zero inputs (ReLU outputs mostly are zero) taken four at a
/// time, with their weight rows streamed front to back. Rows of zero inputs are never read.
///
/// # Safety
/// The CPU must have the features micro-kernel `M` is built for.
#[inline(always)]
unsafe fn gemv<K: Sink, M: IntMicro>(g: &IntGemm<'_>, levels: Levels<'_>, bias: &Values<'_>, sink: &mut K) {
    let IntGemm { input, scales, cin, geometry, cout, part, .. } = *g;
    let ((first_pixel, end_pixel), (first_channel, end_channel)) = (part.pixels, part.channels);
    let mut staged = [0i8; PANEL_BYTES];
    let mut column_sums = [0i32; GEMV_WIDTH];
    let (mut scale_run, mut bias_run) = ([0.0f32; GEMV_WIDTH], [0.0f32; GEMV_WIDTH]);
    for (p, &ActivationScale { scale: sx, zero }) in scales.iter().enumerate().take(end_pixel).skip(first_pixel) {
        let x = geometry.source(geometry.locate(p), 0).map_or(&input[..0], |start| &input[start..start + cin]);
        let gemv_width = sink.gemv_width();
        for w0 in (first_channel..end_channel).step_by(gemv_width) {
            let width = gemv_width.min(end_channel - w0);
            for (j, s) in scale_run[..width].iter_mut().enumerate() {
                *s = levels.scale(w0 + j);
            }
            bias.decode(w0, &mut bias_run[..width]);
            let whole = width / COLS * COLS;
            let (_, at) = sink.layout(w0, width);
            // SAFETY: this part owns pixel `p`'s channels `w0..w0 + width`.
            let acc = &mut unsafe { sink.accumulators(p, 1) }[at..][..width];
            acc.fill(0);
            // Row `k`'s levels for these channels, requantized into slot `t` of the panel if need be.
            let rows = GemvRows { levels, cout, w0, width, whole };
            let (mut ks, mut xs, mut used) = ([0usize; 4], [0u8; 4], 0);
            // The non-zero inputs, compacted without a branch a chunk at a time (ReLU's zeros fall where
            // they like: a branch per input would mispredict half the time), then taken four at a time.
            let mut nonzero = [0u16; 256];
            for (c0, chunk) in (0..x.len()).step_by(nonzero.len()).zip(x.chunks(nonzero.len())) {
                let mut count = 0;
                for (k, &q) in chunk.iter().enumerate() {
                    nonzero[count] = k as u16;
                    count += (q != 0) as usize;
                }
                for (j, &k) in nonzero[..count].iter().enumerate() {
                    // The row after the next flush's is fetched ahead: rows are one jump apart.
                    if let Some(&ahead) = nonzero[..count].get(j + 4) {
                        // SAFETY: this function's caller vouches for M's CPU features.
                        unsafe { M::prefetch(levels.values(), (c0 + ahead as usize) * cout + w0, width) };
                    }
                    let k = c0 + k as usize;
                    (ks[used], xs[used]) = (k, x[k]);
                    used += 1;
                    if used == 4 {
                        // SAFETY: this function's caller vouches for M's CPU features.
                        unsafe { rows.flush::<M>(ks, xs, 4, &mut staged, acc) };
                        used = 0;
                    }
                }
            }
            if used > 0 {
                // The missing rows repeat a real one, with input 0.
                for t in used..4 {
                    (ks[t], xs[t]) = (ks[0], 0);
                }
                // SAFETY: as above.
                unsafe { rows.flush::<M>(ks, xs, used, &mut staged, acc) };
            }
            if zero != 0 {
                // Σ (q − zero)·w = Σ q·w − zero · Σ w, over every row.
                let sums = &mut column_sums[..width];
                sums.fill(0);
                for k in 0..cin {
                    // SAFETY: this function's caller vouches for M's CPU features.
                    unsafe { rows.row::<M>(k, 0, &mut staged) };
                    for (s, &w) in sums.iter_mut().zip(&staged[..width]) {
                        *s += w as i32;
                    }
                }
                for (s, a) in acc.iter_mut().enumerate() {
                    let channel = if s < whole { s / COLS * COLS + M::channel(s % COLS) } else { s };
                    *a -= zero * sums[channel];
                }
            }
            let run = Channels { scales: &scale_run[..width], bias: &bias_run[..width] };
            // SAFETY: this function's caller vouches for M's CPU features.
            unsafe { sink.finish::<M>(p, at, w0, sx, run) };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::{conv2d_3x3_same, dense};
    use crate::parallel::{Serial, Workers};
    use std::{boxed::Box, format, vec, vec::Vec};

    /// One thread, and layers cut into two and three parts on worker threads: every result must be the
    /// same bits.
    fn parallels() -> Vec<Box<dyn Parallel>> {
        vec![Box::new(Serial), Box::new(Workers::new(2).unwrap()), Box::new(Workers::new(3).unwrap())]
    }

    /// Deterministic values in [-1, 1), about a third of them zero (like ReLU outputs).
    fn pattern(len: usize, seed: usize) -> impl Iterator<Item = f32> {
        (0..len).map(move |i| {
            let v = ((i * 7919 + seed * 104_729) % 1009) as f32 / 504.5 - 1.0;
            if i % 3 == 0 { 0.0 } else { v }
        })
    }

    /// The lane-parallel range is the plain running fold's, on ragged lengths, with NaNs, signed zeros
    /// and the extremes in the remainder or the first lane.
    #[test]
    fn image_range_is_the_running_fold() {
        let fold = |x: &[f32]| x.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        for len in [0usize, 1, 5, 15, 16, 17, 33, 255, 1000] {
            for spot in [0, len / 2, len.saturating_sub(1)] {
                let mut x: Vec<f32> = pattern(len, len + spot).map(|v| v * 3.0 + 0.5).collect();
                if len > 0 {
                    x[spot] = -7.25;
                    x[len - 1 - spot.min(len - 1)] = 9.5;
                }
                if len > 3 {
                    (x[1], x[2], x[3]) = (f32::NAN, -0.0, f32::NEG_INFINITY.max(-1e30));
                }
                let (want, got) = (fold(&x), image_range(&x));
                assert_eq!((got.0.to_bits(), got.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "length {len}");
            }
            let positive: Vec<f32> = pattern(len, 3).map(f32::abs).collect();
            assert_eq!(image_range(&positive).0, 0.0, "length {len}: the low end is at most 0");
        }
    }

    /// An int8 weight tensor's regions: levels `[k][cout]` and per-channel f32 scales.
    fn int8_regions(k: usize, cout: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
        let levels: Vec<u8> = (0..k * cout).map(|i| (((i * 31 + seed * 17) % 255) as i32 - 127) as i8 as u8).collect();
        let scales: Vec<u8> = (0..cout).flat_map(|c| (0.01 + c as f32 * 1e-4).to_le_bytes()).collect();
        (levels, scales)
    }

    /// The scalar reference for the integer dense layer: the i32 sums one by one, then the same epilogue.
    #[allow(clippy::too_many_arguments)]
    fn reference_dense(
        x: &[u8],
        s: &[ActivationScale],
        n: usize,
        cin: usize,
        lv: &[u8],
        ws: &[f32],
        b: &[f32],
        cout: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; n * cout];
        for i in 0..n {
            for o in 0..cout {
                let acc: i32 =
                    (0..cin).map(|k| (x[i * cin + k] as i32 - s[i].zero) * lv[k * cout + o] as i8 as i32).sum();
                out[i * cout + o] = (acc as f32) * (s[i].scale * ws[o]) + b[o];
            }
        }
        out
    }

    #[test]
    fn quantized_activations_round_trip_within_half_a_step() {
        let input: Vec<f32> = pattern(2 * 50, 1).map(|v| v * 3.0).collect();
        let mut q = vec![0; input.len()];
        let mut s = vec![ActivationScale::default(); 2];
        quantize_activations(&input, 2, &mut q, &mut s).unwrap();
        for (i, (&x, &q)) in input.iter().zip(&q).enumerate() {
            let s = s[i / 50];
            assert!(s.zero > 0, "negative inputs need a zero point");
            let back = (q as i32 - s.zero) as f32 * s.scale;
            assert!((back - x).abs() <= 0.5 * s.scale + 1e-6, "value {i}: {x} came back as {back}");
        }
        // Non-negative input: zero point 0, and the maximum maps to 255.
        let relu: Vec<f32> = pattern(40, 2).map(f32::abs).collect();
        let mut q = vec![0; 40];
        let mut s = vec![ActivationScale::default(); 1];
        quantize_activations(&relu, 1, &mut q, &mut s).unwrap();
        assert_eq!(s[0].zero, 0);
        assert_eq!(q.iter().max(), Some(&255));
    }

    // Ragged shapes: channel counts not a multiple of 64 and wider than one pass, odd pixel counts, and
    // input channel counts that are not a multiple of 4; signed and non-negative inputs.
    #[test]
    fn quantized_dense_matches_the_integer_reference_bit_for_bit() {
        let builds = Isa::builds_to_compare("quantized_dense_matches_the_integer_reference_bit_for_bit");
        // Batches of 1 and 2 take the matrix-vector path. On several threads, 200 rows are cut by rows, the
        // others by channels (or not at all: 10 and 64 channels are one block).
        for &(n, cin, cout, signed) in &[
            (1, 33, 1030, false),
            (2, 37, 200, true),
            (3, 70, 10, true),
            (7, 130, 64, false),
            (65, 5, 130, true),
            (200, 20, 70, false),
        ] {
            let input: Vec<f32> = pattern(n * cin, 4).map(|v| if signed { v } else { v.abs() }).collect();
            let mut x = vec![0; input.len()];
            let mut s = vec![ActivationScale::default(); n];
            quantize_activations(&input, n, &mut x, &mut s).unwrap();
            let (lv, sc) = int8_regions(cin, cout, 5);
            let ws: Vec<f32> = sc.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let bias: Vec<f32> = pattern(cout, 6).collect();
            let want = reference_dense(&x, &s, n, cin, &lv, &ws, &bias, cout);
            let bias_bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
            let weights = Values::int8_raw(&lv, &sc, cout);
            let bv = Values::f32_le(&bias_bytes, cout);
            for (&isa, parallel) in builds.iter().flat_map(|isa| parallels().into_iter().map(move |p| (isa, p))) {
                let mut got = vec![f32::NAN; n * cout];
                let mut channels = vec![0.0; channel_scratch_len(cout)];
                dense_quantized(
                    isa,
                    &*parallel,
                    &x,
                    &s,
                    n,
                    cin,
                    &weights,
                    &bv,
                    cout,
                    &mut channels,
                    QuantizedOutput::F32(&mut got),
                )
                .unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let threads = parallel.threads();
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "dense {n}x{cin}->{cout} {isa:?} {threads}: value {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn quantized_conv_matches_the_dequantized_reference_and_every_build_agrees() {
        let builds = Isa::builds_to_compare("quantized_conv_matches_the_dequantized_reference_and_every_build_agrees");
        // On several threads: the 12×12 and 16×16 images are cut by pixels (16×16×1 through gathered
        // patches), 600 channels by channels.
        for &(n, h, w, cin, cout, signed) in &[
            (1, 4, 4, 3, 64, false),
            (2, 5, 3, 7, 70, true),
            (1, 3, 5, 130, 64, false),
            (1, 2, 3, 9, 600, false),
            (1, 12, 12, 9, 70, true),
            (1, 16, 16, 1, 130, false),
        ] {
            let input: Vec<f32> = pattern(n * h * w * cin, 1).map(|v| if signed { v } else { v.abs() }).collect();
            let mut x = vec![0; input.len()];
            let mut s = vec![ActivationScale::default(); n];
            quantize_activations(&input, n, &mut x, &mut s).unwrap();
            let (lv, sc) = int8_regions(9 * cin, cout, 2);
            let ws: Vec<f32> = sc.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let bias: Vec<f32> = pattern(cout, 3).collect();
            // The f32 reference on the dequantized input and weights: the integer path must match it to
            // float rounding.
            let xq: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &q)| (q as i32 - s[i / (h * w * cin)].zero) as f32 * s[i / (h * w * cin)].scale)
                .collect();
            let wq: Vec<f32> = lv.iter().enumerate().map(|(i, &l)| l as i8 as f32 * ws[i % cout]).collect();
            let mut want = vec![0.0; n * h * w * cout];
            conv2d_3x3_same(&xq, n, h, w, cin, &wq, &bias, cout, &mut want).unwrap();
            let bias_bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
            let weights = Values::int8_raw(&lv, &sc, cout);
            let bv = Values::f32_le(&bias_bytes, cout);
            let mut first: Option<Vec<f32>> = None;
            for (&isa, parallel) in builds.iter().flat_map(|isa| parallels().into_iter().map(move |p| (isa, p))) {
                let parallel = &*parallel;
                let mut got = vec![f32::NAN; want.len()];
                let mut channels = vec![0.0; channel_scratch_len(cout)];
                let out = QuantizedOutput::F32(&mut got);
                let conv = conv2d_3x3_same_quantized;
                conv(isa, parallel, &x, &s, n, h, w, cin, &weights, &bv, cout, &mut channels, out).unwrap();
                // 8-bit outputs on a static scale (with a zero point, to test it) are exactly the levels of
                // the f32 outputs.
                let next = ActivationScale { scale: 0.05, zero: 17 };
                let (mut levels, mut accumulators) = (vec![0u8; want.len()], vec![0i32; REQUANTIZED_ACCUMULATORS]);
                let out = QuantizedOutput::Levels { out: &mut levels, scale: next, accumulators: &mut accumulators };
                conv(isa, parallel, &x, &s, n, h, w, cin, &weights, &bv, cout, &mut channels, out).unwrap();
                let what = format!("conv {n}x{h}x{w}x{cin}->{cout} {isa:?} on {} threads", parallel.threads());
                for (i, (&q, &v)) in levels.iter().zip(&got).enumerate() {
                    assert_eq!(q, quantized_level(v, 1.0 / next.scale, next.zero), "{what}: level {i}");
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}: value {i}: {g} vs reference {w}");
                }
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(
                        f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: differs from {:?}",
                        builds[0]
                    ),
                }
            }
        }
    }

    // The AVX-512 requantizer against the scalar one: int4 and int2, every block size it takes and some
    // it hands back, runs that start mid-row and end ragged, zero scales, and channel scales small enough
    // to push the block multiplier to its bound.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vector_requantizer_gives_the_scalar_levels() {
        if !Isa::Avx512Vnni.is_available() {
            std::eprintln!("the_vector_requantizer_gives_the_scalar_levels: skipped, no AVX-512 on this CPU");
            return;
        }
        let mut checked = 0;
        for (dtype, per_byte) in [(DType::Int4, 2), (DType::Int2, 4)] {
            for block in [16usize, 32, 64, 128, 256] {
                for per_row in [1usize, 3, 10] {
                    let (rows, channels) = (5, per_row * block);
                    let count = rows * channels;
                    let data: Vec<u8> = (0..count / per_byte).map(|i| ((i * 97 + 13) % 251) as u8).collect();
                    let scales: Vec<u8> = (0..count / block)
                        .flat_map(|b| {
                            let v = if b % 11 == 4 { 0.0 } else { 0.001 + (b * 7 % 13) as f32 * 0.0005 };
                            half::f16::from_f32(v).to_bits().to_le_bytes()
                        })
                        .collect();
                    let values = Values::blocked_raw(dtype, &data, &scales, channels, block);
                    let mut channel_scales = vec![0.0; channels];
                    values.requantized_scales(&mut channel_scales);
                    for squeeze in [1.0f32, 0.2] {
                        let inverse: Vec<f32> =
                            channel_scales.iter().map(|&s| if s > 0.0 { squeeze.recip() / s } else { 0.0 }).collect();
                        for row in [0, 3] {
                            for (from, len) in [(0, channels), (32, 33), (64, 200), (block, 127), (0, 1), (64, 64)] {
                                if from + len > channels {
                                    continue;
                                }
                                let start = row * channels + from;
                                let (mut want, mut got) = (vec![0i8; len], vec![1i8; len]);
                                values.requantize(start, &inverse[from..from + len], &mut want);
                                // SAFETY: AVX-512 VNNI (with F, BW and VL) detected above.
                                unsafe { x86::requantize_avx512(&values, start, &inverse[from..from + len], &mut got) };
                                assert_eq!(
                                    got, want,
                                    "{dtype:?} block {block}, {channels} channels, from {start} len {len}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 200, "only {checked} runs compared");
    }

    #[test]
    fn requantized_int4_weights_run_close_to_their_dequantized_values() {
        let builds = Isa::builds_to_compare("requantized_int4_weights_run_close_to_their_dequantized_values");
        for n in [1, 3] {
            requantized_int4_case(&builds, n);
        }
    }

    fn requantized_int4_case(builds: &[Isa], n: usize) {
        let (cin, cout, block): (usize, usize, usize) = (37, 96, 32);
        let count = cin * cout;
        let data: Vec<u8> = (0..count.div_ceil(2)).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        let scales: Vec<u8> = (0..count.div_ceil(block))
            .flat_map(|b| half::f16::from_f32(0.02 + (b % 7) as f32 * 0.003).to_bits().to_le_bytes())
            .collect();
        let weights = Values::blocked_raw(DType::Int4, &data, &scales, cout, block);
        let mut wq = vec![0.0; count];
        weights.decode(0, &mut wq);
        let input: Vec<f32> = pattern(n * cin, 9).map(f32::abs).collect();
        let mut x = vec![0; input.len()];
        let mut s = vec![ActivationScale::default(); n];
        quantize_activations(&input, n, &mut x, &mut s).unwrap();
        let xq: Vec<f32> = x.iter().enumerate().map(|(i, &q)| q as f32 * s[i / cin].scale).collect();
        let bias = vec![0.5f32; cout];
        let bias_bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bv = Values::f32_le(&bias_bytes, cout);
        let mut want = vec![0.0; n * cout];
        dense(&xq, n, cin, &wq, &bias, cout, &mut want).unwrap();
        let mut first: Option<Vec<f32>> = None;
        for (&isa, parallel) in builds.iter().flat_map(|isa| parallels().into_iter().map(move |p| (isa, p))) {
            let mut got = vec![0.0; n * cout];
            let mut channels = vec![0.0; channel_scratch_len(cout)];
            let out = QuantizedOutput::F32(&mut got);
            dense_quantized(isa, &*parallel, &x, &s, n, cin, &weights, &bv, cout, &mut channels, out).unwrap();
            // Requantizing to int8 moves each weight by at most 0.52 of an int8 step of its channel.
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let step = channels[i % cout];
                let bound = 0.52 * step * xq[(i / cout) * cin..][..cin].iter().sum::<f32>() + 1e-4;
                assert!((g - w).abs() <= bound, "{isa:?}: value {i}: {g} vs {w} (bound {bound})");
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} differs"),
            }
        }
    }
}

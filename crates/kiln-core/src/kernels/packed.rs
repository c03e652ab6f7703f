//! Conv and dense layers over packed (possibly quantized) weights, read straight from a `.kiln` file.
//!
//! Both are one implicit GEMM: output pixels × (taps · input channels) × output channels. A tile of
//! [`TILE_PIXELS`] pixels × [`TILE_COLS`] output channels accumulates on the stack; each weight row run is
//! decoded once per tile and reused for every pixel in it, so dequantization is fused into the loop and
//! nothing is allocated. Hand-written because this crate is `no_std` without `alloc`.

// The SIMD micro-kernels are `unsafe fn`s: they need CPU features that `dispatch` detects at run time, and
// they read through raw pointers after checking every bound. This module is kiln-core's one exception to
// the workspace's `unsafe_code = "deny"`.
#![allow(unsafe_code)]

use super::{Isa, LengthError, check};
use crate::format::Values;
use crate::network::Window;

/// Output pixels per tile, whose output rows serve as the accumulators while the tile's panels pass.
const TILE_PIXELS: usize = 64;
/// Output channels swept at a time: a pixel's 64 accumulators are four AVX-512 registers.
const TILE_COLS: usize = 64;
/// Decoded weights per panel: 16 KiB, which stays in L1 while every pixel of the tile sweeps it.
const PANEL_VALUES: usize = 4096;
/// Rows per panel when f32 weights are read in place.
const DIRECT_PANEL_ROWS: usize = 64;
/// Output channels per panel row: at most 512, so a panel holds at least 8 rows, and a pixel group's
/// accumulators are loaded and stored once per 8 or more multiply-adds each.
const PANEL_WIDTH: usize = 512;

/// 3x3 convolution, stride 1, SAME padding, plus bias, with weights `[3,3,cin,cout]` and bias `[cout]`
/// given as decoders. `input` `[n,h,w,cin]`, `output` `[n,h,w,cout]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_3x3_same_packed(
    isa: Isa,
    input: &[f32],
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("input", input.len(), n * h * w * cin)?;
    check("output", output.len(), n * h * w * cout)?;
    let source = |pixel: usize, tap: usize| {
        let (image, y, x) = (pixel / (h * w), pixel / w % h, pixel % w);
        // SAME padding: the tap at offset (ky-1, kx-1) reads zero outside the image.
        let iy = (y + tap / 3).checked_sub(1).filter(|&iy| iy < h)?;
        let ix = (x + tap % 3).checked_sub(1).filter(|&ix| ix < w)?;
        Some(((image * h + iy) * w + ix) * cin)
    };
    dispatch(isa, &Gemm { input, pixels: n * h * w, taps: 9, cin, source, weights, bias, cout }, output);
    Ok(())
}

/// Convolution with any window, plus bias, with weights `[kh,kw,cin,cout]` and bias `[cout]` given as
/// decoders. `input` `[n,h,w,cin]`, `output` `[n,oh,ow,cout]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_packed(
    isa: Isa,
    input: &[f32],
    n: usize,
    (h, w, cin): (usize, usize, usize),
    window: &Window,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    let (oh, ow) = window.output(h, w).unwrap_or((0, 0));
    check("input", input.len(), n * h * w * cin)?;
    check("output", output.len(), n * oh * ow * cout)?;
    let kw = window.kw;
    let source = |pixel: usize, tap: usize| {
        let (image, y, x) = (pixel / (oh * ow), pixel / ow % oh, pixel % ow);
        let (iy, ix) = window.source(y, x, tap / kw, tap % kw, h, w)?;
        Some(((image * h + iy) * w + ix) * cin)
    };
    let taps = window.taps();
    dispatch(isa, &Gemm { input, pixels: n * oh * ow, taps, cin, source, weights, bias, cout }, output);
    Ok(())
}

/// Fully connected layer: `output = input × weights + bias`, weights `[cin,cout]` as a decoder.
/// `input` `[n,cin]`, `output` `[n,cout]`.
#[allow(clippy::too_many_arguments)]
pub fn dense_packed(
    isa: Isa,
    input: &[f32],
    n: usize,
    cin: usize,
    weights: &Values<'_>,
    bias: &Values<'_>,
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("input", input.len(), n * cin)?;
    check("output", output.len(), n * cout)?;
    let source = |row: usize, _| Some(row * cin);
    dispatch(isa, &Gemm { input, pixels: n, taps: 1, cin, source, weights, bias, cout }, output);
    Ok(())
}

/// One implicit GEMM: `output[p, o] = bias[o] + Σ_tap Σ_c input[source(p, tap) + c] · weights[(tap·cin + c)·cout + o]`,
/// where a tap whose `source` is `None` reads zeros.
struct Gemm<'a, S> {
    input: &'a [f32],
    pixels: usize,
    taps: usize,
    cin: usize,
    source: S,
    weights: &'a Values<'a>,
    bias: &'a Values<'a>,
    cout: usize,
}

/// Runs [`gemm`] compiled for `isa`, or the portable build if this CPU lacks it.
#[inline]
fn dispatch<S: Fn(usize, usize) -> Option<usize>>(isa: Isa, g: &Gemm<'_, S>, output: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Vnni) && Isa::Avx512.is_available() {
        // SAFETY: `is_available` detected AVX-512F, AVX-512VL, AVX2 and FMA at run time.
        return unsafe { x86::gemm_avx512(g, output) };
    }
    if isa != Isa::Portable && Isa::Avx2Fma.is_available() {
        // SAFETY: the portable loops need no feature beyond what the binary was compiled for.
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
        return unsafe { gemm::<true, 1, S, Portable<true>>(g, output) };
        #[cfg(all(
            feature = "std",
            target_arch = "x86_64",
            not(all(target_feature = "avx2", target_feature = "fma"))
        ))]
        // SAFETY: `Isa::Avx2Fma.is_available()` detected AVX2 and FMA at run time.
        return unsafe { x86::gemm_avx2_fma(g, output) };
    }
    // SAFETY: compiled with simd128 enabled (the cfg), which every wasm host then must have.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return unsafe { gemm::<false, 4, S, wasm::Simd128>(g, output) };
    // SAFETY: the portable loops need no feature beyond what the binary was compiled for.
    #[allow(unreachable_code)]
    unsafe {
        gemm::<false, 1, S, Portable<false>>(g, output)
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
mod x86 {
    use super::*;

    /// The same loops compiled with AVX2 and FMA enabled.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (`Isa::Avx2Fma.is_available()`).
    pub(super) unsafe fn gemm_avx2_fma<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn inner<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
            // SAFETY: the portable loops need only what `inner` is compiled for.
            unsafe { gemm::<true, 1, S, Portable<true>>(g, output) }
        }
        // SAFETY: the only requirement of a `target_feature` function is that the CPU supports the
        // features, which this function's caller guarantees.
        unsafe { inner(g, output) }
    }

    /// With AVX-512's 32 registers, four pixels' accumulators (16 registers) stay in registers together,
    /// so each weight load feeds four multiply-adds.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX-512VL, AVX2 and FMA (`Isa::Avx512.is_available()`).
    pub(super) unsafe fn gemm_avx512<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
        unsafe fn inner<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
            // SAFETY: `inner` runs only with the features `Avx512` needs.
            unsafe { gemm::<true, 4, S, Avx512>(g, output) }
        }
        // SAFETY: as above; the caller guarantees AVX-512F, AVX-512VL, AVX2 and FMA.
        unsafe { inner(g, output) }
    }

    /// Written with intrinsics because the compiler, left to itself, reloads each weight vector once per
    /// pixel (as a memory operand), which makes the loop load-bound; here each of the four weight vectors
    /// of a row is loaded once and feeds `PIX` pixels.
    pub(super) enum Avx512 {}

    impl<const PIX: usize> Micro<PIX> for Avx512 {
        #[inline(always)]
        unsafe fn group(xs: [&[f32]; PIX], panel: Panel<'_>, c: usize, out: &mut [f32], offsets: [usize; PIX]) {
            use core::arch::x86_64::*;
            const LANES: usize = 16;
            const VECS: usize = TILE_COLS / LANES;
            let Panel { values, stride, rows } = panel;
            // Every access below is inside these bounds.
            assert!(rows == 0 || (rows - 1) * stride + c + TILE_COLS <= values.len());
            assert!(xs.iter().all(|x| x.len() >= rows));
            assert!(offsets.iter().all(|&offset| offset + TILE_COLS <= out.len()));
            // Register arrays indexed by constants the compiler unrolls: clearer than iterator chains here.
            #[allow(clippy::needless_range_loop)]
            #[target_feature(enable = "avx512f")]
            unsafe fn sweep<const PIX: usize>(
                xs: &[*const f32; PIX],
                w: *const f32,
                stride: usize,
                rows: usize,
                out: *mut f32,
                offsets: &[usize; PIX],
            ) {
                // SAFETY (every pointer access): the caller checked that row `rows - 1` of the panel has
                // TILE_COLS values from `w`, that every `xs[p]` has `rows` values, and that every pixel's
                // TILE_COLS outputs are inside `out`.
                unsafe {
                    let mut r: [[__m512; VECS]; PIX] = core::array::from_fn(|p| {
                        core::array::from_fn(|v| _mm512_loadu_ps(out.add(offsets[p] + v * LANES)))
                    });
                    for j in 0..rows {
                        let row = w.add(j * stride);
                        let wv: [__m512; VECS] = core::array::from_fn(|v| _mm512_loadu_ps(row.add(v * LANES)));
                        for p in 0..PIX {
                            let x = _mm512_set1_ps(*xs[p].add(j));
                            for v in 0..VECS {
                                r[p][v] = _mm512_fmadd_ps(x, wv[v], r[p][v]);
                            }
                        }
                    }
                    for p in 0..PIX {
                        for v in 0..VECS {
                            _mm512_storeu_ps(out.add(offsets[p] + v * LANES), r[p][v]);
                        }
                    }
                }
            }
            let xs = xs.map(|x| x.as_ptr());
            // SAFETY: bounds checked above; the caller guarantees AVX-512F (the trait's contract).
            unsafe { sweep::<PIX>(&xs, values[c..].as_ptr(), stride, rows, out.as_mut_ptr(), &offsets) }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::*;
    use core::arch::wasm32::*;

    /// wasm SIMD: eight output channels (two vectors) at a time for `PIX` pixels, so the accumulators and
    /// the two weight vectors fit the 16 registers the browser's JIT maps them to on x86-64. Multiply, then
    /// add (wasm has no fused multiply-add), in the portable build's order: the same results.
    pub(super) enum Simd128 {}

    impl<const PIX: usize> Micro<PIX> for Simd128 {
        #[inline(always)]
        unsafe fn group(xs: [&[f32]; PIX], panel: Panel<'_>, c: usize, out: &mut [f32], offsets: [usize; PIX]) {
            let Panel { values, stride, rows } = panel;
            // Every access below is inside these bounds.
            assert!(rows == 0 || (rows - 1) * stride + c + TILE_COLS <= values.len());
            assert!(xs.iter().all(|x| x.len() >= rows));
            assert!(offsets.iter().all(|&offset| offset + TILE_COLS <= out.len()));
            let (w, o) = (values[c..].as_ptr(), out.as_mut_ptr());
            for sub in (0..TILE_COLS).step_by(8) {
                // SAFETY (every pointer access): inside the bounds asserted above; unaligned loads are allowed.
                unsafe {
                    let mut acc: [[v128; 2]; PIX] = core::array::from_fn(|p| {
                        let at = o.add(offsets[p] + sub);
                        [v128_load(at.cast()), v128_load(at.add(4).cast())]
                    });
                    let xp: [*const f32; PIX] = core::array::from_fn(|p| xs[p].as_ptr());
                    let mut row = w.add(sub);
                    for j in 0..rows {
                        let (w0, w1) = (v128_load(row.cast()), v128_load(row.add(4).cast()));
                        for (a, x) in acc.iter_mut().zip(&xp) {
                            let v = v128_load32_splat(x.add(j).cast());
                            a[0] = f32x4_add(a[0], f32x4_mul(v, w0));
                            a[1] = f32x4_add(a[1], f32x4_mul(v, w1));
                        }
                        row = row.add(stride);
                    }
                    for (p, a) in acc.iter().enumerate() {
                        let at = o.add(offsets[p] + sub);
                        v128_store(at.cast(), a[0]);
                        v128_store(at.add(4).cast(), a[1]);
                    }
                }
            }
        }
    }
}

/// Matrix–vector products (a dense layer on fewer than [`GEMV_MAX_ROWS`] rows) stream each weight row
/// once, contiguously, instead of decoding strided panels that only one row would use.
const GEMV_MAX_ROWS: usize = 4;
/// Output values a matrix–vector product accumulates at once: 4 KiB of accumulators in L1.
const GEMV_COLS: usize = 1024;
/// Weight values a matrix–vector product decodes at a time.
const GEMV_RUN: usize = 256;

/// Computes `g` (see [`Gemm`]) into `output` with the loop order that suits its shape.
///
/// # Safety
/// The CPU must have the features micro-kernel `M` is built for (see [`Micro::group`]).
#[inline(always)]
unsafe fn gemm<const FMA: bool, const PIX: usize, S: Fn(usize, usize) -> Option<usize>, M: Micro<PIX> + Micro<1>>(
    g: &Gemm<'_, S>,
    output: &mut [f32],
) {
    if g.taps == 1 && g.pixels < GEMV_MAX_ROWS {
        gemv::<FMA, S>(g, output)
    } else {
        // SAFETY: passed on from this function's caller.
        unsafe { implicit_gemm::<FMA, PIX, S, M>(g, output) }
    }
}

/// Weight rows for a run of output channels: row `j` starts at `values[j * stride]`.
#[derive(Clone, Copy)]
struct Panel<'a> {
    values: &'a [f32],
    stride: usize,
    rows: usize,
}

/// The innermost step, for `PIX` pixels at once: `out[offsets[p]..][..TILE_COLS] += Σ_j xs[p][j] ·
/// (panel row j)[c..][..TILE_COLS]`, the pixels' accumulators held in registers across the panel. The
/// offsets are distinct.
trait Micro<const PIX: usize> {
    /// # Safety
    /// The CPU must have the features this build is compiled for (none for [`Portable`]); the caller
    /// checks them at run time before choosing the build. Lengths are checked inside.
    unsafe fn group(xs: [&[f32]; PIX], panel: Panel<'_>, c: usize, out: &mut [f32], offsets: [usize; PIX]);
}

/// Plain loops the compiler vectorizes for whatever the target has.
enum Portable<const FMA: bool> {}

impl<const PIX: usize, const FMA: bool> Micro<PIX> for Portable<FMA> {
    #[inline(always)]
    unsafe fn group(xs: [&[f32]; PIX], panel: Panel<'_>, c: usize, out: &mut [f32], offsets: [usize; PIX]) {
        let mut r: [[f32; TILE_COLS]; PIX] = core::array::from_fn(|p| *tile(&out[offsets[p]..]));
        for j in 0..panel.rows {
            let w = tile(&panel.values[j * panel.stride + c..]);
            for (rp, xp) in r.iter_mut().zip(&xs) {
                axpy::<FMA, TILE_COLS>(rp, xp[j], w);
            }
        }
        for (&offset, rp) in offsets.iter().zip(&r) {
            out[offset..][..TILE_COLS].copy_from_slice(rp);
        }
    }
}

/// One row at a time: `output[p] = bias + Σ_k input[p,k] · weights[k, ..]`, each weight row decoded in
/// contiguous runs and skipped entirely where the input is zero (ReLU outputs often are).
#[inline(always)]
fn gemv<const FMA: bool, S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
    let Gemm { input, pixels, cin, ref source, weights, bias, cout, .. } = *g;
    let mut acc = [0.0f32; GEMV_COLS];
    let mut run = [0.0f32; GEMV_RUN];
    let direct = weights.as_f32();
    for p in 0..pixels {
        let x = source(p, 0).map(|start| &input[start..start + cin]);
        for c0 in (0..cout).step_by(GEMV_COLS) {
            let cols = GEMV_COLS.min(cout - c0);
            bias.decode(c0, &mut acc[..cols]);
            for (k, &v) in x.into_iter().flatten().enumerate() {
                if v == 0.0 {
                    continue;
                }
                for s0 in (0..cols).step_by(GEMV_RUN) {
                    let len = GEMV_RUN.min(cols - s0);
                    let first = k * cout + c0 + s0;
                    let run: &[f32] = match direct {
                        Some(all) => &all[first..first + len],
                        None => {
                            weights.decode(first, &mut run[..len]);
                            &run[..len]
                        }
                    };
                    let out = &mut acc[s0..s0 + len];
                    if let (Ok(out), Ok(run)) =
                        (<&mut [f32; GEMV_RUN]>::try_from(&mut *out), <&[f32; GEMV_RUN]>::try_from(run))
                    {
                        axpy::<FMA, GEMV_RUN>(out, v, run);
                    } else {
                        for (a, &w) in out.iter_mut().zip(run) {
                            *a = if FMA { fused(v, w, *a) } else { *a + v * w };
                        }
                    }
                }
            }
            output[p * cout + c0..][..cols].copy_from_slice(&acc[..cols]);
        }
    }
}

/// The tiled implicit GEMM. Weight rows `(tap, k)` are consecutive in the file (HWIO), so a panel of
/// [`PANEL_VALUES`] / `width` whole rows is one contiguous run: decoded in one sequential pass the
/// prefetcher can follow, then swept [`TILE_COLS`] channels at a time by every `PIX`-pixel group of the
/// tile, whose accumulators (the output rows themselves) stay in registers across the panel.
/// `FMA` fuses each multiply-add (only worth it where the CPU has FMA instructions; elsewhere `mul_add`
/// would be a slow library call).
///
/// # Safety
/// The CPU must have the features micro-kernel `M` is built for (see [`Micro::group`]).
#[inline(always)]
unsafe fn implicit_gemm<
    const FMA: bool,
    const PIX: usize,
    S: Fn(usize, usize) -> Option<usize>,
    M: Micro<PIX> + Micro<1>,
>(
    g: &Gemm<'_, S>,
    output: &mut [f32],
) {
    let Gemm { input, pixels, taps, cin, ref source, weights, bias, cout } = *g;
    let mut panel = [0.0f32; PANEL_VALUES];
    let direct = weights.as_f32();
    for w0 in (0..cout).step_by(PANEL_WIDTH) {
        let width = PANEL_WIDTH.min(cout - w0);
        // Weights read in place need no buffer, so their panels can be deeper: fewer accumulator loads
        // and stores per multiply-add.
        let panel_rows = if direct.is_some() { DIRECT_PANEL_ROWS } else { PANEL_VALUES / width }.min(cin);
        for p0 in (0..pixels).step_by(TILE_PIXELS) {
            let rows = TILE_PIXELS.min(pixels - p0);
            for p in p0..p0 + rows {
                bias.decode(w0, &mut output[p * cout + w0..][..width]);
            }
            for tap in 0..taps {
                // The tile's pixels whose tap lands inside the image, as (pixel in tile, input offset):
                // grouping only these wastes no multiply-adds on padding.
                let mut valid = [(0, 0); TILE_PIXELS];
                let mut count = 0;
                for t in 0..rows {
                    if let Some(start) = source(p0 + t, tap) {
                        valid[count] = (t, start);
                        count += 1;
                    }
                }
                let valid = &valid[..count];
                if valid.is_empty() {
                    continue;
                }
                for k0 in (0..cin).step_by(panel_rows) {
                    let kn = panel_rows.min(cin - k0);
                    let first = (tap * cin + k0) * cout + w0;
                    let rows_span = (kn - 1) * cout + width;
                    let panel = match direct {
                        // f32 weights are read in place: no copy.
                        Some(all) => Panel { values: &all[first..first + rows_span], stride: cout, rows: kn },
                        // Row by row, though the rows are contiguous: a run inside one row is what the
                        // decoders' fast paths expect (int8's scales are per output channel).
                        None => {
                            for (j, run) in panel[..kn * width].chunks_exact_mut(width).enumerate() {
                                weights.decode(first + j * cout, run);
                            }
                            Panel { values: &panel[..kn * width], stride: width, rows: kn }
                        }
                    };
                    let x_of = |start: usize| &input[start + k0..start + k0 + kn];
                    for c in (0..width).step_by(TILE_COLS) {
                        let cols = TILE_COLS.min(width - c);
                        let at = |t: usize| (p0 + t) * cout + w0 + c;
                        if cols == TILE_COLS {
                            // PIX pixels share each weight load. No branch on zero inputs: at ReLU's typical
                            // sparsity the mispredictions cost more than the skipped work.
                            let mut groups = valid.chunks_exact(PIX);
                            for group in &mut groups {
                                let xs = core::array::from_fn(|q| x_of(group[q].1));
                                let offsets = core::array::from_fn(|q| at(group[q].0));
                                // SAFETY: this function's caller vouches for M's CPU features.
                                unsafe { <M as Micro<PIX>>::group(xs, panel, c, output, offsets) };
                            }
                            for &(t, start) in groups.remainder() {
                                // SAFETY: as above.
                                unsafe { <M as Micro<1>>::group([x_of(start)], panel, c, output, [at(t)]) };
                            }
                        } else {
                            for &(t, start) in valid {
                                let out = &mut output[at(t)..][..cols];
                                for (j, &v) in x_of(start).iter().enumerate() {
                                    let w = &panel.values[j * panel.stride + c..][..cols];
                                    for (a, &wt) in out.iter_mut().zip(w) {
                                        *a = if FMA { fused(v, wt, *a) } else { *a + v * wt };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The first [`TILE_COLS`] values of `values` as an array.
#[inline(always)]
fn tile(values: &[f32]) -> &[f32; TILE_COLS] {
    values[..TILE_COLS].try_into().expect("a slice of TILE_COLS values")
}

/// `acc += v · w` over `N` values.
#[inline(always)]
fn axpy<const FMA: bool, const N: usize>(acc: &mut [f32; N], v: f32, w: &[f32; N]) {
    for (a, &wt) in acc.iter_mut().zip(w) {
        *a = if FMA { fused(v, wt, *a) } else { *a + v * wt };
    }
}

/// `v · w + a` in one rounding. `core` has no `mul_add`, so without `std` this is two roundings (and the
/// compiler may still fuse nothing: Rust never contracts floating-point operations on its own).
#[inline(always)]
fn fused(v: f32, w: f32, a: f32) -> f32 {
    #[cfg(feature = "std")]
    return v.mul_add(w, a);
    #[cfg(not(feature = "std"))]
    return a + v * w;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::{conv2d_3x3_same, dense};
    use std::{format, vec, vec::Vec};

    /// Deterministic values in [-1, 1), about a third of them zero (like ReLU outputs).
    fn pattern(len: usize, seed: usize) -> impl Iterator<Item = f32> {
        (0..len).map(move |i| {
            let v = ((i * 7919 + seed * 104_729) % 1009) as f32 / 504.5 - 1.0;
            if i % 3 == 0 { 0.0 } else { v }
        })
    }

    /// The values' little-endian bytes, starting `offset` bytes into the returned buffer (so an odd
    /// offset makes them unreadable in place, and the decoding path runs instead).
    fn le_bytes(values: &[f32], offset: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; offset];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        bytes
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}: value {i}: {g} vs reference {w}");
        }
    }

    // Shapes chosen to leave every tile ragged: channel counts that are not multiples of 64 and wider
    // than a panel, pixel counts that are not multiples of 4, and more input channels than panel rows.
    #[test]
    fn packed_conv_matches_the_reference_on_ragged_shapes() {
        let builds = Isa::builds_to_compare("packed_conv_matches_the_reference_on_ragged_shapes");
        for &(n, h, w, cin, cout) in &[(1, 4, 4, 3, 64), (2, 5, 3, 7, 70), (1, 3, 5, 130, 64), (1, 2, 3, 9, 600)] {
            let input: Vec<f32> = pattern(n * h * w * cin, 1).collect();
            let weights: Vec<f32> = pattern(9 * cin * cout, 2).collect();
            let bias: Vec<f32> = pattern(cout, 3).collect();
            let mut want = vec![0.0; n * h * w * cout];
            conv2d_3x3_same(&input, n, h, w, cin, &weights, &bias, cout, &mut want).unwrap();
            for &isa in &builds {
                for offset in [0, 1] {
                    let (wb, bb) = (le_bytes(&weights, offset), le_bytes(&bias, offset));
                    let (wv, bv) = (Values::f32_le(&wb[offset..], cout), Values::f32_le(&bb[offset..], cout));
                    assert_eq!(wv.as_f32().is_some(), offset == 0 && cfg!(target_endian = "little"));
                    let mut got = vec![f32::NAN; want.len()];
                    conv2d_3x3_same_packed(isa, &input, n, h, w, cin, &wv, &bv, cout, &mut got).unwrap();
                    assert_close(&got, &want, &format!("conv {n}x{h}x{w}x{cin}->{cout} {isa:?} offset {offset}"));
                }
            }
        }
    }

    #[test]
    fn packed_dense_matches_the_reference_on_ragged_shapes() {
        let builds = Isa::builds_to_compare("packed_dense_matches_the_reference_on_ragged_shapes");
        // Batch 1 and 3 take the matrix-vector path, 5 and 9 the tiled one.
        for &(n, cin, cout) in &[(1, 33, 1030), (3, 70, 10), (5, 33, 1030), (9, 130, 64)] {
            let input: Vec<f32> = pattern(n * cin, 4).collect();
            let weights: Vec<f32> = pattern(cin * cout, 5).collect();
            let bias: Vec<f32> = pattern(cout, 6).collect();
            let mut want = vec![0.0; n * cout];
            dense(&input, n, cin, &weights, &bias, cout, &mut want).unwrap();
            for &isa in &builds {
                for offset in [0, 1] {
                    let (wb, bb) = (le_bytes(&weights, offset), le_bytes(&bias, offset));
                    let (wv, bv) = (Values::f32_le(&wb[offset..], cout), Values::f32_le(&bb[offset..], cout));
                    let mut got = vec![f32::NAN; want.len()];
                    dense_packed(isa, &input, n, cin, &wv, &bv, cout, &mut got).unwrap();
                    assert_close(&got, &want, &format!("dense {n}x{cin}->{cout} {isa:?} offset {offset}"));
                }
            }
        }
    }
}

//! Conv and dense layers over packed (possibly quantized) weights, read straight from a `.kiln` file.
//!
//! Both are one implicit GEMM: output pixels × (taps · input channels) × output channels. A tile of
//! [`TILE_PIXELS`] pixels × [`TILE_COLS`] output channels accumulates on the stack; each weight row run is
//! decoded once per tile and reused for every pixel in it, so dequantization is fused into the loop and
//! nothing is allocated. Hand-written because this crate is `no_std` without `alloc`.

use super::{Isa, LengthError, check};
use crate::format::Values;

/// Output pixels per tile: enough reuse of each decoded weight run to hide the decoding.
const TILE_PIXELS: usize = 64;
/// Output channels per tile: 32 × 64 accumulators (8 KiB) stay in L1.
const TILE_COLS: usize = 64;
/// Weight rows decoded at a time: a 16 KiB panel (64 rows × 64 channels) that stays in L1.
const PANEL_ROWS: usize = 64;

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

/// Runs [`implicit_gemm`] compiled for `isa`, or the portable build if this CPU lacks it.
#[inline]
fn dispatch<S: Fn(usize, usize) -> Option<usize>>(isa: Isa, g: &Gemm<'_, S>, output: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
    if isa == Isa::Avx512 && isa.is_available() {
        return x86::implicit_gemm_avx512(g, output);
    }
    if matches!(isa, Isa::Avx2Fma | Isa::Avx512) && Isa::Avx2Fma.is_available() {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
        return implicit_gemm::<true, 1, S>(g, output);
        #[cfg(all(
            feature = "std",
            target_arch = "x86_64",
            not(all(target_feature = "avx2", target_feature = "fma"))
        ))]
        return x86::implicit_gemm_avx2_fma(g, output);
    }
    #[allow(unreachable_code)]
    implicit_gemm::<false, 1, S>(g, output)
}

#[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
#[allow(unsafe_code)]
mod x86 {
    use super::*;

    /// The same loops compiled with AVX2 and FMA enabled.
    pub(super) fn implicit_gemm_avx2_fma<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
        #[target_feature(enable = "avx2,fma")]
        fn inner<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
            implicit_gemm::<true, 1, S>(g, output)
        }
        // SAFETY: the only requirement of a `target_feature` function is that the CPU supports the
        // features, and the caller checked both with `is_x86_feature_detected!`.
        unsafe { inner(g, output) }
    }

    /// With AVX-512's 32 registers, four pixels' rows (16 registers) stay in registers together, so each
    /// weight load feeds four multiply-adds.
    pub(super) fn implicit_gemm_avx512<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
        fn inner<S: Fn(usize, usize) -> Option<usize>>(g: &Gemm<'_, S>, output: &mut [f32]) {
            implicit_gemm::<true, 4, S>(g, output)
        }
        // SAFETY: as above; the caller checked AVX-512F, AVX-512VL, AVX2 and FMA at run time.
        unsafe { inner(g, output) }
    }
}

/// Computes `g` (see [`Gemm`]) into `output`. `FMA` fuses each multiply-add (only worth it where the CPU
/// has FMA instructions; elsewhere `mul_add` would be a slow library call); `PIX` pixels share each weight
/// load where their rows fit in registers together.
#[inline(always)]
fn implicit_gemm<const FMA: bool, const PIX: usize, S: Fn(usize, usize) -> Option<usize>>(
    g: &Gemm<'_, S>,
    output: &mut [f32],
) {
    let Gemm { input, pixels, taps, cin, ref source, weights, bias, cout } = *g;
    let mut bias_run = [0.0f32; TILE_COLS];
    // Weight rows decoded once per tile, then swept once per pixel with that pixel's accumulators held in
    // registers (a load per multiply-add, no store), instead of a load and a store per multiply-add.
    let mut panel = [[0.0f32; TILE_COLS]; PANEL_ROWS];
    let mut acc = [[0.0f32; TILE_COLS]; TILE_PIXELS];
    for c0 in (0..cout).step_by(TILE_COLS) {
        let cols = TILE_COLS.min(cout - c0);
        bias.decode(c0, &mut bias_run[..cols]);
        for p0 in (0..pixels).step_by(TILE_PIXELS) {
            let rows = TILE_PIXELS.min(pixels - p0);
            for row in &mut acc[..rows] {
                row[..cols].copy_from_slice(&bias_run[..cols]);
            }
            for tap in 0..taps {
                let mut starts = [None; TILE_PIXELS];
                for (t, start) in starts[..rows].iter_mut().enumerate() {
                    *start = source(p0 + t, tap);
                }
                if starts[..rows].iter().all(Option::is_none) {
                    continue;
                }
                for k0 in (0..cin).step_by(PANEL_ROWS) {
                    let kn = PANEL_ROWS.min(cin - k0);
                    for (j, run) in panel[..kn].iter_mut().enumerate() {
                        weights.decode((tap * cin + k0 + j) * cout + c0, &mut run[..cols]);
                    }
                    let mut t = 0;
                    while t < rows {
                        // PIX pixels at once share each weight load, when all of them read real input.
                        let group = PIX > 1
                            && cols == TILE_COLS
                            && t + PIX <= rows
                            && starts[t..t + PIX].iter().all(Option::is_some);
                        if group {
                            let xs: [&[f32]; PIX] = core::array::from_fn(|p| {
                                let start = starts[t + p].unwrap_or(0);
                                &input[start + k0..start + k0 + kn]
                            });
                            let mut r: [[f32; TILE_COLS]; PIX] = core::array::from_fn(|p| acc[t + p]);
                            for (j, w) in panel[..kn].iter().enumerate() {
                                let v: [f32; PIX] = core::array::from_fn(|p| xs[p][j]);
                                if v.iter().all(|&x| x == 0.0) {
                                    continue;
                                }
                                for (rp, &vp) in r.iter_mut().zip(&v) {
                                    axpy::<FMA, TILE_COLS>(rp, vp, w);
                                }
                            }
                            acc[t..t + PIX].copy_from_slice(&r);
                            t += PIX;
                            continue;
                        }
                        let (row, start) = (&mut acc[t], starts[t]);
                        t += 1;
                        let Some(start) = start else { continue };
                        let x = &input[start + k0..start + k0 + kn];
                        if cols == TILE_COLS {
                            // A fixed length lets the compiler keep the row in registers across the sweep.
                            let mut r = *row;
                            for (&v, w) in x.iter().zip(&panel[..kn]) {
                                // ReLU outputs are mostly zero: skipping them changes no sum.
                                if v != 0.0 {
                                    axpy::<FMA, TILE_COLS>(&mut r, v, w);
                                }
                            }
                            *row = r;
                        } else {
                            for (&v, w) in x.iter().zip(&panel[..kn]) {
                                if v != 0.0 {
                                    for (a, &wt) in row[..cols].iter_mut().zip(&w[..cols]) {
                                        *a = if FMA { fused(v, wt, *a) } else { *a + v * wt };
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (t, row) in acc[..rows].iter().enumerate() {
                output[(p0 + t) * cout + c0..][..cols].copy_from_slice(&row[..cols]);
            }
        }
    }
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

//! Reference kernels for the layers past the series' own: convs and pools with any [`Window`], global
//! average pooling, the element-wise activations and the per-channel scale-and-shift. Plain loops in the
//! order a reader checks them by hand; the packed and GPU paths are tested against these.

use super::{LengthError, check};
use crate::format::Values;
use crate::network::{Activation, PoolKind, Window};

/// Convolution with any window, plus bias.
///
/// - `input`:   `[n, h, w, cin]`
/// - `weights`: `[kh, kw, cin, cout]` (HWIO)
/// - `bias`:    `[cout]`
/// - `output`:  `[n, oh, ow, cout]`, `(oh, ow) = window.output(h, w)`
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    input: &[f32],
    n: usize,
    (h, w, cin): (usize, usize, usize),
    window: &Window,
    weights: &[f32],
    bias: &[f32],
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    let (oh, ow) = window.output(h, w).unwrap_or((0, 0));
    check("input", input.len(), n * h * w * cin)?;
    check("weights", weights.len(), window.taps() * cin * cout)?;
    check("bias", bias.len(), cout)?;
    check("output", output.len(), n * oh * ow * cout)?;
    for b in 0..n {
        for y in 0..oh {
            for x in 0..ow {
                let out = &mut output[((b * oh + y) * ow + x) * cout..][..cout];
                out.copy_from_slice(bias);
                for ky in 0..window.kh {
                    for kx in 0..window.kw {
                        // Taps in the padding read zero.
                        let Some((iy, ix)) = window.source(y, x, ky, kx, h, w) else { continue };
                        let pixel = &input[((b * h + iy) * w + ix) * cin..][..cin];
                        let taps = &weights[(ky * window.kw + kx) * cin * cout..][..cin * cout];
                        for (ci, &v) in pixel.iter().enumerate() {
                            for (o, &wt) in out.iter_mut().zip(&taps[ci * cout..][..cout]) {
                                *o += v * wt;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Max or average pooling with any window.
///
/// - `input`:  `[n, h, w, c]`
/// - `output`: `[n, oh, ow, c]`
///
/// Max pooling skips the padding; average pooling divides by the pixels inside the image, or by the whole
/// window with [`PoolKind::Avg`]`{ count_pad: true }`.
pub fn pool(
    input: &[f32],
    n: usize,
    (h, w, c): (usize, usize, usize),
    kind: PoolKind,
    window: &Window,
    output: &mut [f32],
) -> Result<(), LengthError> {
    let (oh, ow) = window.output(h, w).unwrap_or((0, 0));
    check("input", input.len(), n * h * w * c)?;
    check("output", output.len(), n * oh * ow * c)?;
    for b in 0..n {
        for y in 0..oh {
            for x in 0..ow {
                let out = &mut output[((b * oh + y) * ow + x) * c..][..c];
                out.fill(if kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 });
                let mut inside = 0usize;
                for ky in 0..window.kh {
                    for kx in 0..window.kw {
                        let Some((iy, ix)) = window.source(y, x, ky, kx, h, w) else { continue };
                        inside += 1;
                        let pixel = &input[((b * h + iy) * w + ix) * c..][..c];
                        for (o, &v) in out.iter_mut().zip(pixel) {
                            *o = if kind == PoolKind::Max { o.max(v) } else { *o + v };
                        }
                    }
                }
                if let PoolKind::Avg { count_pad } = kind {
                    let count = if count_pad { pad_count(window, y, x, h, w) } else { inside };
                    let inverse = 1.0 / count as f32;
                    out.iter_mut().for_each(|o| *o *= inverse);
                }
            }
        }
    }
    Ok(())
}

/// The divisor of an average with padding counted: the window's taps inside the padded input (ONNX's
/// `count_include_pad`: taps past the padding, which floor division never reaches, do not exist).
pub fn pad_count(window: &Window, y: usize, x: usize, h: usize, w: usize) -> usize {
    let (ph, pw) = (h + window.top + window.bottom, w + window.left + window.right);
    let rows = (y * window.sh + window.kh).min(ph) - y * window.sh;
    let cols = (x * window.sw + window.kw).min(pw) - x * window.sw;
    rows * cols
}

/// The mean of each channel over the image.
///
/// - `input`:  `[n, h, w, c]`
/// - `output`: `[n, c]`
pub fn global_avg_pool(
    input: &[f32],
    n: usize,
    (h, w, c): (usize, usize, usize),
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("input", input.len(), n * h * w * c)?;
    check("output", output.len(), n * c)?;
    let inverse = 1.0 / (h * w) as f32;
    for (image, out) in input.chunks_exact(h * w * c).zip(output.chunks_exact_mut(c)) {
        out.fill(0.0);
        for pixel in image.chunks_exact(c) {
            for (o, &v) in out.iter_mut().zip(pixel) {
                *o += v;
            }
        }
        out.iter_mut().for_each(|o| *o *= inverse);
    }
    Ok(())
}

/// An element-wise activation, in place (`values` any shape).
pub fn activation_in_place(activation: Activation, values: &mut [f32]) {
    for v in values {
        *v = activation.apply(*v);
    }
}

/// `output = input * scale[c] + shift[c]` per channel; `input` and `output` are `[pixels, c]`.
pub fn scale_shift(input: &[f32], scale: &[f32], shift: &[f32], output: &mut [f32]) -> Result<(), LengthError> {
    let c = scale.len();
    check("shift", shift.len(), c)?;
    check("output", output.len(), input.len())?;
    if c == 0 || !input.len().is_multiple_of(c) {
        return Err(LengthError { what: "input", expected: input.len().next_multiple_of(c.max(1)), got: input.len() });
    }
    for (x, y) in input.chunks_exact(c).zip(output.chunks_exact_mut(c)) {
        for ((y, &x), (&s, &t)) in y.iter_mut().zip(x).zip(scale.iter().zip(shift)) {
            *y = x * s + t;
        }
    }
    Ok(())
}

/// [`scale_shift`] with the scale and shift as stored in a file (which need not be 4-byte aligned),
/// decoded 64 channels at a time onto the stack. `input` and `output` are `[pixels, c]`.
pub fn scale_shift_packed(
    input: &[f32],
    c: usize,
    scale: &Values<'_>,
    shift: &Values<'_>,
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("output", output.len(), input.len())?;
    if c == 0 || !input.len().is_multiple_of(c) {
        return Err(LengthError { what: "input", expected: input.len().next_multiple_of(c.max(1)), got: input.len() });
    }
    const CHUNK: usize = 64;
    let (mut s, mut t) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
    for c0 in (0..c).step_by(CHUNK) {
        let width = CHUNK.min(c - c0);
        scale.decode(c0, &mut s[..width]);
        shift.decode(c0, &mut t[..width]);
        for (x, y) in input.chunks_exact(c).zip(output.chunks_exact_mut(c)) {
            for j in 0..width {
                y[c0 + j] = x[c0 + j] * s[j] + t[j];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Scalar;

    #[test]
    fn conv_3x3_same_window_matches_the_series_kernel() {
        let input: [f32; 2 * 5 * 4 * 3] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let weights: [f32; 9 * 3 * 2] = core::array::from_fn(|i| (i as f32 * 0.11).cos());
        let bias = [0.25, -0.5];
        let (mut a, mut b) = ([0.0; 2 * 5 * 4 * 2], [0.0; 2 * 5 * 4 * 2]);
        conv2d(&input, 2, (5, 4, 3), &Window::SAME_3X3, &weights, &bias, 2, &mut a).unwrap();
        super::super::conv2d_3x3_same(&input, 2, 5, 4, 3, &weights, &bias, 2, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn strided_valid_conv_known_answer() {
        // 4x4 image 0..15, 2x2 kernel of ones, stride 2: each output sums one 2x2 block.
        let input: [f32; 16] = core::array::from_fn(|i| i as f32);
        let mut out = [0.0; 4];
        conv2d(&input, 1, (4, 4, 1), &Window::valid(2, 2, 2), &[1.0; 4], &[0.0], 1, &mut out).unwrap();
        assert_eq!(out, [10.0, 18.0, 42.0, 50.0]);
    }

    #[test]
    fn average_pool_with_and_without_the_padding() {
        // 2x2 image, 2x2 window, stride 1, padding 1 on the top and left: corner windows hold one pixel.
        let window = Window { kh: 2, kw: 2, sh: 1, sw: 1, top: 1, bottom: 0, left: 1, right: 0 };
        let input = [4.0, 8.0, 12.0, 16.0];
        let mut out = [0.0; 4];
        pool(&input, 1, (2, 2, 1), PoolKind::Avg { count_pad: false }, &window, &mut out).unwrap();
        assert_eq!(out, [4.0, 6.0, 8.0, 10.0]);
        pool(&input, 1, (2, 2, 1), PoolKind::Avg { count_pad: true }, &window, &mut out).unwrap();
        assert_eq!(out, [1.0, 3.0, 4.0, 10.0]);
        pool(&input, 1, (2, 2, 1), PoolKind::Max, &window, &mut out).unwrap();
        assert_eq!(out, [4.0, 8.0, 12.0, 16.0]);
    }

    #[test]
    fn global_average_and_activations() {
        let mut out = [0.0; 2];
        global_avg_pool(&[1.0, 10.0, 3.0, 20.0], 1, (1, 2, 2), &mut out).unwrap();
        assert_eq!(out, [2.0, 15.0]);
        let mut v = [-2.0, 0.5, 7.0];
        activation_in_place(Activation::relu6(), &mut v);
        assert_eq!(v, [0.0, 0.5, 6.0]);
        let mut v = [-2.0, 3.0];
        activation_in_place(Activation::LeakyRelu { alpha: Scalar::new(0.25) }, &mut v);
        assert_eq!(v, [-0.5, 3.0]);
        let mut v = [0.0, 1e-6, -20.0];
        activation_in_place(Activation::Tanh, &mut v);
        assert_eq!(v[0], 0.0);
        assert!((v[1] - 1e-6).abs() < 1e-12 && v[2] == -1.0);
        let mut v = [0.0, 30.0, -30.0];
        activation_in_place(Activation::Sigmoid, &mut v);
        assert!(v[0] == 0.5 && v[1] == 1.0 && v[2] > 0.0 && v[2] < 1e-12);
        let mut y = [0.0; 4];
        scale_shift(&[1.0, 2.0, 3.0, 4.0], &[2.0, -1.0], &[0.5, 0.0], &mut y).unwrap();
        assert_eq!(y, [2.5, -2.0, 6.5, -4.0]);
    }
}

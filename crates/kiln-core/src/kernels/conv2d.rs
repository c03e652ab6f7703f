use super::{LengthError, check};

/// 3x3 convolution, stride 1, SAME padding (one zero pixel on each side), plus bias.
///
/// - `input`:   `[n, h, w, cin]`
/// - `weights`: `[3, 3, cin, cout]` (HWIO)
/// - `bias`:    `[cout]`
/// - `output`:  `[n, h, w, cout]`
#[allow(clippy::too_many_arguments)]
pub fn conv2d_3x3_same(
    input: &[f32],
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    weights: &[f32],
    bias: &[f32],
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("input", input.len(), n * h * w * cin)?;
    check("weights", weights.len(), 9 * cin * cout)?;
    check("bias", bias.len(), cout)?;
    check("output", output.len(), n * h * w * cout)?;
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                let out = &mut output[((b * h + y) * w + x) * cout..][..cout];
                out.copy_from_slice(bias);
                for ky in 0..3 {
                    // SAME padding: the tap at offset (ky-1, kx-1) reads zero outside the image.
                    let Some(iy) = (y + ky).checked_sub(1).filter(|&iy| iy < h) else { continue };
                    for kx in 0..3 {
                        let Some(ix) = (x + kx).checked_sub(1).filter(|&ix| ix < w) else { continue };
                        let pixel = &input[((b * h + iy) * w + ix) * cin..][..cin];
                        let taps = &weights[(ky * 3 + kx) * cin * cout..][..cin * cout];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_single_channel() {
        // 3x3 image 1..9, all-ones kernel, bias 0.5: each output is the sum of its SAME neighbourhood.
        let input = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let weights = [1.0; 9];
        let mut out = [0.0; 9];
        conv2d_3x3_same(&input, 1, 3, 3, 1, &weights, &[0.5], 1, &mut out).unwrap();
        let want = [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0].map(|v: f32| v + 0.5);
        assert_eq!(out, want);
    }

    #[test]
    fn kernel_orientation_is_hwio() {
        // Only the top-left tap (ky=0, kx=0) is set: output(y,x) = input(y-1, x-1).
        let input = [1.0, 2.0, 3.0, 4.0];
        let mut weights = [0.0; 9];
        weights[0] = 1.0;
        let mut out = [0.0; 4];
        conv2d_3x3_same(&input, 1, 2, 2, 1, &weights, &[0.0], 1, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut out = [0.0; 4];
        let err = conv2d_3x3_same(&[0.0; 3], 1, 2, 2, 1, &[0.0; 9], &[0.0], 1, &mut out).unwrap_err();
        assert_eq!(err, LengthError { what: "input", expected: 4, got: 3 });
    }
}

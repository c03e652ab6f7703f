use super::{LengthError, check};

/// Zero padding around each image.
///
/// - `input`:  `[n, h, w, c]`
/// - `output`: `[n, top+h+bottom, left+w+right, c]`
#[allow(clippy::too_many_arguments)]
pub fn pad(
    input: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    (top, bottom, left, right): (usize, usize, usize, usize),
    output: &mut [f32],
) -> Result<(), LengthError> {
    pad_with(input, n, h, w, c, (top, bottom, left, right), 0.0, output)
}

/// [`pad`] with `fill` around each image: the integer path pads 8-bit levels with the zero point.
#[allow(clippy::too_many_arguments)]
pub fn pad_with<T: Copy>(
    input: &[T],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    (top, bottom, left, right): (usize, usize, usize, usize),
    fill: T,
    output: &mut [T],
) -> Result<(), LengthError> {
    let (oh, ow) = (top + h + bottom, left + w + right);
    check("input", input.len(), n * h * w * c)?;
    check("output", output.len(), n * oh * ow * c)?;
    output.fill(fill);
    for b in 0..n {
        for y in 0..h {
            let src = &input[(b * h + y) * w * c..][..w * c];
            output[((b * oh + top + y) * ow + left) * c..][..w * c].copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_padding() {
        let mut out = [9.0; 16];
        pad(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, 1, (1, 1, 1, 1), &mut out).unwrap();
        #[rustfmt::skip]
        let want = [0.0, 0.0, 0.0, 0.0,
                    0.0, 1.0, 2.0, 0.0,
                    0.0, 3.0, 4.0, 0.0,
                    0.0, 0.0, 0.0, 0.0];
        assert_eq!(out, want);
        let mut levels = [0u8; 6];
        pad_with(&[1u8, 2], 1, 1, 2, 1, (0, 1, 1, 0), 9, &mut levels).unwrap();
        assert_eq!(levels, [9, 1, 2, 9, 9, 9]);
    }
}

use super::{LengthError, check};

/// What max pooling runs on: f32 activations, and the integer path's 8-bit levels (quantization is
/// monotone, so the max of the levels is the level of the max).
pub trait Poolable: Copy {
    fn max(self, other: Self) -> Self;
}

impl Poolable for f32 {
    #[inline(always)]
    fn max(self, other: f32) -> f32 {
        super::max_f32(self, other)
    }
}

impl Poolable for u8 {
    #[inline(always)]
    fn max(self, other: u8) -> u8 {
        Ord::max(self, other)
    }
}

/// 2x2 max pooling, stride 2. `h` and `w` must be even (shape inference guarantees it).
///
/// - `input`:  `[n, h, w, c]`
/// - `output`: `[n, h/2, w/2, c]`
pub fn maxpool_2x2<T: Poolable>(
    input: &[T],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    output: &mut [T],
) -> Result<(), LengthError> {
    check("input", input.len(), n * h * w * c)?;
    check("output", output.len(), n * (h / 2) * (w / 2) * c)?;
    let (oh, ow) = (h / 2, w / 2);
    for b in 0..n {
        for y in 0..oh {
            for x in 0..ow {
                let out = &mut output[((b * oh + y) * ow + x) * c..][..c];
                let at = |dy: usize, dx: usize| &input[((b * h + 2 * y + dy) * w + 2 * x + dx) * c..][..c];
                let (p00, p01, p10, p11) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                for ch in 0..c {
                    out[ch] = p00[ch].max(p01[ch]).max(p10[ch]).max(p11[ch]);
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
    fn known_answer() {
        // One 4x2 single-channel image: two pooling windows.
        let input = [1.0, 5.0, 3.0, 2.0, -1.0, -2.0, -4.0, -3.0];
        let mut out = [0.0; 2];
        maxpool_2x2(&input, 1, 4, 2, 1, &mut out).unwrap();
        assert_eq!(out, [5.0, -1.0]);
        let mut levels = [0u8; 2];
        maxpool_2x2(&[1u8, 5, 3, 2, 200, 7, 0, 9], 1, 4, 2, 1, &mut levels).unwrap();
        assert_eq!(levels, [5, 200]);
    }
}

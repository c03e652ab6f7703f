use super::{LengthError, check};

/// 2x2 max pooling, stride 2. `h` and `w` must be even (shape inference guarantees it).
///
/// - `input`:  `[n, h, w, c]`
/// - `output`: `[n, h/2, w/2, c]`
pub fn maxpool_2x2(
    input: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    output: &mut [f32],
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
    }
}

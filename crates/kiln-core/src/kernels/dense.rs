use super::{LengthError, check};

/// Fully connected layer: `output = input × weights + bias`.
///
/// - `input`:   `[n, cin]`
/// - `weights`: `[cin, cout]`
/// - `bias`:    `[cout]`
/// - `output`:  `[n, cout]`
pub fn dense(
    input: &[f32],
    n: usize,
    cin: usize,
    weights: &[f32],
    bias: &[f32],
    cout: usize,
    output: &mut [f32],
) -> Result<(), LengthError> {
    check("input", input.len(), n * cin)?;
    check("weights", weights.len(), cin * cout)?;
    check("bias", bias.len(), cout)?;
    check("output", output.len(), n * cout)?;
    for (row, out) in input.chunks_exact(cin).zip(output.chunks_exact_mut(cout)) {
        out.copy_from_slice(bias);
        for (&v, wrow) in row.iter().zip(weights.chunks_exact(cout)) {
            for (o, &wt) in out.iter_mut().zip(wrow) {
                *o += v * wt;
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
        // [1 2] x [[1 2 3] [4 5 6]] + [0.5 0 -1] = [9.5 12 14]
        let mut out = [0.0; 3];
        dense(&[1.0, 2.0], 1, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.5, 0.0, -1.0], 3, &mut out).unwrap();
        assert_eq!(out, [9.5, 12.0, 14.0]);
    }
}

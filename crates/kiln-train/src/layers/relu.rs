//! ReLU. Backward needs only the forward *output*: the gradient passes where the output is positive.

use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;

/// - `input`, `output`: same shape, any
pub fn forward(input: &[f32], output: &mut [f32]) {
    output.par_chunks_mut(CHUNK).zip(input.par_chunks(CHUNK)).for_each(|(o, i)| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = v.max(0.0);
        }
    });
}

/// In place: `values = max(values, 0)`.
pub fn forward_in_place(values: &mut [f32]) {
    values.par_chunks_mut(CHUNK).for_each(|chunk| {
        for v in chunk {
            *v = v.max(0.0);
        }
    });
}

/// In place on the gradient: `grad *= (output > 0)`.
/// - `output`: the forward output
/// - `grad`:   the gradient at the output on entry, at the input on return
pub fn backward_in_place(output: &[f32], grad: &mut [f32]) {
    grad.par_chunks_mut(CHUNK).zip(output.par_chunks(CHUNK)).for_each(|(g, o)| {
        for (g, &o) in g.iter_mut().zip(o) {
            if o <= 0.0 {
                *g = 0.0;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    #[test]
    fn forward_matches_reference_and_backward_matches_finite_differences() {
        let run = |x: &[f32]| {
            let mut out = vec![0.0; x.len()];
            forward(x, &mut out);
            out
        };
        // Keep every input well away from the kink at 0 so central differences are exact.
        let mut x: Vec<f32> = random(300, 1).into_iter().map(|v| if v.abs() < 0.1 { v + 0.3 } else { v }).collect();
        let out = run(&x);
        let mut want = vec![0.0; x.len()];
        kiln_core::kernels::relu(&x, &mut want).unwrap();
        assert_eq!(out, want);

        let coeffs = random(x.len(), 2);
        let mut grad = coeffs.clone();
        backward_in_place(&out, &mut grad);
        check(&mut x, &grad, |x| weighted_sum(&run(x), &coeffs), "dinput");
    }
}

//! Fully connected layer, as GEMM.
//!
//! Forward:  `output = input × W + b`.
//! Backward: `dW = inputᵀ × dout`, `db = Σ_rows dout`, `dinput = dout × Wᵀ`.

use rayon::prelude::*;

use crate::gemm::{MatRef, add_column_sums, matmul};

/// Geometry of one dense layer on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
}

impl Dense {
    /// - `input`:   `[n, cin]`
    /// - `weights`: `[cin, cout]`
    /// - `bias`:    `[cout]`
    /// - `output`:  `[n, cout]`, written
    pub fn forward(&self, input: &[f32], weights: &[f32], bias: &[f32], output: &mut [f32]) {
        output[..self.n * self.cout].par_chunks_mut(self.cout).for_each(|row| row.copy_from_slice(bias));
        matmul(
            output,
            MatRef::row_major(input, self.n, self.cin),
            MatRef::row_major(weights, self.cin, self.cout),
            true,
        );
    }

    /// - `input`:    `[n, cin]` from the forward pass
    /// - `dout`:     `[n, cout]`
    /// - `weights`:  `[cin, cout]`
    /// - `dweights`: `[cin, cout]`, written
    /// - `dbias`:    `[cout]`, written
    /// - `dinput`:   `[n, cin]`, written if given
    pub fn backward(
        &self,
        input: &[f32],
        dout: &[f32],
        weights: &[f32],
        dweights: &mut [f32],
        dbias: &mut [f32],
        dinput: Option<&mut [f32]>,
    ) {
        let dout_mat = MatRef::row_major(dout, self.n, self.cout);
        matmul(dweights, MatRef::row_major(input, self.n, self.cin).t(), dout_mat, false);
        dbias.fill(0.0);
        add_column_sums(&dout[..self.n * self.cout], self.cout, dbias);
        if let Some(dinput) = dinput {
            matmul(dinput, dout_mat, MatRef::row_major(weights, self.cin, self.cout).t(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    fn run(d: &Dense, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; d.n * d.cout];
        d.forward(x, w, b, &mut out);
        out
    }

    #[test]
    fn forward_matches_reference_kernel() {
        let d = Dense { n: 5, cin: 33, cout: 17 };
        let (x, w, b) = (random(d.n * d.cin, 1), random(d.cin * d.cout, 2), random(d.cout, 3));
        let got = run(&d, &x, &w, &b);
        let mut want = vec![0.0; got.len()];
        kiln_core::kernels::dense(&x, d.n, d.cin, &w, &b, d.cout, &mut want).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let d = Dense { n: 3, cin: 7, cout: 5 };
        let (mut x, mut w, mut b) = (random(d.n * d.cin, 4), random(d.cin * d.cout, 5), random(d.cout, 6));
        let coeffs = random(d.n * d.cout, 7);
        let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; d.cout], vec![0.0; x.len()]);
        d.backward(&x, &coeffs, &w, &mut dw, &mut db, Some(&mut dx));
        let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
        check(&mut x, &dx, |x| weighted_sum(&run(&d, x, &w0, &b0), &coeffs), "dinput");
        check(&mut w, &dw, |w| weighted_sum(&run(&d, &x0, w, &b0), &coeffs), "dweights");
        check(&mut b, &db, |b| weighted_sum(&run(&d, &x0, &w0, b), &coeffs), "dbias");
    }
}

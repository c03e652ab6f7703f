//! 3x3 convolution, stride 1, SAME padding, plus bias, as im2col + GEMM.
//!
//! Forward:  `col = im2col(input)`, `output = col × W + b`.
//! Backward: `dW = colᵀ × dout`, `db = Σ_rows dout`, `dcol = dout × Wᵀ`, `dinput = col2im(dcol)`.
//! All three GEMMs go through [`crate::gemm::matmul`] and use both cores.

use rayon::prelude::*;

use crate::gemm::{MatRef, add_column_sums, matmul};

/// Geometry of one conv layer on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
}

impl Conv2d {
    /// Rows of the im2col matrix: one per output pixel.
    pub fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Columns of the im2col matrix: the 3x3 neighbourhood in (ky, kx, ci) order, matching HWIO weights.
    pub fn patch(&self) -> usize {
        9 * self.cin
    }

    /// - `input`:   `[n, h, w, cin]`
    /// - `weights`: `[3, 3, cin, cout]` = `[9*cin, cout]`
    /// - `bias`:    `[cout]`
    /// - `col`:     `[n*h*w, 9*cin]`, written; keep it for [`Conv2d::backward`]
    /// - `output`:  `[n, h, w, cout]`, written
    pub fn forward(&self, input: &[f32], weights: &[f32], bias: &[f32], col: &mut [f32], output: &mut [f32]) {
        self.im2col(input, col);
        output.par_chunks_mut(self.cout).for_each(|row| row.copy_from_slice(bias));
        matmul(output, MatRef::row_major(col, self.rows(), self.patch()), MatRef::row_major(weights, self.patch(), self.cout), true);
    }

    /// - `col`:      `[n*h*w, 9*cin]` from the forward pass; **overwritten** with `dcol` when `dinput` is wanted
    /// - `dout`:     `[n, h, w, cout]`, the gradient at this layer's output
    /// - `weights`:  `[9*cin, cout]`
    /// - `dweights`: `[9*cin, cout]`, written
    /// - `dbias`:    `[cout]`, written
    /// - `dinput`:   `[n, h, w, cin]`, written if given (skip it for the first parametric layer)
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        col: &mut [f32],
        dout: &[f32],
        weights: &[f32],
        dweights: &mut [f32],
        dbias: &mut [f32],
        dinput: Option<&mut [f32]>,
    ) {
        let (rows, patch) = (self.rows(), self.patch());
        let dout_mat = MatRef::row_major(dout, rows, self.cout);
        matmul(dweights, MatRef::row_major(col, rows, patch).t(), dout_mat, false);
        dbias.fill(0.0);
        add_column_sums(dout, self.cout, dbias);
        if let Some(dinput) = dinput {
            // col is no longer needed: reuse its memory for dcol [n*h*w, 9*cin].
            matmul(col, dout_mat, MatRef::row_major(weights, patch, self.cout).t(), false);
            self.col2im(col, dinput);
        }
    }

    /// `input [n,h,w,cin]` → `col [n*h*w, 9*cin]`; taps outside the image are zero (SAME padding).
    fn im2col(&self, input: &[f32], col: &mut [f32]) {
        let Conv2d { h, w, cin, .. } = *self;
        let patch = self.patch();
        // One task per image row: n*h rows of w patches each.
        col[..self.rows() * patch].par_chunks_mut(w * patch).enumerate().for_each(|(row_index, out_row)| {
            let (b, y) = (row_index / h, row_index % h);
            for x in 0..w {
                let out = &mut out_row[x * patch..][..patch];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let dst = &mut out[(ky * 3 + kx) * cin..][..cin];
                        let iy = (y + ky).wrapping_sub(1);
                        let ix = (x + kx).wrapping_sub(1);
                        if iy < h && ix < w {
                            dst.copy_from_slice(&input[((b * h + iy) * w + ix) * cin..][..cin]);
                        } else {
                            dst.fill(0.0);
                        }
                    }
                }
            }
        });
    }

    /// `dcol [n*h*w, 9*cin]` → `dinput [n,h,w,cin]`: each input pixel gathers the taps that read it.
    /// Gathering (not scattering) keeps every output written by one task, in a fixed order.
    fn col2im(&self, dcol: &[f32], dinput: &mut [f32]) {
        let Conv2d { h, w, cin, .. } = *self;
        let patch = self.patch();
        dinput[..self.n * h * w * cin].par_chunks_mut(w * cin).enumerate().for_each(|(row_index, in_row)| {
            let (b, iy) = (row_index / h, row_index % h);
            in_row.fill(0.0);
            for ix in 0..w {
                let acc = &mut in_row[ix * cin..][..cin];
                // The output pixel (y, x) reads input (y+ky-1, x+kx-1), so input (iy, ix) is tap
                // (ky, kx) of output (iy+1-ky, ix+1-kx).
                for ky in 0..3 {
                    let y = (iy + 1).wrapping_sub(ky);
                    if y >= h {
                        continue;
                    }
                    for kx in 0..3 {
                        let x = (ix + 1).wrapping_sub(kx);
                        if x >= w {
                            continue;
                        }
                        let src = &dcol[((b * h + y) * w + x) * patch + (ky * 3 + kx) * cin..][..cin];
                        for (a, &g) in acc.iter_mut().zip(src) {
                            *a += g;
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    const GEOMETRY: Conv2d = Conv2d { n: 2, h: 5, w: 4, cin: 3, cout: 4 };

    fn run(c: &Conv2d, input: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
        let mut col = vec![0.0; c.rows() * c.patch()];
        let mut out = vec![0.0; c.rows() * c.cout];
        c.forward(input, weights, bias, &mut col, &mut out);
        out
    }

    #[test]
    fn forward_matches_reference_kernel() {
        let c = Conv2d { n: 3, h: 7, w: 6, cin: 5, cout: 8 };
        let input = random(c.n * c.h * c.w * c.cin, 1);
        let weights = random(9 * c.cin * c.cout, 2);
        let bias = random(c.cout, 3);
        let got = run(&c, &input, &weights, &bias);
        let mut want = vec![0.0; got.len()];
        kiln_core::kernels::conv2d_3x3_same(&input, c.n, c.h, c.w, c.cin, &weights, &bias, c.cout, &mut want).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let c = GEOMETRY;
        let mut input = random(c.n * c.h * c.w * c.cin, 4);
        let mut weights = random(9 * c.cin * c.cout, 5);
        let mut bias = random(c.cout, 6);
        let coeffs = random(c.rows() * c.cout, 7);

        let mut col = vec![0.0; c.rows() * c.patch()];
        let mut out = vec![0.0; c.rows() * c.cout];
        c.forward(&input, &weights, &bias, &mut col, &mut out);
        let (mut dw, mut db, mut dx) = (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; input.len()]);
        c.backward(&mut col, &coeffs, &weights, &mut dw, &mut db, Some(&mut dx));

        let (w0, b0, x0) = (weights.clone(), bias.clone(), input.clone());
        check(&mut input, &dx, |x| weighted_sum(&run(&c, x, &w0, &b0), &coeffs), "dinput");
        check(&mut weights, &dw, |w| weighted_sum(&run(&c, &x0, w, &b0), &coeffs), "dweights");
        check(&mut bias, &db, |b| weighted_sum(&run(&c, &x0, &w0, b), &coeffs), "dbias");
    }
}

//! 3x3 convolution, stride 1, SAME padding, plus bias, as im2col + GEMM.
//!
//! Forward:  `col = im2col(input)`, `output = col × W + b`.
//! Backward: `dW = colᵀ × dout`, `db = Σ_rows dout`, `dcol = dout × Wᵀ`, `dinput = col2im(dcol)`.
//!
//! The batch is processed a few images at a time so that each chunk's im2col matrix stays in cache
//! between being written and being multiplied ([`COL_CHUNK_VALUES`]). The backward pass rebuilds the
//! chunk's im2col rather than keeping the whole batch's (hundreds of MB for the VGG) from the forward pass.
//! All GEMMs go through [`crate::gemm::matmul`] and use every core. The chunking depends only on the
//! shapes, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::gemm::{MatRef, add_column_sums, matmul};

/// Target size of one chunk's im2col matrix, in f32 values (8 MiB: about a last-level-cache share).
pub const COL_CHUNK_VALUES: usize = 2 << 20;

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

    /// Images per chunk: as many as fit in [`COL_CHUNK_VALUES`], at least one.
    pub fn chunk_images(&self) -> usize {
        (COL_CHUNK_VALUES / (self.h * self.w * self.patch()).max(1)).clamp(1, self.n.max(1))
    }

    /// Values the `col` scratch buffer needs.
    pub fn col_len(&self) -> usize {
        self.chunk_images() * self.h * self.w * self.patch()
    }

    /// The same layer on images `start..start+count` of the batch.
    fn chunk(&self, count: usize) -> Conv2d {
        Conv2d { n: count, ..*self }
    }

    /// Image ranges `(first, count)` of the chunks, in order.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let step = self.chunk_images();
        let n = self.n;
        (0..n).step_by(step).map(move |first| (first, step.min(n - first)))
    }

    /// - `input`:   `[n, h, w, cin]`
    /// - `weights`: `[3, 3, cin, cout]` = `[9*cin, cout]`
    /// - `bias`:    `[cout]`
    /// - `col`:     scratch, at least [`Conv2d::col_len`] values
    /// - `output`:  `[n, h, w, cout]`, written
    pub fn forward(&self, input: &[f32], weights: &[f32], bias: &[f32], col: &mut [f32], output: &mut [f32]) {
        let (hw, patch) = (self.h * self.w, self.patch());
        output[..self.rows() * self.cout].par_chunks_mut(self.cout).for_each(|row| row.copy_from_slice(bias));
        let weights = MatRef::row_major(weights, patch, self.cout);
        for (first, count) in self.chunks() {
            let part = self.chunk(count);
            let rows = count * hw;
            part.im2col(&input[first * hw * self.cin..][..rows * self.cin], col);
            let out = &mut output[first * hw * self.cout..][..rows * self.cout];
            matmul(out, MatRef::row_major(&col[..rows * patch], rows, patch), weights, true);
        }
    }

    /// - `input`:    `[n, h, w, cin]`, the forward pass's input
    /// - `dout`:     `[n, h, w, cout]`, the gradient at this layer's output
    /// - `weights`:  `[9*cin, cout]`
    /// - `col`:      scratch, at least [`Conv2d::col_len`] values
    /// - `dweights`: `[9*cin, cout]`, written
    /// - `dbias`:    `[cout]`, written
    /// - `dinput`:   `[n, h, w, cin]`, written if given (skip it for the first parametric layer)
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        input: &[f32],
        dout: &[f32],
        weights: &[f32],
        col: &mut [f32],
        dweights: &mut [f32],
        dbias: &mut [f32],
        mut dinput: Option<&mut [f32]>,
    ) {
        let (hw, patch, cout) = (self.h * self.w, self.patch(), self.cout);
        let weights_t = MatRef::row_major(weights, patch, cout).t();
        for (index, (first, count)) in self.chunks().enumerate() {
            let part = self.chunk(count);
            let rows = count * hw;
            let dout_mat = MatRef::row_major(&dout[first * hw * cout..][..rows * cout], rows, cout);
            part.im2col(&input[first * hw * self.cin..][..rows * self.cin], col);
            matmul(dweights, MatRef::row_major(&col[..rows * patch], rows, patch).t(), dout_mat, index > 0);
            if let Some(dinput) = dinput.as_deref_mut() {
                // The chunk's col is used up: reuse its memory for dcol [rows, 9*cin].
                matmul(col, dout_mat, weights_t, false);
                part.col2im(&col[..rows * patch], &mut dinput[first * hw * self.cin..][..rows * self.cin]);
            }
        }
        dbias.fill(0.0);
        add_column_sums(&dout[..self.rows() * cout], cout, dbias);
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
        let mut col = vec![0.0; c.col_len()];
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
    fn chunks_cover_the_batch() {
        // A 32x32x64 layer has 590k values of im2col per image: three images per chunk.
        let big = Conv2d { n: 5, h: 32, w: 32, cin: 64, cout: 64 };
        assert_eq!(big.chunk_images(), 3);
        let small = Conv2d { n: 64, h: 4, w: 4, cin: 512, cout: 512 };
        assert_eq!(small.chunk_images(), 28);
        let covered: Vec<_> = small.chunks().collect();
        assert_eq!(covered, [(0, 28), (28, 28), (56, 8)]);
    }

    /// Forward and backward over several chunks equal the same work done in one piece.
    #[test]
    fn chunked_equals_whole_batch() {
        let c = Conv2d { n: 7, h: 24, w: 24, cin: 64, cout: 8 };
        assert!(c.chunk_images() < c.n, "the test needs more than one chunk");
        let input = random(c.n * c.h * c.w * c.cin, 1);
        let weights = random(9 * c.cin * c.cout, 2);
        let bias = random(c.cout, 3);
        let got = run(&c, &input, &weights, &bias);
        let mut want = vec![0.0; got.len()];
        kiln_core::kernels::conv2d_3x3_same(&input, c.n, c.h, c.w, c.cin, &weights, &bias, c.cout, &mut want).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3, "{g} vs {w}");
        }
        // Backward: dW summed over chunks equals dW of each image computed alone, summed.
        let dout = random(c.rows() * c.cout, 4);
        let mut col = vec![0.0; c.col_len()];
        let (mut dw, mut db, mut dx) = (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; input.len()]);
        c.backward(&input, &dout, &weights, &mut col, &mut dw, &mut db, Some(&mut dx));
        let mut dw_sum = vec![0.0f32; weights.len()];
        let per_image = c.h * c.w;
        for b in 0..c.n {
            let one = Conv2d { n: 1, ..c };
            let mut col1 = vec![0.0; one.col_len()];
            let (mut dw1, mut db1, mut dx1) =
                (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; per_image * c.cin]);
            one.backward(
                &input[b * per_image * c.cin..][..per_image * c.cin],
                &dout[b * per_image * c.cout..][..per_image * c.cout],
                &weights,
                &mut col1,
                &mut dw1,
                &mut db1,
                Some(&mut dx1),
            );
            for (s, v) in dw_sum.iter_mut().zip(&dw1) {
                *s += v;
            }
            assert_eq!(&dx[b * per_image * c.cin..][..per_image * c.cin], &dx1[..], "image {b}: dinput differs");
        }
        for (a, b) in dw.iter().zip(&dw_sum) {
            assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let c = GEOMETRY;
        let mut input = random(c.n * c.h * c.w * c.cin, 4);
        let mut weights = random(9 * c.cin * c.cout, 5);
        let mut bias = random(c.cout, 6);
        let coeffs = random(c.rows() * c.cout, 7);

        let mut col = vec![0.0; c.col_len()];
        let (mut dw, mut db, mut dx) = (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; input.len()]);
        c.backward(&input, &coeffs, &weights, &mut col, &mut dw, &mut db, Some(&mut dx));

        let (w0, b0, x0) = (weights.clone(), bias.clone(), input.clone());
        check(&mut input, &dx, |x| weighted_sum(&run(&c, x, &w0, &b0), &coeffs), "dinput");
        check(&mut weights, &dw, |w| weighted_sum(&run(&c, &x0, w, &b0), &coeffs), "dweights");
        check(&mut bias, &db, |b| weighted_sum(&run(&c, &x0, &w0, b), &coeffs), "dbias");
    }
}

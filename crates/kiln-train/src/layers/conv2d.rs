//! Convolution with any [`Window`] (the series' 3x3 stride-1 SAME one among them), plus bias, as im2col + GEMM.
//!
//! Forward:  `col = im2col(input)`, `output = col × W + b`.
//! Backward: `dW = colᵀ × dout`, `db = Σ_rows dout`, `dcol = dout × Wᵀ`, `dinput = col2im(dcol)`.
//!
//! The batch goes through in chunks of a few images, sized so each chunk's im2col matrix stays in cache
//! between being written and being multiplied ([`COL_CHUNK_VALUES`]). Backward rebuilds each chunk's
//! im2col rather than keeping the whole batch's (hundreds of MB for the VGG) from the forward pass.
//!
//! When there are enough chunks to keep every core busy, chunks run side by side, one per thread with
//! single-threaded GEMMs (each core then works in its own cache); otherwise they run one after another
//! with every GEMM split across the cores. Either way each chunk's weight gradient goes to its own slot
//! and the slots are added in chunk order, and the chunking depends only on the shapes, so the result
//! is the same bits whatever the thread count.

use std::cell::RefCell;

use rayon::prelude::*;

use kiln_core::network::Window;

use crate::gemm::{MatRef, add_column_sums, matmul, matmul_serial};

/// Target size of one chunk's im2col matrix, in f32 values (8 MiB: about a last-level-cache share).
pub const COL_CHUNK_VALUES: usize = 2 << 20;

/// Chunks run side by side when there are at least this many per thread (fewer would leave a core idle
/// while the last chunk finishes).
const CHUNKS_PER_THREAD: usize = 4;

thread_local! {
    /// Each worker thread's im2col scratch when chunks run side by side; it lives as long as the thread.
    static THREAD_COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Geometry of one conv layer on a batch: `[n, h, w, cin]` in, `[n, oh, ow, cout]` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub window: Window,
}

/// Runs `work` with this thread's scratch buffer of at least `len` values.
fn with_thread_col<R>(len: usize, work: impl FnOnce(&mut [f32]) -> R) -> R {
    THREAD_COL.with(|cell| {
        let mut col = cell.borrow_mut();
        if col.len() < len {
            col.resize(len, 0.0);
        }
        work(&mut col[..len])
    })
}

impl Conv2d {
    /// The series' conv: 3x3, stride 1, SAME.
    pub const fn same_3x3(n: usize, h: usize, w: usize, cin: usize, cout: usize) -> Conv2d {
        Conv2d { n, h, w, cin, cout, window: Window::SAME_3X3 }
    }

    /// Output height and width (the plan has checked that the window fits).
    pub fn out_hw(&self) -> (usize, usize) {
        self.window.output(self.h, self.w).unwrap_or((0, 0))
    }

    /// Output pixels per image.
    fn out_pixels(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }

    /// Rows of the im2col matrix: one per output pixel.
    pub fn rows(&self) -> usize {
        self.n * self.out_pixels()
    }

    /// Columns of the im2col matrix: the window's taps in (ky, kx, ci) order, matching HWIO weights.
    pub fn patch(&self) -> usize {
        self.window.taps() * self.cin
    }

    /// Images per chunk: as many as fit in [`COL_CHUNK_VALUES`], at least one.
    pub fn chunk_images(&self) -> usize {
        (COL_CHUNK_VALUES / (self.out_pixels() * self.patch()).max(1)).clamp(1, self.n.max(1))
    }

    /// Number of chunks the batch splits into.
    pub fn chunk_count(&self) -> usize {
        self.n.div_ceil(self.chunk_images())
    }

    /// Values the `col` scratch buffer needs.
    pub fn col_len(&self) -> usize {
        self.chunk_images() * self.h * self.w * self.patch()
    }

    /// Values the weight-gradient scratch needs: one `[9*cin, cout]` slot per chunk.
    pub fn partials_len(&self) -> usize {
        self.chunk_count() * self.patch() * self.cout
    }

    /// The same layer on `count` images.
    fn chunk(&self, count: usize) -> Conv2d {
        Conv2d { n: count, ..*self }
    }

    fn side_by_side(&self) -> bool {
        self.chunk_count() >= CHUNKS_PER_THREAD * rayon::current_num_threads()
    }

    /// - `input`:   `[n, h, w, cin]`
    /// - `weights`: `[kh, kw, cin, cout]` = `[taps*cin, cout]`
    /// - `bias`:    `[cout]`
    /// - `col`:     scratch, at least [`Conv2d::col_len`] values
    /// - `output`:  `[n, oh, ow, cout]`, written
    pub fn forward(&self, input: &[f32], weights: &[f32], bias: &[f32], col: &mut [f32], output: &mut [f32]) {
        let hw = self.h * self.w;
        let ohw = self.out_pixels();
        let (in_step, out_step) = (self.chunk_images() * hw * self.cin, self.chunk_images() * ohw * self.cout);
        let input = &input[..self.n * hw * self.cin];
        let output = &mut output[..self.rows() * self.cout];
        if self.side_by_side() {
            output.par_chunks_mut(out_step).zip(input.par_chunks(in_step)).for_each(|(out, inp)| {
                let part = self.chunk(inp.len() / (hw * self.cin));
                with_thread_col(part.rows() * part.patch(), |col| {
                    part.forward_chunk(inp, weights, bias, col, out, true)
                });
            });
        } else {
            for (out, inp) in output.chunks_mut(out_step).zip(input.chunks(in_step)) {
                let part = self.chunk(inp.len() / (hw * self.cin));
                part.forward_chunk(inp, weights, bias, col, out, false);
            }
        }
    }

    /// Forward on one chunk (`self.n` images); `serial` keeps its GEMM on the calling thread.
    fn forward_chunk(
        &self,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        col: &mut [f32],
        output: &mut [f32],
        serial: bool,
    ) {
        let (rows, patch) = (self.rows(), self.patch());
        for row in output.chunks_exact_mut(self.cout) {
            row.copy_from_slice(bias);
        }
        self.im2col(input, col);
        let (lhs, rhs) =
            (MatRef::row_major(&col[..rows * patch], rows, patch), MatRef::row_major(weights, patch, self.cout));
        if serial { matmul_serial(output, lhs, rhs, true) } else { matmul(output, lhs, rhs, true) }
    }

    /// - `input`:    `[n, h, w, cin]`, the forward pass's input
    /// - `dout`:     `[n, oh, ow, cout]`, the gradient at this layer's output
    /// - `weights`:  `[taps*cin, cout]`
    /// - `col`:      scratch, at least [`Conv2d::col_len`] values
    /// - `partials`: scratch, at least [`Conv2d::partials_len`] values
    /// - `dweights`: `[taps*cin, cout]`, written
    /// - `dbias`:    `[cout]`, written
    /// - `dinput`:   `[n, h, w, cin]`, written if given (skip it for the first parametric layer)
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        input: &[f32],
        dout: &[f32],
        weights: &[f32],
        col: &mut [f32],
        partials: &mut [f32],
        dweights: &mut [f32],
        dbias: &mut [f32],
        dinput: Option<&mut [f32]>,
    ) {
        let hw = self.h * self.w;
        let dw_len = self.patch() * self.cout;
        let (in_step, out_step) =
            (self.chunk_images() * hw * self.cin, self.chunk_images() * self.out_pixels() * self.cout);
        let count = self.chunk_count();
        let partials = &mut partials[..count * dw_len];
        let input = &input[..self.n * hw * self.cin];
        let dout = &dout[..self.rows() * self.cout];
        let dinput_parts: Vec<Option<&mut [f32]>> = match dinput {
            Some(d) => d[..self.n * hw * self.cin].chunks_mut(in_step).map(Some).collect(),
            None => (0..count).map(|_| None).collect(),
        };
        if self.side_by_side() {
            partials
                .par_chunks_mut(dw_len)
                .zip(input.par_chunks(in_step))
                .zip(dout.par_chunks(out_step))
                .zip(dinput_parts.into_par_iter())
                .for_each(|(((dw, inp), dout), dinput)| {
                    let part = self.chunk(inp.len() / (hw * self.cin));
                    with_thread_col(part.rows() * part.patch(), |col| {
                        part.backward_chunk(inp, dout, weights, col, dw, dinput, true)
                    });
                });
        } else {
            let chunks = partials.chunks_mut(dw_len).zip(input.chunks(in_step)).zip(dout.chunks(out_step));
            for (((dw, inp), dout), dinput) in chunks.zip(dinput_parts) {
                let part = self.chunk(inp.len() / (hw * self.cin));
                part.backward_chunk(inp, dout, weights, col, dw, dinput, false);
            }
        }
        // dW = the chunks' slots added in chunk order, each element by one task.
        const BLOCK: usize = 4096;
        dweights[..dw_len].par_chunks_mut(BLOCK).enumerate().for_each(|(block, dst)| {
            let (start, len) = (block * BLOCK, dst.len());
            dst.copy_from_slice(&partials[start..start + len]);
            for slot in partials.chunks_exact(dw_len).skip(1) {
                for (d, &p) in dst.iter_mut().zip(&slot[start..start + len]) {
                    *d += p;
                }
            }
        });
        dbias.fill(0.0);
        add_column_sums(dout, self.cout, dbias);
    }

    /// Backward on one chunk (`self.n` images): its weight gradient into `dweights`, and `dinput`.
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        input: &[f32],
        dout: &[f32],
        weights: &[f32],
        col: &mut [f32],
        dweights: &mut [f32],
        dinput: Option<&mut [f32]>,
        serial: bool,
    ) {
        let (rows, patch, cout) = (self.rows(), self.patch(), self.cout);
        let mm = if serial { matmul_serial } else { matmul };
        let dout_mat = MatRef::row_major(dout, rows, cout);
        self.im2col(input, col);
        mm(dweights, MatRef::row_major(&col[..rows * patch], rows, patch).t(), dout_mat, false);
        if let Some(dinput) = dinput {
            // The chunk's col is used up: reuse its memory for dcol [rows, 9*cin].
            mm(col, dout_mat, MatRef::row_major(weights, patch, cout).t(), false);
            self.col2im(&col[..rows * patch], dinput);
        }
    }

    /// `input [n,h,w,cin]` → `col [n*oh*ow, taps*cin]`; taps in the padding are zero.
    pub fn im2col(&self, input: &[f32], col: &mut [f32]) {
        let Conv2d { h, w, cin, window, .. } = *self;
        let (oh, ow) = self.out_hw();
        let patch = self.patch();
        // One task per output row: n*oh rows of ow patches each.
        col[..self.rows() * patch].par_chunks_mut(ow * patch).enumerate().for_each(|(row_index, out_row)| {
            let (b, y) = (row_index / oh, row_index % oh);
            for x in 0..ow {
                let out = &mut out_row[x * patch..][..patch];
                for ky in 0..window.kh {
                    for kx in 0..window.kw {
                        let dst = &mut out[(ky * window.kw + kx) * cin..][..cin];
                        match window.source(y, x, ky, kx, h, w) {
                            Some((iy, ix)) => dst.copy_from_slice(&input[((b * h + iy) * w + ix) * cin..][..cin]),
                            None => dst.fill(0.0),
                        }
                    }
                }
            }
        });
    }

    /// `dcol [n*oh*ow, taps*cin]` → `dinput [n,h,w,cin]`: each input pixel gathers the taps that read it.
    /// Gathering (not scattering) keeps every output written by one task, in a fixed order.
    fn col2im(&self, dcol: &[f32], dinput: &mut [f32]) {
        let Conv2d { h, w, cin, window, .. } = *self;
        let (oh, ow) = self.out_hw();
        let patch = self.patch();
        // Output row y reads input row y*sh + ky - top, so input row iy is tap ky of output row
        // (iy + top - ky) / sh when that divides exactly and lands inside the output.
        dinput[..self.n * h * w * cin].par_chunks_mut(w * cin).enumerate().for_each(|(row_index, in_row)| {
            let (b, iy) = (row_index / h, row_index % h);
            in_row.fill(0.0);
            for ix in 0..w {
                let acc = &mut in_row[ix * cin..][..cin];
                for ky in 0..window.kh {
                    let Some(y) = window.output_row(iy, ky, oh) else { continue };
                    for kx in 0..window.kw {
                        let Some(x) = window.output_col(ix, kx, ow) else { continue };
                        let src = &dcol[((b * oh + y) * ow + x) * patch + (ky * window.kw + kx) * cin..][..cin];
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

    const GEOMETRY: Conv2d = Conv2d::same_3x3(2, 5, 4, 3, 4);
    /// A strided conv with uneven padding and a dropped column: every index rule of im2col and col2im.
    const STRIDED: Conv2d = Conv2d {
        n: 2,
        h: 7,
        w: 6,
        cin: 2,
        cout: 3,
        window: Window { kh: 3, kw: 2, sh: 2, sw: 2, top: 1, bottom: 0, left: 0, right: 1 },
    };

    fn run(c: &Conv2d, input: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
        let mut col = vec![0.0; c.col_len()];
        let mut out = vec![0.0; c.rows() * c.cout];
        c.forward(input, weights, bias, &mut col, &mut out);
        out
    }

    /// Random input and parameters for `c`, and a check that the fast forward pass equals kiln-core's.
    fn forward_against_reference(c: &Conv2d, tolerance: f32) -> (Vec<f32>, Vec<f32>) {
        let input = random(c.n * c.h * c.w * c.cin, 1);
        let weights = random(c.patch() * c.cout, 2);
        let bias = random(c.cout, 3);
        let got = run(c, &input, &weights, &bias);
        let mut want = vec![0.0; got.len()];
        let image = (c.h, c.w, c.cin);
        kiln_core::kernels::conv2d(&input, c.n, image, &c.window, &weights, &bias, c.cout, &mut want).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < tolerance, "{g} vs {w}");
        }
        (input, weights)
    }

    #[test]
    fn forward_matches_reference_kernel() {
        forward_against_reference(&Conv2d::same_3x3(3, 7, 6, 5, 8), 1e-4);
        forward_against_reference(&STRIDED, 1e-4);
        let lenet1 = Conv2d { window: Window::valid(5, 5, 1), ..Conv2d::same_3x3(2, 12, 12, 6, 16) };
        forward_against_reference(&lenet1, 1e-4);
    }

    #[test]
    fn chunks_cover_the_batch() {
        // A 32x32x64 layer has 590k values of im2col per image: three images per chunk.
        let big = Conv2d::same_3x3(5, 32, 32, 64, 64);
        assert_eq!(big.chunk_images(), 3);
        let small = Conv2d::same_3x3(64, 4, 4, 512, 512);
        assert_eq!(small.chunk_images(), 28);
        assert_eq!(small.chunk_count(), 3);
        assert_eq!(small.partials_len(), 3 * 4608 * 512);
    }

    /// Forward and backward over several chunks equal the same work done in one piece, with chunks run
    /// one after another (2 chunks) and side by side (9 chunks, on a machine with up to 2 threads).
    #[test]
    fn chunked_equals_whole_batch() {
        chunked_equals_whole_batch_for(Conv2d::same_3x3(7, 24, 24, 64, 8));
        chunked_equals_whole_batch_for(Conv2d::same_3x3(25, 32, 32, 64, 4));
    }

    fn chunked_equals_whole_batch_for(c: Conv2d) {
        assert!(c.chunk_images() < c.n, "the test needs more than one chunk");
        let (input, weights) = forward_against_reference(&c, 1e-3);
        // Backward: dW summed over chunks equals dW of each image computed alone, summed.
        let dout = random(c.rows() * c.cout, 4);
        let per_image_out = c.out_pixels();
        let (mut col, mut partials) = (vec![0.0; c.col_len()], vec![0.0; c.partials_len()]);
        let (mut dw, mut db, mut dx) = (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; input.len()]);
        c.backward(&input, &dout, &weights, &mut col, &mut partials, &mut dw, &mut db, Some(&mut dx));
        let mut dw_sum = vec![0.0f32; weights.len()];
        let per_image = c.h * c.w;
        for b in 0..c.n {
            let one = Conv2d { n: 1, ..c };
            let (mut col1, mut partials1) = (vec![0.0; one.col_len()], vec![0.0; one.partials_len()]);
            let (mut dw1, mut db1, mut dx1) =
                (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; per_image * c.cin]);
            one.backward(
                &input[b * per_image * c.cin..][..per_image * c.cin],
                &dout[b * per_image_out * c.cout..][..per_image_out * c.cout],
                &weights,
                &mut col1,
                &mut partials1,
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
        backward_matches_finite_differences_for(GEOMETRY);
        backward_matches_finite_differences_for(STRIDED);
    }

    fn backward_matches_finite_differences_for(c: Conv2d) {
        let mut input = random(c.n * c.h * c.w * c.cin, 4);
        let mut weights = random(c.patch() * c.cout, 5);
        let mut bias = random(c.cout, 6);
        let coeffs = random(c.rows() * c.cout, 7);

        let (mut col, mut partials) = (vec![0.0; c.col_len()], vec![0.0; c.partials_len()]);
        let (mut dw, mut db, mut dx) = (vec![0.0; weights.len()], vec![0.0; c.cout], vec![0.0; input.len()]);
        c.backward(&input, &coeffs, &weights, &mut col, &mut partials, &mut dw, &mut db, Some(&mut dx));

        let (w0, b0, x0) = (weights.clone(), bias.clone(), input.clone());
        check(&mut input, &dx, |x| weighted_sum(&run(&c, x, &w0, &b0), &coeffs), "dinput");
        check(&mut weights, &dw, |w| weighted_sum(&run(&c, &x0, w, &b0), &coeffs), "dweights");
        check(&mut bias, &db, |b| weighted_sum(&run(&c, &x0, &w0, b), &coeffs), "dbias");
    }
}

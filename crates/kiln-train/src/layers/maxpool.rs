//! 2x2 max pooling, stride 2.
//!
//! Forward records which of the four inputs won (`argmax`, 0..4); backward routes each output gradient
//! to that input and zero to the other three (ties go to the first, as in the reference kernel).

use rayon::prelude::*;

/// Geometry of one pooling layer on a batch (input size; `h` and `w` are even).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl MaxPool {
    fn out_len(&self) -> usize {
        self.n * (self.h / 2) * (self.w / 2) * self.c
    }

    /// - `input`:  `[n, h, w, c]`
    /// - `output`: `[n, h/2, w/2, c]`, written
    /// - `argmax`: `[n, h/2, w/2, c]`, written: window position `dy*2+dx` of the winner
    pub fn forward(&self, input: &[f32], output: &mut [f32], argmax: &mut [u8]) {
        let MaxPool { h, w, c, .. } = *self;
        let (oh, ow) = (h / 2, w / 2);
        let len = self.out_len();
        // One task per output row.
        output[..len].par_chunks_mut(ow * c).zip(argmax[..len].par_chunks_mut(ow * c)).enumerate().for_each(
            |(row_index, (out_row, arg_row))| {
                let (b, y) = (row_index / oh, row_index % oh);
                for x in 0..ow {
                    for ch in 0..c {
                        let mut best = f32::NEG_INFINITY;
                        let mut best_at = 0u8;
                        for (pos, (dy, dx)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                            let v = input[((b * h + 2 * y + dy) * w + 2 * x + dx) * c + ch];
                            if v > best || pos == 0 {
                                best = v;
                                best_at = pos as u8;
                            }
                        }
                        out_row[x * c + ch] = best;
                        arg_row[x * c + ch] = best_at;
                    }
                }
            },
        );
    }

    /// - `dout`:   `[n, h/2, w/2, c]`
    /// - `argmax`: `[n, h/2, w/2, c]` from the forward pass
    /// - `dinput`: `[n, h, w, c]`, written
    pub fn backward(&self, dout: &[f32], argmax: &[u8], dinput: &mut [f32]) {
        let MaxPool { h, w, c, .. } = *self;
        let ow = w / 2;
        // One task per pair of input rows, i.e. per output row.
        dinput[..self.n * h * w * c].par_chunks_mut(2 * w * c).enumerate().for_each(|(row_index, in_rows)| {
            in_rows.fill(0.0);
            let base = row_index * ow * c;
            for x in 0..ow {
                for ch in 0..c {
                    let at = base + x * c + ch;
                    let pos = argmax[at] as usize;
                    let (dy, dx) = (pos / 2, pos % 2);
                    in_rows[(dy * w + 2 * x + dx) * c + ch] = dout[at];
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    fn run(p: &MaxPool, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; p.out_len()];
        let mut arg = vec![0; p.out_len()];
        p.forward(x, &mut out, &mut arg);
        out
    }

    #[test]
    fn forward_matches_reference_kernel() {
        let p = MaxPool { n: 2, h: 6, w: 4, c: 3 };
        let x = random(p.n * p.h * p.w * p.c, 1);
        let mut want = vec![0.0; p.out_len()];
        kiln_core::kernels::maxpool_2x2(&x, p.n, p.h, p.w, p.c, &mut want).unwrap();
        assert_eq!(run(&p, &x), want);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let p = MaxPool { n: 2, h: 4, w: 6, c: 3 };
        // Distinct values spaced far wider than the finite-difference step, so no window has a near-tie.
        let mut x: Vec<f32> = (0..p.n * p.h * p.w * p.c).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
        let coeffs = random(p.out_len(), 2);
        let mut out = vec![0.0; p.out_len()];
        let mut arg = vec![0; p.out_len()];
        p.forward(&x, &mut out, &mut arg);
        let mut dx = vec![0.0; x.len()];
        p.backward(&coeffs, &arg, &mut dx);
        check(&mut x, &dx, |x| weighted_sum(&run(&p, x), &coeffs), "dinput");
    }
}

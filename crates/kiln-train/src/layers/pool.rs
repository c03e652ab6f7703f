//! Pooling with any [`Window`] (max and average), and global average pooling.
//!
//! Max pooling records which tap of the window won (`argmax`, `ky*kw + kx`, below 49); backward routes
//! each output gradient to that input. Average pooling spreads each output gradient evenly over the taps
//! it averaged. Backward gathers per input pixel, so each value is written by one task in a fixed order.

use kiln_core::kernels::pad_count;
use kiln_core::network::{PoolKind, Window};
use rayon::prelude::*;

/// Geometry of one pooling layer on a batch: `[n, h, w, c]` in, `[n, oh, ow, c]` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kind: PoolKind,
    pub window: Window,
}

impl Pool {
    pub fn out_hw(&self) -> (usize, usize) {
        self.window.output(self.h, self.w).unwrap_or((0, 0))
    }

    /// Values of the output (and of `argmax`).
    pub fn out_len(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.n * oh * ow * self.c
    }

    /// The divisor of output pixel `(y, x)`'s average.
    fn divisor(&self, y: usize, x: usize) -> f32 {
        let Pool { h, w, window, .. } = *self;
        let count = match self.kind {
            PoolKind::Avg { count_pad: true } => pad_count(&window, y, x, h, w),
            _ => (0..window.kh)
                .flat_map(|ky| (0..window.kw).map(move |kx| (ky, kx)))
                .filter(|&(ky, kx)| window.source(y, x, ky, kx, h, w).is_some())
                .count(),
        };
        count.max(1) as f32
    }

    /// - `input`:  `[n, h, w, c]`
    /// - `output`: `[n, oh, ow, c]`, written
    /// - `argmax`: `[n, oh, ow, c]`, written for max pooling: the winning tap
    pub fn forward(&self, input: &[f32], output: &mut [f32], argmax: &mut [u8]) {
        let Pool { h, w, c, kind, window, .. } = *self;
        let (oh, ow) = self.out_hw();
        let len = self.out_len();
        let argmax = &mut argmax[..if kind == PoolKind::Max { len } else { 0 }];
        let rows: Vec<(usize, &mut [f32])> = output[..len].chunks_mut(ow * c).enumerate().collect();
        let mut arg_rows: Vec<&mut [u8]> = argmax.chunks_mut(ow * c).collect();
        arg_rows.resize_with(rows.len(), Default::default);
        rows.into_par_iter().zip(arg_rows).for_each(|((row_index, out_row), arg_row)| {
            let (b, y) = (row_index / oh, row_index % oh);
            for x in 0..ow {
                let out = &mut out_row[x * c..][..c];
                out.fill(if kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 });
                for ky in 0..window.kh {
                    for kx in 0..window.kw {
                        let Some((iy, ix)) = window.source(y, x, ky, kx, h, w) else { continue };
                        let pixel = &input[((b * h + iy) * w + ix) * c..][..c];
                        let tap = (ky * window.kw + kx) as u8;
                        for (ch, (o, &v)) in out.iter_mut().zip(pixel).enumerate() {
                            if kind == PoolKind::Max {
                                // Ties go to the first tap, as in the reference kernel.
                                if v > *o {
                                    *o = v;
                                    arg_row[x * c + ch] = tap;
                                }
                            } else {
                                *o += v;
                            }
                        }
                    }
                }
                if kind != PoolKind::Max {
                    let inverse = 1.0 / self.divisor(y, x);
                    out.iter_mut().for_each(|o| *o *= inverse);
                }
            }
        });
    }

    /// - `dout`:   `[n, oh, ow, c]`
    /// - `argmax`: `[n, oh, ow, c]` from the forward pass (max pooling)
    /// - `dinput`: `[n, h, w, c]`, written
    pub fn backward(&self, dout: &[f32], argmax: &[u8], dinput: &mut [f32]) {
        let Pool { h, w, c, kind, window, .. } = *self;
        let (oh, ow) = self.out_hw();
        dinput[..self.n * h * w * c].par_chunks_mut(w * c).enumerate().for_each(|(row_index, in_row)| {
            let (b, iy) = (row_index / h, row_index % h);
            in_row.fill(0.0);
            for ix in 0..w {
                let acc = &mut in_row[ix * c..][..c];
                for ky in 0..window.kh {
                    let Some(y) = window.output_row(iy, ky, oh) else { continue };
                    for kx in 0..window.kw {
                        let Some(x) = window.output_col(ix, kx, ow) else { continue };
                        let at = ((b * oh + y) * ow + x) * c;
                        let grads = &dout[at..][..c];
                        if kind == PoolKind::Max {
                            let tap = (ky * window.kw + kx) as u8;
                            for ((a, &g), &won) in acc.iter_mut().zip(grads).zip(&argmax[at..][..c]) {
                                if won == tap {
                                    *a += g;
                                }
                            }
                        } else {
                            let inverse = 1.0 / self.divisor(y, x);
                            for (a, &g) in acc.iter_mut().zip(grads) {
                                *a += g * inverse;
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Global average pooling on a batch: `[n, h, w, c]` to `[n, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalAvgPool {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl GlobalAvgPool {
    /// - `input`: `[n, h, w, c]`; `output`: `[n, c]`, written
    pub fn forward(&self, input: &[f32], output: &mut [f32]) {
        let GlobalAvgPool { n, h, w, c } = *self;
        kiln_core::kernels::global_avg_pool(&input[..n * h * w * c], n, (h, w, c), &mut output[..n * c])
            .expect("the plan sized both buffers");
    }

    /// - `dout`: `[n, c]`; `dinput`: `[n, h, w, c]`, written: each pixel gets `dout / (h*w)`
    pub fn backward(&self, dout: &[f32], dinput: &mut [f32]) {
        let GlobalAvgPool { n, h, w, c } = *self;
        let inverse = 1.0 / (h * w) as f32;
        dinput[..n * h * w * c].par_chunks_mut(h * w * c).zip(dout.par_chunks(c)).for_each(|(image, g)| {
            for pixel in image.chunks_exact_mut(c) {
                for (d, &g) in pixel.iter_mut().zip(g) {
                    *d = g * inverse;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    fn run(p: &Pool, input: &[f32]) -> Vec<f32> {
        let (mut out, mut arg) = (vec![0.0; p.out_len()], vec![0u8; p.out_len()]);
        p.forward(input, &mut out, &mut arg);
        out
    }

    const POOLS: [Pool; 3] = [
        Pool { n: 2, h: 7, w: 6, c: 3, kind: PoolKind::Max, window: Window::valid(3, 3, 2) },
        Pool {
            n: 2,
            h: 5,
            w: 6,
            c: 2,
            kind: PoolKind::Avg { count_pad: false },
            window: Window { kh: 3, kw: 3, sh: 1, sw: 2, top: 1, bottom: 1, left: 1, right: 0 },
        },
        Pool {
            n: 1,
            h: 5,
            w: 5,
            c: 2,
            kind: PoolKind::Avg { count_pad: true },
            window: Window { kh: 2, kw: 3, sh: 2, sw: 1, top: 1, bottom: 0, left: 2, right: 1 },
        },
    ];

    #[test]
    fn forward_matches_reference_kernel() {
        for p in POOLS {
            let input = random(p.n * p.h * p.w * p.c, 1);
            let got = run(&p, &input);
            let mut want = vec![0.0; got.len()];
            kiln_core::kernels::pool(&input, p.n, (p.h, p.w, p.c), p.kind, &p.window, &mut want).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{p:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (i, p) in POOLS.into_iter().enumerate() {
            // Max pooling: inputs spread apart so no tie switches inside the difference step.
            let mut input: Vec<f32> = (0..p.n * p.h * p.w * p.c).map(|i| ((i * 7919) % 1000) as f32 * 0.01).collect();
            let coeffs = random(p.out_len(), 2 + i as u64);
            let (mut out, mut arg) = (vec![0.0; p.out_len()], vec![0u8; p.out_len()]);
            p.forward(&input, &mut out, &mut arg);
            let mut dx = vec![0.0; input.len()];
            p.backward(&coeffs, &arg, &mut dx);
            check(&mut input, &dx, |x| weighted_sum(&run(&p, x), &coeffs), "pool dinput");
        }
        let g = GlobalAvgPool { n: 2, h: 3, w: 4, c: 5 };
        let mut input = random(2 * 3 * 4 * 5, 9);
        let coeffs = random(2 * 5, 10);
        let mut dx = vec![0.0; input.len()];
        g.backward(&coeffs, &mut dx);
        let gap = |x: &[f32]| {
            let mut out = vec![0.0; 10];
            g.forward(x, &mut out);
            weighted_sum(&out, &coeffs)
        };
        check(&mut input, &dx, gap, "global average pool dinput");
    }
}

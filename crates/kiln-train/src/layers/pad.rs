//! Zero padding. Forward copies each image into the middle of a zeroed frame; backward crops the
//! gradient back out.

use rayon::prelude::*;

/// Geometry of one padding layer on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    fn out_hw(&self) -> (usize, usize) {
        (self.top + self.h + self.bottom, self.left + self.w + self.right)
    }

    /// - `input`:  `[n, h, w, c]`
    /// - `output`: `[n, top+h+bottom, left+w+right, c]`, written
    pub fn forward(&self, input: &[f32], output: &mut [f32]) {
        let (oh, ow) = self.out_hw();
        let Pad { h, w, c, top, left, .. } = *self;
        output[..self.n * oh * ow * c].par_chunks_mut(oh * ow * c).enumerate().for_each(|(b, image)| {
            image.fill(0.0);
            for y in 0..h {
                let src = &input[(b * h + y) * w * c..][..w * c];
                image[((top + y) * ow + left) * c..][..w * c].copy_from_slice(src);
            }
        });
    }

    /// - `dout`:   `[n, top+h+bottom, left+w+right, c]`
    /// - `dinput`: `[n, h, w, c]`, written
    pub fn backward(&self, dout: &[f32], dinput: &mut [f32]) {
        let (oh, ow) = self.out_hw();
        let Pad { h, w, c, top, left, .. } = *self;
        dinput[..self.n * h * w * c].par_chunks_mut(h * w * c).enumerate().for_each(|(b, image)| {
            for y in 0..h {
                image[y * w * c..][..w * c].copy_from_slice(&dout[((b * oh + top + y) * ow + left) * c..][..w * c]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random, weighted_sum};

    #[test]
    fn forward_matches_reference_and_backward_matches_finite_differences() {
        let p = Pad { n: 2, h: 3, w: 2, c: 2, top: 2, bottom: 1, left: 0, right: 3 };
        let (oh, ow) = p.out_hw();
        let run = |x: &[f32]| {
            let mut out = vec![0.0; p.n * oh * ow * p.c];
            p.forward(x, &mut out);
            out
        };
        let mut x = random(p.n * p.h * p.w * p.c, 1);
        let mut want = vec![0.0; p.n * oh * ow * p.c];
        kiln_core::kernels::pad(&x, p.n, p.h, p.w, p.c, (2, 1, 0, 3), &mut want).unwrap();
        assert_eq!(run(&x), want);

        let coeffs = random(want.len(), 2);
        let mut dx = vec![0.0; x.len()];
        p.backward(&coeffs, &mut dx);
        check(&mut x, &dx, |x| weighted_sum(&run(x), &coeffs), "dinput");
    }
}

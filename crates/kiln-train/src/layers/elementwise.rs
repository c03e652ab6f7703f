//! The element-wise layers past ReLU: the activations (in place; backward from the output), the
//! per-channel scale-and-shift, and dropout.

use kiln_core::network::Activation;
use rand::Rng;
use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;

/// In place: `values = activation(values)`. `values` any shape.
pub fn activation_forward(activation: Activation, values: &mut [f32]) {
    values.par_chunks_mut(CHUNK).for_each(|chunk| kiln_core::kernels::activation_in_place(activation, chunk));
}

/// In place on the gradient: `grad *= activation'(x)`, read from the forward output.
/// - `output`: the forward output; `grad`: the gradient at the output on entry, at the input on return
pub fn activation_backward(activation: Activation, output: &[f32], grad: &mut [f32]) {
    grad.par_chunks_mut(CHUNK).zip(output.par_chunks(CHUNK)).for_each(|(g, o)| {
        for (g, &y) in g.iter_mut().zip(o) {
            *g *= activation.derivative_from_output(y);
        }
    });
}

/// `y = x * scale[c] + shift[c]` per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleShift {
    /// Pixels in the batch (`n * h * w`).
    pub pixels: usize,
    pub c: usize,
}

impl ScaleShift {
    /// - `input`: `[pixels, c]`; `scale`, `shift`: `[c]`; `output`: `[pixels, c]`, written
    pub fn forward(&self, input: &[f32], scale: &[f32], shift: &[f32], output: &mut [f32]) {
        let len = self.pixels * self.c;
        kiln_core::kernels::scale_shift(&input[..len], scale, shift, &mut output[..len]).expect("the plan sized both");
    }

    /// - `input`: `[pixels, c]` (the forward input); `dout`: `[pixels, c]`
    /// - `dscale`, `dshift`: `[c]`, written; `dinput`: `[pixels, c]`, written if given
    pub fn backward(
        &self,
        input: &[f32],
        dout: &[f32],
        scale: &[f32],
        dscale: &mut [f32],
        dshift: &mut [f32],
        dinput: Option<&mut [f32]>,
    ) {
        let (len, c) = (self.pixels * self.c, self.c);
        dscale.fill(0.0);
        dshift.fill(0.0);
        for (x, g) in input[..len].chunks_exact(c).zip(dout[..len].chunks_exact(c)) {
            for ch in 0..c {
                dscale[ch] += g[ch] * x[ch];
                dshift[ch] += g[ch];
            }
        }
        if let Some(dinput) = dinput {
            for (d, g) in dinput[..len].chunks_exact_mut(c).zip(dout[..len].chunks_exact(c)) {
                for ((d, &g), &s) in d.iter_mut().zip(g).zip(scale) {
                    *d = g * s;
                }
            }
        }
    }
}

/// Inverted dropout while training: each value is kept with probability `1 - rate` and scaled by
/// `1 / (1 - rate)`, so inference is the identity. `mask` holds each value's factor (0 or the scale).
pub fn dropout_forward(rate: f32, values: &mut [f32], mask: &mut [f32], rng: &mut impl Rng) {
    let keep = 1.0 / (1.0 - rate);
    for (v, m) in values.iter_mut().zip(mask.iter_mut()) {
        *m = if rng.random::<f32>() < rate { 0.0 } else { keep };
        *v *= *m;
    }
}

/// In place on the gradient: `grad *= mask`.
pub fn dropout_backward(mask: &[f32], grad: &mut [f32]) {
    for (g, &m) in grad.iter_mut().zip(mask) {
        *g *= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, check_with_step, random, weighted_sum};
    use kiln_core::network::Scalar;
    use rand::SeedableRng;

    #[test]
    fn activations_backward_match_finite_differences() {
        let activations = [
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::Clip { min: Scalar::new(-0.5), max: Scalar::new(0.6) },
            Activation::LeakyRelu { alpha: Scalar::new(0.1) },
        ];
        for (i, a) in activations.into_iter().enumerate() {
            let mut x: Vec<f32> = random(300, i as u64).iter().map(|v| v * 3.0).collect();
            let coeffs = random(300, 50 + i as u64);
            let mut y = x.clone();
            activation_forward(a, &mut y);
            let mut grad = coeffs.clone();
            activation_backward(a, &y, &mut grad);
            let loss = |x: &[f32]| {
                let mut y = x.to_vec();
                activation_forward(a, &mut y);
                weighted_sum(&y, &coeffs)
            };
            // A small step: tanh and sigmoid curve enough that wider one-sided differences look like kinks.
            check_with_step(&mut x, &grad, loss, a.name(), 1e-3);
        }
    }

    #[test]
    fn scale_shift_backward_matches_finite_differences() {
        let s = ScaleShift { pixels: 12, c: 5 };
        let (mut x, mut scale, mut shift) = (random(60, 1), random(5, 2), random(5, 3));
        let coeffs = random(60, 4);
        let (mut ds, mut dt, mut dx) = (vec![0.0; 5], vec![0.0; 5], vec![0.0; 60]);
        s.backward(&x, &coeffs, &scale, &mut ds, &mut dt, Some(&mut dx));
        let run = |x: &[f32], a: &[f32], b: &[f32]| {
            let mut y = vec![0.0; 60];
            s.forward(x, a, b, &mut y);
            weighted_sum(&y, &coeffs)
        };
        let (x0, s0, t0) = (x.clone(), scale.clone(), shift.clone());
        check(&mut x, &dx, |x| run(x, &s0, &t0), "scale-shift dinput");
        check(&mut scale, &ds, |a| run(&x0, a, &t0), "dscale");
        check(&mut shift, &dt, |b| run(&x0, &s0, b), "dshift");
    }

    #[test]
    fn dropout_keeps_the_expected_share_and_its_mask_routes_the_gradient() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut values = vec![1.0f32; 10_000];
        let mut mask = vec![0.0; 10_000];
        dropout_forward(0.25, &mut values, &mut mask, &mut rng);
        let kept = values.iter().filter(|&&v| v != 0.0).count();
        assert!((7_200..7_800).contains(&kept), "{kept} of 10000 kept at rate 0.25");
        assert!(values.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let mut grad = vec![1.0; 10_000];
        dropout_backward(&mask, &mut grad);
        assert_eq!(grad, values);
    }
}

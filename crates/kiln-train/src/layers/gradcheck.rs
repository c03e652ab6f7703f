//! Finite-difference gradient checking, shared by the layer tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Checks `analytic` (d loss / d x) against central differences of `loss(x)`, computed in f64 around
/// f32 values. `loss` must be a smooth function of `x` near the point (no ReLU kinks or pooling ties
/// within `eps`). Checks every element when `x` is small, otherwise a spread-out sample.
pub fn check(x: &mut [f32], analytic: &[f32], loss: impl FnMut(&[f32]) -> f64, what: &str) {
    check_with_step(x, analytic, loss, what, 1e-2)
}

/// [`check`] with a chosen finite-difference step. Elements where the left and right one-sided
/// differences disagree sit on a kink (a ReLU or a max switching inside the step): those are skipped,
/// and the check fails if more than a third of the elements had to be skipped.
pub fn check_with_step(x: &mut [f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64, what: &str, eps: f32) {
    assert_eq!(x.len(), analytic.len());
    let step = (x.len() / 200).max(1);
    let (mut checked, mut kinks) = (0usize, 0usize);
    for i in (0..x.len()).step_by(step) {
        let orig = x[i];
        let centre = loss(x);
        x[i] = orig + eps;
        let plus = loss(x);
        x[i] = orig - eps;
        let minus = loss(x);
        x[i] = orig;
        let (right, left) = ((plus - centre) / eps as f64, (centre - minus) / eps as f64);
        let scale = 1e-2 + right.abs().max(left.abs());
        if (right - left).abs() / scale > 0.01 {
            kinks += 1;
            continue;
        }
        checked += 1;
        let numeric = (plus - minus) / (2.0 * eps as f64);
        let err = (numeric - analytic[i] as f64).abs() / (1e-2 + numeric.abs().max(analytic[i].abs() as f64));
        assert!(err < 1e-2, "{what}[{i}]: analytic {} vs numeric {numeric} (relative error {err})", analytic[i]);
    }
    assert!(kinks * 3 <= checked + kinks, "{what}: {kinks} of {} elements sit on kinks", checked + kinks);
}

/// A loss that weighs every output by a fixed random coefficient: `sum(out * coeffs)`. Its gradient with
/// respect to `out` is `coeffs`, which tests a backward pass on a non-trivial upstream gradient.
pub fn weighted_sum(out: &[f32], coeffs: &[f32]) -> f64 {
    out.iter().zip(coeffs).map(|(&o, &c)| o as f64 * c as f64).sum()
}

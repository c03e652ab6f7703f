//! Weight initializers from post 6 of the series. Biases always start at zero.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::config::Init;

impl Init {
    /// Fills `weights` for a layer with the given fans (for a 3x3 conv: `9*in` and `9*out`).
    pub fn fill(self, weights: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut impl Rng) {
        let normal = |rng: &mut _| -> f32 { StandardNormal.sample(rng) };
        match self {
            Init::Normal => weights.iter_mut().for_each(|w| *w = normal(rng)),
            Init::NormalSmall => weights.iter_mut().for_each(|w| *w = normal(rng) * 0.01),
            Init::Xavier => {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                weights.iter_mut().for_each(|w| *w = rng.random_range(-limit..limit));
            }
            Init::He => {
                let stddev = (1.3 * 2.0 / fan_in as f64).sqrt() as f32;
                for w in weights.iter_mut() {
                    *w = loop {
                        let z = normal(rng);
                        if z.abs() <= 2.0 {
                            break z * stddev;
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    fn stats(v: &[f32]) -> (f64, f64, f32) {
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var.sqrt(), v.iter().fold(0.0f32, |m, x| m.max(x.abs())))
    }

    #[test]
    fn he_is_truncated_with_tf1_stddev() {
        let mut w = vec![0.0; 100_000];
        Init::He.fill(&mut w, 576, 576, &mut stream(1, Purpose::Init, 0));
        let (mean, std, max) = stats(&w);
        let sigma = (2.6f64 / 576.0).sqrt();
        // The mean of 100,000 draws is within 0.01σ of zero (its standard error is 0.003σ).
        assert!(mean.abs() < 0.01 * sigma, "mean {mean}, σ {sigma}");
        // A normal truncated at ±2σ keeps 88% of its standard deviation: within 1% either way.
        let ratio = std / (sigma * 0.8796);
        assert!((ratio - 1.0).abs() < 0.01, "std {std} is {ratio} of the truncated normal's");
        // Truncation redraws: no value lies beyond 2σ, ...
        let bound = 2.0 * sigma;
        assert!(max as f64 <= bound * 1.0001, "max |w| {max} beyond the bound {bound}");
        // ... values come close to it (an untruncated normal or a narrower cut would not look like this) ...
        assert!(max as f64 >= bound * 0.99, "max |w| {max}, the bound is {bound}");
        // ... and none pile up at it, as clamping would leave 4.6% of them (the truncated density
        // there puts about 0.1% within 0.01σ of ±2σ).
        let at_bound = w.iter().filter(|&&x| x.abs() as f64 >= bound * 0.995).count();
        assert!(at_bound < w.len() / 200, "{at_bound} of {} values at the bound", w.len());
    }

    #[test]
    fn xavier_and_normals() {
        let mut rng = stream(2, Purpose::Init, 0);
        let mut w = vec![0.0; 100_000];
        Init::Xavier.fill(&mut w, 500, 10, &mut rng);
        let limit = (6.0f64 / 510.0).sqrt();
        let (_, std, max) = stats(&w);
        assert!(max as f64 <= limit && (std - limit / 3f64.sqrt()).abs() < 0.01 * limit);
        Init::Normal.fill(&mut w, 1, 1, &mut rng);
        assert!((stats(&w).1 - 1.0).abs() < 0.01);
        Init::NormalSmall.fill(&mut w, 1, 1, &mut rng);
        assert!((stats(&w).1 - 0.01).abs() < 0.0001);
    }
}

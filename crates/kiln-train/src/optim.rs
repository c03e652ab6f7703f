//! SGD, Momentum and Adam with TensorFlow 1 semantics (`tf.train.*Optimizer`).
//!
//! - SGD:      `w -= lr * g`
//! - Momentum: `a = momentum * a + g; w -= lr * a` (TF1 `MomentumOptimizer`, not Nesterov)
//! - Adam:     `m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²;
//!             lr_t = lr * sqrt(1-β2^t) / (1-β1^t); w -= lr_t * m / (sqrt(v) + ε)`
//!   with TF1's defaults β1 0.9, β2 0.999, ε 1e-8. As in TF1, ε is added to the *uncorrected* sqrt(v)
//!   and the bias correction is folded into `lr_t`; the beta powers are state, multiplied after each step.

use rayon::prelude::*;

use crate::config::{OptimizerConfig, OptimizerKind};

/// Optimizer state: one set of slots per parameter tensor, plus Adam's beta powers.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// `slots[i]` holds tensor `i`'s slots: none (SGD), `[accumulator]` (Momentum) or `[m, v]` (Adam).
    pub slots: Vec<Vec<Vec<f32>>>,
    /// β1^t and β2^t for the *next* update (TF1 starts them at β1 and β2).
    pub beta1_power: f32,
    pub beta2_power: f32,
    /// Updates applied so far.
    pub updates: u64,
}

/// Elements per parallel task in the element-wise updates.
const CHUNK: usize = 16 * 1024;

impl Optimizer {
    /// Zeroed slots for tensors of the given lengths.
    pub fn new(config: OptimizerConfig, tensor_lens: &[usize]) -> Self {
        let slot_count = match config.kind {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum => 1,
            OptimizerKind::Adam => 2,
        };
        Optimizer {
            config,
            slots: tensor_lens.iter().map(|&len| vec![vec![0.0; len]; slot_count]).collect(),
            beta1_power: config.beta1,
            beta2_power: config.beta2,
            updates: 0,
        }
    }

    /// TF-style slot names for tensor `name`: `name/Momentum`, or `name/Adam` and `name/Adam_1`.
    pub fn slot_names(&self, name: &str) -> Vec<String> {
        match self.config.kind {
            OptimizerKind::Sgd => vec![],
            OptimizerKind::Momentum => vec![format!("{name}/Momentum")],
            OptimizerKind::Adam => vec![format!("{name}/Adam"), format!("{name}/Adam_1")],
        }
    }

    /// Applies one update with learning rate `lr` to every tensor. `params[i]` and `grads[i]` have the
    /// lengths given to [`Optimizer::new`].
    pub fn apply(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f32) {
        let c = self.config;
        match c.kind {
            OptimizerKind::Sgd => {
                for (w, g) in params.iter_mut().zip(grads) {
                    w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(w, g)| {
                        for (w, &g) in w.iter_mut().zip(g) {
                            *w -= lr * g;
                        }
                    });
                }
            }
            OptimizerKind::Momentum => {
                for ((w, g), slots) in params.iter_mut().zip(grads).zip(&mut self.slots) {
                    let acc = &mut slots[0];
                    w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(acc.par_chunks_mut(CHUNK)).for_each(
                        |((w, g), a)| {
                            for ((w, &g), a) in w.iter_mut().zip(g).zip(a) {
                                *a = c.momentum * *a + g;
                                *w -= lr * *a;
                            }
                        },
                    );
                }
            }
            OptimizerKind::Adam => {
                let lr_t = lr * (1.0 - self.beta2_power).sqrt() / (1.0 - self.beta1_power);
                for ((w, g), slots) in params.iter_mut().zip(grads).zip(&mut self.slots) {
                    let [m, v] = &mut slots[..] else { unreachable!("Adam has two slots per tensor") };
                    w.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                        .for_each(|((w, g), (m, v))| {
                            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                                *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                                *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                                *w -= lr_t * *m / (v.sqrt() + c.epsilon);
                            }
                        });
                }
                self.beta1_power *= c.beta1;
                self.beta2_power *= c.beta2;
            }
        }
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(w: &mut [f32], g: &[f32], lr: f32, opt: &mut Optimizer) {
        opt.apply(&mut [w], &[g], lr);
    }

    #[test]
    fn sgd_one_update_by_hand() {
        let mut opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::Sgd), &[2]);
        let mut w = [1.0f32, -2.0];
        step(&mut w, &[0.5, -4.0], 0.1, &mut opt);
        assert_eq!(w, [0.95, -1.6]);
    }

    #[test]
    fn momentum_two_updates_by_hand() {
        let mut opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::Momentum), &[1]);
        let mut w = [1.0f32];
        // a1 = 0.5, w = 1 - 0.1*0.5 = 0.95; a2 = 0.9*0.5 + 0.5 = 0.95, w = 0.95 - 0.095 = 0.855
        step(&mut w, &[0.5], 0.1, &mut opt);
        assert!((w[0] - 0.95).abs() < 1e-7);
        step(&mut w, &[0.5], 0.1, &mut opt);
        assert!((w[0] - 0.855).abs() < 1e-6);
        assert!((opt.slots[0][0][0] - 0.95).abs() < 1e-7);
    }

    #[test]
    fn adam_two_updates_by_hand() {
        let mut opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::Adam), &[2]);
        let mut w = [1.0f32, 1.0];
        let g = [0.5f32, -0.01];
        step(&mut w, &g, 0.001, &mut opt);
        // Step 1: m = 0.1 g, v = 0.001 g², lr_t = 0.001 * sqrt(0.001) / 0.1,
        // so w -= lr_t * 0.1 g / (sqrt(0.001)|g| + 1e-8) ≈ 0.001 * sign(g).
        let by_hand = |g: f64| {
            let lr_t = 0.001 * (1.0f64 - 0.999).sqrt() / (1.0 - 0.9);
            1.0 - lr_t * (0.1 * g) / ((0.001 * g * g).sqrt() + 1e-8)
        };
        assert!((w[0] as f64 - by_hand(0.5)).abs() < 1e-7, "{}", w[0]);
        assert!((w[1] as f64 - by_hand(-0.01)).abs() < 1e-7, "{}", w[1]);
        assert!((opt.beta1_power - 0.81).abs() < 1e-7 && (opt.beta2_power - 0.998001).abs() < 1e-7);

        // Step 2 with the same gradient: m = 0.19 g, v = 0.001999 g², lr_t = 0.001 sqrt(1-0.998001)/(1-0.81).
        let w1 = w[0] as f64;
        step(&mut w, &g, 0.001, &mut opt);
        let lr_t = 0.001 * (1.0f64 - 0.998001).sqrt() / (1.0 - 0.81);
        let want = w1 - lr_t * (0.19 * 0.5) / ((0.001999f64 * 0.25).sqrt() + 1e-8);
        assert!((w[0] as f64 - want).abs() < 1e-6, "{} vs {want}", w[0]);
        assert_eq!(opt.updates, 2);
    }
}

//! Softmax cross-entropy, averaged over the batch: `loss = mean_i(logsumexp(z_i) - z_i[y_i])`,
//! `dz_i = (softmax(z_i) - onehot(y_i)) / n`.

/// What one batch scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchScore {
    /// Mean cross-entropy.
    pub cost: f32,
    /// How many argmax predictions equal the label.
    pub correct: usize,
}

/// - `logits`:  `[n, classes]`
/// - `labels`:  `[n]`, each `< classes`
/// - `dlogits`: `[n, classes]`, written with d(mean loss)/d(logits) if given
pub fn softmax_cross_entropy(logits: &[f32], labels: &[u8], classes: usize, dlogits: Option<&mut [f32]>) -> BatchScore {
    let n = labels.len();
    let mut total = 0.0f64;
    let mut correct = 0;
    let mut dl = dlogits;
    for (i, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let label = label as usize;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
        let log_sum = max + sum.ln();
        total += (log_sum - row[label]) as f64;
        let predicted = argmax(row);
        if predicted == label {
            correct += 1;
        }
        if let Some(dl) = dl.as_deref_mut() {
            let out = &mut dl[i * classes..][..classes];
            for (k, (d, &z)) in out.iter_mut().zip(row).enumerate() {
                let p = (z - log_sum).exp();
                *d = (p - if k == label { 1.0 } else { 0.0 }) / n as f32;
            }
        }
    }
    BatchScore { cost: (total / n.max(1) as f64) as f32, correct }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, random};

    #[test]
    fn uniform_logits_cost_ln_classes() {
        // The series' stuck network: all-zero logits give cost ln(10) = 2.302585.
        let score = softmax_cross_entropy(&[0.0; 20], &[3, 7], 10, None);
        assert!((score.cost - 10f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn known_answer() {
        // logits [1, 2, 3], label 2: cost = ln(e^1+e^2+e^3) - 3 = 0.40760596
        let score = softmax_cross_entropy(&[1.0, 2.0, 3.0], &[2], 3, None);
        assert!((score.cost - 0.407_606).abs() < 1e-6);
        assert_eq!(score.correct, 1);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let labels = [1u8, 0, 4, 2];
        let mut z: Vec<f32> = random(20, 1).into_iter().map(|v| v * 3.0).collect();
        let mut dz = vec![0.0; 20];
        softmax_cross_entropy(&z, &labels, 5, Some(&mut dz));
        check(&mut z, &dz, |z| softmax_cross_entropy(z, &labels, 5, None).cost as f64, "dlogits");
    }
}

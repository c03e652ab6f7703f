//! Evaluation on a whole data set.

use crate::batch;
use crate::data::Dataset;
use crate::model::{Model, Workspace};

/// How a model did on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy over every example.
    pub cost: f32,
    /// Fraction correct, 0..=1.
    pub accuracy: f32,
    pub correct: usize,
    pub total: usize,
    /// The predicted class of every example, in order.
    pub predictions: Vec<u8>,
}

impl Evaluation {
    /// Indices of the examples the model got wrong.
    pub fn mistakes<'a>(&'a self, data: &'a Dataset) -> impl Iterator<Item = usize> + 'a {
        self.predictions.iter().zip(&data.labels).enumerate().filter(|(_, (p, l))| p != l).map(|(i, _)| i)
    }
}

/// Images per forward pass during evaluation: big enough to keep GEMMs efficient, small enough that the
/// VGG's largest im2col buffer stays a few hundred MB.
pub const EVAL_BATCH: usize = 100;

/// Runs `model` over all of `data` without augmentation.
pub fn evaluate(model: &Model, ws: &mut Workspace, data: &Dataset) -> Evaluation {
    let image_len = model.input_shape().len();
    let mut input = vec![0.0; EVAL_BATCH * image_len];
    let mut labels = [0u8; EVAL_BATCH];
    let mut predictions = vec![0u8; data.len()];
    let mut cost_sum = 0.0f64;
    let mut correct = 0;
    let indices: Vec<usize> = (0..data.len()).collect();
    for (chunk_index, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
        let n = chunk.len();
        batch::fill(data, model.network.normalization, chunk, 0, None, &mut input[..n * image_len], &mut labels[..n]);
        let score = model.score(
            ws,
            &input[..n * image_len],
            &labels[..n],
            Some(&mut predictions[chunk_index * EVAL_BATCH..][..n]),
        );
        cost_sum += score.cost as f64 * n as f64;
        correct += score.correct;
    }
    let total = data.len();
    Evaluation {
        cost: (cost_sum / total.max(1) as f64) as f32,
        accuracy: correct as f32 / total.max(1) as f32,
        correct,
        total,
        predictions,
    }
}

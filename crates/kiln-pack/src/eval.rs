//! The parallel evaluator: the class kiln-core's runtime predicts for every test image of a packed `.kiln`
//! file, each worker thread running its own share of the images in batches, with its own scratch buffers.
//!
//! This is how a packed model's accuracy is measured: by the runtime that will run it, not by the trainer.

use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_core::format::{FormatError, Model, round_to_i32};
use kiln_core::kernels::ActivationScale;
use kiln_core::network::Shape;
use kiln_core::reference::ForwardError;
use kiln_core::{Isa, runtime};
use thiserror::Error;

/// Images per forward pass of one worker.
pub const BATCH: usize = 64;

/// Test images as the evaluator reads them: `pixels` holds `[count, rows, cols]` 8-bit grayscale values.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub rows: usize,
    pub cols: usize,
    pub pixels: &'a [u8],
}

impl<'a> Images<'a> {
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`th image's bytes.
    pub fn image(&self, index: usize) -> &'a [u8] {
        &self.pixels[index * self.rows * self.cols..][..self.rows * self.cols]
    }
}

/// Told how far an evaluation has got, from the worker threads.
pub trait Progress: Sync {
    /// A pass over `total` images begins.
    fn start(&self, _total: usize) {}
    /// `done` images (of all workers together) have been classified.
    fn update(&self, _done: usize) {}
    /// The pass is over.
    fn finish(&self) {}
}

/// No progress reports.
impl Progress for () {}

/// How to run an evaluation.
#[derive(Clone, Copy)]
pub struct EvalOptions<'p> {
    /// Worker threads (at least one runs).
    pub threads: usize,
    /// The kernel build.
    pub isa: Isa,
    pub progress: &'p dyn Progress,
}

impl std::fmt::Debug for EvalOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalOptions").field("threads", &self.threads).field("isa", &self.isa).finish_non_exhaustive()
    }
}

impl EvalOptions<'static> {
    /// `threads` workers running the fastest kernel build this CPU has, reporting no progress.
    pub fn new(threads: usize) -> Self {
        EvalOptions { threads, isa: Isa::best(), progress: &() }
    }
}

/// Why an evaluation failed.
#[derive(Debug, Error)]
pub enum EvalError {
    /// The file is not a valid `.kiln` model.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The model's input is not one grayscale image of the test set's size.
    #[error("the model takes {model} images, the test set has {rows}x{cols}")]
    InputShape { model: Shape, rows: usize, cols: usize },
    /// The runtime refused a batch.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("an evaluation thread panicked")]
    Panicked,
}

/// The predicted class of every image, computed by kiln-core's runtime on the packed `file`. Inputs are
/// normalised as the file's metadata says: `(pixel / 255 - mean) / std`.
pub fn predict_all(file: &[u8], images: Images<'_>, options: &EvalOptions<'_>) -> Result<Vec<u8>, EvalError> {
    let model = Model::from_bytes(file)?;
    let shape = model.input_shape();
    if (shape.h, shape.w, shape.c) != (images.rows, images.cols, 1) {
        return Err(EvalError::InputShape { model: shape, rows: images.rows, cols: images.cols });
    }
    let meta = *model.metadata();
    let (isa, progress) = (options.isa, options.progress);
    let count = images.len();
    let mut predictions = vec![0u8; count];
    let per_thread = count.div_ceil(options.threads.max(1)).max(1);
    let done = AtomicUsize::new(0);
    progress.start(count);
    std::thread::scope(|scope| -> Result<(), EvalError> {
        let mut handles = Vec::new();
        for (chunk_index, out) in predictions.chunks_mut(per_thread).enumerate() {
            let (model, done) = (&model, &done);
            handles.push(scope.spawn(move || -> Result<(), EvalError> {
                let first = chunk_index * per_thread;
                let len = runtime::scratch_len(model, BATCH);
                let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
                let mut input = vec![0.0f32; BATCH * shape.len()];
                for (j, out) in out.chunks_mut(BATCH).enumerate() {
                    let n = out.len();
                    for (k, x) in input[..n * shape.len()].chunks_mut(shape.len()).enumerate() {
                        let image = images.image(first + j * BATCH + k);
                        for (x, &p) in x.iter_mut().zip(image) {
                            *x = (p as f32 / 255.0 - meta.mean) / meta.std;
                        }
                    }
                    let logits = runtime::forward_with(isa, model, &input[..n * shape.len()], n, &mut a, &mut b)?;
                    for (o, row) in out.iter_mut().zip(logits.chunks_exact(meta.classes)) {
                        *o = argmax(row) as u8;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                    progress.update(done.load(Ordering::Relaxed));
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| EvalError::Panicked)??;
        }
        Ok(())
    })?;
    progress.finish();
    Ok(predictions)
}

/// Static input scales for every conv and dense layer of `file` (which must run on integers, with
/// dynamic activations): runs `images` through the runtime, records each layer's input range on every image
/// (`[min(0, min), max(0, max)]`, what the dynamic path quantizes over), and spreads 8 bits over the union
/// of those ranges.
pub fn calibrate(
    file: &[u8],
    images: Images<'_>,
    options: &EvalOptions<'_>,
) -> Result<Vec<ActivationScale>, EvalError> {
    let model = Model::from_bytes(file)?;
    let shape = model.input_shape();
    if (shape.h, shape.w, shape.c) != (images.rows, images.cols, 1) {
        return Err(EvalError::InputShape { model: shape, rows: images.rows, cols: images.cols });
    }
    let layers = model.plan().param_layers();
    let meta = *model.metadata();
    let count = images.len();
    let per_thread = count.div_ceil(options.threads.max(1)).max(1);
    let ranges = std::thread::scope(|scope| -> Result<Vec<(f32, f32)>, EvalError> {
        let mut handles = Vec::new();
        for first in (0..count).step_by(per_thread) {
            let model = &model;
            handles.push(scope.spawn(move || -> Result<Vec<(f32, f32)>, EvalError> {
                let mut ranges = vec![(0.0f32, 0.0f32); layers];
                let len = runtime::scratch_len(model, BATCH);
                let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
                let mut input = vec![0.0f32; BATCH * shape.len()];
                let end = (first + per_thread).min(count);
                for start in (first..end).step_by(BATCH) {
                    let n = BATCH.min(end - start);
                    for (k, x) in input[..n * shape.len()].chunks_mut(shape.len()).enumerate() {
                        for (x, &p) in x.iter_mut().zip(images.image(start + k)) {
                            *x = (p as f32 / 255.0 - meta.mean) / meta.std;
                        }
                    }
                    let mut observe = |layer: usize, scales: &[ActivationScale]| {
                        let range = &mut ranges[layer];
                        for s in scales {
                            range.0 = range.0.min(-(s.zero as f32) * s.scale);
                            range.1 = range.1.max((255 - s.zero) as f32 * s.scale);
                        }
                    };
                    runtime::forward_observed(
                        options.isa,
                        model,
                        &input[..n * shape.len()],
                        n,
                        &mut a,
                        &mut b,
                        &mut observe,
                    )?;
                }
                Ok(ranges)
            }));
        }
        let mut all = vec![(0.0f32, 0.0f32); layers];
        for h in handles {
            for (a, r) in all.iter_mut().zip(h.join().map_err(|_| EvalError::Panicked)??) {
                *a = (a.0.min(r.0), a.1.max(r.1));
            }
        }
        Ok(all)
    })?;
    Ok(ranges.into_iter().map(|(lo, hi)| static_scale(lo, hi)).collect())
}

/// The 8-bit scale and zero point over `[lo, hi]` (which holds 0), as the dynamic path computes them.
fn static_scale(lo: f32, hi: f32) -> ActivationScale {
    if hi - lo <= 0.0 || !(hi - lo).is_finite() {
        return ActivationScale { scale: 1.0, zero: 0 };
    }
    let scale = (hi - lo) / 255.0;
    let zero = if lo < 0.0 { round_to_i32(-lo * 255.0 / (hi - lo)).clamp(0, 255) } else { 0 };
    ActivationScale { scale, zero }
}

/// Index of the largest logit (the first on ties; NaNs never win).
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// How many predictions equal their label (or, given two prediction lists, agree).
pub fn matching(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// Indices of the images whose prediction differs from the label.
pub fn mistakes<'a>(predicted: &'a [u8], labels: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    predicted.iter().zip(labels).enumerate().filter(|(_, (p, l))| p != l).map(|(i, _)| i)
}

/// The values a packed file's tensors hold (weights and biases) and the bytes they are stored in
/// (values plus scales, alignment padding not counted).
pub fn stored_weights(file: &[u8]) -> Result<(usize, usize), FormatError> {
    let model = Model::from_bytes(file)?;
    let (mut weights, mut bytes) = (0, 0);
    for i in 0..model.tensor_count() {
        let t = model.tensor(i);
        weights += t.len();
        bytes += t.stored_bytes();
    }
    Ok((weights, bytes))
}

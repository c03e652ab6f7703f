//! The training loop: shuffled mini-batches, optional augmentation and learning-rate schedule, one
//! optimizer update per batch, a test-set evaluation at the end.

use std::marker::PhantomData;
use std::time::Instant;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use rand_chacha::ChaCha8Rng;

use crate::batch;
use crate::config::ConfigError;
use crate::data::{Dataset, Mnist};
use crate::eval::{Evaluation, evaluate};
use crate::layers::loss;
use crate::model::{Model, Workspace};
use crate::optim::Optimizer;
use crate::rng::{Purpose, stream};

use crate::config::TrainConfig;

/// Why training stopped early or could not start.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// The data does not fit the network's input.
    #[error("the network takes {expected} inputs but the data has {rows}x{cols} images")]
    DataShape { expected: String, rows: usize, cols: usize },
    /// The network's class count cannot hold the data's labels.
    #[error("the network has {classes} classes but the data has labels up to {max_label}")]
    TooFewClasses { classes: usize, max_label: u8 },
    /// The cost became NaN or infinite: the run diverged.
    #[error("training diverged at step {step}: cost is {cost} (try a lower learning rate or another initializer)")]
    NonFinite { step: u64, cost: f32 },
    /// The GPU failed (no adapter, out of memory, device lost).
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] kiln_gpu::GpuError),
}

impl From<ConfigError> for TrainError {
    fn from(ConfigError(problem): ConfigError) -> Self {
        TrainError::InvalidConfig(problem)
    }
}

/// Where a run stands: with the weights and the optimizer state, everything needed to continue it
/// exactly (the shuffle of an epoch is rebuilt from the seed; the augmentation stream is re-positioned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Updates done.
    pub step: u64,
    /// 0-based epoch the next batch comes from.
    pub epoch: u64,
    /// Where the next batch starts in this epoch's shuffled order.
    pub position: usize,
    /// Words of this epoch's augmentation stream already drawn.
    pub augment_word_pos: u128,
}

/// Reported after every update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// 1-based count of updates so far.
    pub step: u64,
    pub total_steps: u64,
    /// 0-based epoch this batch came from.
    pub epoch: u64,
    /// Images in this batch.
    pub images: usize,
    /// This batch's mean cost and accuracy (0..=1), before the update.
    pub cost: f32,
    pub accuracy: f32,
    pub lr: f32,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub test: Evaluation,
    /// Wall time of the training steps alone (not the final evaluation).
    pub train_seconds: f64,
    pub images_seen: u64,
}

/// Checks that `data` fits `model`: grayscale images of the input size, labels below the class count.
pub fn check_data(model: &Model, data: &Dataset) -> Result<(), TrainError> {
    let input = model.input_shape();
    if (input.h, input.w, input.c) != (data.rows, data.cols, 1) {
        return Err(TrainError::DataShape { expected: input.to_string(), rows: data.rows, cols: data.cols });
    }
    if let Some(&max_label) = data.labels.iter().max()
        && max_label as usize >= model.classes()
    {
        return Err(TrainError::TooFewClasses { classes: model.classes(), max_label });
    }
    Ok(())
}

/// Where the steps run, with what each device keeps beside the shared batch buffers.
#[derive(Debug)]
enum Backend<'a> {
    /// The CPU trainer: forward, backward and updates on the host, into `model.params` and the optimizer.
    Cpu {
        /// Same order and lengths as `model.params`.
        grads: Vec<Vec<f32>>,
        /// `[batch, classes]`
        dlogits: Vec<f32>,
        /// The GPU variant borrows the device for `'a`; the CPU one borrows nothing.
        _device: PhantomData<&'a ()>,
    },
    /// A GPU: the network, its parameters and optimizer state live there, and `model.params` /
    /// `optimizer` are brought up to date by [`Trainer::sync`].
    #[cfg(feature = "gpu")]
    Gpu {
        network: Box<kiln_gpu::GpuNetwork<'a>>,
        /// Whether `model.params` and `optimizer` hold the latest state.
        synced: bool,
    },
}

impl Backend<'_> {
    fn cpu(model: &Model, batch: usize) -> Self {
        Backend::Cpu {
            grads: model.param_lens().iter().map(|&len| vec![0.0; len]).collect(),
            dlogits: vec![0.0; batch * model.classes()],
            _device: PhantomData,
        }
    }
}

/// Steps through training one update at a time. [`train`] drives it to the end; benchmarks and
/// callers that want control (checkpointing, early stops) call [`Trainer::step`] themselves.
#[derive(Debug)]
pub struct Trainer<'a> {
    model: &'a mut Model,
    data: &'a Dataset,
    config: TrainConfig,
    total: u64,
    optimizer: Optimizer,
    ws: Workspace,
    /// `[batch, h, w, 1]`
    images: Vec<f32>,
    /// `[batch]`
    labels: Vec<u8>,
    /// This epoch's shuffled example order, and where the next batch starts in it.
    order: Vec<usize>,
    position: usize,
    epoch: u64,
    augment: ChaCha8Rng,
    step: u64,
    backend: Backend<'a>,
}

#[cfg(feature = "gpu")]
impl<'a> Trainer<'a> {
    /// As [`Trainer::new`], with every step running on `gpu`: the parameters are uploaded once, and a step
    /// sends the batch and reads back the cost and correct count.
    pub fn new_on_gpu(
        model: &'a mut Model,
        data: &'a Dataset,
        config: &TrainConfig,
        gpu: &'a kiln_gpu::Gpu,
        kernels: &kiln_gpu::Kernels,
    ) -> Result<Self, TrainError> {
        let params: Vec<&[f32]> = model.params.iter().map(|t| &t.data[..]).collect();
        let network = kiln_gpu::GpuNetwork::new(
            gpu,
            kernels,
            &model.network.layers,
            model.input_shape(),
            &params,
            config.batch,
            Some(config.optimizer.gpu_spec()),
        )?;
        Trainer::with_backend(model, data, config, Backend::Gpu { network: Box::new(network), synced: true })
    }

    /// The GPU network (to read gradients in tests, or its traffic figures).
    pub fn gpu_network(&self) -> Option<&kiln_gpu::GpuNetwork<'a>> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu { network, .. } => Some(&**network),
        }
    }
}

impl<'a> Trainer<'a> {
    /// Checks the settings and the data against the network and sets up the first epoch.
    pub fn new(model: &'a mut Model, data: &'a Dataset, config: &TrainConfig) -> Result<Self, TrainError> {
        let backend = Backend::cpu(model, config.batch);
        Trainer::with_backend(model, data, config, backend)
    }

    fn with_backend(
        model: &'a mut Model,
        data: &'a Dataset,
        config: &TrainConfig,
        backend: Backend<'a>,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        check_data(model, data)?;
        if data.is_empty() {
            return Err(TrainError::InvalidConfig("the training set is empty".into()));
        }
        if config.augment_shift >= data.rows.min(data.cols) {
            return Err(TrainError::InvalidConfig(format!(
                "a shift of {} pixels would move {}x{} images out of the frame",
                config.augment_shift, data.rows, data.cols
            )));
        }
        let batch = config.batch;
        let input = model.input_shape();
        let lens = model.param_lens();
        let mut trainer = Trainer {
            total: config.total_steps(data.len()),
            optimizer: Optimizer::new(config.optimizer, &lens),
            ws: Workspace::new(),
            images: vec![0.0; batch * input.len()],
            labels: vec![0; batch],
            order: Vec::new(),
            position: 0,
            epoch: 0,
            augment: stream(config.seed, Purpose::Augment, 0),
            step: 0,
            backend,
            model,
            data,
            config: config.clone(),
        };
        trainer.start_epoch(0);
        Ok(trainer)
    }

    /// Whether the steps run on a GPU.
    pub fn on_gpu(&self) -> bool {
        match self.backend {
            Backend::Cpu { .. } => false,
            #[cfg(feature = "gpu")]
            Backend::Gpu { .. } => true,
        }
    }

    /// Brings `model.params` and the optimizer state back from the GPU (before a checkpoint or an
    /// evaluation). Free on the CPU.
    pub fn sync(&mut self) -> Result<(), TrainError> {
        match &mut self.backend {
            Backend::Cpu { .. } => Ok(()),
            #[cfg(feature = "gpu")]
            Backend::Gpu { synced: true, .. } => Ok(()),
            #[cfg(feature = "gpu")]
            Backend::Gpu { network, synced } => {
                for (tensor, values) in self.model.params.iter_mut().zip(network.read_params()?) {
                    tensor.data = values;
                }
                self.optimizer.slots = network.read_slots()?;
                (self.optimizer.beta1_power, self.optimizer.beta2_power) = network.adam_powers();
                *synced = true;
                Ok(())
            }
        }
    }

    /// A fresh shuffle and augmentation stream for `epoch`, both derived from the seed alone.
    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.position = 0;
        self.order = (0..self.data.len()).collect();
        self.order.shuffle(&mut stream(self.config.seed, Purpose::Shuffle, epoch));
        self.augment = stream(self.config.seed, Purpose::Augment, epoch);
    }

    pub fn total_steps(&self) -> u64 {
        self.total
    }

    pub fn is_finished(&self) -> bool {
        self.step >= self.total
    }

    /// One update on the next batch (the last batch of an epoch may be smaller).
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        if self.position >= self.order.len() {
            self.start_epoch(self.epoch + 1);
        }
        let end = (self.position + self.config.batch).min(self.order.len());
        let chunk = &self.order[self.position..end];
        let n = chunk.len();
        let image_len = self.model.input_shape().len();
        let classes = self.model.classes();
        let (images, labels) = (&mut self.images[..n * image_len], &mut self.labels[..n]);
        let (norm, shift) = (self.model.network.normalization, self.config.augment_shift);
        batch::fill(self.data, norm, chunk, shift, Some(&mut self.augment), images, labels);

        let lr = self.config.schedule.rate(self.config.lr, self.step, self.total);
        let score = match &mut self.backend {
            Backend::Cpu { grads, dlogits, .. } => {
                let dlogits = &mut dlogits[..n * classes];
                let seed = self.config.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let logits = self.model.forward_train(&mut self.ws, images, n, seed);
                let score = loss::softmax_cross_entropy(logits, labels, classes, Some(dlogits));
                if score.cost.is_finite() {
                    self.model.backward(&mut self.ws, dlogits, grads);
                    let mut params: Vec<&mut [f32]> = self.model.params.iter_mut().map(|t| &mut t.data[..]).collect();
                    let grads: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
                    self.optimizer.apply(&mut params, &grads, lr);
                }
                score
            }
            #[cfg(feature = "gpu")]
            Backend::Gpu { network, synced } => {
                let score = network.train_step(images, labels, lr)?;
                *synced = false;
                self.optimizer.updates += 1;
                loss::BatchScore { cost: score.cost, correct: score.correct }
            }
        };
        if !score.cost.is_finite() {
            return Err(TrainError::NonFinite { step: self.step + 1, cost: score.cost });
        }

        self.position = end;
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            total_steps: self.total,
            epoch: self.epoch,
            images: n,
            cost: score.cost,
            accuracy: score.correct as f32 / n as f32,
            lr,
        })
    }

    /// Where the run stands, for a checkpoint.
    pub fn progress(&self) -> Progress {
        Progress {
            step: self.step,
            epoch: self.epoch,
            position: self.position,
            augment_word_pos: self.augment.get_word_pos(),
        }
    }

    /// The optimizer state on the host: on a GPU, as of the last [`Trainer::sync`].
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The model on the host: on a GPU, as of the last [`Trainer::sync`].
    pub fn model(&self) -> &Model {
        self.model
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Continues a run from a checkpoint: the same data order, augmentation draws, optimizer state and step.
    pub fn resume(&mut self, progress: &Progress, optimizer: Optimizer) -> Result<(), TrainError> {
        let lens = self.model.param_lens();
        let slots_fit = optimizer.slots.len() == lens.len()
            && optimizer.slots.iter().zip(&lens).all(|(slots, &len)| slots.iter().all(|s| s.len() == len));
        if !slots_fit || optimizer.config.kind != self.config.optimizer.kind {
            return Err(TrainError::InvalidConfig("the optimizer state does not fit this network".into()));
        }
        if progress.position > self.data.len() {
            return Err(TrainError::InvalidConfig(format!(
                "the checkpoint is {} examples into an epoch of a {}-example training set",
                progress.position,
                self.data.len()
            )));
        }
        self.start_epoch(progress.epoch);
        self.position = progress.position;
        self.augment.set_word_pos(progress.augment_word_pos);
        self.step = progress.step;
        match &mut self.backend {
            Backend::Cpu { .. } => {}
            #[cfg(feature = "gpu")]
            Backend::Gpu { network, synced } => {
                let params: Vec<&[f32]> = self.model.params.iter().map(|t| &t.data[..]).collect();
                let slots: Vec<Vec<&[f32]>> =
                    optimizer.slots.iter().map(|s| s.iter().map(|v| &v[..]).collect()).collect();
                network.write_state(&params, &slots)?;
                network.set_adam_powers((optimizer.beta1_power, optimizer.beta2_power));
                *synced = true;
            }
        }
        self.optimizer = optimizer;
        Ok(())
    }

    /// The training buffers (for profiling).
    pub fn workspace_mut(&mut self) -> &mut Workspace {
        &mut self.ws
    }

    /// The network being trained.
    pub fn network(&self) -> &crate::network::Network {
        &self.model.network
    }

    /// Evaluates the model as it stands on `data`, reusing the training buffers (after bringing the
    /// weights back from the GPU, if training there).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation, TrainError> {
        self.sync()?;
        Ok(evaluate(self.model, &mut self.ws, data))
    }
}

/// Trains `model` on `data.train` for the configured length, then evaluates on `data.test`.
/// `on_step` sees every update.
pub fn train(
    model: &mut Model,
    data: &Mnist,
    config: &TrainConfig,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    let mut trainer = Trainer::new(model, &data.train, config)?;
    let started = Instant::now();
    let mut images_seen = 0u64;
    while !trainer.is_finished() {
        let report = trainer.step()?;
        images_seen += report.images as u64;
        on_step(&report);
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let test = trainer.evaluate(&data.test)?;
    Ok(TrainSummary { steps: trainer.step, test, train_seconds, images_seen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InitChoice;
    use crate::config::Length;
    use crate::config::tests::config;
    use crate::presets;

    fn bundled() -> Mnist {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(crate::data::BUNDLED_DIR);
        Mnist::load(&dir).unwrap()
    }

    /// `train` on a slice of the bundled digits: fc3 must beat chance by far in a few dozen steps.
    #[test]
    fn train_learns_on_real_digits() {
        let full = bundled();
        let data = Mnist { dir: full.dir, train: full.train.take(2000), test: full.test.take(500) };
        let mut model = Model::new(presets::fc3(), InitChoice::Default, 1).unwrap();
        let mut steps = 0;
        let c = TrainConfig { length: Length::Steps(60), ..config() };
        let summary = train(&mut model, &data, &c, &mut |_| steps += 1).unwrap();
        assert_eq!((summary.steps, steps), (60, 60));
        assert!(summary.test.accuracy > 0.8, "fc3 reached only {}", summary.test.accuracy);
    }

    /// On the CPU backend, N steps, then a new trainer resumed from the progress and optimizer state, then
    /// N more, equal 2N steps straight, bit for bit (across an epoch boundary, with augmentation).
    #[test]
    fn resume_continues_bit_for_bit() {
        let train_set = bundled().train.take(200);
        let c = TrainConfig { length: Length::Steps(8), batch: 48, augment_shift: 2, ..config() };
        let fresh = || Model::new(presets::fc3(), InitChoice::Default, 2).unwrap();

        let mut straight = fresh();
        let mut trainer = Trainer::new(&mut straight, &train_set, &c).unwrap();
        assert!(!trainer.on_gpu());
        while !trainer.is_finished() {
            trainer.step().unwrap();
        }
        assert_eq!(trainer.progress().epoch, 1, "the run crosses an epoch boundary");
        let straight_optimizer = trainer.optimizer().clone();

        let mut halves = fresh();
        let mut first = Trainer::new(&mut halves, &train_set, &c).unwrap();
        for _ in 0..3 {
            first.step().unwrap();
        }
        let (progress, optimizer) = (first.progress(), first.optimizer().clone());
        let mut second = Trainer::new(&mut halves, &train_set, &c).unwrap();
        second.resume(&progress, optimizer).unwrap();
        assert_eq!(second.progress(), progress);
        while !second.is_finished() {
            second.step().unwrap();
        }
        assert_eq!(second.optimizer().slots, straight_optimizer.slots);
        assert_eq!(second.optimizer().updates, 8);
        assert_eq!(halves.params, straight.params);
    }

    #[test]
    fn settings_and_data_are_checked() {
        let train_set = bundled().train.take(100);
        let mut model = Model::new(presets::fc3(), InitChoice::Default, 2).unwrap();
        let bad = TrainConfig { batch: 0, ..config() };
        let err = Trainer::new(&mut model, &train_set, &bad).unwrap_err().to_string();
        assert_eq!(err, "invalid setting: batch size must be at least 1");
        let bad = TrainConfig { augment_shift: 28, ..config() };
        let err = Trainer::new(&mut model, &train_set, &bad).unwrap_err().to_string();
        assert!(err.contains("a shift of 28 pixels"), "{err}");
        let wide = Dataset { rows: 28, cols: 30, pixels: vec![0; 28 * 30 * 4], labels: vec![0; 4] };
        let err = Trainer::new(&mut model, &wide, &config()).unwrap_err().to_string();
        assert!(err.contains("but the data has 28x30 images"), "{err}");
        let empty = train_set.take(0);
        let err = Trainer::new(&mut model, &empty, &config()).unwrap_err().to_string();
        assert!(err.contains("the training set is empty"), "{err}");
    }
}

//! A run's settings and their command-line spellings: the length, the learning-rate schedule, the
//! optimizer and its hyper-parameters, the initializer choice, and [`TrainConfig`] that holds them.
//!
//! Plain data: the numerics live beside it ([`crate::optim::Optimizer`] applies an [`OptimizerConfig`],
//! [`Init::fill`] draws weights), and a checkpoint stores a [`TrainConfig`] as JSON (docs/FORMAT.md), so the
//! serde names here are part of the checkpoint format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A setting out of range.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid setting: {0}")]
pub struct ConfigError(pub String);

/// How long to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    Epochs(u64),
    Steps(u64),
}

/// How the learning rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The same rate throughout, as in the series.
    Constant,
    /// Half a cosine from the full rate down to zero at the last step.
    Cosine,
}

pub const SCHEDULE_NAMES: [&str; 2] = ["constant", "cosine"];

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(format!("unknown schedule '{s}'; valid: {}", SCHEDULE_NAMES.join(", "))),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        })
    }
}

impl Schedule {
    /// The rate for update `step` (0-based) of `total`.
    pub fn rate(self, base: f32, step: u64, total: u64) -> f32 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
}

pub const OPTIMIZER_NAMES: [&str; 3] = ["sgd", "momentum", "adam"];

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "momentum" => Ok(OptimizerKind::Momentum),
            "adam" => Ok(OptimizerKind::Adam),
            _ => Err(format!("unknown optimizer '{s}'; valid: {}", OPTIMIZER_NAMES.join(", "))),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
        })
    }
}

impl OptimizerKind {
    /// Learning rate when none is given: TF1's Adam default, and 0.01 for the others.
    pub fn default_lr(self) -> f32 {
        match self {
            OptimizerKind::Adam => 0.001,
            OptimizerKind::Sgd | OptimizerKind::Momentum => 0.01,
        }
    }
}

/// Hyper-parameters; the defaults are TF1's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl OptimizerConfig {
    pub fn new(kind: OptimizerKind) -> Self {
        OptimizerConfig { kind, momentum: 0.9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }

    /// The same settings for the GPU's update kernels.
    #[cfg(feature = "gpu")]
    pub fn gpu_spec(&self) -> kiln_gpu::OptimizerSpec {
        kiln_gpu::OptimizerSpec {
            rule: match self.kind {
                OptimizerKind::Sgd => kiln_gpu::UpdateRule::Sgd,
                OptimizerKind::Momentum => kiln_gpu::UpdateRule::Momentum,
                OptimizerKind::Adam => kiln_gpu::UpdateRule::Adam,
            },
            momentum: self.momentum,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
        }
    }
}

/// How to draw a layer's initial weights ([`Init::fill`] draws them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// N(0, 1): the series' first, broken try (cost in the thousands).
    Normal,
    /// N(0, 1) × 0.01: the second broken try (activations vanish, cost stuck at ln 10 = 2.3026).
    NormalSmall,
    /// Xavier/Glorot uniform: U(±sqrt(6 / (fan_in + fan_out))).
    Xavier,
    /// TF1 `variance_scaling_initializer` defaults (factor 2, fan-in, truncated normal): a normal with
    /// stddev sqrt(1.3 × 2 / fan_in), redrawn outside ±2 stddev. The 1.3 is TF1's correction for the
    /// variance the truncation removes.
    He,
}

/// What `--init` selects: one initializer for every layer, or the series' final choice per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InitChoice {
    /// He for every ReLU layer, Xavier for the last (output) layer: where post 6 ended up.
    #[default]
    Default,
    All(Init),
}

pub const INIT_NAMES: [&str; 5] = ["default", "he", "xavier", "normal", "normal-0.01"];

impl FromStr for InitChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "default" => InitChoice::Default,
            "he" => InitChoice::All(Init::He),
            "xavier" => InitChoice::All(Init::Xavier),
            "normal" => InitChoice::All(Init::Normal),
            "normal-0.01" => InitChoice::All(Init::NormalSmall),
            _ => return Err(format!("unknown initializer '{s}'; valid: {}", INIT_NAMES.join(", "))),
        })
    }
}

impl fmt::Display for InitChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitChoice::Default => "default",
            InitChoice::All(Init::He) => "he",
            InitChoice::All(Init::Xavier) => "xavier",
            InitChoice::All(Init::Normal) => "normal",
            InitChoice::All(Init::NormalSmall) => "normal-0.01",
        })
    }
}

impl InitChoice {
    /// The initializer for a parametric layer; `is_last` marks the output layer.
    pub fn for_layer(self, is_last: bool) -> Init {
        match self {
            InitChoice::Default if is_last => Init::Xavier,
            InitChoice::Default => Init::He,
            InitChoice::All(init) => init,
        }
    }
}

/// Everything a run is trained with (the initializer and its seed go to [`crate::Model::new`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub length: Length,
    /// Images per update.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    /// Seed for the data order and augmentation (initialisation takes its own seed in [`crate::Model::new`]).
    pub seed: u64,
    /// Random shift of each training image by up to this many pixels on each axis; 0 turns it off.
    pub augment_shift: usize,
}

impl TrainConfig {
    /// Checks the ranges a user can get wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.batch == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be a positive number, got {}", self.lr));
        }
        match self.length {
            Length::Epochs(0) => bad("epochs must be at least 1".into()),
            Length::Steps(0) => bad("steps must be at least 1".into()),
            _ => Ok(()),
        }
    }

    /// Total updates for a training set of `examples`.
    pub fn total_steps(&self, examples: usize) -> u64 {
        match self.length {
            Length::Steps(s) => s,
            Length::Epochs(e) => e * examples.div_ceil(self.batch) as u64,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ten Adam steps at batch 64 with a constant rate: a small, valid configuration for tests.
    pub(crate) fn config() -> TrainConfig {
        TrainConfig {
            length: Length::Steps(10),
            batch: 64,
            lr: 0.001,
            optimizer: OptimizerConfig::new(OptimizerKind::Adam),
            schedule: Schedule::Constant,
            seed: 1,
            augment_shift: 0,
        }
    }

    #[test]
    fn rejects_non_positive_settings() {
        let mut c = config();
        c.batch = 0;
        assert!(c.validate().unwrap_err().to_string().contains("batch size"));
        let mut c = config();
        c.lr = -1.0;
        assert!(c.validate().unwrap_err().to_string().contains("learning rate"));
        c.lr = f32::NAN;
        assert!(c.validate().is_err());
        let mut c = config();
        c.length = Length::Steps(0);
        assert!(c.validate().unwrap_err().to_string().contains("steps"));
        c.length = Length::Epochs(0);
        assert_eq!(c.validate().unwrap_err().to_string(), "invalid setting: epochs must be at least 1");
    }

    #[test]
    fn total_steps_rounds_the_last_batch_up() {
        let c = TrainConfig { length: Length::Epochs(3), batch: 64, ..config() };
        assert_eq!(c.total_steps(10_000), 3 * 157);
        assert_eq!(config().total_steps(10_000), 10);
    }

    #[test]
    fn cosine_schedule_ends_near_zero() {
        assert_eq!(Schedule::Cosine.rate(1.0, 0, 100), 1.0);
        assert!((Schedule::Cosine.rate(1.0, 50, 100) - 0.5).abs() < 1e-6);
        assert!(Schedule::Cosine.rate(1.0, 99, 100) < 0.001);
        assert_eq!(Schedule::Constant.rate(0.25, 99, 100), 0.25);
    }

    #[test]
    fn every_name_parses_and_prints_back() {
        for name in SCHEDULE_NAMES {
            assert_eq!(name.parse::<Schedule>().unwrap().to_string(), name);
        }
        for name in OPTIMIZER_NAMES {
            assert_eq!(name.parse::<OptimizerKind>().unwrap().to_string(), name);
        }
        for name in INIT_NAMES {
            assert_eq!(name.parse::<InitChoice>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn parse_lists_valid_names() {
        assert_eq!("adam".parse::<OptimizerKind>(), Ok(OptimizerKind::Adam));
        assert!("rmsprop".parse::<OptimizerKind>().unwrap_err().contains("sgd, momentum, adam"));
        assert!("linear".parse::<Schedule>().unwrap_err().contains("constant, cosine"));
        assert_eq!("normal-0.01".parse::<InitChoice>(), Ok(InitChoice::All(Init::NormalSmall)));
        let err = "glorot".parse::<InitChoice>().unwrap_err();
        assert!(err.contains("he, xavier, normal, normal-0.01"), "{err}");
    }

    /// The serde spellings are stored in every checkpoint: they must not drift.
    #[test]
    fn the_stored_spelling_is_stable() {
        let json = serde_json::to_string(&config()).unwrap();
        assert_eq!(
            json,
            r#"{"length":{"steps":10},"batch":64,"lr":0.001,"optimizer":{"kind":"adam","momentum":0.9,"beta1":0.9,"beta2":0.999,"epsilon":1e-8},"schedule":"constant","seed":1,"augment_shift":0}"#
        );
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), config());
    }
}

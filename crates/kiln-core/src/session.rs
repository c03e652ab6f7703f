//! A session: a validated model plus a caller-provided arena, ready to classify without allocating.
//!
//! ```text
//! arena (bytes, 4-aligned) = [ ping: max_batch × largest activation f32                    ]
//!                            [ pong: max_batch × largest activation f32                    ]
//!                            [ integer scratch (quantized models only; runtime.rs lays it out) ]
//!                            [ probabilities: max_batch × classes f32                      ]
//! ```
//! The memory plan is static ping-pong: each layer reads one buffer and writes the other, ReLU and flatten
//! work in place. The two largest neighbouring activations bound any plan that keeps whole activations
//! (for the VGG, conv1's output and conv2's output, 32×32×64 floats each), so ping-pong is optimal here.

use core::fmt;

use crate::format::Model;
use crate::kernels::{self, Isa};
use crate::parallel::{Parallel, Serial};
use crate::reference::ForwardError;
use crate::runtime;

const F32: usize = core::mem::size_of::<f32>();

impl Model<'_> {
    /// Exact bytes of arena a [`Session`] needs to run up to `max_batch` images at once (saturates at
    /// `usize::MAX` on overflow, which no arena satisfies).
    pub fn arena_size(&self, max_batch: usize) -> usize {
        let probabilities = max_batch.saturating_mul(self.metadata().classes).saturating_mul(F32);
        let working = if self.has_static_activations() {
            let layout = runtime::StaticLayout::new(self, max_batch);
            layout.first.saturating_add(layout.second)
        } else {
            runtime::activation_len(self, max_batch)
                .saturating_add(runtime::scratch_len(self, max_batch))
                .saturating_mul(F32)
        };
        working.saturating_add(probabilities)
    }
}

/// Why a session could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// `max_batch` is zero.
    ZeroBatch,
    /// The arena holds `got` bytes; [`Model::arena_size`] says `needed`.
    ArenaTooSmall { needed: usize, got: usize },
    /// The arena does not start at a multiple of 4 bytes (it holds f32 values).
    ArenaMisaligned { address_mod_4: usize },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SessionError::ZeroBatch => write!(f, "the maximum batch size must be at least 1"),
            SessionError::ArenaTooSmall { needed, got } => {
                write!(f, "the arena is {got} bytes, the model needs {needed} (Model::arena_size)")
            }
            SessionError::ArenaMisaligned { address_mod_4 } => {
                write!(f, "the arena must be 4-byte aligned, its address is {address_mod_4} past a multiple of 4")
            }
        }
    }
}

impl core::error::Error for SessionError {}

/// Why one run failed. The session stays usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// Zero images, or more than the session's `max_batch`.
    BatchSize { batch: usize, max: usize },
    /// The input holds `got` values; `batch` images of the model's input shape need `expected`.
    InputLength { expected: usize, got: usize },
    /// Input value `index` is NaN or infinite. (Pixels are `u8` and always finite.)
    NonFiniteInput { index: usize },
    /// A kernel rejected a buffer: a bug, never expected from a validated model.
    Forward(ForwardError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RunError::BatchSize { batch, max } => write!(f, "batch of {batch} images; this session runs 1 to {max}"),
            RunError::InputLength { expected, got } => write!(f, "input has {got} values, expected {expected}"),
            RunError::NonFiniteInput { index } => write!(f, "input value {index} is NaN or infinite"),
            RunError::Forward(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RunError {}

impl From<ForwardError> for RunError {
    fn from(e: ForwardError) -> Self {
        RunError::Forward(e)
    }
}

/// The result of one run, borrowed from the session's arena.
#[derive(Clone, Copy, Debug)]
pub struct Output<'s> {
    /// `[batch, classes]`
    pub logits: &'s [f32],
    /// `[batch, classes]`, softmax of the logits; each row sums to 1.
    pub probabilities: &'s [f32],
    pub classes: usize,
}

impl Output<'_> {
    pub fn batch(&self) -> usize {
        self.logits.len() / self.classes
    }

    /// The most probable class of image `image` (the first on ties).
    pub fn class(&self, image: usize) -> usize {
        let row = &self.probabilities[image * self.classes..][..self.classes];
        row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &p)| if p > best.1 { (i, p) } else { best }).0
    }
}

/// A model bound to an arena. Creating and running one allocates nothing.
#[derive(Debug)]
pub struct Session<'a> {
    model: &'a Model<'a>,
    /// `arena_size(max_batch)` bytes, 4-aligned: the working memory, then the probabilities.
    arena: &'a mut [u8],
    max_batch: usize,
    isa: Isa,
    parallel: &'a dyn Parallel,
}

impl fmt::Debug for dyn Parallel + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Parallel({} threads)", self.threads())
    }
}

impl<'a> Session<'a> {
    /// Binds `model` to `arena`, which must be 4-byte aligned and hold at least
    /// [`model.arena_size(max_batch)`](Model::arena_size) bytes. Uses the fastest kernels this CPU has.
    pub fn new(model: &'a Model<'a>, arena: &'a mut [u8], max_batch: usize) -> Result<Session<'a>, SessionError> {
        if max_batch == 0 {
            return Err(SessionError::ZeroBatch);
        }
        let needed = model.arena_size(max_batch);
        if arena.len() < needed {
            return Err(SessionError::ArenaTooSmall { needed, got: arena.len() });
        }
        let address_mod_4 = arena.as_ptr() as usize % F32;
        if address_mod_4 != 0 {
            return Err(SessionError::ArenaMisaligned { address_mod_4 });
        }
        Ok(Session { model, arena: &mut arena[..needed], max_batch, isa: Isa::best(), parallel: &Serial })
    }

    /// Runs each integer layer's parts (ranges of output pixels or channels) on `parallel`, for example
    /// [`Workers`](crate::parallel::Workers). Results are the same bits on any number of threads.
    pub fn set_parallel(&mut self, parallel: &'a dyn Parallel) {
        self.parallel = parallel;
    }

    /// How many threads a run uses.
    pub fn threads(&self) -> usize {
        self.parallel.threads()
    }

    /// Runs on a chosen kernel build instead (falls back to the portable one if this CPU lacks it).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = if isa.is_available() { isa } else { Isa::Portable };
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn model(&self) -> &'a Model<'a> {
        self.model
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn check_batch(&self, batch: usize, got: usize) -> Result<usize, RunError> {
        if batch == 0 || batch > self.max_batch {
            return Err(RunError::BatchSize { batch, max: self.max_batch });
        }
        let expected = batch * self.model.input_shape().len();
        if got != expected {
            return Err(RunError::InputLength { expected, got });
        }
        Ok(expected)
    }

    /// The arena's parts for the model's mode: the first working buffer (where the input goes), the rest of
    /// the working memory, and the probabilities.
    fn parts(&mut self) -> (&mut [u8], &mut [u8], &mut [f32]) {
        let classes = self.model.metadata().classes;
        let first = if self.model.has_static_activations() {
            runtime::StaticLayout::new(self.model, self.max_batch).first
        } else {
            runtime::activation_len(self.model, self.max_batch) * F32
        };
        let probabilities_at = self.arena.len() - self.max_batch * classes * F32;
        let (working, probabilities) = self.arena.split_at_mut(probabilities_at);
        let (a, b) = working.split_at_mut(first);
        (a, b, bytemuck::cast_slice_mut(probabilities))
    }

    /// Classifies `batch` images given as normalised f32 values, `[batch, h, w, c]`.
    pub fn run(&mut self, input: &[f32], batch: usize) -> Result<Output<'_>, RunError> {
        let len = self.check_batch(batch, input.len())?;
        if let Some(index) = input.iter().position(|v| !v.is_finite()) {
            return Err(RunError::NonFiniteInput { index });
        }
        let model = self.model;
        let (a, _, _) = self.parts();
        if model.has_static_activations() {
            runtime::quantize_input(model, input, &mut a[..len]);
        } else {
            bytemuck::cast_slice_mut::<u8, f32>(a)[..len].copy_from_slice(input);
        }
        self.finish(batch)
    }

    /// Classifies `batch` images of 8-bit pixels, `[batch, h, w, c]`, normalised as the model's metadata
    /// says: `(pixel / 255 - mean) / std`.
    pub fn run_pixels(&mut self, pixels: &[u8], batch: usize) -> Result<Output<'_>, RunError> {
        let len = self.check_batch(batch, pixels.len())?;
        let model = self.model;
        let meta = model.metadata();
        let normalise = |p: u8| (p as f32 / 255.0 - meta.mean) / meta.std;
        let (a, _, _) = self.parts();
        if let Some(scale) = model.activation_scale(0).filter(|_| model.has_static_activations()) {
            // Straight to the first layer's levels: one small table, no f32 copy of the image.
            let inverse = 1.0 / scale.scale;
            let mut table = [0u8; 256];
            for (p, q) in table.iter_mut().enumerate() {
                *q = kernels::quantized_level(normalise(p as u8), inverse, scale.zero);
            }
            for (q, &p) in a[..len].iter_mut().zip(pixels) {
                *q = table[p as usize];
            }
        } else {
            for (x, &p) in bytemuck::cast_slice_mut::<u8, f32>(a)[..len].iter_mut().zip(pixels) {
                *x = normalise(p);
            }
        }
        self.finish(batch)
    }

    fn finish(&mut self, batch: usize) -> Result<Output<'_>, RunError> {
        let (exec, model) = (runtime::Exec { isa: self.isa, parallel: self.parallel }, self.model);
        let classes = model.metadata().classes;
        let (a, b, probabilities) = self.parts();
        let logits = if model.has_static_activations() {
            runtime::run_layers_static(exec, model, batch, a, b)?
        } else {
            runtime::run_layers(exec, model, batch, bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b))?
        };
        let probabilities = &mut probabilities[..batch * classes];
        probabilities.copy_from_slice(logits);
        kernels::softmax_in_place(probabilities, classes);
        Ok(Output { logits, probabilities, classes })
    }
}

//! Kiln in the browser: the wasm CPU runtime (kiln-core, built with `simd128`) and the WebGPU path (kiln-gpu's
//! `GpuSession`, the same shaders as native) behind the demo page.
//!
//! The page hands over a model file's bytes once ([`Classifier::new`] validates them), then a drawing's
//! pixels: [`preprocess`] turns any grayscale image into the 28x28 MNIST-style digit exactly as
//! `kiln predict` does (it is the same function), and [`Classifier::classify`] runs it. A run allocates
//! nothing: the arena is sized once from the model.

use std::cell::RefCell;
use std::rc::Rc;

use kiln_core::preprocess::{self, PreprocessError, SIDE};
use kiln_core::{Model, Session};
use kiln_gpu::{Gpu, GpuSession, Kernels};
use wasm_bindgen::prelude::*;

self_cell::self_cell!(
    /// The file's bytes and the validated model borrowing them.
    struct Loaded {
        owner: Box<[u8]>,
        #[covariant]
        dependent: Model,
    }
    impl {Debug}
);

/// A validated model with its arena, ready to classify 28x28 digits.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Classifier {
    loaded: Loaded,
    /// `Model::arena_size(1)` bytes, as u32 for alignment.
    arena: Vec<u32>,
}

#[wasm_bindgen]
impl Classifier {
    /// Validates `bytes` as a `.kiln` model taking 28x28 grayscale digits. The error names what is wrong
    /// (a truncated download fails its length or checksum check).
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: Vec<u8>) -> Result<Classifier, JsError> {
        let loaded = Loaded::try_new(bytes.into_boxed_slice(), |b| Model::from_bytes(b))
            .map_err(|e| JsError::new(&format!("not a usable Kiln model: {e}")))?;
        let shape = loaded.borrow_dependent().input_shape();
        if (shape.h, shape.w, shape.c) != (SIDE, SIDE, 1) {
            return Err(JsError::new(&format!("the model takes {shape} inputs, not 28x28 grayscale digits")));
        }
        let arena = vec![0u32; loaded.borrow_dependent().arena_size(1).div_ceil(4)];
        Ok(Classifier { loaded, arena })
    }

    /// The network's name from the metadata (`convnet4`, `vgg`).
    pub fn name(&self) -> String {
        self.loaded.borrow_dependent().metadata().model_name().to_string()
    }

    /// How the weights are stored (`int8`, `int4`, `mixed: ...`).
    pub fn quantization(&self) -> String {
        self.loaded.borrow_dependent().metadata().quantization().to_string()
    }

    /// Test accuracy measured when the model was packed, if it was.
    pub fn accuracy(&self) -> Option<f64> {
        self.loaded.borrow_dependent().metadata().test_accuracy()
    }

    /// Size of the model file in bytes.
    pub fn size(&self) -> usize {
        self.loaded.borrow_owner().len()
    }

    /// Bytes of working memory a run uses (the arena).
    pub fn arena_bytes(&self) -> usize {
        self.arena.len() * 4
    }

    /// Class labels, in order.
    pub fn labels(&self) -> Vec<String> {
        let model = self.loaded.borrow_dependent();
        (0..model.metadata().classes).map(|c| model.metadata().label(c).to_string()).collect()
    }

    /// Probabilities of each class for one 28x28 digit (784 bytes, ink bright on dark, as [`preprocess`]
    /// returns it).
    pub fn classify(&mut self, digit: &[u8]) -> Result<Vec<f32>, JsError> {
        let model = self.loaded.borrow_dependent();
        let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut self.arena), 1)
            .map_err(|e| JsError::new(&e.to_string()))?;
        let out = session.run_pixels(digit, 1).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(out.probabilities.to_vec())
    }
}

/// Turns a `width × height` grayscale image (any polarity) into the 28x28 digit the networks expect, or
/// `None` when it is blank (an empty canvas: no prediction, and no error).
#[wasm_bindgen]
pub fn preprocess(gray: &[u8], width: usize, height: usize) -> Result<Option<Vec<u8>>, JsError> {
    let mut digit = [0u8; SIDE * SIDE];
    match preprocess::mnist_style(gray, width, height, &mut digit) {
        Ok(()) => Ok(Some(digit.to_vec())),
        Err(PreprocessError::Blank) => Ok(None),
        Err(e) => Err(JsError::new(&e.to_string())),
    }
}

/// Whether this build uses wasm SIMD (simd128).
#[wasm_bindgen]
pub fn simd() -> bool {
    cfg!(target_feature = "simd128")
}

/// Softmax of one row of logits.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&z| (z - top).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[derive(Debug)]
struct GpuState {
    session: GpuSession,
    logits: Vec<f32>,
}

/// A model on the browser's WebGPU device: weights uploaded as stored and dequantized in the shaders.
#[wasm_bindgen]
#[derive(Debug)]
pub struct GpuClassifier {
    /// Taken out while a prediction runs, so no borrow is held across the await.
    state: Rc<RefCell<Option<GpuState>>>,
    adapter: String,
}

#[wasm_bindgen]
impl GpuClassifier {
    /// Opens the browser's WebGPU adapter and uploads the model. Rejects with a message when there is no
    /// adapter or the device refuses the model (the page then falls back to the wasm CPU path).
    pub async fn create(bytes: Vec<u8>) -> Result<GpuClassifier, JsError> {
        let model = Model::from_bytes(&bytes).map_err(|e| JsError::new(&format!("not a usable Kiln model: {e}")))?;
        let gpu = Gpu::open().await.map_err(|e| JsError::new(&e.to_string()))?;
        let adapter = gpu.info().name.clone();
        let kernels = Kernels::new(&gpu).map_err(|e| JsError::new(&e.to_string()))?;
        let session = GpuSession::with_kernels(gpu, &kernels, &model, 1).map_err(|e| JsError::new(&e.to_string()))?;
        let logits = vec![0.0; session.classes()];
        Ok(GpuClassifier { state: Rc::new(RefCell::new(Some(GpuState { session, logits }))), adapter })
    }

    /// The adapter's name (SwiftShader in headless Chromium).
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Probabilities of each class for one 28x28 digit, as a promise.
    pub fn classify(&self, digit: Vec<u8>) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let taken = state.borrow_mut().take();
            let mut run = taken.ok_or_else(|| JsValue::from_str("a GPU prediction is still running"))?;
            let result = run.session.run_pixels_async(&digit, 1, &mut run.logits).await;
            let probabilities = softmax(&run.logits);
            *state.borrow_mut() = Some(run);
            result.map_err(|e| JsValue::from_str(&e.to_string()))?;
            Ok(js_sys::Float32Array::from(&probabilities[..]).into())
        })
    }
}

//! From a trained model to a packed `.kiln` file: the metadata, the packed parameters, and the accuracy the
//! packing costs, measured through kiln-core's runtime. `kiln convert` and `kiln web-assets` are thin
//! callers of this; importers of other formats produce a [`Model`] and a [`Provenance`] and use the rest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_core::network::NetworkError;
use kiln_train::data::Dataset;
use kiln_train::model::Model;
use kiln_train::network::Network;
use kiln_train::tensor_file::{Checkpoint, CheckpointError};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::eval::{self, EvalError, EvalOptions, Images};
use crate::quant_plan::{LayerWeights, QuantPlan};
use crate::writer::{self, Metadata, PackError, PackedTensor, Quant};

/// Why a conversion failed.
#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("reading {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Writing the `.kiln` file failed; nothing was left at the path.
    #[error(transparent)]
    Write(#[from] kiln_train::fs::WriteError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Calibration images of another size than the network's input.
    #[error("the network takes {expected} images; the calibration images are {rows}x{cols}")]
    CalibrationShape { expected: String, rows: usize, cols: usize },
    #[error("{layer}: {source}")]
    Quant { layer: String, source: crate::quant::QuantError },
    /// Static activation scales were asked for a network with a layer the 8-bit path does not run.
    #[error(
        "--activations static runs only the series' layers (3x3 convs, 2x2 max pools, dense, ReLU, pad, flatten); \
         layer {layer} is {kind}: pack with dynamic activations"
    )]
    StaticUnsupported { layer: usize, kind: &'static str },
}

/// What the `.kiln` metadata records about where a model came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The source file's name (no directory), or empty.
    pub file_name: String,
    /// The training step the weights are from.
    pub step: u64,
    /// SHA-256 of the source file, or zeros.
    pub sha256: [u8; 32],
}

/// A Kiln checkpoint or weights file, opened for conversion (every tensor's CRC-32 checked).
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub model: Model,
    pub step: u64,
    /// Size of the file in bytes.
    pub len: usize,
    pub sha256: [u8; 32],
    /// Whether the file holds optimizer slots (a training checkpoint) rather than the weights alone.
    pub optimizer_state: bool,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source, ConvertError> {
        let bytes = std::fs::read(path).map_err(|source| ConvertError::Read { path: path.to_path_buf(), source })?;
        let ckpt = Checkpoint::open(path)?;
        let model = ckpt.model()?;
        let optimizer_state = ckpt.names().iter().any(|n| n.ends_with("/Adam") || n.ends_with("/Momentum"));
        Ok(Source {
            path: path.to_path_buf(),
            model,
            step: ckpt.step(),
            len: bytes.len(),
            sha256: Sha256::digest(&bytes).into(),
            optimizer_state,
        })
    }

    pub fn network(&self) -> &Network {
        &self.model.network
    }

    /// The parametric layers' scopes and weight counts, for a [`QuantPlan`].
    pub fn layers(&self) -> Vec<LayerWeights> {
        layer_weights(&self.model)
    }

    pub fn provenance(&self) -> Provenance {
        Provenance {
            file_name: self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            step: self.step,
            sha256: self.sha256,
        }
    }
}

/// Scope names (`conv1`, `dense2`) and weight counts of `model`'s parametric layers, in order.
pub fn layer_weights(model: &Model) -> Vec<LayerWeights> {
    model
        .params
        .chunks(2)
        .map(|p| LayerWeights {
            scope: p[0].name.split('/').next().unwrap_or("").to_string(),
            weights: p[0].data.len(),
        })
        .collect()
}

/// The metadata of a `.kiln` file of `network`: its input, class labels (`0`, `1`, ...) and input
/// normalisation, where it came from and how it is quantized. No test accuracy yet.
pub fn metadata(network: &Network, provenance: &Provenance, quantization: &str) -> Result<Metadata, NetworkError> {
    let classes = network.classes()?;
    Ok(Metadata {
        input: network.input,
        labels: (0..classes).map(|c| c.to_string()).collect(),
        mean: network.normalization.mean,
        std: network.normalization.std,
        model_name: network.name.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        source_file: provenance.file_name.clone(),
        quantization: quantization.to_string(),
        source_step: provenance.step,
        source_sha256: provenance.sha256,
        test_correct: 0,
        test_examples: 0,
        activations: Vec::new(),
    })
}

/// Every layer's `(weights, bias)` of `model`, weights stored as `quants` says (one per parametric layer),
/// biases f32. A scale-shift's few values stay f32 whatever `quants` says (the format requires it).
pub fn pack_params(model: &Model, quants: &[Quant]) -> Result<Vec<(PackedTensor, PackedTensor)>, PackError> {
    let parametric = model.steps().iter().filter(|s| s.params.is_some());
    model
        .params
        .chunks(2)
        .zip(quants)
        .zip(parametric)
        .map(|((pair, &q), step)| {
            let q = if step.layer == kiln_core::network::Layer::ScaleShift { Quant::F32 } else { q };
            let (w, b) = (&pair[0], &pair[1]);
            Ok((
                writer::pack_tensor(&w.name, &w.dims, &w.data, q)?,
                writer::pack_tensor(&b.name, &b.dims, &b.data, Quant::F32)?,
            ))
        })
        .collect()
}

/// A whole `.kiln` file of `model`, weights stored as `quants` says.
pub fn pack(model: &Model, quants: &[Quant], meta: &Metadata) -> Result<Vec<u8>, PackError> {
    writer::write(&model.network.layers, &pack_params(model, quants)?, meta)
}

/// Writes a packed model to `path` atomically (temporary file, fsync, rename), so a failed write never
/// leaves a partial model behind. The converter's only file write: it goes through kiln-train's atomic
/// writer.
pub fn write_model_file(path: &Path, file: &[u8]) -> Result<(), ConvertError> {
    Ok(kiln_train::fs::write_atomic(path, file)?)
}

impl<'a> From<&'a Dataset> for Images<'a> {
    fn from(data: &'a Dataset) -> Self {
        Images { rows: data.rows, cols: data.cols, pixels: &data.pixels }
    }
}

/// What a file whose low-bit layers were rounded by GPTQ adds to its quantization description.
pub const GPTQ_SUFFIX: &str = ", GPTQ";

/// Training images GPTQ measures each layer's inputs on by default.
pub const GPTQ_IMAGES: usize = 256;

/// What [`Conversion::compensate_rounding`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Compensation {
    /// The layers GPTQ quantized (int4/int2 layers whose blocks tile their rows), and on how many images.
    pub layers: Vec<String>,
    pub images: usize,
    pub seconds: f64,
}

/// What a file with static activations adds to its quantization description.
pub const STATIC_SUFFIX: &str = ", static activations";

/// A model packed as a plan says: the file, and what went into it.
#[derive(Debug)]
pub struct Conversion<'m> {
    model: &'m Model,
    plan: QuantPlan,
    meta: Metadata,
    params: Vec<(PackedTensor, PackedTensor)>,
    file: Vec<u8>,
    pack_seconds: f64,
}

/// The test accuracy of a packed model and of the f32 packing of the same weights, both through
/// kiln-core's runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Size of the f32 file the packed one is compared with.
    pub reference_bytes: usize,
    /// The f32 file's prediction for every test image.
    pub reference: Vec<u8>,
    /// The packed file's prediction for every test image.
    pub predicted: Vec<u8>,
    pub total: usize,
    pub reference_correct: usize,
    pub correct: usize,
    /// Images where the two files predict the same class.
    pub agreement: usize,
    /// Time the measurement took.
    pub seconds: f64,
}

impl Measurement {
    /// `n` of the test images, in percent.
    pub fn percent(&self, n: usize) -> f64 {
        100.0 * n as f64 / self.total as f64
    }
}

impl<'m> Conversion<'m> {
    /// Packs `model` as `plan` says, with metadata from `provenance` and the plan's description.
    pub fn new(model: &'m Model, plan: QuantPlan, provenance: &Provenance) -> Result<Self, ConvertError> {
        let meta = metadata(&model.network, provenance, &plan.description)?;
        let started = Instant::now();
        let params = pack_params(model, &plan.quants)?;
        let file = writer::write(&model.network.layers, &params, &meta)?;
        let pack_seconds = started.elapsed().as_secs_f64();
        Ok(Conversion { model, plan, meta, params, file, pack_seconds })
    }

    pub fn plan(&self) -> &QuantPlan {
        &self.plan
    }

    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The `.kiln` file.
    pub fn file(&self) -> &[u8] {
        &self.file
    }

    pub fn into_file(self) -> Vec<u8> {
        self.file
    }

    /// Seconds spent quantizing and laying out the file.
    pub fn pack_seconds(&self) -> f64 {
        self.pack_seconds
    }

    /// Values in the file's tensors, weights and biases.
    pub fn weights(&self) -> usize {
        self.params.iter().map(|(w, b)| w.len() + b.len()).sum()
    }

    /// Bytes the tensors are stored in: values plus scales, padding not counted.
    pub fn stored_bytes(&self) -> usize {
        self.params.iter().map(|(w, b)| w.stored_bytes() + b.stored_bytes()).sum()
    }

    /// Stored bits per value, biases included.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.stored_bytes() as f64 / self.weights() as f64
    }

    /// Re-packs the int4 and int2 layers with GPTQ ([`crate::gptq`]): each layer's rounding errors are
    /// compensated within the layer, weighted by how its inputs correlate on `images` (training images: the
    /// test set stays unseen). Layers go in order, and each sees the inputs the quantized layers before it
    /// produce, so it also makes up for their errors. The weights stay in the plan's dtypes and sizes.
    pub fn compensate_rounding(&mut self, images: &Dataset) -> Result<Compensation, ConvertError> {
        let started = Instant::now();
        let input = self.model.input_shape();
        if (images.rows, images.cols) != (input.h, input.w) || input.c != 1 {
            return Err(ConvertError::CalibrationShape {
                expected: format!("{}x{}x{}", input.h, input.w, input.c),
                rows: images.rows,
                cols: images.cols,
            });
        }
        let mut quantized = self.model.clone();
        let mut layers = Vec::new();
        let parametric = self.model.steps().iter().filter(|s| s.params.is_some());
        for (step, &quant) in parametric.zip(&self.plan.quants) {
            let slot = step.params.expect("parametric");
            let cols = self.model.params[slot.weights()].dims.last().copied().unwrap_or(0);
            let rows = self.model.params[slot.weights()].data.len() / cols.max(1);
            if step.layer == kiln_core::network::Layer::ScaleShift || !crate::gptq::applies(quant, cols) {
                continue;
            }
            let hessian = input_hessian(&quantized, images, step);
            let weights = &mut quantized.params[slot.weights()];
            crate::gptq::quantize(&mut weights.data, rows, cols, hessian, quant)
                .map_err(|source| ConvertError::Quant { layer: weights.name.clone(), source })?;
            layers.push(weights.name.split('/').next().unwrap_or_default().to_string());
        }
        if layers.is_empty() {
            return Ok(Compensation { layers, images: images.len(), seconds: started.elapsed().as_secs_f64() });
        }
        self.params = pack_params(&quantized, &self.plan.quants)?;
        if !self.meta.quantization.contains(GPTQ_SUFFIX) {
            self.meta.quantization.push_str(GPTQ_SUFFIX);
        }
        self.file = writer::write(&self.model.network.layers, &self.params, &self.meta)?;
        Ok(Compensation { layers, images: images.len(), seconds: started.elapsed().as_secs_f64() })
    }

    /// Switches the file to static activations: calibrates every layer's input scale on `images` (training
    /// images: the test set stays unseen) through the integer path, stores them, and rewrites the file.
    pub fn make_static(&mut self, images: &Dataset, options: &EvalOptions<'_>) -> Result<(), ConvertError> {
        let layers = &self.model.network.layers;
        let unsupported =
            |l: &kiln_core::network::Layer| !(l.is_series() || matches!(l, kiln_core::network::Layer::Dropout { .. }));
        if let Some((layer, l)) = layers.iter().enumerate().find(|(_, l)| unsupported(l)) {
            return Err(ConvertError::StaticUnsupported { layer, kind: l.kind() });
        }
        self.meta.activations.clear();
        let dynamic = writer::write(&self.model.network.layers, &self.params, &self.meta)?;
        self.meta.activations = eval::calibrate(&dynamic, images.into(), options)?;
        if !self.meta.quantization.ends_with(STATIC_SUFFIX) {
            self.meta.quantization.push_str(STATIC_SUFFIX);
        }
        self.file = writer::write(&self.model.network.layers, &self.params, &self.meta)?;
        Ok(())
    }

    /// Runs the packed file and an f32 packing of the same weights over `test`, and records the packed
    /// file's test accuracy in its metadata (rewriting the file).
    pub fn measure(&mut self, test: &Dataset, options: &EvalOptions<'_>) -> Result<Measurement, ConvertError> {
        let started = Instant::now();
        let f32_meta = Metadata { activations: Vec::new(), ..self.meta.clone() };
        let reference_file = pack(self.model, &vec![Quant::F32; self.plan.quants.len()], &f32_meta)?;
        let reference = eval::predict_all(&reference_file, test.into(), options)?;
        let predicted = eval::predict_all(&self.file, test.into(), options)?;
        let total = test.len();
        let correct = eval::matching(&predicted, &test.labels);
        self.meta.test_correct = correct as u32;
        self.meta.test_examples = total as u32;
        self.file = writer::write(&self.model.network.layers, &self.params, &self.meta)?;
        Ok(Measurement {
            reference_bytes: reference_file.len(),
            reference_correct: eval::matching(&reference, &test.labels),
            correct,
            agreement: eval::matching(&reference, &predicted),
            reference,
            predicted,
            total,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// `Σ xᵀx` over the rows a conv or dense `step` of `model` multiplies by its weights when `model` runs
/// `images`: im2col patches (taps in the weights' `(ky, kx, ci)` order) for a conv, the input vector for a
/// dense layer. `[rows, rows]` for `rows` = the weights' input dimension.
fn input_hessian(model: &Model, images: &Dataset, step: &kiln_core::plan::Step) -> Vec<f64> {
    use kiln_train::gemm::{MatRef, matmul};
    use kiln_train::layers::conv2d::Conv2d;
    const BATCH: usize = 32;
    let shape = step.input;
    let window = step.layer.conv_window();
    let rows = window.map_or(shape.len(), |w| w.taps() * shape.c);
    let mut hessian = vec![0.0f32; rows * rows];
    let mut col = Vec::new();
    let mut ws = kiln_train::model::Workspace::new();
    let image_len = model.input_shape().len();
    let mut input = vec![0.0; BATCH * image_len];
    let mut labels = [0u8; BATCH];
    let indices: Vec<usize> = (0..images.len()).collect();
    for chunk in indices.chunks(BATCH) {
        let n = chunk.len();
        let x = &mut input[..n * image_len];
        kiln_train::batch::fill(images, model.network.normalization, chunk, 0, None, x, &mut labels[..n]);
        model.forward_probed(&mut ws, x, n, &mut |probed, x, _| {
            if probed.index != step.index {
                return;
            }
            let patches: &[f32] = match window {
                Some(window) => {
                    let conv = Conv2d { n, h: shape.h, w: shape.w, cin: shape.c, cout: 1, window };
                    col.resize(conv.rows() * rows, 0.0);
                    conv.im2col(x, &mut col);
                    &col
                }
                None => x,
            };
            let samples = patches.len() / rows;
            let p = MatRef::row_major(patches, samples, rows);
            matmul(&mut hessian, p.t(), p, true);
        });
    }
    hessian.into_iter().map(f64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::network::Layer;
    use kiln_train::config::InitChoice;
    use kiln_train::network::Normalization;

    fn tiny() -> Model {
        let network = Network {
            name: "tiny".into(),
            input: kiln_core::network::Shape::new(4, 4, 1),
            layers: vec![Layer::Flatten, Layer::Dense { units: 8 }, Layer::Relu, Layer::Dense { units: 3 }],
            normalization: Normalization { mean: 0.25, std: 0.5 },
        };
        Model::new(network, InitChoice::Default, 7).unwrap()
    }

    #[test]
    fn metadata_comes_from_the_network_and_the_source() {
        let model = tiny();
        let provenance = Provenance { file_name: "tiny-5.safetensors".into(), step: 5, sha256: [7; 32] };
        let meta = metadata(&model.network, &provenance, "int8").unwrap();
        assert_eq!((meta.mean, meta.std), (0.25, 0.5));
        assert_eq!(meta.labels, ["0", "1", "2"]);
        assert_eq!(
            (meta.source_step, meta.source_file.as_str(), meta.source_sha256),
            (5, "tiny-5.safetensors", [7; 32])
        );
        let layers = layer_weights(&model);
        assert_eq!(
            layers,
            [
                LayerWeights { scope: "dense1".into(), weights: 128 },
                LayerWeights { scope: "dense2".into(), weights: 24 }
            ]
        );
    }

    #[test]
    fn measuring_records_the_accuracy_in_the_file() {
        let model = tiny();
        let plan = QuantPlan::new(&layer_weights(&model), "int8", &["dense2=f16"]).unwrap();
        let mut conversion = Conversion::new(&model, plan, &Provenance::default()).unwrap();
        // dense1: 16x8 int8 levels, 8 f32 scales and 8 f32 biases; dense2: 8x3 f16 values and 3 f32 biases.
        assert_eq!(conversion.weights(), 128 + 8 + 24 + 3);
        assert_eq!(conversion.stored_bytes(), (128 + 4 * 8) + 4 * 8 + 2 * 24 + 4 * 3);
        let before = kiln_core::Model::from_bytes(conversion.file()).unwrap().metadata().test_accuracy();
        assert_eq!(before, None);
        let pixels: Vec<u8> = (0..10 * 16).map(|i| (i * 37 % 256) as u8).collect();
        let test = Dataset { rows: 4, cols: 4, pixels, labels: (0..10).map(|i| i % 3).collect() };
        let m = conversion.measure(&test, &EvalOptions::new(3)).unwrap();
        assert_eq!((m.total, m.predicted.len(), m.reference.len()), (10, 10, 10));
        assert_eq!(m.correct, eval::matching(&m.predicted, &test.labels));
        let file = kiln_core::Model::from_bytes(conversion.file()).unwrap();
        let meta = file.metadata();
        assert_eq!((meta.test_correct as usize, meta.test_examples), (m.correct, 10));
        assert_eq!((meta.mean, meta.std), (0.25, 0.5));
        // On a tie the later type counts as the common one.
        assert_eq!(meta.quantization(), "mixed: dense1=int8, others f16");
        // The same predictions with one thread as with three.
        assert_eq!(eval::predict_all(conversion.file(), (&test).into(), &EvalOptions::new(1)).unwrap(), m.predicted);
    }
}

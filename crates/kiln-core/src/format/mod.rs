//! The `.kiln` packed model format: a validating, zero-copy reader that needs no allocator.
//!
//! docs/FORMAT.md is the byte-by-byte specification; the constants below are its numbers.
//! [`Model::from_bytes`] checks everything a runtime relies on before it returns, so the kernels that
//! later walk a [`Model`] can index its tensors without further checks failing.

mod error;
mod tensor;

pub use error::FormatError;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) use tensor::multiplier_max;
pub use tensor::{DType, TensorView, Values, round_to_i32};

use crate::network::{Activation, Layer, PoolKind, Scalar, Shape, Window};
use crate::plan::{ParamSlot, Plan};

/// The first 8 bytes of every file.
pub const MAGIC: [u8; 8] = *b"KILNMODL";
/// The major version this reader reads. A different major version is rejected.
pub const VERSION_MAJOR: u16 = 1;
/// The newest minor version this code writes. 1 added the activation-scales section, 2 the layer records past
/// the series' (op codes 7 to 12); a file is written with the lowest minor version that holds it, so a
/// reader of 1.0 or 1.1 refuses a layer it does not know with `UnknownOp`. Newer minor versions are read.
pub const VERSION_MINOR: u16 = 2;
/// The minor version that added the activation-scales section.
pub const VERSION_MINOR_ACTIVATIONS: u16 = 1;
/// The minor version that added op codes 7 to 12.
pub const VERSION_MINOR_LAYERS: u16 = 2;
/// Tensor regions start at multiples of this many bytes, counted from the start of the file.
pub const ALIGN: usize = 256;
/// Sections other than the data section start at multiples of this.
pub const SECTION_ALIGN: usize = 8;
pub const HEADER_LEN: usize = 32;
pub const SECTION_ENTRY_LEN: usize = 24;
pub const LAYER_RECORD_LEN: usize = 20;
pub const TENSOR_ENTRY_LEN: usize = 96;
/// Limits that keep a [`Model`] a fixed size on the stack.
pub const MAX_SECTIONS: usize = 16;
pub const MAX_LAYERS: usize = 64;
pub const MAX_TENSORS: usize = 128;
/// Bytes of a tensor name.
pub const NAME_LEN: usize = 32;
/// Byte offset of the checksum in the header.
pub const CHECKSUM_OFFSET: usize = 16;

/// Section kinds.
pub const SECTION_META: u32 = 1;
pub const SECTION_GRAPH: u32 = 2;
pub const SECTION_TENSORS: u32 = 3;
pub const SECTION_DATA: u32 = 4;
/// Optional: one static activation scale per parametric layer (`kiln convert --activations static`).
pub const SECTION_ACTIVATIONS: u32 = 5;
/// Bytes per entry of the activation-scales section: f32 scale, u32 zero point.
pub const ACTIVATION_ENTRY_LEN: usize = 8;

/// Layer operator codes.
pub const OP_PAD: u32 = 1;
pub const OP_CONV3X3: u32 = 2;
pub const OP_MAXPOOL2X2: u32 = 3;
pub const OP_DENSE: u32 = 4;
pub const OP_RELU: u32 = 5;
pub const OP_FLATTEN: u32 = 6;
/// Since 1.2: a conv with any window, `[filters, weights, bias, window]` ([`Window::to_bits`]).
pub const OP_CONV: u32 = 7;
/// Since 1.2: pooling, `[kind, window, 0, 0]`; kind 1 max, 2 average, 3 average counting the padding.
pub const OP_POOL: u32 = 8;
/// Since 1.2: global average pooling, no arguments.
pub const OP_GLOBAL_AVGPOOL: u32 = 9;
/// Since 1.2: an activation, `[kind, a, b, 0]`; kind 1 tanh, 2 sigmoid, 3 clip (a = min, b = max, f32
/// bits), 4 leaky ReLU (a = slope, f32 bits).
pub const OP_ACTIVATION: u32 = 10;
/// Since 1.2: per-channel scale and shift, `[0, scale, shift, 0]`, both f32 `[c]`.
pub const OP_SCALE_SHIFT: u32 = 11;
/// Since 1.2: dropout, the identity at inference, `[rate (f32 bits), 0, 0, 0]`.
pub const OP_DROPOUT: u32 = 12;

const POOL_MAX: u32 = 1;
const POOL_AVG: u32 = 2;
const POOL_AVG_COUNT_PAD: u32 = 3;
const ACT_TANH: u32 = 1;
const ACT_SIGMOID: u32 = 2;
const ACT_CLIP: u32 = 3;
const ACT_LEAKY_RELU: u32 = 4;

/// The lowest minor version whose readers know every layer of `layers`.
pub fn minor_version_for(layers: &[Layer], has_activations: bool) -> u16 {
    if layers.iter().any(|l| !l.is_series()) {
        VERSION_MINOR_LAYERS
    } else if has_activations {
        VERSION_MINOR_ACTIVATIONS
    } else {
        0
    }
}

/// A graph record's operator code and four arguments for `layer`, whose tensors are `slot`'s in a table laid
/// out the way Kiln writes it (weights `2k`, bias `2k + 1`). [`decode_layer`] reads it back.
pub fn encode_layer(layer: &Layer, slot: Option<ParamSlot>) -> (u32, [usize; 4]) {
    let tensors = slot.map_or((0, 0), |s| (s.weights(), s.bias()));
    match *layer {
        Layer::Pad { top, bottom, left, right } => (OP_PAD, [top, bottom, left, right]),
        Layer::Conv2d { filters } => (OP_CONV3X3, [filters, tensors.0, tensors.1, 0]),
        Layer::Dense { units } => (OP_DENSE, [units, tensors.0, tensors.1, 0]),
        Layer::MaxPool => (OP_MAXPOOL2X2, [0; 4]),
        Layer::Relu => (OP_RELU, [0; 4]),
        Layer::Flatten => (OP_FLATTEN, [0; 4]),
        Layer::Conv { filters, window } => (OP_CONV, [filters, tensors.0, tensors.1, window.to_bits() as usize]),
        Layer::Pool { kind, window } => {
            let kind = match kind {
                PoolKind::Max => POOL_MAX,
                PoolKind::Avg { count_pad: false } => POOL_AVG,
                PoolKind::Avg { count_pad: true } => POOL_AVG_COUNT_PAD,
            };
            (OP_POOL, [kind as usize, window.to_bits() as usize, 0, 0])
        }
        Layer::GlobalAvgPool => (OP_GLOBAL_AVGPOOL, [0; 4]),
        Layer::Activation(a) => {
            let bits = |s: Scalar| s.to_bits() as usize;
            match a {
                Activation::Tanh => (OP_ACTIVATION, [ACT_TANH as usize, 0, 0, 0]),
                Activation::Sigmoid => (OP_ACTIVATION, [ACT_SIGMOID as usize, 0, 0, 0]),
                Activation::Clip { min, max } => (OP_ACTIVATION, [ACT_CLIP as usize, bits(min), bits(max), 0]),
                Activation::LeakyRelu { alpha } => (OP_ACTIVATION, [ACT_LEAKY_RELU as usize, bits(alpha), 0, 0]),
            }
        }
        Layer::ScaleShift => (OP_SCALE_SHIFT, [0, tensors.0, tensors.1, 0]),
        Layer::Dropout { rate } => (OP_DROPOUT, [rate.to_bits() as usize, 0, 0, 0]),
    }
}

/// The layer of graph record `index` (operator `op`, arguments `args`), with its weight and bias tensor
/// indices for conv and dense layers.
pub fn decode_layer(index: usize, op: u32, args: [u32; 4]) -> Result<(Layer, Option<(u32, u32)>), FormatError> {
    let unused_zero = |from: usize| args[from..].iter().all(|&a| a == 0);
    let bad = FormatError::BadLayerArgs { layer: index };
    Ok(match op {
        OP_PAD => {
            let [top, bottom, left, right] = args.map(|a| a as usize);
            (Layer::Pad { top, bottom, left, right }, None)
        }
        OP_CONV3X3 | OP_DENSE => {
            if !unused_zero(3) || args[0] == 0 {
                return Err(bad);
            }
            let width = args[0] as usize;
            let layer = if op == OP_CONV3X3 { Layer::Conv2d { filters: width } } else { Layer::Dense { units: width } };
            (layer, Some((args[1], args[2])))
        }
        OP_MAXPOOL2X2 | OP_RELU | OP_FLATTEN if unused_zero(0) => {
            let layer = match op {
                OP_MAXPOOL2X2 => Layer::MaxPool,
                OP_RELU => Layer::Relu,
                _ => Layer::Flatten,
            };
            (layer, None)
        }
        OP_MAXPOOL2X2 | OP_RELU | OP_FLATTEN => return Err(bad),
        OP_CONV => {
            if args[0] == 0 {
                return Err(bad);
            }
            (Layer::Conv { filters: args[0] as usize, window: Window::from_bits(args[3]) }, Some((args[1], args[2])))
        }
        OP_POOL => {
            let kind = match args[0] {
                POOL_MAX => PoolKind::Max,
                POOL_AVG => PoolKind::Avg { count_pad: false },
                POOL_AVG_COUNT_PAD => PoolKind::Avg { count_pad: true },
                _ => return Err(bad),
            };
            if !unused_zero(2) {
                return Err(bad);
            }
            (Layer::Pool { kind, window: Window::from_bits(args[1]) }, None)
        }
        OP_GLOBAL_AVGPOOL if unused_zero(0) => (Layer::GlobalAvgPool, None),
        OP_ACTIVATION => {
            let scalar = Scalar::from_bits;
            let activation = match args[0] {
                ACT_TANH if unused_zero(1) => Activation::Tanh,
                ACT_SIGMOID if unused_zero(1) => Activation::Sigmoid,
                ACT_CLIP if unused_zero(3) => Activation::Clip { min: scalar(args[1]), max: scalar(args[2]) },
                ACT_LEAKY_RELU if unused_zero(2) => Activation::LeakyRelu { alpha: scalar(args[1]) },
                _ => return Err(bad),
            };
            (Layer::Activation(activation), None)
        }
        OP_SCALE_SHIFT if args[0] == 0 && args[3] == 0 => (Layer::ScaleShift, Some((args[1], args[2]))),
        OP_DROPOUT if unused_zero(1) => (Layer::Dropout { rate: Scalar::from_bits(args[0]) }, None),
        OP_GLOBAL_AVGPOOL | OP_SCALE_SHIFT | OP_DROPOUT => return Err(bad),
        _ => return Err(FormatError::UnknownOp { layer: index, op }),
    })
}

/// Byte offsets, in the metadata section, of the input normalisation: `input = (pixel / 255 - mean) / std`.
pub const META_MEAN_OFFSET: usize = 16;
pub const META_STD_OFFSET: usize = 20;

/// Bytes of the metadata section's fixed part, before its strings.
pub const META_FIXED_LEN: usize = 80;
/// Strings in the metadata before the class labels: model name, kiln version, source file, quantization.
pub const META_LEADING_STRINGS: usize = 4;

/// The CRC-32 (IEEE) of `bytes` with the 4 checksum bytes counted as zeros.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let head = CHECKSUM_OFFSET.min(bytes.len());
    hasher.update(&bytes[..head]);
    if bytes.len() >= CHECKSUM_OFFSET + 4 {
        hasher.update(&[0; 4]);
        hasher.update(&bytes[CHECKSUM_OFFSET + 4..]);
    }
    hasher.finalize()
}

/// Section `kind` is `got` bytes, its contents need `needed`.
fn section_too_short(kind: u32, needed: usize, got: usize) -> FormatError {
    FormatError::SectionTooShort { kind, needed: needed as u64, got: got as u64 }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

/// Provenance and preprocessing, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct Metadata<'a> {
    /// Per-image input shape, e.g. 28x28x1.
    pub input: Shape,
    pub classes: usize,
    /// Preprocessing: `input = (pixel / 255 - mean) / std` for 8-bit pixels.
    pub mean: f32,
    pub std: f32,
    /// The global step of the source checkpoint.
    pub source_step: u64,
    /// SHA-256 of the source checkpoint file.
    pub source_sha256: [u8; 32],
    /// Test images the packed model classified correctly at pack time, out of `test_examples`
    /// (0 of 0 when it was not measured).
    pub test_correct: u32,
    pub test_examples: u32,
    strings: &'a [u8],
    string_count: usize,
}

impl<'a> Metadata<'a> {
    /// String `index` of the validated string list.
    fn string(&self, index: usize) -> &'a str {
        let mut at = 0;
        for i in 0..self.string_count {
            let len = u16_at(self.strings, at) as usize;
            let s = &self.strings[at + 2..at + 2 + len];
            if i == index {
                return core::str::from_utf8(s).unwrap_or("");
            }
            at += 2 + len;
        }
        ""
    }

    /// The network's name (`vgg`, `convnet4`, ...).
    pub fn model_name(&self) -> &'a str {
        self.string(0)
    }
    /// The kiln version that packed the file.
    pub fn kiln_version(&self) -> &'a str {
        self.string(1)
    }
    /// The source checkpoint's file name.
    pub fn source_file(&self) -> &'a str {
        self.string(2)
    }
    /// How the weights were quantized, e.g. `int8` or `mixed: dense1=int2, rest int4`.
    pub fn quantization(&self) -> &'a str {
        self.string(3)
    }
    /// The label of class `class` (`"0"`..`"9"` for MNIST); empty past the last class.
    pub fn label(&self, class: usize) -> &'a str {
        if class < self.classes { self.string(META_LEADING_STRINGS + class) } else { "" }
    }
    /// Test accuracy measured at pack time, as a fraction, if it was measured.
    pub fn test_accuracy(&self) -> Option<f64> {
        (self.test_examples > 0).then(|| self.test_correct as f64 / self.test_examples as f64)
    }
}

/// A parametric layer's tensors: indices into the tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub weights: usize,
    pub bias: usize,
}

/// A validated model, borrowing the file's bytes. Building one allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    minor: u16,
    layers: [Layer; MAX_LAYERS],
    bindings: [Option<Binding>; MAX_LAYERS],
    layer_count: usize,
    tensor_table: &'a [u8],
    tensor_count: usize,
    meta: Metadata<'a>,
    output: Shape,
    /// The activation-scales section's entries, when the file has one.
    activations: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Section {
    kind: u32,
    offset: u64,
    len: u64,
}

impl<'a> Model<'a> {
    /// Parses and validates a whole file; see docs/FORMAT.md for every rule. Reads `bytes` in place.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        let sections = check_header(bytes)?;
        let find = |kind| sections.iter().find(|s| s.kind == kind).copied().ok_or(FormatError::MissingSection { kind });
        let (meta_s, graph_s, tensors_s, data_s) =
            (find(SECTION_META)?, find(SECTION_GRAPH)?, find(SECTION_TENSORS)?, find(SECTION_DATA)?);
        if data_s.offset % ALIGN as u64 != 0 {
            return Err(FormatError::MisalignedSection { kind: SECTION_DATA, offset: data_s.offset });
        }
        let slice = |s: Section| &bytes[s.offset as usize..(s.offset + s.len) as usize];

        let meta = parse_meta(slice(meta_s))?;
        let (tensor_table, tensor_count) = parse_tensor_table(bytes, slice(tensors_s), data_s)?;
        let mut model = Model {
            bytes,
            minor: u16_at(bytes, 10),
            layers: [Layer::Relu; MAX_LAYERS],
            bindings: [None; MAX_LAYERS],
            layer_count: 0,
            tensor_table,
            tensor_count,
            meta,
            output: meta.input,
            activations: None,
        };
        model.parse_graph(slice(graph_s))?;
        if let Some(section) = sections.iter().find(|s| s.kind == SECTION_ACTIVATIONS) {
            model.activations = Some(model.parse_activations(slice(*section))?);
        }
        Ok(model)
    }

    fn parse_graph(&mut self, graph: &'a [u8]) -> Result<(), FormatError> {
        let too_short = |needed: usize| section_too_short(SECTION_GRAPH, needed, graph.len());
        if graph.len() < 8 {
            return Err(too_short(8));
        }
        let count = u32_at(graph, 0);
        if count == 0 || count as usize > MAX_LAYERS {
            return Err(FormatError::BadLayerCount { count });
        }
        if u32_at(graph, 4) != 0 {
            return Err(FormatError::ReservedNotZero { field: "graph header" });
        }
        let count = count as usize;
        let needed = 8 + count * LAYER_RECORD_LEN;
        if graph.len() < needed {
            return Err(too_short(needed));
        }
        // Decode every record, then check the network and each layer's tensors along the plan.
        let mut tensors = [(0u32, 0u32); MAX_LAYERS];
        for i in 0..count {
            let rec = &graph[8 + i * LAYER_RECORD_LEN..][..LAYER_RECORD_LEN];
            let op = u32_at(rec, 0);
            let args = [u32_at(rec, 4), u32_at(rec, 8), u32_at(rec, 12), u32_at(rec, 16)];
            let (layer, binding) = decode_layer(i, op, args)?;
            self.layers[i] = layer;
            tensors[i] = binding.unwrap_or_default();
        }
        self.layer_count = count;
        let layers = self.layers;
        let plan = Plan::new(&layers[..count], self.meta.input)?;
        for step in plan.steps().filter(|s| s.params.is_some()) {
            let (w, b) = tensors[step.index];
            self.bindings[step.index] = Some(self.bind(step.index, &step.layer, step.input, w, b)?);
        }
        self.output = plan.output();
        if self.output.len() != self.meta.classes {
            return Err(FormatError::ClassCountMismatch {
                graph: self.output.len() as u64,
                metadata: self.meta.classes as u64,
            });
        }
        Ok(())
    }

    /// Checks the activation-scales section: one entry per parametric layer, each layer's weights on the
    /// integer path, scales finite and positive, zero points 0 to 255.
    fn parse_activations(&self, section: &'a [u8]) -> Result<&'a [u8], FormatError> {
        let bad = |reason| FormatError::BadActivationScales { reason };
        if section.len() < 8 {
            return Err(section_too_short(SECTION_ACTIVATIONS, 8, section.len()));
        }
        let count = u32_at(section, 0) as usize;
        if u32_at(section, 4) != 0 {
            return Err(FormatError::ReservedNotZero { field: "activation scales header" });
        }
        let layers = self.plan().param_layers();
        if count != layers {
            return Err(bad("the entry count is not the number of conv and dense layers"));
        }
        let needed = 8 + count * ACTIVATION_ENTRY_LEN;
        if section.len() < needed {
            return Err(section_too_short(SECTION_ACTIVATIONS, needed, section.len()));
        }
        let entries = &section[8..needed];
        for e in entries.chunks_exact(ACTIVATION_ENTRY_LEN) {
            let scale = f32_at(e, 0);
            if !(scale.is_finite() && scale > 0.0) {
                return Err(bad("a scale is not finite and positive"));
            }
            if u32_at(e, 4) > 255 {
                return Err(bad("a zero point is above 255"));
            }
        }
        if self.layers[..self.layer_count].iter().any(|l| !(l.is_series() || matches!(l, Layer::Dropout { .. }))) {
            return Err(bad("static activations run only the series' layers (3x3 convs, 2x2 max pools, dense, ReLU)"));
        }
        for b in self.bindings[..self.layer_count].iter().flatten() {
            if !crate::kernels::runs_on_integers(self.tensor(b.weights).dtype) {
                return Err(bad("static activations need int8, int4 or int2 weights in every layer"));
            }
        }
        Ok(entries)
    }

    /// The static input scale of parametric layer `slot` (in layer order), if the file has them: its
    /// input is quantized once, by the layer before, as `x ≈ (q − zero) × scale`.
    pub fn activation_scale(&self, slot: usize) -> Option<crate::kernels::ActivationScale> {
        let e = self.activations?.get(slot * ACTIVATION_ENTRY_LEN..(slot + 1) * ACTIVATION_ENTRY_LEN)?;
        Some(crate::kernels::ActivationScale { scale: f32_at(e, 0), zero: u32_at(e, 4) as i32 })
    }

    /// Whether the file carries static activation scales (then every layer runs on 8-bit activations).
    pub fn has_static_activations(&self) -> bool {
        self.activations.is_some()
    }

    /// Checks that tensors `w` and `b` fit layer `index` on input `input`.
    fn bind(&self, index: usize, layer: &Layer, input: Shape, w: u32, b: u32) -> Result<Binding, FormatError> {
        let lookup = |t: u32| {
            if (t as usize) < self.tensor_count {
                Ok(self.tensor(t as usize))
            } else {
                Err(FormatError::TensorIndex { layer: index, tensor: t })
            }
        };
        let (weights, bias) = (lookup(w)?, lookup(b)?);
        let (want, rank) = layer.weight_dims(input).ok_or(FormatError::BadLayerArgs { layer: index })?;
        if weights.rank != rank || weights.dims != want {
            return Err(FormatError::TensorShapeMismatch { layer: index, tensor: w as usize });
        }
        let (_, bias_len) = layer.param_lens(input);
        if bias.rank != 1 || bias.dims[0] != bias_len {
            return Err(FormatError::TensorShapeMismatch { layer: index, tensor: b as usize });
        }
        if bias.dtype != DType::F32 {
            return Err(FormatError::BiasNotF32 { layer: index, tensor: b as usize });
        }
        if *layer == Layer::ScaleShift && weights.dtype != DType::F32 {
            return Err(FormatError::ScaleNotF32 { layer: index, tensor: w as usize });
        }
        Ok(Binding { weights: w as usize, bias: b as usize })
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The file's version, `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        (VERSION_MAJOR, self.minor)
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers[..self.layer_count]
    }

    /// The weight and bias tensors of layer `index`, for conv and dense layers.
    pub fn binding(&self, index: usize) -> Option<Binding> {
        self.bindings.get(index).copied().flatten()
    }

    pub fn metadata(&self) -> &Metadata<'a> {
        &self.meta
    }

    pub fn input_shape(&self) -> Shape {
        self.meta.input
    }

    /// The network's output shape (`[classes]`).
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }

    /// Tensor `index` of the table. Panics if `index >= tensor_count()`.
    pub fn tensor(&self, index: usize) -> TensorView<'a> {
        tensor_entry(self.bytes, &self.tensor_table[index * TENSOR_ENTRY_LEN..][..TENSOR_ENTRY_LEN])
    }

    /// The network's plan: the walk every path takes over its layers.
    pub fn plan(&self) -> Plan<'_> {
        // The graph was checked by `from_bytes` along this same plan, so this cannot fail; the fallback
        // (no layers) is never taken.
        Plan::new(self.layers(), self.meta.input).unwrap_or_else(|_| Plan::empty(self.meta.input))
    }

    /// Values per image of the largest activation, input and output included.
    pub fn max_activation_len(&self) -> usize {
        self.plan().max_activation_len()
    }
}

/// Rewrites the input normalisation of a valid file in place and restamps its checksum: the same model with
/// another preprocessing, without re-packing. The file is fully validated first; on any error it is left as
/// it was.
pub fn set_normalisation(bytes: &mut [u8], mean: f32, std: f32) -> Result<(), FormatError> {
    Model::from_bytes(bytes)?;
    if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
        return Err(FormatError::BadMetadata { reason: "the normalisation mean and std must be finite, std positive" });
    }
    let sections = check_header(bytes)?;
    let meta =
        sections.iter().find(|s| s.kind == SECTION_META).ok_or(FormatError::MissingSection { kind: SECTION_META })?;
    let at = meta.offset as usize;
    bytes[at + META_MEAN_OFFSET..][..4].copy_from_slice(&mean.to_le_bytes());
    bytes[at + META_STD_OFFSET..][..4].copy_from_slice(&std.to_le_bytes());
    let crc = checksum(bytes);
    bytes[CHECKSUM_OFFSET..][..4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks magic, version, flags, length and checksum, then reads and checks the section table.
fn check_header(bytes: &[u8]) -> Result<[Section; MAX_SECTIONS], FormatError> {
    let actual = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 8 && bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::Truncated { needed: HEADER_LEN as u64, got: actual });
    }
    if bytes[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let (major, minor) = (u16_at(bytes, 8), u16_at(bytes, 10));
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(FormatError::UnknownFlags { flags });
    }
    let declared = u64_at(bytes, 24);
    if declared > actual {
        return Err(FormatError::Truncated { needed: declared, got: actual });
    }
    if declared < actual {
        return Err(FormatError::TrailingBytes { declared, actual });
    }
    let stored = u32_at(bytes, CHECKSUM_OFFSET);
    let computed = checksum(bytes);
    if stored != computed {
        return Err(FormatError::ChecksumMismatch { stored, computed });
    }

    let count = u32_at(bytes, 20);
    if count == 0 || count as usize > MAX_SECTIONS {
        return Err(FormatError::BadSectionCount { count });
    }
    let table_end = HEADER_LEN + count as usize * SECTION_ENTRY_LEN;
    if bytes.len() < table_end {
        return Err(FormatError::Truncated { needed: table_end as u64, got: actual });
    }
    let mut sections = [Section::default(); MAX_SECTIONS];
    for i in 0..count as usize {
        let e = &bytes[HEADER_LEN + i * SECTION_ENTRY_LEN..][..SECTION_ENTRY_LEN];
        let s = Section { kind: u32_at(e, 0), offset: u64_at(e, 8), len: u64_at(e, 16) };
        if u32_at(e, 4) != 0 {
            return Err(FormatError::ReservedNotZero { field: "section entry" });
        }
        let end = s.offset.checked_add(s.len).filter(|&end| end <= actual);
        let Some(end) = end else {
            return Err(FormatError::SectionOutOfBounds { kind: s.kind, offset: s.offset, len: s.len });
        };
        if !s.offset.is_multiple_of(SECTION_ALIGN as u64) {
            return Err(FormatError::MisalignedSection { kind: s.kind, offset: s.offset });
        }
        if s.offset < table_end as u64 {
            return Err(FormatError::SectionsOverlap { first: 0, second: s.kind });
        }
        for other in &sections[..i] {
            if other.kind == s.kind {
                return Err(FormatError::DuplicateSection { kind: s.kind });
            }
            if s.offset < other.offset + other.len && other.offset < end {
                return Err(FormatError::SectionsOverlap { first: other.kind, second: s.kind });
            }
        }
        sections[i] = s;
    }
    Ok(sections)
}

fn parse_meta(meta: &[u8]) -> Result<Metadata<'_>, FormatError> {
    let too_short = |needed: usize| section_too_short(SECTION_META, needed, meta.len());
    if meta.len() < META_FIXED_LEN {
        return Err(too_short(META_FIXED_LEN));
    }
    let bad = |reason| FormatError::BadMetadata { reason };
    let dim = |at| u32_at(meta, at) as usize;
    let input = Shape::new(dim(0), dim(4), dim(8));
    if input.checked_len().unwrap_or(0) == 0 {
        return Err(bad("the input shape is empty or overflows"));
    }
    let classes = dim(12);
    if classes == 0 {
        return Err(bad("the class count is zero"));
    }
    let (mean, std) = (f32_at(meta, META_MEAN_OFFSET), f32_at(meta, META_STD_OFFSET));
    if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
        return Err(bad("the normalisation mean and std must be finite, std positive"));
    }
    let (test_correct, test_examples) = (u32_at(meta, 32), u32_at(meta, 36));
    if test_correct > test_examples {
        return Err(bad("more correct test images than test images"));
    }
    let mut source_sha256 = [0; 32];
    source_sha256.copy_from_slice(&meta[40..72]);
    if u32_at(meta, 76) != 0 {
        return Err(FormatError::ReservedNotZero { field: "metadata" });
    }
    let string_count = u32_at(meta, 72) as usize;
    if string_count < META_LEADING_STRINGS + classes {
        return Err(bad("fewer strings than the 4 leading ones plus one label per class"));
    }
    let strings = &meta[META_FIXED_LEN..];
    let mut at = 0usize;
    for _ in 0..string_count {
        if strings.len() < at + 2 {
            return Err(too_short(META_FIXED_LEN + at + 2));
        }
        let len = u16_at(strings, at) as usize;
        let Some(s) = strings.get(at + 2..at + 2 + len) else {
            return Err(too_short(META_FIXED_LEN + at + 2 + len));
        };
        if core::str::from_utf8(s).is_err() {
            return Err(bad("a string is not UTF-8"));
        }
        at += 2 + len;
    }
    Ok(Metadata {
        input,
        classes,
        mean,
        std,
        source_step: u64_at(meta, 24),
        source_sha256,
        test_correct,
        test_examples,
        strings: &strings[..at],
        string_count,
    })
}

/// Reads one tensor entry. Only called on entries [`parse_tensor_table`] has validated.
fn tensor_entry<'a>(file: &'a [u8], e: &'a [u8]) -> TensorView<'a> {
    let name_len = e[..NAME_LEN].iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    let rank = e[33] as usize;
    let dims = [u32_at(e, 40), u32_at(e, 44), u32_at(e, 48), u32_at(e, 52)].map(|d| d as usize);
    let region = |at| {
        let (offset, len) = (u64_at(e, at), u64_at(e, at + 8));
        (offset, &file[offset as usize..(offset + len) as usize])
    };
    let ((data_offset, data), (scales_offset, scales)) = (region(56), region(72));
    TensorView {
        name: core::str::from_utf8(&e[..name_len]).unwrap_or(""),
        dtype: DType::from_code(e[32]).unwrap_or(DType::F32),
        dims,
        rank,
        block: u32_at(e, 36) as usize,
        data,
        scales,
        data_offset,
        scales_offset,
    }
}

fn parse_tensor_table<'a>(file: &'a [u8], table: &'a [u8], data: Section) -> Result<(&'a [u8], usize), FormatError> {
    let too_short = |needed: usize| section_too_short(SECTION_TENSORS, needed, table.len());
    if table.len() < 8 {
        return Err(too_short(8));
    }
    let count = u32_at(table, 0);
    if count as usize > MAX_TENSORS {
        return Err(FormatError::BadTensorCount { count });
    }
    if u32_at(table, 4) != 0 {
        return Err(FormatError::ReservedNotZero { field: "tensor table header" });
    }
    let count = count as usize;
    let needed = 8 + count * TENSOR_ENTRY_LEN;
    if table.len() < needed {
        return Err(too_short(needed));
    }
    let entries = &table[8..needed];
    // Regions must come in table order, so checking each against the previous end rules out overlaps.
    let mut previous_end = data.offset;
    for t in 0..count {
        let e = &entries[t * TENSOR_ENTRY_LEN..][..TENSOR_ENTRY_LEN];
        let name_len = e[..NAME_LEN].iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        if name_len == 0
            || core::str::from_utf8(&e[..name_len]).is_err()
            || e[name_len..NAME_LEN].iter().any(|&b| b != 0)
        {
            return Err(FormatError::BadTensorName { tensor: t });
        }
        let dtype = DType::from_code(e[32]).ok_or(FormatError::UnknownDtype { tensor: t, dtype: e[32] })?;
        let rank = e[33];
        if u16_at(e, 34) != 0 || e[88..96].iter().any(|&b| b != 0) {
            return Err(FormatError::ReservedNotZero { field: "tensor entry" });
        }
        let dims = [u32_at(e, 40), u32_at(e, 44), u32_at(e, 48), u32_at(e, 52)];
        let r = rank as usize;
        if !(1..=4).contains(&r) || dims[..r].contains(&0) || dims[r..].iter().any(|&d| d != 0) {
            return Err(FormatError::BadRank { tensor: t, rank });
        }
        let overflow = FormatError::DimensionOverflow { tensor: t };
        let count_values = dims[..r].iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or(overflow)?;
        if usize::try_from(count_values).is_err() {
            return Err(overflow);
        }
        let block = u32_at(e, 36);
        let block_ok =
            if dtype.is_blocked() { block.is_power_of_two() && (8..=4096).contains(&block) } else { block == 0 };
        if !block_ok {
            return Err(FormatError::BadBlockSize { tensor: t, block });
        }
        let channels = dims[r - 1] as u64;
        let want_data = dtype.data_bytes(count_values).ok_or(overflow)?;
        let want_scales = dtype.scale_bytes(count_values, channels, block as u64).ok_or(overflow)?;
        for (at, region, want) in [(56, "value", want_data), (72, "scale", want_scales)] {
            let (offset, len) = (u64_at(e, at), u64_at(e, at + 8));
            if len != want {
                return Err(FormatError::TensorSize { tensor: t, region, expected: want, got: len });
            }
            if len == 0 {
                if offset != 0 {
                    return Err(FormatError::TensorOutOfBounds { tensor: t, offset, len });
                }
                continue;
            }
            let end = offset.checked_add(len).filter(|&end| offset >= data.offset && end <= data.offset + data.len);
            let Some(end) = end else {
                return Err(FormatError::TensorOutOfBounds { tensor: t, offset, len });
            };
            if offset % ALIGN as u64 != 0 {
                return Err(FormatError::MisalignedTensor { tensor: t, offset });
            }
            if offset < previous_end {
                return Err(FormatError::TensorsOverlap { tensor: t });
            }
            previous_end = end;
        }
        // Scales are read on every run: check them once here.
        let view = tensor_entry(file, e);
        let bad_scale = |index: usize| FormatError::BadScale { tensor: t, index: index as u64 };
        match dtype {
            DType::Int8 => {
                for (i, s) in view.scales.chunks_exact(4).enumerate() {
                    let s = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    if !s.is_finite() || s < 0.0 {
                        return Err(bad_scale(i));
                    }
                }
            }
            DType::Int4 | DType::Int2 => {
                for (i, s) in view.scales.chunks_exact(2).enumerate() {
                    let s = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]]));
                    if !s.is_finite() || s.is_sign_negative() && s.to_f32() != 0.0 {
                        return Err(bad_scale(i));
                    }
                }
            }
            DType::F32 | DType::F16 => {}
        }
    }
    Ok((entries, count))
}

//! ONNX files onto Kiln's layers, through tract-onnx's protobuf types and its tensor loader.
//!
//! The graph must be a chain: from its one data input, each tensor feeds one op (besides `Shape` ops, whose
//! small subgraphs are folded into constants), up to the graph's output. The activation's layout is tracked
//! along the way: tf2onnx writes NHWC input with a `Transpose` to NCHW before the convs and one back before the
//! flatten; PyTorch writes NCHW throughout and flattens in C,H,W order, so the following dense weights are
//! permuted to Kiln's H,W,C order. docs/IMPORT.md lists the ops and how each maps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_core::network::{Activation, Layer, PoolKind, Scalar, Shape, Window};
use kiln_train::model::Model;
use kiln_train::network::{Network, Normalization};
use prost::Message;
use thiserror::Error;
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::{self, AttributeProto, GraphProto, NodeProto, TensorProto};

/// The ops Kiln maps, for error messages.
pub const SUPPORTED_OPS: &str = "Conv (2-D, kernels up to 7x7, strides up to 7, any padding, group 1, no \
    dilation), MaxPool and AveragePool (2-D, windows up to 7, floor mode), GlobalAveragePool, ReduceMean (over H,W), \
    BatchNormalization (inference), Relu, Clip, Tanh, Sigmoid, LeakyRelu, Gemm (no transA), MatMul, per-channel \
    Add/Sub/Mul/Div, Flatten (axis 1), Reshape (flatten), Squeeze, Transpose (NHWC<->NCHW), Pad (zeros), \
    Identity, Dropout (inference), Softmax/LogSoftmax (last)";

/// Why an ONNX file could not be imported. Every variant names the file.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not an ONNX `ModelProto`, or has no graph.
    #[error("{}: not an ONNX model: {reason}", path.display())]
    NotOnnx { path: PathBuf, reason: String },
    /// The graph's input or output is not what Kiln runs (several inputs, a dynamic shape, a non-float type).
    #[error("{}: {reason}", path.display())]
    Interface { path: PathBuf, reason: String },
    /// A node is an op, or has attributes, Kiln does not map.
    #[error("{}: node {node} (op {op}, attributes {attributes}): {reason}. Kiln maps: {SUPPORTED_OPS}", path.display())]
    Unsupported { path: PathBuf, node: String, op: String, attributes: String, reason: String },
    /// The graph is not a chain from its input to its output.
    #[error("{}: not a chain: {reason}", path.display())]
    NotAChain { path: PathBuf, reason: String },
    /// An initializer is missing, of the wrong size, or not float32.
    #[error("{}: initializer \"{name}\": {reason}", path.display())]
    Initializer { path: PathBuf, name: String, reason: String },
    /// The mapped network is not a valid Kiln network.
    #[error("{}: the network found is not valid: {source}", path.display())]
    Network { path: PathBuf, source: kiln_core::network::NetworkError },
}

/// An imported ONNX file.
#[derive(Debug)]
pub struct OnnxImport {
    pub model: Model,
    /// The ops of the chain, input first: `op (node name)`.
    pub chain: Vec<String>,
    /// `producer_name producer_version` from the file.
    pub producer: String,
    /// Whether the input was NCHW and flattened in C,H,W order (dense weights permuted).
    pub permuted: bool,
    /// Whether the file's input is NCHW. The Kiln model takes NHWC, the same bytes for one channel; with more,
    /// the caller transposes.
    pub input_nchw: bool,
}

/// Whether `path` looks like an ONNX file (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `[n, h, w, c]`
    Nhwc,
    /// `[n, c, h, w]`
    Nchw,
    /// `[n, features]`; `chw` when the features are in C,H,W order (an NCHW flatten).
    Flat { chw: bool },
}

/// A folded integer, or the batch dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Int {
    Known(i64),
    Batch,
}

struct Importer<'g> {
    path: PathBuf,
    graph: &'g GraphProto,
    initializers: HashMap<&'g str, &'g TensorProto>,
    /// Outputs of `Constant` nodes.
    constants: HashMap<&'g str, &'g TensorProto>,
    producers: HashMap<&'g str, &'g NodeProto>,
    /// Shapes of chain tensors in their own layout, batch first.
    known: HashMap<String, Vec<Int>>,
}

fn describe_attributes(node: &NodeProto) -> String {
    if node.attribute.is_empty() {
        return "none".into();
    }
    let one = |a: &AttributeProto| {
        let value = if !a.ints.is_empty() {
            format!("{:?}", a.ints)
        } else if !a.floats.is_empty() {
            format!("{:?}", a.floats)
        } else if !a.s.is_empty() {
            format!("\"{}\"", String::from_utf8_lossy(&a.s))
        } else if a.t.is_some() {
            "<tensor>".into()
        } else if a.f != 0.0 {
            format!("{}", a.f)
        } else {
            format!("{}", a.i)
        };
        format!("{}={value}", a.name)
    };
    node.attribute.iter().map(one).collect::<Vec<_>>().join(", ")
}

fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() { format!("#{index}") } else { format!("\"{}\"", node.name) }
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

impl<'g> Importer<'g> {
    fn unsupported(&self, node: &NodeProto, reason: impl Into<String>) -> OnnxError {
        let index = self.graph.node.iter().position(|n| std::ptr::eq(n, node)).unwrap_or(0);
        OnnxError::Unsupported {
            path: self.path.clone(),
            node: node_label(node, index),
            op: node.op_type.clone(),
            attributes: describe_attributes(node),
            reason: reason.into(),
        }
    }

    fn tensor(&self, name: &str) -> Option<&'g TensorProto> {
        self.initializers.get(name).or_else(|| self.constants.get(name)).copied()
    }

    /// A float32 initializer (or `Constant`), as dims and values, through tract's tensor loader.
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
        let bad = |reason: String| OnnxError::Initializer { path: self.path.clone(), name: name.to_string(), reason };
        let t = self
            .tensor(name)
            .ok_or_else(|| bad("not an initializer or constant (Kiln needs weights stored in the file)".into()))?;
        if t.data_type != pb::tensor_proto::DataType::Float as i32 {
            return Err(bad(format!("data type {}, not float32", t.data_type)));
        }
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("a negative dimension".into()))?;
        let count =
            dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("its shape overflows".into()))?;
        if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty() {
            return Err(bad(
                "its data is in an external file, which Kiln does not read (save the model with its weights inside)"
                    .into(),
            ));
        }
        // tract checks sizes in some paths and panics in others; check first.
        if !t.raw_data.is_empty() && t.raw_data.len() != 4 * count {
            return Err(bad(format!("{} bytes of data for shape {dims:?} ({count} float32 values)", t.raw_data.len())));
        }
        if t.raw_data.is_empty() && t.data_location.is_none() && t.float_data.len() != count {
            return Err(bad(format!("{} values for shape {dims:?}", t.float_data.len())));
        }
        let path = self.path.to_str();
        let loaded = std::panic::catch_unwind(|| tract_onnx::tensor::load_tensor(&FopenDataResolver, t, path))
            .map_err(|_| bad("tract's tensor loader failed".into()))?
            .map_err(|e| bad(format!("{e}")))?;
        let values: Vec<f32> =
            loaded.to_plain_array_view::<f32>().map_err(|e| bad(format!("{e}")))?.iter().copied().collect();
        if values.len() != count {
            return Err(bad(format!("{} values for shape {dims:?}", values.len())));
        }
        Ok((dims, values))
    }

    fn ints_attr(&self, node: &NodeProto, name: &str) -> Option<Vec<i64>> {
        attr(node, name).map(|a| a.ints.clone())
    }

    /// Folds the integer tensor `name` (a constant, or a small subgraph over chain shapes).
    fn fold(&self, name: &str, depth: usize) -> Result<Vec<Int>, OnnxError> {
        if let Some(t) = self.tensor(name) {
            let ints: Vec<i64> = if !t.raw_data.is_empty() {
                match t.data_type {
                    7 => t.raw_data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect(),
                    6 => t
                        .raw_data
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as i64)
                        .collect(),
                    1 => t
                        .raw_data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4")) as i64)
                        .collect(),
                    other => {
                        return Err(OnnxError::Initializer {
                            path: self.path.clone(),
                            name: name.to_string(),
                            reason: format!("data type {other} where Kiln folds shapes"),
                        });
                    }
                }
            } else if !t.int64_data.is_empty() {
                t.int64_data.clone()
            } else if !t.int32_data.is_empty() {
                t.int32_data.iter().map(|&v| v as i64).collect()
            } else {
                t.float_data.iter().map(|&v| v as i64).collect()
            };
            return Ok(ints.into_iter().map(Int::Known).collect());
        }
        let node = self.producers.get(name).copied().ok_or_else(|| OnnxError::NotAChain {
            path: self.path.clone(),
            reason: format!("tensor \"{name}\" has no producer and is not an initializer"),
        })?;
        if depth > 64 {
            return Err(self.unsupported(node, "the shape subgraph is too deep to fold"));
        }
        let arg = |i: usize| -> Result<Vec<Int>, OnnxError> {
            let input = node
                .input
                .get(i)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| self.unsupported(node, format!("input {i} is missing")))?;
            self.fold(input, depth + 1)
        };
        let known = |v: &[Int]| -> Result<Vec<i64>, OnnxError> {
            v.iter()
                .map(|x| match x {
                    Int::Known(v) => Ok(*v),
                    Int::Batch => Err(self.unsupported(node, "it computes with the batch size")),
                })
                .collect()
        };
        match node.op_type.as_str() {
            "Shape" => {
                let of = &node.input[0];
                self.known.get(of.as_str()).cloned().ok_or_else(|| {
                    self.unsupported(node, format!("the shape of \"{of}\", which is not on the chain from the input"))
                })
            }
            "Identity" | "Cast" => arg(0),
            "Gather" => {
                let (data, indices) = (arg(0)?, known(&arg(1)?)?);
                if attr(node, "axis").is_some_and(|a| a.i != 0) {
                    return Err(self.unsupported(node, "Kiln folds Gather on axis 0 only"));
                }
                indices
                    .iter()
                    .map(|&i| {
                        let at = if i < 0 { i + data.len() as i64 } else { i };
                        data.get(at as usize).copied().ok_or_else(|| self.unsupported(node, "an index out of range"))
                    })
                    .collect()
            }
            "Slice" => {
                let data = arg(0)?;
                let (starts, ends) = if node.input.len() >= 3 {
                    (known(&arg(1)?)?, known(&arg(2)?)?)
                } else {
                    (self.ints_attr(node, "starts").unwrap_or_default(), self.ints_attr(node, "ends").unwrap_or_default())
                };
                let steps = if node.input.len() >= 5 && !node.input[4].is_empty() { known(&arg(4)?)? } else { vec![1] };
                if starts.len() != 1 || ends.len() != 1 || steps != [1] {
                    return Err(self.unsupported(node, "Kiln folds 1-D slices with step 1 only"));
                }
                let n = data.len() as i64;
                let clamp = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) } as usize;
                let (b, e) = (clamp(starts[0]), clamp(ends[0]));
                Ok(data[b.min(e)..e].to_vec())
            }
            "Concat" => {
                let mut out = Vec::new();
                for i in 0..node.input.len() {
                    out.extend(arg(i)?);
                }
                Ok(out)
            }
            "Unsqueeze" | "Squeeze" => arg(0),
            op @ ("Mul" | "Div" | "Add" | "Sub") => {
                let (a, b) = (known(&arg(0)?)?, known(&arg(1)?)?);
                let len = a.len().max(b.len());
                let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                if !(a.len() == len || a.len() == 1) || !(b.len() == len || b.len() == 1) {
                    return Err(self.unsupported(node, "operands of different sizes"));
                }
                Ok((0..len)
                    .map(|i| {
                        let (x, y) = (pick(&a, i), pick(&b, i));
                        Int::Known(match op {
                            "Mul" => x * y,
                            "Div" => x / y.max(1),
                            "Add" => x + y,
                            _ => x - y,
                        })
                    })
                    .collect())
            }
            _ => Err(self.unsupported(node, "Kiln folds Shape, Gather, Slice, Concat, Unsqueeze, Squeeze, Cast, Identity, Mul, Div, Add and Sub in shape subgraphs")),
        }
    }
    /// A conv's or pool's window from its attributes (`kernel_shape`, `strides`, `pads`, `auto_pad`,
    /// `dilations`); `kernel` is a conv's, from its weights. Checks that Kiln runs it and that it fits `shape`.
    fn window(&self, node: &NodeProto, shape: Shape, kernel: Option<(usize, usize)>) -> Result<Window, OnnxError> {
        let as_sizes = |name: &str, v: &[i64]| -> Result<Vec<usize>, OnnxError> {
            v.iter()
                .map(|&x| usize::try_from(x).map_err(|_| self.unsupported(node, format!("a negative {name} {v:?}"))))
                .collect()
        };
        let declared = self.ints_attr(node, "kernel_shape").filter(|k| !k.is_empty());
        let (kh, kw) = match (declared, kernel) {
            (Some(k), _) if k.len() != 2 => {
                return Err(self.unsupported(node, format!("kernel_shape {k:?}: Kiln runs 2-D windows only")));
            }
            (Some(k), Some((kh, kw))) if as_sizes("kernel_shape", &k)? != [kh, kw] => {
                return Err(self.unsupported(node, format!("kernel_shape {k:?} against weights {kh}x{kw}")));
            }
            (Some(k), _) => {
                let k = as_sizes("kernel_shape", &k)?;
                (k[0], k[1])
            }
            (None, Some(k)) => k,
            (None, None) => return Err(self.unsupported(node, "no kernel_shape")),
        };
        if let Some(d) = self.ints_attr(node, "dilations").filter(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.unsupported(node, format!("dilations {d:?}: Kiln's windows are not dilated")));
        }
        let strides = self.ints_attr(node, "strides").filter(|s| !s.is_empty()).unwrap_or(vec![1, 1]);
        let [sh, sw] = as_sizes("stride", &strides)?[..] else {
            return Err(self.unsupported(node, format!("strides {strides:?} for a 2-D window")));
        };
        let auto_pad = attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_default();
        let window = match auto_pad.as_str() {
            "" | "NOTSET" => {
                let pads = self.ints_attr(node, "pads").filter(|p| !p.is_empty()).unwrap_or(vec![0; 4]);
                let [top, left, bottom, right] = as_sizes("pad", &pads)?[..] else {
                    return Err(self.unsupported(node, format!("pads {pads:?} for a 2-D window")));
                };
                Window { kh, kw, sh, sw, top, bottom, left, right }
            }
            "VALID" => Window { kh, kw, sh, sw, top: 0, bottom: 0, left: 0, right: 0 },
            "SAME_UPPER" | "SAME_LOWER" if sh == sw => {
                let same = Window::same(kh, kw, sh, shape.h, shape.w);
                if auto_pad == "SAME_LOWER" {
                    Window { top: same.bottom, bottom: same.top, left: same.right, right: same.left, ..same }
                } else {
                    same
                }
            }
            other => return Err(self.unsupported(node, format!("auto_pad \"{other}\" with strides {strides:?}"))),
        };
        window.check().map_err(|reason| self.unsupported(node, format!("the window {window}: {reason}")))?;
        if window.output(shape.h, shape.w).is_none() {
            return Err(self.unsupported(node, format!("a {window} window on a {}x{} image", shape.h, shape.w)));
        }
        Ok(window)
    }
}

/// A constant operand as one value per channel of `shape` in `layout`: a scalar, or a tensor whose one
/// non-1 dimension is the channel axis (`[1, c, 1, 1]` or `[c, 1, 1]` on NCHW, `[c]` or `[1, 1, 1, c]` on NHWC or
/// flat data).
fn per_channel(dims: &[usize], values: &[f32], shape: Shape, layout: Layout) -> Option<Vec<f32>> {
    if values.len() == 1 {
        return Some(vec![values[0]; shape.c]);
    }
    if values.len() != shape.c || dims.iter().filter(|&&d| d != 1).count() != 1 {
        return None;
    }
    let axis = dims.iter().position(|&d| d != 1)?;
    let from_end = dims.len() - axis;
    let fits = match layout {
        // Broadcasting aligns the last axes: the channel of [n, c, h, w] is third from the end.
        Layout::Nchw => from_end == 3 || shape.h * shape.w == 1 && from_end == 1,
        Layout::Nhwc | Layout::Flat { .. } => from_end == 1,
    };
    fits.then(|| values.to_vec())
}

/// Applies `x * scale + shift` per channel after the layers so far: folded into the last layer's parameters
/// when `foldable` (a conv or dense layer, or a scale-shift, with nothing after it), else as a new
/// scale-shift layer.
fn channel_affine(
    layers: &mut Vec<Layer>,
    params: &mut Vec<(Vec<usize>, Vec<f32>, Vec<f32>)>,
    foldable: bool,
    shape: Shape,
    scale: Option<&[f32]>,
    shift: Option<&[f32]>,
) {
    let c = shape.c;
    let ones = vec![1.0; c];
    let zeros = vec![0.0; c];
    let (scale, shift) = (scale.unwrap_or(&ones), shift.unwrap_or(&zeros));
    match (foldable, layers.last(), params.last_mut()) {
        (true, Some(layer), Some((_, weights, bias))) if layer.is_linear() || *layer == Layer::ScaleShift => {
            // Weights `[..., c]`: column o scales by scale[o]; a scale-shift's `[c]` likewise.
            for row in weights.chunks_exact_mut(c) {
                for (w, &s) in row.iter_mut().zip(scale) {
                    *w *= s;
                }
            }
            for ((b, &s), &t) in bias.iter_mut().zip(scale).zip(shift) {
                *b = *b * s + t;
            }
        }
        _ => {
            layers.push(Layer::ScaleShift);
            params.push((vec![c], scale.to_vec(), shift.to_vec()));
        }
    }
}

/// Imports the ONNX file at `path` as a Kiln model named `name`.
pub fn import(path: &Path, name: &str) -> Result<OnnxImport, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
    import_bytes(&bytes, path, name)
}

/// [`import`] of a file's bytes; `path` names it in errors (and locates external data).
pub fn import_bytes(bytes: &[u8], path: &Path, name: &str) -> Result<OnnxImport, OnnxError> {
    let proto = pb::ModelProto::decode(bytes)
        .map_err(|e| OnnxError::NotOnnx { path: path.to_path_buf(), reason: e.to_string() })?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::NotOnnx { path: path.to_path_buf(), reason: "it has no graph".into() })?;
    let mut importer = Importer {
        path: path.to_path_buf(),
        graph,
        initializers: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
        constants: HashMap::new(),
        producers: HashMap::new(),
        known: HashMap::new(),
    };
    for node in &graph.node {
        if node.op_type == "Constant"
            && let (Some(out), Some(t)) = (node.output.first(), attr(node, "value").and_then(|a| a.t.as_ref()))
        {
            importer.constants.insert(out.as_str(), t);
        }
        for out in &node.output {
            importer.producers.insert(out.as_str(), node);
        }
    }
    let interface = |reason: String| OnnxError::Interface { path: path.to_path_buf(), reason };
    // The data input: the graph input that is not an initializer.
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !importer.initializers.contains_key(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        return Err(interface(format!("{} data inputs; Kiln runs networks with one", inputs.len())));
    };
    let [output] = graph.output.as_slice() else {
        return Err(interface(format!("{} outputs; Kiln runs networks with one", graph.output.len())));
    };
    let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        _ => return Err(interface(format!("input \"{}\" is not a tensor", input.name))),
    };
    if tensor_type.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(interface(format!(
            "input \"{}\" has element type {}, not float32",
            input.name, tensor_type.elem_type
        )));
    }
    let dims: Vec<Option<i64>> = tensor_type
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let fixed = |d: &[Option<i64>]| d.iter().all(Option::is_some);
    // A 4-D input is NCHW when its first op is an NCHW op (PyTorch's export), NHWC when it is a Transpose or
    // Reshape to NCHW (tf2onnx's); otherwise a one-channel image [n, 1, h, w] is NCHW.
    let first_op = graph.node.iter().find(|n| n.input.first() == Some(&input.name)).map(|n| n.op_type.as_str());
    let nchw_input = match first_op {
        Some("Conv" | "MaxPool" | "AveragePool" | "GlobalAveragePool" | "BatchNormalization" | "Pad") => true,
        Some("Transpose" | "Reshape") => false,
        _ => matches!(dims.as_slice(), [_, Some(1), Some(h), Some(_)] if *h > 1),
    };
    let (mut shape, mut layout) = match dims.as_slice() {
        [_, rest @ ..] if !fixed(rest) => {
            return Err(interface(format!(
                "input \"{}\" has a dynamic shape {dims:?}: only the batch may vary",
                input.name
            )));
        }
        [_, Some(c), Some(h), Some(w)] if nchw_input => {
            (Shape { h: *h as usize, w: *w as usize, c: *c as usize }, Layout::Nchw)
        }
        [_, Some(h), Some(w), Some(c)] => (Shape { h: *h as usize, w: *w as usize, c: *c as usize }, Layout::Nhwc),
        [_, Some(784)] => (Shape { h: 28, w: 28, c: 1 }, Layout::Flat { chw: false }),
        // A sequence [n, length, features]: element-wise and per-feature ops run on it as an image one pixel
        // wide; ops that need an image refuse it by its layout.
        [_, Some(l), Some(f)] => (Shape { h: *l as usize, w: 1, c: *f as usize }, Layout::Nhwc),
        // A batch of scalars.
        [_] => (Shape { h: 1, w: 1, c: 1 }, Layout::Flat { chw: false }),
        [_, Some(k)] => (Shape { h: 1, w: 1, c: *k as usize }, Layout::Flat { chw: false }),
        _ => {
            return Err(interface(format!(
                "input \"{}\" has shape {dims:?}: Kiln takes [n, h, w, c], [n, 1, h, w] or [n, features]",
                input.name
            )));
        }
    };
    let network_input = shape;
    let layout_of_input = layout;
    let in_layout = |shape: Shape, layout: Layout| -> Vec<Int> {
        let per: Vec<usize> = match layout {
            Layout::Nhwc => vec![shape.h, shape.w, shape.c],
            Layout::Nchw => vec![shape.c, shape.h, shape.w],
            Layout::Flat { .. } => vec![shape.len()],
        };
        std::iter::once(Int::Batch).chain(per.into_iter().map(|d| Int::Known(d as i64))).collect()
    };
    importer.known.insert(input.name.clone(), in_layout(shape, layout));

    // Data consumers of each tensor (Shape ops only feed folding).
    let mut consumers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for node in &graph.node {
        if node.op_type == "Shape" || node.op_type == "Constant" {
            continue;
        }
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            consumers.entry(i.as_str()).or_default().push(node);
        }
    }
    let mut layers: Vec<Layer> = Vec::new();
    let mut params: Vec<(Vec<usize>, Vec<f32>, Vec<f32>)> = Vec::new();
    let mut chain = vec![format!("input ({})", input.name)];
    let mut permuted = false;
    let mut current = input.name.clone();
    // The last layer is a conv, dense or scale-shift with nothing after it yet: a per-channel scale or shift
    // folds into its parameters.
    let mut foldable = false;
    let mut steps = 0;
    while current != output.name {
        steps += 1;
        if steps > 10_000 {
            return Err(OnnxError::NotAChain { path: path.to_path_buf(), reason: "the chain does not end".into() });
        }
        let next: Vec<&NodeProto> = consumers.get(current.as_str()).cloned().unwrap_or_default();
        let node = match next.as_slice() {
            [one] => *one,
            [] => {
                return Err(OnnxError::NotAChain {
                    path: path.to_path_buf(),
                    reason: format!("tensor \"{current}\" feeds nothing, but the output is \"{}\"", output.name),
                });
            }
            many => {
                return Err(OnnxError::NotAChain {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor \"{current}\" feeds {} ops ({}): Kiln maps chains",
                        many.len(),
                        many.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        };
        let index = graph.node.iter().position(|n| std::ptr::eq(n, node)).unwrap_or(0);
        chain.push(format!("{} ({})", node.op_type, node_label(node, index).trim_matches('"')));
        if node.input.first().map(String::as_str) != Some(current.as_str())
            && !matches!(node.op_type.as_str(), "Add" | "Mul")
        {
            return Err(importer.unsupported(node, format!("the data \"{current}\" is not its first input")));
        }
        let other_input = |node: &NodeProto| node.input.iter().find(|i| **i != current).cloned();
        let bias_of_shape = |dims: &[usize], want: usize| {
            dims.iter().product::<usize>() == want && dims.iter().filter(|&&d| d != 1).count() <= 1
        };
        match node.op_type.as_str() {
            "Identity" => {}
            "Dropout" => {
                let training = match node.input.get(2).filter(|t| !t.is_empty()) {
                    Some(t) => importer.fold(t, 0)? != [Int::Known(0)],
                    None => false,
                };
                if training || (node.output.len() > 1 && consumers.contains_key(node.output[1].as_str())) {
                    return Err(importer.unsupported(node, "dropout in training mode (or its mask used)"));
                }
                // Kept for the record (the identity at inference, and what retraining would drop).
                let ratio = match node.input.get(1).filter(|r| !r.is_empty()) {
                    Some(r) => importer.floats(r)?.1.first().copied().unwrap_or(0.5),
                    None => attr(node, "ratio").map_or(0.5, |a| a.f),
                };
                if !(0.0..1.0).contains(&ratio) {
                    return Err(importer.unsupported(node, format!("ratio {ratio}")));
                }
                layers.push(Layer::Dropout { rate: Scalar::new(ratio) });
            }
            "Relu" => layers.push(Layer::Relu),
            "Softmax" | "LogSoftmax" => {
                if node.output.first() != Some(&output.name) {
                    return Err(importer.unsupported(node, "a softmax before the end"));
                }
            }
            "Transpose" => {
                let perm = importer.ints_attr(node, "perm").unwrap_or_default();
                layout = match (layout, perm.as_slice()) {
                    (Layout::Nhwc, [0, 3, 1, 2]) => Layout::Nchw,
                    (Layout::Nchw, [0, 2, 3, 1]) => Layout::Nhwc,
                    (l, _) => {
                        return Err(importer.unsupported(
                            node,
                            format!("perm {perm:?} on a {l:?} tensor: Kiln maps NHWC<->NCHW only"),
                        ));
                    }
                };
            }
            "Conv" => {
                if layout != Layout::Nchw {
                    return Err(
                        importer.unsupported(node, format!("a conv on a {layout:?} tensor (ONNX convs are NCHW)"))
                    );
                }
                if attr(node, "group").is_some_and(|a| a.i != 1) {
                    return Err(importer.unsupported(node, "a grouped conv"));
                }
                let w_name = node.input.get(1).ok_or_else(|| importer.unsupported(node, "no weights"))?;
                let (dims, w) = importer.floats(w_name)?;
                let [cout, cin, kh, kw] = dims[..] else {
                    return Err(importer.unsupported(node, format!("weights {dims:?}: Kiln's convs are 2-D")));
                };
                if cin != shape.c {
                    return Err(importer.unsupported(node, format!("weights {dims:?} for {} input channels", shape.c)));
                }
                let window = importer.window(node, shape, Some((kh, kw)))?;
                // OIHW to HWIO.
                let taps = kh * kw;
                let mut hwio = vec![0.0; w.len()];
                for o in 0..cout {
                    for i in 0..cin {
                        for k in 0..taps {
                            hwio[(k * cin + i) * cout + o] = w[(o * cin + i) * taps + k];
                        }
                    }
                }
                let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => {
                        let (bd, bv) = importer.floats(b)?;
                        if !bias_of_shape(&bd, cout) {
                            return Err(importer.unsupported(node, format!("bias {bd:?} for {cout} channels")));
                        }
                        bv
                    }
                    // No bias: a zero one, which a following Add or BatchNormalization may fill.
                    None => vec![0.0; cout],
                };
                layers.push(Layer::conv(cout, window));
                params.push((vec![kh, kw, cin, cout], hwio, bias));
                let (oh, ow) = window.output(shape.h, shape.w).expect("window() checked it fits");
                shape = Shape { h: oh, w: ow, c: cout };
                foldable = true;
            }
            "MaxPool" | "AveragePool" => {
                if layout != Layout::Nchw {
                    return Err(
                        importer.unsupported(node, format!("a pool on a {layout:?} tensor (ONNX pools are NCHW)"))
                    );
                }
                if node.output.len() > 1 {
                    return Err(importer.unsupported(node, "the Indices output of MaxPool"));
                }
                if attr(node, "ceil_mode").is_some_and(|a| a.i != 0) {
                    return Err(importer.unsupported(node, "ceil_mode 1: Kiln's pools round the output size down"));
                }
                if attr(node, "storage_order").is_some_and(|a| a.i != 0) {
                    return Err(importer.unsupported(node, "storage_order 1"));
                }
                let window = importer.window(node, shape, None)?;
                let kind = if node.op_type == "MaxPool" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg { count_pad: attr(node, "count_include_pad").is_some_and(|a| a.i != 0) }
                };
                let (oh, ow) = window.output(shape.h, shape.w).expect("window() checked it fits");
                layers.push(Layer::pool(kind, window, shape));
                shape = Shape { h: oh, w: ow, c: shape.c };
            }
            "GlobalAveragePool" => {
                if layout != Layout::Nchw {
                    return Err(importer.unsupported(node, format!("a global pool on a {layout:?} tensor")));
                }
                layers.push(Layer::GlobalAvgPool);
                // ONNX keeps [n, c, 1, 1]; Kiln's shape is the flat [c].
                shape = Shape { h: 1, w: 1, c: shape.c };
            }
            "ReduceMean" => {
                // tf2onnx's global average pool: the mean over height and width of an NHWC tensor.
                let axes: Vec<i64> = match node.input.get(1).filter(|a| !a.is_empty()) {
                    Some(a) => {
                        importer.fold(a, 0)?.iter().map(|v| if let Int::Known(v) = v { *v } else { -1 }).collect()
                    }
                    None => importer.ints_attr(node, "axes").unwrap_or_default(),
                };
                let spatial: &[i64] = match layout {
                    Layout::Nhwc => &[1, 2],
                    Layout::Nchw => &[2, 3],
                    Layout::Flat { .. } => &[],
                };
                if spatial.is_empty() || axes != spatial {
                    return Err(importer.unsupported(
                        node,
                        format!(
                            "a mean over axes {axes:?} of a {layout:?} tensor: Kiln maps the mean over height and width"
                        ),
                    ));
                }
                let keep = attr(node, "keepdims").is_none_or(|a| a.i != 0);
                layers.push(Layer::GlobalAvgPool);
                shape = Shape { h: 1, w: 1, c: shape.c };
                if !keep {
                    layout = Layout::Flat { chw: false };
                }
            }
            "BatchNormalization" => {
                if node.output.len() > 1 || attr(node, "training_mode").is_some_and(|a| a.i != 0) {
                    return Err(importer.unsupported(node, "training mode (Kiln folds inference batch norms)"));
                }
                if matches!(layout, Layout::Nhwc) && shape.h * shape.w > 1 {
                    return Err(importer.unsupported(node, "a batch norm over the last axis of an NHWC tensor"));
                }
                let epsilon = attr(node, "epsilon").map_or(1e-5, |a| a.f);
                let mut inputs = Vec::new();
                for i in 1..5 {
                    let name = node.input.get(i).ok_or_else(|| importer.unsupported(node, "an input is missing"))?;
                    let (d, v) = importer.floats(name)?;
                    if v.len() != shape.c {
                        return Err(importer.unsupported(node, format!("input {i} {d:?} for {} channels", shape.c)));
                    }
                    inputs.push(v);
                }
                let (gamma, beta, mean, var) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
                let scale: Vec<f32> = gamma
                    .iter()
                    .zip(var)
                    .map(|(&g, &v)| (g as f64 / (v as f64 + epsilon as f64).sqrt()) as f32)
                    .collect();
                let shift: Vec<f32> = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| b - m * s).collect();
                channel_affine(&mut layers, &mut params, foldable, shape, Some(&scale), Some(&shift));
                foldable = true;
            }
            "Mul" | "Add" | "Sub" | "Div" => {
                let Some(other) = other_input(node) else {
                    return Err(importer.unsupported(node, "an op of a tensor with itself"));
                };
                if matches!(node.op_type.as_str(), "Sub" | "Div") && node.input.first() != Some(&current) {
                    return Err(importer.unsupported(node, "the data is not the first operand"));
                }
                let (dims, values) = importer.floats(&other)?;
                let Some(mut per) = per_channel(&dims, &values, shape, layout) else {
                    return Err(importer.unsupported(
                        node,
                        format!(
                            "an operand of shape {dims:?}: Kiln maps per-channel or scalar constants on {layout:?} data"
                        ),
                    ));
                };
                match node.op_type.as_str() {
                    "Mul" => channel_affine(&mut layers, &mut params, foldable, shape, Some(&per), None),
                    "Div" => {
                        per.iter_mut().for_each(|v| *v = 1.0 / *v);
                        channel_affine(&mut layers, &mut params, foldable, shape, Some(&per), None)
                    }
                    "Sub" => {
                        per.iter_mut().for_each(|v| *v = -*v);
                        channel_affine(&mut layers, &mut params, foldable, shape, None, Some(&per))
                    }
                    _ => channel_affine(&mut layers, &mut params, foldable, shape, None, Some(&per)),
                }
                foldable = true;
            }
            "Tanh" => layers.push(Layer::Activation(Activation::Tanh)),
            "Sigmoid" => layers.push(Layer::Activation(Activation::Sigmoid)),
            "LeakyRelu" => {
                let alpha = attr(node, "alpha").map_or(0.01, |a| a.f);
                layers.push(Layer::Activation(Activation::LeakyRelu { alpha: Scalar::new(alpha) }));
            }
            "Clip" => {
                let bound = |i: usize, attribute: &str, default: f32| -> Result<f32, OnnxError> {
                    match node.input.get(i).filter(|n| !n.is_empty()) {
                        Some(name) => {
                            let (_, v) = importer.floats(name)?;
                            v.first().copied().filter(|_| v.len() == 1).ok_or_else(|| {
                                importer.unsupported(node, format!("input {i} holds {} values, not one", v.len()))
                            })
                        }
                        None => Ok(attr(node, attribute).map_or(default, |a| a.f)),
                    }
                };
                let (min, max) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
                if min > max {
                    return Err(importer.unsupported(node, format!("min {min} above max {max}")));
                }
                if min == 0.0 && max == f32::INFINITY {
                    layers.push(Layer::Relu);
                } else {
                    layers.push(Layer::Activation(Activation::Clip { min: Scalar::new(min), max: Scalar::new(max) }));
                }
            }
            "Squeeze" if shape.h * shape.w == 1 && !matches!(layout, Layout::Flat { .. }) => {
                // [n, c, 1, 1] to [n, c], as after a global pool.
                layout = Layout::Flat { chw: false };
            }
            "Pad" => {
                let mode = attr(node, "mode")
                    .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                    .unwrap_or_else(|| "constant".into());
                if mode != "constant" {
                    return Err(importer.unsupported(node, format!("mode \"{mode}\": Kiln pads with zeros")));
                }
                let pads: Vec<i64> = match node.input.get(1).filter(|p| !p.is_empty()) {
                    Some(p) => {
                        importer.fold(p, 0)?.iter().map(|v| if let Int::Known(v) = v { *v } else { -1 }).collect()
                    }
                    None => importer.ints_attr(node, "pads").unwrap_or_default(),
                };
                if let Some(value) = node.input.get(2).filter(|p| !p.is_empty())
                    && importer.fold(value, 0)? != [Int::Known(0)]
                {
                    return Err(importer.unsupported(node, "a non-zero pad value"));
                }
                let (t, l, b, r) = match (layout, pads.as_slice()) {
                    (Layout::Nchw, [0, 0, t, l, 0, 0, b, r]) | (Layout::Nhwc, [0, t, l, 0, 0, b, r, 0]) => {
                        (*t, *l, *b, *r)
                    }
                    _ => {
                        return Err(importer.unsupported(
                            node,
                            format!("pads {pads:?} on a {layout:?} tensor: Kiln pads height and width only"),
                        ));
                    }
                };
                if [t, l, b, r].iter().any(|&v| v < 0) {
                    return Err(importer.unsupported(node, "negative pads (a crop)"));
                }
                let (top, bottom, left, right) = (t as usize, b as usize, l as usize, r as usize);
                layers.push(Layer::Pad { top, bottom, left, right });
                shape = Shape { h: shape.h + top + bottom, w: shape.w + left + right, c: shape.c };
            }
            "Flatten" | "Reshape" => {
                let flatten = if node.op_type == "Flatten" {
                    attr(node, "axis").is_none_or(|a| a.i == 1)
                } else {
                    let target_name = node.input.get(1).ok_or_else(|| importer.unsupported(node, "no shape input"))?;
                    let target = importer.fold(target_name, 0)?;
                    let count = shape.len() as i64;
                    target.len() == 2
                        && matches!(target[0], Int::Batch | Int::Known(-1) | Int::Known(0))
                        && (target[1] == Int::Known(count) || target[1] == Int::Known(-1))
                };
                if !flatten && node.op_type == "Flatten" {
                    return Err(importer.unsupported(node, "a flatten on an axis other than 1"));
                }
                if !flatten {
                    // tf2onnx turns the NHWC->NCHW transpose of a one-channel image into a reshape.
                    let target = importer.fold(&node.input[1], 0)?;
                    let k = |v: usize| Int::Known(v as i64);
                    let batch = |v: &Int| matches!(v, Int::Batch | Int::Known(-1) | Int::Known(0));
                    let one_channel = shape.c == 1 && target.len() == 4 && batch(&target[0]);
                    layout = match layout {
                        Layout::Nhwc if one_channel && target[1..] == [k(1), k(shape.h), k(shape.w)] => Layout::Nchw,
                        Layout::Nchw if one_channel && target[1..] == [k(shape.h), k(shape.w), k(1)] => Layout::Nhwc,
                        _ => {
                            return Err(importer.unsupported(
                                node,
                                format!("a reshape to {target:?}: Kiln maps flattening to [n, features] only"),
                            ));
                        }
                    };
                    let out = node.output.first().ok_or_else(|| importer.unsupported(node, "no output"))?.clone();
                    importer.known.insert(out.clone(), in_layout(shape, layout));
                    current = out;
                    continue;
                }
                let chw = match layout {
                    Layout::Nchw => shape.c > 1 && shape.h * shape.w > 1,
                    Layout::Flat { chw } => chw,
                    Layout::Nhwc => false,
                };
                if shape.h * shape.w > 1 {
                    layers.push(Layer::Flatten);
                }
                layout = Layout::Flat { chw };
                shape = Shape { h: 1, w: 1, c: shape.len() };
            }
            "Gemm" | "MatMul" => {
                let chw = match layout {
                    Layout::Flat { chw } => chw,
                    _ if shape.h * shape.w == 1 => false,
                    _ => return Err(importer.unsupported(node, "a matrix product of an unflattened image")),
                };
                let (alpha, beta) = if node.op_type == "Gemm" {
                    if attr(node, "transA").is_some_and(|a| a.i != 0) {
                        return Err(importer.unsupported(node, "transA 1: Kiln multiplies the data on the left"));
                    }
                    (attr(node, "alpha").map_or(1.0, |a| a.f), attr(node, "beta").map_or(1.0, |a| a.f))
                } else {
                    (1.0, 1.0)
                };
                let trans_b = node.op_type == "Gemm" && attr(node, "transB").is_some_and(|a| a.i != 0);
                let w_name = node.input.get(1).ok_or_else(|| importer.unsupported(node, "no weights"))?;
                let (dims, w) = importer.floats(w_name)?;
                let (k, units) = match (dims.as_slice(), trans_b) {
                    ([k, n], false) => (*k, *n),
                    ([n, k], true) => (*k, *n),
                    _ => return Err(importer.unsupported(node, format!("weights {dims:?}, not a matrix"))),
                };
                if k != shape.len() {
                    return Err(importer.unsupported(node, format!("weights {dims:?} for {} inputs", shape.len())));
                }
                if shape.h * shape.w > 1 {
                    // A [n, 784] input: the 28x28x1 image, flattened.
                    layers.push(Layer::Flatten);
                }
                // Kiln's [in, out], rows in H,W,C order.
                let mut kiln = vec![0.0; k * units];
                // For an NCHW flatten (the last layer so far): the image it flattened, by Kiln's shape rules.
                let before_flatten = &layers[..layers.len().saturating_sub(1)];
                let image = kiln_core::network::infer(before_flatten, network_input)
                    .map_err(|e| importer.unsupported(node, format!("the network so far is not valid: {e:?}")))?;
                let (channels, pixels) = (image.c, image.h * image.w);
                for row in 0..k {
                    let source_row = if chw {
                        // Kiln row (pixel, channel) comes from ONNX row (channel, pixel).
                        let (pixel, channel) = (row / channels, row % channels);
                        channel * pixels + pixel
                    } else {
                        row
                    };
                    for o in 0..units {
                        let v = if trans_b { w[o * k + source_row] } else { w[source_row * units + o] };
                        kiln[row * units + o] = alpha * v;
                    }
                }
                permuted |= chw;
                let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => {
                        let (bd, bv) = importer.floats(b)?;
                        let bv = match bv.len() {
                            1 => vec![bv[0]; units],
                            _ if bias_of_shape(&bd, units) => bv,
                            _ => {
                                return Err(importer.unsupported(
                                    node,
                                    format!("bias {bd:?} for {units} outputs: Kiln adds one bias per output"),
                                ));
                            }
                        };
                        bv.into_iter().map(|v| beta * v).collect()
                    }
                    None => vec![0.0; units],
                };
                layers.push(Layer::Dense { units });
                foldable = true;
                params.push((vec![k, units], kiln, bias));
                layout = Layout::Flat { chw: false };
                shape = Shape { h: 1, w: 1, c: units };
            }
            _ => return Err(importer.unsupported(node, "not an op Kiln maps")),
        }
        // Only a per-channel Mul or Add, a batch norm, or nothing at all may follow a layer and fold into it.
        if !matches!(
            node.op_type.as_str(),
            "Conv" | "Gemm" | "MatMul" | "Identity" | "Dropout" | "Mul" | "Add" | "Sub" | "Div" | "BatchNormalization"
        ) {
            foldable = false;
        }
        let out = node.output.first().ok_or_else(|| importer.unsupported(node, "no output"))?.clone();
        importer.known.insert(out.clone(), in_layout(shape, layout));
        current = out;
    }
    if layers.is_empty() {
        return Err(OnnxError::NotAChain {
            path: path.to_path_buf(),
            reason: "the graph holds no layer Kiln runs (only identities)".into(),
        });
    }
    let network =
        Network { name: name.to_string(), input: network_input, layers, normalization: Normalization::UNIT_RANGE };
    let mut model = Model::zeroed(network).map_err(|source| OnnxError::Network { path: path.to_path_buf(), source })?;
    for (pair, (dims, w, b)) in model.params.chunks_mut(2).zip(params) {
        debug_assert_eq!(pair[0].dims, dims);
        pair[0].data = w;
        pair[1].data = b;
    }
    Ok(OnnxImport {
        model,
        chain,
        producer: format!("{} {}", proto.producer_name, proto.producer_version).trim().to_string(),
        permuted,
        input_nchw: layout_of_input == Layout::Nchw,
    })
}

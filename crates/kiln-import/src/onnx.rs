//! ONNX files onto Kiln's layers, through tract-onnx's protobuf types and its tensor loader.
//!
//! The graph must be a chain: from its one data input, each tensor feeds one op (besides `Shape` ops, whose
//! small subgraphs are folded into constants), up to the graph's output. The activation's layout is tracked
//! along the way: tf2onnx writes NHWC input with a `Transpose` to NCHW before the convs and one back before the
//! flatten; PyTorch writes NCHW throughout and flattens in C,H,W order, so the following dense weights are
//! permuted to Kiln's H,W,C order. docs/IMPORT.md lists the ops and how each maps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_core::network::{Layer, Shape};
use kiln_train::model::Model;
use kiln_train::network::{Network, Normalization};
use prost::Message;
use thiserror::Error;
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::{self, AttributeProto, GraphProto, NodeProto, TensorProto};

/// The ops Kiln maps, for error messages.
pub const SUPPORTED_OPS: &str = "Conv (3x3, stride 1, same padding, group 1), Relu, MaxPool (2x2, stride 2), \
    Gemm, MatMul + Add, Add (bias), Flatten, Reshape (flatten), Transpose (NHWC<->NCHW), Pad (zeros), \
    Identity, Dropout, Softmax/LogSoftmax (last)";

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
    let (mut shape, mut layout) = match dims.as_slice() {
        [_, rest @ ..] if !fixed(rest) => {
            return Err(interface(format!(
                "input \"{}\" has a dynamic shape {dims:?}: only the batch may vary",
                input.name
            )));
        }
        [_, Some(c), Some(h), Some(w)] if *c <= 4 && *h > 4 => {
            if *c != 1 {
                return Err(interface(format!(
                    "input \"{}\" is NCHW with {c} channels: Kiln takes NHWC input",
                    input.name
                )));
            }
            (Shape { h: *h as usize, w: *w as usize, c: 1 }, Layout::Nchw)
        }
        [_, Some(h), Some(w), Some(c)] => (Shape { h: *h as usize, w: *w as usize, c: *c as usize }, Layout::Nhwc),
        [_, Some(784)] => (Shape { h: 28, w: 28, c: 1 }, Layout::Flat { chw: false }),
        [_, Some(k)] => (Shape { h: 1, w: 1, c: *k as usize }, Layout::Flat { chw: false }),
        _ => {
            return Err(interface(format!(
                "input \"{}\" has shape {dims:?}: Kiln takes [n, h, w, c], [n, 1, h, w] or [n, features]",
                input.name
            )));
        }
    };
    let network_input = shape;
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
    let mut pending_bias = false;
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
        if node.input.first().map(String::as_str) != Some(current.as_str()) && node.op_type != "Add" {
            return Err(importer.unsupported(node, format!("the data \"{current}\" is not its first input")));
        }
        let other_input = |node: &NodeProto| node.input.iter().find(|i| **i != current).cloned();
        let bias_of_shape = |dims: &[usize], want: usize| {
            dims.iter().product::<usize>() == want && dims.iter().filter(|&&d| d != 1).count() <= 1
        };
        match node.op_type.as_str() {
            "Identity" | "Dropout" => {}
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
                for (name, want) in [("strides", vec![1, 1]), ("dilations", vec![1, 1])] {
                    if let Some(v) = importer.ints_attr(node, name).filter(|v| !v.is_empty() && *v != want) {
                        return Err(importer
                            .unsupported(node, format!("{name} {v:?}: Kiln's convs have stride 1 and no dilation")));
                    }
                }
                if attr(node, "group").is_some_and(|a| a.i != 1) {
                    return Err(importer.unsupported(node, "a grouped conv"));
                }
                let auto_pad =
                    attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_default();
                let pads = importer.ints_attr(node, "pads").unwrap_or_default();
                let same = matches!(auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER")
                    || ((auto_pad.is_empty() || auto_pad == "NOTSET") && pads == [1, 1, 1, 1]);
                if !same {
                    return Err(importer.unsupported(
                        node,
                        format!("pads {pads:?} (auto_pad \"{auto_pad}\"): Kiln's convs pad 1 on every side (SAME)"),
                    ));
                }
                let w_name = node.input.get(1).ok_or_else(|| importer.unsupported(node, "no weights"))?;
                let (dims, w) = importer.floats(w_name)?;
                let [cout, cin, 3, 3] = dims[..] else {
                    return Err(importer.unsupported(node, format!("weights {dims:?}: Kiln's convs are 3x3")));
                };
                if cin != shape.c {
                    return Err(importer.unsupported(node, format!("weights {dims:?} for {} input channels", shape.c)));
                }
                // OIHW to HWIO.
                let mut hwio = vec![0.0; w.len()];
                for o in 0..cout {
                    for i in 0..cin {
                        for k in 0..9 {
                            hwio[(k * cin + i) * cout + o] = w[(o * cin + i) * 9 + k];
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
                    None => vec![0.0; cout],
                };
                layers.push(Layer::Conv2d { filters: cout });
                params.push((vec![3, 3, cin, cout], hwio, bias));
                pending_bias = node.input.get(2).is_none_or(|b| b.is_empty());
                shape.c = cout;
            }
            "MaxPool" => {
                let ok = importer.ints_attr(node, "kernel_shape").as_deref() == Some(&[2, 2])
                    && importer.ints_attr(node, "strides").as_deref() == Some(&[2, 2])
                    && importer.ints_attr(node, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
                    && attr(node, "ceil_mode").is_none_or(|a| a.i == 0)
                    && importer.ints_attr(node, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1));
                if !ok || matches!(layout, Layout::Flat { .. }) {
                    return Err(importer.unsupported(node, "Kiln pools 2x2 with stride 2 and no padding"));
                }
                if shape.h % 2 != 0 || shape.w % 2 != 0 {
                    return Err(importer.unsupported(
                        node,
                        format!("a pool of a {}x{} image: Kiln pools even sizes", shape.h, shape.w),
                    ));
                }
                layers.push(Layer::MaxPool);
                shape = Shape { h: shape.h / 2, w: shape.w / 2, c: shape.c };
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
                if node.op_type == "Gemm" {
                    let one = |n: &str| attr(node, n).is_none_or(|a| a.f == 1.0);
                    if attr(node, "transA").is_some_and(|a| a.i != 0) || !one("alpha") || !one("beta") {
                        return Err(importer.unsupported(node, "Kiln maps Gemm with alpha = beta = 1 and no transA"));
                    }
                }
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
                        kiln[row * units + o] = if trans_b { w[o * k + source_row] } else { w[source_row * units + o] };
                    }
                }
                permuted |= chw;
                let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => {
                        let (bd, bv) = importer.floats(b)?;
                        if !bias_of_shape(&bd, units) {
                            return Err(importer.unsupported(node, format!("bias {bd:?} for {units} outputs")));
                        }
                        bv
                    }
                    None => vec![0.0; units],
                };
                layers.push(Layer::Dense { units });
                pending_bias = node.input.get(2).is_none_or(|b| b.is_empty());
                params.push((vec![k, units], kiln, bias));
                layout = Layout::Flat { chw: false };
                shape = Shape { h: 1, w: 1, c: units };
            }
            "Add" => {
                let Some(bias_name) = other_input(node) else {
                    return Err(importer.unsupported(node, "an add of a tensor to itself"));
                };
                let (bd, bv) = importer.floats(&bias_name)?;
                let last = params.last_mut().filter(|_| pending_bias);
                let Some(slot) = last else {
                    return Err(importer.unsupported(node, "an add that is not the bias of a conv or matrix product"));
                };
                let want = slot.2.len();
                if !bias_of_shape(&bd, want) {
                    return Err(importer.unsupported(node, format!("bias {bd:?} for {want} channels")));
                }
                slot.2 = bv;
                pending_bias = false;
            }
            _ => return Err(importer.unsupported(node, "not an op Kiln maps")),
        }
        if !matches!(node.op_type.as_str(), "Conv" | "Gemm" | "MatMul" | "Identity" | "Dropout") {
            pending_bias = false;
        }
        let out = node.output.first().ok_or_else(|| importer.unsupported(node, "no output"))?.clone();
        importer.known.insert(out.clone(), in_layout(shape, layout));
        current = out;
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
    })
}

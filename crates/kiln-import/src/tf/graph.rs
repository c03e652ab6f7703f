//! The network in a `.meta` graph: the chain of ops from the input placeholder to the logits, as the series'
//! code builds it, mapped onto Kiln's layers.
//!
//! The walk starts at the logits (the input of the graph's `Softmax` or softmax cross-entropy, or a node named
//! `logits`) and goes back through each op's data input to a `Placeholder`; training ops hang off that chain
//! and are never visited. Then it runs forward over the chain with the input shape, turning each op into a
//! layer. Shapes that come from small constant subgraphs (`tf.image.resize_with_crop_or_pad` builds its
//! paddings from `Shape`, `StridedSlice` and `Pack`) are folded with the shapes known at that point.

use std::collections::HashMap;

use kiln_core::network::{Layer, Shape};
use kiln_train::network::{Network, Normalization};

use super::TfError;
use super::proto::{AttrValue, GraphDef, NodeDef, TensorProto, attr_value::Value, dtype};

/// The ops of the chain Kiln maps, for error messages.
pub const SUPPORTED_OPS: &str = "Placeholder, Identity, StopGradient, Conv2D (3x3, stride 1, SAME, NHWC), \
    Add/AddV2/BiasAdd (of a variable), Relu, MaxPool (2x2, stride 2), MatMul, Reshape (flatten), Pad/PadV2 \
    (zeros), Slice (whole tensor)";

/// What the walk found.
#[derive(Debug)]
pub struct Walked {
    pub network: Network,
    /// Per parametric layer: the checkpoint names of its weights and bias variables (bias `None`: zeros).
    pub params: Vec<(String, Option<String>)>,
    /// The chain, input first: `op (node name)`.
    pub chain: Vec<String>,
    /// The input placeholder's name.
    pub input: String,
}

/// A node input reference `name`, `name:1` or `^name` (control: ignored).
fn node_name(input: &str) -> Option<&str> {
    if input.starts_with('^') {
        return None;
    }
    Some(input.split(':').next().unwrap_or(input))
}

struct Graph<'g> {
    nodes: HashMap<&'g str, &'g NodeDef>,
    file: &'g str,
}

impl<'g> Graph<'g> {
    fn node(&self, name: &str) -> Result<&'g NodeDef, TfError> {
        self.nodes
            .get(name)
            .copied()
            .ok_or_else(|| self.meta(format!("a node input names \"{name}\", which is not in the graph")))
    }

    fn meta(&self, reason: String) -> TfError {
        TfError::Meta { file: self.file.to_string(), reason }
    }

    fn unsupported(&self, node: &NodeDef, reason: impl Into<String>) -> TfError {
        TfError::UnsupportedOp {
            file: self.file.to_string(),
            node: node.name.clone(),
            op: node.op.clone(),
            reason: reason.into(),
        }
    }

    /// The data inputs of `node` (control inputs dropped), resolved.
    fn inputs(&self, node: &NodeDef) -> Result<Vec<&'g NodeDef>, TfError> {
        node.input.iter().filter_map(|i| node_name(i)).map(|n| self.node(n)).collect()
    }

    /// The checkpoint name of the variable `node` reads, if it reads one: through `Identity` (`x/read`),
    /// `ReadVariableOp` of a `VarHandleOp` (resource variables), or a `VariableV2` itself.
    fn variable(&self, mut node: &'g NodeDef) -> Result<Option<String>, TfError> {
        for _ in 0..16 {
            match node.op.as_str() {
                "VariableV2" | "Variable" | "VarHandleOp" => {
                    let shared = match node.attr.get("shared_name").and_then(|a| a.value.as_ref()) {
                        Some(Value::S(s)) if !s.is_empty() => String::from_utf8_lossy(s).into_owned(),
                        _ => node.name.clone(),
                    };
                    return Ok(Some(shared));
                }
                "Identity" | "ReadVariableOp" => match self.inputs(node)?.first() {
                    Some(next) => node = next,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

fn attr<'n>(node: &'n NodeDef, name: &str) -> Option<&'n Value> {
    node.attr.get(name).and_then(|a: &AttrValue| a.value.as_ref())
}

fn attr_ints(node: &NodeDef, name: &str) -> Option<Vec<i64>> {
    match attr(node, name)? {
        Value::List(list) => Some(list.i.clone()),
        _ => None,
    }
}

fn attr_string(node: &NodeDef, name: &str) -> Option<String> {
    match attr(node, name)? {
        Value::S(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

/// One op of the chain, input side first.
#[derive(Debug)]
enum Op<'g> {
    /// Passes its input through (Identity, StopGradient).
    Same,
    Conv {
        weights: String,
    },
    Bias {
        bias: String,
    },
    Relu,
    Pool,
    MatMul {
        weights: String,
    },
    Reshape {
        target: &'g NodeDef,
    },
    Pad {
        paddings: &'g NodeDef,
        value: Option<&'g NodeDef>,
    },
    Slice {
        begin: &'g NodeDef,
        size: &'g NodeDef,
    },
}

/// The logits node: what the graph's softmax or cross-entropy reads, or a node named `logits`.
fn find_logits<'g>(graph: &Graph<'g>, def: &'g GraphDef) -> Result<&'g NodeDef, TfError> {
    let mut found: Vec<&NodeDef> = Vec::new();
    for node in &def.node {
        let takes_logits = matches!(
            node.op.as_str(),
            "Softmax" | "LogSoftmax" | "SoftmaxCrossEntropyWithLogits" | "SparseSoftmaxCrossEntropyWithLogits"
        );
        if takes_logits && !node.name.starts_with("gradients") {
            let mut logits = graph
                .inputs(node)?
                .first()
                .copied()
                .ok_or_else(|| graph.meta(format!("{} has no input", node.name)))?;
            // The cross-entropy ops reshape their input to 2-D first; step back over that and over Identity.
            while matches!(logits.op.as_str(), "Identity" | "Reshape") && logits.name.contains("softmax_cross_entropy")
            {
                logits = graph.inputs(logits)?[0];
            }
            if !found.iter().any(|f| f.name == logits.name) {
                found.push(logits);
            }
        }
    }
    if found.is_empty()
        && let Some(node) = def.node.iter().find(|n| n.name == "logits" || n.name.ends_with("/logits"))
    {
        found.push(node);
    }
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(graph.meta("no Softmax, softmax cross-entropy or node named \"logits\": cannot tell which tensor is the network's output".into())),
        many => Err(graph.meta(format!(
            "several candidate outputs ({}): cannot tell which tensor is the network's output",
            many.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Walks the graph in `def` (from the file named `file`); `dims_of(variable)` gives a checkpoint
/// variable's shape.
pub fn walk(def: &GraphDef, file: &str, dims_of: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<Walked, TfError> {
    let graph = Graph { nodes: def.node.iter().map(|n| (n.name.as_str(), n)).collect(), file };
    let logits = find_logits(&graph, def)?;
    // Backwards to the placeholder.
    let mut chain: Vec<(&NodeDef, Op)> = Vec::new();
    let mut node = logits;
    let input = loop {
        if chain.len() > 10_000 {
            return Err(graph.meta("the chain from the logits back to the input does not end".into()));
        }
        let inputs = graph.inputs(node)?;
        let first = || inputs.first().copied().ok_or_else(|| graph.unsupported(node, "it has no data input"));
        let op = match node.op.as_str() {
            "Placeholder" | "PlaceholderWithDefault" => break node,
            "Identity" | "StopGradient" | "Snapshot" => Op::Same,
            "Relu" => Op::Relu,
            "Conv2D" => {
                let weights = inputs.get(1).map(|&w| graph.variable(w)).transpose()?.flatten();
                let Some(weights) = weights else {
                    return Err(graph.unsupported(node, "its filter is not a variable"));
                };
                check_conv(&graph, node)?;
                Op::Conv { weights }
            }
            "MatMul" => {
                for flag in ["transpose_a", "transpose_b"] {
                    if matches!(attr(node, flag), Some(Value::B(true))) {
                        return Err(graph.unsupported(node, format!("{flag} is set")));
                    }
                }
                let weights = inputs.get(1).map(|&w| graph.variable(w)).transpose()?.flatten();
                let Some(weights) = weights else {
                    return Err(graph.unsupported(node, "its second input is not a variable"));
                };
                Op::MatMul { weights }
            }
            "Add" | "AddV2" | "BiasAdd" => {
                if node.op == "BiasAdd" && attr_string(node, "data_format").is_some_and(|f| f != "NHWC") {
                    return Err(graph.unsupported(node, "data_format is not NHWC"));
                }
                let [a, b] = inputs.as_slice() else {
                    return Err(graph.unsupported(node, "it does not have two inputs"));
                };
                let (data, bias) = match (graph.variable(a)?, graph.variable(b)?) {
                    (None, Some(bias)) => (*a, bias),
                    (Some(bias), None) if node.op != "BiasAdd" => (*b, bias),
                    _ => return Err(graph.unsupported(node, "it does not add a variable (a bias) to the data")),
                };
                chain.push((node, Op::Bias { bias }));
                node = data;
                continue;
            }
            "MaxPool" => {
                let (k, s) = (attr_ints(node, "ksize"), attr_ints(node, "strides"));
                if k.as_deref() != Some(&[1, 2, 2, 1]) || s.as_deref() != Some(&[1, 2, 2, 1]) {
                    return Err(
                        graph.unsupported(node, format!("ksize {k:?} and strides {s:?}: Kiln pools 2x2 with stride 2"))
                    );
                }
                if attr_string(node, "data_format").is_some_and(|f| f != "NHWC") {
                    return Err(graph.unsupported(node, "data_format is not NHWC"));
                }
                Op::Pool
            }
            "Reshape" => {
                Op::Reshape { target: *inputs.get(1).ok_or_else(|| graph.unsupported(node, "no shape input"))? }
            }
            "Pad" | "PadV2" => Op::Pad {
                paddings: *inputs.get(1).ok_or_else(|| graph.unsupported(node, "no paddings input"))?,
                value: inputs.get(2).copied(),
            },
            "Slice" => match inputs.as_slice() {
                [_, begin, size] => Op::Slice { begin, size },
                _ => return Err(graph.unsupported(node, "it does not have three inputs")),
            },
            _ => return Err(graph.unsupported(node, format!("Kiln maps these ops: {SUPPORTED_OPS}"))),
        };
        chain.push((node, op));
        node = first()?;
    };
    chain.reverse();
    forward(&graph, input, &chain, dims_of)
}

fn check_conv(graph: &Graph<'_>, node: &NodeDef) -> Result<(), TfError> {
    let strides = attr_ints(node, "strides");
    if strides.as_deref() != Some(&[1, 1, 1, 1]) {
        return Err(graph.unsupported(node, format!("strides {strides:?}: Kiln's convs have stride 1")));
    }
    if let Some(d) = attr_ints(node, "dilations").filter(|d| d.iter().any(|&v| v != 1)) {
        return Err(graph.unsupported(node, format!("dilations {d:?}")));
    }
    let padding = attr_string(node, "padding").unwrap_or_default();
    if padding != "SAME" {
        return Err(graph.unsupported(node, format!("padding \"{padding}\": Kiln's convs are SAME")));
    }
    if attr_string(node, "data_format").is_some_and(|f| f != "NHWC") {
        return Err(graph.unsupported(node, "data_format is not NHWC"));
    }
    Ok(())
}

/// A folded integer, or the batch dimension (unknown until run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Int {
    Known(i64),
    Batch,
}

/// A folded constant: its dims and values, row-major.
#[derive(Clone, Debug)]
struct Folded {
    dims: Vec<usize>,
    values: Vec<Int>,
}

/// The shapes of chain nodes so far (batch first), for `Shape` ops in constant subgraphs.
type Known<'g> = HashMap<&'g str, Vec<Int>>;

fn const_values(graph: &Graph<'_>, node: &NodeDef, t: &TensorProto) -> Result<Folded, TfError> {
    let dims: Vec<usize> =
        t.tensor_shape.as_ref().map(|s| s.dims()).unwrap_or_default().iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = dims.iter().product();
    let mut values: Vec<i64> = match t.dtype {
        dtype::INT32 if !t.tensor_content.is_empty() => {
            t.tensor_content.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4")) as i64).collect()
        }
        dtype::INT64 if !t.tensor_content.is_empty() => {
            t.tensor_content.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect()
        }
        dtype::INT32 => t.int_val.iter().map(|&v| v as i64).collect(),
        dtype::INT64 => t.int64_val.clone(),
        dtype::FLOAT if !t.tensor_content.is_empty() => t
            .tensor_content
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
            .map(|v| if v == 0.0 { Ok(0) } else { Err(()) })
            .collect::<Result<_, _>>()
            .map_err(|_| graph.unsupported(node, "a non-zero float constant where Kiln folds shapes"))?,
        dtype::FLOAT => t
            .float_val
            .iter()
            .map(|&v| if v == 0.0 { Ok(0) } else { Err(()) })
            .collect::<Result<_, _>>()
            .map_err(|_| graph.unsupported(node, "a non-zero float constant where Kiln folds shapes"))?,
        other => {
            return Err(graph.unsupported(node, format!("a {} constant where Kiln folds shapes", dtype::name(other))));
        }
    };
    // A single value fills the whole tensor (TF's compact encoding).
    if values.len() == 1 && count > 1 {
        values = vec![values[0]; count];
    }
    if values.len() != count {
        return Err(graph.unsupported(node, format!("{} values for shape {dims:?}", values.len())));
    }
    Ok(Folded { dims, values: values.into_iter().map(Int::Known).collect() })
}

/// Folds the constant subgraph ending at `node`.
fn fold<'g>(graph: &Graph<'g>, node: &'g NodeDef, known: &Known<'g>, depth: usize) -> Result<Folded, TfError> {
    if depth > 64 {
        return Err(graph.unsupported(node, "the constant subgraph is too deep to fold"));
    }
    let inputs = graph.inputs(node)?;
    let arg = |i: usize| -> Result<Folded, TfError> {
        let input = inputs.get(i).ok_or_else(|| graph.unsupported(node, format!("input {i} is missing")))?;
        fold(graph, input, known, depth + 1)
    };
    let known_ints = |f: &Folded| -> Result<Vec<i64>, TfError> {
        f.values
            .iter()
            .map(|v| match v {
                Int::Known(v) => Ok(*v),
                Int::Batch => Err(graph.unsupported(node, "it computes with the batch size")),
            })
            .collect()
    };
    match node.op.as_str() {
        "Const" => match attr(node, "value") {
            Some(Value::Tensor(t)) => const_values(graph, node, t),
            _ => Err(graph.unsupported(node, "a Const without a tensor value")),
        },
        "Identity" | "Cast" | "StopGradient" => arg(0),
        "Shape" => {
            let of = inputs.first().ok_or_else(|| graph.unsupported(node, "no input"))?;
            let shape = known.get(of.name.as_str()).ok_or_else(|| {
                graph.unsupported(node, format!("the shape of \"{}\", which is not on the chain from the input", of.name))
            })?;
            Ok(Folded { dims: vec![shape.len()], values: shape.clone() })
        }
        "Reshape" => {
            let (value, shape) = (arg(0)?, arg(1)?);
            let dims = known_ints(&shape)?;
            let count = value.values.len() as i64;
            let inferred: Vec<usize> = dims
                .iter()
                .map(|&d| if d < 0 { count / dims.iter().filter(|&&x| x >= 0).product::<i64>().max(1) } else { d })
                .map(|d| d.max(0) as usize)
                .collect();
            if inferred.iter().product::<usize>() != value.values.len() {
                return Err(graph.unsupported(node, "a reshape of a constant to a different size"));
            }
            Ok(Folded { dims: inferred, values: value.values })
        }
        "Pack" => {
            let mut values = Vec::new();
            for i in 0..inputs.len() {
                let part = arg(i)?;
                if !part.dims.is_empty() {
                    return Err(graph.unsupported(node, "Kiln folds Pack of scalars only"));
                }
                values.extend(part.values);
            }
            Ok(Folded { dims: vec![values.len()], values })
        }
        "ConcatV2" => {
            let mut values = Vec::new();
            for i in 0..inputs.len().saturating_sub(1) {
                let part = arg(i)?;
                if part.dims.len() != 1 {
                    return Err(graph.unsupported(node, "Kiln folds ConcatV2 of vectors only"));
                }
                values.extend(part.values);
            }
            Ok(Folded { dims: vec![values.len()], values })
        }
        "StridedSlice" => {
            let (value, begin, end, strides) = (arg(0)?, arg(1)?, arg(2)?, arg(3)?);
            let (begin, end, strides) = (known_ints(&begin)?, known_ints(&end)?, known_ints(&strides)?);
            let mask = |name: &str| match attr(node, name) {
                Some(Value::I(v)) => *v,
                _ => 0,
            };
            if value.dims.len() != 1 || begin.len() != 1 || strides != [1] || mask("ellipsis_mask") != 0 || mask("new_axis_mask") != 0 {
                return Err(graph.unsupported(node, "Kiln folds StridedSlice of a vector with stride 1 only"));
            }
            let n = value.values.len() as i64;
            let clamp = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) } as usize;
            let b = if mask("begin_mask") & 1 != 0 { 0 } else { clamp(begin[0]) };
            if mask("shrink_axis_mask") & 1 != 0 {
                let v = *value.values.get(b).ok_or_else(|| graph.unsupported(node, "the index is out of range"))?;
                return Ok(Folded { dims: vec![], values: vec![v] });
            }
            let e = if mask("end_mask") & 1 != 0 { n as usize } else { clamp(end[0]) };
            let values = value.values[b.min(e)..e].to_vec();
            Ok(Folded { dims: vec![values.len()], values })
        }
        "Prod" => {
            let value = arg(0)?;
            if value.dims.len() != 1 {
                return Err(graph.unsupported(node, "Kiln folds Prod of a vector only"));
            }
            let product = known_ints(&value)?.iter().product::<i64>();
            Ok(Folded { dims: vec![], values: vec![Int::Known(product)] })
        }
        op @ ("Sub" | "Add" | "AddV2" | "Mul" | "Maximum" | "Minimum" | "FloorDiv") => {
            let (a, b) = (arg(0)?, arg(1)?);
            let (a_int, b_int) = (known_ints(&a)?, known_ints(&b)?);
            let (dims, len) = if a_int.len() >= b_int.len() { (a.dims, a_int.len()) } else { (b.dims, b_int.len()) };
            let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            if !(a_int.len() == len || a_int.len() == 1) || !(b_int.len() == len || b_int.len() == 1) {
                return Err(graph.unsupported(node, "operands of different sizes"));
            }
            let values = (0..len)
                .map(|i| {
                    let (x, y) = (pick(&a_int, i), pick(&b_int, i));
                    Int::Known(match op {
                        "Sub" => x - y,
                        "Add" | "AddV2" => x + y,
                        "Mul" => x * y,
                        "Maximum" => x.max(y),
                        "Minimum" => x.min(y),
                        _ => x.div_euclid(y.max(1)),
                    })
                })
                .collect();
            Ok(Folded { dims, values })
        }
        _ => Err(graph.unsupported(node, "Kiln folds Const, Identity, Cast, Shape, Reshape, Pack, ConcatV2, StridedSlice, Prod, Add, Sub, Mul, Maximum, Minimum and FloorDiv in shape subgraphs")),
    }
}

fn placeholder_shape(graph: &Graph<'_>, input: &NodeDef) -> Result<Vec<i64>, TfError> {
    if let Some(Value::Type(t)) = attr(input, "dtype")
        && *t != dtype::FLOAT
    {
        return Err(graph.unsupported(input, format!("the input is {}, not float32", dtype::name(*t))));
    }
    match attr(input, "shape") {
        Some(Value::Shape(s)) if !s.unknown_rank => Ok(s.dims()),
        _ => Err(graph.unsupported(input, "the input placeholder has no static shape")),
    }
}

/// Runs the chain forward from the input's shape, producing Kiln's layers.
fn forward<'g>(
    graph: &Graph<'g>,
    input: &'g NodeDef,
    chain: &[(&'g NodeDef, Op<'g>)],
    dims_of: &dyn Fn(&str) -> Option<Vec<usize>>,
) -> Result<Walked, TfError> {
    let dims = placeholder_shape(graph, input)?;
    let positive = |d: &[i64]| d.iter().all(|&v| v > 0);
    // The per-image shape: [h, w, c] for images, [features] for vectors (MNIST's 784 is 28x28x1 flattened).
    let (mut shape, mut flat) = match dims.as_slice() {
        [_, h, w, c] if positive(&[*h, *w, *c]) => (Shape { h: *h as usize, w: *w as usize, c: *c as usize }, false),
        [_, 784] => (Shape { h: 28, w: 28, c: 1 }, true),
        [_, k] if *k > 0 => (Shape { h: 1, w: 1, c: *k as usize }, true),
        _ => {
            return Err(graph.unsupported(
                input,
                format!("input shape {dims:?}: Kiln takes [batch, h, w, c] or [batch, features]"),
            ));
        }
    };
    let mut network_input = shape;
    // A [batch, 784] input is the 28x28x1 image flattened: the flatten is added before the first dense
    // layer (unless a reshape to images comes first).
    let mut layers: Vec<Layer> = Vec::new();
    let mut params: Vec<(String, Option<String>)> = Vec::new();
    let mut names = vec![format!("{} ({})", input.op, input.name)];
    let mut known: Known<'g> = HashMap::new();
    let batch_dims = |shape: Shape, flat: bool| -> Vec<Int> {
        let per: Vec<usize> = if flat { vec![shape.len()] } else { vec![shape.h, shape.w, shape.c] };
        std::iter::once(Int::Batch).chain(per.into_iter().map(|d| Int::Known(d as i64))).collect()
    };
    known.insert(input.name.as_str(), batch_dims(shape, flat));
    let mut pending_bias = false;
    let variable_dims = |node: &NodeDef, name: &str| {
        dims_of(name).ok_or_else(|| {
            graph.unsupported(node, format!("it reads the variable \"{name}\", which the checkpoint does not hold"))
        })
    };
    for (node, op) in chain {
        names.push(format!("{} ({})", node.op, node.name));
        let whole = |f: &Folded, shape: Shape, flat: bool| -> bool {
            let want = batch_dims(shape, flat);
            f.values.len() == want.len()
                && f.values.iter().zip(&want).all(|(g, w)| g == w || (*w == Int::Batch && *g == Int::Known(-1)))
        };
        match op {
            Op::Same => {}
            Op::Relu => layers.push(Layer::Relu),
            Op::Pool => {
                if flat || shape.h % 2 != 0 || shape.w % 2 != 0 {
                    return Err(graph.unsupported(
                        node,
                        format!("a 2x2 pool of a {}x{} input: Kiln pools even sizes", shape.h, shape.w),
                    ));
                }
                layers.push(Layer::MaxPool);
            }
            Op::Conv { weights } => {
                if flat {
                    return Err(graph.unsupported(node, "a conv of a flat input"));
                }
                let w = variable_dims(node, weights)?;
                let [3, 3, cin, cout] = w[..] else {
                    return Err(graph.unsupported(node, format!("filter \"{weights}\" is {w:?}: Kiln's convs are 3x3")));
                };
                if cin != shape.c {
                    return Err(graph
                        .unsupported(node, format!("filter \"{weights}\" is {w:?} for {} input channels", shape.c)));
                }
                layers.push(Layer::Conv2d { filters: cout });
                params.push((weights.clone(), None));
                pending_bias = true;
            }
            Op::MatMul { weights } => {
                if !flat && shape.h * shape.w > 1 {
                    return Err(graph.unsupported(node, "a matmul of an unflattened image"));
                }
                let w = variable_dims(node, weights)?;
                let [k, units] = w[..] else {
                    return Err(graph.unsupported(node, format!("weights \"{weights}\" are {w:?}, not a matrix")));
                };
                if k != shape.len() {
                    return Err(
                        graph.unsupported(node, format!("weights \"{weights}\" are {w:?} for {} inputs", shape.len()))
                    );
                }
                if flat && shape.h * shape.w > 1 {
                    layers.push(Layer::Flatten);
                }
                layers.push(Layer::Dense { units });
                params.push((weights.clone(), None));
                pending_bias = true;
            }
            Op::Bias { bias } => {
                let last = params.last_mut().filter(|_| pending_bias);
                let Some(slot) = last else {
                    return Err(graph.unsupported(node, "a bias that does not follow a Conv2D or MatMul"));
                };
                slot.1 = Some(bias.clone());
            }
            Op::Reshape { target } => {
                let target = fold(graph, target, &known, 0)?;
                let values = &target.values;
                let count = shape.len() as i64;
                let is_flatten = values.len() == 2
                    && matches!(values[0], Int::Batch | Int::Known(-1))
                    && (values[1] == Int::Known(count) || (values[1] == Int::Known(-1) && values[0] == Int::Batch));
                if is_flatten {
                    if shape.h * shape.w > 1 {
                        layers.push(Layer::Flatten);
                    }
                    flat = true;
                } else if layers.is_empty() && params.is_empty() && values.len() == 4 {
                    // [batch, 784] reshaped to images straight away: the network's input is the image.
                    let image: Vec<i64> =
                        values[1..].iter().map(|v| if let Int::Known(v) = v { *v } else { -1 }).collect();
                    if !positive(&image) || image.iter().product::<i64>() != count {
                        return Err(graph.unsupported(node, format!("a reshape to {values:?} of {count} values")));
                    }
                    shape = Shape { h: image[0] as usize, w: image[1] as usize, c: image[2] as usize };
                    network_input = shape;
                    flat = false;
                } else {
                    return Err(graph.unsupported(node, format!("a reshape to {values:?}: Kiln maps flattening only")));
                }
            }
            Op::Pad { paddings, value } => {
                if let Some(value) = value {
                    let v = fold(graph, value, &known, 0)?;
                    if v.values != [Int::Known(0)] {
                        return Err(graph.unsupported(node, "a pad with a non-zero value"));
                    }
                }
                let p = fold(graph, paddings, &known, 0)?;
                let ints: Vec<i64> = p.values.iter().map(|v| if let Int::Known(v) = v { *v } else { -1 }).collect();
                match ints.as_slice() {
                    [0, 0, top, bottom, left, right, 0, 0]
                        if !flat && [*top, *bottom, *left, *right].iter().all(|&v| v >= 0) =>
                    {
                        layers.push(Layer::Pad {
                            top: *top as usize,
                            bottom: *bottom as usize,
                            left: *left as usize,
                            right: *right as usize,
                        })
                    }
                    _ => {
                        return Err(
                            graph.unsupported(node, format!("paddings {ints:?}: Kiln pads height and width only"))
                        );
                    }
                }
            }
            Op::Slice { begin, size } => {
                let (b, s) = (fold(graph, begin, &known, 0)?, fold(graph, size, &known, 0)?);
                let zeros = b.values.iter().all(|v| *v == Int::Known(0));
                if !zeros || !whole(&s, shape, flat) {
                    return Err(graph.unsupported(node, "a slice that crops: Kiln maps only a slice of the whole tensor (the no-op crop of resize_with_crop_or_pad)"));
                }
            }
        }
        if !matches!(op, Op::Conv { .. } | Op::MatMul { .. } | Op::Bias { .. }) {
            pending_bias = matches!(op, Op::Same) && pending_bias;
        }
        // Kiln's own shape rules (the layers so far were each checked as they were added).
        shape = kiln_core::network::infer(&layers, network_input)
            .map_err(|e| graph.unsupported(node, format!("the network so far is not valid: {e:?}")))?;
        known.insert(node.name.as_str(), batch_dims(shape, flat));
    }
    Ok(Walked {
        network: Network {
            name: String::new(),
            input: network_input,
            layers,
            normalization: Normalization::UNIT_RANGE,
        },
        params,
        chain: names,
        input: input.name.clone(),
    })
}

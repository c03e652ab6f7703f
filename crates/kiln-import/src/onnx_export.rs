//! Kiln models out as ONNX, built with tract-onnx's protobuf types and encoded with prost.
//!
//! The graph keeps Kiln's interface: input `input`, `[n, h, w, c]` float32, already normalised (what
//! `Session::run` takes); output `logits`, `[n, classes]`. Convs run NCHW as ONNX requires, between a
//! `Transpose` after the input and one back to NHWC before the flatten, so the flatten order (and the dense
//! weights) stay Kiln's. Quantized `.kiln` weights are exported dequantized ([`model_from_kiln`]).

use kiln_core::network::{Activation, Layer, PoolKind, Shape, Window};
use kiln_train::model::{Model, Tensor};
use kiln_train::network::{Network, Normalization};
use prost::Message;
use tract_onnx::pb::{self, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// The ONNX opset the export targets.
pub const OPSET: i64 = 13;

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// A conv's or pool's window as ONNX attributes: `kernel_shape`, `strides`, `pads` (begins, then ends).
fn window_attributes(window: &Window) -> Vec<AttributeProto> {
    let Window { kh, kw, sh, sw, top, bottom, left, right } = *window;
    vec![
        ints("kernel_shape", &[kh as i64, kw as i64]),
        ints("strides", &[sh as i64, sw as i64]),
        ints("pads", &[top as i64, left as i64, bottom as i64, right as i64]),
    ]
}

/// HWIO conv weights `[kh, kw, cin, cout]` as ONNX's OIHW.
fn hwio_to_oihw(w: &[f32], taps: usize, cin: usize, cout: usize) -> Vec<f32> {
    let mut oihw = vec![0.0; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            for k in 0..taps {
                oihw[(o * cin + i) * taps + k] = w[(k * cin + i) * cout + o];
            }
        }
    }
    oihw
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ONNX file of `model`.
pub fn export(model: &Model) -> Vec<u8> {
    let network = &model.network;
    let names = network.layer_names();
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();
    let mut current = "input".to_string();
    let mut nchw = false;
    let mut param = 0;
    let mut node = |op: &str, name: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>, current: &mut String| {
        let output = format!("{name}_output");
        nodes.push(NodeProto {
            op_type: op.to_string(),
            name: name.to_string(),
            input: inputs,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        *current = output;
    };
    let plan = network.plan().expect("a model's network is valid");
    for (step, name) in plan.steps().zip(&names) {
        let layer = &step.layer;
        let name = name.replace('/', "_");
        let wants_nchw = matches!(
            layer,
            Layer::Conv2d { .. } | Layer::Conv { .. } | Layer::MaxPool | Layer::Pool { .. } | Layer::Pad { .. }
        ) || (matches!(layer, Layer::GlobalAvgPool) && !step.input.is_flat());
        if wants_nchw && !nchw {
            node(
                "Transpose",
                &format!("{name}_to_nchw"),
                vec![current.clone()],
                vec![ints("perm", &[0, 3, 1, 2])],
                &mut current,
            );
            nchw = true;
        }
        if matches!(layer, Layer::Flatten) && nchw {
            node(
                "Transpose",
                &format!("{name}_to_nhwc"),
                vec![current.clone()],
                vec![ints("perm", &[0, 2, 3, 1])],
                &mut current,
            );
            nchw = false;
        }
        let input_c = step.input.c;
        let mut params = || {
            let (w, b): (&Tensor, &Tensor) = (&model.params[2 * param], &model.params[2 * param + 1]);
            param += 1;
            (w, b)
        };
        match *layer {
            Layer::Conv2d { filters: cout } | Layer::Conv { filters: cout, .. } => {
                let window = layer.conv_window().expect("a conv");
                let (w, b) = params();
                let oihw = hwio_to_oihw(&w.data, window.taps(), input_c, cout);
                let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                initializers.push(float_tensor(&wn, &[cout, input_c, window.kh, window.kw], &oihw));
                initializers.push(float_tensor(&bn, &[cout], &b.data));
                node("Conv", &name, vec![current.clone(), wn, bn], window_attributes(&window), &mut current);
            }
            Layer::Dense { units } => {
                let (w, b) = params();
                let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                initializers.push(float_tensor(&wn, &[step.input.len(), units], &w.data));
                initializers.push(float_tensor(&bn, &[units], &b.data));
                node("Gemm", &name, vec![current.clone(), wn, bn], vec![], &mut current);
            }
            Layer::Relu => node("Relu", &name, vec![current.clone()], vec![], &mut current),
            Layer::MaxPool => {
                let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
                node("MaxPool", &name, vec![current.clone()], attrs, &mut current);
            }
            Layer::Pool { kind, window } => {
                let mut attrs = window_attributes(&window);
                let op = match kind {
                    PoolKind::Max => "MaxPool",
                    PoolKind::Avg { count_pad } => {
                        attrs.push(int("count_include_pad", i64::from(count_pad)));
                        "AveragePool"
                    }
                };
                node(op, &name, vec![current.clone()], attrs, &mut current);
            }
            Layer::GlobalAvgPool if nchw => {
                node("GlobalAveragePool", &name, vec![current.clone()], vec![], &mut current);
                node("Flatten", &format!("{name}_flatten"), vec![current.clone()], vec![int("axis", 1)], &mut current);
                nchw = false;
            }
            // Already flat: the mean over one pixel.
            Layer::GlobalAvgPool => {}
            Layer::Activation(a) => match a {
                Activation::Tanh => node("Tanh", &name, vec![current.clone()], vec![], &mut current),
                Activation::Sigmoid => node("Sigmoid", &name, vec![current.clone()], vec![], &mut current),
                Activation::LeakyRelu { alpha } => {
                    node("LeakyRelu", &name, vec![current.clone()], vec![float("alpha", alpha.get())], &mut current)
                }
                Activation::Clip { min, max } => {
                    let (lo, hi) = (format!("{name}.min"), format!("{name}.max"));
                    initializers.push(float_tensor(&lo, &[], &[min.get()]));
                    initializers.push(float_tensor(&hi, &[], &[max.get()]));
                    node("Clip", &name, vec![current.clone(), lo, hi], vec![], &mut current);
                }
            },
            Layer::ScaleShift => {
                let (scale, shift) = params();
                // Per channel: `[1, c, 1, 1]` against NCHW, `[c]` against NHWC or a flat vector.
                let dims: &[usize] = if nchw { &[1, input_c, 1, 1] } else { &[input_c] };
                let (sn, tn) = (format!("{name}.scale"), format!("{name}.shift"));
                initializers.push(float_tensor(&sn, dims, &scale.data));
                initializers.push(float_tensor(&tn, dims, &shift.data));
                node("Mul", &format!("{name}_scale"), vec![current.clone(), sn], vec![], &mut current);
                node("Add", &format!("{name}_shift"), vec![current.clone(), tn], vec![], &mut current);
            }
            Layer::Dropout { .. } => {}
            Layer::Pad { top, bottom, left, right } => {
                let pads = format!("{name}.pads");
                let [t, b, l, r] = [top, bottom, left, right].map(|v| v as i64);
                initializers.push(int64_tensor(&pads, &[0, 0, t, l, 0, 0, b, r]));
                node("Pad", &name, vec![current.clone(), pads], vec![], &mut current);
            }
            Layer::Flatten => {
                node("Flatten", &name, vec![current.clone()], vec![int("axis", 1)], &mut current);
            }
        }
    }
    let shape: Shape = plan.output();
    // The last node's output is the graph's `logits`.
    if let Some(last) = nodes.last_mut() {
        last.output = vec!["logits".to_string()];
    }
    let input = network.input;
    let graph = GraphProto {
        name: network.name.clone(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("input", &[None, Some(input.h), Some(input.w), Some(input.c)])],
        output: vec![value_info("logits", &[None, Some(shape.len())])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A `.kiln` file as a kiln-train model: the same layers, its weights dequantized to f32.
pub fn model_from_kiln(file: &kiln_core::Model<'_>) -> Result<Model, kiln_core::network::NetworkError> {
    let meta = file.metadata();
    let network = Network {
        name: meta.model_name().to_string(),
        input: file.input_shape(),
        layers: file.plan().steps().map(|s| s.layer).collect(),
        normalization: Normalization { mean: meta.mean, std: meta.std },
    };
    let mut model = Model::zeroed(network)?;
    let mut k = 0;
    for step in file.plan().steps() {
        let Some(binding) = file.binding(step.index) else { continue };
        for (tensor, index) in model.params[2 * k..2 * k + 2].iter_mut().zip([binding.weights, binding.bias]) {
            file.tensor(index).values().decode(0, &mut tensor.data);
        }
        k += 1;
    }
    Ok(model)
}

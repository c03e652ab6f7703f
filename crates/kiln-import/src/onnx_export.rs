//! Kiln models out as ONNX, built with tract-onnx's protobuf types and encoded with prost.
//!
//! The graph keeps Kiln's interface: input `input`, `[n, h, w, c]` float32, already normalised (what
//! `Session::run` takes); output `logits`, `[n, classes]`. Convs run NCHW as ONNX requires, between a
//! `Transpose` after the input and one back to NHWC before the flatten, so the flatten order (and the dense
//! weights) stay Kiln's. Quantized `.kiln` weights are exported dequantized ([`model_from_kiln`]).

use kiln_core::network::Layer;
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
    let mut shape = network.input;
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
    for (layer, name) in network.layers.iter().zip(&names) {
        let name = name.replace('/', "_");
        let wants_nchw = matches!(layer, Layer::Conv2d { .. } | Layer::MaxPool | Layer::Pad { .. });
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
        match *layer {
            Layer::Conv2d { filters } => {
                let (w, b): (&Tensor, &Tensor) = (&model.params[2 * param], &model.params[2 * param + 1]);
                param += 1;
                let cin = shape.c;
                let mut oihw = vec![0.0; w.data.len()];
                for o in 0..filters {
                    for i in 0..cin {
                        for k in 0..9 {
                            oihw[(o * cin + i) * 9 + k] = w.data[(k * cin + i) * filters + o];
                        }
                    }
                }
                let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                initializers.push(float_tensor(&wn, &[filters, cin, 3, 3], &oihw));
                initializers.push(float_tensor(&bn, &[filters], &b.data));
                let attrs = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), ints("strides", &[1, 1])];
                node("Conv", &name, vec![current.clone(), wn, bn], attrs, &mut current);
                shape.c = filters;
            }
            Layer::Dense { units } => {
                let (w, b) = (&model.params[2 * param], &model.params[2 * param + 1]);
                param += 1;
                let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                initializers.push(float_tensor(&wn, &[shape.len(), units], &w.data));
                initializers.push(float_tensor(&bn, &[units], &b.data));
                node("Gemm", &name, vec![current.clone(), wn, bn], vec![], &mut current);
                shape = kiln_core::network::Shape { h: 1, w: 1, c: units };
            }
            Layer::Relu => node("Relu", &name, vec![current.clone()], vec![], &mut current),
            Layer::MaxPool => {
                let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
                node("MaxPool", &name, vec![current.clone()], attrs, &mut current);
                shape = kiln_core::network::Shape { h: shape.h / 2, w: shape.w / 2, c: shape.c };
            }
            Layer::Pad { top, bottom, left, right } => {
                let pads = format!("{name}.pads");
                let [t, b, l, r] = [top, bottom, left, right].map(|v| v as i64);
                initializers.push(int64_tensor(&pads, &[0, 0, t, l, 0, 0, b, r]));
                node("Pad", &name, vec![current.clone(), pads], vec![], &mut current);
                shape = kiln_core::network::Shape { h: shape.h + top + bottom, w: shape.w + left + right, c: shape.c };
            }
            Layer::Flatten => {
                node("Flatten", &name, vec![current.clone()], vec![int("axis", 1)], &mut current);
                shape = kiln_core::network::Shape { h: 1, w: 1, c: shape.len() };
            }
        }
    }
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

//! ONNX files made by the real tools (tests/fixtures/import/onnx, from tools/make_import_fixtures.py):
//! tf2onnx's NHWC graphs of the TF fixtures and an NCHW ConvNet laid out as torch.onnx.export writes one.
//! Kiln's import runs the full test set with ONNX Runtime's logits; broken files get errors naming the file,
//! the node and what is wrong.

use std::path::{Path, PathBuf};

use kiln_import::onnx::{self, OnnxError};
use kiln_train::data::Mnist;
use kiln_train::model::{Model, Workspace};
use kiln_train::presets;
use prost::Message;
use tract_onnx::pb;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/import/onnx").join(name)
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn assert_matches_onnx_runtime(name: &str, model: &Model) {
    let test = Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).unwrap().test;
    let want = read_f32(&fixture(&format!("{name}.ort-logits.f32")));
    let mut ws = Workspace::new();
    let mut got = Vec::new();
    for start in (0..test.len()).step_by(500) {
        let n = 500.min(test.len() - start);
        let input: Vec<f32> =
            (start..start + n).flat_map(|i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
        got.extend_from_slice(model.forward(&mut ws, &input, n));
    }
    assert_eq!(got.len(), want.len());
    let (mut worst, mut agree) = (0.0f32, 0);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    for (g, w) in got.chunks_exact(10).zip(want.chunks_exact(10)) {
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
        agree += usize::from(argmax(g) == argmax(w));
    }
    eprintln!(
        "{name}: top-1 agreement with ONNX Runtime {agree}/{}, worst relative logit difference {worst:.2e}",
        test.len()
    );
    assert_eq!(agree, test.len(), "{name}: Kiln and ONNX Runtime disagree on some test digits");
    assert!(worst <= 1e-4, "{name}: logits differ by {worst} relative");
}

#[test]
fn tf2onnx_fc3_imports_and_matches_onnx_runtime() {
    let imported = onnx::import(&fixture("fc3.tf2onnx.onnx"), "fc3").unwrap();
    assert!(imported.producer.starts_with("tf2onnx"), "{}", imported.producer);
    assert_eq!(imported.model.network.layers, presets::fc3().layers);
    assert_matches_onnx_runtime("fc3", &imported.model);
}

#[test]
fn tf2onnx_convnet4_imports_and_matches_onnx_runtime() {
    let imported = onnx::import(&fixture("convnet4.tf2onnx.onnx"), "convnet4").unwrap();
    assert_eq!(imported.model.network.layers, presets::convnet4().layers);
    assert!(!imported.permuted, "tf2onnx transposes back to NHWC before the flatten");
    assert_matches_onnx_runtime("convnet4", &imported.model);
}

#[test]
fn an_nchw_convnet_imports_with_its_dense_weights_permuted() {
    let imported = onnx::import(&fixture("nchw_convnet.onnx"), "nchw").unwrap();
    assert!(imported.permuted, "Flatten of 16 channels in C,H,W order");
    assert!(imported.chain.iter().any(|op| op.starts_with("Gemm")), "{:?}", imported.chain);
    assert_matches_onnx_runtime("nchw_convnet", &imported.model);
}

/// The NCHW fixture changed by `edit`, written to a fresh file.
fn edited(tag: &str, edit: impl FnOnce(&mut pb::GraphProto)) -> PathBuf {
    let mut model = pb::ModelProto::decode(&std::fs::read(fixture("nchw_convnet.onnx")).unwrap()[..]).unwrap();
    edit(model.graph.as_mut().unwrap());
    let path = std::env::temp_dir().join(format!("kiln-onnx-{tag}-{}.onnx", std::process::id()));
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

fn error_of(path: &Path) -> (OnnxError, String) {
    let e = onnx::import(path, "x").unwrap_err();
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "the error must name the file: {message}");
    std::fs::remove_file(path).unwrap();
    (e, message)
}

fn dims(graph: &mut pb::GraphProto) -> &mut Vec<pb::tensor_shape_proto::Dimension> {
    match graph.input[0].r#type.as_mut().unwrap().value.as_mut().unwrap() {
        pb::type_proto::Value::TensorType(t) => &mut t.shape.as_mut().unwrap().dim,
    }
}

#[test]
fn bad_onnx_files_get_errors_that_name_the_node_and_the_problem() {
    // An op Kiln does not map.
    let (e, m) = error_of(&edited("op", |g| g.node[1].op_type = "Softplus".into()));
    assert!(matches!(e, OnnxError::Unsupported { .. }) && m.contains("/relu1/Relu") && m.contains("Softplus"), "{m}");
    assert!(m.contains("Kiln maps"), "the error lists the supported ops: {m}");
    // A dilated conv.
    let (e, m) = error_of(&edited("dilation", |g| {
        let mut dilations = g.node[3].attribute.iter().find(|a| a.name == "strides").unwrap().clone();
        dilations.name = "dilations".into();
        dilations.ints = vec![2, 2];
        g.node[3].attribute.retain(|a| a.name != "dilations");
        g.node[3].attribute.push(dilations);
    }));
    assert!(matches!(e, OnnxError::Unsupported { .. }) && m.contains("dilations") && m.contains("/conv2/Conv"), "{m}");
    // A dynamic image size.
    let (e, m) = error_of(&edited("dynamic", |g| {
        dims(g)[2].value = Some(pb::tensor_shape_proto::dimension::Value::DimParam("height".into()));
    }));
    assert!(matches!(e, OnnxError::Interface { .. }) && m.contains("dynamic shape"), "{m}");
    // A non-float input.
    let (e, m) = error_of(&edited("dtype", |g| {
        if let Some(pb::type_proto::Value::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() {
            t.elem_type = pb::tensor_proto::DataType::Int64 as i32;
        }
    }));
    assert!(matches!(e, OnnxError::Interface { .. }) && m.contains("not float32"), "{m}");
    // An initializer of the wrong size.
    let (e, m) = error_of(&edited("size", |g| {
        let w = g.initializer.iter_mut().find(|t| t.name == "conv2.weight").unwrap();
        if w.raw_data.is_empty() {
            w.float_data.truncate(10);
        } else {
            w.raw_data.truncate(40);
        }
    }));
    assert!(matches!(e, OnnxError::Initializer { .. }) && m.contains("conv2.weight"), "{m}");
    // A branch: the first ReLU's output also feeds the output's producer.
    let (e, m) = error_of(&edited("branch", |g| {
        let relu_out = g.node[1].output[0].clone();
        let mut extra = g.node[1].clone();
        extra.name = "/extra/Relu".into();
        extra.input = vec![relu_out];
        extra.output = vec!["/extra_output".into()];
        g.node.push(extra);
    }));
    assert!(matches!(e, OnnxError::NotAChain { .. }) && m.contains("feeds 2 ops"), "{m}");
    // Not ONNX at all.
    let path = std::env::temp_dir().join(format!("kiln-onnx-garbage-{}.onnx", std::process::id()));
    std::fs::write(&path, b"\x08\x07garbage that is not a protobuf message \xff\xff\xff").unwrap();
    let (e, m) = error_of(&path);
    assert!(matches!(e, OnnxError::NotOnnx { .. }), "{m}");
}

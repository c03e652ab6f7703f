//! Models with the layers past the series' (tests/fixtures/layers, from tools/make_layer_fixtures.py):
//! LeNet-5, PyTorch's MNIST example, Keras' MNIST convnet, a conv-batchnorm-ReLU network with stride-2 convs
//! and global average pooling, and a network of the remaining activations and pools, each trained briefly
//! in Keras and exported by tf2onnx (or written as torch.onnx.export writes it). Each imports and runs
//! through the `.kiln` runtime with every kernel build, f32 matching ONNX Runtime on the full test set;
//! int8 and int4 packings print their accuracy cost.

use std::path::{Path, PathBuf};

use kiln_core::kernels::Isa;
use kiln_core::session::Session;
use kiln_import::onnx;
use kiln_pack::convert::{self, Provenance};
use kiln_pack::writer::Quant;
use kiln_train::data::Mnist;
use kiln_train::model::Model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/layers").join(name)
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

fn pack(model: &Model, quant: Quant) -> Vec<u8> {
    let quants = vec![quant; model.params.len() / 2];
    let provenance = Provenance { file_name: "fixture.onnx".into(), step: 0, sha256: [0; 32] };
    let meta = convert::metadata(&model.network, &provenance, "test").unwrap();
    convert::pack(model, &quants, &meta).unwrap()
}

/// The logits of the first `count` test digits through the runtime, with kernel build `isa`.
fn run(file: &[u8], isa: Isa, count: usize) -> Vec<f32> {
    let model = kiln_core::Model::from_bytes(file).unwrap();
    let test = Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).unwrap().test;
    let batch = 250;
    let mut arena = vec![0u8; model.arena_size(batch)];
    let mut session = Session::new(&model, &mut arena, batch).unwrap();
    session.set_isa(isa);
    let mut logits = Vec::new();
    for start in (0..count).step_by(batch) {
        let n = batch.min(count - start);
        let input: Vec<f32> =
            (start..start + n).flat_map(|i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
        logits.extend_from_slice(session.run(&input, n).unwrap().logits);
    }
    logits
}

fn accuracy(logits: &[f32]) -> f64 {
    let test = Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).unwrap().test;
    let correct = logits.chunks_exact(10).enumerate().filter(|(i, l)| argmax(l) == test.labels[*i] as usize).count();
    100.0 * correct as f64 / (logits.len() / 10) as f64
}

fn check(file_name: &str, expect_ops: &[&str]) {
    let imported = onnx::import(&fixture(file_name), file_name.split('.').next().unwrap()).unwrap();
    let kinds: Vec<&str> = imported.model.network.layers.iter().map(|l| l.kind()).collect();
    for op in expect_ops {
        assert!(kinds.contains(op), "{file_name}: no {op} among {kinds:?}");
    }
    let stem = file_name.trim_end_matches(".onnx");
    let want = read_f32(&fixture(&format!("{stem}.ort-logits.f32")));
    let f32_file = pack(&imported.model, Quant::F32);
    let test_len = want.len() / 10;
    // Every kernel build on the first images; the full test set on the best one.
    const SOME: usize = 1000;
    let builds = Isa::builds_to_compare(file_name);
    let best = Isa::best();
    let compare = |got: &[f32], isa: Isa| {
        let (mut worst, mut agree) = (0.0f32, 0);
        for (g, w) in got.chunks_exact(10).zip(want.chunks_exact(10)) {
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs() / b.abs().max(1.0));
            }
            agree += usize::from(argmax(g) == argmax(w));
        }
        let images = got.len() / 10;
        eprintln!(
            "{file_name} [{}] f32: top-1 agreement with ONNX Runtime {agree}/{images}, worst relative logit \
             difference {worst:.2e}",
            isa.name()
        );
        assert_eq!(agree, images, "{file_name} [{}]: Kiln and ONNX Runtime disagree", isa.name());
        assert!(worst <= 1e-4, "{file_name} [{}]: logits differ by {worst} relative", isa.name());
    };
    compare(&run(&f32_file, best, test_len), best);
    for &isa in builds.iter().filter(|&&isa| isa != best) {
        compare(&run(&f32_file, isa, SOME), isa);
    }
    let f32_accuracy = accuracy(&want);
    // The quantized packings: the integer kernels add in the same order on every build, so each build gives
    // the same classes; the accuracy cost over the full test set is printed.
    for (name, quant) in [("int8", Quant::Int8), ("int4", Quant::Int4 { block: 32 })] {
        let file = pack(&imported.model, quant);
        let full = run(&file, best, test_len);
        let classes = |logits: &[f32]| logits.chunks_exact(10).map(argmax).collect::<Vec<_>>();
        let first = classes(&full[..SOME * 10]);
        for &isa in builds.iter().filter(|&&isa| isa != best) {
            assert_eq!(
                classes(&run(&file, isa, SOME)),
                first,
                "{file_name} {name}: {} differs from {}",
                isa.name(),
                best.name()
            );
        }
        let agree = classes(&full).iter().zip(want.chunks_exact(10)).filter(|(a, w)| **a == argmax(w)).count();
        eprintln!(
            "{file_name} {name}: {} bytes, {agree}/{test_len} classes as ONNX Runtime's f32, accuracy cost {:+.2} \
             points ({f32_accuracy:.2}% in f32)",
            file.len(),
            f32_accuracy - accuracy(&full)
        );
    }
}

#[test]
fn lenet5_from_keras() {
    check("lenet5.tf2onnx.onnx", &["conv2d", "tanh", "avgpool"]);
}

#[test]
fn pytorch_mnist_example_as_torch_exports_it() {
    check("pytorch_example.nchw.onnx", &["conv2d", "maxpool", "dense"]);
}

#[test]
fn keras_mnist_convnet() {
    check("keras_convnet.tf2onnx.onnx", &["conv2d", "maxpool"]);
}

#[test]
fn conv_batchnorm_relu_with_strides_and_global_pooling() {
    check("bn_gap.tf2onnx.onnx", &["conv2d", "global_avgpool"]);
    check("bn_gap.unfused.onnx", &["conv2d", "global_avgpool"]);
}

#[test]
fn the_other_activations_and_pools() {
    check("activations.tf2onnx.onnx", &["leaky_relu", "clip", "sigmoid", "avgpool", "scale_shift"]);
    check("activations.batchnorm.onnx", &["leaky_relu", "clip", "sigmoid", "avgpool", "scale_shift"]);
}

//! The wasm CPU runtime on real digits: Kiln's C API (kiln-capi) compiled for wasm32-unknown-unknown twice,
//! scalar and with `simd128`, run in Node (`tests/wasm/classify.mjs`), gives the same classes as every
//! native kernel build on the bundled test digits, with probabilities that agree to 1e-5.
//!
//! Needs the wasm32-unknown-unknown target and `node` (tools/test.sh and .ci/run install both). Set
//! `KILN_WASM_DIGITS=10000` to run the whole test set (then the accuracy must also equal the one measured
//! when the model was packed, stored in its metadata).

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_core::{Isa, Model, Session};

/// The series' ConvNet4 (int8), and the layers past the series': LeNet-5 (int8: 5x5 convs, tanh, average
/// pools) and a network of strided and 1x1 convs, leaky ReLU, clip, scale-shift, sigmoid, SAME pools and
/// global average pooling (int4), both from Keras through tf2onnx. `Some(p)`: the model is at least p%
/// accurate on the digits run.
const MODELS: [(&str, Option<usize>); 3] = [
    ("crates/kiln-core/examples/embedded/convnet4-int8.kiln", Some(97)),
    ("crates/kiln-core/fuzz/seeds/from_bytes/lenet5_int8.kiln", None),
    ("crates/kiln-core/fuzz/seeds/from_bytes/layers_int4.kiln", None),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds kiln-capi for wasm32 with `rustflags` into its own target directory and returns the module.
fn build_wasm(flavour: &str, rustflags: &str) -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wasm-{flavour}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "kiln-capi", "--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .current_dir(root())
        .status()
        .expect("running cargo");
    assert!(status.success(), "building kiln-capi for wasm32 ({flavour}) failed: is the target installed?");
    target_dir.join("wasm32-unknown-unknown/release/kiln.wasm")
}

struct Prediction {
    class: usize,
    probabilities: Vec<f32>,
}

fn run_in_node(wasm: &Path, model: &str, digits: &Path, count: usize) -> (Vec<Prediction>, f64) {
    let output = Command::new("node")
        .arg(root().join("tests/wasm/classify.mjs"))
        .arg(wasm)
        .arg(root().join(model))
        .arg(digits)
        .arg(count.to_string())
        .output()
        .expect("running node (apt install nodejs)");
    assert!(output.status.success(), "node failed: {}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from classify.mjs");
    let predictions = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| Prediction {
            class: r["class"].as_u64().expect("class") as usize,
            probabilities: r["probabilities"]
                .as_array()
                .expect("probabilities")
                .iter()
                .map(|p| p.as_f64().expect("a number") as f32)
                .collect(),
        })
        .collect();
    (predictions, json["ms_per_digit"].as_f64().unwrap_or(f64::NAN))
}

#[test]
fn wasm_scalar_and_simd128_agree_with_every_native_build() {
    let count: usize = std::env::var("KILN_WASM_DIGITS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mnist = kiln_train::data::Mnist::load(&root().join("data/mnist")).expect("the bundled MNIST data");
    let count = count.min(mnist.test.len());
    let pixels: Vec<u8> = (0..count).flat_map(|i| mnist.test.image(i).to_vec()).collect();
    let digits = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-digits.bin");
    std::fs::write(&digits, &pixels).unwrap();
    let modules =
        [("scalar", build_wasm("scalar", "")), ("simd128", build_wasm("simd128", "-Ctarget-feature=+simd128"))];
    for (model, min_accuracy) in MODELS {
        check_model(model, min_accuracy, &modules, &mnist, &pixels, &digits, count);
    }
}

fn check_model(
    path: &str,
    min_accuracy: Option<usize>,
    modules: &[(&str, PathBuf)],
    mnist: &kiln_train::data::Mnist,
    pixels: &[u8],
    digits: &Path,
    count: usize,
) {
    println!("{path}:");
    let bytes = std::fs::read(root().join(path)).unwrap();
    let model = Model::from_bytes(&bytes).unwrap();
    let (classes, chunk) = (model.metadata().classes, 50);
    let mut native: Vec<(String, Vec<Prediction>)> = Vec::new();
    for isa in Isa::builds_to_compare("wasm_scalar_and_simd128_agree_with_every_native_build") {
        let mut arena = vec![0u32; model.arena_size(chunk).div_ceil(4)];
        let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), chunk).unwrap();
        session.set_isa(isa);
        assert_eq!(session.isa(), isa);
        let mut predictions = Vec::new();
        for batch in pixels.chunks(chunk * 784) {
            let n = batch.len() / 784;
            let out = session.run_pixels(batch, n).unwrap();
            predictions.extend((0..n).map(|i| Prediction {
                class: out.class(i),
                probabilities: out.probabilities[i * classes..][..classes].to_vec(),
            }));
        }
        native.push((format!("native {}", isa.name()), predictions));
    }
    let mut wasm = Vec::new();
    for (flavour, module) in modules {
        let (predictions, ms) = run_in_node(module, path, digits, count);
        println!("wasm {flavour}: {ms:.2} ms per digit in Node");
        wasm.push((format!("wasm {flavour}"), predictions));
    }

    let (reference_name, reference) = &native[0];
    let correct = reference.iter().enumerate().filter(|(i, p)| p.class == mnist.test.labels[*i] as usize).count();
    println!("{reference_name}: {correct} of {count} correct");
    if let Some(min) = min_accuracy {
        assert!(correct * 100 >= count * min, "{correct} of {count}: the model should be at least {min}% accurate");
    }
    for (name, predictions) in native[1..].iter().chain(&wasm) {
        assert_eq!(predictions.len(), count, "{name}");
        for (i, (p, r)) in predictions.iter().zip(reference).enumerate() {
            assert_eq!(p.class, r.class, "digit {i}: {name} says {}, {reference_name} says {}", p.class, r.class);
            for (a, b) in p.probabilities.iter().zip(&r.probabilities) {
                assert!((a - b).abs() <= 1e-5, "digit {i}: {name} {a} vs {reference_name} {b}");
            }
        }
        println!("{name}: the same {count} classes as {reference_name}");
    }
    if count == mnist.test.len() && min_accuracy.is_some() {
        let packed = model.metadata().test_accuracy().expect("accuracy measured when packed");
        let measured = correct as f64 / count as f64;
        assert!((measured - packed).abs() < 1e-9, "accuracy {measured} vs {packed} measured when packed");
        println!(
            "accuracy {:.2}% equals the {:.2}% measured when the model was packed",
            100.0 * measured,
            100.0 * packed
        );
    }
}

//! TensorFlow Saver checkpoints made by TensorFlow itself (tests/fixtures/import, from
//! tools/make_import_fixtures.py): the network found in the `.meta` graph, run by Kiln on the full test set,
//! gives TensorFlow's own logits; and broken files get errors that name them.

use std::path::{Path, PathBuf};

use kiln_import::tf::{TfCheckpoint, TfError};
use kiln_train::data::Mnist;
use kiln_train::model::{Model, Workspace};
use kiln_train::presets;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/import")
}

fn test_set() -> kiln_train::data::Dataset {
    Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).expect("bundled MNIST").test
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Kiln's f32 logits for every test digit, from pixels / 255 (as the fixtures fed TensorFlow).
fn kiln_logits(model: &Model, test: &kiln_train::data::Dataset) -> Vec<f32> {
    let mut ws = Workspace::new();
    let mut out = Vec::new();
    for start in (0..test.len()).step_by(500) {
        let n = 500.min(test.len() - start);
        let input: Vec<f32> =
            (start..start + n).flat_map(|i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
        out.extend_from_slice(model.forward(&mut ws, &input, n));
    }
    out
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

fn assert_matches_tensorflow(name: &str, model: &Model) {
    assert_matches_logits(name, model, &fixtures().join(format!("{name}/{name}.tf-logits.f32")));
}

/// Kiln's f32 network against the logits TensorFlow recorded: the same class for every test digit, logits
/// within 1e-4 relative and probabilities within 1e-4.
fn assert_matches_logits(name: &str, model: &Model, logits: &Path) {
    let test = test_set();
    let want = read_f32(logits);
    let got = kiln_logits(model, &test);
    assert_eq!(got.len(), want.len());
    let (mut worst, mut worst_p, mut agree) = (0.0f32, 0.0f32, 0);
    for (g, w) in got.chunks_exact(10).zip(want.chunks_exact(10)) {
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
        for (a, b) in softmax(g).iter().zip(softmax(w)) {
            worst_p = worst_p.max((a - b).abs());
        }
        let argmax = |v: &[f32]| (0..10).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        agree += usize::from(argmax(g) == argmax(w));
    }
    eprintln!(
        "{name}: top-1 agreement {agree}/{}, worst relative logit difference {worst:.2e}, worst probability \
         difference {worst_p:.2e}",
        test.len()
    );
    assert_eq!(agree, test.len(), "{name}: Kiln and TensorFlow disagree on some test digits");
    assert!(worst <= 1e-4, "{name}: logits differ by {worst} relative");
    assert!(worst_p <= 1e-4, "{name}: probabilities differ by {worst_p}");
}

/// The series' VGG, trained by the fixture script in TensorFlow (184 MB, so made on demand):
/// `python3 tools/make_import_fixtures.py --vgg DIR`, then
/// `KILN_TF_VGG=DIR/vgg cargo test --release -p kiln-import -- --ignored vgg`.
#[test]
#[ignore = "needs the 184 MB VGG checkpoint in KILN_TF_VGG (tools/make_import_fixtures.py --vgg DIR)"]
fn vgg_from_its_meta_graph_gives_tensorflows_predictions() {
    let dir = PathBuf::from(std::env::var_os("KILN_TF_VGG").expect("KILN_TF_VGG names the VGG checkpoint directory"));
    let ckpt = TfCheckpoint::open(&dir).unwrap();
    assert!(ckpt.has_optimizer_state());
    let model = ckpt.to_model("vgg").unwrap();
    assert_eq!(model.network.layers, presets::vgg().layers);
    assert_eq!(model.network.input, presets::vgg().input);
    assert_matches_logits("vgg", &model, &dir.join("vgg.tf-logits.f32"));
}

#[test]
fn fc3_from_its_meta_graph_gives_tensorflows_logits() {
    let ckpt = TfCheckpoint::open(&fixtures().join("fc3")).unwrap();
    assert_eq!(ckpt.step, 300);
    assert!(!ckpt.has_optimizer_state(), "plain gradient descent keeps no slots");
    let model = ckpt.to_model("fc3").unwrap();
    assert_eq!(model.network.layers, presets::fc3().layers);
    assert_eq!(model.network.input, presets::fc3().input);
    assert_matches_tensorflow("fc3", &model);
}

#[test]
fn convnet4_from_its_meta_graph_gives_tensorflows_logits_and_drops_adams_slots() {
    // Any file of the checkpoint names it.
    let ckpt = TfCheckpoint::open(&fixtures().join("convnet4/convnet4.ckpt-150.meta")).unwrap();
    assert_eq!(ckpt.step, 150);
    assert!(ckpt.has_optimizer_state());
    let walked = ckpt.graph.as_ref().unwrap().as_ref().unwrap();
    assert!(walked.chain.iter().any(|op| op.starts_with("Conv2D")), "{:?}", walked.chain);
    let model = ckpt.to_model("convnet4").unwrap();
    assert_eq!(model.network.layers, presets::convnet4().layers);
    assert_eq!(model.params.len(), 10);
    assert_matches_tensorflow("convnet4", &model);

    // Named as a preset instead (what --model does without a .meta): the same weights, matched by shape.
    let (by_name, mapping) = ckpt.to_model_as(presets::convnet4()).unwrap();
    assert_eq!(mapping[0], ("conv1/weights".to_string(), "layer1_weights".to_string()));
    assert_eq!(mapping[9], ("dense1/bias".to_string(), "layer5_bias".to_string()));
    for (a, b) in by_name.params.iter().zip(&model.params) {
        assert_eq!(a.data, b.data, "{}", a.name);
    }
}

/// A copy of a fixture checkpoint in a fresh directory, to break.
fn copy_of(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("kiln-tf-{name}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let prefix = dir.join(format!("{name}.ckpt-{}", if name == "fc3" { 300 } else { 150 }));
    (dir, prefix)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn broken_checkpoints_get_errors_that_name_the_file() {
    // A truncated data shard.
    let (dir, prefix) = copy_of("fc3");
    let data = with_suffix(&prefix, ".data-00000-of-00001");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let e = TfCheckpoint::open(&prefix).unwrap_err();
    assert!(matches!(e, TfError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("data-00000-of-00001") && e.to_string().contains("truncated"), "{e}");

    // A flipped byte: the CRC32C catches it.
    let mut flipped = bytes.clone();
    flipped[1000] ^= 0x40;
    std::fs::write(&data, &flipped).unwrap();
    let e = TfCheckpoint::open(&prefix).unwrap_err();
    assert!(matches!(e, TfError::Crc { .. }) && e.to_string().contains("CRC32C"), "{e}");

    // A missing shard.
    std::fs::remove_file(&data).unwrap();
    let e = TfCheckpoint::open(&prefix).unwrap_err();
    assert!(matches!(e, TfError::MissingShard { .. }) && e.to_string().contains("data-00000-of-00001"), "{e}");

    // A missing index.
    std::fs::remove_file(with_suffix(&prefix, ".index")).unwrap();
    let e = TfCheckpoint::open(&prefix).unwrap_err();
    assert!(matches!(e, TfError::NotACheckpoint { .. }) && e.to_string().contains(".index"), "{e}");

    // A truncated index.
    let (dir2, prefix2) = copy_of("fc3");
    let index = with_suffix(&prefix2, ".index");
    let index_bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &index_bytes[..index_bytes.len() - 10]).unwrap();
    let e = TfCheckpoint::open(&prefix2).unwrap_err();
    assert!(matches!(e, TfError::Index { .. }) && e.to_string().contains(".index"), "{e}");
    for d in [dir, dir2] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn an_op_outside_the_chain_kiln_maps_is_named() {
    use kiln_import::tf::proto::MetaGraphDef;
    use prost::Message;
    let (dir, prefix) = copy_of("convnet4");
    let meta = with_suffix(&prefix, ".meta");
    let mut graph = MetaGraphDef::decode(&std::fs::read(&meta).unwrap()[..]).unwrap();
    let def = graph.graph_def.as_mut().unwrap();
    let relu = def.node.iter_mut().find(|n| n.name == "Relu_2").unwrap();
    relu.op = "Relu6".into();
    std::fs::write(&meta, graph.encode_to_vec()).unwrap();
    let ckpt = TfCheckpoint::open(&prefix).unwrap();
    let e = ckpt.to_model("convnet4").unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, TfError::UnsupportedOp { .. }), "{message}");
    assert!(message.contains("Relu_2") && message.contains("Relu6") && message.contains(".meta"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

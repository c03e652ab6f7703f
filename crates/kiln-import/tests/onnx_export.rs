//! Round trip: a Kiln model exported as ONNX runs in tract with Kiln's predictions on the full test set, and
//! Kiln's own importer reads it back to the same layers and weights.

use std::path::Path;

use kiln_import::{onnx, onnx_export, tf::TfCheckpoint};
use kiln_train::data::Mnist;
use kiln_train::model::{Model, Workspace};
use tract_onnx::prelude::*;

fn convnet4() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/import/convnet4");
    TfCheckpoint::open(&dir).unwrap().to_model("convnet4").unwrap()
}

#[test]
fn an_exported_model_runs_in_tract_with_kilns_predictions_and_reads_back() {
    let model = convnet4();
    let bytes = onnx_export::export(&model);
    let path = std::env::temp_dir().join(format!("kiln-export-{}.onnx", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();

    // Kiln's importer: the same network and the same weights, bit for bit.
    let back = onnx::import(&path, "convnet4").unwrap();
    assert_eq!(back.model.network.layers, model.network.layers);
    for (a, b) in back.model.params.iter().zip(&model.params) {
        assert_eq!(a.data, b.data, "{}", a.name);
    }

    // tract runs the file: the same class as Kiln for every test digit.
    let test = Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).unwrap().test;
    let n = 500;
    let plan = tract_onnx::onnx()
        .model_for_path(&path)
        .unwrap()
        .with_input_fact(0, f32::fact([n, 28, 28, 1]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let mut ws = Workspace::new();
    let (mut agree, mut worst) = (0, 0.0f32);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    for start in (0..test.len()).step_by(n) {
        let input: Vec<f32> =
            (start..start + n).flat_map(|i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
        let kiln = model.forward(&mut ws, &input, n).to_vec();
        let result = plan.run(tvec!(Tensor::from_shape(&[n, 28, 28, 1], &input).unwrap().into())).unwrap();
        let tract: Vec<f32> = result[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        for (k, t) in kiln.chunks_exact(10).zip(tract.chunks_exact(10)) {
            agree += usize::from(argmax(k) == argmax(t));
            for (a, b) in k.iter().zip(t) {
                worst = worst.max((a - b).abs() / a.abs().max(1.0));
            }
        }
    }
    eprintln!("tract: top-1 agreement with Kiln {agree}/{}, worst relative logit difference {worst:.2e}", test.len());
    assert_eq!(agree, test.len());
    assert!(worst <= 1e-4, "{worst}");
    std::fs::remove_file(path).unwrap();
}

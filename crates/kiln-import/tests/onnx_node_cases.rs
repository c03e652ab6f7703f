//! ONNX's own node conformance cases (tests/fixtures/onnx-node, dumped by tools/make_layer_fixtures.py from
//! `onnx.backend.test.case.node.collect_testcases()`, weight inputs turned into initializers), through the
//! importer and the `.kiln` runtime. A peer's test suite, not ours: every case either matches ONNX's
//! expected output within 1e-5 relative, or is refused with an error naming what Kiln does not run (3-D
//! pooling, dilations, ceil mode, training mode, inputs that are not images or vectors). The per-op counts
//! are printed and must not fall below the ones recorded here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_core::session::Session;
use kiln_import::onnx;
use kiln_pack::convert::{self, Provenance};
use kiln_pack::writer::Quant;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx-node")
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// `[n, c, h, w]` to `[n, h, w, c]` (`forward`), or back.
fn transpose(values: &[f32], [n, c, h, w]: [usize; 4], forward: bool) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let nchw = (b * c + ch) * h * w + p;
                let nhwc = (b * h * w + p) * c + ch;
                if forward {
                    out[nhwc] = values[nchw];
                } else {
                    out[nchw] = values[nhwc];
                }
            }
        }
    }
    out
}

enum Outcome {
    Passed,
    Refused(String),
    Wrong(String),
}

fn run_case(dir: &Path) -> (String, Outcome) {
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
    let op = case["op"].as_str().unwrap().to_string();
    let dims = |key: &str| -> Vec<usize> {
        case[key].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
    };
    let (input_shape, output_shape) = (dims("input_shape"), dims("output_shape"));
    let imported = match onnx::import(&dir.join("model.onnx"), "case") {
        Ok(imported) => imported,
        Err(e) => return (op, Outcome::Refused(e.to_string())),
    };
    let model = imported.model;
    let provenance = Provenance { file_name: "model.onnx".into(), step: 0, sha256: [0; 32] };
    let meta = convert::metadata(&model.network, &provenance, "f32").unwrap();
    let file = convert::pack(&model, &vec![Quant::F32; model.params.len() / 2], &meta).unwrap();
    let packed = kiln_core::Model::from_bytes(&file).unwrap();
    let batch = input_shape[0];
    let mut arena = vec![0u8; packed.arena_size(batch)];
    let mut session = Session::new(&packed, &mut arena, batch).unwrap();
    let mut input = read_f32(&dir.join("input.f32"));
    if let [n, c, h, w] = input_shape[..]
        && imported.input_nchw
    {
        input = transpose(&input, [n, c, h, w], true);
    }
    let got = match session.run(&input, batch) {
        Ok(output) => output.logits.to_vec(),
        Err(e) => return (op, Outcome::Wrong(format!("the runtime failed: {e}"))),
    };
    let got = match output_shape[..] {
        [n, c, h, w] => transpose(&got, [n, c, h, w], false),
        _ => got,
    };
    let want = read_f32(&dir.join("expected.f32"));
    if got.len() != want.len() {
        return (op, Outcome::Wrong(format!("{} outputs, ONNX expects {}", got.len(), want.len())));
    }
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max);
    if worst > 1e-5 {
        return (op, Outcome::Wrong(format!("outputs differ by {worst:.2e} relative")));
    }
    (op, Outcome::Passed)
}

/// The fewest cases of each op that must pass: what this importer ran when the fixtures were made.
const MIN_PASSED: &[(&str, usize)] = &[
    ("Add", 1),
    ("AveragePool", 10),
    ("BatchNormalization", 2),
    ("Clip", 8),
    ("Conv", 6),
    ("Dropout", 4),
    ("Flatten", 2),
    ("Gemm", 8),
    ("GlobalAveragePool", 2),
    ("LeakyRelu", 3),
    ("MatMul", 1),
    ("MaxPool", 8),
    ("Relu", 1),
    ("Sigmoid", 2),
    ("Tanh", 2),
];

#[test]
fn onnx_node_conformance_cases() {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(cases_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() > 100, "{} cases: run tools/make_layer_fixtures.py", dirs.len());
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (op, outcome) = run_case(dir);
        let entry = counts.entry(op).or_default();
        match outcome {
            Outcome::Passed => {
                entry.0 += 1;
                eprintln!("pass    {name}");
            }
            Outcome::Refused(reason) => {
                entry.1 += 1;
                eprintln!("refused {name}: {reason}");
            }
            Outcome::Wrong(reason) => wrong.push(format!("{name}: {reason}")),
        }
    }
    eprintln!("\n{:<20} {:>6} {:>8}", "op", "passed", "refused");
    for (op, (passed, refused)) in &counts {
        eprintln!("{op:<20} {passed:>6} {refused:>8}");
    }
    assert!(wrong.is_empty(), "cases imported but gave other answers:\n{}", wrong.join("\n"));
    for (op, min) in MIN_PASSED {
        let passed = counts.get(*op).map_or(0, |c| c.0);
        assert!(passed >= *min, "{op}: {passed} cases passed, {min} did when the fixtures were made");
    }
}

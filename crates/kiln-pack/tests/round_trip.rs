//! Packed files read back through kiln-core give the network the writer was given.

mod common;

use kiln_core::format::{DType, Model};
use kiln_core::reference::{self, LayerInput, LayerParams};
use kiln_core::runtime;
use kiln_pack::Quant;

fn run_packed(file: &[u8], input: &[f32], n: usize) -> Vec<f32> {
    let model = Model::from_bytes(file).unwrap();
    let len = runtime::scratch_len(&model, n);
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    runtime::forward(&model, input, n, &mut a, &mut b).unwrap().to_vec()
}

fn input(n: usize) -> Vec<f32> {
    (0..n * common::INPUT.len()).map(|i| ((i * 37 % 101) as f32) / 100.0).collect()
}

#[test]
fn f32_logits_match_the_reference_forward() {
    let n = 5;
    let params = common::params(1);
    let layer_params: Vec<LayerParams> =
        params.chunks(2).map(|p| LayerParams { weights: &p[0].2, bias: &p[1].2 }).collect();
    let len = n * kiln_core::network::max_activation_len(&common::layers(), common::INPUT).unwrap();
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    let want = reference::forward(&common::layers(), common::INPUT, n, &input(n), &layer_params, &mut a, &mut b)
        .unwrap()
        .to_vec();
    let got = run_packed(&common::packed(Quant::F32), &input(n), n);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-3), "{got:?} vs {want:?}");
    }
}

#[test]
fn every_weight_type_decodes_to_its_dequantized_values() {
    for (quant, dtype) in [
        (Quant::F32, DType::F32),
        (Quant::F16, DType::F16),
        (Quant::Int8, DType::Int8),
        (Quant::Int4 { block: 32 }, DType::Int4),
        (Quant::Int2 { block: 16 }, DType::Int2),
    ] {
        let file = common::packed(quant);
        let model = Model::from_bytes(&file).unwrap();
        assert_eq!(model.tensor_count(), 6);
        for (i, ((name, dims, values), want)) in common::params(1).iter().zip(dequantized(quant)).enumerate() {
            let t = model.tensor(i);
            assert_eq!((t.name, &t.dims[..t.rank]), (name.as_str(), &dims[..]));
            assert_eq!(t.dtype, if i % 2 == 0 { dtype } else { DType::F32 }, "{name}");
            let mut got = vec![0.0; values.len()];
            // Decode in two uneven runs to cross block and channel boundaries.
            let split = values.len() / 3 + 1;
            let (head, tail) = got.split_at_mut(split);
            t.values().decode(0, head);
            t.values().decode(split, tail);
            assert_eq!(got, want, "{quant} {name}");
        }
    }
}

/// The fixture's parameters as `quant` stores them, dequantized by kiln-pack's own code.
fn dequantized(quant: Quant) -> Vec<Vec<f32>> {
    common::params(1)
        .iter()
        .enumerate()
        .map(|(i, (_, dims, values))| match quant {
            _ if i % 2 == 1 => values.clone(),
            Quant::F32 => values.clone(),
            Quant::F16 => values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            Quant::Int8 => kiln_pack::quant::int8_per_channel(values, dims[dims.len() - 1]).unwrap().dequantize(),
            Quant::Int4 { block } => kiln_pack::quant::int4_blocks(values, block).unwrap().dequantize(),
            Quant::Int2 { block } => kiln_pack::quant::int2_blocks(values, block).unwrap().dequantize(),
        })
        .collect()
}

fn reference_logits(params: &[Vec<f32>], input: &[f32], n: usize) -> Vec<f32> {
    reference_logits_with(params, input, n, &[])
}

/// [`reference_logits`] with each layer's input quantized as `inputs` says (the runtime's integer path).
fn reference_logits_with(params: &[Vec<f32>], input: &[f32], n: usize, inputs: &[LayerInput]) -> Vec<f32> {
    let layer_params: Vec<LayerParams> =
        params.chunks(2).map(|p| LayerParams { weights: &p[0], bias: &p[1] }).collect();
    let len = n * kiln_core::network::max_activation_len(&common::layers(), common::INPUT).unwrap();
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    let layers = common::layers();
    reference::forward_integer_path(&layers, common::INPUT, n, input, &layer_params, inputs, &mut a, &mut b)
        .unwrap()
        .to_vec()
}

/// The largest absolute difference and the largest magnitude of `want`.
fn error_and_scale(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let error = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
    (error, want.iter().fold(0.0, |m, w| m.max(w.abs())))
}

#[test]
fn quantized_logits_are_the_dequantized_networks_and_near_the_f32_ones() {
    let n = 3;
    let exact = reference_logits(&dequantized(Quant::F32), &input(n), n);
    // Bounds on the quantization error relative to the logits' scale, about 1.5 times what the fixture
    // measures (f16 0.05 %, int8 0.6 %, int4 20 %, int2 45 %): all-zero logits (error 100 %) fail.
    for (quant, bound) in [
        (Quant::F32, 1e-5),
        (Quant::F16, 2e-3),
        (Quant::Int8, 2e-2),
        (Quant::Int4 { block: 32 }, 0.3),
        (Quant::Int2 { block: 16 }, 0.65),
    ] {
        let got = run_packed(&common::packed(quant), &input(n), n);
        // Exactly the network the file holds (up to summation order): the weights as kiln-pack dequantizes
        // them, and for integer weights each layer's input on 8-bit levels, as the runtime's integer path
        // runs it. That path also requantizes int4 and int2 weights to per-channel int8, which moves each
        // by at most half an int8 step: a little slack for those.
        let integer = !matches!(quant, Quant::F32 | Quant::F16);
        let inputs = vec![if integer { LayerInput::Dynamic } else { LayerInput::F32 }; 3];
        let want = reference_logits_with(&dequantized(quant), &input(n), n, &inputs);
        let (error, scale) = error_and_scale(&got, &want);
        let slack = if matches!(quant, Quant::Int4 { .. } | Quant::Int2 { .. }) { 1e-2 } else { 1e-5 };
        assert!(error <= slack * scale.max(1.0), "{quant}: {got:?} vs the dequantized network's {want:?}");
        // And near the f32 network's.
        let (error, scale) = error_and_scale(&got, &exact);
        assert!(scale > 0.1, "the f32 logits {exact:?} are too small to measure against");
        assert!(
            error <= bound * scale,
            "{quant}: off by {error}, {:.1} % of the logits' scale {scale} (bound {} %): {got:?} vs f32 {exact:?}",
            100.0 * error / scale,
            100.0 * bound
        );
    }
}

#[test]
fn metadata_round_trips() {
    let file = common::packed(Quant::Int8);
    let model = Model::from_bytes(&file).unwrap();
    let m = model.metadata();
    assert_eq!(
        (m.model_name(), m.kiln_version(), m.source_file(), m.quantization()),
        ("tiny", "test", "tiny.safetensors", "int8")
    );
    assert_eq!((m.label(0), m.label(2), m.label(3)), ("a", "c", ""));
    assert_eq!((m.source_step, m.source_sha256, m.test_accuracy()), (7, [0xab; 32], Some(0.9)));
    assert_eq!((m.mean, m.std, m.input, m.classes), (0.0, 1.0, common::INPUT, 3));
    assert_eq!(model.version(), (1, 0));
    // Every region is 256-byte aligned, in the file and so in memory when the file is loaded aligned.
    for i in 0..model.tensor_count() {
        let t = model.tensor(i);
        assert_eq!(t.data_offset % 256, 0);
        assert_eq!(t.scales_offset % 256, 0);
    }
}

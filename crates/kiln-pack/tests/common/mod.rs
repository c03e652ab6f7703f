//! A small conv network with random weights, packed in any weight type: the fixture for the round-trip
//! and attack tests.
#![allow(dead_code)]

use kiln_core::network::{Layer, Shape};
use kiln_pack::{Metadata, PackedTensor, Quant, pack_tensor, write};
use rand::{Rng, SeedableRng};

pub const INPUT: Shape = Shape::new(6, 6, 1);

/// pad → conv 4 → relu → pool → conv 8 → relu → flatten → dense 3.
pub fn layers() -> Vec<Layer> {
    vec![
        Layer::Pad { top: 1, bottom: 1, left: 1, right: 1 },
        Layer::Conv2d { filters: 4 },
        Layer::Relu,
        Layer::MaxPool,
        Layer::Conv2d { filters: 8 },
        Layer::Relu,
        Layer::Flatten,
        Layer::Dense { units: 3 },
    ]
}

/// `(name, dims, values)` for every weight and bias, in layer order.
pub fn params(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut random = |n: usize, scale: f32| (0..n).map(|_| rng.random_range(-scale..scale)).collect::<Vec<f32>>();
    vec![
        ("conv1/weights".into(), vec![3, 3, 1, 4], random(36, 0.5)),
        ("conv1/bias".into(), vec![4], random(4, 0.1)),
        ("conv2/weights".into(), vec![3, 3, 4, 8], random(288, 0.3)),
        ("conv2/bias".into(), vec![8], random(8, 0.1)),
        ("dense1/weights".into(), vec![128, 3], random(384, 0.2)),
        ("dense1/bias".into(), vec![3], random(3, 0.1)),
    ]
}

pub fn metadata(quant: &str) -> Metadata {
    Metadata {
        input: INPUT,
        labels: vec!["a".into(), "b".into(), "c".into()],
        mean: 0.0,
        std: 1.0,
        model_name: "tiny".into(),
        kiln_version: "test".into(),
        source_file: "tiny.safetensors".into(),
        quantization: quant.into(),
        source_step: 7,
        source_sha256: [0xab; 32],
        test_correct: 9,
        test_examples: 10,
        activations: Vec::new(),
    }
}

/// The fixture packed with `quant` for every weight tensor.
pub fn packed(quant: Quant) -> Vec<u8> {
    packed_with(quant, Vec::new())
}

/// The fixture packed with `quant` and static activation scales calibrated (through kiln-pack's
/// calibration) on 40 fixed pseudo-random images.
pub fn packed_static(quant: Quant) -> Vec<u8> {
    let dynamic = packed(quant);
    let pixels: Vec<u8> = (0..40 * INPUT.len()).map(|i| ((i * 2654435761usize) >> 7) as u8).collect();
    let images = kiln_pack::eval::Images { rows: INPUT.h, cols: INPUT.w, pixels: &pixels };
    let scales = kiln_pack::eval::calibrate(&dynamic, images, &kiln_pack::eval::EvalOptions::new(1)).unwrap();
    packed_with(quant, scales)
}

fn packed_with(quant: Quant, activations: Vec<kiln_core::kernels::ActivationScale>) -> Vec<u8> {
    let params = params(1);
    let tensors: Vec<(PackedTensor, PackedTensor)> = params
        .chunks(2)
        .map(|pair| {
            let (w, b) = (&pair[0], &pair[1]);
            (pack_tensor(&w.0, &w.1, &w.2, quant).unwrap(), pack_tensor(&b.0, &b.1, &b.2, Quant::F32).unwrap())
        })
        .collect();
    let suffix = if activations.is_empty() { "" } else { ", static activations" };
    let meta = Metadata { activations, ..metadata(&format!("{quant}{suffix}")) };
    write(&layers(), &tensors, &meta).unwrap()
}

/// Rewrites the checksum after a deliberate edit, so the reader gets past it to the rule under test.
pub fn restamp(file: &mut [u8]) {
    let crc = kiln_core::format::checksum(file);
    file[16..20].copy_from_slice(&crc.to_le_bytes());
}

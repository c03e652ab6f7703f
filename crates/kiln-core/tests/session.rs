//! Sessions over real `.kiln` files (the fuzz seeds: a small conv net in every weight type, written by
//! kiln-pack and kept current by its tests).

use kiln_core::format::Model;
use kiln_core::parallel::Workers;
use kiln_core::reference::{self, LayerInput, LayerParams};
use kiln_core::{Isa, Parallel, RunError, Session, SessionError};

const MODELS: [(&str, &[u8]); 7] = [
    ("f32", include_bytes!("../fuzz/seeds/from_bytes/f32.kiln")),
    ("f16", include_bytes!("../fuzz/seeds/from_bytes/f16.kiln")),
    ("int8", include_bytes!("../fuzz/seeds/from_bytes/int8.kiln")),
    ("int4", include_bytes!("../fuzz/seeds/from_bytes/int4.kiln")),
    ("int2", include_bytes!("../fuzz/seeds/from_bytes/int2_16.kiln")),
    ("int8, static activations", include_bytes!("../fuzz/seeds/from_bytes/int8_static.kiln")),
    ("int4, static activations", include_bytes!("../fuzz/seeds/from_bytes/int4_static.kiln")),
];

/// An arena of `bytes` bytes starting 4-aligned (a `Vec<u32>` viewed as bytes).
fn arena(bytes: usize) -> Vec<u32> {
    vec![0; bytes.div_ceil(4) + 1]
}

fn images(model: &Model<'_>, n: usize, seed: u32) -> Vec<f32> {
    (0..n * model.input_shape().len())
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0)
        .collect()
}

/// A tensor's values as the runtime computes with them: int4/int2 weights requantized to int8 levels on
/// per-channel scales (what the integer path does), everything else decoded.
fn as_the_runtime_sees_it(t: &kiln_core::format::TensorView<'_>) -> Vec<f32> {
    let values = t.values();
    let mut out = vec![0.0; t.len()];
    if t.dtype.is_blocked() {
        let channels = t.channels();
        let mut scales = vec![0.0; channels];
        values.requantized_scales(&mut scales);
        let inverse: Vec<f32> = scales.iter().map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 }).collect();
        let mut levels = vec![0i8; channels];
        for (row, o) in out.chunks_mut(channels).enumerate() {
            values.requantize(row * channels, &inverse, &mut levels);
            for ((o, &l), &s) in o.iter_mut().zip(&levels).zip(&scales) {
                *o = l as f32 * s;
            }
        }
    } else {
        values.decode(0, &mut out);
    }
    out
}

/// The logits of `model` through the reference kernels (`kiln_core::reference`, plain loops that share
/// nothing with the runtime's packed and integer kernels), every tensor dequantized to f32 first, and
/// the inputs of layers with int8/int4/int2 weights quantized as the integer path quantizes them.
fn reference_logits(model: &Model<'_>, input: &[f32], n: usize) -> Vec<f32> {
    let tensors: Vec<Vec<f32>> = (0..model.tensor_count()).map(|i| as_the_runtime_sees_it(&model.tensor(i))).collect();
    let inputs: Vec<LayerInput> = (0..model.layers().len())
        .filter_map(|i| model.binding(i))
        .enumerate()
        .map(|(k, b)| match model.activation_scale(k) {
            Some(scale) => LayerInput::Static(scale),
            None if kiln_core::kernels::runs_on_integers(model.tensor(b.weights).dtype) => LayerInput::Dynamic,
            None => LayerInput::F32,
        })
        .collect();
    let params: Vec<LayerParams<'_>> = (0..model.layers().len())
        .filter_map(|i| model.binding(i))
        .map(|b| LayerParams { weights: &tensors[b.weights], bias: &tensors[b.bias] })
        .collect();
    let len = n * model.max_activation_len();
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    reference::forward_integer_path(model.layers(), model.input_shape(), n, input, &params, &inputs, &mut a, &mut b)
        .unwrap()
        .to_vec()
}

/// Each logit within 1e-5 of its row's largest magnitude (at least 1): the packed kernels sum in
/// another order, and with FMA. With static activations, within 2e-3: there every layer's f32 output is
/// rounded to a level, and a value a rounding error away from a level boundary (in the reference's sum
/// order or the runtime's) lands one level over, which moves the logits by about one level's worth.
fn assert_close(got: &[f32], want: &[f32], classes: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let tolerance = if what.contains("static") { 2e-3 } else { 1e-5 };
    for (i, (g, w)) in got.chunks(classes).zip(want.chunks(classes)).enumerate() {
        let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= tolerance * scale, "{what}: image {i}: {g:?} vs reference {w:?}");
        }
    }
}

#[test]
fn session_matches_the_reference_kernels_and_gives_probabilities() {
    for (name, bytes) in MODELS {
        let model = Model::from_bytes(bytes).unwrap();
        let n = 4;
        let input = images(&model, n, 7);
        let want = reference_logits(&model, &input, n);
        assert!(want.iter().any(|&v| v.abs() > 1e-3), "{name}: the reference logits are all near zero: {want:?}");

        let mut memory = arena(model.arena_size(n));
        let mut session = Session::new(&model, &mut bytemuck::cast_slice_mut(&mut memory)[..], n).unwrap();
        let out = session.run(&input, n).unwrap();
        assert_close(out.logits, &want, out.classes, name);
        assert_eq!(out.batch(), n);
        for row in out.probabilities.chunks(out.classes) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5 && row.iter().all(|&p| p >= 0.0), "{name}: {row:?}");
        }
        let best = out.class(0);
        assert!(out.probabilities[..3].iter().all(|&p| p <= out.probabilities[best]));
        // A smaller batch in the same session works too.
        let one = session.run(&input[..model.input_shape().len()], 1).unwrap();
        assert_close(one.logits, &want[..3], 3, name);
    }
}

/// A copy of the model file whose metadata says `input = (pixel / 255 - mean) / std`.
fn with_normalisation(bytes: &[u8], mean: f32, std: f32) -> Vec<u8> {
    let mut file = bytes.to_vec();
    kiln_core::format::set_normalisation(&mut file, mean, std).unwrap();
    file
}

#[test]
fn pixels_are_normalised_with_the_metadata_mean_and_std() {
    // MNIST's own statistics: a normalisation that changes every logit.
    let (mean, std) = (0.1307f32, 0.3081f32);
    for (name, bytes) in MODELS {
        let file = with_normalisation(bytes, mean, std);
        let model = Model::from_bytes(&file).unwrap();
        assert_eq!((model.metadata().mean, model.metadata().std), (mean, std));
        let n = 3;
        let pixels: Vec<u8> = (0..n * model.input_shape().len()).map(|i| (i * 7 % 256) as u8).collect();
        let normalised: Vec<f32> = pixels.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect();
        let want = reference_logits(&model, &normalised, n);

        let mut memory = arena(model.arena_size(n));
        let mut session = Session::new(&model, &mut bytemuck::cast_slice_mut(&mut memory)[..], n).unwrap();
        let out = session.run_pixels(&pixels, n).unwrap();
        assert_close(out.logits, &want, out.classes, name);

        // The metadata matters: mean 0 and std 1 (pixel / 255 alone) give other logits.
        let plain: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        let unnormalised = reference_logits(&model, &plain, n);
        let differ = out.logits.iter().zip(&unnormalised).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(differ > 1e-2, "{name}: normalising changed the logits by only {differ}");
    }
}

#[test]
fn every_kernel_build_on_this_cpu_gives_the_same_predictions() {
    let available = Isa::builds_to_compare("every_kernel_build_on_this_cpu_gives_the_same_predictions");
    for (name, bytes) in MODELS {
        let model = Model::from_bytes(bytes).unwrap();
        let n = 16;
        let input = images(&model, n, 3);
        let mut results = Vec::new();
        for &isa in &available {
            let mut memory = arena(model.arena_size(n));
            let mut session = Session::new(&model, &mut bytemuck::cast_slice_mut(&mut memory)[..], n).unwrap();
            session.set_isa(isa);
            assert_eq!(session.isa(), isa);
            let out = session.run(&input, n).unwrap();
            let classes: Vec<usize> = (0..n).map(|i| out.class(i)).collect();
            results.push((isa, classes, out.logits.to_vec()));
        }
        let (_, classes, logits) = &results[0];
        let integer = !(name == "f32" || name == "f16");
        for (isa, c, l) in &results[1..] {
            assert_eq!(c, classes, "{name}: {isa:?} predicts differently");
            for (x, y) in l.iter().zip(logits) {
                if integer {
                    // Integer sums are exact and the epilogue is shared: the same bits.
                    assert_eq!(x.to_bits(), y.to_bits(), "{name}: {isa:?} {x} vs {y}");
                } else {
                    // FMA rounds once per multiply-add: the logits differ only in the last bits.
                    assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{name}: {isa:?} {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn bad_arenas_and_inputs_get_distinct_errors() {
    let model = Model::from_bytes(MODELS[2].1).unwrap();
    let needed = model.arena_size(2);
    // 2 images: two ping-pong buffers of 2 x the largest activation, plus 2 x 3 probabilities, all f32,
    // plus the integer path's scratch: 2 images' scales, and 2 x the largest quantized input in bytes.
    let largest_input = model.plan().steps().filter(|s| s.params.is_some()).map(|s| s.input.len()).max().unwrap();
    assert_eq!(needed, (2 * 2 * model.max_activation_len() + 2 * 3 + 2 * 2) * 4 + (2 * largest_input).div_ceil(4) * 4);
    let mut memory = arena(needed + 8);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut memory);
    assert_eq!(
        Session::new(&model, &mut bytes[..needed - 1], 2).unwrap_err(),
        SessionError::ArenaTooSmall { needed, got: needed - 1 }
    );
    assert_eq!(
        Session::new(&model, &mut bytes[1..needed + 1], 2).unwrap_err(),
        SessionError::ArenaMisaligned { address_mod_4: 1 }
    );
    assert_eq!(Session::new(&model, &mut bytes[..needed], 0).unwrap_err(), SessionError::ZeroBatch);

    let mut session = Session::new(&model, &mut bytes[..needed], 2).unwrap();
    let len = model.input_shape().len();
    assert_eq!(session.run(&vec![0.5; len + 1], 1).unwrap_err(), RunError::InputLength { expected: len, got: len + 1 });
    assert_eq!(session.run(&vec![0.5; 3 * len], 3).unwrap_err(), RunError::BatchSize { batch: 3, max: 2 });
    assert_eq!(session.run(&[], 0).unwrap_err(), RunError::BatchSize { batch: 0, max: 2 });
    let mut nan = vec![0.5; len];
    nan[5] = f32::NAN;
    assert_eq!(session.run(&nan, 1).unwrap_err(), RunError::NonFiniteInput { index: 5 });
    assert_eq!(session.run_pixels(&[0; 3], 1).unwrap_err(), RunError::InputLength { expected: len, got: 3 });
    // Errors leave the session usable.
    assert_eq!(session.run(&vec![0.5; len], 1).unwrap().batch(), 1);
    for e in [RunError::NonFiniteInput { index: 5 }, RunError::BatchSize { batch: 3, max: 2 }] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn every_kernel_build_agrees_on_a_real_convnet() {
    // The embedded example's int8 ConvNet4 (64 and 128 channels: full 64-wide tiles, the pixel-blocked
    // AVX-512 sweep) on its digit and shifted, dimmed copies of it.
    let model = Model::from_bytes(include_bytes!("../examples/embedded/convnet4-int8.kiln")).unwrap();
    let digit: &[u8; 784] = include_bytes!("../examples/embedded/digit-7.bin");
    let n = 9;
    let mut pixels = vec![0u8; n * 784];
    for (k, image) in pixels.chunks_mut(784).enumerate() {
        for (i, p) in image.iter_mut().enumerate() {
            let (y, x) = (i / 28, i % 28);
            let (sy, sx) = (y as i64 + k as i64 / 3 - 1, x as i64 + k as i64 % 3 - 1);
            if (0..28).contains(&sy) && (0..28).contains(&sx) {
                *p = (digit[(sy * 28 + sx) as usize] as usize * (10 - k) / 10) as u8;
            }
        }
    }
    let mut results = Vec::new();
    for isa in Isa::builds_to_compare("every_kernel_build_agrees_on_a_real_convnet") {
        let mut memory = arena(model.arena_size(n));
        let mut session = Session::new(&model, &mut bytemuck::cast_slice_mut(&mut memory)[..], n).unwrap();
        session.set_isa(isa);
        assert_eq!(session.isa(), isa);
        let out = session.run_pixels(&pixels, n).unwrap();
        results.push((isa, (0..n).map(|i| out.class(i)).collect::<Vec<_>>(), out.logits.to_vec()));
    }
    let (_, classes, logits) = &results[0];
    assert!(classes.iter().filter(|&&c| c == 7).count() >= 7, "{classes:?}");
    for (isa, c, l) in &results[1..] {
        assert_eq!(c, classes, "{isa:?}");
        for (x, y) in l.iter().zip(logits) {
            // The integer path: bit-identical in every build.
            assert_eq!(x.to_bits(), y.to_bits(), "{isa:?}: {x} vs {y}");
        }
    }
}

#[test]
fn sessions_on_several_threads_give_the_same_bits_as_on_one() {
    let convnet = include_bytes!("../examples/embedded/convnet4-int8.kiln");
    let models = MODELS.iter().copied().chain([("convnet4 int8", &convnet[..])]);
    let workers = [Workers::new(2).unwrap(), Workers::new(3).unwrap()];
    for (name, bytes) in models {
        let model = Model::from_bytes(bytes).unwrap();
        for n in [1, 5] {
            let input = images(&model, n, 7);
            let mut memory = arena(model.arena_size(n));
            let mut session = Session::new(&model, &mut bytemuck::cast_slice_mut(&mut memory)[..], n).unwrap();
            assert_eq!(session.threads(), 1);
            let want = session.run(&input, n).unwrap().logits.to_vec();
            for parallel in &workers {
                session.set_parallel(parallel);
                assert_eq!(session.threads(), parallel.threads());
                let got = session.run(&input, n).unwrap().logits.to_vec();
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}, batch {n}, {} threads: {got:?} vs {want:?}", parallel.threads());
            }
        }
    }
}

//! GpuSession (packed models on the GPU, weights dequantized in the shader) against kiln-core's CPU runtime:
//! the same predictions for f32, int8, int4 (and f16, int2) packings, on real test digits, and no wgpu objects
//! created by `run`. On lavapipe in CI: 500 digits for ConvNet4 (its trained weights, from the embedded
//! example's int8 file, re-packed) and 64 for the VGG (initialised weights: its trained checkpoint is 64 MB).

use kiln_core::format::DType;
use kiln_core::network::Layer;
use kiln_core::reference::{self, LayerParams};
use kiln_core::{Model as Packed, Session};
use kiln_gpu::{Gpu, GpuSession, Kernels};
use kiln_pack::{Metadata, PackedTensor, Quant};
use kiln_train::config::InitChoice;
use kiln_train::data::Mnist;
use kiln_train::{Model, presets};

const CONVNET4_INT8: &[u8] = include_bytes!("../../kiln-core/examples/embedded/convnet4-int8.kiln");

/// The device and its kernels, or `None` (the test skips) where there is no adapter.
fn gpu(test: &str) -> Option<(Gpu, Kernels)> {
    let gpu = kiln_gpu::test_support::gpu_or_skip(test)?;
    let kernels = Kernels::new(&gpu).unwrap();
    Some((gpu, kernels))
}

fn bundled() -> Mnist {
    Mnist::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")).unwrap()
}

fn metadata(name: &str, input: kiln_core::Shape, quantization: &str) -> Metadata {
    Metadata {
        input,
        labels: (0..10).map(|d| d.to_string()).collect(),
        mean: 0.0,
        std: 1.0,
        model_name: name.into(),
        kiln_version: "test".into(),
        source_file: "test".into(),
        quantization: quantization.into(),
        source_step: 0,
        source_sha256: [0; 32],
        test_correct: 0,
        test_examples: 0,
        activations: Vec::new(),
    }
}

/// Re-packs `layers` with f32 `params` (weights, bias per layer) as `quant`.
fn pack(layers: &[Layer], params: &[(String, Vec<usize>, Vec<f32>)], quant: Quant, meta: &Metadata) -> Vec<u8> {
    let tensors: Vec<(PackedTensor, PackedTensor)> = params
        .chunks(2)
        .map(|pair| {
            let (wn, wd, wv) = &pair[0];
            let (bn, bd, bv) = &pair[1];
            (
                kiln_pack::pack_tensor(wn, wd, wv, quant).unwrap(),
                kiln_pack::pack_tensor(bn, bd, bv, Quant::F32).unwrap(),
            )
        })
        .collect();
    kiln_pack::write(layers, &tensors, meta).unwrap()
}

/// Every tensor of a packed file as f32 (dequantized), with its name and dimensions.
fn unpack(model: &Packed<'_>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    (0..model.tensor_count())
        .map(|i| {
            let t = model.tensor(i);
            let mut v = vec![0.0; t.len()];
            t.values().decode(0, &mut v);
            (t.name.to_string(), t.dims[..t.rank].to_vec(), v)
        })
        .collect()
}

/// CPU runtime logits and classes for `n` digits.
fn cpu_run(file: &[u8], pixels: &[u8], n: usize) -> Vec<f32> {
    let model = Packed::from_bytes(file).unwrap();
    let mut arena = vec![0u32; model.arena_size(n).div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), n).unwrap();
    session.run_pixels(pixels, n).unwrap().logits.to_vec()
}

/// What the GPU computes for a file: its network in f32, every tensor dequantized (the shaders do the same),
/// through kiln-core's plain reference kernels. For f32 and f16 weights the CPU runtime computes exactly this
/// too; for integer weights it runs the integer path (8-bit activations), which only predicts alike.
fn cpu_dequantized(file: &[u8], pixels: &[u8], n: usize) -> Vec<f32> {
    let model = Packed::from_bytes(file).unwrap();
    let tensors = unpack(&model);
    let params: Vec<LayerParams<'_>> =
        tensors.chunks(2).map(|p| LayerParams { weights: &p[0].2, bias: &p[1].2 }).collect();
    let meta = model.metadata();
    let input: Vec<f32> = pixels.iter().map(|&p| (p as f32 / 255.0 - meta.mean) / meta.std).collect();
    let len = n * model.max_activation_len();
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    reference::forward(model.layers(), model.input_shape(), n, &input, &params, &mut a, &mut b).unwrap().to_vec()
}

/// The GPU's logits checked against the CPU: within 1e-3 of what the GPU computes (the network in f32), and,
/// for integer weights, the same classes as the CPU runtime's integer path wherever the top two logits are
/// more than 5 % of the row's scale apart. Returns how many classes match the CPU runtime.
fn compare_with_cpu(gpu: &[f32], file: &[u8], pixels: &[u8], n: usize, what: &str) -> usize {
    let runtime = cpu_run(file, pixels, n);
    let integer = {
        let model = Packed::from_bytes(file).unwrap();
        (0..model.tensor_count())
            .step_by(2)
            .any(|t| matches!(model.tensor(t).dtype, DType::Int8 | DType::Int4 | DType::Int2))
    };
    if !integer {
        return compare(gpu, &runtime, 10, what);
    }
    compare(gpu, &cpu_dequantized(file, pixels, n), 10, what);
    for (i, (g, c)) in gpu.chunks(10).zip(runtime.chunks(10)).enumerate() {
        let scale = g.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let mut sorted = g.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 5e-2 * scale {
            assert_eq!(argmax(g), argmax(c), "{what}: digit {i}: GPU {g:?} vs CPU integer path {c:?}");
        }
    }
    gpu.chunks(10).zip(runtime.chunks(10)).filter(|(g, c)| argmax(g) == argmax(c)).count()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Compares GPU and CPU logits: each within 1e-3 of the row's largest magnitude (the GPU sums in another
/// order), and the same class wherever the top two logits are further apart than that tolerance.
fn compare(gpu: &[f32], cpu: &[f32], classes: usize, what: &str) -> usize {
    let mut same = 0;
    for (i, (g, c)) in gpu.chunks(classes).zip(cpu.chunks(classes)).enumerate() {
        let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(c) {
            assert!((a - b).abs() <= 1e-3 * scale, "{what}: digit {i}: GPU {g:?} vs CPU {c:?}");
        }
        let mut sorted = c.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2e-3 * scale {
            assert_eq!(argmax(g), argmax(c), "{what}: digit {i}: GPU {g:?} vs CPU {c:?}");
        }
        same += usize::from(argmax(g) == argmax(c));
    }
    same
}

fn run_on_gpu(session: &mut GpuSession, pixels: &[u8], n: usize, batch: usize) -> Vec<f32> {
    let classes = session.classes();
    let mut logits = vec![0.0; n * classes];
    for (chunk, out) in pixels.chunks(batch * 784).zip(logits.chunks_mut(batch * classes)) {
        let k = chunk.len() / 784;
        session.run_pixels(chunk, k, out).unwrap();
    }
    logits
}

#[test]
fn convnet4_packed_every_way_predicts_as_the_cpu_runtime() {
    let Some((gpu, kernels)) = gpu("convnet4_packed_every_way_predicts_as_the_cpu_runtime") else { return };
    let data = bundled();
    let source = Packed::from_bytes(CONVNET4_INT8).unwrap();
    let params = unpack(&source);
    let layers = source.layers().to_vec();
    let mut meta = metadata("convnet4", source.input_shape(), "");
    (meta.mean, meta.std) = (source.metadata().mean, source.metadata().std);
    // The three types on 500 digits; f16 and int2 on 64 (lavapipe's time is precious).
    for (quant, name, n) in [
        (Quant::F32, "f32", 500),
        (Quant::Int8, "int8", 500),
        (Quant::Int4 { block: 32 }, "int4", 500),
        (Quant::F16, "f16", 64),
        (Quant::Int2 { block: 64 }, "int2", 64),
    ] {
        let pixels: Vec<u8> = (0..n).flat_map(|i| data.test.image(i).to_vec()).collect();
        let file = pack(&layers, &params, quant, &meta);
        let model = Packed::from_bytes(&file).unwrap();
        let mut session =
            GpuSession::with_kernels(Gpu::from_device(gpu.device(), gpu.queue()), &kernels, &model, 64).unwrap();
        let got = run_on_gpu(&mut session, &pixels, n, 64);
        let same = compare_with_cpu(&got, &file, &pixels, n, &format!("convnet4 {name}"));
        let correct = (0..n).filter(|&i| argmax(&got[i * 10..][..10]) == data.test.labels[i] as usize).count();
        println!("convnet4 {name}: {same} of {n} classes as the CPU runtime, {correct} correct");
        // The integer path (8-bit activations) agrees with the f32 network on all but about 1 % of digits.
        let slack = if name == "f32" || name == "f16" { 1 } else { 1 + n / 100 };
        assert!(same >= n - slack, "{name}: {same} of {n}");
        if name != "int2" {
            assert!(correct >= n * 97 / 100, "{name}: {correct} of {n}");
        }
    }
}

#[test]
fn vgg_f32_int8_int4_predict_as_the_cpu_runtime() {
    let Some((gpu, kernels)) = gpu("vgg_f32_int8_int4_predict_as_the_cpu_runtime") else { return };
    let data = bundled();
    let n = 64;
    let pixels: Vec<u8> = (0..n).flat_map(|i| data.test.image(i).to_vec()).collect();
    let model = Model::new(presets::vgg(), InitChoice::Default, 1).unwrap();
    let params: Vec<(String, Vec<usize>, Vec<f32>)> =
        model.params.iter().map(|t| (t.name.clone(), t.dims.clone(), t.data.clone())).collect();
    let meta = metadata("vgg", model.input_shape(), "");
    for (quant, name) in [(Quant::F32, "f32"), (Quant::Int8, "int8"), (Quant::Int4 { block: 32 }, "int4")] {
        let file = pack(&model.network.layers, &params, quant, &meta);
        let packed = Packed::from_bytes(&file).unwrap();
        assert!((0..packed.tensor_count()).step_by(2).all(|t| packed.tensor(t).dtype
            == match name {
                "f32" => DType::F32,
                "int8" => DType::Int8,
                _ => DType::Int4,
            }));
        let mut session =
            GpuSession::with_kernels(Gpu::from_device(gpu.device(), gpu.queue()), &kernels, &packed, 16).unwrap();
        let got = run_on_gpu(&mut session, &pixels, n, 16);
        // An untrained VGG's logits are close together, so the integer path's classes may differ where they
        // tie; `compare_with_cpu` checks them where they do not.
        let same = compare_with_cpu(&got, &file, &pixels, n, &format!("vgg {name}"));
        println!("vgg {name}: {same} of {n} classes as the CPU runtime");
        if name == "f32" {
            assert!(same >= n - 1, "vgg {name}: {same} of {n} classes as the CPU runtime");
        }
    }
}

/// `run_pixels` normalises with the model's metadata: with a mean and std that are not 0 and 1 it gives what
/// `run` gives on pixels normalised by hand, and the CPU runtime's logits; not those of pixels / 255 alone.
#[test]
fn run_pixels_normalises_with_the_metadata_mean_and_std() {
    let Some((gpu, kernels)) = gpu("run_pixels_normalises_with_the_metadata_mean_and_std") else { return };
    let data = bundled();
    let source = Packed::from_bytes(CONVNET4_INT8).unwrap();
    let (mean, std) = (0.1307f32, 0.3081f32);
    let mut meta = metadata("convnet4", source.input_shape(), "");
    (meta.mean, meta.std) = (mean, std);
    let file = pack(source.layers(), &unpack(&source), Quant::Int8, &meta);
    let model = Packed::from_bytes(&file).unwrap();
    let n = 8;
    let pixels: Vec<u8> = (0..n).flat_map(|i| data.test.image(i).to_vec()).collect();
    let mut session =
        GpuSession::with_kernels(Gpu::from_device(gpu.device(), gpu.queue()), &kernels, &model, n).unwrap();
    let from_pixels = run_on_gpu(&mut session, &pixels, n, n);

    let mut by_hand = vec![0.0; n * 10];
    let normalised: Vec<f32> = pixels.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect();
    session.run(&normalised, n, &mut by_hand).unwrap();
    assert_eq!(from_pixels, by_hand, "run_pixels vs run on pixels normalised by hand");
    compare_with_cpu(&from_pixels, &file, &pixels, n, "convnet4 int8, mean and std from the metadata");

    let mut unnormalised = vec![0.0; n * 10];
    let plain: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    session.run(&plain, n, &mut unnormalised).unwrap();
    let differ = from_pixels.iter().zip(&unnormalised).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(differ > 1e-2, "mean {mean} and std {std} changed the logits by only {differ}");
}

/// `run` creates no buffers, bind groups or pipelines (wgpu's internal counters), whatever the batch size.
#[test]
fn run_creates_no_wgpu_objects() {
    let Some((gpu, _)) = gpu("run_creates_no_wgpu_objects") else { return };
    let model = Packed::from_bytes(CONVNET4_INT8).unwrap();
    let mut session = GpuSession::new(gpu.device(), gpu.queue(), &model, 8).unwrap();
    let digit = [0u8; 784 * 8];
    let mut logits = [0.0f32; 80];
    session.run_pixels(&digit, 8, &mut logits).unwrap();
    let count = |gpu: &Gpu| {
        let c = gpu.device().get_internal_counters().hal;
        [
            c.buffers.read(),
            c.bind_groups.read(),
            c.compute_pipelines.read(),
            c.shader_modules.read(),
            c.bind_group_layouts.read(),
        ]
    };
    let before = count(session.gpu());
    assert!(before[0] > 0, "wgpu's counters are on (the `counters` feature)");
    for n in [1, 8, 3, 8] {
        session.run_pixels(&digit[..784 * n], n, &mut logits).unwrap();
    }
    assert_eq!(count(session.gpu()), before, "buffers, bind groups, pipelines, shader modules, layouts");
}

/// Bad input: a clear error, never a panic.
#[test]
fn bad_batches_and_inputs_are_errors() {
    let Some((gpu, _)) = gpu("bad_batches_and_inputs_are_errors") else { return };
    let model = Packed::from_bytes(CONVNET4_INT8).unwrap();
    assert!(GpuSession::new(gpu.device(), gpu.queue(), &model, 0).is_err());
    let mut session = GpuSession::new(gpu.device(), gpu.queue(), &model, 2).unwrap();
    let mut logits = [0.0f32; 30];
    let err = session.run(&[0.0; 784 * 3], 3, &mut logits).unwrap_err().to_string();
    assert!(err.contains("batch of 3"), "{err}");
    let err = session.run(&[0.0; 100], 1, &mut logits).unwrap_err().to_string();
    assert!(err.contains("100 input values"), "{err}");
    let mut nan = vec![0.0; 784];
    nan[5] = f32::NAN;
    let err = session.run(&nan, 1, &mut logits).unwrap_err().to_string();
    assert!(err.contains("input value 5"), "{err}");
    let err = session.run(&[0.0; 784], 1, &mut logits[..3]).unwrap_err().to_string();
    assert!(err.contains("output slice"), "{err}");
}

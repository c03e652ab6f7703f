//! The GPU trainer (kiln-gpu's kernels) against the CPU trainer, which is the reference for every backward
//! kernel, the loss and the optimizers. Runs on whatever adapter wgpu finds: Mesa's lavapipe in CI, at
//! about 1 GFLOP/s, so the shapes are small.
//!
//! Tolerances: the GPU sums in another order (tiled, fused multiply-adds), so a value may differ from the
//! CPU's by a few ulps of the largest terms summed. Forward values and gradients are compared with 1e-4
//! relative to the largest magnitude in their tensor; updated weights with 1e-5 relative.

use kiln_core::network::{Layer, Shape};
use kiln_gpu::{Gpu, GpuNetwork, Kernels};
use kiln_train::config::InitChoice;
use kiln_train::config::{Length, OptimizerConfig, OptimizerKind, Schedule, TrainConfig};
use kiln_train::data::Mnist;
use kiln_train::layers::loss;
use kiln_train::model::Workspace;
use kiln_train::optim::Optimizer;
use kiln_train::train::Trainer;
use kiln_train::{Model, Network, presets};

/// The device and its kernels, or `None` (the test skips) where there is no adapter.
fn gpu(test: &str) -> Option<(Gpu, Kernels)> {
    let gpu = kiln_gpu::test_support::gpu_or_skip(test)?;
    let kernels = Kernels::new(&gpu).unwrap();
    Some((gpu, kernels))
}

fn bundled() -> Mnist {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    Mnist::load(&dir).unwrap()
}

/// A small network with every layer kind and shapes that fill no GPU tile: odd channel counts, a
/// non-square input, uneven padding, a pool, and a dense layer after a flatten.
fn odd_network() -> Network {
    Network {
        name: "odd".into(),
        input: Shape::new(10, 6, 1),
        layers: vec![
            Layer::Pad { top: 1, bottom: 1, left: 2, right: 0 },
            Layer::Conv2d { filters: 5 },
            Layer::Relu,
            Layer::MaxPool,
            Layer::Conv2d { filters: 70 },
            Layer::Relu,
            Layer::Flatten,
            Layer::Dense { units: 13 },
            Layer::Relu,
            Layer::Dense { units: 3 },
        ],
        normalization: Default::default(),
    }
}

fn images(n: usize, len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], relative: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= relative * scale, "{what}: value {i}: GPU {g}, CPU {w} (largest {scale})");
    }
}

fn param_slices(model: &Model) -> Vec<&[f32]> {
    model.params.iter().map(|t| &t.data[..]).collect()
}

/// CPU reference: loss and every parameter gradient for one batch.
fn cpu_gradients(model: &Model, x: &[f32], labels: &[u8]) -> (f32, Vec<Vec<f32>>) {
    let mut ws = Workspace::new();
    let classes = model.classes();
    let logits = model.forward(&mut ws, x, labels.len()).to_vec();
    let mut dlogits = vec![0.0; logits.len()];
    let score = loss::softmax_cross_entropy(&logits, labels, classes, Some(&mut dlogits));
    let mut grads: Vec<Vec<f32>> = model.param_lens().iter().map(|&l| vec![0.0; l]).collect();
    model.backward(&mut ws, &dlogits, &mut grads);
    (score.cost, grads)
}

#[test]
fn every_backward_kernel_and_the_loss_match_the_cpu() {
    let Some((gpu, kernels)) = gpu("every_backward_kernel_and_the_loss_match_the_cpu") else { return };
    let model = Model::new(odd_network(), InitChoice::Default, 3).unwrap();
    for n in [1, 7] {
        let x = images(n, model.input_shape().len(), n as u64);
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let (cost, want) = cpu_gradients(&model, &x, &labels);
        // SGD at rate 0 leaves the weights alone and exposes the gradients.
        let spec = OptimizerConfig::new(OptimizerKind::Sgd).gpu_spec();
        let mut net = GpuNetwork::new(
            &gpu,
            &kernels,
            &model.network.layers,
            model.input_shape(),
            &param_slices(&model),
            8,
            Some(spec),
        )
        .unwrap();
        let score = net.train_step(&x, &labels, 0.0).unwrap();
        assert!((score.cost - cost).abs() <= 1e-4 * cost.abs().max(1.0), "batch {n}: cost {} vs {cost}", score.cost);
        for (k, (got, want)) in net.read_grads().unwrap().iter().zip(&want).enumerate() {
            assert_close(got, want, 1e-4, &format!("batch {n}: gradient of {}", model.params[k].name));
        }
        assert_eq!(net.read_params().unwrap(), param_slices(&model), "rate 0 changes nothing");
    }
}

#[test]
fn one_step_of_each_optimizer_matches_the_cpu() {
    let Some((gpu, kernels)) = gpu("one_step_of_each_optimizer_matches_the_cpu") else { return };
    let base = Model::new(odd_network(), InitChoice::Default, 5).unwrap();
    let n = 6;
    let x = images(n, base.input_shape().len(), 11);
    let labels: Vec<u8> = (0..n).map(|i| ((i * 2) % 3) as u8).collect();
    for kind in [OptimizerKind::Sgd, OptimizerKind::Momentum, OptimizerKind::Adam] {
        let config = OptimizerConfig::new(kind);
        let lr = 0.01;
        let mut net = GpuNetwork::new(
            &gpu,
            &kernels,
            &base.network.layers,
            base.input_shape(),
            &param_slices(&base),
            n,
            Some(config.gpu_spec()),
        )
        .unwrap();
        // Two steps, so Momentum's and Adam's slots carry state into the second.
        let mut cpu = base.clone();
        let mut optimizer = Optimizer::new(config, &cpu.param_lens());
        for _ in 0..2 {
            net.train_step(&x, &labels, lr).unwrap();
            let (_, grads) = cpu_gradients(&cpu, &x, &labels);
            let mut params: Vec<&mut [f32]> = cpu.params.iter_mut().map(|t| &mut t.data[..]).collect();
            let grads: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
            optimizer.apply(&mut params, &grads, lr);
        }
        let got = net.read_params().unwrap();
        for (k, tensor) in cpu.params.iter().enumerate() {
            let before = &base.params[k].data;
            // Compare the change each step made; Adam's update is about ±lr per weight whatever the gradient's
            // size, so weights whose gradient is near zero are compared at the rate's scale instead.
            let moved_gpu: Vec<f32> = got[k].iter().zip(before).map(|(a, b)| a - b).collect();
            let moved_cpu: Vec<f32> = tensor.data.iter().zip(before).map(|(a, b)| a - b).collect();
            assert_close(&moved_gpu, &moved_cpu, 2e-3, &format!("{kind}: update of {}", tensor.name));
        }
        assert_eq!(net.adam_powers(), (optimizer.beta1_power, optimizer.beta2_power), "{kind}");
        let slots = net.read_slots().unwrap();
        for (k, (gpu_slots, cpu_slots)) in slots.iter().zip(&optimizer.slots).enumerate() {
            for (s, (g, c)) in gpu_slots.iter().zip(cpu_slots).enumerate() {
                assert_close(g, c, 1e-3, &format!("{kind}: slot {s} of tensor {k}"));
            }
        }
    }
}

#[test]
fn whole_network_logits_match_for_all_three_presets() {
    let Some((gpu, kernels)) = gpu("whole_network_logits_match_for_all_three_presets") else { return };
    let data = bundled();
    for (network, n) in [(presets::fc3(), 5), (presets::convnet4(), 3), (presets::vgg(), 2)] {
        let model = Model::new(network, InitChoice::Default, 1).unwrap();
        let len = model.input_shape().len();
        let x: Vec<f32> = (0..n).flat_map(|i| data.test.image(i).iter().map(|&p| p as f32 / 255.0)).collect();
        assert_eq!(x.len(), n * len);
        let mut ws = Workspace::new();
        let want = model.forward(&mut ws, &x, n).to_vec();
        let mut net =
            GpuNetwork::new(&gpu, &kernels, &model.network.layers, model.input_shape(), &param_slices(&model), n, None)
                .unwrap();
        let got = net.forward(&x, n).unwrap();
        assert_close(&got, &want, 1e-4, &format!("{} logits", model.network.name));
    }
}

fn config(kind: OptimizerKind, batch: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        length: Length::Steps(steps),
        batch,
        lr: kind.default_lr(),
        optimizer: OptimizerConfig::new(kind),
        schedule: Schedule::Constant,
        seed: 7,
        augment_shift: 1,
    }
}

/// ConvNet4, 20 steps at batch 16: the GPU's cost curve follows the CPU's within 1e-3 at every step.
#[test]
fn convnet4_cost_curve_follows_the_cpu() {
    let Some((gpu, kernels)) = gpu("convnet4_cost_curve_follows_the_cpu") else { return };
    let data = bundled();
    let train = data.train.take(2000);
    let c = config(OptimizerKind::Adam, 16, 20);
    let mut cpu_model = Model::new(presets::convnet4(), InitChoice::Default, 7).unwrap();
    let mut gpu_model = cpu_model.clone();
    let mut cpu = Trainer::new(&mut cpu_model, &train, &c).unwrap();
    let mut on_gpu = Trainer::new_on_gpu(&mut gpu_model, &train, &c, &gpu, &kernels).unwrap();
    for step in 1..=20 {
        let (a, b) = (cpu.step().unwrap(), on_gpu.step().unwrap());
        assert!((a.cost - b.cost).abs() <= 1e-3 * a.cost.abs(), "step {step}: CPU cost {}, GPU {}", a.cost, b.cost);
        assert_eq!(a.images, b.images);
    }
}

//! Faults become errors that say what happened, never panics: a model too large for the device's buffers
//! (caught before anything is created), a lost device, bad batches.

use kiln_core::network::{Layer, Shape};
use kiln_gpu::{Gpu, GpuError, GpuNetwork, Kernels, OptimizerSpec, UpdateRule};

/// The device, or `None` (the test skips) where there is no adapter.
fn gpu(test: &str) -> Option<Gpu> {
    kiln_gpu::test_support::gpu_or_skip(test)
}

fn tiny() -> (Vec<Layer>, Shape, Vec<Vec<f32>>) {
    let layers = vec![Layer::Flatten, Layer::Dense { units: 3 }];
    let input = Shape::new(2, 2, 1);
    (layers, input, vec![vec![0.1; 12], vec![0.0; 3]])
}

const SGD: OptimizerSpec =
    OptimizerSpec { rule: UpdateRule::Sgd, momentum: 0.9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 };

#[test]
fn a_batch_too_large_for_one_buffer_is_refused_before_anything_runs() {
    let Some(gpu) = gpu("a_batch_too_large_for_one_buffer_is_refused_before_anything_runs") else { return };
    let kernels = Kernels::new(&gpu).unwrap();
    let layers = vec![Layer::Conv2d { filters: 512 }, Layer::Relu, Layer::Flatten, Layer::Dense { units: 10 }];
    let input = Shape::new(32, 32, 1);
    let params = [vec![0.0; 9 * 512], vec![0.0; 512], vec![0.0; 32 * 32 * 512 * 10], vec![0.0; 10]];
    let params: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
    // 4096 images × 32×32×512 f32 = 8 GiB for one activation.
    let err = GpuNetwork::new(&gpu, &kernels, &layers, input, &params, 4096, None).unwrap_err();
    assert!(matches!(err, GpuError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("activation"), "{err}");
}

#[test]
fn a_lost_device_is_an_error() {
    let Some(gpu) = gpu("a_lost_device_is_an_error") else { return };
    let kernels = Kernels::new(&gpu).unwrap();
    let (layers, input, params) = tiny();
    let params: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
    let mut net = GpuNetwork::new(&gpu, &kernels, &layers, input, &params, 2, Some(SGD)).unwrap();
    net.train_step(&[0.5; 8], &[1, 2], 0.1).unwrap();
    gpu.device().destroy();
    let err = net.train_step(&[0.5; 8], &[1, 2], 0.1).unwrap_err();
    assert!(matches!(err, GpuError::DeviceLost(_) | GpuError::Validation(_) | GpuError::Readback(_)), "{err}");
}

#[test]
fn bad_batches_and_labels_are_errors() {
    let Some(gpu) = gpu("bad_batches_and_labels_are_errors") else { return };
    let kernels = Kernels::new(&gpu).unwrap();
    let (layers, input, params) = tiny();
    let params: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
    let mut net = GpuNetwork::new(&gpu, &kernels, &layers, input, &params, 2, Some(SGD)).unwrap();
    let err = net.train_step(&[0.5; 12], &[0, 1, 2], 0.1).unwrap_err().to_string();
    assert!(err.contains("batch of 3"), "{err}");
    let err = net.train_step(&[0.5; 8], &[0, 7], 0.1).unwrap_err().to_string();
    assert!(err.contains("label 7"), "{err}");
    let err = net.train_step(&[0.5; 5], &[0], 0.1).unwrap_err().to_string();
    assert!(err.contains("5 input values"), "{err}");
    let wrong = [vec![0.0; 5], vec![0.0; 3]];
    let wrong: Vec<&[f32]> = wrong.iter().map(|p| &p[..]).collect();
    let err = GpuNetwork::new(&gpu, &kernels, &layers, input, &wrong, 2, None).unwrap_err().to_string();
    assert!(err.contains("parameter tensors"), "{err}");
}

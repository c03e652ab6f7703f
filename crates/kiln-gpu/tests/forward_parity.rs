//! Every forward kernel against its CPU reference in kiln-core, on small random shapes chosen so that
//! no tile is full (odd sizes, channel counts past a multiple of 64). Runs on whatever adapter wgpu finds:
//! lavapipe in CI. Tolerance: 1e-4 relative (1e-4 absolute near zero); the GPU sums in another order.

use kiln_core::kernels;
use kiln_gpu::ops::gemm::{GemmMode, GemmOp, LayerGeometry};
use kiln_gpu::ops::layers::{LayerOp, LayerPass};
use kiln_gpu::{Gpu, Kernels};

/// The device, or `None` (the test skips) where there is no adapter.
fn gpu(test: &str) -> Option<Gpu> {
    kiln_gpu::test_support::gpu_or_skip(test)
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn upload(gpu: &Gpu, v: &[f32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    gpu.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(v),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

fn zeros(gpu: &Gpu, len: usize) -> wgpu::Buffer {
    upload(gpu, &vec![0.0; len.max(1)])
}

fn run(gpu: &Gpu, encode: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        encode(&mut pass);
    }
    gpu.queue().submit([encoder.finish()]);
}

pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}: value {i}: GPU {g}, CPU {w}");
    }
}

#[test]
fn gemm_forward_matches_conv_and_dense_references() {
    let Some(gpu) = gpu("gemm_forward_matches_conv_and_dense_references") else { return };
    let k = Kernels::new(&gpu).unwrap();
    let dummy = zeros(&gpu, 1);
    for &(n, h, w, cin, cout) in &[(2, 5, 7, 3, 65), (1, 4, 4, 17, 8), (3, 3, 2, 70, 130)] {
        let (x, wt, b) = (values(n * h * w * cin, 1), values(9 * cin * cout, 2), values(cout, 3));
        let mut want = vec![0.0; n * h * w * cout];
        kernels::conv2d_3x3_same(&x, n, h, w, cin, &wt, &b, cout, &mut want).unwrap();
        for relu in [false, true] {
            let (xb, wb, bb, yb) = (upload(&gpu, &x), upload(&gpu, &wt), upload(&gpu, &b), zeros(&gpu, want.len()));
            let g = LayerGeometry { batch: n, h, w, cin, cout };
            let op = GemmOp::new(&gpu, &k, GemmMode::ConvForward, g, &xb, &wb, Some(&bb), relu, &yb, &dummy).unwrap();
            run(&gpu, |pass| op.encode(pass));
            let got = gpu.read_f32(&yb, want.len()).unwrap();
            let want: Vec<f32> = want.iter().map(|&v| if relu { v.max(0.0) } else { v }).collect();
            assert_close(&got, &want, &format!("conv {n}x{h}x{w}x{cin}->{cout} relu {relu}"));
        }
    }
    for &(n, cin, cout) in &[(1, 33, 10), (5, 70, 129), (64, 20, 3)] {
        let (x, wt, b) = (values(n * cin, 4), values(cin * cout, 5), values(cout, 6));
        let mut want = vec![0.0; n * cout];
        kernels::dense(&x, n, cin, &wt, &b, cout, &mut want).unwrap();
        let (xb, wb, bb, yb) = (upload(&gpu, &x), upload(&gpu, &wt), upload(&gpu, &b), zeros(&gpu, want.len()));
        let g = LayerGeometry { batch: n, h: 1, w: 1, cin, cout };
        let op = GemmOp::new(&gpu, &k, GemmMode::DenseForward, g, &xb, &wb, Some(&bb), false, &yb, &dummy).unwrap();
        run(&gpu, |pass| op.encode(pass));
        assert_close(&gpu.read_f32(&yb, want.len()).unwrap(), &want, &format!("dense {n}x{cin}->{cout}"));
    }
}

#[test]
fn pad_pool_and_relu_match_their_references() {
    let Some(gpu) = gpu("pad_pool_and_relu_match_their_references") else { return };
    let k = Kernels::new(&gpu).unwrap();
    let (n, h, w, c) = (2, 6, 4, 5);
    let x = values(n * h * w * c, 7);
    // Pad (uneven borders, as the VGG's 28 → 32 is even but others need not be).
    let (top, bottom, left, right) = (2, 1, 0, 3);
    let (oh, ow) = (h + top + bottom, w + left + right);
    let mut want = vec![0.0; n * oh * ow * c];
    kernels::pad(&x, n, h, w, c, (top, bottom, left, right), &mut want).unwrap();
    let (xb, yb) = (upload(&gpu, &x), zeros(&gpu, want.len()));
    let pass = LayerPass::PadForward { top, left, out_h: oh, out_w: ow };
    let op = LayerOp::new(&gpu, &k, pass, (n, h, w, c), &xb, &yb, None).unwrap();
    run(&gpu, |p| op.encode(p));
    assert_eq!(gpu.read_f32(&yb, want.len()).unwrap(), want, "pad");
    // Max pool, with ties: the first of equal values wins on both sides.
    let mut tied = x.clone();
    tied[c] = tied[0];
    let mut want = vec![0.0; n * (h / 2) * (w / 2) * c];
    kernels::maxpool_2x2(&tied, n, h, w, c, &mut want).unwrap();
    let (xb, yb, wb) = (upload(&gpu, &tied), zeros(&gpu, want.len()), zeros(&gpu, want.len()));
    let op = LayerOp::new(&gpu, &k, LayerPass::PoolForward, (n, h, w, c), &xb, &yb, Some(&wb)).unwrap();
    run(&gpu, |p| op.encode(p));
    assert_eq!(gpu.read_f32(&yb, want.len()).unwrap(), want, "max pool");
    // ReLU in place.
    let mut want = vec![0.0; x.len()];
    kernels::relu(&x, &mut want).unwrap();
    let yb = upload(&gpu, &x);
    let op = LayerOp::new(&gpu, &k, LayerPass::ReluForward, (n, h, w, c), &yb, &yb, None).unwrap();
    run(&gpu, |p| op.encode(p));
    assert_eq!(gpu.read_f32(&yb, want.len()).unwrap(), want, "relu");
}

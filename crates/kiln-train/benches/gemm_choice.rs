//! Picks the GEMM crate: `gemm` against `matrixmultiply` on the VGG's own conv shapes, both on all cores.
//!
//! `cargo bench -p kiln-train --bench gemm_choice` — figures go in docs/BENCHMARKS.md.
// matrixmultiply's API takes raw pointers and strides.
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_train::gemm::{MatRef, matmul};

/// (name, m, k, n) in row-major `[m,k] x [k,n]`: VGG conv2 forward (batch 16), the same layer's weight
/// gradient (`colᵀ × dout`, k is the long side), conv9 forward, and the first dense layer at batch 64.
const SHAPES: [(&str, usize, usize, usize); 4] = [
    ("conv2_forward", 16 * 1024, 576, 64),
    ("conv2_dweights", 576, 16 * 1024, 64),
    ("conv9_forward", 16 * 16, 4608, 512),
    ("dense1_forward", 64, 2048, 4096),
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_choice");
    group.sample_size(10);
    for (name, m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("gemm", name), |bench| {
            bench.iter(|| matmul(&mut out, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), false))
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", name), |bench| {
            // SAFETY: a is m x k, b is k x n and out is m x n, all row-major and in bounds.
            bench.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! A safe, bounds-checked front for the `gemm` crate, which the trainer uses for every conv and dense pass.
//!
//! `gemm` was picked over `matrixmultiply` by benchmark (`cargo bench -p kiln-train --bench gemm_choice`,
//! figures in docs/BENCHMARKS.md): it has AVX-512 kernels and splits work over rayon's threads.

/// A read-only strided matrix view: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix. Panics if `data` is too short (a bug in the caller, not bad input).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        let needed = rows.checked_mul(cols).unwrap_or_else(|| panic!("matrix {rows}x{cols} overflows usize"));
        assert!(data.len() >= needed, "matrix {rows}x{cols} needs {needed} values, got {}", data.len());
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) × rhs (k x n)`, on all of rayon's threads.
///
/// `gemm` splits the output between threads, never the `k` sum, so every element is summed in the same
/// order whatever the thread count (a test in tests/cli.rs trains with 1 and 2 threads and compares bits).
pub fn matmul(dst: &mut [f32], lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    let threads = rayon::current_num_threads();
    matmul_with(
        dst,
        lhs,
        rhs,
        accumulate,
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
    )
}

/// [`matmul`] on the calling thread only, for callers that already run one task per core.
pub fn matmul_serial(dst: &mut [f32], lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    matmul_with(dst, lhs, rhs, accumulate, gemm::Parallelism::None)
}

// The one call into the gemm crate, whose API takes raw pointers and strides.
#[allow(unsafe_code)]
fn matmul_with(dst: &mut [f32], lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool, parallelism: gemm::Parallelism) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    let dst_len = m.checked_mul(n).unwrap_or_else(|| panic!("destination {m}x{n} overflows usize"));
    assert!(dst.len() >= dst_len, "destination {m}x{n} too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..dst_len].fill(0.0);
        }
        return;
    }
    // SAFETY: the views were bounds-checked at construction (`row_major` covers every (r, c) of the
    // untransposed matrix, and `t` only swaps the roles of the strides), `dst` holds m*n values, and the
    // three slices are distinct borrows so nothing aliases the destination.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Adds the column sums of `values` (`[rows, cols]`) to `sums` (`[cols]`), in a fixed order that does not
/// depend on the thread count: fixed-size blocks of rows, each summed on its own, then added in order.
pub fn add_column_sums(values: &[f32], cols: usize, sums: &mut [f32]) {
    use rayon::prelude::*;
    const BLOCK_ROWS: usize = 512;
    let partials: Vec<Vec<f32>> = values
        .par_chunks(BLOCK_ROWS * cols)
        .map(|block| {
            let mut acc = vec![0.0f32; cols];
            for row in block.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    for partial in partials {
        for (s, p) in sums.iter_mut().zip(partial) {
            *s += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_including_transposes() {
        let (m, k, n) = (37, 53, 29);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(&mut got, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), false);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4);
        }
        // (Bᵀ Aᵀ)ᵀ = A B: compute Bᵀ Aᵀ as an n x m matrix from transposed views.
        let mut got_t = vec![0.0; n * m];
        matmul(&mut got_t, MatRef::row_major(&b, k, n).t(), MatRef::row_major(&a, m, k).t(), false);
        for i in 0..m {
            for j in 0..n {
                assert!((got_t[j * m + i] - want[i * n + j]).abs() < 1e-4);
            }
        }
        // Accumulate adds on top.
        matmul(&mut got, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), true);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - 2.0 * w).abs() < 1e-4);
        }
    }

    #[test]
    fn column_sums() {
        let values: Vec<f32> = (0..3000).map(|i| i as f32).collect();
        let mut sums = vec![1.0, 2.0, 3.0];
        add_column_sums(&values, 3, &mut sums);
        let want: Vec<f32> = (0..3).map(|c| (0..1000).map(|r| (r * 3 + c) as f32).sum::<f32>()).collect();
        assert_eq!(sums, [want[0] + 1.0, want[1] + 2.0, want[2] + 3.0]);
    }
}

//! Error-compensating rounding for int4 and int2 weights (GPTQ: Frantar et al., "GPTQ: Accurate
//! Post-Training Quantization for Generative Pre-trained Transformers", 2022).
//!
//! Rounding each weight to its nearest level minimises the error in the weights, not in the layer's
//! outputs. GPTQ quantizes a layer one input row at a time and spreads each row's rounding error over the
//! rows not yet quantized, weighted by how the layer's inputs correlate (the Hessian `H = Σ xᵀx` of the
//! layer's squared output error, measured on calibration images), so that later rows cancel what earlier
//! ones got wrong. A row holds whole blocks of the stored format (blocks tile the rows), so each block's
//! scale is chosen when its row is reached, from the values the earlier rows left it, by the same search
//! the plain packer uses. The result is a set of values that lie on the format's grid: the packer then
//! stores them exactly.
//!
//! The linear algebra is hand-written (a few dozen lines) because the one solver it needs, the upper
//! Cholesky factor of `H⁻¹`, is two triangular sweeps; the big products go through kiln-train's GEMM.

use rayon::prelude::*;

use crate::quant::{self, QuantError};
use crate::writer::Quant;
use kiln_train::gemm::{MatRef, matmul};

/// Rows quantized between two GEMM updates of the rows after them.
const LAZY_ROWS: usize = 128;

/// Fraction of the mean diagonal added to `H`'s diagonal: keeps the factorization well conditioned when
/// inputs are few or correlated (GPTQ's own default).
const DAMPING: f64 = 0.01;

/// Whether GPTQ can quantize a `[rows, cols]` tensor as `quant`: a block type whose blocks tile the rows.
pub fn applies(quant: Quant, cols: usize) -> bool {
    match quant {
        Quant::Int4 { block } | Quant::Int2 { block } => cols.is_multiple_of(block),
        _ => false,
    }
}

/// Quantizes `weights` (`[rows, cols]` row-major, one row per input: HWIO conv and `[in, out]` dense
/// weights as stored) as `quant` with GPTQ, given `hessian` (`[rows, rows]`, `Σ xᵀx` over the calibration
/// inputs, consumed). Writes the quantized values, which lie on `quant`'s grid, back into `weights`.
/// Falls back to plain rounding for rows when `H` is not positive definite even after damping (all its
/// inputs zero).
pub fn quantize(
    weights: &mut [f32],
    rows: usize,
    cols: usize,
    mut hessian: Vec<f64>,
    quant: Quant,
) -> Result<(), QuantError> {
    assert!(applies(quant, cols), "GPTQ needs a block type whose blocks tile the rows");
    assert_eq!(weights.len(), rows * cols);
    assert_eq!(hessian.len(), rows * rows);
    // Inputs that were always zero carry no information: give them a unit diagonal.
    let mut mean_diagonal = 0.0;
    for i in 0..rows {
        let d = &mut hessian[i * rows + i];
        if *d == 0.0 {
            *d = 1.0;
        }
        mean_diagonal += *d / rows as f64;
    }
    for i in 0..rows {
        hessian[i * rows + i] += DAMPING * mean_diagonal;
    }
    let Some(u) = inverse_upper_factor(hessian, rows) else {
        return round_rows(weights, cols, quant);
    };

    let mut errors = vec![0.0f32; LAZY_ROWS * cols];
    let mut row_values = vec![0.0f32; cols];
    for first in (0..rows).step_by(LAZY_ROWS) {
        let end = (first + LAZY_ROWS).min(rows);
        for k in first..end {
            row_values.copy_from_slice(&weights[k * cols..][..cols]);
            let quantized = round_row(&row_values, quant)?;
            let d = u[k * rows + k] as f32;
            let error = &mut errors[(k - first) * cols..][..cols];
            for ((e, &w), &q) in error.iter_mut().zip(&row_values).zip(&quantized) {
                *e = (w - q) / d;
            }
            weights[k * cols..][..cols].copy_from_slice(&quantized);
            // The rows left in this batch take their share now.
            let rest = &mut weights[(k + 1) * cols..];
            for (j, row) in rest[..(end - k - 1) * cols].chunks_exact_mut(cols).enumerate() {
                let f = u[k * rows + k + 1 + j] as f32;
                for (w, &e) in row.iter_mut().zip(error.iter()) {
                    *w -= f * e;
                }
            }
        }
        if end < rows {
            // Every later row: W[end..] -= U[first..end, end..]ᵀ × E, one GEMM.
            let later = rows - end;
            let batch = end - first;
            let mut factors = vec![0.0f32; batch * later];
            for (i, f) in factors.chunks_exact_mut(later).enumerate() {
                for (f, &u) in f.iter_mut().zip(&u[(first + i) * rows + end..][..later]) {
                    *f = -(u as f32);
                }
            }
            matmul(
                &mut weights[end * cols..],
                MatRef::row_major(&factors, batch, later).t(),
                MatRef::row_major(&errors[..batch * cols], batch, cols),
                true,
            );
        }
    }
    Ok(())
}

/// One row on `quant`'s grid, blocks as the packer cuts them.
fn round_row(values: &[f32], quant: Quant) -> Result<Vec<f32>, QuantError> {
    Ok(match quant {
        Quant::Int4 { block } => quant::int4_blocks(values, block)?.dequantize(),
        Quant::Int2 { block } => quant::int2_blocks(values, block)?.dequantize(),
        _ => unreachable!("checked by `applies`"),
    })
}

fn round_rows(weights: &mut [f32], cols: usize, quant: Quant) -> Result<(), QuantError> {
    for row in weights.chunks_exact_mut(cols) {
        let q = round_row(row, quant)?;
        row.copy_from_slice(&q);
    }
    Ok(())
}

/// The upper-triangular `U` with `Uᵀ U = H⁻¹` (row-major `[n, n]`), or `None` if `H` is not positive
/// definite. With `H = R Rᵀ` for an upper-triangular `R` (a Cholesky factorization run from the last row
/// up), `H⁻¹ = R⁻ᵀ R⁻¹`, so `U = R⁻¹`.
fn inverse_upper_factor(h: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let r = upper_cholesky(h, n)?;
    Some(upper_inverse(&r, n))
}

/// `R` upper-triangular with `H = R Rᵀ`, computed in place of `H`'s upper triangle, last column first:
/// `R[j][j] = √(H[j][j] − Σ_{k>j} R[j][k]²)` and `R[i][j] = (H[i][j] − Σ_{k>j} R[i][k] R[j][k]) / R[j][j]`
/// for `i < j`, every sum over contiguous row tails.
fn upper_cholesky(mut h: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for j in (0..n).rev() {
        let tail_j: Vec<f64> = h[j * n + j + 1..(j + 1) * n].to_vec();
        let d = h[j * n + j] - dot(&tail_j, &tail_j);
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        h[j * n + j] = d;
        // Rows above j are independent of each other at this step.
        h[..j * n].par_chunks_mut(n).for_each(|row| {
            row[j] = (row[j] - dot(&row[j + 1..], &tail_j)) / d;
        });
    }
    for i in 0..n {
        h[i * n..i * n + i].fill(0.0);
    }
    Some(h)
}

/// The inverse of an upper-triangular `R`, row by row from the last: `U[i] = (e_i − Σ_{k>i} R[i][k] U[k])
/// / R[i][i]`, each a sum of contiguous row tails.
fn upper_inverse(r: &[f64], n: usize) -> Vec<f64> {
    let mut u = vec![0.0f64; n * n];
    for i in (0..n).rev() {
        let (upper, lower) = u.split_at_mut((i + 1) * n);
        let row = &mut upper[i * n..];
        row[i] = 1.0;
        // Each column block of row i sums its part of the later rows: split by columns across threads.
        const COLUMNS: usize = 256;
        row[i + 1..].par_chunks_mut(COLUMNS).enumerate().for_each(|(block, out)| {
            let (c0, width) = (i + 1 + block * COLUMNS, out.len());
            for k in i + 1..(c0 + width).min(n) {
                let f = r[i * n + k];
                if f == 0.0 {
                    continue;
                }
                let later = &lower[(k - i - 1) * n..][..n];
                // U[k][c] is zero for c < k.
                let from = k.max(c0);
                for (o, &v) in out[from - c0..].iter_mut().zip(&later[from..c0 + width]) {
                    *o -= f * v;
                }
            }
        });
        let d = r[i * n + i];
        for v in &mut row[i..] {
            *v /= d;
        }
    }
    u
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four partial sums: the compiler keeps them in vector registers.
    let mut s = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            s[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    s[0] + s[1] + s[2] + s[3] + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// `Σ xᵀx` over the rows of `x` (`[samples, n]`).
    fn gram(x: &[f32], n: usize) -> Vec<f64> {
        let mut h = vec![0.0f64; n * n];
        for s in x.chunks_exact(n) {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += s[i] as f64 * s[j] as f64;
                }
            }
        }
        h
    }

    #[test]
    fn the_factor_inverts_the_hessian() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 37;
        let x = random(80 * n, &mut rng);
        let mut h = gram(&x, n);
        for i in 0..n {
            h[i * n + i] += 0.1;
        }
        let u = inverse_upper_factor(h.clone(), n).unwrap();
        // Uᵀ U H = I.
        for i in 0..n {
            for j in 0..n {
                let mut v = 0.0;
                for k in 0..n {
                    let utu: f64 = (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum();
                    v += utu * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-9, "({i},{j}): {v}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper-triangular");
            }
        }
        assert!(inverse_upper_factor(vec![1.0, 2.0, 2.0, 1.0], 2).is_none(), "indefinite");
    }

    /// On correlated inputs, GPTQ's outputs are closer to the f32 layer's than plain rounding's, and its
    /// values lie on the grid the packer stores exactly.
    #[test]
    fn gptq_beats_rounding_on_the_outputs() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (rows, cols, samples) = (300, 64, 2000);
        // Inputs with shared factors, like neighbouring pixels and channels: x = z A + noise.
        let factors = 20;
        let a = random(factors * rows, &mut rng);
        let mut x = vec![0.0f32; samples * rows];
        for s in 0..samples {
            let z = random(factors, &mut rng);
            for i in 0..rows {
                let v: f32 = (0..factors).map(|f| z[f] * a[f * rows + i]).sum();
                x[s * rows + i] = v.max(0.0) + 0.05 * rng.random_range(-1.0f32..1.0);
            }
        }
        let w = random(rows * cols, &mut rng);
        let output_error = |q: &[f32]| -> f64 {
            let mut e = 0.0;
            for s in x.chunks_exact(rows).take(500) {
                for c in 0..cols {
                    let d: f64 = (0..rows).map(|i| s[i] as f64 * (q[i * cols + c] - w[i * cols + c]) as f64).sum();
                    e += d * d;
                }
            }
            e
        };
        for quant in [Quant::Int2 { block: 32 }, Quant::Int4 { block: 32 }] {
            let mut rounded = w.clone();
            round_rows(&mut rounded, cols, quant).unwrap();
            let mut gptq = w.clone();
            quantize(&mut gptq, rows, cols, gram(&x, rows), quant).unwrap();
            let (plain, compensated) = (output_error(&rounded), output_error(&gptq));
            assert!(compensated < 0.7 * plain, "{quant}: GPTQ {compensated} against rounding {plain}");
            // Packing GPTQ's values again changes nothing: they are on the grid.
            let mut again = gptq.clone();
            round_rows(&mut again, cols, quant).unwrap();
            let moved = again.iter().zip(&gptq).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(moved < 1e-3, "{quant}: repacking moved a value by {moved}");
        }
    }
}

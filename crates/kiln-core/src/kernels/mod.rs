//! Reference forward kernels: plain loops over caller-provided slices, batch-major NHWC.
//!
//! Written by hand because this crate is `no_std` without `alloc` (no GEMM crate fits). They are the
//! ground truth that faster paths are tested against, so clarity beats speed here.
//! Each kernel checks its slice lengths first and returns [`LengthError`] instead of panicking.

mod conv2d;
mod dense;
mod maxpool;
mod packed;
mod pad;
mod quantized;
mod relu;
mod window;

pub use conv2d::conv2d_3x3_same;
pub use dense::dense;
pub use maxpool::{Poolable, maxpool_2x2};
pub use packed::{conv2d_3x3_same_packed, conv2d_packed, dense_packed};
pub use pad::{pad, pad_with};
pub use quantized::{
    ActivationScale, QuantizedOutput, REQUANTIZED_ACCUMULATORS, channel_scratch_len, conv2d_3x3_same_quantized,
    conv2d_quantized, dense_quantized, fake_quantize_in_place, quantize_activations, quantized_level, runs_on_integers,
};
pub use relu::{relu, relu_in_place, relu_levels_in_place};
pub use window::{activation_in_place, conv2d, global_avg_pool, pad_count, pool, scale_shift, scale_shift_packed};

use core::fmt;

/// Which compiled build of the packed kernels runs. Every build computes the same sums in the same order;
/// only rounding differs (FMA rounds once per multiply-add), so predictions agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The target's baseline: SSE2 on x86-64, `simd128` on wasm when built with `+simd128`, scalar
    /// elsewhere (the compiler vectorizes the fixed-length inner loops).
    Portable,
    /// x86-64 with AVX2 and FMA: found at run time with the `std` feature, or enabled at compile time.
    Avx2Fma,
    /// AVX2 and FMA with AVX-VNNI (`vpdpbusd` on 256-bit registers, as on CPUs that have it without
    /// AVX-512): the integer path's 256-bit micro-kernel; the f32 kernels run as [`Isa::Avx2Fma`]. Found at
    /// run time with `std`.
    AvxVnni,
    /// x86-64 with AVX-512 (F, VL) as well: four pixels per weight load. Found at run time with `std`.
    Avx512,
    /// AVX-512 with BW, VL and VNNI as well: the integer path's `vpdpbusd` micro-kernel (the f32 kernels run
    /// as [`Isa::Avx512`]). Found at run time with `std`.
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 5] = [Isa::Portable, Isa::Avx2Fma, Isa::AvxVnni, Isa::Avx512, Isa::Avx512Vnni];

    /// The fastest build this CPU runs.
    pub fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx512, Isa::AvxVnni, Isa::Avx2Fma]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU (and this build of the crate) can run it.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => avx2_fma_available(),
            Isa::AvxVnni => avx_vnni_available(),
            Isa::Avx512 => avx512_available(),
            Isa::Avx512Vnni => avx512_vnni_available(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// The build a name stands for: its [`name`](Isa::name), or `avx2` for [`Isa::Avx2Fma`].
    pub fn from_name(name: &str) -> Option<Isa> {
        match name {
            "portable" => Some(Isa::Portable),
            "avx2" | "avx2+fma" => Some(Isa::Avx2Fma),
            "avxvnni" => Some(Isa::AvxVnni),
            "avx512" => Some(Isa::Avx512),
            "avx512vnni" => Some(Isa::Avx512Vnni),
            _ => None,
        }
    }

    /// For tests that compare kernel builds: every build this CPU runs, in [`Isa::ALL`] order. Prints which
    /// builds `test` compares, and panics if [`REQUIRE_ISA_VAR`] names a build this CPU (or this build of
    /// the crate) cannot run, so a CI machine that has AVX-512 cannot quietly compare the portable build
    /// with itself.
    #[cfg(feature = "std")]
    pub fn builds_to_compare(test: &str) -> std::vec::Vec<Isa> {
        let available: std::vec::Vec<Isa> = Isa::ALL.into_iter().filter(|isa| isa.is_available()).collect();
        let names: std::vec::Vec<&str> = available.iter().map(|isa| isa.name()).collect();
        let required = std::env::var(REQUIRE_ISA_VAR).unwrap_or_default();
        std::eprintln!("{test}: comparing kernel builds {} ({REQUIRE_ISA_VAR}={required:?})", names.join(", "));
        for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let isa = Isa::from_name(name).unwrap_or_else(|| {
                panic!("{REQUIRE_ISA_VAR}: unknown kernel build \"{name}\"; valid: portable, avx2, avxvnni, avx512, avx512vnni")
            });
            assert!(
                available.contains(&isa),
                "{test}: {REQUIRE_ISA_VAR} requires the {} kernels, which cannot run here (this CPU and build run: {})",
                isa.name(),
                names.join(", ")
            );
        }
        available
    }
}

/// The environment variable naming the kernel builds (comma-separated: `portable`, `avx2`, `avxvnni`, `avx512`, `avx512vnni`) that
/// tests comparing builds must run; see [`Isa::builds_to_compare`]. CI sets it to what its machine has.
pub const REQUIRE_ISA_VAR: &str = "KILN_REQUIRE_ISA";

fn avx512_available() -> bool {
    // Only through run-time detection: a build with AVX2 enabled at compile time keeps the AVX2 path.
    #[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
    return avx2_fma_available()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl");
    #[allow(unreachable_code)]
    false
}

fn avx512_vnni_available() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    return avx2_fma_available()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni");
    #[allow(unreachable_code)]
    false
}

fn avx_vnni_available() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    return avx2_fma_available() && std::is_x86_feature_detected!("avxvnni");
    #[allow(unreachable_code)]
    false
}

fn avx2_fma_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    return true;
    #[cfg(all(feature = "std", target_arch = "x86_64", not(all(target_feature = "avx2", target_feature = "fma"))))]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[allow(unreachable_code)]
    false
}

/// A slice handed to a kernel has the wrong length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthError {
    /// Which argument: `"input"`, `"weights"`, `"bias"` or `"output"`.
    pub what: &'static str,
    pub expected: usize,
    pub got: usize,
}

impl fmt::Display for LengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has {} values, expected {}", self.what, self.got, self.expected)
    }
}

impl core::error::Error for LengthError {}

/// `f32::max` as a compare and select: the same result, NaN included (a NaN operand gives the other one).
/// In wasm `f32::max` is a call to libm's `fmaxf` (wasm's `f32.max` propagates NaN instead), which kept
/// the activation loops from vectorizing; this inlines everywhere.
#[inline(always)]
pub(crate) fn max_f32(a: f32, b: f32) -> f32 {
    if b > a || a.is_nan() { b } else { a }
}

/// `f32::min` as a compare and select, for the same reason as [`max_f32`].
#[inline(always)]
pub(crate) fn min_f32(a: f32, b: f32) -> f32 {
    if b < a || a.is_nan() { b } else { a }
}

pub(crate) fn check(what: &'static str, slice_len: usize, expected: usize) -> Result<(), LengthError> {
    if slice_len == expected { Ok(()) } else { Err(LengthError { what, expected, got: slice_len }) }
}

/// Numerically stable softmax over each row of `[rows, classes]`, in place.
pub fn softmax_in_place(values: &mut [f32], classes: usize) {
    if classes == 0 {
        return;
    }
    for row in values.chunks_exact_mut(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = libm_exp(*v - max);
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// `exp` without `std`: range reduction to `2^k * e^r`, `|r| <= ln2/2`, then a degree-9 Taylor series,
/// in f64 so the reduction loses no precision (relative error well below 1e-7). `core` has no `exp`,
/// and one function is not worth a dependency in the no-alloc core.
pub fn libm_exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 88.72 {
        return f32::INFINITY;
    }
    if x < -103.9 {
        return 0.0;
    }
    exp_f64(x as f64) as f32
}

/// [`libm_exp`]'s f64 core, for `|x|` up to about 700 (0 below, infinity above).
pub fn exp_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    const LN2: f64 = core::f64::consts::LN_2;
    let k = (x / LN2 + if x >= 0.0 { 0.5 } else { -0.5 }) as i32;
    let r = x - k as f64 * LN2;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for i in 1..=13 {
        term *= r / i as f64;
        sum += term;
    }
    sum * f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_max_and_min_give_what_std_gives() {
        let values = [f32::NAN, f32::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-40, 2.0, 255.0, f32::INFINITY];
        for &a in &values {
            for &b in &values {
                let same = |ours: f32, std: f32| ours.to_bits() == std.to_bits() || (ours == std && ours == 0.0);
                assert!(same(max_f32(a, b), a.max(b)), "max({a}, {b}): {} vs {}", max_f32(a, b), a.max(b));
                assert!(same(min_f32(a, b), a.min(b)), "min({a}, {b}): {} vs {}", min_f32(a, b), a.min(b));
            }
        }
    }

    #[test]
    fn exp_matches_std_closely() {
        extern crate std;
        let mut x = -80.0f32;
        while x < 80.0 {
            let ours = libm_exp(x);
            let want = (x as f64).exp() as f32;
            assert!(((ours - want) / want).abs() < 1e-6, "exp({x}) = {ours}, want {want}");
            x += 0.37;
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut v = [1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0];
        softmax_in_place(&mut v, 3);
        assert!((v[0] + v[1] + v[2] - 1.0).abs() < 1e-6);
        assert!((v[3] - 1.0).abs() < 1e-6 && v[5] == 0.0);
        assert!(v[2] > v[1] && v[1] > v[0]);
    }
}

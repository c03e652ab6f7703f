//! The one rule for tests that need a GPU adapter: [`gpu_or_skip`].

use std::io::Write;

use crate::{Gpu, GpuError};

/// The environment variable that turns a missing adapter from a skip into a failure (CI sets it to `1`).
pub const REQUIRE_GPU_ENV: &str = "KILN_REQUIRE_GPU";

/// Opens the GPU for a test. With no adapter at all it prints one `skipped: no GPU adapter` line naming
/// `test` and returns `None`, and the test returns; with `KILN_REQUIRE_GPU=1` it panics instead. Any other
/// failure to open the device panics: an adapter that is there must work.
///
/// The line goes straight to the process's stderr, past the test harness's output capture, so it shows
/// in a plain `cargo test` run.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::new() {
        Ok(gpu) => Some(gpu),
        Err(err @ GpuError::NoAdapter(_)) => {
            if std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1") {
                panic!("{test}: {REQUIRE_GPU_ENV}=1 but {err}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: no GPU adapter (set {REQUIRE_GPU_ENV}=1 to fail instead)"
            );
            None
        }
        Err(err) => panic!("{test}: {err}"),
    }
}

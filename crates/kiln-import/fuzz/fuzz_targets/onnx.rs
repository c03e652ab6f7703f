//! Arbitrary bytes as an ONNX file through Kiln's mapping: errors are fine, a panic or a crash is a finding.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_import::onnx::import_bytes(data, Path::new("fuzz.onnx"), "fuzz");
});

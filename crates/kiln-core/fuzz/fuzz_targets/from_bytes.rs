//! `Model::from_bytes` on arbitrary bytes must return, never panic; a model it accepts must run.
//!
//! Each input is tried twice: as given, and with its checksum restamped, so that mutations reach the
//! structural rules behind the checksum instead of all stopping at it.
#![no_main]

use kiln_core::format::{self, Model};
use kiln_core::runtime;
use libfuzzer_sys::fuzz_target;

/// Runs an accepted model on one zero image, and decodes every tensor, when its buffers are small
/// enough for the fuzzer's memory limit.
fn exercise(model: &Model<'_>) {
    for i in 0..model.tensor_count() {
        let t = model.tensor(i);
        let mut run = [0.0f32; 64];
        let mut at = 0;
        while at < t.len() {
            let n = run.len().min(t.len() - at);
            t.values().decode(at, &mut run[..n]);
            at += n;
        }
    }
    let len = runtime::scratch_len(model, 1);
    if len <= 1 << 22 {
        let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
        let input = vec![0.0f32; model.input_shape().len()];
        let logits = runtime::forward(model, &input, 1, &mut a, &mut b).expect("a validated model runs");
        assert_eq!(logits.len(), model.output_shape().len());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data) {
        exercise(&model);
    }
    if data.len() >= format::HEADER_LEN {
        let mut restamped = data.to_vec();
        let crc = format::checksum(&restamped);
        restamped[format::CHECKSUM_OFFSET..format::CHECKSUM_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        if let Ok(model) = Model::from_bytes(&restamped) {
            exercise(&model);
        }
    }
});

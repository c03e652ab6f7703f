//! `kiln_run_pixels` normalises pixels with the model's metadata, `(pixel / 255 - mean) / std`: on a model
//! whose mean and std are not 0 and 1 it gives what `kiln_run` gives on the same pixels normalised by hand,
//! and not what it gives on pixels that are only divided by 255.
// Calls the C ABI, whose functions take raw pointers.
#![allow(unsafe_code)]

use kiln::{
    KilnModel, KilnSession, KilnStatus, kiln_arena_size, kiln_classes, kiln_input_len, kiln_model_free,
    kiln_model_open, kiln_run, kiln_run_pixels, kiln_session_free, kiln_session_new,
};

const MODEL: &[u8] = include_bytes!("../../kiln-core/fuzz/seeds/from_bytes/int8.kiln");

/// A copy of the model file whose metadata says `input = (pixel / 255 - mean) / std`.
fn with_normalisation(bytes: &[u8], mean: f32, std: f32) -> Vec<u8> {
    let mut file = bytes.to_vec();
    kiln_core::format::set_normalisation(&mut file, mean, std).unwrap();
    file
}

#[test]
fn run_pixels_normalises_with_the_metadata_mean_and_std() {
    let (mean, std) = (0.1307f32, 0.3081f32);
    let file = with_normalisation(MODEL, mean, std);
    let n = 3;
    // SAFETY: every pointer below points to live memory of the stated length; the bytes and the arena
    // outlive the model and the session, which are freed at the end.
    unsafe {
        let mut model: *mut KilnModel = std::ptr::null_mut();
        assert_eq!(kiln_model_open(file.as_ptr(), file.len(), &mut model), KilnStatus::Ok);
        let (len, classes) = (kiln_input_len(model), kiln_classes(model));
        let mut arena = vec![0u32; kiln_arena_size(model, n).div_ceil(4)];
        let mut session: *mut KilnSession = std::ptr::null_mut();
        let status = kiln_session_new(model, arena.as_mut_ptr().cast(), arena.len() * 4, n, &mut session);
        assert_eq!(status, KilnStatus::Ok);

        let pixels: Vec<u8> = (0..n * len).map(|i| (i * 7 % 256) as u8).collect();
        let mut from_pixels = vec![0.0f32; n * classes];
        let status = kiln_run_pixels(session, pixels.as_ptr(), pixels.len(), n, from_pixels.as_mut_ptr(), n * classes);
        assert_eq!(status, KilnStatus::Ok);

        let run = |input: &[f32]| {
            let mut out = vec![0.0f32; n * classes];
            assert_eq!(kiln_run(session, input.as_ptr(), input.len(), n, out.as_mut_ptr(), out.len()), KilnStatus::Ok);
            out
        };
        let by_hand = run(&pixels.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect::<Vec<_>>());
        let unnormalised = run(&pixels.iter().map(|&p| p as f32 / 255.0).collect::<Vec<_>>());
        for (a, b) in from_pixels.iter().zip(&by_hand) {
            assert!(
                (a - b).abs() <= 1e-6,
                "kiln_run_pixels {from_pixels:?} vs kiln_run on normalised input {by_hand:?}"
            );
        }
        let differ = from_pixels.iter().zip(&unnormalised).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(differ > 1e-2, "mean {mean} and std {std} changed the probabilities by only {differ}");

        kiln_session_free(session);
        kiln_model_free(model);
    }
}

//! The bare-metal example (`examples/embedded`, built for thumbv7em-none-eabihf in CI) on the host: the same
//! int8 ConvNet4 file and the same digit give the right class, and its static arena is exactly the size the
//! runtime asks for.

use kiln_core::format::DType;
use kiln_core::{Model, Session};

const MODEL: &[u8] = include_bytes!("../examples/embedded/convnet4-int8.kiln");
const DIGIT: &[u8; 784] = include_bytes!("../examples/embedded/digit-7.bin");
const MAIN: &str = include_str!("../examples/embedded/src/main.rs");

#[test]
fn the_embedded_model_classifies_its_digit() {
    let model = Model::from_bytes(MODEL).unwrap();
    assert_eq!(model.metadata().model_name(), "convnet4");
    assert!((0..model.tensor_count()).step_by(2).all(|t| model.tensor(t).dtype == DType::Int8));

    let declared: usize = MAIN
        .lines()
        .find_map(|l| l.strip_prefix("pub const ARENA_BYTES: usize = "))
        .and_then(|v| v.trim_end_matches(';').replace('_', "").parse().ok())
        .expect("ARENA_BYTES in the example");
    assert_eq!(model.arena_size(1), declared, "update ARENA_BYTES in examples/embedded/src/main.rs");

    let mut arena = vec![0u32; declared / 4];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1).unwrap();
    let out = session.run_pixels(DIGIT, 1).unwrap();
    assert_eq!(out.class(0), 7, "{:?}", out.probabilities);
    assert!(out.probabilities[7] > 0.9);
}

//! The attack corpus: hand-made malformed `.kiln` files in `tests/attacks/`, each of which must be
//! rejected with its own specific [`FormatError`] and never a panic.
//!
//! Each file is a valid fixture with one deliberate defect. The test rebuilds every attack from its recipe
//! and checks that the committed file is byte-identical, so the corpus stays true to the writer; after a
//! deliberate format change, regenerate it with `KILN_REGENERATE_ATTACKS=1 cargo test -p kiln-pack --test attacks`.

mod common;

use std::path::PathBuf;

use kiln_core::format::{self as spec, FormatError, Model};
use kiln_core::network::{NetworkError, Shape, Window};
use kiln_pack::Quant;

fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// Offset of section `kind`'s contents.
fn section(file: &[u8], kind: u32) -> usize {
    let count = u32::from_le_bytes(file[20..24].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| spec::HEADER_LEN + i * spec::SECTION_ENTRY_LEN)
        .find(|&e| u32::from_le_bytes(file[e..e + 4].try_into().unwrap()) == kind)
        .map(|e| u64_at(file, e + 8))
        .unwrap()
}

/// Offset of the section table entry of `kind`.
fn section_entry(file: &[u8], kind: u32) -> usize {
    (0..4)
        .map(|i| spec::HEADER_LEN + i * spec::SECTION_ENTRY_LEN)
        .find(|&e| u32::from_le_bytes(file[e..e + 4].try_into().unwrap()) == kind)
        .unwrap()
}

fn tensor_entry(file: &[u8], t: usize) -> usize {
    section(file, spec::SECTION_TENSORS) + 8 + t * spec::TENSOR_ENTRY_LEN
}

fn layer_record(file: &[u8], l: usize) -> usize {
    section(file, spec::SECTION_GRAPH) + 8 + l * spec::LAYER_RECORD_LEN
}

/// Rewrites layer record `l` as operator `op` with `args`.
fn set_record(file: &mut [u8], l: usize, op: u32, args: [u32; 4]) {
    let r = layer_record(file, l);
    put_u32(file, r, op);
    for (i, a) in args.into_iter().enumerate() {
        put_u32(file, r + 4 + 4 * i, a);
    }
}

fn put_u32(file: &mut [u8], at: usize, v: u32) {
    file[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(file: &mut [u8], at: usize, v: u64) {
    file[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

type Recipe = fn() -> Vec<u8>;

fn fixture() -> Vec<u8> {
    common::packed(Quant::F32)
}

/// Edits the fixture with `edit`, then restamps the checksum so the rule under test is reached.
fn edited(edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut f = fixture();
    edit(&mut f);
    common::restamp(&mut f);
    f
}

/// `(file name, recipe, the error it must give)`.
fn attacks() -> Vec<(&'static str, Recipe, FormatError)> {
    let full = fixture().len() as u64;
    let data_at = section(&fixture(), spec::SECTION_DATA) as u64;
    let meta_len = u64_at(&fixture(), section_entry(&fixture(), spec::SECTION_META) + 16) as u64;
    vec![
        ("empty", || vec![], FormatError::Truncated { needed: 32, got: 0 }),
        ("truncated_header", || fixture()[..20].to_vec(), FormatError::Truncated { needed: 32, got: 20 }),
        (
            "truncated_tail",
            || fixture()[..fixture().len() - 100].to_vec(),
            FormatError::Truncated { needed: full, got: full - 100 },
        ),
        ("bad_magic", || edited(|f| f[0] = b'X'), FormatError::BadMagic),
        ("major_version_2", || edited(|f| f[8] = 2), FormatError::UnsupportedVersion { major: 2, minor: 0 }),
        ("unknown_flags", || edited(|f| put_u32(f, 12, 0x8000)), FormatError::UnknownFlags { flags: 0x8000 }),
        (
            "trailing_bytes",
            || edited(|f| f.extend([0; 8])),
            FormatError::TrailingBytes { declared: full, actual: full + 8 },
        ),
        (
            "wrong_checksum",
            || {
                let mut f = fixture();
                let last = f.len() - 1;
                f[last] ^= 0x40;
                f
            },
            FormatError::ChecksumMismatch { stored: 0, computed: 0 },
        ),
        (
            "section_past_end",
            || {
                edited(|f| {
                    let e = section_entry(f, spec::SECTION_DATA);
                    put_u64(f, e + 16, 1 << 40);
                })
            },
            FormatError::SectionOutOfBounds { kind: spec::SECTION_DATA, offset: data_at, len: 1 << 40 },
        ),
        (
            "section_offset_overflow",
            || {
                edited(|f| {
                    let e = section_entry(f, spec::SECTION_META);
                    put_u64(f, e + 8, u64::MAX - 7);
                })
            },
            FormatError::SectionOutOfBounds { kind: spec::SECTION_META, offset: u64::MAX - 7, len: meta_len },
        ),
        (
            "sections_overlap",
            || {
                edited(|f| {
                    let (meta, graph) = (section_entry(f, spec::SECTION_META), section_entry(f, spec::SECTION_GRAPH));
                    let meta_at = u64_at(f, meta + 8) as u64;
                    put_u64(f, graph + 8, meta_at);
                })
            },
            FormatError::SectionsOverlap { first: spec::SECTION_META, second: spec::SECTION_GRAPH },
        ),
        (
            "missing_tensor_table",
            || {
                edited(|f| {
                    let e = section_entry(f, spec::SECTION_TENSORS);
                    put_u32(f, e, 77);
                })
            },
            FormatError::MissingSection { kind: spec::SECTION_TENSORS },
        ),
        (
            "tensor_past_data",
            || {
                edited(|f| {
                    let e = tensor_entry(f, 5);
                    put_u64(f, e + 56, 1 << 32);
                })
            },
            FormatError::TensorOutOfBounds { tensor: 5, offset: 1 << 32, len: 12 },
        ),
        (
            "tensors_overlap",
            || {
                edited(|f| {
                    let first = u64_at(f, tensor_entry(f, 0) + 56) as u64;
                    let e = tensor_entry(f, 1);
                    put_u64(f, e + 56, first);
                })
            },
            FormatError::TensorsOverlap { tensor: 1 },
        ),
        (
            "misaligned_tensor",
            || {
                edited(|f| {
                    let e = tensor_entry(f, 2);
                    let at = u64_at(f, e + 56) as u64;
                    put_u64(f, e + 56, at + 4);
                })
            },
            FormatError::MisalignedTensor { tensor: 2, offset: 0 },
        ),
        (
            "dimension_overflow",
            || {
                edited(|f| {
                    let e = tensor_entry(f, 0);
                    for d in 0..4 {
                        put_u32(f, e + 40 + 4 * d, u32::MAX);
                    }
                })
            },
            FormatError::DimensionOverflow { tensor: 0 },
        ),
        (
            "unknown_dtype",
            || {
                edited(|f| {
                    let e = tensor_entry(f, 2);
                    f[e + 32] = 42;
                })
            },
            FormatError::UnknownDtype { tensor: 2, dtype: 42 },
        ),
        (
            "wrong_tensor_size",
            || {
                edited(|f| {
                    let e = tensor_entry(f, 0);
                    put_u64(f, e + 64, 140);
                })
            },
            FormatError::TensorSize { tensor: 0, region: "value", expected: 144, got: 140 },
        ),
        (
            "shapes_do_not_chain",
            || {
                edited(|f| {
                    // Layer 6 (flatten) becomes a ReLU: the dense layer then gets a 3-D input.
                    let r = layer_record(f, 6);
                    put_u32(f, r, spec::OP_RELU);
                })
            },
            FormatError::Graph(NetworkError::DenseNeedsFlatInput { layer: 7, input: Shape::new(4, 4, 8) }),
        ),
        (
            "pool_on_odd_size",
            || {
                edited(|f| {
                    // The pad grows to 2 on the bottom: 9 rows into a 2x2 pool.
                    let r = layer_record(f, 0);
                    put_u32(f, r + 8, 2);
                })
            },
            FormatError::Graph(NetworkError::PoolNeedsEvenSize { layer: 3, input: Shape::new(9, 8, 4) }),
        ),
        (
            // Since 1.2: layer 5 (a ReLU on [4, 4, 8]) becomes a 7x7 max pool, larger than its input.
            "pool_window_larger_than_input",
            || edited(|f| set_record(f, 5, spec::OP_POOL, [1, Window::valid(7, 7, 1).to_bits(), 0, 0])),
            FormatError::Graph(NetworkError::WindowTooLarge { layer: 5, input: Shape::new(4, 4, 8), kernel: (7, 7) }),
        ),
        (
            "pool_window_zero",
            || edited(|f| set_record(f, 3, spec::OP_POOL, [1, 0, 0, 0])),
            FormatError::Graph(NetworkError::BadWindow {
                layer: 3,
                reason: "the window must be 1 to 7 pixels on each side",
            }),
        ),
        (
            "pool_pad_not_below_window",
            || {
                let window = Window { top: 2, ..Window::valid(2, 2, 2) };
                edited(|f| set_record(f, 3, spec::OP_POOL, [2, window.to_bits(), 0, 0]))
            },
            FormatError::Graph(NetworkError::BadWindow {
                layer: 3,
                reason: "each pad must be smaller than the window side it pads",
            }),
        ),
        (
            "pool_unknown_kind",
            || edited(|f| set_record(f, 3, spec::OP_POOL, [9, Window::valid(2, 2, 2).to_bits(), 0, 0])),
            FormatError::BadLayerArgs { layer: 3 },
        ),
        (
            // Layer 1's 3x3 weights under a 5x5 window.
            "conv_weights_do_not_fit_the_window",
            || edited(|f| set_record(f, 1, spec::OP_CONV, [4, 0, 1, Window::same(5, 5, 1, 8, 8).to_bits()])),
            FormatError::TensorShapeMismatch { layer: 1, tensor: 0 },
        ),
        (
            "conv_stride_eight",
            || {
                let window = Window { sh: 8, ..Window::SAME_3X3 };
                edited(|f| set_record(f, 1, spec::OP_CONV, [4, 0, 1, window.to_bits()]))
            },
            FormatError::Graph(NetworkError::BadWindow { layer: 1, reason: "the stride must be 1 to 7" }),
        ),
        (
            "activation_unknown_kind",
            || edited(|f| set_record(f, 2, spec::OP_ACTIVATION, [7, 0, 0, 0])),
            FormatError::BadLayerArgs { layer: 2 },
        ),
        (
            "clip_min_above_max",
            || edited(|f| set_record(f, 2, spec::OP_ACTIVATION, [3, 6.0f32.to_bits(), 0.0f32.to_bits(), 0])),
            FormatError::Graph(NetworkError::BadArgument {
                layer: 2,
                reason: "clip needs bounds with min <= max (and no NaN)",
            }),
        ),
        (
            "dropout_rate_one",
            || edited(|f| set_record(f, 2, spec::OP_DROPOUT, [1.0f32.to_bits(), 0, 0, 0])),
            FormatError::Graph(NetworkError::BadArgument { layer: 2, reason: "dropout's rate must be in [0, 1)" }),
        ),
        (
            "unknown_op",
            || {
                edited(|f| {
                    let r = layer_record(f, 2);
                    put_u32(f, r, 99);
                })
            },
            FormatError::UnknownOp { layer: 2, op: 99 },
        ),
        (
            "tensor_index_out_of_range",
            || {
                edited(|f| {
                    let r = layer_record(f, 4);
                    put_u32(f, r + 8, 1000);
                })
            },
            FormatError::TensorIndex { layer: 4, tensor: 1000 },
        ),
        (
            "weights_of_the_wrong_layer",
            || {
                edited(|f| {
                    // conv2 points at conv1's [3,3,1,4] weights.
                    let r = layer_record(f, 4);
                    put_u32(f, r + 8, 0);
                })
            },
            FormatError::TensorShapeMismatch { layer: 4, tensor: 0 },
        ),
        (
            "nan_scale",
            || {
                let mut f = common::packed(Quant::Int8);
                let e = tensor_entry(&f, 2);
                let scales = u64_at(&f, e + 72);
                f[scales + 12..scales + 16].copy_from_slice(&f32::NAN.to_le_bytes());
                common::restamp(&mut f);
                f
            },
            FormatError::BadScale { tensor: 2, index: 3 },
        ),
        (
            "class_count_mismatch",
            || {
                edited(|f| {
                    let m = section(f, spec::SECTION_META);
                    put_u32(f, m + 12, 2);
                })
            },
            FormatError::ClassCountMismatch { graph: 3, metadata: 2 },
        ),
        (
            "too_many_layers",
            || {
                edited(|f| {
                    let g = section(f, spec::SECTION_GRAPH);
                    put_u32(f, g, 1_000_000);
                })
            },
            FormatError::BadLayerCount { count: 1_000_000 },
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/attacks")
}

/// Errors whose numbers depend on the bytes (checksums, a shifted offset) are compared by variant only.
fn same_error(got: &FormatError, want: &FormatError) -> bool {
    match (got, want) {
        (FormatError::ChecksumMismatch { .. }, FormatError::ChecksumMismatch { .. }) => true,
        (FormatError::MisalignedTensor { tensor: a, offset }, FormatError::MisalignedTensor { tensor: b, .. }) => {
            a == b && offset % 256 == 4
        }
        _ => got == want,
    }
}

#[test]
fn every_attack_gets_its_specific_error() {
    let regenerate = std::env::var_os("KILN_REGENERATE_ATTACKS").is_some();
    if regenerate {
        std::fs::create_dir_all(corpus_dir()).unwrap();
    }
    let attacks = attacks();
    for (name, recipe, want) in &attacks {
        let path = corpus_dir().join(format!("{name}.kiln"));
        let bytes = recipe();
        if regenerate {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(committed == bytes, "{}: differs from its recipe; regenerate the corpus", path.display());
        let got = Model::from_bytes(&committed).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(same_error(&got, want), "{name}: got {got:?}, want {want:?}");
        // Every error explains itself in words.
        assert!(!got.to_string().is_empty());
    }
    // No stray files: every file in the corpus has a recipe and an expected error.
    let files = std::fs::read_dir(corpus_dir()).unwrap().count();
    assert_eq!(files, attacks.len());
}

#[test]
fn the_fixture_itself_is_valid() {
    for quant in [Quant::F32, Quant::F16, Quant::Int8, Quant::Int4 { block: 32 }, Quant::Int2 { block: 32 }] {
        Model::from_bytes(&common::packed(quant)).unwrap();
    }
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let file = common::packed(Quant::Int4 { block: 32 });
    for len in 0..file.len() {
        assert!(Model::from_bytes(&file[..len]).is_err(), "accepted a file cut at {len}");
    }
}

#[test]
fn every_single_byte_change_is_rejected_or_harmless() {
    // With the checksum restamped, a flipped byte either breaks a rule (an error) or lands in a value,
    // a scale or a name (still valid); either way no panic, and a valid result still runs.
    let file = common::packed(Quant::Int8);
    for at in 0..file.len() {
        let mut f = file.clone();
        f[at] ^= 0xff;
        common::restamp(&mut f);
        if let Ok(model) = Model::from_bytes(&f) {
            let n = 1;
            let len = kiln_core::runtime::scratch_len(&model, n);
            if len < 1 << 20 {
                let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
                let input = vec![0.5; model.input_shape().len()];
                let _ = kiln_core::runtime::forward(&model, &input, n, &mut a, &mut b);
            }
        }
    }
}

#[test]
fn bad_activation_scales_are_rejected() {
    let file = common::packed_static(Quant::Int8);
    let model = Model::from_bytes(&file).unwrap();
    assert!(model.has_static_activations());
    // The section is the one of kind 5 in the section table.
    let entry = (0..5).map(|i| 32 + 24 * i).find(|&e| file[e] == 5).unwrap();
    let at = u64::from_le_bytes(file[entry + 8..entry + 16].try_into().unwrap()) as usize;
    let cases: [(usize, [u8; 4], &str); 4] = [
        (at + 8, f32::NAN.to_le_bytes(), "a scale is not finite and positive"),
        (at + 8, (-1.0f32).to_le_bytes(), "a scale is not finite and positive"),
        (at + 12, 256u32.to_le_bytes(), "a zero point is above 255"),
        (at, 2u32.to_le_bytes(), "the entry count is not the number of conv and dense layers"),
    ];
    for (offset, bytes, reason) in cases {
        let mut f = file.clone();
        f[offset..offset + 4].copy_from_slice(&bytes);
        common::restamp(&mut f);
        assert_eq!(Model::from_bytes(&f).unwrap_err(), FormatError::BadActivationScales { reason }, "{reason}");
    }
    // Static scales on a layer that does not run on integers.
    let mut meta = common::metadata("f32");
    meta.activations = model
        .plan()
        .steps()
        .filter_map(|s| s.params)
        .map(|_| kiln_core::kernels::ActivationScale { scale: 0.1, zero: 0 })
        .collect();
    let params: Vec<_> = common::params(1)
        .chunks(2)
        .map(|p| {
            let t = |x: &(String, Vec<usize>, Vec<f32>)| kiln_pack::pack_tensor(&x.0, &x.1, &x.2, Quant::F32).unwrap();
            (t(&p[0]), t(&p[1]))
        })
        .collect();
    let error = kiln_pack::write(&common::layers(), &params, &meta).unwrap_err();
    assert!(error.to_string().contains("static activations need int8, int4 or int2 weights"), "{error}");
}

#[test]
fn fuzz_seeds_are_current() {
    // The fuzz target (crates/kiln-core/fuzz) starts from one valid file per weight type.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kiln-core/fuzz/seeds/from_bytes");
    let regenerate = std::env::var_os("KILN_REGENERATE_ATTACKS").is_some();
    if regenerate {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for quant in [Quant::F32, Quant::F16, Quant::Int8, Quant::Int4 { block: 32 }, Quant::Int2 { block: 16 }] {
        let path = dir.join(format!("{}.kiln", quant.to_string().replace('/', "_")));
        let bytes = common::packed(quant);
        if regenerate {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(committed == bytes, "{}: differs from the writer's output; regenerate", path.display());
        Model::from_bytes(&committed).unwrap();
    }
    // And the static-activation files the session tests run.
    for quant in [Quant::Int8, Quant::Int4 { block: 32 }] {
        let path = dir.join(format!("{}_static.kiln", quant.to_string().replace('/', "_")));
        let bytes = common::packed_static(quant);
        if regenerate {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(committed == bytes, "{}: differs from the writer's output; regenerate", path.display());
        assert!(Model::from_bytes(&committed).unwrap().has_static_activations());
    }
}

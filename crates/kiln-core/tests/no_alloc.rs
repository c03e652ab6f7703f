//! The runtime never allocates: a counting global allocator sees zero allocations, on any thread, across
//! `Model::from_bytes`, `Session::new` and 100 runs, on one thread and on worker threads. (kiln-core does
//! not link `alloc` at all; this checks the whole call path, and that `Workers` hands out parts without
//! allocating.)
// A counting global allocator needs `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_core::format::Model;
use kiln_core::parallel::Workers;
use kiln_core::{Parallel, Serial, Session};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
// Global, not per thread: the worker threads' allocations count too. (This binary has one test.)
static COUNTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Dynamic activations (f32 between layers) and static ones (8-bit throughout), a real ConvNet4 whose
/// layers are large enough to be cut into parts on two threads, and the layers past the series': LeNet-5
/// (5x5 convs, tanh, average pools) and a network of strided and 1x1 convs, leaky ReLU, clip, scale-shift,
/// sigmoid, SAME max and average pools and global average pooling (both from Keras through tf2onnx).
static MODELS: [&[u8]; 5] = [
    include_bytes!("../fuzz/seeds/from_bytes/int4.kiln"),
    include_bytes!("../fuzz/seeds/from_bytes/int8_static.kiln"),
    include_bytes!("../examples/embedded/convnet4-int8.kiln"),
    include_bytes!("../fuzz/seeds/from_bytes/lenet5_int8.kiln"),
    include_bytes!("../fuzz/seeds/from_bytes/layers_int4.kiln"),
];

#[test]
fn no_allocation_in_from_bytes_session_new_and_100_runs() {
    let workers = Workers::new(2).expect("threads start");
    for model in MODELS {
        runs_without_allocating(model, &Serial);
        runs_without_allocating(model, &workers);
    }
}

fn runs_without_allocating(file: &[u8], parallel: &dyn Parallel) {
    // Everything the caller owns is set up first: the arena and the inputs.
    let mut arena = vec![0u32; 256 * 1024];
    let len = Model::from_bytes(file).expect("valid model").input_shape().len();
    let inputs: Vec<Vec<u8>> = (0..100).map(|k| (0..len).map(|i| ((i * 31 + k * 7) % 256) as u8).collect()).collect();
    let mut first_logits = [0.0f32; 100];

    COUNTING.store(true, Ordering::SeqCst);
    let model = Model::from_bytes(file).expect("valid model");
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1).expect("arena is large enough");
    session.set_parallel(parallel);
    for (input, logit) in inputs.iter().zip(&mut first_logits) {
        *logit = session.run_pixels(input, 1).expect("runs").logits[0];
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "the runtime allocated");
    // The runs did real work: different images, different logits.
    assert!(first_logits.iter().any(|&l| l != first_logits[0]), "{first_logits:?}");
}

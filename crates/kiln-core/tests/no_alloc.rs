//! The runtime never allocates: a counting global allocator sees zero allocations across `Model::from_bytes`,
//! `Session::new` and 100 runs. (kiln-core does not link `alloc` at all; this checks the whole call path.)
// A counting global allocator needs `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_core::Session;
use kiln_core::format::Model;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
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
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Dynamic activations (f32 between layers) and static ones (8-bit throughout).
static MODELS: [&[u8]; 2] =
    [include_bytes!("../fuzz/seeds/from_bytes/int4.kiln"), include_bytes!("../fuzz/seeds/from_bytes/int8_static.kiln")];

#[test]
fn no_allocation_in_from_bytes_session_new_and_100_runs() {
    for model in MODELS {
        runs_without_allocating(model);
    }
}

fn runs_without_allocating(file: &[u8]) {
    // Everything the caller owns is set up first: the arena and the inputs.
    let mut arena = vec![0u32; 64 * 1024];
    let inputs: Vec<Vec<u8>> = (0..100).map(|k| (0..36).map(|i| ((i * 31 + k * 7) % 256) as u8).collect()).collect();
    let mut first_logits = [0.0f32; 100];

    COUNTING.with(|c| c.set(true));
    let model = Model::from_bytes(file).expect("valid model");
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1).expect("arena is large enough");
    for (input, logit) in inputs.iter().zip(&mut first_logits) {
        *logit = session.run_pixels(input, 1).expect("runs").logits[0];
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "the runtime allocated");
    // The runs did real work: different images, different logits.
    assert!(first_logits.iter().any(|&l| l != first_logits[0]), "{first_logits:?}");
}

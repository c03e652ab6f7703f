//! Classifies one MNIST digit on a bare-metal Cortex-M7 with an int8 ConvNet4: the model is in flash via
//! `include_bytes!`, the arena is a static buffer, and nothing is ever allocated (there is no heap).
//!
//! The class ends up in `RESULT` (read it with a debugger; `kiln-core/tests/embedded.rs` runs the same
//! model and digit on the host and checks the answer).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::entry;
use kiln_core::{Model, Session};

/// The model, 256-byte aligned like the format's tensors (so the alignment promise holds in flash too).
#[repr(C, align(256))]
struct Aligned<T>(T);

const MODEL_BYTES: &[u8] = include_bytes!("../convnet4-int8.kiln");
static MODEL: Aligned<[u8; MODEL_BYTES.len()]> = Aligned(*include_bytes!("../convnet4-int8.kiln"));
/// Test digit #0 of the MNIST test set (a 7), 28x28 pixels.
static DIGIT: [u8; 784] = *include_bytes!("../digit-7.bin");

/// `Model::arena_size(1)` for this model (int8 weights, static activations): two ping-pong buffers of
/// 28x28x64 8-bit levels, 8 KiB of integer accumulators and scales, 10 logits and 10 probabilities.
/// (The host test checks this number against the runtime.)
pub const ARENA_BYTES: usize = 108_632;

#[repr(C, align(4))]
struct Arena([u8; ARENA_BYTES]);
static mut ARENA: Arena = Arena([0; ARENA_BYTES]);

/// The predicted class, or 0xFFFF_FFFF if something failed.
static RESULT: AtomicU32 = AtomicU32::new(u32::MAX);

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once, before anything else could touch ARENA, and this is its only use.
    let arena: &'static mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let class = Model::from_bytes(&MODEL.0)
        .ok()
        .and_then(|model| {
            let model: &Model<'_> = &model;
            let mut session = Session::new(model, arena, 1).ok()?;
            session.run_pixels(&DIGIT, 1).ok().map(|out| out.class(0) as u32)
        })
        .unwrap_or(u32::MAX);
    RESULT.store(class, Ordering::Relaxed);
    loop {
        cortex_m_rt_wait();
    }
}

/// Idles forever (a real program would sleep with `wfi`).
fn cortex_m_rt_wait() {
    core::hint::spin_loop();
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

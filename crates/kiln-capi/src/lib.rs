//! Kiln's C API. Opaque handles, status codes, and a per-thread last-error message.
//!
//! Lifetimes the caller must keep (C cannot be checked): the model bytes outlive their `KilnModel`; the
//! model and the arena outlive every `KilnSession` made from them. Opening a model and creating a session
//! each allocate one small handle; running allocates nothing. Every function checks its pointers and sizes
//! and returns a status instead of crashing; a Rust panic (a bug) is caught and reported as `KILN_STATUS_PANIC`.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_core::parallel::Workers;
use kiln_core::{Model, Output, RunError, Serial, Session, SessionError};

/// What a call did. `KILN_STATUS_OK` is 0; every other value comes with a message from `kiln_last_error`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KilnStatus {
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// The model bytes failed validation (the message names the rule).
    InvalidModel = 2,
    /// The arena is smaller than `kiln_arena_size` says.
    ArenaTooSmall = 3,
    /// The arena does not start at a multiple of 4 bytes.
    ArenaMisaligned = 4,
    /// The batch is 0 or larger than the session's maximum, or `max_batch` is 0.
    BadBatch = 5,
    /// The input has the wrong length, or holds NaN or infinity.
    BadInput = 6,
    /// The output buffer is shorter than batch × classes.
    BufferTooSmall = 7,
    /// A bug inside Kiln; the message says where.
    Panic = 8,
    /// The thread count is 0, or the system could not start the threads.
    BadThreads = 9,
}

/// An opened, validated model. Borrows the bytes given to `kiln_model_open`.
#[derive(Debug)]
pub struct KilnModel {
    model: Model<'static>,
}

/// A model bound to an arena.
#[derive(Debug)]
pub struct KilnSession {
    // Declared before `workers`, so dropped first: the session borrows them.
    session: Session<'static>,
    classes: usize,
    /// The threads `kiln_session_set_threads` started (boxed: the session holds their address).
    workers: Option<Box<Workers>>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(status: KilnStatus, message: impl std::fmt::Display) -> KilnStatus {
    let text = CString::new(message.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    status
}

fn guarded(f: impl FnOnce() -> KilnStatus) -> KilnStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => {
            if status == KilnStatus::Ok {
                LAST_ERROR.with(|e| *e.borrow_mut() = CString::default());
            }
            status
        }
        Err(panic) => {
            let what =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            fail(KilnStatus::Panic, format!("internal error: {}", what.unwrap_or_else(|| "panic".into())))
        }
    }
}

/// The message for the last failed call on this thread ("" after a success). Valid until the next call.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Validates `len` bytes at `bytes` as a `.kiln` model and returns a handle in `*out`. The bytes must stay
/// valid and unchanged until `kiln_model_free`.
///
/// # Safety
/// `bytes` must point to `len` readable bytes; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_open(bytes: *const u8, len: usize, out: *mut *mut KilnModel) -> KilnStatus {
    guarded(|| {
        if bytes.is_null() || out.is_null() {
            return fail(KilnStatus::NullPointer, "kiln_model_open: bytes and out must not be NULL");
        }
        // SAFETY: the caller promises `len` readable bytes that outlive the model.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(bytes, len) };
        match Model::from_bytes(bytes) {
            Ok(model) => {
                // SAFETY: `out` is non-null and writable per the contract.
                unsafe { *out = Box::into_raw(Box::new(KilnModel { model })) };
                KilnStatus::Ok
            }
            Err(e) => fail(KilnStatus::InvalidModel, format!("invalid model: {e}")),
        }
    })
}

/// Frees a model handle (NULL is ignored). Free its sessions first.
///
/// # Safety
/// `model` must come from `kiln_model_open` and not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_free(model: *mut KilnModel) {
    if !model.is_null() {
        // SAFETY: created by Box::into_raw in kiln_model_open.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Exact arena bytes a session running up to `max_batch` images needs; 0 if `model` is NULL.
///
/// # Safety
/// `model` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_arena_size(model: *const KilnModel, max_batch: usize) -> usize {
    // SAFETY: NULL or a live handle per the contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.model.arena_size(max_batch))
}

/// Values per input image (height × width × channels); 0 if `model` is NULL.
///
/// # Safety
/// `model` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_input_len(model: *const KilnModel) -> usize {
    // SAFETY: NULL or a live handle per the contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.model.input_shape().len())
}

/// Number of classes (outputs per image); 0 if `model` is NULL.
///
/// # Safety
/// `model` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_classes(model: *const KilnModel) -> usize {
    // SAFETY: NULL or a live handle per the contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.model.metadata().classes)
}

/// Binds `model` to the caller's `arena` (`len` bytes, 4-byte aligned, at least `kiln_arena_size`) for
/// batches of up to `max_batch` images.
///
/// # Safety
/// `model` must be a live handle; `arena` must point to `len` writable bytes used by nothing else while
/// the session lives; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_new(
    model: *const KilnModel,
    arena: *mut u8,
    len: usize,
    max_batch: usize,
    out: *mut *mut KilnSession,
) -> KilnStatus {
    guarded(|| {
        if model.is_null() || arena.is_null() || out.is_null() {
            return fail(KilnStatus::NullPointer, "kiln_session_new: model, arena and out must not be NULL");
        }
        // SAFETY: a live handle that outlives the session, per the contract.
        let model: &'static KilnModel = unsafe { &*model };
        // SAFETY: `len` writable bytes, exclusively the session's, per the contract.
        let arena: &'static mut [u8] = unsafe { std::slice::from_raw_parts_mut(arena, len) };
        match Session::new(&model.model, arena, max_batch) {
            Ok(session) => {
                let classes = model.model.metadata().classes;
                // SAFETY: `out` is non-null and writable per the contract.
                unsafe { *out = Box::into_raw(Box::new(KilnSession { session, classes, workers: None })) };
                KilnStatus::Ok
            }
            Err(e @ SessionError::ArenaTooSmall { .. }) => fail(KilnStatus::ArenaTooSmall, e),
            Err(e @ SessionError::ArenaMisaligned { .. }) => fail(KilnStatus::ArenaMisaligned, e),
            Err(e @ SessionError::ZeroBatch) => fail(KilnStatus::BadBatch, e),
        }
    })
}

/// Frees a session handle (NULL is ignored). The arena is the caller's again.
///
/// # Safety
/// `session` must come from `kiln_session_new` and not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_free(session: *mut KilnSession) {
    if !session.is_null() {
        // SAFETY: created by Box::into_raw in kiln_session_new.
        drop(unsafe { Box::from_raw(session) });
    }
}

/// Runs each of the session's integer layers on `threads` threads (1: on the calling thread only). Starts
/// `threads - 1` worker threads, which wait for work between runs; results are the same bits on any
/// number of threads. Running still allocates nothing.
///
/// # Safety
/// `session` must be a live handle, not running on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_set_threads(session: *mut KilnSession, threads: usize) -> KilnStatus {
    guarded(|| {
        if session.is_null() {
            return fail(KilnStatus::NullPointer, "kiln_session_set_threads: session must not be NULL");
        }
        if threads == 0 {
            return fail(KilnStatus::BadThreads, "kiln_session_set_threads: threads must be at least 1");
        }
        // SAFETY: a live handle, per the contract.
        let handle = unsafe { &mut *session };
        // The old threads stop only after the session no longer refers to them.
        handle.session.set_parallel(&Serial);
        handle.workers = None;
        if threads == 1 {
            return KilnStatus::Ok;
        }
        let workers = match Workers::new(threads) {
            Ok(workers) => Box::new(workers),
            Err(e) => {
                return fail(
                    KilnStatus::BadThreads,
                    format!("kiln_session_set_threads: starting {threads} threads: {e}"),
                );
            }
        };
        // SAFETY: the box lives in the handle until the session stops referring to it (above, or when
        // the handle is freed: `session` is dropped before `workers`), and its address does not move.
        let parallel: &'static Workers = unsafe { &*(&*workers as *const Workers) };
        handle.session.set_parallel(parallel);
        handle.workers = Some(workers);
        KilnStatus::Ok
    })
}

fn run_status(e: RunError) -> KilnStatus {
    match e {
        RunError::BatchSize { .. } => fail(KilnStatus::BadBatch, e),
        RunError::InputLength { .. } | RunError::NonFiniteInput { .. } => fail(KilnStatus::BadInput, e),
        RunError::Forward(_) => fail(KilnStatus::Panic, e),
    }
}

/// The shared body of `kiln_run` and `kiln_run_pixels`: checks, runs, copies the probabilities out.
///
/// # Safety
/// As for `kiln_run`, with `input` pointing to `input_len` values of `T`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_with<T>(
    name: &str,
    session: *mut KilnSession,
    input: *const T,
    input_len: usize,
    batch: usize,
    probabilities: *mut f32,
    probabilities_len: usize,
    run: for<'s> fn(&'s mut Session<'static>, &[T], usize) -> Result<Output<'s>, RunError>,
) -> KilnStatus {
    guarded(|| {
        if session.is_null() || input.is_null() || probabilities.is_null() {
            return fail(KilnStatus::NullPointer, format!("{name}: session, input and probabilities must not be NULL"));
        }
        // SAFETY: pointers and lengths per the contract.
        let (session, input, out) = unsafe {
            (
                &mut *session,
                std::slice::from_raw_parts(input, input_len),
                std::slice::from_raw_parts_mut(probabilities, probabilities_len),
            )
        };
        let needed = batch.saturating_mul(session.classes);
        if out.len() < needed {
            let message = format!("{name}: probabilities holds {} values, {batch} images need {needed}", out.len());
            return fail(KilnStatus::BufferTooSmall, message);
        }
        match run(&mut session.session, input, batch) {
            Ok(result) => {
                out[..result.probabilities.len()].copy_from_slice(result.probabilities);
                KilnStatus::Ok
            }
            Err(e) => run_status(e),
        }
    })
}

/// Classifies `batch` images of normalised f32 values (`input_len` = batch × `kiln_input_len`) and writes
/// batch × classes probabilities to `probabilities` (`probabilities_len` values available).
///
/// # Safety
/// `session` must be a live handle; `input` must point to `input_len` floats; `probabilities` to
/// `probabilities_len` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_run(
    session: *mut KilnSession,
    input: *const f32,
    input_len: usize,
    batch: usize,
    probabilities: *mut f32,
    probabilities_len: usize,
) -> KilnStatus {
    // SAFETY: the caller's contract is run_with's.
    unsafe { run_with("kiln_run", session, input, input_len, batch, probabilities, probabilities_len, Session::run) }
}

/// As `kiln_run`, for 8-bit pixels normalised the way the model's metadata says.
///
/// # Safety
/// As for `kiln_run`, with `pixels` pointing to `pixels_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_run_pixels(
    session: *mut KilnSession,
    pixels: *const u8,
    pixels_len: usize,
    batch: usize,
    probabilities: *mut f32,
    probabilities_len: usize,
) -> KilnStatus {
    // SAFETY: the caller's contract is run_with's.
    unsafe {
        run_with(
            "kiln_run_pixels",
            session,
            pixels,
            pixels_len,
            batch,
            probabilities,
            probabilities_len,
            Session::run_pixels,
        )
    }
}

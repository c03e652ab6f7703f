//! Splitting one layer across threads.
//!
//! The core has no threads of its own (it is `no_std`): a [`Session`](crate::session::Session) is handed
//! something that implements [`Parallel`], and each conv or dense layer on the integer path asks it to run
//! the layer's parts (ranges of output pixels or of output channels, see `kernels::quantized`) at once.
//! [`Serial`] runs them one after another; with the `std` feature, [`Workers`] keeps threads waiting for
//! parts, so that a run hands out work without spawning a thread or allocating.

// `Workers` hands a borrowed job to threads that outlive it, which needs an erased lifetime (see
// `Workers::run` for why that is sound); the workspace otherwise denies `unsafe_code`.
#![allow(unsafe_code)]

/// Runs the parts of one piece of work at once.
pub trait Parallel: Sync {
    /// How many parts it runs at once (1: one after another).
    fn threads(&self) -> usize;

    /// Calls `job(i)` for every `i` in `0..parts`, each exactly once, and returns when all have returned.
    fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync));
}

/// One part after another, on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }

    fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync)) {
        for i in 0..parts {
            job(i);
        }
    }
}

#[cfg(feature = "std")]
pub use workers::Workers;

#[cfg(feature = "std")]
mod workers {
    use super::Parallel;
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    /// How long an idle worker spins before it sleeps: long enough to bridge the gap between two layers
    /// (and between two runs in a loop), short enough not to burn a core that has nothing to do.
    const SPIN: Duration = Duration::from_micros(200);

    /// The job of the current round, as a pointer whose lifetime [`Workers::run`] vouches for.
    type Job = *const (dyn Fn(usize) + Sync + 'static);

    /// State shared by the caller of [`Workers::run`] and the workers.
    struct Shared {
        /// `round << 32 | parts << 16 | next part`: a claim is a compare-and-swap on the whole word, so a
        /// worker can never claim a part of a round other than the one whose job it reads.
        ticket: AtomicU64,
        /// Parts of the current round that have returned.
        done: AtomicUsize,
        /// Written only between rounds (see [`Workers::run`]).
        job: UnsafeCell<Option<Job>>,
        /// Whether a part of the current round panicked.
        panicked: AtomicBool,
        stop: AtomicBool,
        /// Workers that have started their loop (whatever a new thread allocates is behind it).
        started: AtomicUsize,
    }

    // SAFETY: `job` is written only by the thread inside `Workers::run` (behind its lock) while no part is
    // claimable, and read only by a thread holding a claimed part of the round it was written for.
    unsafe impl Sync for Shared {}
    // SAFETY: the job pointer is only dereferenced under the rules above; the rest is atomics.
    unsafe impl Send for Shared {}

    const ROUND_SHIFT: u32 = 32;
    const PARTS_SHIFT: u32 = 16;
    const MASK: u64 = 0xffff;

    impl Shared {
        /// Claims and runs parts of `round` until none is left (or the ticket has moved on to another round).
        fn work(&self, round: u64) {
            loop {
                let ticket = self.ticket.load(Ordering::Acquire);
                let (parts, next) = ((ticket >> PARTS_SHIFT) & MASK, ticket & MASK);
                if ticket >> ROUND_SHIFT != round || next >= parts {
                    return;
                }
                if self.ticket.compare_exchange_weak(ticket, ticket + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    continue;
                }
                // SAFETY: this thread holds part `next` of `round`, so `run` has not returned and the job it
                // published for `round` is alive and unchanged.
                let job = unsafe { &*(*self.job.get()).expect("a round always has a job") };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(next as usize))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// A fixed set of threads that take parts of each [`Parallel::run`]; the calling thread takes parts as
    /// well. Creating it spawns the threads; runs neither spawn nor allocate. Dropping it stops them.
    pub struct Workers {
        shared: Arc<Shared>,
        handles: Vec<JoinHandle<()>>,
        /// One round at a time; holds the number of the last round.
        round: Mutex<u64>,
    }

    impl core::fmt::Debug for Workers {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Workers").field("threads", &self.threads()).finish()
        }
    }

    impl Workers {
        /// `threads` threads in all, counting the caller's: `threads − 1` are spawned (none for 0 or 1).
        pub fn new(threads: usize) -> std::io::Result<Workers> {
            let shared = Arc::new(Shared {
                ticket: AtomicU64::new(0),
                done: AtomicUsize::new(0),
                job: UnsafeCell::new(None),
                panicked: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                started: AtomicUsize::new(0),
            });
            let mut workers = Workers { shared, handles: Vec::new(), round: Mutex::new(0) };
            for i in 1..threads.clamp(1, MASK as usize) {
                let shared = Arc::clone(&workers.shared);
                let handle = thread::Builder::new().name(std::format!("kiln-worker-{i}")).spawn(move || {
                    let mut seen = 0;
                    shared.started.fetch_add(1, Ordering::Release);
                    loop {
                        let idle = Instant::now();
                        let round = loop {
                            if shared.stop.load(Ordering::Acquire) {
                                return;
                            }
                            let round = shared.ticket.load(Ordering::Acquire) >> ROUND_SHIFT;
                            if round != seen {
                                break round;
                            }
                            if idle.elapsed() < SPIN {
                                core::hint::spin_loop();
                            } else {
                                // Woken by `run` (or `drop`); the timeout only bounds a missed wake-up.
                                thread::park_timeout(Duration::from_millis(50));
                            }
                        };
                        seen = round;
                        shared.work(round);
                    }
                })?;
                workers.handles.push(handle);
            }
            // Returns once every worker runs its loop, so that no thread start-up happens during a run.
            while workers.shared.started.load(Ordering::Acquire) < workers.handles.len() {
                thread::yield_now();
            }
            Ok(workers)
        }
    }

    impl Parallel for Workers {
        fn threads(&self) -> usize {
            self.handles.len() + 1
        }

        fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync)) {
            if self.handles.is_empty() || parts <= 1 || parts > MASK as usize {
                return super::Serial.run(parts, job);
            }
            let mut round = self.round.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *round = (*round + 1) & 0xffff_ffff;
            if *round == 0 {
                *round = 1; // 0 is the workers' "seen nothing yet"
            }
            let shared = &*self.shared;
            // SAFETY: no part is claimable (the previous round's are all done, and the ticket still names
            // that round), so no thread reads `job` now. The lifetime is erased only until this function
            // returns, which it does after every part of this round has returned.
            unsafe {
                let erased: Job = core::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(job);
                *shared.job.get() = Some(erased);
            }
            shared.done.store(0, Ordering::Relaxed);
            shared.panicked.store(false, Ordering::Relaxed);
            shared.ticket.store(*round << ROUND_SHIFT | (parts as u64) << PARTS_SHIFT, Ordering::Release);
            for handle in &self.handles {
                handle.thread().unpark();
            }
            shared.work(*round);
            while shared.done.load(Ordering::Acquire) < parts {
                core::hint::spin_loop();
            }
            // SAFETY: every part has returned; nothing reads the job until the next round publishes its own.
            unsafe { *shared.job.get() = None };
            if shared.panicked.load(Ordering::Relaxed) {
                drop(round);
                panic!("a part run on a Kiln worker thread panicked");
            }
        }
    }

    impl Drop for Workers {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::Release);
            for handle in self.handles.drain(..) {
                handle.thread().unpark();
                let _ = handle.join();
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::atomic::AtomicU32;

        #[test]
        fn every_part_runs_exactly_once_in_every_round() {
            let workers = Workers::new(3).unwrap();
            assert_eq!(workers.threads(), 3);
            for parts in [0usize, 1, 2, 3, 7, 64] {
                for _ in 0..200 {
                    let counts: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
                    workers.run(parts, &|i| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{parts} parts");
                }
            }
        }

        #[test]
        fn a_panicking_part_panics_the_caller_and_the_workers_survive() {
            let workers = Workers::new(2).unwrap();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                workers.run(2, &|i| assert!(i != 1, "part 1 fails"));
            }));
            assert!(result.is_err());
            let done = AtomicU32::new(0);
            workers.run(2, &|_| {
                done.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(done.load(Ordering::Relaxed), 2);
        }
    }
}

//! Seeded random streams. Every random choice comes from ChaCha8 keyed by the run's seed, with one
//! stream per purpose and epoch, so a run is reproducible bit for bit and can be resumed mid-way.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is for. The discriminant is part of the stream id: never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Init = 1,
    Shuffle = 2,
    Augment = 3,
    Dropout = 4,
}

/// The stream for `purpose` in `epoch` (0 for once-per-run purposes such as initialisation).
pub fn stream(seed: u64, purpose: Purpose, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((purpose as u64) << 48) ^ epoch);
    rng
}

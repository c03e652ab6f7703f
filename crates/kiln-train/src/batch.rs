//! Turning dataset images into network input: bytes to floats as the network's normalisation says, with
//! optional random shifts.

use rand::Rng;

use crate::data::Dataset;
use crate::network::Normalization;

/// Fills `out` (`[indices.len(), rows, cols, 1]`) with the images at `indices`, each pixel normalised by
/// `norm`, and `labels` with their labels. With `shift > 0` and an `rng`, each image moves by a random whole
/// number of pixels in `-shift..=shift` on each axis, filling with background (a zero pixel, normalised).
pub fn fill(
    data: &Dataset,
    norm: Normalization,
    indices: &[usize],
    shift: usize,
    rng: Option<&mut dyn rand::RngCore>,
    out: &mut [f32],
    labels: &mut [u8],
) {
    let (rows, cols) = (data.rows, data.cols);
    let size = rows * cols;
    let mut rng = rng;
    for (k, &index) in indices.iter().enumerate() {
        labels[k] = data.labels[index];
        let image = data.image(index);
        let dst = &mut out[k * size..][..size];
        let (dy, dx) = match rng.as_deref_mut() {
            Some(rng) if shift > 0 => {
                let s = shift as i64;
                (rng.random_range(-s..=s), rng.random_range(-s..=s))
            }
            _ => (0, 0),
        };
        if dy == 0 && dx == 0 {
            for (d, &p) in dst.iter_mut().zip(image) {
                *d = norm.apply(p);
            }
            continue;
        }
        dst.fill(norm.apply(0));
        for y in 0..rows as i64 {
            let sy = y - dy;
            if sy < 0 || sy >= rows as i64 {
                continue;
            }
            for x in 0..cols as i64 {
                let sx = x - dx;
                if sx >= 0 && sx < cols as i64 {
                    dst[(y * cols as i64 + x) as usize] = norm.apply(image[(sy * cols as i64 + sx) as usize]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scales_and_shifts() {
        let data = Dataset { rows: 3, cols: 3, pixels: vec![0, 0, 0, 0, 255, 0, 0, 0, 0], labels: vec![4] };
        let mut out = [0.0; 9];
        let mut labels = [0];
        fill(&data, Normalization::UNIT_RANGE, &[0], 0, None, &mut out, &mut labels);
        assert_eq!((out[4], labels[0]), (1.0, 4));
        // With shifts the single bright pixel lands somewhere in the 3x3 frame, and only once.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            fill(&data, Normalization::UNIT_RANGE, &[0], 1, Some(&mut rng), &mut out, &mut labels);
            assert_eq!(out.iter().filter(|&&v| v == 1.0).count(), 1);
            assert_eq!(out.iter().sum::<f32>(), 1.0);
        }
    }

    #[test]
    fn normalises_as_the_network_says() {
        let data = Dataset { rows: 2, cols: 2, pixels: vec![0, 255, 51, 0], labels: vec![1] };
        let norm = Normalization { mean: 0.5, std: 0.25 };
        let (mut out, mut labels) = ([0.0; 4], [0]);
        fill(&data, norm, &[0], 0, None, &mut out, &mut labels);
        assert_eq!(out, [-2.0, 2.0, (0.2 - 0.5) / 0.25, -2.0]);
        // Shifted-in background is a normalised zero pixel, not 0.0.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            fill(&data, norm, &[0], 1, Some(&mut rng), &mut out, &mut labels);
            assert!(out.iter().all(|&v| v != 0.0), "{out:?}");
        }
    }
}

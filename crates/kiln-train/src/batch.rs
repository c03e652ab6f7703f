//! Turning dataset images into network input: bytes to [0,1] floats, with optional random shifts.

use rand::Rng;

use crate::data::Dataset;

/// Fills `out` (`[indices.len(), rows, cols, 1]`) with the images at `indices`, scaled to [0, 1], and
/// `labels` with their labels. With `shift > 0` and an `rng`, each image moves by a random whole number
/// of pixels in `-shift..=shift` on each axis, filling with zero (background).
pub fn fill(
    data: &Dataset,
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
                *d = p as f32 / 255.0;
            }
            continue;
        }
        dst.fill(0.0);
        for y in 0..rows as i64 {
            let sy = y - dy;
            if sy < 0 || sy >= rows as i64 {
                continue;
            }
            for x in 0..cols as i64 {
                let sx = x - dx;
                if sx >= 0 && sx < cols as i64 {
                    dst[(y * cols as i64 + x) as usize] = image[(sy * cols as i64 + sx) as usize] as f32 / 255.0;
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
        fill(&data, &[0], 0, None, &mut out, &mut labels);
        assert_eq!((out[4], labels[0]), (1.0, 4));
        // With shifts the single bright pixel lands somewhere in the 3x3 frame, and only once.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            fill(&data, &[0], 1, Some(&mut rng), &mut out, &mut labels);
            assert_eq!(out.iter().filter(|&&v| v == 1.0).count(), 1);
            assert_eq!(out.iter().sum::<f32>(), 1.0);
        }
    }
}

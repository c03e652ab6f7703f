//! MNIST-style preprocessing: any grayscale image to the 28x28 digit the networks were trained on.
//!
//! The steps of the MNIST paper's normalisation: make the ink bright on a dark background (invert when
//! the background is light), crop to the ink's bounding box, scale it (area-averaged, so anti-aliased) to
//! fit 20x20 keeping its aspect ratio, and place it in 28x28 so its centre of mass is at the centre.
//! No allocation: `kiln predict`, the C API and the browser demo all use this one function.

use core::fmt;

/// Side of the output image.
pub const SIDE: usize = 28;
/// Side of the box the digit is scaled to fit.
pub const BOX: usize = 20;

/// Why an image could not be turned into a digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreprocessError {
    /// The pixel count is not `width × height`, or a side is zero.
    Size { width: usize, height: usize, len: usize },
    /// Nothing stands out from the background: a blank image.
    Blank,
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PreprocessError::Size { width, height, len } => {
                write!(f, "{len} pixels do not make a {width}x{height} image")
            }
            PreprocessError::Blank => write!(f, "the image is blank: no ink stands out from the background"),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// Turns `gray` (`height × width` 8-bit pixels, row-major, any polarity) into a 28x28 MNIST-style digit.
pub fn mnist_style(
    gray: &[u8],
    width: usize,
    height: usize,
    out: &mut [u8; SIDE * SIDE],
) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 || width.checked_mul(height) != Some(gray.len()) {
        return Err(PreprocessError::Size { width, height, len: gray.len() });
    }
    // Background: the mean of the border. Light background means dark ink: invert.
    let border_sum: u64 =
        (0..width).flat_map(|x| [gray[x], gray[(height - 1) * width + x]]).map(u64::from).sum::<u64>()
            + (0..height).flat_map(|y| [gray[y * width], gray[y * width + width - 1]]).map(u64::from).sum::<u64>();
    let invert = border_sum > 127 * 2 * (width + height) as u64;
    let ink = |i: usize| if invert { 255 - gray[i] } else { gray[i] };

    // Ink: anything above a quarter of the brightest value (and clearly above black).
    let brightest = (0..gray.len()).map(ink).max().unwrap_or(0);
    let threshold = (brightest / 4).max(16);
    if brightest < 32 {
        return Err(PreprocessError::Blank);
    }
    let (mut top, mut bottom, mut left, mut right) = (height, 0, width, 0);
    for y in 0..height {
        for x in 0..width {
            if ink(y * width + x) > threshold {
                (top, bottom, left, right) = (top.min(y), bottom.max(y), left.min(x), right.max(x));
            }
        }
    }
    let (box_h, box_w) = (bottom + 1 - top, right + 1 - left);

    // Scale the bounding box to fit 20x20, averaging over each target pixel's area in the source.
    let scale = BOX as f32 / box_h.max(box_w) as f32;
    let target_h = round(box_h as f32 * scale).clamp(1, BOX);
    let target_w = round(box_w as f32 * scale).clamp(1, BOX);
    let mut digit = [[0.0f32; BOX]; BOX];
    for (ty, row) in digit.iter_mut().enumerate().take(target_h) {
        let (y0, y1) = (top as f32 + ty as f32 / scale, top as f32 + (ty + 1) as f32 / scale);
        for (tx, value) in row.iter_mut().enumerate().take(target_w) {
            let (x0, x1) = (left as f32 + tx as f32 / scale, left as f32 + (tx + 1) as f32 / scale);
            *value = area_mean(|x, y| ink(y * width + x) as f32, (x0, x1), (y0, y1), width, height);
        }
    }

    // Centre of mass, in pixel-centre coordinates of the 20x20 box.
    let (mut mass, mut sum_y, mut sum_x) = (0.0f32, 0.0f32, 0.0f32);
    for (y, row) in digit.iter().enumerate() {
        for (x, &v) in row.iter().enumerate() {
            mass += v;
            sum_y += v * (y as f32 + 0.5);
            sum_x += v * (x as f32 + 0.5);
        }
    }
    let centre = SIDE as f32 / 2.0;
    let place = |com: f32, size: usize| round((centre - com).max(0.0)).min(SIDE - size);
    let (oy, ox) = (place(sum_y / mass, target_h), place(sum_x / mass, target_w));

    out.fill(0);
    for y in 0..target_h {
        for x in 0..target_w {
            out[(oy + y) * SIDE + ox + x] = round(digit[y][x].clamp(0.0, 255.0)) as u8;
        }
    }
    Ok(())
}

// `core` has no float rounding functions; these cover the non-negative values used here.

/// Nearest integer, halves up, of `x >= 0`.
fn round(x: f32) -> usize {
    (x + 0.5) as usize
}

/// Smallest integer not below `x >= 0`.
fn ceil(x: f32) -> usize {
    let whole = x as usize;
    if (whole as f32) < x { whole + 1 } else { whole }
}

/// The mean of `value` over the rectangle `[x0,x1) × [y0,y1)` of a `width × height` pixel grid, each pixel
/// weighted by how much of it the rectangle covers.
fn area_mean(
    value: impl Fn(usize, usize) -> f32,
    (x0, x1): (f32, f32),
    (y0, y1): (f32, f32),
    width: usize,
    height: usize,
) -> f32 {
    let (mut total, mut weight) = (0.0f32, 0.0f32);
    let ys = (y0 as usize)..ceil(y1).min(height);
    for y in ys {
        let wy = (y1.min(y as f32 + 1.0) - y0.max(y as f32)).max(0.0);
        for x in (x0 as usize)..ceil(x1).min(width) {
            let w = wy * (x1.min(x as f32 + 1.0) - x0.max(x as f32)).max(0.0);
            total += w * value(x, y);
            weight += w;
        }
    }
    if weight > 0.0 { total / weight } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dark_bar_on_white_becomes_a_centred_bright_bar() {
        // 40x60 white image with a black vertical bar 4 wide, 30 tall, off-centre.
        let (w, h) = (40, 60);
        let mut img = [255u8; 40 * 60];
        for y in 5..35 {
            for x in 2..6 {
                img[y * w + x] = 0;
            }
        }
        let mut out = [0u8; SIDE * SIDE];
        mnist_style(&img, w, h, &mut out).unwrap();
        // Scaled by 20/30: 20 rows tall, about 3 columns wide, centred: rows 4..24, columns 13..16.
        let inked_row = |y: usize| out[y * SIDE..][..SIDE].iter().any(|&v| v > 0);
        let inked_col = |x: usize| (0..SIDE).any(|y| out[y * SIDE + x] > 0);
        assert_eq!(((0..SIDE).find(|&y| inked_row(y)), (0..SIDE).rfind(|&y| inked_row(y))), (Some(4), Some(23)));
        assert_eq!(((0..SIDE).find(|&x| inked_col(x)), (0..SIDE).rfind(|&x| inked_col(x))), (Some(13), Some(15)));
        assert_eq!(out[14 * SIDE + 14], 255);
    }

    #[test]
    fn an_mnist_style_digit_is_a_fixed_point() {
        // A 20x20 bright square already centred in 28x28 stays where it is.
        let mut img = [0u8; SIDE * SIDE];
        for y in 4..24 {
            for x in 4..24 {
                img[y * SIDE + x] = 200;
            }
        }
        let mut out = [0u8; SIDE * SIDE];
        mnist_style(&img, SIDE, SIDE, &mut out).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn bad_images_are_errors() {
        let mut out = [0u8; SIDE * SIDE];
        assert_eq!(mnist_style(&[0; 10], 3, 3, &mut out), Err(PreprocessError::Size { width: 3, height: 3, len: 10 }));
        assert_eq!(mnist_style(&[], 0, 0, &mut out), Err(PreprocessError::Size { width: 0, height: 0, len: 0 }));
        assert_eq!(mnist_style(&[255; 100], 10, 10, &mut out), Err(PreprocessError::Blank));
        assert_eq!(mnist_style(&[7; 100], 10, 10, &mut out), Err(PreprocessError::Blank));
    }
}

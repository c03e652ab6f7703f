//! Classify a picture of a digit from Rust with kiln-core alone: open a `.kiln` model, size its arena once,
//! turn the PNG or JPEG into an MNIST-style 28×28 digit, run, print the ten probabilities.
//!
//! ```sh
//! cargo run --release -p kiln --example classify -- [MODEL.kiln] [IMAGE]
//! ```
//!
//! Without arguments it classifies `data/examples/seven.png` (made by `tools/make_example_digit.py`) with
//! the ConvNet4 that the bare-metal example ships.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_core::preprocess::{self, SIDE};
use kiln_core::{Model, Session};

/// The class and the ten probabilities `model` gives the digit in `image`.
fn classify(model: &Path, image: &Path) -> Result<(usize, Vec<f32>)> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let model = Model::from_bytes(&bytes).with_context(|| format!("{} is not a valid model", model.display()))?;
    let shape = model.input_shape();
    if (shape.h, shape.w, shape.c) != (SIDE, SIDE, 1) {
        bail!("the model takes {shape} inputs, not 28x28 grayscale digits");
    }
    let gray = image::open(image).with_context(|| format!("reading {}", image.display()))?.to_luma8();
    let mut digit = [0u8; SIDE * SIDE];
    preprocess::mnist_style(gray.as_raw(), gray.width() as usize, gray.height() as usize, &mut digit)
        .with_context(|| format!("{}", image.display()))?;
    // The only allocation: the arena, whose size the model states before anything runs.
    let mut arena = vec![0u32; model.arena_size(1).div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1)?;
    let out = session.run_pixels(&digit, 1)?;
    Ok((out.class(0), out.probabilities.to_vec()))
}

fn repo_file(path: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root).join(path)
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let model = args.next().unwrap_or_else(|| repo_file("crates/kiln-core/examples/embedded/convnet4-int8.kiln"));
    let image = args.next().unwrap_or_else(|| repo_file("data/examples/seven.png"));
    let (class, probabilities) = classify(&model, &image)?;
    println!("{}: {class} ({:.1} %)", image.display(), 100.0 * probabilities[class]);
    for (c, p) in probabilities.iter().enumerate() {
        println!("  {c}  {:<40} {:.4}", "#".repeat((p * 40.0).round() as usize), p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_convnet4_reads_the_example_seven() {
        let model = repo_file("crates/kiln-core/examples/embedded/convnet4-int8.kiln");
        let (class, probabilities) = classify(&model, &repo_file("data/examples/seven.png")).unwrap();
        assert_eq!(class, 7, "probabilities {probabilities:?}");
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn a_file_that_is_not_an_image_is_named() {
        let model = repo_file("crates/kiln-core/examples/embedded/convnet4-int8.kiln");
        let error = classify(&model, &model).unwrap_err();
        assert!(format!("{error:#}").contains("convnet4-int8.kiln"), "{error:#}");
    }
}

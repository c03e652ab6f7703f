//! `kiln predict`: classify PNG/JPEG digits with a `.kiln` model, preprocessed the MNIST way.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_core::preprocess::{self, SIDE};
use kiln_core::{Model, Session};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A `.kiln` model file.
    pub model: PathBuf,
    /// PNG or JPEG images of single digits: any size, any colours, dark-on-light or light-on-dark.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Also draw the 28x28 image the network sees, in text.
    #[arg(long)]
    pub preview: bool,
    /// The images are already 28x28 network inputs (ink bright on dark, as the preprocessing makes them):
    /// feed them as they are. For comparing with another runtime on the same input.
    #[arg(long)]
    pub raw: bool,
}

/// Reads an image file and turns it into the 28x28 MNIST-style digit.
pub fn load_digit(path: &std::path::Path) -> Result<[u8; SIDE * SIDE]> {
    let image = image::ImageReader::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a PNG or JPEG image this build can decode", path.display()))?;
    let gray = image.to_luma8();
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    let mut digit = [0u8; SIDE * SIDE];
    preprocess::mnist_style(gray.as_raw(), width, height, &mut digit).with_context(|| format!("{}", path.display()))?;
    Ok(digit)
}

/// Reads a 28x28 grayscale image as the network's input, unchanged.
fn load_raw(path: &std::path::Path) -> Result<[u8; SIDE * SIDE]> {
    let image = image::open(path).with_context(|| format!("reading {}", path.display()))?.to_luma8();
    if (image.width() as usize, image.height() as usize) != (SIDE, SIDE) {
        bail!("{}: --raw takes 28x28 images, this one is {}x{}", path.display(), image.width(), image.height());
    }
    let mut digit = [0u8; SIDE * SIDE];
    digit.copy_from_slice(image.as_raw());
    Ok(digit)
}

pub fn cmd_predict(args: PredictArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model =
        Model::from_bytes(&bytes).with_context(|| format!("{} is not a valid model file", args.model.display()))?;
    let shape = model.input_shape();
    if (shape.h, shape.w, shape.c) != (SIDE, SIDE, 1) {
        bail!("{}: the model takes {shape} inputs; kiln predict feeds 28x28 grayscale digits", args.model.display());
    }
    let mut arena = vec![0u32; model.arena_size(1).div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1)?;
    let meta = *model.metadata();
    let mut failures = 0;
    for path in &args.images {
        let digit = match if args.raw { load_raw(path) } else { load_digit(path) } {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e:#}");
                failures += 1;
                continue;
            }
        };
        let out = session.run_pixels(&digit, 1)?;
        let class = out.class(0);
        let probabilities: Vec<String> =
            out.probabilities.iter().enumerate().map(|(c, p)| format!("{}:{:.3}", meta.label(c), p)).collect();
        println!(
            "{}: {} ({:.1} %)   {}",
            path.display(),
            meta.label(class),
            100.0 * out.probabilities[class],
            probabilities.join(" ")
        );
        if args.preview {
            for row in digit.chunks(SIDE) {
                let line: String = row.iter().map(|&v| [' ', '.', ':', '+', '#'][(v as usize * 5) / 256]).collect();
                println!("  |{line}|");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be read", args.images.len());
    }
    Ok(())
}

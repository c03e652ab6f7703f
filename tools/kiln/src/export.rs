//! `kiln export`: a checkpoint (Kiln's, TensorFlow's) or a `.kiln` file as an ONNX model. The work is
//! kiln-import's (`onnx_export`); this reads the source and writes the file atomically.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::convert::open_source;
use crate::ui::thousands;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A `.kiln` model file (quantized weights are exported dequantized), or anything `kiln convert` takes:
    /// a Kiln or TensorFlow checkpoint, its directory, an ONNX file.
    pub source: PathBuf,
    /// Where to write the ONNX file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

pub fn cmd_export(args: ExportArgs) -> Result<()> {
    let is_kiln = args.source.extension().is_some_and(|e| e == "kiln");
    let (model, what) = if is_kiln {
        let bytes = std::fs::read(&args.source).with_context(|| format!("reading {}", args.source.display()))?;
        let file = kiln_core::Model::from_bytes(&bytes)
            .with_context(|| format!("{} is not a valid model file", args.source.display()))?;
        let quantization = file.metadata().quantization().to_string();
        let model = kiln_import::onnx_export::model_from_kiln(&file)
            .with_context(|| format!("{}: its network", args.source.display()))?;
        (model, format!("{quantization} weights, exported as f32"))
    } else {
        (open_source(&args.source)?.model, "f32 weights".to_string())
    };
    let bytes = kiln_import::onnx_export::export(&model);
    kiln_train::fs::write_atomic(&args.output, &bytes)?;
    let normalization = model.network.normalization;
    println!(
        "Exported {} ({what}) to {}: {} bytes, ONNX opset {}; input \"input\" [n, {}, {}, {}] float32, normalised as \
         (pixel / 255 - {}) / {}; output \"logits\" [n, {}]",
        model.network.name,
        args.output.display(),
        thousands(bytes.len()),
        kiln_import::onnx_export::OPSET,
        model.network.input.h,
        model.network.input.w,
        model.network.input.c,
        normalization.mean,
        normalization.std,
        model.classes()
    );
    Ok(())
}

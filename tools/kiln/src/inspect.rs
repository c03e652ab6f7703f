//! `kiln inspect`: what a `.kiln` model file holds: layers, tensors, metadata and the memory the runtime
//! needs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kiln_core::format::{DType, Model as Packed};
use kiln_core::runtime;

use crate::ui::thousands;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A `.kiln` model file.
    pub model: PathBuf,
    /// Also give the runtime's memory need at this batch size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub batch: u32,
}

pub fn cmd_inspect(args: InspectArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model =
        Packed::from_bytes(&bytes).with_context(|| format!("{} is not a valid model file", args.model.display()))?;
    let meta = model.metadata();
    let (major, minor) = model.version();
    println!(
        "{}: Kiln model format {major}.{minor}, {} bytes, checksum OK",
        args.model.display(),
        thousands(bytes.len())
    );
    println!("model:        {} ({})", meta.model_name(), meta.quantization());
    println!("input:        {} pixels, normalised as (pixel/255 - {}) / {}", meta.input, meta.mean, meta.std);
    let labels: Vec<&str> = (0..meta.classes).map(|c| meta.label(c)).collect();
    println!("classes:      {} [{}]", meta.classes, labels.join(", "));
    let hash: String = meta.source_sha256.iter().map(|b| format!("{b:02x}")).collect();
    println!("source:       {} at step {}, sha256 {hash}", meta.source_file(), meta.source_step);
    match meta.test_accuracy() {
        Some(a) => println!(
            "test acc:     {:.2} % ({} of {}, measured when packed)",
            a * 100.0,
            meta.test_correct,
            meta.test_examples
        ),
        None => println!("test acc:     not measured"),
    }
    println!("packed by:    kiln {}", meta.kiln_version());
    println!();
    println!(
        "{:>3}  {:<14} {:<14} {:<16} {:<8} {:>12} {:>6}",
        "#", "layer", "output", "weights", "dtype", "bytes", "bits"
    );
    let mut names: HashMap<usize, &str> = HashMap::new();
    let (mut total_weights, mut total_bytes) = (0usize, 0usize);
    for step in model.plan().steps() {
        let (i, layer, shape) = (step.index, step.layer, step.output);
        let (dims, dtype, bytes, bits) = match model.binding(i) {
            Some(b) => {
                let (w, bias) = (model.tensor(b.weights), model.tensor(b.bias));
                names.insert(b.weights, w.name);
                let bytes = w.stored_bytes() + bias.stored_bytes();
                total_weights += w.len() + bias.len();
                total_bytes += bytes;
                let dtype = if w.dtype.is_blocked() {
                    format!("{}/{}", w.dtype.name(), w.block)
                } else {
                    w.dtype.name().into()
                };
                let bits = format!("{:.2}", 8.0 * w.stored_bytes() as f64 / w.len() as f64);
                (format!("{:?}", &w.dims[..w.rank]), dtype, thousands(bytes), bits)
            }
            None => (String::new(), String::new(), String::new(), String::new()),
        };
        println!("{i:>3}  {:<14} {:<14} {dims:<16} {dtype:<8} {bytes:>12} {bits:>6}", layer.kind(), shape.to_string());
    }
    println!(
        "parameters:   {} in {} bytes of tensors ({:.2} bits each, biases f32), {} bytes of header, tables and padding",
        thousands(total_weights),
        thousands(total_bytes),
        8.0 * total_bytes as f64 / total_weights as f64,
        thousands(bytes.len() - total_bytes)
    );
    println!();
    println!(
        "{:<24} {:<8} {:<18} {:>10} {:>12} {:>10}",
        "tensor", "dtype", "shape", "offset", "value bytes", "scale bytes"
    );
    for i in 0..model.tensor_count() {
        let t = model.tensor(i);
        let dtype = if t.dtype == DType::F32 || !t.dtype.is_blocked() {
            t.dtype.name().to_string()
        } else {
            format!("{}/{}", t.dtype.name(), t.block)
        };
        println!(
            "{:<24} {dtype:<8} {:<18} {:>10} {:>12} {:>10}",
            t.name,
            format!("{:?}", &t.dims[..t.rank]),
            t.data_offset,
            thousands(t.data.len()),
            thousands(t.scales.len())
        );
    }
    println!();
    let batch = args.batch as usize;
    for n in [1, batch] {
        // The exact figure Session::new asks for (Model::arena_size), so a user can size a static arena.
        let working = if model.has_static_activations() {
            let layout = runtime::StaticLayout::new(&model, n);
            format!(
                "two ping-pong buffers of {} 8-bit levels each, {} bytes of integer scratch and {} f32 logits",
                thousands(layout.buffer),
                thousands(layout.second - layout.buffer - layout.logits),
                thousands(layout.logits / 4)
            )
        } else {
            format!(
                "two ping-pong buffers of {} f32 each, {} f32 of integer scratch",
                thousands(runtime::activation_len(&model, n)),
                thousands(runtime::scratch_len(&model, n) - runtime::activation_len(&model, n))
            )
        };
        println!(
            "session arena at batch {n:>4}: {} bytes ({working}, plus {} f32 of probabilities; the weights are \
             read in place)",
            thousands(model.arena_size(n)),
            thousands(n * model.metadata().classes)
        );
    }
    Ok(())
}

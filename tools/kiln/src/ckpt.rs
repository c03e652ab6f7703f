//! `kiln ckpt ls` and `kiln ckpt inspect`: what a checkpoint directory keeps and what a checkpoint holds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use kiln_train::checkpoint;
use kiln_train::tensor_file::Checkpoint;

#[derive(Subcommand, Debug)]
pub enum CkptCommand {
    /// The checkpoints a directory keeps: step, time, size and test accuracy if measured.
    Ls {
        /// A checkpoint directory (written by `kiln train --ckpt-dir`).
        dir: PathBuf,
    },
    /// A checkpoint's tensors (name, dtype, shape) and metadata; for a TensorFlow checkpoint, the op chain
    /// found in its `.meta` graph and the network it maps to.
    Inspect {
        /// A checkpoint or weights file, or a checkpoint directory (its latest): Kiln's or TensorFlow's.
        file: PathBuf,
    },
}

pub fn cmd_ckpt(command: CkptCommand) -> Result<()> {
    match command {
        CkptCommand::Ls { dir } => cmd_ckpt_ls(&dir),
        CkptCommand::Inspect { file } => cmd_ckpt_inspect(&file),
    }
}

fn cmd_ckpt_ls(dir: &Path) -> Result<()> {
    let state = checkpoint::read_state(dir)?;
    println!("{:>8}  {:<20}  {:>12}  {:>9}  file", "step", "saved (UTC)", "bytes", "test acc");
    for e in &state.checkpoints {
        let size =
            std::fs::metadata(dir.join(&e.file)).map(|m| m.len().to_string()).unwrap_or_else(|_| "missing".into());
        let accuracy = e.test_accuracy.map_or("-".to_string(), |a| format!("{:.2} %", a * 100.0));
        let latest = if state.latest.as_ref() == Some(&e.file) { "  (latest)" } else { "" };
        println!("{:>8}  {:<20}  {size:>12}  {accuracy:>9}  {}{latest}", e.step, utc(e.time), e.file);
    }
    Ok(())
}

fn cmd_ckpt_inspect(file: &Path) -> Result<()> {
    if kiln_import::tf::is_tf_checkpoint(file) {
        return inspect_tensorflow(file);
    }
    let path = resolve_checkpoint(file)?;
    let ckpt = Checkpoint::open(&path)?;
    println!("{} (step {}, every CRC-32 checked)", path.display(), ckpt.step());
    println!("{:<28} {:<6} shape", "tensor", "dtype");
    for name in ckpt.names() {
        let (dims, _) = ckpt.tensor(name).expect("listed names exist");
        println!("{name:<28} {:<6} {dims:?}", "F32");
    }
    let mut keys: Vec<_> = ckpt.metadata().iter().collect();
    keys.sort();
    println!("metadata:");
    for (key, value) in keys {
        println!("  {key} = {value}");
    }
    Ok(())
}

fn inspect_tensorflow(file: &Path) -> Result<()> {
    use kiln_import::tf::{TfCheckpoint, is_slot};
    let ckpt = TfCheckpoint::open(file)?;
    println!(
        "{} (TensorFlow Saver checkpoint, step {}, {} data shard{}, every CRC32C checked)",
        ckpt.prefix.display(),
        ckpt.step,
        ckpt.bundle.shard_count(),
        if ckpt.bundle.shard_count() == 1 { "" } else { "s" }
    );
    println!("{:<36} {:<9} {:<20} {:>12}", "tensor", "dtype", "shape", "bytes");
    for e in ckpt.bundle.entries() {
        let note = if is_slot(&e.name) { "  (optimizer state or bookkeeping: dropped on conversion)" } else { "" };
        println!("{:<36} {:<9} {:<20} {:>12}{note}", e.name, e.dtype, format!("{:?}", e.shape), e.bytes);
    }
    match &ckpt.graph {
        None => println!("no .meta graph: `kiln convert --model fc3|convnet4|vgg` names the network"),
        Some(Err(e)) => println!("the .meta graph does not map onto Kiln's layers: {e}"),
        Some(Ok(walked)) => {
            println!("op chain from the input to the logits ({} ops):", walked.chain.len());
            for op in &walked.chain {
                println!("  {op}");
            }
            let network = &walked.network;
            println!("network: input {}, layers:", network.input);
            for (layer, name) in network.layers.iter().zip(network.layer_names()) {
                println!("  {name:<10} {layer:?}");
            }
            for (k, (weights, bias)) in walked.params.iter().enumerate() {
                println!("  parameters {k}: {weights}, {}", bias.as_deref().unwrap_or("(no bias: zeros)"));
            }
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the Unix epoch (civil-from-days, proleptic Gregorian).
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A checkpoint file from a file or directory argument, warning on stderr when the state file is gone.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let (path, warning) = checkpoint::resolve(path)?;
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(path)
}

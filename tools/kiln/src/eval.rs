//! `kiln eval`: the test accuracy of saved weights, a checkpoint, or a packed `.kiln` model (run by
//! kiln-core's runtime, with one kernel build or every build this CPU has).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_core::Isa;
use kiln_core::format::Model as Packed;
use kiln_pack::eval::{EvalOptions, matching, predict_all};
use kiln_train::{eval, tensor_file, train};

use crate::ckpt::resolve_checkpoint;
use crate::data::{DataArgs, load_data, set_threads, threads};
use crate::ui::{ImagesBar, print_mistakes};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A weights file (`kiln train --save`), a checkpoint, a checkpoint directory (its latest), or a packed
    /// `.kiln` model (run by kiln-core's runtime).
    weights: PathBuf,
    /// List this many of the test digits the network gets wrong.
    #[arg(long, default_value_t = 10)]
    show_mistakes: usize,
    /// For `.kiln` models, the kernel build: best, portable, avx2+fma, avxvnni, avx512, avx512vnni, or `all` (every build this
    /// CPU has, which must predict the same classes).
    #[arg(long, value_parser = ["best", "portable", "avx2+fma", "avxvnni", "avx512", "avx512vnni", "all"])]
    isa: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

pub fn cmd_eval(args: EvalArgs) -> Result<()> {
    set_threads(&args.data)?;
    if is_packed_model(&args.weights) {
        return eval_packed(&args.weights, &args.data, args.isa.as_deref().unwrap_or("best"), args.show_mistakes);
    }
    if args.isa.is_some() {
        bail!("--isa applies to packed .kiln models; {} is a checkpoint", args.weights.display());
    }
    let path = resolve_checkpoint(&args.weights)?;
    let (model, step) = tensor_file::load_weights(&path)?; // checks every tensor's CRC-32
    let data = load_data(&args.data)?;
    train::check_data(&model, &data.test)?;
    let started = Instant::now();
    let mut ws = kiln_train::model::Workspace::new();
    let evaluation = eval::evaluate(&model, &mut ws, &data.test);
    println!("Model: {} from {} (step {step})", model.network.name, path.display());
    println!("Test cost: {:.4}", evaluation.cost);
    println!("Test accuracy: {:.2} %", evaluation.accuracy * 100.0);
    println!("Evaluated {} images in {:.1} s", evaluation.total, started.elapsed().as_secs_f64());
    print_mistakes(&evaluation.predictions, &data.test.labels, args.show_mistakes);
    Ok(())
}

/// A `.kiln` file: by its extension, or by its magic bytes.
fn is_packed_model(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    path.extension().is_some_and(|e| e == "kiln")
        || (path.is_file()
            && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
            && magic == kiln_core::format::MAGIC)
}

/// `kiln eval model.kiln`: the packed model's test accuracy through kiln-core's runtime, with one kernel
/// build or every build this CPU has (`--isa all`), which must all predict the same classes.
fn eval_packed(path: &Path, data_args: &DataArgs, isa: &str, show_mistakes: usize) -> Result<()> {
    let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = Packed::from_bytes(&file).with_context(|| format!("{} is not a valid model file", path.display()))?;
    let data = load_data(data_args)?;
    let isas: Vec<Isa> = match isa {
        "all" => Isa::ALL.into_iter().filter(|isa| isa.is_available()).collect(),
        name => vec![crate::bench_infer::isa(name)?],
    };
    let meta = *model.metadata();
    println!("Model: {} ({}) from {}", meta.model_name(), meta.quantization(), path.display());
    let bar = ImagesBar::default();
    let mut options = EvalOptions { threads: threads(data_args), isa: Isa::Portable, progress: &bar };
    let mut first: Option<(Isa, Vec<u8>)> = None;
    for isa in isas {
        let started = Instant::now();
        options.isa = isa;
        let predicted = predict_all(&file, (&data.test).into(), &options)?;
        let correct = matching(&predicted, &data.test.labels);
        println!(
            "kernels {:<9} test accuracy {:.2} % ({correct} of {}) in {:.1} s",
            isa.name(),
            100.0 * correct as f64 / predicted.len() as f64,
            predicted.len(),
            started.elapsed().as_secs_f64()
        );
        match &first {
            None => first = Some((isa, predicted)),
            Some((reference, expected)) => {
                let differ = predicted.len() - matching(&predicted, expected);
                if differ > 0 {
                    bail!(
                        "the {} kernels predict {differ} digits differently from the {} kernels",
                        isa.name(),
                        reference.name()
                    );
                }
                println!("  the same {} predictions as the {} kernels", predicted.len(), reference.name());
            }
        }
    }
    let (_, predicted) = first.context("no kernel build to run")?;
    if let Some(packed) = meta.test_accuracy() {
        let now = matching(&predicted, &data.test.labels) as f64 / predicted.len() as f64;
        println!(
            "Measured when packed: {:.2} % ({} of {}){}",
            100.0 * packed,
            meta.test_correct,
            meta.test_examples,
            if (now - packed).abs() < 1e-12 { ", the same" } else { "" }
        );
    }
    print_mistakes(&predicted, &data.test.labels, show_mistakes);
    Ok(())
}

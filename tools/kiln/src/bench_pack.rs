//! `kiln bench pack`: the size/accuracy frontier: pack a checkpoint several ways and test each through
//! kiln-core's runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kiln_pack::convert::{self, Provenance};
use kiln_pack::eval::{EvalOptions, matching, predict_all, stored_weights};
use kiln_pack::{Quant, QuantPlan};

use crate::convert::{open_source, plan_error};
use crate::data::{DataArgs, load_data, threads};
use crate::ui::{ImagesBar, thousands};

#[derive(Args, Debug)]
pub struct BenchPackArgs {
    /// A checkpoint or weights file, or a checkpoint directory (its latest checkpoint).
    pub checkpoint: PathBuf,
    /// Packings to measure, each `BASE[,SCOPE=TYPE...]` as for convert's --quant and --layer, e.g.
    /// `int4,dense1=int2`.
    #[arg(required = true)]
    pub plans: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn cmd_bench_pack(args: BenchPackArgs) -> Result<()> {
    let source = open_source(&args.checkpoint)?;
    let layers = source.layers();
    let plans: Vec<(QuantPlan, &String)> = args
        .plans
        .iter()
        .map(|p| {
            let plan = QuantPlan::parse(&layers, p).map_err(plan_error).with_context(|| format!("plan \"{p}\""))?;
            Ok((plan, p))
        })
        .collect::<Result<_>>()?;
    let data = load_data(&args.data)?;
    let bar = ImagesBar::default();
    let options = EvalOptions { progress: &bar, ..EvalOptions::new(threads(&args.data)) };
    let model = &source.model;
    // Every packing carries the same metadata (no source file, hash or quantization named), so the sizes
    // differ by the weights alone.
    let provenance = Provenance { step: source.step, ..Provenance::default() };
    let meta = convert::metadata(&model.network, &provenance, "")?;
    let f32_file = convert::pack(model, &QuantPlan::uniform(Quant::F32, layers.len()).quants, &meta)?;
    let (weights, _) = stored_weights(&f32_file)?;
    let reference = predict_all(&f32_file, (&data.test).into(), &options)?;
    let total = data.test.len();
    let pct = |n: usize| 100.0 * n as f64 / total as f64;
    let base = pct(matching(&reference, &data.test.labels));
    println!(
        "{} (step {}), {} bytes; {total} test images through kiln-core",
        source.path.display(),
        source.step,
        thousands(source.len)
    );
    println!(
        "{:<40} {:>12} {:>7} {:>6} {:>9} {:>7} {:>9}",
        "packing", "bytes", "ratio", "bits", "test acc", "change", "agreement"
    );
    let row = |name: &str, bytes: usize, stored: usize, predicted: &[u8]| {
        let acc = pct(matching(predicted, &data.test.labels));
        println!(
            "{name:<40} {:>12} {:>6.1}x {:>6.2} {:>7.2} % {:>+7.2} {:>7.2} %",
            thousands(bytes),
            source.len as f64 / bytes as f64,
            8.0 * stored as f64 / weights as f64,
            acc,
            acc - base,
            pct(matching(&reference, predicted))
        );
    };
    row("f32", f32_file.len(), stored_weights(&f32_file)?.1, &reference);
    for (plan, description) in &plans {
        let file = convert::pack(model, &plan.quants, &meta)?;
        let predicted = predict_all(&file, (&data.test).into(), &options)?;
        row(description, file.len(), stored_weights(&file)?.1, &predicted);
    }
    Ok(())
}

//! `kiln bench train`: steady-state training throughput, and optionally the time each layer takes.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use kiln_train::config::{self, InitChoice, Length, OptimizerConfig, OptimizerKind, Schedule, TrainConfig};
use kiln_train::model::Model;
use kiln_train::presets;
use kiln_train::train::Trainer;

use crate::data::{DataArgs, load_data, set_threads};
use crate::train::{MAX_BATCH, open_device};
use crate::ui::thousands;

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    #[arg(long, default_value = "vgg", value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    model: String,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH))]
    batch: u32,
    /// Timed updates.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Untimed updates first (buffers are allocated and caches warmed).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    #[arg(long, default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(config::OPTIMIZER_NAMES))]
    optimizer: String,
    /// Also print the time each layer takes, forward and backward (CPU only).
    #[arg(long)]
    profile: bool,
    /// Where the steps run: gpu, cpu, or auto (a hardware GPU if there is one).
    #[arg(long, default_value = "cpu", value_parser = ["auto", "gpu", "cpu"])]
    device: String,
    #[command(flatten)]
    data: DataArgs,
}

pub fn cmd_bench_train(args: BenchTrainArgs) -> Result<()> {
    set_threads(&args.data)?;
    let network = presets::by_name(&args.model).expect("clap checked the name");
    let kind: OptimizerKind = args.optimizer.parse().map_err(anyhow::Error::msg)?;
    let data = load_data(&args.data)?;
    let flops = network.forward_flops()? as f64;
    let mut model = Model::new(network, InitChoice::Default, 1)?;
    let config = TrainConfig {
        length: Length::Steps(args.warmup + args.steps),
        batch: args.batch as usize,
        lr: kind.default_lr(),
        optimizer: OptimizerConfig::new(kind),
        schedule: Schedule::Constant,
        seed: 1,
        augment_shift: 0,
    };
    let device = open_device(&args.device)?;
    let mut trainer = match &device {
        Some((gpu, kernels)) => Trainer::new_on_gpu(&mut model, &data.train, &config, gpu, kernels)?,
        None => Trainer::new(&mut model, &data.train, &config)?,
    };
    for _ in 0..args.warmup {
        trainer.step()?;
    }
    if args.profile && !trainer.on_gpu() {
        let layers = trainer.network().layers.len();
        trainer.workspace_mut().start_profiling(layers);
    }
    let mut times = Vec::with_capacity(args.steps as usize);
    let mut images = 0;
    for _ in 0..args.steps {
        let t = Instant::now();
        images += trainer.step()?.images;
        times.push(t.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ips = images as f64 / total;
    println!(
        "bench train: model {} batch {} threads {}: {:.1} images/s (mean over {} steps), median step {:.3} s, {:.1} GFLOP/s (3x forward FLOPs)",
        args.model,
        args.batch,
        rayon::current_num_threads(),
        ips,
        args.steps,
        median,
        ips * 3.0 * flops / 1e9
    );
    if let Some(network) = trainer.gpu_network() {
        println!(
            "host → GPU per step: {} bytes (the batch, its labels and each tensor's update parameters); GPU → host: 8 bytes (cost and correct count); device memory {} bytes",
            thousands(network.last_upload_bytes() as usize),
            thousands(network.device_bytes() as usize)
        );
    }
    let names = trainer.network().layer_names();
    if let Some(timings) = trainer.workspace_mut().timings() {
        let per_step = |secs: f64| secs * 1e3 / args.steps as f64;
        println!("{:<14} {:>12} {:>12}   (ms per step)", "layer", "forward", "backward");
        for (name, t) in names.iter().zip(timings) {
            println!("{name:<14} {:>12.2} {:>12.2}", per_step(t.forward), per_step(t.backward));
        }
        let (f, b): (f64, f64) = timings.iter().fold((0.0, 0.0), |(f, b), t| (f + t.forward, b + t.backward));
        println!("{:<14} {:>12.2} {:>12.2}   step median {:.2}", "total", per_step(f), per_step(b), median * 1e3);
    }
    Ok(())
}

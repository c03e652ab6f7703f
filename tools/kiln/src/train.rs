//! `kiln train`: train a preset (or resume a run) on MNIST-style data, checkpointing as it goes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_train::checkpoint::Saver;
use kiln_train::config::{self, InitChoice, Length, OptimizerConfig, OptimizerKind, Schedule, TrainConfig};
use kiln_train::model::Model;
use kiln_train::network::Network;
use kiln_train::optim::Optimizer;
use kiln_train::tensor_file::{self, Checkpoint};
use kiln_train::train::{Progress, Trainer};
use kiln_train::{description, presets};

use crate::ckpt::resolve_checkpoint;
use crate::data::{DataArgs, load_data, set_threads};
use crate::ui::{print_mistakes, progress_bar, thousands};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Shipped network: fc3, convnet4, vgg (the series') or lenet5. The same as --net NAME.
    #[arg(long, conflicts_with = "net", value_parser = clap::builder::PossibleValuesParser::new(presets::SHIPPED))]
    model: Option<String>,
    /// The network to train: a description file (one layer per line, docs/NETWORKS.md), a shipped name, or
    /// the description inline: --net "conv 5x5 6 same, tanh, avgpool 2, flatten, dense 10".
    #[arg(long, required_unless_present_any = ["resume", "model"])]
    net: Option<String>,
    /// Print the layers with their output shapes, parameters and FLOPs, then exit.
    #[arg(long)]
    summary: bool,
    /// Passes over the training set [default: fc3 5, convnet4 3, vgg 12].
    #[arg(long, conflicts_with = "steps", value_parser = clap::value_parser!(u64).range(1..))]
    epochs: Option<u64>,
    /// Number of updates, instead of --epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Images per update [default: 64 for the series' networks, 16 otherwise].
    #[arg(long, conflicts_with = "resume", value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH))]
    batch: Option<u32>,
    /// Learning rate [default: adam 0.002 for fc3 and 0.001 otherwise; sgd and momentum 0.01].
    #[arg(long, conflicts_with = "resume", value_parser = positive_f32)]
    lr: Option<f32>,
    #[arg(long, conflicts_with = "resume", default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(config::OPTIMIZER_NAMES))]
    optimizer: String,
    /// Weight initializer: `default` is He for ReLU layers and Xavier for the output layer (post 6).
    #[arg(long, conflicts_with = "resume", default_value = "default", value_parser = clap::builder::PossibleValuesParser::new(config::INIT_NAMES))]
    init: String,
    /// Learning-rate schedule.
    #[arg(long, conflicts_with = "resume", default_value = "cosine", value_parser = clap::builder::PossibleValuesParser::new(config::SCHEDULE_NAMES))]
    schedule: String,
    /// Shift each training image by a random 0..=N pixels on each axis; 0 turns it off [default: fc3 1, others 2].
    #[arg(long, conflicts_with = "resume")]
    augment: Option<usize>,
    /// Seed for initialisation, data order and augmentation.
    #[arg(long, conflicts_with = "resume", default_value_t = 1)]
    seed: u64,
    /// Print `Cost:` and `Accuracy:` for the current batch every N steps.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    print_every: u64,
    /// Save the trained weights (safetensors, with the network description) to this file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Save training checkpoints (weights, optimizer state, progress) into this directory, at the end and
    /// every --save-every steps.
    #[arg(long, value_name = "DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Save a checkpoint every N steps.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    save_every: Option<u64>,
    /// Keep the newest K checkpoints, deleting older ones once a newer one is safely written.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    keep: u64,
    /// Continue the run whose checkpoints are in DIR from its latest one: same settings, optimizer state,
    /// data order and step. --steps/--epochs may extend it.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// List this many of the test digits the network gets wrong.
    #[arg(long, default_value_t = 10)]
    show_mistakes: usize,
    /// Where the steps run: `gpu` (any wgpu adapter, CPU drivers like lavapipe included), `cpu`, or `auto`
    /// (a hardware GPU if there is one, else the CPU trainer, which beats a CPU Vulkan driver).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
    device: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Opens the device `choice` asks for and says which one runs: `None` means the CPU trainer.
pub fn open_device(choice: &str) -> Result<Option<(kiln_gpu::Gpu, kiln_gpu::Kernels)>> {
    let open = |gpu: kiln_gpu::Gpu| -> Result<Option<(kiln_gpu::Gpu, kiln_gpu::Kernels)>> {
        let kernels =
            kiln_gpu::Kernels::new(&gpu).with_context(|| format!("compiling the kernels on {}", gpu.describe()))?;
        println!("Device: GPU {}", gpu.describe());
        Ok(Some((gpu, kernels)))
    };
    match choice {
        "cpu" => {
            println!("Device: CPU");
            Ok(None)
        }
        "gpu" => open(kiln_gpu::Gpu::new()?),
        _ => match kiln_gpu::Gpu::new() {
            Ok(gpu) if !gpu.is_cpu() => open(gpu),
            Ok(gpu) => {
                println!(
                    "Device: CPU (the only GPU adapter, {}, is a CPU driver; --device gpu uses it)",
                    gpu.describe()
                );
                Ok(None)
            }
            Err(_) => {
                println!("Device: CPU (wgpu found no GPU adapter; --device gpu says how to get one)");
                Ok(None)
            }
        },
    }
}

/// Largest accepted batch: beyond this the VGG's buffers alone outgrow any machine's memory.
pub const MAX_BATCH: i64 = 8192;

fn positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(format!("must be a positive number, got {s}")) }
}

fn print_summary(network: &Network) -> Result<()> {
    println!("{} (input {})", network.name, network.input);
    println!("{:<16} {:<32} {:>16} {:>12} {:>10}", "layer", "op", "output", "params", "MFLOP");
    for (row, step) in network.summary()?.iter().zip(network.steps()?) {
        println!(
            "{:<16} {:<32} {:>16} {:>12} {:>10.2}",
            row.name,
            row.layer.to_string(),
            row.output.to_string(),
            thousands(row.params),
            step.forward_flops() as f64 / 1e6
        );
    }
    println!("{:<16} {:<32} {:>16} {:>12}", "total", "", "", thousands(network.param_count()?));
    println!("forward: {:.2} MFLOP per image", network.forward_flops()? as f64 / 1e6);
    Ok(())
}

/// The network `--net` or `--model` names: a description file, a shipped name, or an inline description.
fn chosen_network(args: &TrainArgs) -> Result<Network> {
    if let Some(name) = &args.model {
        return Ok(presets::by_name(name).expect("clap checked the name"));
    }
    let net = args.net.as_deref().context("--net or --model is required (or --resume DIR)")?;
    let path = Path::new(net);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "net".into());
        return description::parse(&text, &name)
            .with_context(|| format!("{}: not a network description", path.display()));
    }
    if let Some(network) = presets::by_name(net) {
        return Ok(network);
    }
    if net.contains(',') || net.contains(' ') {
        return description::parse(net, "net").context("the --net description");
    }
    bail!(
        "--net {net}: no such file, and not a shipped network ({}); an inline description has its layers separated \
         by commas",
        presets::SHIPPED.join(", ")
    )
}

pub fn cmd_train(args: TrainArgs) -> Result<()> {
    if args.summary {
        return print_summary(&chosen_network(&args)?);
    }
    set_threads(&args.data)?;
    let (mut model, config, resumed) = match &args.resume {
        Some(dir) => resume_from(dir, &args)?,
        None => fresh_run(&args)?,
    };
    let data = load_data(&args.data)?;
    let total = config.total_steps(data.train.len());
    println!(
        "Model: {} ({} parameters), {} lr {} ({}), batch {}, {} steps{}, augment ±{} px, seed {}",
        model.network.name,
        thousands(model.network.param_count()?),
        config.optimizer.kind,
        config.lr,
        config.schedule,
        config.batch,
        total,
        match config.length {
            Length::Epochs(e) => format!(" = {e} epochs"),
            Length::Steps(_) => String::new(),
        },
        config.augment_shift,
        config.seed,
    );
    println!("Data: {} ({} training, {} test images)", data.dir.display(), data.train.len(), data.test.len());

    let prefix = model.network.name.clone();
    let ckpt_dir = args.ckpt_dir.clone().or_else(|| args.resume.clone().filter(|p| p.is_dir()));
    let device = open_device(&args.device)?;
    let mut trainer = match &device {
        Some((gpu, kernels)) => Trainer::new_on_gpu(&mut model, &data.train, &config, gpu, kernels)?,
        None => Trainer::new(&mut model, &data.train, &config)?,
    };
    if let Some((optimizer, progress)) = resumed {
        trainer.resume(&progress, optimizer)?;
        println!("Resumed at step {} (epoch {})", progress.step, progress.epoch + 1);
    }
    let saver = ckpt_dir.map(|dir| Saver::new(dir, &prefix, args.keep as usize).every(args.save_every.unwrap_or(0)));
    let save = |trainer: &mut Trainer<'_>, saver: &Saver| -> Result<PathBuf> {
        trainer.sync()?;
        let path = saver.save(trainer.model(), trainer.optimizer(), trainer.config(), &trainer.progress())?;
        println!("Saved checkpoint {}", path.display());
        Ok(path)
    };

    let bar = progress_bar(total, "steps");
    let started = Instant::now();
    let mut images_seen = 0u64;
    let mut last_saved = None;
    let mut last_path: Option<PathBuf> = None;
    while !trainer.is_finished() {
        let r = match trainer.step() {
            Ok(r) => r,
            Err(e) => match &last_path {
                Some(path) => bail!("{e}\nThe last checkpoint, {}, is intact: continue with --resume.", path.display()),
                None => return Err(e.into()),
            },
        };
        images_seen += r.images as u64;
        if r.step % args.print_every == 0 || r.step == r.total_steps {
            let line = format!(
                "Step {:>6}  epoch {:>3}  Cost: {:.4}  Accuracy: {:.2} %  lr {:.2e}",
                r.step,
                r.epoch + 1,
                r.cost,
                r.accuracy * 100.0,
                r.lr
            );
            match &bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(r.step);
        }
        if let Some(saver) = saver.as_ref().filter(|s| s.is_due(r.step)) {
            last_path = Some(save(&mut trainer, saver)?);
            last_saved = Some(r.step);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    let step = trainer.progress().step;
    let final_checkpoint = match &saver {
        Some(saver) if last_saved != Some(step) => Some(save(&mut trainer, saver)?),
        Some(saver) => Some(saver.dir().join(saver.file_name(step))),
        None => None,
    };
    println!("Trained {step} steps in {seconds:.1} s ({:.0} images/s)", images_seen as f64 / seconds);
    let test = trainer.evaluate(&data.test)?;
    println!("Test cost: {:.4}", test.cost);
    println!("Test accuracy: {:.2} %", test.accuracy * 100.0);
    print_mistakes(&test.predictions, &data.test.labels, args.show_mistakes);
    if let (Some(saver), Some(file)) = (&saver, &final_checkpoint) {
        saver.record_accuracy(file, test.accuracy)?;
    }
    if let Some(path) = &args.save {
        tensor_file::save_weights(path, trainer.model(), step)?;
        println!("Saved weights to {}", path.display());
    }
    Ok(())
}

/// What a run starts from: the model, its settings, and for a resumed run the optimizer and progress.
type RunStart = (Model, TrainConfig, Option<(Optimizer, Progress)>);

/// A new model and settings from the command line.
fn fresh_run(args: &TrainArgs) -> Result<RunStart> {
    let network = chosen_network(args)?;
    let kind: OptimizerKind = args.optimizer.parse().map_err(anyhow::Error::msg)?;
    let init: InitChoice = args.init.parse().map_err(anyhow::Error::msg)?;
    let schedule: Schedule = args.schedule.parse().map_err(anyhow::Error::msg)?;
    let recipe = presets::recipe(&network.name).unwrap_or(presets::DESCRIBED_RECIPE);
    let default_lr = if kind == OptimizerKind::Adam { recipe.adam_lr } else { kind.default_lr() };
    let config = TrainConfig {
        length: length_from(args).unwrap_or(Length::Epochs(recipe.epochs)),
        batch: args.batch.map_or(recipe.batch, |b| b as usize),
        lr: args.lr.unwrap_or(default_lr),
        optimizer: OptimizerConfig::new(kind),
        schedule,
        seed: args.seed,
        augment_shift: args.augment.unwrap_or(recipe.augment_shift),
    };
    println!("Init: {init}");
    Ok((Model::new(network, init, args.seed)?, config, None))
}

/// The model, settings, optimizer state and progress of the latest checkpoint in `dir` (or a file).
/// `--steps`/`--epochs` may extend the run; every other setting comes from the checkpoint.
fn resume_from(dir: &Path, args: &TrainArgs) -> Result<RunStart> {
    let path = resolve_checkpoint(dir)?;
    let ckpt = Checkpoint::open(&path)?;
    if let Some(name) = args.model.as_ref().or(args.net.as_ref())
        && ckpt.network().name != *name
    {
        bail!("{}: this checkpoint is of the {} network, not {name}", path.display(), ckpt.network().name);
    }
    let model = ckpt.model()?;
    let (mut config, optimizer, progress) = ckpt.training_state(&model)?;
    if let Some(length) = length_from(args) {
        config.length = length;
    }
    println!("Resuming from {}", path.display());
    Ok((model, config, Some((optimizer, progress))))
}

fn length_from(args: &TrainArgs) -> Option<Length> {
    match (args.steps, args.epochs) {
        (Some(steps), _) => Some(Length::Steps(steps)),
        (None, Some(epochs)) => Some(Length::Epochs(epochs)),
        (None, None) => None,
    }
}

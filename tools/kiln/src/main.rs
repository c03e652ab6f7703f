//! `kiln`: train, evaluate and benchmark the "Learn TensorFlow Now" networks.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_train::checkpoint::{self, Checkpoint};
use kiln_train::data::{self, Mnist};
use kiln_train::init::{self, InitChoice};
use kiln_train::model::Model;
use kiln_train::network::Network;
use kiln_train::optim::{self, Optimizer, OptimizerConfig, OptimizerKind};
use kiln_train::train::{self, Length, Progress, Schedule, TrainConfig, Trainer};
use kiln_train::{eval, presets, weights};

mod bench_infer;
mod pack;
mod predict;
mod web;

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "Train, pack and run small image classifiers.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a network on MNIST-style data and report the test accuracy.
    Train(Box<TrainArgs>),
    /// Evaluate saved weights on the test set.
    Eval(EvalArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// List and inspect training checkpoints.
    #[command(subcommand)]
    Ckpt(CkptCommand),
    /// Pack a checkpoint into a `.kiln` model file, quantizing the weights, and measure the accuracy cost.
    Convert(Box<pack::ConvertArgs>),
    /// Show what a `.kiln` model file holds: layers, tensors, metadata and the memory the runtime needs.
    Inspect(pack::InspectArgs),
    /// Classify digit images (PNG/JPEG, any size and colour) with a `.kiln` model.
    Predict(predict::PredictArgs),
    /// Pack a checkpoint for the browser demo: models, models.json and digits.json in the page's directory.
    WebAssets(web::WebAssetsArgs),
    /// Serve a directory (the demo page) on 127.0.0.1.
    Serve(web::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum CkptCommand {
    /// The checkpoints a directory keeps: step, time, size and test accuracy if measured.
    Ls {
        /// A checkpoint directory (written by `kiln train --ckpt-dir`).
        dir: PathBuf,
    },
    /// A checkpoint's tensors (name, dtype, shape) and metadata.
    Inspect {
        /// A checkpoint or weights file, or a checkpoint directory (its latest).
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Directory with the four standard MNIST files (gzip or raw), e.g. /usr/share/datasets/fashion-mnist.
    /// Defaults to the bundled data/mnist.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Network preset.
    #[arg(long, required_unless_present = "resume", value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    model: Option<String>,
    /// Print the layers with their output shapes and parameter counts, then exit.
    #[arg(long)]
    summary: bool,
    /// Passes over the training set [default: fc3 5, convnet4 3, vgg 12].
    #[arg(long, conflicts_with = "steps", value_parser = clap::value_parser!(u64).range(1..))]
    epochs: Option<u64>,
    /// Number of updates, instead of --epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Images per update.
    #[arg(long, conflicts_with = "resume", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH))]
    batch: u32,
    /// Learning rate [default: adam 0.002 for fc3 and 0.001 otherwise; sgd and momentum 0.01].
    #[arg(long, conflicts_with = "resume", value_parser = positive_f32)]
    lr: Option<f32>,
    #[arg(long, conflicts_with = "resume", default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(optim::NAMES))]
    optimizer: String,
    /// Weight initializer: `default` is He for ReLU layers and Xavier for the output layer (post 6).
    #[arg(long, conflicts_with = "resume", default_value = "default", value_parser = clap::builder::PossibleValuesParser::new(init::NAMES))]
    init: String,
    /// Learning-rate schedule.
    #[arg(long, conflicts_with = "resume", default_value = "cosine", value_parser = clap::builder::PossibleValuesParser::new(train::SCHEDULE_NAMES))]
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
fn open_device(choice: &str) -> Result<Option<(kiln_gpu::Gpu, kiln_gpu::Kernels)>> {
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

#[derive(Args, Debug)]
struct EvalArgs {
    /// A weights file (`kiln train --save`), a checkpoint, a checkpoint directory (its latest), or a packed
    /// `.kiln` model (run by kiln-core's runtime).
    weights: PathBuf,
    /// List this many of the test digits the network gets wrong.
    #[arg(long, default_value_t = 10)]
    show_mistakes: usize,
    /// For `.kiln` models, the kernel build: best, portable, avx2+fma, avx512, or `all` (every build this
    /// CPU has, which must predict the same classes).
    #[arg(long, value_parser = ["best", "portable", "avx2+fma", "avx512", "all"])]
    isa: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Steady-state training throughput (images per second) on the bundled data.
    Train(BenchTrainArgs),
    /// The size/accuracy frontier: pack a checkpoint several ways and test each through the runtime.
    Pack(pack::BenchPackArgs),
    /// Inference speed of a `.kiln` model: batch-1 latency (median, p90) and batched throughput.
    Infer(bench_infer::BenchInferArgs),
}

#[derive(Args, Debug)]
struct BenchTrainArgs {
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
    #[arg(long, default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(optim::NAMES))]
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

/// Largest accepted batch: beyond this the VGG's buffers alone outgrow any machine's memory.
const MAX_BATCH: i64 = 8192;

fn positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(format!("must be a positive number, got {s}")) }
}

fn main() {
    // Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid" on a headless machine while wgpu looks
    // for an adapter, though Kiln never opens a display. Give them a directory so a user sees no false alarm.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first statement of main, before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir())
        };
    }
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => cmd_train(*args),
        Command::Eval(args) => cmd_eval(args),
        Command::Bench(BenchCommand::Train(args)) => cmd_bench_train(args),
        Command::Bench(BenchCommand::Pack(args)) => pack::cmd_bench_pack(args),
        Command::Bench(BenchCommand::Infer(args)) => bench_infer::cmd_bench_infer(args),
        Command::Ckpt(CkptCommand::Ls { dir }) => cmd_ckpt_ls(&dir),
        Command::Ckpt(CkptCommand::Inspect { file }) => cmd_ckpt_inspect(&file),
        Command::Convert(args) => pack::cmd_convert(*args),
        Command::Inspect(args) => pack::cmd_inspect(args),
        Command::Predict(args) => predict::cmd_predict(args),
        Command::WebAssets(args) => web::cmd_web_assets(args),
        Command::Serve(args) => web::cmd_serve(args),
    }
}

fn set_threads(data: &DataArgs) -> Result<()> {
    if let Some(n) = data.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n as usize).build_global().context("starting worker threads")?;
    }
    Ok(())
}

/// The data directory: `--data`, else the bundled set found from the working directory or the binary.
pub(crate) fn load_data(data: &DataArgs) -> Result<Mnist> {
    let dir = match &data.data {
        Some(dir) => dir.clone(),
        None => bundled_dir().context(
            "no --data given and the bundled data/mnist was not found (run from the repository, or pass --data DIR)",
        )?,
    };
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    Ok(Mnist::load(&dir)?)
}

fn bundled_dir() -> Option<PathBuf> {
    let from_cwd = PathBuf::from(data::BUNDLED_DIR);
    if from_cwd.is_dir() {
        return Some(from_cwd);
    }
    // The binary lives in <repo>/target/<profile>/kiln (or a shared CARGO_TARGET_DIR): try the source tree.
    let from_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(data::BUNDLED_DIR);
    from_source.is_dir().then_some(from_source)
}

fn print_summary(network: &Network) -> Result<()> {
    println!("{:<14} {:<10} {:>16} {:>12}", "layer", "op", "output", "params");
    for row in network.summary()? {
        println!(
            "{:<14} {:<10} {:>16} {:>12}",
            row.name,
            row.layer.kind(),
            row.output.to_string(),
            thousands(row.params)
        );
    }
    println!("{:<14} {:<10} {:>16} {:>12}", "total", "", "", thousands(network.param_count()?));
    println!("forward: {:.1} MFLOP per image", network.forward_flops()? as f64 / 1e6);
    Ok(())
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn cmd_train(args: TrainArgs) -> Result<()> {
    if args.summary {
        let name = args.model.as_deref().context("--summary needs --model")?;
        return print_summary(&presets::by_name(name).expect("clap checked the name"));
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
    let save = |trainer: &mut Trainer<'_>, dir: &Path| -> Result<PathBuf> {
        trainer.sync()?;
        let path = checkpoint::save(
            dir,
            &prefix,
            trainer.model(),
            trainer.optimizer(),
            trainer.config(),
            &trainer.progress(),
            args.keep as usize,
        )?;
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
        if let (Some(dir), Some(every)) = (&ckpt_dir, args.save_every)
            && r.step % every == 0
        {
            last_path = Some(save(&mut trainer, dir)?);
            last_saved = Some(r.step);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    let step = trainer.progress().step;
    let final_checkpoint = match &ckpt_dir {
        Some(dir) if last_saved != Some(step) => Some(save(&mut trainer, dir)?),
        Some(dir) => Some(dir.join(format!("{prefix}-{step}.safetensors"))),
        None => None,
    };
    println!("Trained {step} steps in {seconds:.1} s ({:.0} images/s)", images_seen as f64 / seconds);
    let test = trainer.evaluate(&data.test)?;
    println!("Test cost: {:.4}", test.cost);
    println!("Test accuracy: {:.2} %", test.accuracy * 100.0);
    print_mistakes(&test, &data, args.show_mistakes);
    if let (Some(dir), Some(file)) = (&ckpt_dir, &final_checkpoint) {
        checkpoint::record_accuracy(dir, file, test.accuracy)?;
    }
    if let Some(path) = &args.save {
        weights::save(path, trainer.model(), step)?;
        println!("Saved weights to {}", path.display());
    }
    Ok(())
}

/// A new model and settings from the command line.
/// What a run starts from: the model, its settings, and for a resumed run the optimizer and progress.
type RunStart = (Model, TrainConfig, Option<(Optimizer, Progress)>);

fn fresh_run(args: &TrainArgs) -> Result<RunStart> {
    let name = args.model.as_deref().context("--model is required (or --resume DIR)")?;
    let network = presets::by_name(name).expect("clap checked the name");
    let kind: OptimizerKind = args.optimizer.parse().map_err(anyhow::Error::msg)?;
    let init: InitChoice = args.init.parse().map_err(anyhow::Error::msg)?;
    let schedule: Schedule = args.schedule.parse().map_err(anyhow::Error::msg)?;
    let recipe = presets::recipe(name).expect("clap checked the name");
    let default_lr = if kind == OptimizerKind::Adam { recipe.adam_lr } else { kind.default_lr() };
    let config = TrainConfig {
        length: length_from(args).unwrap_or(Length::Epochs(recipe.epochs)),
        batch: args.batch as usize,
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
    if let Some(name) = &args.model
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
fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let (path, warning) = checkpoint::resolve(path)?;
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(path)
}

fn length_from(args: &TrainArgs) -> Option<Length> {
    match (args.steps, args.epochs) {
        (Some(steps), _) => Some(Length::Steps(steps)),
        (None, Some(epochs)) => Some(Length::Epochs(epochs)),
        (None, None) => None,
    }
}

fn progress_bar(total: u64, unit: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"))
            .expect("valid template"),
    );
    Some(bar)
}

fn print_mistakes(evaluation: &eval::Evaluation, data: &Mnist, count: usize) {
    if count == 0 {
        return;
    }
    let wrong: Vec<usize> = evaluation.mistakes(&data.test).collect();
    println!("Wrong on {} of {} test digits; the first {}:", wrong.len(), evaluation.total, count.min(wrong.len()));
    for &i in wrong.iter().take(count) {
        println!("  test #{i:>5}: label {}, predicted {}", data.test.labels[i], evaluation.predictions[i]);
    }
}

fn cmd_eval(args: EvalArgs) -> Result<()> {
    set_threads(&args.data)?;
    if is_packed_model(&args.weights) {
        return pack::cmd_eval_packed(
            &args.weights,
            &args.data,
            args.isa.as_deref().unwrap_or("best"),
            args.show_mistakes,
        );
    }
    if args.isa.is_some() {
        bail!("--isa applies to packed .kiln models; {} is a checkpoint", args.weights.display());
    }
    let path = resolve_checkpoint(&args.weights)?;
    let (model, step) = weights::load(&path)?; // checks every tensor's CRC-32
    let data = load_data(&args.data)?;
    train::check_data(&model, &data.test)?;
    let started = Instant::now();
    let mut ws = kiln_train::model::Workspace::new();
    let evaluation = eval::evaluate(&model, &mut ws, &data.test);
    println!("Model: {} from {} (step {step})", model.network.name, path.display());
    println!("Test cost: {:.4}", evaluation.cost);
    println!("Test accuracy: {:.2} %", evaluation.accuracy * 100.0);
    println!("Evaluated {} images in {:.1} s", evaluation.total, started.elapsed().as_secs_f64());
    print_mistakes(&evaluation, &data, args.show_mistakes);
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

fn cmd_bench_train(args: BenchTrainArgs) -> Result<()> {
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

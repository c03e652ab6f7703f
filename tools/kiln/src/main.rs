//! `kiln`: train, evaluate and benchmark the "Learn TensorFlow Now" networks.
//!
//! One module per command; `ui` holds what they share on the terminal and `data` the data set options.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench_infer;
mod bench_pack;
mod bench_train;
mod ckpt;
mod convert;
mod data;
mod eval;
mod export;
mod inspect;
mod predict;
mod serve;
mod train;
mod ui;
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
    Train(Box<train::TrainArgs>),
    /// Evaluate saved weights on the test set.
    Eval(eval::EvalArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// List and inspect training checkpoints.
    #[command(subcommand)]
    Ckpt(ckpt::CkptCommand),
    /// Pack a checkpoint into a `.kiln` model file, quantizing the weights, and measure the accuracy cost.
    Convert(Box<convert::ConvertArgs>),
    /// Write a checkpoint or a `.kiln` file as an ONNX model (for ONNX Runtime, tract, onnxruntime-web).
    Export(export::ExportArgs),
    /// Show what a `.kiln` model file holds: layers, tensors, metadata and the memory the runtime needs.
    Inspect(inspect::InspectArgs),
    /// Classify digit images (PNG/JPEG, any size and colour) with a `.kiln` model.
    Predict(predict::PredictArgs),
    /// Pack a checkpoint for the browser demo: models, models.json and digits.json in the page's directory.
    WebAssets(web::WebAssetsArgs),
    /// Serve a directory (the demo page) on 127.0.0.1.
    Serve(serve::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Steady-state training throughput (images per second) on the bundled data.
    Train(bench_train::BenchTrainArgs),
    /// The size/accuracy frontier: pack a checkpoint several ways and test each through the runtime.
    Pack(bench_pack::BenchPackArgs),
    /// Inference speed of a `.kiln` model: batch-1 latency (median, p90) and batched throughput.
    Infer(bench_infer::BenchInferArgs),
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
        Command::Train(args) => train::cmd_train(*args),
        Command::Eval(args) => eval::cmd_eval(args),
        Command::Bench(BenchCommand::Train(args)) => bench_train::cmd_bench_train(args),
        Command::Bench(BenchCommand::Pack(args)) => bench_pack::cmd_bench_pack(args),
        Command::Bench(BenchCommand::Infer(args)) => bench_infer::cmd_bench_infer(args),
        Command::Ckpt(command) => ckpt::cmd_ckpt(command),
        Command::Convert(args) => convert::cmd_convert(*args),
        Command::Export(args) => export::cmd_export(args),
        Command::Inspect(args) => inspect::cmd_inspect(args),
        Command::Predict(args) => predict::cmd_predict(args),
        Command::WebAssets(args) => web::cmd_web_assets(args),
        Command::Serve(args) => serve::cmd_serve(args),
    }
}

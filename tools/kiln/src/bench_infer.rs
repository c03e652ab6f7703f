//! `kiln bench infer`: batch-1 latency and batched throughput of a `.kiln` model on the CPU runtime.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_core::parallel::Workers;
use kiln_core::{Isa, Model, Parallel, Serial, Session};

#[derive(Args, Debug)]
pub struct BenchInferArgs {
    /// A `.kiln` model file; or an ONNX file, run by tract as a peer (one thread, the same measurements).
    pub model: PathBuf,
    /// Threads. Batch 1 is timed on one thread and, when this is more, on this many: one session cutting
    /// each integer layer into parts (f32 layers run on the calling thread). The batched measurement runs
    /// this many sessions, each on its own images.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Timed batch-1 runs (after 10 untimed ones).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Images per batch for the throughput measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Timed batches per thread.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub batches: u32,
    /// Kernel build: best (what this CPU runs fastest), portable, avx2+fma, avxvnni (the integer path's
    /// 256-bit `vpdpbusd` kernels; f32 layers run as avx2+fma), avx512 or avx512vnni (the integer path's
    /// 512-bit `vpdpbusd` kernels; f32 layers run as avx512).
    #[arg(long, default_value = "best", value_parser = ["best", "portable", "avx2+fma", "avxvnni", "avx512", "avx512vnni"])]
    pub isa: String,
    /// Where to run: `cpu` (kiln-core's runtime) or `gpu` (GpuSession on the first wgpu adapter).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    pub device: String,
}

pub fn isa(name: &str) -> Result<Isa> {
    let isa = match name {
        "best" => Isa::best(),
        name => Isa::from_name(name).with_context(|| format!("no kernel build is called \"{name}\""))?,
    };
    if !isa.is_available() {
        bail!("this CPU (or this build) cannot run the {} kernels", isa.name());
    }
    Ok(isa)
}

/// Real test digits when the bundled data is there, else a fixed pattern.
fn digits(count: usize, len: usize) -> Vec<u8> {
    let bundled = crate::data::bundled_dir().and_then(|dir| kiln_train::data::Mnist::load(&dir).ok());
    match bundled {
        Some(m) if len == 784 => (0..count).flat_map(|i| m.test.image(i % m.test.len()).to_vec()).collect(),
        _ => (0..count * len).map(|i| (i * 37 % 251) as u8).collect(),
    }
}

pub fn cmd_bench_infer(args: BenchInferArgs) -> Result<()> {
    if kiln_import::onnx::is_onnx(&args.model) {
        return bench_tract(&args);
    }
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model =
        Model::from_bytes(&bytes).with_context(|| format!("{} is not a valid model file", args.model.display()))?;
    let isa = isa(&args.isa)?;
    let len = model.input_shape().len();
    let flops = model.plan().forward_flops() as f64;
    let meta = model.metadata();
    println!(
        "{} ({}), {} bytes, {:.1} MFLOP per image, kernels {}",
        meta.model_name(),
        meta.quantization(),
        crate::ui::thousands(bytes.len()),
        flops / 1e6,
        isa.name()
    );

    if args.device == "gpu" {
        return bench_gpu(&args, &model, len, flops);
    }
    // Batch 1: latency, on one thread and on `threads`. Interleaved, so that both see the same machine.
    let images = digits(64, len);
    let threads = args.threads as usize;
    let workers = Workers::new(threads).context("starting worker threads")?;
    let mut arena = vec![0u32; model.arena_size(1).div_ceil(4)];
    let mut arena_parallel = arena.clone();
    let mut sessions = [
        Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 1)?,
        Session::new(&model, bytemuck::cast_slice_mut(&mut arena_parallel), 1)?,
    ];
    let runners: &[&dyn Parallel] = if threads > 1 { &[&Serial, &workers] } else { &[&Serial] };
    for (session, &parallel) in sessions.iter_mut().zip(runners) {
        session.set_isa(isa);
        session.set_parallel(parallel);
    }
    let mut times = vec![Vec::with_capacity(args.runs as usize); runners.len()];
    for r in 0..10 + args.runs as usize {
        let image = &images[(r % 64) * len..][..len];
        for (session, times) in sessions.iter_mut().zip(times.iter_mut()) {
            let started = Instant::now();
            std::hint::black_box(session.run_pixels(image, 1)?);
            if r >= 10 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
    }
    for (times, parallel) in times.iter_mut().zip(runners) {
        times.sort_by(f64::total_cmp);
        let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let (median, p90) = (pick(0.5), pick(0.9));
        let n = parallel.threads();
        println!(
            "batch 1, {n} thread{}:{} median {:.3} ms, p90 {:.3} ms over {} runs ({:.1} GFLOP/s)",
            if n == 1 { "" } else { "s" },
            if n == 1 { "   " } else { "  " },
            median * 1e3,
            p90 * 1e3,
            times.len(),
            flops / median / 1e9
        );
    }

    // Batched throughput: each thread its own session and images.
    let batch = args.batch as usize;
    let batch_images = digits(batch, len);
    let started = std::sync::Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|scope| -> Result<f64> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (model, batch_images, started) = (&model, &batch_images, &started);
                scope.spawn(move || -> Result<()> {
                    let mut arena = vec![0u32; model.arena_size(batch).div_ceil(4)];
                    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), batch)?;
                    session.set_isa(isa);
                    session.run_pixels(batch_images, batch)?; // warm-up
                    started.wait();
                    for _ in 0..args.batches {
                        std::hint::black_box(session.run_pixels(batch_images, batch)?);
                    }
                    Ok(())
                })
            })
            .collect();
        started.wait();
        let t0 = Instant::now();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        }
        Ok(t0.elapsed().as_secs_f64())
    })?;
    let images_done = (threads * batch * args.batches as usize) as f64;
    println!(
        "batch {batch}, {threads} thread{}: {:.1} images/s ({:.1} GFLOP/s), {} batches per thread",
        if threads == 1 { "" } else { "s" },
        images_done / elapsed,
        images_done * flops / elapsed / 1e9,
        args.batches
    );
    Ok(())
}

/// The same measurements for an ONNX file run by tract (a peer; always one thread).
fn bench_tract(args: &BenchInferArgs) -> Result<()> {
    use kiln_import::tract_peer::{TRACT_VERSION, TractPlan};
    let imported = kiln_import::onnx::import(&args.model, "model")?;
    let network = &imported.model.network;
    let flops = network.forward_flops()? as f64;
    let shape = network.input;
    let len = shape.len();
    let same = |p: &kiln_train::network::Network| p.layers == network.layers && p.input == network.input;
    let name = ["fc3", "convnet4", "vgg"]
        .into_iter()
        .filter_map(kiln_train::presets::by_name)
        .find(same)
        .map_or("onnx".into(), |p| p.name);
    let bytes =
        std::fs::metadata(&args.model).with_context(|| format!("reading {}", args.model.display()))?.len() as usize;
    println!(
        "{name} (tract-f32), {} bytes, {:.1} MFLOP per image, {TRACT_VERSION}",
        crate::ui::thousands(bytes),
        flops / 1e6
    );
    let to_f32 = |pixels: &[u8]| -> Vec<f32> { pixels.iter().map(|&p| network.normalization.apply(p)).collect() };
    let one = TractPlan::new(&args.model, 1, [shape.h, shape.w, shape.c]).map_err(anyhow::Error::msg)?;
    let images = to_f32(&digits(64, len));
    let mut times = Vec::with_capacity(args.runs as usize);
    for r in 0..10 + args.runs as usize {
        let image = &images[(r % 64) * len..][..len];
        let started = Instant::now();
        std::hint::black_box(one.run(image).map_err(anyhow::Error::msg)?);
        if r >= 10 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "batch 1, 1 thread:    median {:.3} ms, p90 {:.3} ms over {} runs ({:.1} GFLOP/s)",
        pick(0.5) * 1e3,
        pick(0.9) * 1e3,
        times.len(),
        flops / pick(0.5) / 1e9
    );
    let batch = args.batch as usize;
    let many = TractPlan::new(&args.model, batch, [shape.h, shape.w, shape.c]).map_err(anyhow::Error::msg)?;
    let batch_images = to_f32(&digits(batch, len));
    many.run(&batch_images).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    for _ in 0..args.batches {
        std::hint::black_box(many.run(&batch_images).map_err(anyhow::Error::msg)?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = (batch * args.batches as usize) as f64;
    println!(
        "batch {batch}, 1 thread: {:.1} images/s ({:.1} GFLOP/s), {} batches",
        done / elapsed,
        done * flops / elapsed / 1e9,
        args.batches
    );
    Ok(())
}

/// The same measurements through GpuSession: batch-1 latency (upload, dispatches, logits read back) and
/// batched throughput.
fn bench_gpu(args: &BenchInferArgs, model: &Model<'_>, len: usize, flops: f64) -> Result<()> {
    let gpu = kiln_gpu::Gpu::new()?;
    let kernels = kiln_gpu::Kernels::new(&gpu)?;
    println!("device: GPU {}", gpu.describe());
    let batch = args.batch as usize;
    let mut session = kiln_gpu::GpuSession::with_kernels(
        kiln_gpu::Gpu::from_device(gpu.device(), gpu.queue()),
        &kernels,
        model,
        batch,
    )?;
    let images = digits(batch.max(64), len);
    let mut logits = vec![0.0f32; batch * session.classes()];
    let mut times = Vec::with_capacity(args.runs as usize);
    for r in 0..3 + args.runs as usize {
        let image = &images[(r % 64) * len..][..len];
        let started = Instant::now();
        session.run_pixels(image, 1, &mut logits)?;
        if r >= 3 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "batch 1:    median {:.3} ms, p90 {:.3} ms over {} runs ({:.1} GFLOP/s)",
        pick(0.5) * 1e3,
        pick(0.9) * 1e3,
        times.len(),
        flops / pick(0.5) / 1e9
    );
    session.run_pixels(&images[..batch * len], batch, &mut logits)?;
    let started = Instant::now();
    for _ in 0..args.batches {
        session.run_pixels(&images[..batch * len], batch, &mut logits)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = (batch * args.batches as usize) as f64;
    println!(
        "batch {batch}: {:.1} images/s ({:.1} GFLOP/s), {} batches",
        done / elapsed,
        done * flops / elapsed / 1e9,
        args.batches
    );
    Ok(())
}

//! `kiln convert` and `kiln inspect`: checkpoints to `.kiln` files, and what is inside one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_core::format::{DType, Model as Packed};
use kiln_core::{Isa, runtime};
use kiln_pack::{Metadata, PackedTensor, Quant};
use kiln_train::checkpoint::Checkpoint;
use kiln_train::data::Dataset;
use sha2::{Digest, Sha256};

use crate::DataArgs;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A checkpoint or weights file, or a checkpoint directory (its latest checkpoint).
    pub checkpoint: PathBuf,
    /// Where to write the packed model.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Weight type for every layer: f32, f16, int8, int4, int2 (block types take a block size: int4/64), or
    /// `mixed`: int2 (a scale per 128) for layers of 2^18 weights or more (the VGG's conv5-10 and dense1),
    /// int4 for the rest.
    #[arg(long, default_value = "int8")]
    pub quant: String,
    /// Override one layer's weight type, e.g. `--layer dense1=int2 --layer conv1=int8`.
    #[arg(long = "layer", value_name = "SCOPE=TYPE")]
    pub layers: Vec<String>,
    /// Measure the test accuracy of the f32 and the packed network through kiln-core's runtime. On by
    /// default when the test set (--data, or the bundled data) is found; given explicitly, a missing test set
    /// is an error.
    #[arg(long, overrides_with = "no_eval")]
    pub eval: bool,
    /// Skip measuring the accuracy.
    #[arg(long, overrides_with = "eval")]
    pub no_eval: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A `.kiln` model file.
    pub model: PathBuf,
    /// Also give the runtime's memory need at this batch size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub batch: u32,
}

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

/// Layers with at least this many weights get 2 bits in the `mixed` plan, the rest 4. On the VGG that is
/// conv5–conv10 and dense1 (15.8 M of its 16.1 M weights); the small early convs, which see every pixel,
/// and the output layer are where 2 bits cost accuracy (docs/BENCHMARKS.md, the frontier).
const MIXED_INT2_MIN_WEIGHTS: usize = 1 << 18;
/// Values per scale for the `mixed` plan's 2-bit layers: 2.125 bits per weight; on the VGG's big layers a
/// scale per 128 weights loses no more than one per 32 (the frontier again).
const MIXED_INT2_BLOCK: usize = 128;

/// The weight type of each parametric layer, by scope name, for `--quant` and `--layer`.
fn plan(layers: &[(String, usize)], quant: &str, overrides: &[String]) -> Result<(Vec<Quant>, String)> {
    let scopes: Vec<String> = layers.iter().map(|(name, _)| name.clone()).collect();
    let (mut choice, mut description): (Vec<Quant>, String) = if quant == "mixed" {
        let choice = layers
            .iter()
            .map(|&(_, weights)| {
                if weights >= MIXED_INT2_MIN_WEIGHTS {
                    Quant::Int2 { block: MIXED_INT2_BLOCK }
                } else {
                    Quant::Int4 { block: 32 }
                }
            })
            .collect();
        (choice, "mixed".into())
    } else {
        let q: Quant = quant.parse().map_err(anyhow::Error::msg).context("--quant")?;
        (vec![q; scopes.len()], q.to_string())
    };
    for o in overrides {
        let Some((scope, q)) = o.split_once('=') else { bail!("--layer {o}: expected SCOPE=TYPE, e.g. dense1=int2") };
        let Some(i) = scopes.iter().position(|s| s == scope) else {
            bail!("--layer {o}: no layer named {scope} (the layers are {})", scopes.join(", "))
        };
        choice[i] = q.parse().map_err(anyhow::Error::msg).with_context(|| format!("--layer {o}"))?;
    }
    if quant == "mixed" || !overrides.is_empty() {
        description = describe_mix(&scopes, &choice);
    }
    Ok((choice, description))
}

/// `mixed: dense1=int2, others int4`: the most common type, and the layers that differ from it.
fn describe_mix(scopes: &[String], choice: &[Quant]) -> String {
    let most = choice.iter().max_by_key(|q| choice.iter().filter(|c| c == q).count()).copied();
    let Some(most) = most else { return "mixed".into() };
    let others: Vec<String> =
        scopes.iter().zip(choice).filter(|(_, q)| **q != most).map(|(s, q)| format!("{s}={q}")).collect();
    if others.is_empty() {
        format!("mixed: all {most}")
    } else {
        format!("mixed: {}, others {most}", others.join(", "))
    }
}

/// Scope names (`conv1`, `dense2`) and weight counts of the parametric layers, from the checkpoint.
fn scopes(ckpt: &Checkpoint) -> Result<Vec<(String, usize)>> {
    let model = ckpt.model()?;
    Ok(model
        .params
        .chunks(2)
        .map(|p| (p[0].name.split('/').next().unwrap_or("").to_string(), p[0].data.len()))
        .collect())
}

/// Every layer's `(weights, bias)` of `ckpt`, weights stored as `choice` says, biases f32.
fn pack_params(ckpt: &Checkpoint, choice: &[Quant]) -> Result<Vec<(PackedTensor, PackedTensor)>> {
    let model = ckpt.model()?;
    let params = model
        .params
        .chunks(2)
        .zip(choice)
        .map(|(pair, &q)| {
            let (w, b) = (&pair[0], &pair[1]);
            Ok((
                kiln_pack::pack_tensor(&w.name, &w.dims, &w.data, q)?,
                kiln_pack::pack_tensor(&b.name, &b.dims, &b.data, Quant::F32)?,
            ))
        })
        .collect::<Result<_, kiln_pack::PackError>>()?;
    Ok(params)
}

/// Packs every layer of `ckpt` with `choice` into a whole file.
fn pack(ckpt: &Checkpoint, choice: &[Quant], meta: &Metadata) -> Result<Vec<u8>> {
    Ok(kiln_pack::write(&ckpt.network().layers, &pack_params(ckpt, choice)?, meta)?)
}

/// Predicted class of every test image, computed by kiln-core's runtime on the packed file.
pub fn predict_all(file: &[u8], test: &Dataset, threads: usize, isa: Isa) -> Result<Vec<u8>> {
    let model = Packed::from_bytes(file)?;
    let shape = model.input_shape();
    if (shape.h, shape.w, shape.c) != (test.rows, test.cols, 1) {
        bail!("the model takes {shape} images, the test set has {}x{}", test.rows, test.cols);
    }
    let meta = *model.metadata();
    const BATCH: usize = 64;
    let mut predictions = vec![0u8; test.len()];
    let per_thread = test.len().div_ceil(threads.max(1)).max(1);
    let done = AtomicUsize::new(0);
    let bar = crate::progress_bar(test.len() as u64, "images");
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for (chunk_index, out) in predictions.chunks_mut(per_thread).enumerate() {
            let (model, done, bar) = (&model, &done, &bar);
            handles.push(scope.spawn(move || -> Result<()> {
                let first = chunk_index * per_thread;
                let len = runtime::scratch_len(model, BATCH);
                let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
                let mut input = vec![0.0f32; BATCH * shape.len()];
                for (j, out) in out.chunks_mut(BATCH).enumerate() {
                    let n = out.len();
                    for (k, x) in input[..n * shape.len()].chunks_mut(shape.len()).enumerate() {
                        let image = test.image(first + j * BATCH + k);
                        for (x, &p) in x.iter_mut().zip(image) {
                            *x = (p as f32 / 255.0 - meta.mean) / meta.std;
                        }
                    }
                    let logits = runtime::forward_with(isa, model, &input[..n * shape.len()], n, &mut a, &mut b)?;
                    for (o, row) in out.iter_mut().zip(logits.chunks_exact(meta.classes)) {
                        *o = argmax(row) as u8;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                    if let Some(bar) = bar {
                        bar.set_position(done.load(Ordering::Relaxed) as u64);
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("an evaluation thread panicked"))??;
        }
        Ok(())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(predictions)
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

fn weight_count(file: &[u8]) -> Result<(usize, usize)> {
    let model = Packed::from_bytes(file)?;
    let (mut weights, mut bytes) = (0, 0);
    for i in 0..model.tensor_count() {
        let t = model.tensor(i);
        weights += t.len();
        bytes += t.stored_bytes();
    }
    Ok((weights, bytes))
}

fn threads(data: &DataArgs) -> usize {
    data.threads.map(|t| t as usize).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn cmd_convert(args: ConvertArgs) -> Result<()> {
    let path = crate::resolve_checkpoint(&args.checkpoint)?;
    let source = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let ckpt = Checkpoint::open(&path)?; // checks every tensor's CRC-32
    let network = ckpt.network().clone();
    let scopes = scopes(&ckpt)?;
    let (choice, quantization) = plan(&scopes, &args.quant, &args.layers)?;
    let classes = network.classes()?;
    let mut meta = Metadata {
        input: network.input,
        labels: (0..classes).map(|c| c.to_string()).collect(),
        mean: 0.0,
        std: 1.0,
        model_name: network.name.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        source_file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        quantization: quantization.clone(),
        source_step: ckpt.step(),
        source_sha256: Sha256::digest(&source).into(),
        test_correct: 0,
        test_examples: 0,
    };
    let started = Instant::now();
    let params = pack_params(&ckpt, &choice)?;
    let layers = &network.layers;
    let mut packed = kiln_pack::write(layers, &params, &meta)?;
    let pack_secs = started.elapsed().as_secs_f64();

    let data = if args.no_eval {
        None
    } else {
        match crate::load_data(&args.data) {
            Ok(data) => Some(data),
            Err(e) if args.data.data.is_none() && !args.eval => {
                eprintln!("note: no test set, so no accuracy measured ({e:#}); pass --data DIR to measure it");
                None
            }
            Err(e) => return Err(e),
        }
    };
    let source_label = if ckpt.names().iter().any(|n| n.ends_with("/Adam") || n.ends_with("/Momentum")) {
        "checkpoint"
    } else {
        "source weights file"
    };
    let mut rows = vec![(source_label.to_string(), source.len(), None, None, None)];
    let weights: usize = params.iter().map(|(w, b)| w.len() + b.len()).sum();
    if let Some(data) = &data {
        let threads = threads(&args.data);
        let started = Instant::now();
        let reference_file = pack(&ckpt, &vec![Quant::F32; scopes.len()], &meta)?;
        let reference = predict_all(&reference_file, &data.test, threads, Isa::best())?;
        let predicted = predict_all(&packed, &data.test, threads, Isa::best())?;
        let correct = |p: &[u8]| p.iter().zip(&data.test.labels).filter(|(a, b)| a == b).count();
        let agree = reference.iter().zip(&predicted).filter(|(a, b)| a == b).count();
        let total = data.test.len();
        meta.test_correct = correct(&predicted) as u32;
        meta.test_examples = total as u32;
        packed = kiln_pack::write(layers, &params, &meta)?;
        let pct = |n: usize| 100.0 * n as f64 / total as f64;
        rows.push((
            "f32 network".into(),
            reference_file.len(),
            Some(32.0),
            Some(pct(correct(&reference))),
            Some(100.0),
        ));
        let (_, bytes) = weight_count(&packed)?;
        let bits = 8.0 * bytes as f64 / weights as f64;
        rows.push((quantization.clone(), packed.len(), Some(bits), Some(pct(correct(&predicted))), Some(pct(agree))));
        eprintln!("evaluated 2 x {total} test images through kiln-core in {:.1} s", started.elapsed().as_secs_f64());
    } else {
        let (_, bytes) = weight_count(&packed)?;
        let bits = 8.0 * bytes as f64 / weights as f64;
        rows.push((quantization.clone(), packed.len(), Some(bits), None, None));
    }
    kiln_train::fs::write_atomic(&args.output, &packed)?;

    println!("Packed {} (step {}) from {} in {pack_secs:.1} s", network.name, ckpt.step(), path.display());
    // The first column fits the longest row name (a long `mixed: …` description), at least 44 wide.
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(44);
    println!(
        "{:<width$} {:>13} {:>8} {:>12} {:>10} {:>10}",
        "", "bytes", "ratio", "bits/weight", "test acc", "agreement"
    );
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    for (name, size, bits, acc, agreement) in &rows {
        println!(
            "{name:<width$} {:>13} {:>7.1}x {:>12} {:>10} {:>10}",
            crate::thousands(*size),
            source.len() as f64 / *size as f64,
            opt(*bits, ""),
            opt(*acc, " %"),
            opt(*agreement, " %"),
        );
    }
    if let [.., (_, _, _, Some(before), _), (_, _, _, Some(after), _)] = rows[..] {
        println!("Accuracy change: {:+.2} points", after - before);
    }
    println!("Wrote {} ({} bytes)", args.output.display(), crate::thousands(packed.len()));
    Ok(())
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
        crate::thousands(bytes.len())
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
        "{:>3}  {:<10} {:<14} {:<16} {:<8} {:>12} {:>6}",
        "#", "layer", "output", "weights", "dtype", "bytes", "bits"
    );
    let mut shape = model.input_shape();
    let mut names: HashMap<usize, &str> = HashMap::new();
    let (mut total_weights, mut total_bytes) = (0usize, 0usize);
    for (i, layer) in model.layers().iter().enumerate() {
        shape = layer.output_shape(i, shape)?;
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
                (format!("{:?}", &w.dims[..w.rank]), dtype, crate::thousands(bytes), bits)
            }
            None => (String::new(), String::new(), String::new(), String::new()),
        };
        println!("{i:>3}  {:<10} {:<14} {dims:<16} {dtype:<8} {bytes:>12} {bits:>6}", layer.kind(), shape.to_string());
    }
    println!(
        "parameters:   {} in {} bytes of tensors ({:.2} bits each, biases f32), {} bytes of header, tables and padding",
        crate::thousands(total_weights),
        crate::thousands(total_bytes),
        8.0 * total_bytes as f64 / total_weights as f64,
        crate::thousands(bytes.len() - total_bytes)
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
            crate::thousands(t.data.len()),
            crate::thousands(t.scales.len())
        );
    }
    println!();
    let batch = args.batch as usize;
    for n in [1, batch] {
        // The exact figure Session::new asks for (Model::arena_size), so a user can size a static arena.
        println!(
            "session arena at batch {n:>4}: {} bytes (two ping-pong buffers of {} f32 each, plus {} f32 of \
             probabilities; the weights are read in place)",
            crate::thousands(model.arena_size(n)),
            crate::thousands(runtime::scratch_len(&model, n)),
            crate::thousands(n * model.metadata().classes)
        );
    }
    Ok(())
}

pub fn cmd_bench_pack(args: BenchPackArgs) -> Result<()> {
    let path = crate::resolve_checkpoint(&args.checkpoint)?;
    let source_len = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
    let ckpt = Checkpoint::open(&path)?;
    let scopes = scopes(&ckpt)?;
    let plans: Vec<(Vec<Quant>, String)> = args
        .plans
        .iter()
        .map(|p| {
            let mut parts = p.split(',');
            let base = parts.next().unwrap_or_default();
            let overrides: Vec<String> = parts.map(str::to_string).collect();
            let (choice, _) = plan(&scopes, base, &overrides).with_context(|| format!("plan \"{p}\""))?;
            Ok((choice, p.clone()))
        })
        .collect::<Result<_>>()?;
    let data = crate::load_data(&args.data)?;
    let threads = threads(&args.data);
    let network = ckpt.network();
    let meta = Metadata {
        input: network.input,
        labels: (0..network.classes()?).map(|c| c.to_string()).collect(),
        mean: 0.0,
        std: 1.0,
        model_name: network.name.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        source_file: String::new(),
        quantization: String::new(),
        source_step: ckpt.step(),
        source_sha256: [0; 32],
        test_correct: 0,
        test_examples: 0,
    };
    let f32_file = pack(&ckpt, &vec![Quant::F32; scopes.len()], &meta)?;
    let (weights, _) = weight_count(&f32_file)?;
    let reference = predict_all(&f32_file, &data.test, threads, Isa::best())?;
    let total = data.test.len();
    let pct = |n: usize| 100.0 * n as f64 / total as f64;
    let correct = |p: &[u8]| p.iter().zip(&data.test.labels).filter(|(a, b)| a == b).count();
    let base = pct(correct(&reference));
    println!(
        "{} (step {}), {} bytes; {total} test images through kiln-core",
        path.display(),
        ckpt.step(),
        crate::thousands(source_len as usize)
    );
    println!(
        "{:<40} {:>12} {:>7} {:>6} {:>9} {:>7} {:>9}",
        "packing", "bytes", "ratio", "bits", "test acc", "change", "agreement"
    );
    let row = |name: &str, bytes: usize, stored: usize, predicted: &[u8]| {
        let agree = reference.iter().zip(predicted).filter(|(a, b)| a == b).count();
        let acc = pct(correct(predicted));
        println!(
            "{name:<40} {:>12} {:>6.1}x {:>6.2} {:>7.2} % {:>+7.2} {:>7.2} %",
            crate::thousands(bytes),
            source_len as f64 / bytes as f64,
            8.0 * stored as f64 / weights as f64,
            acc,
            acc - base,
            pct(agree)
        );
    };
    row("f32", f32_file.len(), weight_count(&f32_file)?.1, &reference);
    for (choice, description) in &plans {
        let file = pack(&ckpt, choice, &meta)?;
        let predicted = predict_all(&file, &data.test, threads, Isa::best())?;
        row(description, file.len(), weight_count(&file)?.1, &predicted);
    }
    Ok(())
}

/// `kiln eval model.kiln`: the packed model's test accuracy through kiln-core's runtime, with one kernel
/// build or every build this CPU has (`--isa all`), which must all predict the same classes.
pub fn cmd_eval_packed(path: &std::path::Path, data_args: &DataArgs, isa: &str, show_mistakes: usize) -> Result<()> {
    let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = Packed::from_bytes(&file).with_context(|| format!("{} is not a valid model file", path.display()))?;
    let data = crate::load_data(data_args)?;
    let isas: Vec<Isa> = match isa {
        "all" => Isa::ALL.into_iter().filter(|isa| isa.is_available()).collect(),
        name => vec![crate::bench_infer::isa(name)?],
    };
    let meta = *model.metadata();
    println!("Model: {} ({}) from {}", meta.model_name(), meta.quantization(), path.display());
    let threads = threads(data_args);
    let mut first: Option<(Isa, Vec<u8>)> = None;
    for isa in isas {
        let started = Instant::now();
        let predicted = predict_all(&file, &data.test, threads, isa)?;
        let correct = predicted.iter().zip(&data.test.labels).filter(|(p, l)| p == l).count();
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
                let differ = predicted.iter().zip(expected).filter(|(a, b)| a != b).count();
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
        let now =
            predicted.iter().zip(&data.test.labels).filter(|(p, l)| p == l).count() as f64 / predicted.len() as f64;
        println!(
            "Measured when packed: {:.2} % ({} of {}){}",
            100.0 * packed,
            meta.test_correct,
            meta.test_examples,
            if (now - packed).abs() < 1e-12 { ", the same" } else { "" }
        );
    }
    if show_mistakes > 0 {
        let wrong: Vec<usize> = (0..predicted.len()).filter(|&i| predicted[i] != data.test.labels[i]).collect();
        println!(
            "Wrong on {} of {} test digits; the first {}:",
            wrong.len(),
            predicted.len(),
            show_mistakes.min(wrong.len())
        );
        for &i in wrong.iter().take(show_mistakes) {
            println!("  test #{i:>5}: label {}, predicted {}", data.test.labels[i], predicted[i]);
        }
    }
    Ok(())
}

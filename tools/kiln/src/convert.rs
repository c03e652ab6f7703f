//! `kiln convert`: a checkpoint to a `.kiln` file, with the size and accuracy cost printed. The work is
//! kiln-pack's (`kiln_pack::convert`); this module reads the arguments and prints the report, and lends
//! both to `kiln web-assets` and `kiln bench pack`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_pack::convert::{self, Conversion, ConvertError, Measurement, Source};
use kiln_pack::eval::EvalOptions;
use kiln_pack::writer::Quant;
use kiln_pack::{QuantPlan, QuantPlanError};
use kiln_train::data::Dataset;

use crate::ckpt::resolve_checkpoint;
use crate::data::{DataArgs, load_data, threads};
use crate::ui::{ImagesBar, thousands};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A checkpoint or weights file, or a checkpoint directory (its latest checkpoint): Kiln's own, a
    /// TensorFlow Saver checkpoint (`vgg_net.ckpt-N`, any of its files, or its directory), or an ONNX file.
    pub checkpoint: PathBuf,
    /// For a TensorFlow checkpoint: take the network from this preset (fc3, convnet4, vgg) instead of the
    /// `.meta` graph, matching tensors by shape (the mapping is printed). Needed when there is no `.meta`.
    #[arg(long, value_name = "PRESET")]
    pub model: Option<String>,
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
    /// How the integer path quantizes activations: `dynamic` (per image and layer, from its own range) or
    /// `static` (scales calibrated on training images and stored in the file: 8-bit activations throughout,
    /// a smaller arena, no per-image range pass). Needs integer weights (int8, int4, int2, mixed).
    #[arg(long, default_value = "dynamic", value_parser = ["dynamic", "static"])]
    pub activations: String,
    /// Round int4 and int2 layers with GPTQ: each layer's rounding errors are compensated by its other
    /// weights, measured on 256 training images (the test set stays unseen). On by default when a layer is
    /// int4 or int2 and the training images are found.
    #[arg(long, overrides_with = "no_gptq")]
    pub gptq: bool,
    /// Round every weight to its nearest level instead.
    #[arg(long, overrides_with = "gptq")]
    pub no_gptq: bool,
    /// Training images `--activations static` calibrates on.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub calibration_images: u32,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Whether any layer of the plan is int4 or int2 (what GPTQ rounds).
pub fn is_low_bit(conversion: &Conversion<'_>) -> bool {
    conversion.plan().quants.iter().any(|q| matches!(q, Quant::Int4 { .. } | Quant::Int2 { .. }))
}

/// Runs GPTQ on the first [`convert::GPTQ_IMAGES`] of `train` and says what it did. Images of another shape
/// than the network's input are an error when GPTQ was asked for (`required`), else a note.
pub fn compensate_rounding(conversion: &mut Conversion<'_>, train: &Dataset, required: bool) -> Result<()> {
    let images = first_images(train, convert::GPTQ_IMAGES);
    match conversion.compensate_rounding(&images) {
        Ok(done) if done.layers.is_empty() => {
            eprintln!("GPTQ: no int4/int2 layer whose blocks tile its rows; every weight rounded to its nearest level")
        }
        Ok(done) => eprintln!(
            "GPTQ rounded {} on {} training images in {:.1} s",
            done.layers.join(", "),
            done.images,
            done.seconds
        ),
        Err(e @ ConvertError::CalibrationShape { .. }) if !required => {
            eprintln!("note: {e}, so every weight is rounded to its nearest level")
        }
        Err(e) => return Err(anyhow::Error::new(e).context("GPTQ")),
    }
    Ok(())
}

/// The first `count` images of `data` (all of them if it has fewer).
fn first_images(data: &Dataset, count: usize) -> Dataset {
    let count = count.min(data.len());
    let pixels = count * data.rows * data.cols;
    Dataset {
        rows: data.rows,
        cols: data.cols,
        pixels: data.pixels[..pixels].to_vec(),
        labels: data.labels[..count].to_vec(),
    }
}

/// The checkpoint a file or directory argument names, opened (every tensor's CRC checked): Kiln's own, or
/// TensorFlow's.
pub fn open_source(path: &Path) -> Result<Source> {
    open_source_as(path, None)
}

/// [`open_source`], with the network of a TensorFlow checkpoint taken from `preset` when given.
pub fn open_source_as(path: &Path, preset: Option<&str>) -> Result<Source> {
    if kiln_import::tf::is_tf_checkpoint(path) {
        return open_tensorflow(path, preset);
    }
    if kiln_import::onnx::is_onnx(path) {
        if preset.is_some() {
            bail!(
                "--model is for TensorFlow checkpoints without a .meta graph; an ONNX file describes its own network"
            );
        }
        return open_onnx(path);
    }
    if let Some(preset) = preset {
        bail!(
            "--model {preset} is for TensorFlow checkpoints without a .meta graph; {} is a Kiln checkpoint, which \
             describes its own network",
            path.display()
        );
    }
    let path = resolve_checkpoint(path)?;
    Ok(Source::open(&path)?)
}

/// Names an imported network after the preset it equals, if any.
fn name_after_preset(network: &mut kiln_train::network::Network) {
    let same = |p: &kiln_train::network::Network| p.layers == network.layers && p.input == network.input;
    if let Some(p) = ["fc3", "convnet4", "vgg"].into_iter().filter_map(kiln_train::presets::by_name).find(same) {
        network.name = p.name;
    }
}

/// An ONNX file as a conversion source, through kiln-import (tract-onnx's protobuf types).
fn open_onnx(path: &Path) -> Result<Source> {
    use sha2::{Digest, Sha256};
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("onnx").split('.').next().unwrap_or("onnx");
    let mut imported = kiln_import::onnx::import(path, stem)?;
    name_after_preset(&mut imported.model.network);
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    eprintln!(
        "ONNX file {} ({}): network {}, {} ops{}",
        path.display(),
        if imported.producer.is_empty() { "no producer named" } else { &imported.producer },
        imported.model.network.name,
        imported.chain.len() - 1,
        if imported.permuted { "; dense weights permuted from the C,H,W flatten to Kiln's H,W,C" } else { "" }
    );
    Ok(Source {
        path: path.to_path_buf(),
        step: 0,
        len: bytes.len(),
        sha256: Sha256::digest(&bytes).into(),
        optimizer_state: false,
        model: imported.model,
    })
}

/// A TensorFlow Saver checkpoint as a conversion source: the network from its `.meta` graph (named after
/// the preset it equals, if any) or from `preset`, the weights from its bundle, the optimizer slots dropped.
fn open_tensorflow(path: &Path, preset: Option<&str>) -> Result<Source> {
    use sha2::{Digest, Sha256};
    let ckpt = kiln_import::tf::TfCheckpoint::open(path)?;
    let stem = ckpt.prefix.file_name().and_then(|n| n.to_str()).unwrap_or("tf").split(".ckpt").next().unwrap_or("tf");
    let model = match preset {
        Some(name) => {
            let network = kiln_train::presets::by_name(name)
                .with_context(|| format!("--model {name}: not a preset (fc3, convnet4, vgg)"))?;
            let (model, mapping) = ckpt.to_model_as(network)?;
            eprintln!("tensors matched to {name} by shape, in name order:");
            for (kiln, tf) in mapping {
                eprintln!("  {kiln:<16} <- {tf}");
            }
            model
        }
        None => {
            let mut model = ckpt.to_model(stem)?;
            name_after_preset(&mut model.network);
            model
        }
    };
    let (mut len, mut hash) = (0, Sha256::new());
    for file in ckpt.files() {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        len += bytes.len();
        hash.update(&bytes);
    }
    let slots: Vec<String> =
        ckpt.bundle.entries().into_iter().filter(|e| kiln_import::tf::is_slot(&e.name)).map(|e| e.name).collect();
    eprintln!(
        "TensorFlow checkpoint {} (step {}, every CRC32C checked): network {} from {}; {} optimizer and bookkeeping \
         tensors dropped",
        ckpt.prefix.display(),
        ckpt.step,
        model.network.name,
        if preset.is_some() { "the --model preset" } else { "the .meta graph" },
        slots.len()
    );
    Ok(Source {
        path: ckpt.prefix.clone(),
        step: ckpt.step,
        len,
        sha256: hash.finalize().into(),
        optimizer_state: ckpt.has_optimizer_state(),
        model,
    })
}

/// A plan error with the command-line flag it came from: `--quant` or `--layer SCOPE=TYPE`.
pub fn plan_error(error: QuantPlanError) -> anyhow::Error {
    let context = match error.override_spec() {
        Some(spec) => format!("--layer {spec}"),
        None => "--quant".to_string(),
    };
    anyhow::Error::new(error).context(context)
}

/// Measures `conversion` on `test` (recording the accuracy in its file), saying how long it took.
pub fn measure(conversion: &mut Conversion<'_>, test: &Dataset, threads: usize) -> Result<Measurement> {
    let bar = ImagesBar::default();
    let measured = conversion.measure(test, &EvalOptions { progress: &bar, ..EvalOptions::new(threads) })?;
    eprintln!("evaluated 2 x {} test images through kiln-core in {:.1} s", measured.total, measured.seconds);
    Ok(measured)
}

/// The report of one conversion: the source, the f32 network and the packed file, each with its size and,
/// when measured, its accuracy.
pub fn print_report(source: &Source, conversion: &Conversion<'_>, measured: Option<&Measurement>, output: &Path) {
    let label = if source.optimizer_state { "checkpoint" } else { "source weights file" };
    let mut rows = vec![(label.to_string(), source.len, None, None, None)];
    let bits = Some(conversion.bits_per_weight());
    let packed = conversion.file().len();
    let description = conversion.metadata().quantization.clone();
    match measured {
        Some(m) => {
            rows.push((
                "f32 network".into(),
                m.reference_bytes,
                Some(32.0),
                Some(m.percent(m.reference_correct)),
                Some(100.0),
            ));
            rows.push((description, packed, bits, Some(m.percent(m.correct)), Some(m.percent(m.agreement))));
        }
        None => rows.push((description, packed, bits, None, None)),
    }

    println!(
        "Packed {} (step {}) from {} in {:.1} s",
        source.network().name,
        source.step,
        source.path.display(),
        conversion.pack_seconds()
    );
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
            thousands(*size),
            source.len as f64 / *size as f64,
            opt(*bits, ""),
            opt(*acc, " %"),
            opt(*agreement, " %"),
        );
    }
    if let [.., (_, _, _, Some(before), _), (_, _, _, Some(after), _)] = rows[..] {
        println!("Accuracy change: {:+.2} points", after - before);
    }
    println!("Wrote {} ({} bytes)", output.display(), thousands(packed));
}

pub fn cmd_convert(args: ConvertArgs) -> Result<()> {
    let source = open_source_as(&args.checkpoint, args.model.as_deref())?;
    let plan = QuantPlan::new(&source.layers(), &args.quant, &args.layers).map_err(plan_error)?;
    let mut conversion = Conversion::new(&source.model, plan, &source.provenance())?;

    let data = if args.no_eval {
        None
    } else {
        match load_data(&args.data) {
            Ok(data) => Some(data),
            Err(e) if args.data.data.is_none() && !args.eval => {
                eprintln!("note: no test set, so no accuracy measured ({e:#}); pass --data DIR to measure it");
                None
            }
            Err(e) => return Err(e),
        }
    };
    if args.gptq || (is_low_bit(&conversion) && !args.no_gptq) {
        let loaded;
        let train = match &data {
            Some(data) => Some(&data.train),
            None => match load_data(&args.data) {
                Ok(d) => {
                    loaded = d;
                    Some(&loaded.train)
                }
                Err(e) if !args.gptq => {
                    eprintln!("note: no training images, so every weight is rounded to its nearest level ({e:#})");
                    None
                }
                Err(e) => return Err(e.context("--gptq measures each layer's inputs on training images")),
            },
        };
        if let Some(train) = train {
            compensate_rounding(&mut conversion, train, args.gptq)?;
        }
    }
    if args.activations == "static" {
        let loaded;
        let train = match &data {
            Some(data) => &data.train,
            None => {
                loaded = load_data(&args.data).context("--activations static calibrates on training images")?;
                &loaded.train
            }
        };
        let calibration = first_images(train, args.calibration_images as usize);
        let options = EvalOptions::new(threads(&args.data));
        conversion.make_static(&calibration, &options).context("--activations static")?;
        eprintln!("calibrated static activation scales on {} training images", calibration.len());
    }
    let measured = match &data {
        Some(data) => Some(measure(&mut conversion, &data.test, threads(&args.data))?),
        None => None,
    };
    convert::write_model_file(&args.output, conversion.file())?;
    print_report(&source, &conversion, measured.as_ref(), &args.output);
    Ok(())
}

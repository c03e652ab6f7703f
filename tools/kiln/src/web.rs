//! The browser demo's data and server: `kiln web-assets` packs a checkpoint several ways into
//! `DIR/models/`, with `models.json` (each file's size and measured accuracy, read back from its metadata)
//! and `digits.json` (real test digits, including ones the default model gets wrong). `kiln serve`, which
//! serves the page, is in `serve.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kiln_core::Model;
use kiln_pack::QuantPlan;
use kiln_pack::convert::{Conversion, write_model_file};
use kiln_pack::eval::mistakes;
use serde::Serialize;

use crate::convert::{compensate_rounding, is_low_bit, measure, open_source, plan_error, print_report};
use crate::data::{DataArgs, load_data, threads};

#[derive(Args, Debug)]
pub struct WebAssetsArgs {
    /// A checkpoint or weights file, or a checkpoint directory (its latest checkpoint).
    pub checkpoint: PathBuf,
    /// The page's directory (web/dist after `web/build.sh`).
    #[arg(long, default_value = "web/dist")]
    pub out: PathBuf,
    /// Packings to offer, the first being the default.
    #[arg(long, value_delimiter = ',', default_values_t = ["int8".to_string(), "int4".into(), "f16".into(), "f32".into()])]
    pub quants: Vec<String>,
    /// Test digits shown on the page besides the ones the default model gets wrong.
    #[arg(long, default_value_t = 16)]
    pub digits: usize,
    /// Of which up to this many are mistakes of the default model.
    #[arg(long, default_value_t = 8)]
    pub wrong: usize,
    #[command(flatten)]
    pub data: DataArgs,
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `models.json` record: one packed file the page offers, as its metadata describes it.
#[derive(Serialize)]
struct ModelRecord {
    file: String,
    name: String,
    quantization: String,
    bytes: usize,
    /// Test accuracy (0..=1) measured when packed.
    accuracy: Option<f64>,
    default: bool,
}

/// A `digits.json` record: a real test digit and the default model's prediction.
#[derive(Serialize)]
struct DigitRecord {
    index: usize,
    label: u8,
    predicted: u8,
    /// The 28x28 bytes, base64.
    pixels: String,
}

/// serde_json's layout for the page's files: a list with one record per line,
/// `[\n  {"key": value, ...},\n  ...\n]`, and fractions to six decimals.
struct OneRecordPerLine;

impl serde_json::ser::Formatter for OneRecordPerLine {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"[\n")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"\n]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b"  " } else { b",\n  " })
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b"" } else { b", " })
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> std::io::Result<()> {
        write!(w, "{value:.6}")
    }
}

/// `records` as a JSON list, one record per line, with a final newline.
fn records_json<T: Serialize>(records: &[T]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    records.serialize(&mut serde_json::Serializer::with_formatter(&mut out, OneRecordPerLine))?;
    out.push(b'\n');
    Ok(out)
}

/// Writes `records` to `path` as [`records_json`] lays them out.
fn write_records<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    std::fs::write(path, records_json(records)?)?;
    Ok(())
}

pub fn cmd_web_assets(args: WebAssetsArgs) -> Result<()> {
    let models_dir = args.out.join("models");
    std::fs::create_dir_all(&models_dir).with_context(|| format!("creating {}", models_dir.display()))?;
    let source = open_source(&args.checkpoint)?;
    let threads = threads(&args.data);
    let mut data = None;
    let mut records = Vec::new();
    let mut default_predictions = None;
    for (i, quant) in args.quants.iter().enumerate() {
        let file_name = format!("model-{}.kiln", quant.replace('/', "-"));
        let output = models_dir.join(&file_name);
        let plan = QuantPlan::new::<&str>(&source.layers(), quant, &[]).map_err(plan_error)?;
        let mut conversion = Conversion::new(&source.model, plan, &source.provenance())?;
        if data.is_none() {
            data = Some(load_data(&args.data)?);
        }
        if is_low_bit(&conversion) {
            compensate_rounding(&mut conversion, &data.as_ref().expect("loaded above").train, false)?;
        }
        let test = &data.as_ref().expect("loaded above").test;
        let measured = measure(&mut conversion, test, threads)?;
        write_model_file(&output, conversion.file())?;
        print_report(&source, &conversion, Some(&measured), &output);

        let bytes = conversion.file();
        let model = Model::from_bytes(bytes).with_context(|| format!("{} is not a valid model", output.display()))?;
        let meta = model.metadata();
        records.push(ModelRecord {
            file: file_name,
            name: meta.model_name().into(),
            quantization: meta.quantization().into(),
            bytes: bytes.len(),
            accuracy: meta.test_accuracy(),
            default: i == 0,
        });
        if i == 0 {
            default_predictions = Some(measured.predicted);
        }
    }
    write_records(&args.out.join("models.json"), &records)?;

    // Real test digits, with the default model's predictions: the first few and some it gets wrong.
    let data = match data {
        Some(data) => data,
        None => load_data(&args.data)?,
    };
    let predicted = default_predictions.context("--quants is empty")?;
    let wrong: Vec<usize> = mistakes(&predicted, &data.test.labels).take(args.wrong).collect();
    let chosen: Vec<usize> = (0..args.digits.min(data.test.len())).chain(wrong.iter().copied()).collect();
    let digits: Vec<DigitRecord> = chosen
        .iter()
        .map(|&i| DigitRecord {
            index: i,
            label: data.test.labels[i],
            predicted: predicted[i],
            pixels: base64(data.test.image(i)),
        })
        .collect();
    write_records(&args.out.join("digits.json"), &digits)?;
    println!(
        "Wrote {} models, models.json and digits.json ({} digits, {} the default model gets wrong) to {}",
        args.quants.len(),
        chosen.len(),
        wrong.len(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_one_per_line() {
        let model = |file: &str, accuracy, default| ModelRecord {
            file: file.into(),
            name: "fc3 \"v2\"".into(),
            quantization: "int8".into(),
            bytes: 656_936,
            accuracy,
            default,
        };
        let json = records_json(&[model("a.kiln", Some(0.9462), true), model("b.kiln", None, false)]).unwrap();
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            "[\n  {\"file\": \"a.kiln\", \"name\": \"fc3 \\\"v2\\\"\", \"quantization\": \"int8\", \"bytes\": 656936, \
             \"accuracy\": 0.946200, \"default\": true},\n  {\"file\": \"b.kiln\", \"name\": \"fc3 \\\"v2\\\"\", \
             \"quantization\": \"int8\", \"bytes\": 656936, \"accuracy\": null, \"default\": false}\n]\n"
        );
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back[0]["accuracy"], 0.9462);
        assert_eq!(back[1]["name"], "fc3 \"v2\"");
        let digit = DigitRecord { index: 3, label: 1, predicted: 7, pixels: base64(&[0, 255, 7, 1]) };
        assert_eq!(
            records_json(&[digit]).unwrap(),
            b"[\n  {\"index\": 3, \"label\": 1, \"predicted\": 7, \"pixels\": \"AP8HAQ==\"}\n]\n"
        );
        assert_eq!(records_json::<DigitRecord>(&[]).unwrap(), b"[\n\n]\n");
    }
}

//! The browser demo's data and server: `kiln web-assets` packs a checkpoint several ways into
//! `DIR/models/`, with `models.json` (each file's size and measured accuracy, read back from its metadata)
//! and `digits.json` (real test digits, including ones the default model gets wrong); `kiln serve` serves a
//! directory on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_core::Model;

use crate::DataArgs;
use crate::pack::{self, ConvertArgs};

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

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

pub fn cmd_web_assets(args: WebAssetsArgs) -> Result<()> {
    let models_dir = args.out.join("models");
    std::fs::create_dir_all(&models_dir).with_context(|| format!("creating {}", models_dir.display()))?;
    let mut entries = Vec::new();
    let mut default_file = None;
    for (i, quant) in args.quants.iter().enumerate() {
        let file_name = format!("model-{}.kiln", quant.replace('/', "-"));
        let output = models_dir.join(&file_name);
        pack::cmd_convert(ConvertArgs {
            checkpoint: args.checkpoint.clone(),
            output: output.clone(),
            quant: quant.clone(),
            layers: vec![],
            eval: true,
            no_eval: false,
            data: DataArgs { data: args.data.data.clone(), threads: args.data.threads },
        })?;
        let bytes = std::fs::read(&output)?;
        let model = Model::from_bytes(&bytes).with_context(|| format!("{} is not a valid model", output.display()))?;
        let meta = model.metadata();
        let accuracy = meta.test_accuracy().map_or("null".to_string(), |a| format!("{a:.6}"));
        entries.push(format!(
            "  {{\"file\": {}, \"name\": {}, \"quantization\": {}, \"bytes\": {}, \"accuracy\": {accuracy}, \"default\": {}}}",
            json_string(&file_name),
            json_string(meta.model_name()),
            json_string(meta.quantization()),
            bytes.len(),
            i == 0
        ));
        if i == 0 {
            default_file = Some(bytes);
        }
    }
    std::fs::write(args.out.join("models.json"), format!("[\n{}\n]\n", entries.join(",\n")))?;

    // Real test digits, with the default model's predictions: the first few and some it gets wrong.
    let data = crate::load_data(&args.data)?;
    let file = default_file.context("--quants is empty")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let predicted = pack::predict_all(&file, &data.test, threads, kiln_core::Isa::best())?;
    let wrong: Vec<usize> =
        (0..data.test.len()).filter(|&i| predicted[i] != data.test.labels[i]).take(args.wrong).collect();
    let chosen: Vec<usize> = (0..args.digits.min(data.test.len())).chain(wrong.iter().copied()).collect();
    let digits: Vec<String> = chosen
        .iter()
        .map(|&i| {
            format!(
                "  {{\"index\": {i}, \"label\": {}, \"predicted\": {}, \"pixels\": \"{}\"}}",
                data.test.labels[i],
                predicted[i],
                base64(data.test.image(i))
            )
        })
        .collect();
    std::fs::write(args.out.join("digits.json"), format!("[\n{}\n]\n", digits.join(",\n")))?;
    println!(
        "Wrote {} models, models.json and digits.json ({} digits, {} the default model gets wrong) to {}",
        args.quants.len(),
        chosen.len(),
        wrong.len(),
        args.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory to serve.
    #[arg(long, default_value = "web/dist")]
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The file a request path names inside `root`, refusing anything that climbs out of it.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let mut out = root.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn respond(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut line)?;
    // Drain the headers.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let file = if method == "GET" || method == "HEAD" { resolve(root, target) } else { None };
    match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
        Some((file, body)) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
                content_type(&file),
                body.len()
            )?;
            if method == "GET" {
                stream.write_all(&body)?;
            }
        }
        None => {
            let body = format!("not found: {target}\n");
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
    }
    stream.flush()
}

pub fn cmd_serve(args: ServeArgs) -> Result<()> {
    if !args.dir.join("index.html").is_file() {
        bail!("{} has no index.html: build the page first (web/build.sh)", args.dir.display());
    }
    let listener =
        TcpListener::bind(("127.0.0.1", args.port)).with_context(|| format!("listening on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    println!("Serving {} at http://127.0.0.1:{port}/ (Ctrl-C stops)", args.dir.display());
    std::io::stdout().flush()?;
    let root = args.dir.clone();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = respond(stream, &root);
        });
    }
    Ok(())
}

//! `kiln serve`: a directory (the demo page) on 127.0.0.1, through hyper's HTTP/1.1 server and tower-http's
//! `ServeDir` (which refuses paths that climb out of the directory, encoded forms included, and picks the
//! MIME type). What a local demo server still needs on top, and gets here:
//! - GET and HEAD only (405 otherwise);
//! - a bounded request head (hyper answers 431 past [`MAX_HEAD_BYTES`]);
//! - a client that doesn't finish its request head within `--timeout` is dropped, and no connection lives
//!   longer than [`CONNECTION_LIFETIME`];
//! - at most [`MAX_CONNECTIONS`] connections at once (the rest wait in the listen queue).

use std::convert::Infallible;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Bytes of request line and headers a connection may buffer (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The longest any one connection is kept, however it behaves.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory to serve.
    #[arg(long, default_value = "web/dist")]
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Seconds a client has to send its request line and headers before it is dropped.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 3600")),
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from_static(message.as_bytes())).map_err(|n| match n {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// One request: GET or HEAD from the directory, else 405.
async fn handle(files: ServeDir, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let Ok(response) = files.oneshot(request).await;
    let mut response = response.map(|body| body.boxed_unsync());
    // The page is rebuilt in place (web/build.sh): never let the browser keep a stale runtime or model.
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn accept_loop(listener: tokio::net::TcpListener, files: ServeDir, timeout: Duration) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = slots.clone().acquire_owned().await.context("connection limit")?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                eprintln!("kiln serve: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let files = files.clone();
        tokio::spawn(async move {
            let service = tower::service_fn(move |request| handle(files.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            // A client that misbehaves only loses its own connection.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

pub fn cmd_serve(args: ServeArgs) -> Result<()> {
    if !args.dir.join("index.html").is_file() {
        bail!("{} has no index.html: build the page first (web/build.sh)", args.dir.display());
    }
    let listener =
        TcpListener::bind(("127.0.0.1", args.port)).with_context(|| format!("listening on 127.0.0.1:{}", args.port))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .build()
        .context("starting the server's runtime")?;
    let files = ServeDir::new(&args.dir).append_index_html_on_directories(true);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        println!("Serving {} at http://127.0.0.1:{port}/ (Ctrl-C stops)", args.dir.display());
        std::io::stdout().flush()?;
        accept_loop(listener, files, Duration::from_secs_f64(args.timeout)).await
    })
}

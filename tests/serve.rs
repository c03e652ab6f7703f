//! `kiln serve` as clients meet it, good and bad: file types, paths that try to climb out of the directory
//! (encoded too), methods other than GET and HEAD, an oversized request, clients that never finish their
//! request, more idle clients than the connection cap, and a bounded load with the server's memory watched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "SECRET-OUTSIDE-THE-PAGE";

/// A `kiln serve` child on a temporary page directory; killed and cleaned up on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(timeout_seconds: &str) -> Server {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("kiln-serve-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
    let page = dir.join("page");
    std::fs::create_dir_all(page.join("sub")).unwrap();
    std::fs::write(page.join("index.html"), "<html>the kiln page</html>").unwrap();
    std::fs::write(page.join("sub/index.html"), "<html>a sub page</html>").unwrap();
    std::fs::write(page.join("app.js"), "console.log('kiln');".repeat(200)).unwrap();
    std::fs::write(page.join("runtime.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--port", "0", "--timeout", timeout_seconds, "--dir"])
        .arg(&page)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port, dir }
}

/// Sends `raw` on a new connection and returns everything the server sends back before closing.
fn exchange(port: u16, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before an oversized request is all written.
    let _ = stream.write_all(raw);
    let mut response = Vec::new();
    // A reset after the response (the server closing on unread input) still leaves what was read.
    let _ = stream.read_to_end(&mut response);
    response
}

fn get(port: u16, target: &str) -> String {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&exchange(port, raw.as_bytes())).into_owned()
}

fn status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn resident_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn serves_the_page_with_its_types() {
    let server = start("10");
    let index = get(server.port, "/");
    assert_eq!(status(&index), 200, "{index}");
    assert!(index.ends_with("<html>the kiln page</html>"), "{index}");
    assert!(header(&index, "content-type").unwrap().starts_with("text/html"), "{index}");
    assert_eq!(header(&index, "cache-control"), Some("no-cache"));
    let sub = get(server.port, "/sub/");
    assert!(sub.ends_with("<html>a sub page</html>"), "{sub}");
    let script = get(server.port, "/app.js?v=2");
    assert_eq!(status(&script), 200);
    assert!(header(&script, "content-type").unwrap().contains("javascript"), "{script}");
    assert_eq!(header(&get(server.port, "/runtime.wasm"), "content-type"), Some("application/wasm"));
    let head = String::from_utf8(exchange(
        server.port,
        b"HEAD /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ))
    .unwrap();
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "content-length"), Some("4000"));
    assert!(head.ends_with("\r\n\r\n"), "HEAD sent a body: {head}");
    assert_eq!(status(&get(server.port, "/missing.kiln")), 404);
}

#[test]
fn no_path_climbs_out_of_the_directory() {
    let server = start("10");
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/../../../../../../etc/passwd",
    ] {
        let response = get(server.port, target);
        assert!(!response.contains(SECRET) && !response.contains("root:"), "{target} leaked: {response}");
        assert_ne!(status(&response), 200, "{target}: {response}");
    }
    // And the server is still there.
    assert_eq!(status(&get(server.port, "/")), 200);
}

#[test]
fn only_get_and_head_are_served() {
    let server = start("10");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let raw = format!(
            "{method} /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = String::from_utf8(exchange(server.port, raw.as_bytes())).unwrap();
        assert_eq!(status(&response), 405, "{method}: {response}");
        assert_eq!(header(&response, "allow"), Some("GET, HEAD"));
    }
}

#[test]
fn an_oversized_request_is_refused_and_the_server_goes_on() {
    let server = start("10");
    let long = format!("/index.html?{}", "a".repeat(100_000));
    let response = get(server.port, &long);
    assert_ne!(status(&response), 200, "a 100 KB request line was served");
    let headers: String = (0..2000).map(|i| format!("X-Padding-{i}: {}\r\n", "b".repeat(40))).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n");
    let response = String::from_utf8_lossy(&exchange(server.port, raw.as_bytes())).into_owned();
    assert_ne!(status(&response), 200, "100 KB of headers were served");
    assert_eq!(status(&get(server.port, "/")), 200);
}

#[test]
fn clients_that_never_finish_are_dropped_and_do_not_block_others() {
    let server = start("1");
    // More half-sent requests than the server takes connections at once.
    let mut slow: Vec<TcpStream> = (0..80)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            stream.write_all(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
            stream
        })
        .collect();
    // Each slow client is dropped within its timeout (1 s) plus slack.
    let began = Instant::now();
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || status(&text) == 408, "a half request got {text}");
    }
    assert!(began.elapsed() < Duration::from_secs(8), "slow clients held on for {:?}", began.elapsed());
    let started = Instant::now();
    assert_eq!(status(&get(server.port, "/")), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn fifty_clients_forty_requests_each_with_flat_memory() {
    let server = start("10");
    let port = server.port;
    // Warm up, so that the baseline holds the runtime's threads and buffers.
    for _ in 0..50 {
        assert_eq!(status(&get(port, "/app.js")), 200);
    }
    let before = resident_kib(&server);
    let began = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|c| {
            std::thread::spawn(move || {
                (0..40).filter(|r| status(&get(port, if (c + r) % 2 == 0 { "/app.js" } else { "/" })) == 200).count()
            })
        })
        .collect();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let took = began.elapsed();
    let after = resident_kib(&server);
    assert_eq!(served, 2000, "{served} of 2,000 requests served");
    assert!(took < Duration::from_secs(60), "2,000 requests took {took:?}");
    assert!(after < before + 20 * 1024, "resident memory grew from {before} KiB to {after} KiB");
    println!("2,000 requests from 50 clients in {took:?}; resident {before} -> {after} KiB");
}

#[test]
fn bad_arguments_are_named() {
    for timeout in ["0", "-1", "soon", "NaN"] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_kiln")).arg("serve").arg(format!("--timeout={timeout}")).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not a number of seconds"), "{timeout}: {stderr}");
    }
    let missing = std::env::temp_dir().join("kiln-serve-no-such-page");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(["serve", "--dir"]).arg(&missing).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no index.html"));
}

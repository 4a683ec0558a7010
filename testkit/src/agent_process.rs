//! Driving an `egret-agent` process from a test or a benchmark
//! (`runtime/tests`, `runtime/examples/kube_scale.rs`): the process killed on drop, its
//! output captured, its metrics server asked, its pinned state polled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_loader::{Generation, inspect};

/// The agent process, killed (and reaped) on drop, also when the caller panics.
#[derive(Debug)]
pub struct AgentProcess(pub Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file removed on drop.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The lines of `out` so far, read by a thread that ends with the stream;
/// echoed as `TAG: line` when `echo` names a tag.
pub fn capture(out: impl Read + Send + 'static, echo: Option<&'static str>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(tag) = echo {
                println!("{tag}: {line}");
            }
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

/// The first captured line starting with `prefix`, if any.
pub fn line_with(lines: &Mutex<Vec<String>>, prefix: &str) -> Option<String> {
    lines.lock().expect("lines").iter().find(|l| l.starts_with(prefix)).cloned()
}

/// `GET path` on the agent's metrics server: status code and body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics server");
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of the sample `name` (with its labels, if any: `name{a="b"}`)
/// in a `/metrics` body (NaN if absent).
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Waits until `f` returns `Some` (`limit` at most), polling every
/// `every`; panics if the agent exits meanwhile.
pub fn wait_within<T>(
    what: &str,
    agent: &mut Child,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("{what}: the agent exited with {status}");
        }
        assert!(start.elapsed() < limit, "{what}: timed out after {limit:?}");
        std::thread::sleep(every);
    }
}

/// The running generation, and the interfaces attached.
pub fn running(root: &Path) -> Option<(Generation, Vec<String>)> {
    let st = inspect::status(root).ok()?;
    let g = st.generations.iter().find(|g| g.running)?.generation;
    Some((g, st.attachments.iter().filter_map(|a| a.interface.clone()).collect()))
}

/// The shipped example's policies and cluster (`examples/`) in one
/// directory, as `--snapshot` reads them.
pub fn example_snapshot(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for sub in ["policies", "cluster"] {
        for e in std::fs::read_dir(examples.join(sub)).expect("examples") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
        }
    }
}

//! `egret-bench metrics-server`: `/healthz` latency of the agent's metrics
//! server (`egret_runtime::metrics::serve`, loopback only) with no other
//! client, then while `idle` connections are held open (half send nothing,
//! half half a request head and stall), as the kubelet's probe sees it.
//! Sequential requests, bounded in count; p50/p99/max per phase and the
//! ratio of the loaded p99 to the quiet one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use egret_runtime::metrics::{Telemetry, serve};

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// Idle connections held during the phase.
    pub idle: usize,
    /// Requests timed.
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn healthz(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let took = started.elapsed();
    anyhow::ensure!(reply.starts_with(b"HTTP/1.1 200"), "/healthz: {}", String::from_utf8_lossy(&reply));
    Ok(took)
}

fn phase(addr: SocketAddr, idle: usize, requests: usize) -> anyhow::Result<Phase> {
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut s = TcpStream::connect(addr)?;
        if i % 2 == 1 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ")?;
        }
        held.push(s);
    }
    let mut times = (0..requests).map(|_| healthz(addr)).collect::<anyhow::Result<Vec<_>>>()?;
    drop(held);
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Ok(Phase { idle, requests, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) })
}

/// Runs both phases.
///
/// # Errors
/// The server cannot bind, or a request fails.
pub fn run(idle: usize, requests: usize) -> anyhow::Result<Vec<Phase>> {
    anyhow::ensure!(requests > 0, "--requests must be at least 1");
    let t = Telemetry::new(Path::new("/nonexistent/egret"));
    t.alive();
    let (addr, _thread) = serve("127.0.0.1:0".parse()?, t)?;
    Ok(vec![phase(addr, 0, requests)?, phase(addr, idle, requests)?])
}

/// The table.
#[must_use]
pub fn render(phases: &[Phase]) -> String {
    let mut out = String::from("idle connections  requests  /healthz p50 ms  p99 ms  max ms\n");
    for p in phases {
        out.push_str(&format!(
            "{:>16}  {:>8}  {:>15.3}  {:>6.3}  {:>6.3}\n",
            p.idle, p.requests, p.p50_ms, p.p99_ms, p.max_ms
        ));
    }
    if let [quiet, loaded] = phases {
        out.push_str(&format!("p99 with idle connections / without: {:.2}\n", loaded.p99_ms / quiet.p99_ms));
    }
    out
}

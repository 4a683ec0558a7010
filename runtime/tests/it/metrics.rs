//! The metrics server under idle connections, and `/metrics` through a
//! Prometheus text-format parser (unprivileged: loopback only).
//!
//! The figure (`/healthz` in under 50 ms with 100 idle connections
//! held) is measured by `egret-bench metrics`; here the server must answer
//! at all, within a generous 5 s, while they are held.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use egret_compiler::plan::NodeCounts;
use egret_runtime::metrics::{self, Telemetry, Unattached};

/// `GET path` with `headers`: status code, headers and body.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n{headers}\r\n").expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("a complete answer within 5 s");
    let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (code, head.to_owned(), body.to_owned())
}

fn telemetry() -> std::sync::Arc<Telemetry> {
    let t = Telemetry::new(Path::new("/nonexistent/egret"));
    t.alive();
    t.compiled(Duration::from_millis(12), true);
    let counts = NodeCounts::default();
    t.applied(3, Some(Duration::from_micros(700)), counts, Vec::new(), Unattached::default());
    t.event_to_dataplane(Duration::from_millis(80));
    t
}

#[test]
fn healthz_answers_while_100_idle_connections_are_held() {
    let (addr, _thread) = metrics::serve("127.0.0.1:0".parse().expect("addr"), telemetry()).expect("bind");
    // 100 clients that connect and send nothing, and 100 that send half a
    // request head and stall (both kinds stalled a one-at-a-time server)
    let mut idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).expect("idle connection")).collect();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).expect("stalled connection");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ").expect("half a head");
        idle.push(s);
    }
    let started = Instant::now();
    let (code, _, body) = get(addr, "/healthz", "");
    let took = started.elapsed();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, body) = get(addr, "/readyz", "");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    println!("/healthz answered in {:.2} ms with {} idle connections held", took.as_secs_f64() * 1e3, idle.len());
    // the idle connections are closed by the server in the end
    let mut first = idle.swap_remove(0);
    first.set_read_timeout(Some(metrics::server::CONNECTION_TIMEOUT * 2)).expect("timeout");
    let mut rest = Vec::new();
    assert_eq!(first.read_to_end(&mut rest).ok(), Some(0), "an idle connection is closed without an answer");
}

#[test]
fn metrics_pass_a_prometheus_text_format_parser() {
    let (addr, _thread) = metrics::serve("127.0.0.1:0".parse().expect("addr"), telemetry()).expect("bind");
    let (code, head, body) = get(addr, "/metrics", "");
    assert_eq!(code, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
    // the parser skips what it cannot read: every sample line must be one it
    // read (a histogram's `_bucket` lines are one sample of the histogram)
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let read = scrape.samples.iter().any(|s| {
            s.metric == name
                || (name.strip_suffix("_bucket") == Some(s.metric.as_str())
                    && matches!(s.value, prometheus_parse::Value::Histogram(_)))
        });
        assert!(read, "the parser did not read `{line}` in\n{body}");
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "`{line}`: not a number");
    }
    let find = |name: &str| scrape.samples.iter().find(|s| s.metric == name);
    let build = find("egret_build_info").expect("egret_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(matches!(find("egret_generation").map(|s| &s.value), Some(prometheus_parse::Value::Gauge(g)) if *g == 3.0));
    assert!(
        matches!(find("egret_swaps_total").map(|s| &s.value), Some(prometheus_parse::Value::Counter(c)) if *c == 1.0)
    );
    let Some(prometheus_parse::Value::Histogram(buckets)) = find("egret_event_to_dataplane_seconds").map(|s| &s.value)
    else {
        panic!("egret_event_to_dataplane_seconds is a histogram in\n{body}");
    };
    let le = |bound: f64| buckets.iter().find(|b| b.less_than == bound).map(|b| b.count);
    assert_eq!((le(0.05), le(0.1), le(f64::INFINITY)), (Some(0.0), Some(1.0), Some(1.0)));
    for s in &scrape.samples {
        assert!(s.labels.get("node").is_none(), "{} has a node label (Prometheus adds the target's)", s.metric);
    }
    // OpenMetrics on request
    let (code, head, body) = get(addr, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[test]
fn the_server_refuses_what_it_does_not_serve() {
    let t = Telemetry::new(Path::new("/nonexistent/egret"));
    let (addr, _thread) = metrics::serve("127.0.0.1:0".parse().expect("addr"), t).expect("bind");
    assert_eq!(get(addr, "/healthz", "").0, 503, "no loop pass yet");
    let (code, _, body) = get(addr, "/readyz", "");
    assert_eq!((code, body.as_str()), (503, "no generation serving yet\n"));
    assert_eq!(get(addr, "/nope", "").0, 404);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"\xff\xfe garbage\r\n\r\n").expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(get(addr, "/healthz", "").0, 503, "still serving after garbage");
}

//! The flow audit log on the mini-cluster (issue #21): 1,000 connections
//! through gateway-1 — TCP connections closed by the pod, TCP connections
//! still open, UDP flows whose translations leave the table without a FIN
//! (their reverse entries deleted, as the LRU table evicts them) — then
//! `egret-agent flows who EGRESS_IP:PORT --json`, the command a user runs,
//! for a sample of the NAT ports the server saw: each names the right pod,
//! destination and policy, and the connection's end (closed, expired, or
//! none yet).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use egret_bpf::templates::{self, FlowEvent, NatKey, Stat};
use egret_loader::pins::PinLayout;
use egret_loader::state::StateMap;
use egret_testkit::minicluster::{EGRESS_IP, MiniCluster, SERVER, Source, TCP_PORT, UDP_PORT};

use super::{AGENT, Leftovers, privileged, stat};

/// The policy of the mini-cluster's snapshot.
const POLICY: &str = "egress-gateway-policy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Expired,
    Open,
}

/// One connection the test made: the pod, the server's port, the NAT port
/// the server saw, how it should have ended.
#[derive(Debug, Clone, Copy)]
struct Made {
    pod: &'static str,
    port: u16,
    nat_port: u16,
    end: End,
    /// Before the request and after its answer: when the connection was
    /// created (a NAT port may serve another connection later).
    during: (jiff::Timestamp, jiff::Timestamp),
}

/// `egret-agent flows who` for one egress port, parsed.
fn who(dir: &Path, nat_port: u16, at: Option<&str>) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(AGENT);
    cmd.args(["flows", "who", &SocketAddr::new(EGRESS_IP.into(), nat_port).to_string(), "--json", "--dir"]).arg(dir);
    if let Some(t) = at {
        cmd.args(["--at", t]);
    }
    let out = cmd.output().expect("egret-agent runs");
    assert!(out.status.success(), "flows who: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("JSON")
}

fn ended(v: &serde_json::Value) -> End {
    match v["ended"]["how"].as_str() {
        Some("closed") => End::Closed,
        Some("expired") => End::Expired,
        _ => End::Open,
    }
}

#[test]
fn flows_who_names_pod_destination_and_policy_of_a_thousand_connections() {
    if !privileged("flows_who_names_pod_destination_and_policy_of_a_thousand_connections") {
        return;
    }
    let mut c = MiniCluster::prepare("e2efl").expect("the mini-cluster is built");
    c.enable_flow_log(egret_runtime::flows::log::DEFAULT_MAX_BYTES);
    c.start_agents(Path::new(AGENT), Source::Snapshot).expect("the agents start");
    let leftovers = Leftovers::of(&c);
    let dir = c.flow_log_dir("gateway-1").expect("a flow log");
    let started = jiff::Timestamp::now();

    let mut made = Vec::with_capacity(1000);
    // 600 TCP connections, closed by the pod (FIN through the gateway)
    for i in 0..600 {
        let pod = if i % 3 == 2 { "egress-2" } else { "egress-1" };
        let t0 = jiff::Timestamp::now();
        let seen = c.tcp_request(pod, SERVER).unwrap_or_else(|e| panic!("TCP {i} from {pod}: {e}"));
        assert_eq!(seen.ip, IpAddr::from(EGRESS_IP));
        let during = (t0, jiff::Timestamp::now());
        made.push(Made { pod, port: TCP_PORT, nat_port: seen.port, end: End::Closed, during });
    }
    // 100 TCP connections kept open
    let mut open = Vec::with_capacity(100);
    for i in 0..100 {
        let t0 = jiff::Timestamp::now();
        let conn = c.tcp_connect("egress-2", SERVER).unwrap_or_else(|e| panic!("open TCP {i}: {e}"));
        let during = (t0, jiff::Timestamp::now());
        made.push(Made { pod: "egress-2", port: TCP_PORT, nat_port: conn.seen.port, end: End::Open, during });
        open.push(conn);
    }
    // 300 UDP flows, then their translations evicted from the table (the
    // LRU table may have evicted some of them already: expired all the same)
    // (a UDP socket's ephemeral port may come again: the same 5-tuple is
    // the same translation, so only new NAT ports count)
    let mut i = 0;
    while made.len() < 1000 {
        let pod = if i % 2 == 0 { "egress-1" } else { "egress-2" };
        let t0 = jiff::Timestamp::now();
        let seen = c.udp_request(pod, SERVER).unwrap_or_else(|e| panic!("UDP {i} from {pod}: {e}"));
        let during = (t0, jiff::Timestamp::now());
        i += 1;
        if !made.iter().any(|m| m.port == UDP_PORT && m.nat_port == seen.port) {
            made.push(Made { pod, port: UDP_PORT, nat_port: seen.port, end: End::Expired, during });
        }
    }
    assert_eq!(made.len(), 1000);
    let rnat = templates::maps().into_iter().find(|d| d.name == templates::map::RNAT_V4).expect("rnat");
    let table = StateMap::open(&PinLayout::new(c.bpffs_root("gateway-1")), &rnat).expect("opens").expect("pinned");
    for m in made.iter().filter(|m| m.end == End::Expired) {
        let key = NatKey { src: EGRESS_IP, dst: SERVER, sport: m.nat_port, dport: UDP_PORT, proto: 17 };
        table.remove(&key.to_bytes()).expect("evicted");
    }

    // the log catches up: every connection created, the closed ones closed,
    // the evicted ones expired (the agents sweep every FLOW_LOG_SWEEP_MS)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = egret_runtime::flows::query::list(&dir, &Default::default()).expect("the log reads");
        let count = |e: End| {
            log.iter()
                .filter(|k| match e {
                    End::Closed => k.ended.is_some_and(|x| x.how == egret_runtime::flows::FlowKind::Closed),
                    End::Expired => k.ended.is_some_and(|x| x.how == egret_runtime::flows::FlowKind::Expired),
                    End::Open => k.ended.is_none(),
                })
                .count()
        };
        let (closed, expired) = (count(End::Closed), count(End::Expired));
        // plus what the agents' own set-up sent: the start-up checks' connections
        if closed >= 600 && expired >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "the log has {} connections, {closed} closed, {expired} expired", log.len());
        std::thread::sleep(Duration::from_millis(200));
    }

    // a sample: every 10th connection of each kind, through the command line
    for m in made.iter().step_by(10) {
        let found = who(&dir, m.nat_port, None);
        let ours: Vec<&serde_json::Value> = found
            .iter()
            .filter(|v| v["dst"] == format!("{SERVER}:{}", m.port) && v["pod"]["name"] == m.pod)
            .filter(|v| {
                let opened: jiff::Timestamp = v["opened"].as_str().and_then(|t| t.parse().ok()).expect("opened");
                let slack = jiff::SignedDuration::from_millis(10);
                opened >= m.during.0 - slack && opened <= m.during.1 + slack
            })
            .collect();
        assert_eq!(ours.len(), 1, "{m:?}: flows who answered {found:#?}");
        let v = ours[0];
        assert_eq!(v["pod"]["namespace"], "production", "{m:?}");
        assert_eq!(v["pod"]["ip"], minicluster_pod_ip(m.pod), "{m:?}");
        assert_eq!(v["pod"]["node"], egret_testkit::minicluster::pod(m.pod).node, "{m:?}");
        assert_eq!(v["policy"], POLICY, "{m:?}");
        assert_eq!(v["gateway"], "gateway-1", "{m:?}");
        assert_eq!(v["proto"], if m.port == UDP_PORT { "udp" } else { "tcp" }, "{m:?}");
        assert_eq!(ended(v), m.end, "{m:?}: {v:#}");
        // --at: alive at its creation, not before the test began
        let opened = v["opened"].as_str().expect("opened");
        assert!(who(&dir, m.nat_port, Some(opened)).iter().any(|w| w["pod"]["name"] == m.pod), "{m:?} at {opened}");
        let before = (started - jiff::SignedDuration::from_secs(60)).to_string();
        assert!(
            who(&dir, m.nat_port, Some(&before)).iter().all(|w| w["opened"] != v["opened"]),
            "{m:?} was not alive before the test"
        );
    }

    // the counters: every record written, none lost
    assert!(metric(&c, "egret_flow_records_written_total{event=\"created\"}") >= 1000);
    assert!(metric(&c, "egret_flow_records_written_total{event=\"closed\"}") >= 600);
    assert!(metric(&c, "egret_flow_records_written_total{event=\"expired\"}") >= 300);
    assert_eq!(metric(&c, "egret_flow_events_dropped_total"), 0);
    drop(open);
    drop(c);
    leftovers.assert_gone();
    assert!(!dir.exists(), "the flow log is removed with the cluster");
}

/// A sample of gateway-1's `/metrics`.
fn metric(c: &MiniCluster, name: &str) -> u64 {
    let (code, metrics) = c.agent_http("gateway-1", "/metrics").expect("metrics");
    assert_eq!(code, 200);
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

fn minicluster_pod_ip(name: &str) -> String {
    egret_testkit::minicluster::pod(name).ip.to_string()
}

/// The flood: gateway-1's agent stalled (SIGSTOP: its reader drains
/// nothing) while a pod opens far more new connections than the ring holds.
/// Every packet is translated and arrives (the datapath does not wait for
/// the reader); the events that did not fit are counted; once the agent
/// runs again it writes what the ring held, and written + dropped is every
/// connection created; the log stays within its bound, rotating.
#[test]
fn a_flood_of_new_connections_drops_events_not_packets_and_the_log_stays_bounded() {
    if !privileged("a_flood_of_new_connections_drops_events_not_packets_and_the_log_stays_bounded") {
        return;
    }
    const BOUND: u64 = 256 * 1024;
    const FLOOD: u16 = 30_000;
    let mut c = MiniCluster::prepare("e2eff").expect("the mini-cluster is built");
    c.enable_flow_log(BOUND);
    c.start_agents(Path::new(AGENT), Source::Snapshot).expect("the agents start");
    let leftovers = Leftovers::of(&c);
    let dir = c.flow_log_dir("gateway-1").expect("a flow log");
    let (created0, dropped0) = (stat(&c, Stat::NatCreated), stat(&c, Stat::FlowEventDropped));
    let written0 = metric(&c, "egret_flow_records_written_total{event=\"created\"}");

    c.pause_agent("gateway-1", true).expect("SIGSTOP");
    let flood = c.udp_to_ports("egress-1", SERVER.into(), 1..=FLOOD);
    c.pause_agent("gateway-1", false).expect("SIGCONT");
    let flood = flood.expect("the flood is sent");
    assert_eq!((flood.sent, flood.failed), (u64::from(FLOOD), 0));
    assert!(flood.arrived >= u64::from(FLOOD), "every datagram arrived at the server: {flood:?}");
    let created = stat(&c, Stat::NatCreated) - created0;
    assert_eq!(created, u64::from(FLOOD), "each a new translation");
    let dropped = stat(&c, Stat::FlowEventDropped) - dropped0;
    let ring = u64::from(egret_bpf::layout::FLOW_EVENTS_BYTES) / (FlowEvent::SIZE as u64 + 8).next_multiple_of(8);
    assert!(dropped >= created - ring, "{dropped} events dropped, the ring holds {ring}");

    // the reader catches up with what the ring held
    let deadline = Instant::now() + Duration::from_secs(20);
    let written = loop {
        let w = metric(&c, "egret_flow_records_written_total{event=\"created\"}") - written0;
        if w + dropped >= created {
            break w;
        }
        assert!(Instant::now() < deadline, "{w} written, {dropped} dropped of {created}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(written + dropped, created, "every event written or counted dropped");
    println!(
        "flood: {} new connections, {} arrived; events: {written} written, {dropped} dropped",
        flood.sent, flood.arrived
    );
    assert_eq!(metric(&c, "egret_flow_events_dropped_total"), stat(&c, Stat::FlowEventDropped));
    let size = egret_runtime::flows::log::size(&dir).expect("the log's size");
    assert!(size <= BOUND, "the log holds {size} bytes, bound {BOUND}");
    println!("flood: the log holds {size} bytes (bound {BOUND})");
    let segments = egret_runtime::flows::log::segments(&dir).expect("segments");
    assert_eq!(segments.len(), egret_runtime::flows::log::DEFAULT_FILES as usize, "rotated, the oldest deleted");
    // what the log kept: the newest of the events the ring held (the
    // connections after them were dropped), named
    let kept = egret_runtime::flows::query::list(&dir, &Default::default()).expect("the log reads");
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|k| k.flow.pod.name.as_deref() == Some("egress-1") && k.flow.dst.ip() == SERVER));
    drop(c);
    leftovers.assert_gone();
}

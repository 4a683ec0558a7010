//! The flow log without the kernel: records, rotation within the bound, the
//! index, `who` across closed and expired connections, the pipeline's
//! expiry.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use egret_bpf::templates::{FlowEvent, FlowEventKind};
use jiff::Timestamp;

use super::log::{FlowLog, LogConfig, read_index, segments, size};
use super::query::{Filter, connections, list, parse_time, who};
use super::reader::{Clock, Entry, Pipeline};
use super::{Directory, FlowKind};
use crate::metrics::FlowCounters;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("egret-flows-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const EGRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

fn event(kind: FlowEventKind, pod: u8, sport: u16, nat_port: u16, time_ns: u64) -> FlowEvent {
    FlowEvent {
        kind,
        proto: 6,
        flags: 0,
        slot: 1,
        time_ns,
        src: Ipv4Addr::new(10, 1, 0, pod).into(),
        sport,
        dst: Ipv4Addr::new(203, 0, 113, 20).into(),
        dport: 443,
        egress_ip: EGRESS.into(),
        nat_port,
        node: Ipv4Addr::new(192, 0, 2, 1).into(),
    }
}

/// Monotonic 1,000 s is 2026-12-08T10:00:00Z.
fn clock(mono_s: u64) -> Clock {
    let base: Timestamp = "2026-12-08T10:00:00Z".parse().expect("time");
    Clock {
        wall: base.checked_add(jiff::SignedDuration::from_secs(mono_s as i64 - 1000)).expect("add"),
        mono_ns: mono_s * 1_000_000_000,
    }
}

fn s(secs: u64) -> u64 {
    secs * 1_000_000_000
}

fn egress(port: u16) -> SocketAddr {
    SocketAddr::new(EGRESS.into(), port)
}

#[test]
fn who_names_open_closed_and_expired_connections_at_their_times() {
    let d = Dir::new("who");
    let counters = FlowCounters::default();
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", counters.clone()).expect("pipeline");
    let dir = Directory::default();
    let c = clock(1000);
    // three connections on three ports, one closed, one expiring, one open
    p.event(&event(FlowEventKind::Created, 5, 40000, 61234, s(990)), &dir, &c);
    p.event(&event(FlowEventKind::Created, 6, 40001, 61235, s(991)), &dir, &c);
    p.event(&event(FlowEventKind::Created, 7, 40002, 61236, s(992)), &dir, &c);
    p.event(&event(FlowEventKind::Closed, 5, 40000, 61234, s(995)), &dir, &c);
    p.sweep(&clock(1010), |r| match r.flow.egress.port() {
        61235 => Entry::Live { expires_ns: s(1005) },
        _ => Entry::Live { expires_ns: s(2000) },
    });
    p.flush();
    assert_eq!(p.open_connections(), 1);
    let at = |t: &str| Some(parse_time(t).expect("time"));
    let closed = who(d.path(), egress(61234), at("2026-12-08T09:59:52Z")).expect("who");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].flow.pod.ip, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)));
    assert_eq!(closed[0].flow.pod.node.as_deref(), Some("192.0.2.1"), "an unknown node by its address");
    assert_eq!(
        closed[0].ended.map(|e| (e.how, e.at)),
        Some((FlowKind::Closed, parse_time("2026-12-08T09:59:55Z").expect("t")))
    );
    assert!(who(d.path(), egress(61234), at("2026-12-08T09:59:56Z")).expect("who").is_empty(), "closed by then");
    let expired = who(d.path(), egress(61235), None).expect("who");
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0].ended.map(|e| (e.how, e.at)),
        Some((FlowKind::Expired, parse_time("2026-12-08T10:00:05Z").expect("t"))),
        "expired at its expires_ns"
    );
    let open = who(d.path(), egress(61236), at("2026-12-08T11:00")).expect("who");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].ended, None);
    assert_eq!(counters.written_total(), 5, "3 created, 1 closed, 1 expired");
    // a restarted reader takes the open connection back and expires it when its entry is gone
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", counters).expect("pipeline");
    assert_eq!(p.open_connections(), 1);
    p.sweep(&clock(1100), |_| Entry::Gone);
    p.flush();
    let gone = who(d.path(), egress(61236), None).expect("who");
    assert_eq!(gone[0].ended.map(|e| e.how), Some(FlowKind::Expired));
    assert_eq!(gone[0].flow.pod.ip, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7)));
}

#[test]
fn a_new_connection_on_an_open_key_ends_the_old_one() {
    let d = Dir::new("reuse");
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", FlowCounters::default()).expect("pipeline");
    let dir = Directory::default();
    p.event(&event(FlowEventKind::Created, 5, 40000, 61234, s(990)), &dir, &clock(1000));
    p.event(&event(FlowEventKind::Created, 5, 40000, 61234, s(999)), &dir, &clock(1000));
    p.flush();
    let conns = who(d.path(), egress(61234), None).expect("who");
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].ended.map(|e| e.how), Some(FlowKind::Expired));
    assert_eq!(conns[1].ended, None);
}

#[test]
fn rotation_keeps_the_bound_and_sealed_segments_are_indexed() {
    let d = Dir::new("rotate");
    let config = LogConfig { dir: d.path().to_path_buf(), max_bytes: 64 * 1024, files: 4 };
    let log = FlowLog::open(config.clone()).expect("log");
    let mut p = Pipeline::new(log, "gw-1", FlowCounters::default()).expect("pipeline");
    let dir = Directory::default();
    for i in 0..3000u16 {
        p.event(&event(FlowEventKind::Created, 5, 1000 + i, 20000 + i, s(900) + u64::from(i)), &dir, &clock(1000));
    }
    p.flush();
    let segs = segments(d.path()).expect("segments");
    assert_eq!(segs.len(), 4, "the oldest deleted");
    assert!(size(d.path()).expect("size") <= config.max_bytes);
    for s in &segs[..3] {
        let index = read_index(s).expect("a sealed segment has an index");
        assert!(index.first <= index.last);
        assert!(!index.egress.is_empty());
    }
    assert!(read_index(&segs[3]).is_none(), "the segment being written has none");
    // the newest connection is found; the oldest is gone with its segment
    assert_eq!(who(d.path(), egress(20000 + 2999), None).expect("who").len(), 1);
    assert!(who(d.path(), egress(20000), None).is_ok_and(|c| c.is_empty()), "rotated away");
    // through an index: a connection of a sealed segment
    let first_kept = connections(super::log::read_segment(&segs[0].path).expect("read"))[0].flow.egress;
    assert_eq!(who(d.path(), first_kept, None).expect("who").len(), 1);
}

#[test]
fn list_filters_by_pod_policy_destination_and_time() {
    let d = Dir::new("list");
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", FlowCounters::default()).expect("pipeline");
    let dir = Directory::default();
    p.event(&event(FlowEventKind::Created, 5, 40000, 61234, s(990)), &dir, &clock(1000));
    p.event(&event(FlowEventKind::Closed, 5, 40000, 61234, s(991)), &dir, &clock(1000));
    p.event(&event(FlowEventKind::Created, 6, 40000, 61235, s(995)), &dir, &clock(1000));
    p.flush();
    let all = list(d.path(), &Filter::default()).expect("list");
    assert_eq!(all.len(), 2);
    let by_pod = list(d.path(), &Filter { pod: Some("10.1.0.6".into()), ..Filter::default() }).expect("list");
    assert_eq!(by_pod.len(), 1);
    assert_eq!(by_pod[0].flow.egress, egress(61235));
    let since = Filter { since: Some(parse_time("2026-12-08T09:59:52Z").expect("t")), ..Filter::default() };
    assert_eq!(list(d.path(), &since).expect("list").len(), 1, "the first closed before");
    let dst = Filter { dst: Some("203.0.113.20:443".into()), ..Filter::default() };
    assert_eq!(list(d.path(), &dst).expect("list").len(), 2);
    let policy = Filter { policy: Some("nope".into()), ..Filter::default() };
    assert!(list(d.path(), &policy).expect("list").is_empty());
}

#[test]
fn a_cut_line_is_dropped_on_reopen() {
    let d = Dir::new("cut");
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", FlowCounters::default()).expect("pipeline");
    p.event(&event(FlowEventKind::Created, 5, 40000, 61234, s(990)), &Directory::default(), &clock(1000));
    p.flush();
    drop(p);
    let seg = &segments(d.path()).expect("segments")[0];
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg.path).expect("open");
    std::io::Write::write_all(&mut f, b"{\"time\":\"2026").expect("write");
    drop(f);
    let log = FlowLog::open(LogConfig::new(d.path())).expect("log");
    let mut p = Pipeline::new(log, "gw-1", FlowCounters::default()).expect("pipeline");
    p.event(&event(FlowEventKind::Closed, 5, 40000, 61234, s(991)), &Directory::default(), &clock(1000));
    p.flush();
    let text = std::fs::read_to_string(&seg.path).expect("read");
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| serde_json::from_str::<super::FlowRecord>(l).is_ok()));
}

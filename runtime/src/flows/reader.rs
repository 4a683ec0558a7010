//! The agent's flow-log thread: drains `egret_flow_events`, writes records,
//! finds expired connections.
//!
//! - The ring is read through `mmap` (aya's `RingBuf` on the pinned state
//!   map): reading never blocks the programs, and a ring the reader has not
//!   emptied makes the programs drop events, counted by the datapath
//!   (`flow-event-dropped`), not wait. When the ring is empty the thread
//!   sleeps [`IDLE`]; the ring's size ([`egret_bpf::layout::FLOW_EVENTS_BYTES`])
//!   holds what arrives meanwhile.
//! - [`Pipeline`] is the logic without the kernel: events in, records out,
//!   and the connections it saw created kept until they close or expire
//!   (the log's open connections are taken back at start, so a restarted
//!   agent still writes their end).
//! - Every [`ReaderConfig::sweep`] the open connections are looked up in
//!   `egret_rnat_v4` / `egret_rnat_v6`: an entry gone (evicted), taken by
//!   another connection, or past its `expires_ns` gives *expired*.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, RingBuf};
use egret_bpf::templates::{self, FlowEvent, FlowEventKind, GwAddr, NatKey, ReverseNat};
use egret_loader::pins::PinLayout;
use egret_loader::state::StateMap;
use jiff::{SignedDuration, Timestamp};

use super::log::{FlowLog, LogConfig, segments};
use super::query::connections;
use super::{Directory, FlowKind, FlowRecord, kind_of, proto_number};
use crate::metrics::FlowCounters;

/// How long the thread sleeps when the ring is empty.
pub const IDLE: Duration = Duration::from_millis(10);
/// The default interval of expiry sweeps.
pub const DEFAULT_SWEEP: Duration = Duration::from_secs(2);
/// The most events drained before the log is flushed and the clock re-read.
const BATCH: usize = 4096;

/// How the reader is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// The loader's bpffs root (the ring and the NAT tables are its state maps).
    pub root: PathBuf,
    /// This node's name (the records' `gateway`).
    pub node: String,
    /// The log.
    pub log: LogConfig,
    /// How often open connections are checked for expiry.
    pub sweep: Duration,
}

/// A point read on both clocks: converts the programs' `ktime_get_ns`
/// (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock time.
    pub wall: Timestamp,
    /// CLOCK_MONOTONIC at the same moment, ns.
    pub mono_ns: u64,
}

impl Clock {
    /// Now.
    #[must_use]
    pub fn now() -> Clock {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let mono_ns = (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64);
        Clock { wall: Timestamp::now(), mono_ns }
    }

    /// The wall-clock time of monotonic `ns`.
    #[must_use]
    pub fn wall(&self, ns: u64) -> Timestamp {
        let back = i64::try_from(self.mono_ns.abs_diff(ns)).unwrap_or(i64::MAX);
        let d = SignedDuration::from_nanos(if ns <= self.mono_ns { -back } else { back });
        self.wall.checked_add(d).unwrap_or(self.wall)
    }
}

/// An open connection's key: its reverse NAT entry's fields.
type OpenKey = (String, SocketAddr, SocketAddr);

fn key_of(r: &FlowRecord) -> OpenKey {
    (r.flow.proto.clone(), r.flow.egress, r.flow.dst)
}

/// What the NAT table says about an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Not there (evicted, or the table is gone).
    Gone,
    /// There, for another pod's connection (the port was reused).
    Other,
    /// There, ours, with its `expires_ns`.
    Live {
        /// `ReverseNat::expires_ns`.
        expires_ns: u64,
    },
}

/// Events in, records out (see the module doc).
#[derive(Debug)]
pub struct Pipeline {
    log: FlowLog,
    node: String,
    open: HashMap<OpenKey, FlowRecord>,
    counters: FlowCounters,
}

impl Pipeline {
    /// A pipeline writing to `log`, with the connections the log has open
    /// taken back.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn new(log: FlowLog, node: &str, counters: FlowCounters) -> io::Result<Pipeline> {
        let mut records = Vec::new();
        for s in segments(&log.config().dir)? {
            records.extend(super::log::read_segment(&s.path)?);
        }
        let open = connections(records)
            .into_iter()
            .filter(|c| c.ended.is_none())
            .map(|c| {
                let r = FlowRecord { time: c.opened, event: FlowKind::Created, flow: c.flow, opened: None };
                (key_of(&r), r)
            })
            .collect();
        Ok(Pipeline { log, node: node.to_owned(), open, counters })
    }

    /// How many connections are open.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    fn write(&mut self, r: &FlowRecord) {
        match self.log.append(r) {
            Ok(()) => self.counters.written(r.event),
            Err(e) => {
                self.counters.lost("write-error");
                tracing::warn!(error = %e, "flow log: a record could not be written");
            }
        }
    }

    /// One datapath event.
    pub fn event(&mut self, e: &FlowEvent, dir: &Directory, clock: &Clock) {
        let time = clock.wall(e.time_ns);
        match e.kind {
            FlowEventKind::Created => {
                let r = dir.record(&self.node, e, kind_of(e.kind), time, None);
                // a new connection on the key of one we still had open: that
                // one is over (its entry was taken)
                if let Some(old) = self.open.remove(&key_of(&r)) {
                    self.write(&ended(&old, FlowKind::Expired, time));
                }
                self.write(&r);
                self.open.insert(key_of(&r), r);
            }
            FlowEventKind::Closed => {
                let probe = dir.record(&self.node, e, FlowKind::Closed, time, None);
                let r = match self.open.remove(&key_of(&probe)) {
                    Some(created) => ended(&created, FlowKind::Closed, time),
                    // created before the reader ran (or its event dropped)
                    None => probe,
                };
                self.write(&r);
            }
        }
    }

    /// Looks every open connection up (`lookup`) and writes *expired* for
    /// those whose entry is gone, taken, or past its timeout.
    pub fn sweep(&mut self, clock: &Clock, mut lookup: impl FnMut(&FlowRecord) -> Entry) {
        let mut done = Vec::new();
        for (k, r) in &self.open {
            let at = match lookup(r) {
                Entry::Gone | Entry::Other => clock.wall,
                Entry::Live { expires_ns } if expires_ns < clock.mono_ns => clock.wall(expires_ns).max(r.time),
                Entry::Live { .. } => continue,
            };
            done.push((k.clone(), at));
        }
        for (k, at) in done {
            if let Some(r) = self.open.remove(&k) {
                self.write(&ended(&r, FlowKind::Expired, at));
            }
        }
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) {
        if let Err(e) = self.log.flush() {
            self.counters.lost("write-error");
            tracing::warn!(error = %e, "flow log: flushing failed");
        }
    }
}

/// The end record of the connection `created`.
fn ended(created: &FlowRecord, how: FlowKind, at: Timestamp) -> FlowRecord {
    FlowRecord { time: at, event: how, opened: Some(created.time), ..created.clone() }
}

/// The NAT tables of a root, as [`Pipeline::sweep`] asks them.
fn lookup_in<A: GwAddr>(map: Option<&StateMap>, r: &FlowRecord, egress: A, dst: A, pod: IpAddr) -> Entry {
    let Some(map) = map else { return Entry::Gone };
    let r = &r.flow;
    let Some(proto) = proto_number(&r.proto) else { return Entry::Gone };
    let key = NatKey { src: egress, dst, sport: r.egress.port(), dport: r.dst.port(), proto };
    match map.get(&key.to_bytes()) {
        Ok(Some(v)) => match ReverseNat::<A>::from_bytes(&v) {
            Some(v) if v.orig_src.into() == pod && v.orig_sport == r.pod.port => {
                Entry::Live { expires_ns: v.expires_ns }
            }
            _ => Entry::Other,
        },
        // an error is not an answer: keep it open until the next sweep
        Err(_) => Entry::Live { expires_ns: u64::MAX },
        Ok(None) => Entry::Gone,
    }
}

fn open_state(layout: &PinLayout, name: &str) -> Option<StateMap> {
    let def = templates::maps().into_iter().find(|d| d.name == name)?;
    StateMap::open(layout, &def).ok().flatten()
}

fn open_ring(layout: &PinLayout) -> Option<RingBuf<MapData>> {
    let data = MapData::from_pin(layout.state_map(templates::map::FLOW_EVENTS)).ok()?;
    RingBuf::try_from(Map::RingBuf(data)).ok()
}

/// The running reader.
#[derive(Debug)]
pub struct FlowReader {
    stop: Arc<AtomicBool>,
    directory: Arc<Mutex<Arc<Directory>>>,
    thread: Option<JoinHandle<()>>,
}

impl FlowReader {
    /// Opens the log and starts the thread (which waits for the ring to be
    /// pinned, then drains it).
    ///
    /// # Errors
    /// The log cannot be opened.
    pub fn start(config: ReaderConfig, counters: FlowCounters) -> io::Result<FlowReader> {
        let log = FlowLog::open(config.log.clone())?;
        let mut pipeline = Pipeline::new(log, &config.node, counters)?;
        let stop = Arc::new(AtomicBool::new(false));
        let directory = Arc::new(Mutex::new(Arc::new(Directory::default())));
        let (s, d) = (stop.clone(), directory.clone());
        let thread = std::thread::Builder::new()
            .name("egret-flows".into())
            .spawn(move || run(&config, &mut pipeline, &s, &d))?;
        Ok(FlowReader { stop, directory, thread: Some(thread) })
    }

    /// Names the events from now on with `d`.
    pub fn set_directory(&self, d: Arc<Directory>) {
        if let Ok(mut g) = self.directory.lock() {
            *g = d;
        }
    }
}

impl Drop for FlowReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(config: &ReaderConfig, p: &mut Pipeline, stop: &AtomicBool, directory: &Mutex<Arc<Directory>>) {
    let layout = PinLayout::new(&config.root);
    let mut ring = None;
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let Some(rb) = ring.as_mut() else {
            ring = open_ring(&layout);
            if ring.is_none() {
                std::thread::sleep(IDLE * 10);
            }
            continue;
        };
        let dir = directory.lock().map(|d| d.clone()).unwrap_or_default();
        let clock = Clock::now();
        let mut n = 0;
        while n < BATCH {
            let Some(item) = rb.next() else { break };
            match FlowEvent::from_bytes(&item) {
                Some(e) => p.event(&e, &dir, &clock),
                None => p.counters.lost("undecodable"),
            }
            n += 1;
        }
        if last_sweep.elapsed() >= config.sweep {
            last_sweep = Instant::now();
            let (v4, v6) = (open_state(&layout, templates::map::RNAT_V4), open_state(&layout, templates::map::RNAT_V6));
            p.sweep(&Clock::now(), |r| match (r.flow.egress.ip(), r.flow.dst.ip()) {
                (IpAddr::V4(e), IpAddr::V4(d)) => lookup_in::<Ipv4Addr>(v4.as_ref(), r, e, d, r.flow.pod.ip),
                (IpAddr::V6(e), IpAddr::V6(d)) => lookup_in::<Ipv6Addr>(v6.as_ref(), r, e, d, r.flow.pod.ip),
                _ => Entry::Gone,
            });
        }
        p.flush();
        if n == 0 {
            std::thread::sleep(IDLE);
        }
    }
    p.flush();
}

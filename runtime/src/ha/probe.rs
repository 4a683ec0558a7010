//! The prober: probes each gateway over the underlay, learns of the replies
//! from the datapath, decides liveness ([`super::liveness`]) and writes it
//! to `egret_gw_live`.
//!
//! Contract of one tick ([`Probing::tick`]; [`Prober`] runs one every
//! [`liveness::Config::interval`] on a thread of its own):
//! 1. **Targets**: the gateways last given to [`Probing::set_targets`]. A new
//!    target starts [`State::Unknown`] — or `Down` when `egret_gw_live`
//!    already says it is down (a restarted agent adopts what the dataplane
//!    does, and the gateway needs the hold-down to come back). A removed
//!    target is forgotten and its entry deleted.
//! 2. **Kubernetes**: a target in the last [`Probing::set_external_down`] set
//!    is down whatever the probes say.
//! 3. **Replies**: for each target, `egret_probe_rx[target]` (the newest
//!    reply `egret_tunnel_in` recorded: seq, `sent_ns`, `recv_ns`) judges the
//!    probe sent at the previous tick. A reply whose `sent_ns` is before this
//!    prober's first tick was answered to an earlier agent and is ignored.
//!    Without a pinned `egret_probe_rx` (no generation yet) no reply can be
//!    recorded, so nothing is judged: states stay as they are.
//! 4. **Dataplane** (before the probes go out, so a failover's write waits
//!    for no send): `egret_gw_live` holds exactly the down targets (and
//!    `egret_gw_down`, written after it, their number): a down
//!    gateway has an entry with `GL_F_DOWN`, an up (or unknown) one has
//!    none — *deleted*, not written as up, because no entry already means
//!    up to the classifier and the map then lists only what is out of
//!    service, entries of gateways no longer targeted included. Between
//!    full rewrites only the changes are written; a full rewrite (delete
//!    every other key, write every down target) happens every
//!    [`ProberConfig::rewrite_every`], whenever the pinned map is another map
//!    than the one last written (a swap recreated it), and after a write
//!    failed. Nothing is written before the first [`Probing::set_targets`]
//!    (an agent that has not compiled yet leaves the map as it finds it),
//!    nor while `egret_gw_live` is not pinned (written once it is). Each
//!    full rewrite also deletes the `egret_probe_rx` entries of nodes that
//!    are not targets (the datapath only adds, and the map's capacity is
//!    bounded: a full map would lose the replies of new gateways). The time
//!    from the decision (step 3 done) to the end of a write that carries a
//!    change is recorded ([`ProberStatus::decide_to_write`]).
//! 5. **Probes**: one request per target, from the prober's UDP socket to
//!    `(target, port)`: a VXLAN header with VNI 0 and a probe frame
//!    (`egret_bpf::templates::probe::Probe::datagram`) with this tick's
//!    sequence number (one per tick, increasing, wrapping), `sender` = the
//!    node's IPv4 (unspecified on a node with an IPv6 underlay; nothing reads
//!    it but people), from the socket of the target's family, and `sent_ns` = the tick's `CLOCK_MONOTONIC` time. A send
//!    that fails is counted; the probe stays outstanding and is missed.
//!
//! Never panics; failures (sends, map reads and writes, a map of the wrong
//! shape) are counted in the [`ProberStatus`] with the last one's message.
//!
//! Threads: [`Prober::start`] opens the socket and spawns the thread from
//! the calling thread, so both are in its network namespace (the node's);
//! the agent's thread only sends commands through a channel and reads the
//! status snapshot, so a long compile never delays a probe and a tick never
//! delays the agent.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_bpf::MapDef;
use egret_bpf::templates::probe::{Kind, Probe, ProbeRx};
use egret_bpf::templates::{GatewayLive, GatewaysDown};
use egret_loader::tunnel::DEFAULT_DSTPORT;
use egret_loader::{PinLayout, StateMap, StateMapError};

use super::liveness::{self, Liveness, Reply, State, Transition};

/// How often `egret_gw_live` is rewritten in full by default.
pub const REWRITE_EVERY: Duration = Duration::from_secs(1);

/// Upper bounds (seconds) of the probe RTT histogram's buckets: an underlay
/// round trip through two kernels is tens to hundreds of µs; a reply later
/// than the interval (100 ms) misses its probe.
pub const RTT_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

/// How a prober is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProberConfig {
    /// The loader's bpffs root (`egret_probe_rx` and `egret_gw_live` are
    /// its state maps).
    pub root: PathBuf,
    /// This node's underlay address (the probes' `sender`, a field only
    /// people read: `0.0.0.0` there when the node tunnels over IPv6).
    pub sender: IpAddr,
    /// The gateways' tunnel UDP port (every node's `egret0` uses the same).
    pub port: u16,
    /// Interval, misses and hold-down.
    pub liveness: liveness::Config,
    /// How often `egret_gw_live` is rewritten in full.
    pub rewrite_every: Duration,
}

impl ProberConfig {
    /// Defaults: the default tunnel port, [`liveness::Config::default`],
    /// [`REWRITE_EVERY`].
    #[must_use]
    pub fn new(root: impl Into<PathBuf>, sender: IpAddr) -> ProberConfig {
        ProberConfig {
            root: root.into(),
            sender,
            port: DEFAULT_DSTPORT,
            liveness: liveness::Config::default(),
            rewrite_every: REWRITE_EVERY,
        }
    }

    /// Ticks between full rewrites: `rewrite_every / interval` rounded up, at least 1.
    #[must_use]
    pub fn rewrite_ticks(&self) -> u64 {
        let interval = self.liveness.interval.as_nanos().max(1);
        u64::try_from(self.rewrite_every.as_nanos().div_ceil(interval)).unwrap_or(u64::MAX).max(1)
    }
}

/// Why the prober could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The UDP socket cannot be opened.
    #[error("cannot open the probe socket: {source}")]
    Socket {
        /// The error.
        source: io::Error,
    },
    /// The thread cannot be started.
    #[error("cannot start the prober thread: {source}")]
    Spawn {
        /// The error.
        source: io::Error,
    },
    /// A probe could not be sent.
    #[error("cannot send a probe to `{gateway}`: {source}")]
    Send {
        /// The gateway.
        gateway: IpAddr,
        /// The error.
        source: io::Error,
    },
    /// A liveness map cannot be opened, read or written.
    #[error("liveness maps: {source}")]
    Map {
        /// The error (it names the map).
        #[from]
        source: StateMapError,
    },
}

/// Cumulative RTT samples of one gateway, in [`RTT_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RttHistogram {
    /// Per bound: samples at most that long.
    pub buckets: [u64; RTT_BUCKETS.len()],
    /// Samples.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl RttHistogram {
    fn record(&mut self, rtt: Duration) {
        let s = rtt.as_secs_f64();
        self.count += 1;
        self.sum += s;
        for (bound, n) in RTT_BUCKETS.iter().zip(&mut self.buckets) {
            if s <= *bound {
                *n += 1;
            }
        }
    }
}

/// One target as the prober sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayStatus {
    /// What the dataplane is told.
    pub state: State,
    /// What the probes alone say.
    pub probed: State,
    /// Kubernetes says the gateway is not Ready.
    pub external_down: bool,
    /// The last RTT sample.
    pub last_rtt: Option<Duration>,
    /// Consecutive unanswered probes.
    pub misses: u32,
    /// Times it went down.
    pub went_down: u64,
    /// Times it came back up.
    pub went_up: u64,
    /// `CLOCK_MONOTONIC` ns of the tick it entered its state (or became a target).
    pub since_ns: u64,
    /// Probes sent (or attempted).
    pub sent: u64,
    /// Probes that could not be sent.
    pub send_errors: u64,
    /// Probes answered in time.
    pub answered: u64,
    /// Probes judged unanswered.
    pub missed: u64,
    /// RTT samples.
    pub rtt: RttHistogram,
}

impl GatewayStatus {
    fn new(state: State, now_ns: u64) -> GatewayStatus {
        GatewayStatus {
            state,
            probed: state,
            external_down: false,
            last_rtt: None,
            misses: 0,
            went_down: 0,
            went_up: 0,
            since_ns: now_ns,
            sent: 0,
            send_errors: 0,
            answered: 0,
            missed: 0,
            rtt: RttHistogram::default(),
        }
    }

    /// Changes between down and not down.
    #[must_use]
    pub fn transitions(&self) -> u64 {
        self.went_down + self.went_up
    }

    fn record(&mut self, t: Transition, now_ns: u64) {
        self.since_ns = now_ns;
        if t.to == State::Down {
            self.went_down += 1;
        } else if t.from == State::Down {
            self.went_up += 1;
        }
    }
}

/// Failures so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Probes that could not be sent.
    pub send: u64,
    /// `egret_probe_rx` opens, reads and clean-ups that failed.
    pub map_read: u64,
    /// `egret_gw_live` opens, walks or writes that failed.
    pub map_write: u64,
}

/// A snapshot of the prober.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProberStatus {
    /// Ticks so far.
    pub ticks: u64,
    /// `CLOCK_MONOTONIC` ns of the last tick.
    pub at_ns: u64,
    /// Sequence number of the last probes sent.
    pub seq: u32,
    /// Every target.
    pub gateways: BTreeMap<IpAddr, GatewayStatus>,
    /// Whether `egret_probe_rx` was pinned at the last tick.
    pub probe_rx_pinned: bool,
    /// Whether `egret_gw_live` was pinned at the last tick.
    pub gw_live_pinned: bool,
    /// The gateways `egret_gw_live` holds as down, as last written.
    pub written_down: BTreeSet<IpAddr>,
    /// Full rewrites of `egret_gw_live`.
    pub full_rewrites: u64,
    /// Failures so far.
    pub errors: ErrorCounts,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Per tick that changed a gateway's state and wrote it: from the
    /// decision (the replies judged) to the end of the `egret_gw_live`
    /// write — the whole of a failover on this node, no resolution, no
    /// compile, no swap.
    pub decide_to_write: RttHistogram,
    /// The longest such decision-to-write.
    pub decide_to_write_max: Option<Duration>,
    /// The latest one.
    pub decide_to_write_last: Option<Duration>,
}

/// The prober's state and one tick of work, without a thread or a clock of
/// its own: [`Prober`] drives it; tests step it. See the module doc.
#[derive(Debug)]
pub struct Probing {
    config: ProberConfig,
    layout: PinLayout,
    socket: UdpSocket,
    /// For gateways with an IPv6 underlay address; `None` where the node
    /// has no IPv6 (a send to such a gateway then fails and is counted).
    socket6: Option<UdpSocket>,
    targets: Option<BTreeSet<IpAddr>>,
    external_down: BTreeSet<IpAddr>,
    machines: BTreeMap<IpAddr, Liveness>,
    seq: u32,
    started_ns: Option<u64>,
    /// The id of the `egret_gw_live` map `written` describes.
    live_id: Option<u32>,
    written: BTreeSet<IpAddr>,
    /// A write failed: rewrite in full at the next tick.
    dirty: bool,
    since_full: u64,
    status: ProberStatus,
}

impl Probing {
    /// Opens the probe socket (unbound port, any address) in the calling
    /// thread's network namespace.
    ///
    /// # Errors
    /// The socket cannot be opened.
    pub fn new(config: ProberConfig) -> Result<Probing, ProbeError> {
        let open = |any: IpAddr| UdpSocket::bind((any, 0)).and_then(|s| s.set_nonblocking(true).map(|()| s));
        let socket = open(Ipv4Addr::UNSPECIFIED.into()).map_err(|source| ProbeError::Socket { source })?;
        let socket6 = open(Ipv6Addr::UNSPECIFIED.into()).ok();
        Ok(Probing {
            layout: PinLayout::new(&config.root),
            config,
            socket,
            socket6,
            targets: None,
            external_down: BTreeSet::new(),
            machines: BTreeMap::new(),
            seq: 0,
            started_ns: None,
            live_id: None,
            written: BTreeSet::new(),
            dirty: false,
            since_full: 0,
            status: ProberStatus::default(),
        })
    }

    /// The gateways to probe from the next tick on.
    pub fn set_targets(&mut self, targets: BTreeSet<IpAddr>) {
        self.targets = Some(targets);
    }

    /// The gateways Kubernetes says are not Ready, from the next tick on.
    pub fn set_external_down(&mut self, down: BTreeSet<IpAddr>) {
        self.external_down = down;
    }

    /// The status as of the last tick.
    #[must_use]
    pub fn status(&self) -> &ProberStatus {
        &self.status
    }

    fn failed(&mut self, e: &ProbeError) {
        self.status.last_error = Some(e.to_string());
    }

    /// Opens a liveness map; `None` if not pinned or unusable (counted).
    fn open(&mut self, def: &MapDef, write: bool) -> Option<StateMap> {
        match StateMap::open(&self.layout, def) {
            Ok(m) => m,
            Err(e) => {
                if write {
                    self.status.errors.map_write += 1;
                } else {
                    self.status.errors.map_read += 1;
                }
                self.failed(&e.into());
                None
            }
        }
    }

    /// One tick at `now_ns` (`CLOCK_MONOTONIC`); see the module doc.
    /// Returns the state changes, by gateway.
    pub fn tick(&mut self, now_ns: u64) -> Vec<(IpAddr, Transition)> {
        let started = *self.started_ns.get_or_insert(now_ns);
        self.status.ticks += 1;
        self.status.at_ns = now_ns;
        let probe_rx = self.open(&ProbeRx::map_def(), false);
        let gw_live = self.open(&GatewayLive::map_def(), true);
        let gw_down = self.open(&GatewaysDown::map_def(), true);
        self.status.probe_rx_pinned = probe_rx.is_some();
        self.status.gw_live_pinned = gw_live.is_some();
        let Some(targets) = self.targets.clone() else { return Vec::new() };
        let mut changes = Vec::new();

        // 1. targets
        self.machines.retain(|gw, _| targets.contains(gw));
        self.status.gateways.retain(|gw, _| targets.contains(gw));
        for gw in &targets {
            if self.machines.contains_key(gw) {
                continue;
            }
            let key = GatewayLive { gateway: *gw, down: true }.key();
            let adopted = gw_live
                .as_ref()
                .and_then(|m| m.get(&key).ok().flatten())
                .and_then(|v| GatewayLive::from_bytes(&key, &v))
                .is_some_and(|g| g.down);
            let m = if adopted { Liveness::down(&self.config.liveness) } else { Liveness::new(&self.config.liveness) };
            self.status.gateways.insert(*gw, GatewayStatus::new(m.state(), now_ns));
            self.machines.insert(*gw, m);
        }

        // 2. Kubernetes
        for (gw, m) in &mut self.machines {
            if let Some(t) = m.set_external_down(self.external_down.contains(gw)) {
                changes.push((*gw, t));
            }
        }

        // 3. replies
        if let Some(rx) = &probe_rx {
            for (gw, m) in &mut self.machines {
                let reply = match rx.get(&ProbeRx::key(*gw)) {
                    Ok(v) => v
                        .and_then(|v| ProbeRx::from_bytes(&v))
                        .filter(|r| r.sent_ns >= started)
                        .map(|r| Reply { seq: r.seq, rtt: r.recv_ns.checked_sub(r.sent_ns).map(Duration::from_nanos) }),
                    Err(e) => {
                        self.status.errors.map_read += 1;
                        self.status.last_error = Some(ProbeError::from(e).to_string());
                        continue;
                    }
                };
                let step = m.tick(reply);
                if let Some(s) = self.status.gateways.get_mut(gw) {
                    match step.answered {
                        Some(true) => s.answered += 1,
                        Some(false) => s.missed += 1,
                        None => {}
                    }
                    if let Some(rtt) = step.rtt {
                        s.rtt.record(rtt);
                    }
                }
                if let Some(t) = step.transition {
                    changes.push((*gw, t));
                }
            }
        }

        let decided = Instant::now();

        // 4. dataplane (before the probes: a failover's write waits for nothing)
        let full = match &gw_live {
            Some(live) => self.write(live, gw_down.as_ref()),
            None => {
                self.live_id = None;
                self.written.clear();
                false
            }
        };
        if !changes.is_empty() && gw_live.is_some() {
            let took = decided.elapsed();
            self.status.decide_to_write.record(took);
            self.status.decide_to_write_max = Some(self.status.decide_to_write_max.map_or(took, |m| m.max(took)));
            self.status.decide_to_write_last = Some(took);
        }
        if let (true, Some(rx)) = (full, &probe_rx) {
            self.forget_replies(rx, &targets);
        }

        // 5. probes
        self.seq = self.seq.wrapping_add(1);
        self.status.seq = self.seq;
        // the frame's sender is IPv4 (informational): unspecified for an IPv6 underlay
        let sender = match self.config.sender {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        for (gw, m) in &mut self.machines {
            let probe = Probe { kind: Kind::Request, seq: self.seq, sender, sent_ns: now_ns };
            let to = SocketAddr::new(*gw, self.config.port);
            let sent = match (gw, &self.socket6) {
                (IpAddr::V4(_), _) => self.socket.send_to(&probe.datagram(), to),
                (IpAddr::V6(_), Some(s6)) => s6.send_to(&probe.datagram(), to),
                (IpAddr::V6(_), None) => {
                    Err(io::Error::new(io::ErrorKind::Unsupported, "this node has no IPv6 socket"))
                }
            };
            m.sent(self.seq);
            let s = self.status.gateways.get_mut(gw);
            if let Some(s) = s {
                s.sent += 1;
                if sent.is_err() {
                    s.send_errors += 1;
                }
            }
            if let Err(source) = sent {
                self.status.errors.send += 1;
                self.status.last_error = Some(ProbeError::Send { gateway: *gw, source }.to_string());
            }
        }

        for (gw, t) in &changes {
            if let Some(s) = self.status.gateways.get_mut(gw) {
                s.record(*t, now_ns);
            }
        }
        for (gw, m) in &self.machines {
            if let Some(s) = self.status.gateways.get_mut(gw) {
                s.state = m.state();
                s.probed = m.probed();
                s.external_down = m.external_down();
                s.misses = m.misses();
                s.last_rtt = m.last_rtt();
            }
        }
        self.status.written_down.clone_from(&self.written);
        changes
    }

    /// Deletes the replies of nodes that are not targets from `egret_probe_rx`
    /// (module doc, step 4): its capacity is bounded and the datapath only
    /// ever adds.
    fn forget_replies(&mut self, rx: &StateMap, targets: &BTreeSet<IpAddr>) {
        let keys = match rx.keys() {
            Ok(keys) => keys,
            Err(e) => {
                self.status.errors.map_read += 1;
                return self.failed(&e.into());
            }
        };
        let ours: BTreeSet<[u8; 16]> = targets.iter().map(|gw| ProbeRx::key(*gw)).collect();
        for key in keys.iter().filter(|k| !ours.iter().any(|o| o == k.as_slice())) {
            if let Err(e) = rx.remove(key) {
                self.status.errors.map_read += 1;
                self.failed(&e.into());
            }
        }
    }

    /// Makes `live` hold exactly the down targets (module doc, step 5), then
    /// `count` (`egret_gw_down`, the classifier's fast path) their number —
    /// after the entries, so a non-zero count never lags a new down entry
    /// and a zero count never precedes the last deletion; true if it was a
    /// full rewrite.
    fn write(&mut self, live: &StateMap, count: Option<&StateMap>) -> bool {
        let down: BTreeSet<IpAddr> =
            self.machines.iter().filter(|(_, m)| m.state().is_down()).map(|(gw, _)| *gw).collect();
        let full = self.dirty || self.live_id != Some(live.id()) || self.since_full >= self.config.rewrite_ticks();
        let mut errors = Vec::new();
        if full {
            self.since_full = 1;
            self.status.full_rewrites += 1;
            self.live_id = Some(live.id());
            // the map's keys are gateways; anything not down goes
            self.written = match live.keys() {
                Ok(keys) => keys
                    .iter()
                    .filter_map(|k| GatewayLive::from_bytes(k, &[0; GatewayLive::SIZE]).map(|g| g.gateway))
                    .collect(),
                Err(e) => {
                    errors.push(e);
                    BTreeSet::new()
                }
            };
        } else {
            self.since_full += 1;
        }
        for gw in self.written.difference(&down).copied().collect::<Vec<_>>() {
            match live.remove(&GatewayLive { gateway: gw, down: false }.key()) {
                Ok(()) => {
                    self.written.remove(&gw);
                }
                Err(e) => errors.push(e),
            }
        }
        for gw in &down {
            if self.written.contains(gw) && !full {
                continue;
            }
            let entry = GatewayLive { gateway: *gw, down: true };
            match live.set(&entry.key(), &entry.value()) {
                Ok(()) => {
                    self.written.insert(*gw);
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(count) = count {
            let value = GatewaysDown { count: u32::try_from(self.written.len()).unwrap_or(u32::MAX) };
            if let Err(e) = count.set(&GatewaysDown::KEY, &value.value()) {
                errors.push(e);
            }
        }
        self.dirty = !errors.is_empty();
        self.status.errors.map_write += errors.len() as u64;
        if let Some(e) = errors.pop() {
            self.failed(&e.into());
        }
        full
    }
}

/// The prober's status, shared with whoever reports it (the telemetry).
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<ProberStatus>>);

impl StatusHandle {
    /// The status as of the last tick.
    #[must_use]
    pub fn snapshot(&self) -> ProberStatus {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn publish(&self, status: &ProberStatus) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone_from(status);
    }
}

#[derive(Debug)]
enum Command {
    Targets(BTreeSet<IpAddr>),
    ExternalDown(BTreeSet<IpAddr>),
}

/// [`Probing`] on a thread of its own, one tick every interval; stopped and
/// joined when dropped. See the module doc.
#[derive(Debug)]
pub struct Prober {
    commands: Option<mpsc::Sender<Command>>,
    status: StatusHandle,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Opens the socket and starts the thread, both in the calling thread's
    /// network namespace; the first tick is immediate.
    ///
    /// # Errors
    /// The socket cannot be opened or the thread started.
    pub fn start(config: ProberConfig) -> Result<Prober, ProbeError> {
        let interval = config.liveness.interval.max(Duration::from_millis(1));
        let probing = Probing::new(config)?;
        let status = StatusHandle::default();
        let (commands, inbox) = mpsc::channel();
        let published = status.clone();
        let thread = std::thread::Builder::new()
            .name("egret-prober".into())
            .spawn(move || run(probing, &inbox, &published, interval))
            .map_err(|source| ProbeError::Spawn { source })?;
        Ok(Prober { commands: Some(commands), status, thread: Some(thread) })
    }

    fn send(&self, c: Command) {
        if let Some(commands) = &self.commands {
            // the thread only ends when this side hangs up
            let _ = commands.send(c);
        }
    }

    /// The gateways this node uses (those its plan names), from the next tick on.
    pub fn set_targets(&self, targets: BTreeSet<IpAddr>) {
        self.send(Command::Targets(targets));
    }

    /// The gateways Kubernetes says are not Ready: down regardless of probes.
    pub fn set_external_down(&self, down: BTreeSet<IpAddr>) {
        self.send(Command::ExternalDown(down));
    }

    /// The status as of the last tick.
    #[must_use]
    pub fn status(&self) -> ProberStatus {
        self.status.snapshot()
    }

    /// A handle on the status for the telemetry.
    #[must_use]
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Stops the thread and waits for it (what dropping does).
    pub fn stop(self) {}
}

impl Drop for Prober {
    fn drop(&mut self) {
        // hanging up wakes the thread at once
        self.commands = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `CLOCK_MONOTONIC` in ns: what `bpf_ktime_get_ns` reads.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// The thread: ticks every `interval` (late ticks are not made up), taking
/// commands in between, until the [`Prober`] hangs up.
fn run(mut probing: Probing, inbox: &mpsc::Receiver<Command>, status: &StatusHandle, interval: Duration) {
    let mut next = Instant::now();
    loop {
        // at least one look at the channel per tick, so a hang-up is seen
        // even when ticks run late
        loop {
            match inbox.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(Command::Targets(t)) => probing.set_targets(t),
                Ok(Command::ExternalDown(d)) => probing.set_external_down(d),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        probing.tick(monotonic_ns());
        status.publish(probing.status());
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

    /// A config whose maps are never pinned, probing `port`.
    fn config(port: u16, interval: Duration) -> ProberConfig {
        let root = std::env::temp_dir().join(format!("egret-no-bpffs-{}", std::process::id()));
        let mut c = ProberConfig::new(root, SENDER.into());
        c.port = port;
        c.liveness.interval = interval;
        c
    }

    /// A "gateway" on 127.0.0.1: its socket and port.
    fn gateway() -> (UdpSocket, u16) {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let port = s.local_addr().expect("addr").port();
        (s, port)
    }

    fn receive(s: &UdpSocket) -> Probe {
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf).expect("a probe within 5 s");
        assert_eq!(n, 8 + egret_bpf::templates::probe::FRAME_LEN, "VXLAN header + probe frame");
        Probe::from_datagram(&buf[..n]).expect("decodes as a probe")
    }

    #[test]
    fn the_prober_thread_sends_requests_with_increasing_seq_from_this_node() {
        let (gw, port) = gateway();
        let prober = Prober::start(config(port, Duration::from_millis(5))).expect("starts");
        prober.set_targets(BTreeSet::from([IpAddr::V4(Ipv4Addr::LOCALHOST)]));
        let probes: Vec<Probe> = (0..5).map(|_| receive(&gw)).collect();
        for p in &probes {
            assert_eq!((p.kind, p.sender), (Kind::Request, SENDER));
        }
        for w in probes.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "one seq per tick: {probes:?}");
            assert!(w[1].sent_ns > w[0].sent_ns, "CLOCK_MONOTONIC send times: {probes:?}");
        }
        assert!(probes[0].sent_ns <= monotonic_ns());
        // the status is published at the end of a tick, after its probes went out
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut status = prober.status();
        while status.ticks < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            status = prober.status();
        }
        assert!(status.ticks >= 5 && status.gateways.contains_key(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{status:?}");
        // no maps pinned: not an error, nothing judged, nothing written
        assert_eq!(status.errors, ErrorCounts::default(), "{status:?}");
        assert!(!status.probe_rx_pinned && !status.gw_live_pinned);
        assert_eq!(status.gateways[&IpAddr::V4(Ipv4Addr::LOCALHOST)].state, State::Unknown);
        prober.stop();
    }

    #[test]
    fn a_gateway_with_an_ipv6_underlay_address_is_probed_over_ipv6() {
        // a "gateway" on ::1 (IPv6-only clusters' nodes); skipped where the host has no IPv6 loopback
        let Ok(gw) = UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)) else {
            println!("skipped: no IPv6 loopback here");
            return;
        };
        gw.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let port = gw.local_addr().expect("addr").port();
        let mut c = config(port, Duration::from_millis(100));
        c.sender = std::net::Ipv6Addr::LOCALHOST.into();
        let mut p = Probing::new(c).expect("sockets");
        let target = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        p.set_targets(BTreeSet::from([target]));
        p.tick(1_000);
        let probe = receive(&gw);
        // the frame's sender field is IPv4: unspecified from an IPv6 node
        assert_eq!((probe.kind, probe.seq, probe.sender), (Kind::Request, 1, Ipv4Addr::UNSPECIFIED));
        let g = &p.status().gateways[&target];
        assert_eq!((g.sent, g.send_errors), (1, 0), "{g:?}");
    }

    #[test]
    fn stepped_by_hand_each_tick_sends_one_probe_per_target_and_judges_nothing_without_maps() {
        let (gw, port) = gateway();
        let mut p = Probing::new(config(port, Duration::from_millis(100))).expect("socket");
        // before any targets: nothing sent
        assert_eq!(p.tick(1_000), []);
        assert_eq!(p.status().seq, 0);
        // one target only: test traffic stays on 127.0.0.1
        let gw_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        p.set_targets(BTreeSet::from([gw_ip]));
        for i in 0..10u64 {
            assert_eq!(p.tick(2_000 + i * 100_000_000), [], "without egret_probe_rx no probe is judged");
            let probe = receive(&gw);
            assert_eq!((probe.seq, probe.sent_ns), (i as u32 + 1, 2_000 + i * 100_000_000));
        }
        let g = &p.status().gateways[&gw_ip];
        assert_eq!((g.state, g.sent, g.answered, g.missed), (State::Unknown, 10, 0, 0), "{g:?}");
        // Kubernetes says the gateway is not Ready: down without probes
        p.set_external_down(BTreeSet::from([gw_ip]));
        assert_eq!(p.tick(3_000_000_000), [(gw_ip, Transition { from: State::Unknown, to: State::Down })]);
        let g = &p.status().gateways[&gw_ip];
        assert_eq!((g.state, g.went_down, g.since_ns), (State::Down, 1, 3_000_000_000));
        // a removed target is forgotten and no longer probed
        p.set_targets(BTreeSet::new());
        p.tick(3_100_000_000);
        assert!(p.status().gateways.is_empty());
        gw.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 256];
        // the probe of the tick before the removal, then nothing
        assert!(gw.recv_from(&mut buf).is_ok());
        assert!(gw.recv_from(&mut buf).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn a_full_rewrite_comes_every_rewrite_every_in_ticks() {
        let mut c = ProberConfig::new("/nonexistent", SENDER.into());
        assert_eq!((c.port, c.rewrite_ticks()), (4799, 10));
        c.liveness.interval = Duration::from_millis(300);
        assert_eq!(c.rewrite_ticks(), 4, "rounded up");
        c.rewrite_every = Duration::ZERO;
        assert_eq!(c.rewrite_ticks(), 1);
    }

    #[test]
    fn rtt_samples_fill_the_histogram_cumulatively() {
        let mut h = RttHistogram::default();
        h.record(Duration::from_micros(200));
        h.record(Duration::from_millis(30));
        assert_eq!(h.buckets, [0, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
        assert_eq!(h.count, 2);
        assert!((h.sum - 0.0302).abs() < 1e-12);
    }
}

//! Gateway failover trials on the mini-cluster (`egret-bench failover` and
//! the e2e tests): a pod streams UDP datagrams to the server, the gateway
//! that carries them is failed for real, and the server's own receive times
//! say when traffic came back through another gateway (TESTING.md, "Faults
//! and failover": failures are injected, timings come from the outside).
//!
//! A trial ([`MiniCluster::failover_trial`]):
//! 1. the server records every datagram it receives on [`STREAM_PORT`]
//!    (receive time, source address); the pod sends one every
//!    [`STREAM_EVERY`];
//! 2. once datagrams arrive, the egress IP they carry names the gateway in
//!    use; at `t0` that gateway is failed ([`Failure`]);
//! 3. **detect** = `t0` → the pod's node marks the gateway down in its
//!    `egret_gw_live` (read from its pins, polled every 2 ms: the agent's
//!    probes decided); **recover** = `t0` → the first datagram the server
//!    receives from another egress IP (the server's clock);
//! 4. every datagram from a source that is no gateway's egress IP is
//!    counted as leaked (it would be the node's address: traffic that
//!    escaped the policy);
//! 5. the failure is undone and the trial waits until the pod's node sees
//!    the gateway up again (after the hold-down), so trials are independent.
//!
//! Bounded: the stream stops after [`STREAM_MAX`]; every wait has a timeout.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_bpf::templates::GatewayLive;
use egret_loader::{PinLayout, StateMap};

use crate::minicluster::{ClusterError, MiniCluster, NODES, NodeSpec, SERVER, node};

/// The server's UDP port for the failover stream (records, never answers).
pub const STREAM_PORT: u16 = 8083;
/// Time between two datagrams of the stream.
pub const STREAM_EVERY: Duration = Duration::from_millis(2);
/// The longest a stream runs.
pub const STREAM_MAX: Duration = Duration::from_secs(20);
/// The longest a trial waits for the failover (and for the gateway to come back).
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(8);

/// How the gateway in use is failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// Its underlay link (`eth0`) goes down.
    UnderlayDown,
    /// Every link of its namespace goes down (the node is gone).
    NodeGone,
    /// egret's programs on it are detached (`bpftool link detach` of every
    /// pinned link) while its agent keeps running.
    DatapathDetached,
}

impl Failure {
    /// Every kind.
    pub const ALL: [Failure; 3] = [Failure::UnderlayDown, Failure::NodeGone, Failure::DatapathDetached];

    /// Its name in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Failure::UnderlayDown => "underlay-down",
            Failure::NodeGone => "node-gone",
            Failure::DatapathDetached => "datapath-detached",
        }
    }
}

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub failure: Failure,
    /// The gateway that was failed.
    pub gateway: String,
    /// The egress IP before the failure.
    pub before: Ipv4Addr,
    /// The egress IP the server saw first after it, if any did come.
    pub after: Option<Ipv4Addr>,
    /// Failure → the pod's node marks the gateway down.
    pub detect: Option<Duration>,
    /// Failure → the first datagram via another gateway at the server.
    pub recover: Option<Duration>,
    /// Datagrams the server received from no gateway's egress IP (leaks).
    pub leaked: u64,
    /// Datagrams received in all.
    pub received: u64,
}

/// Every egress IP of the mini-cluster's gateways, and the floating one.
fn egress_ips() -> BTreeSet<Ipv4Addr> {
    NODES.iter().flat_map(|n| n.egress_ips.iter().copied()).chain([crate::minicluster::FLOATING_IP]).collect()
}

fn gateway_of(ip: Ipv4Addr) -> Option<NodeSpec> {
    NODES.iter().find(|n| n.egress_ips.contains(&ip)).copied()
}

/// A thread that runs `step` until it is stopped (or `step` says it is
/// done), joined when stopped or dropped.
struct Looping {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Looping {
    fn spawn(mut step: impl FnMut() -> bool + Send + 'static) -> Looping {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || while !s2.load(Ordering::Relaxed) && step() {});
        Looping { stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Looping {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server side of a stream: receive times, sources and sequence numbers.
struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, Ipv4Addr, u64)>>>,
    _thread: Looping,
}

impl Recorder {
    fn start(c: &MiniCluster) -> Result<Recorder, ClusterError> {
        let socket = crate::minicluster::in_netns(&c.ns("srv"), || {
            let s = UdpSocket::bind(SocketAddrV4::new(SERVER, STREAM_PORT))
                .map_err(|e| ClusterError::Io { what: "binding the failover recorder".into(), source: e })?;
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .map_err(|e| ClusterError::Io { what: "recorder timeout".into(), source: e })?;
            Ok(s)
        })?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let mut buf = [0u8; 64];
        let thread = Looping::spawn(move || {
            if let Ok((n, std::net::SocketAddr::V4(from))) = socket.recv_from(&mut buf)
                && let Ok(mut v) = seen2.lock()
            {
                let seq = buf
                    .get(..8)
                    .filter(|_| n >= 8)
                    .map_or(u64::MAX, |b| u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])));
                v.push((Instant::now(), *from.ip(), seq));
            }
            true
        });
        Ok(Recorder { seen, _thread: thread })
    }

    fn snapshot(&self) -> Vec<(Instant, Ipv4Addr)> {
        self.seen.lock().map(|v| v.iter().map(|(t, ip, _)| (*t, *ip)).collect()).unwrap_or_default()
    }

    fn with_seq(&self) -> Vec<(Instant, Ipv4Addr, u64)> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The pod side: one datagram every [`STREAM_EVERY`], for at most [`STREAM_MAX`].
struct Stream {
    sent: Arc<std::sync::atomic::AtomicU64>,
    /// When each sequence number was sent.
    times: Arc<Mutex<Vec<Instant>>>,
    thread: Looping,
}

impl Stream {
    fn start(c: &MiniCluster, pod: &str) -> Result<Stream, ClusterError> {
        let socket = crate::minicluster::in_netns(&c.ns(pod), || {
            let s = UdpSocket::bind("0.0.0.0:0")
                .map_err(|e| ClusterError::Io { what: "binding the pod's stream socket".into(), source: e })?;
            s.connect(SocketAddrV4::new(SERVER, STREAM_PORT))
                .map_err(|e| ClusterError::Io { what: "connecting the stream".into(), source: e })?;
            Ok(s)
        })?;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sent2 = sent.clone();
        let times = Arc::new(Mutex::new(Vec::new()));
        let times2 = times.clone();
        let started = Instant::now();
        let mut seq: u64 = 0;
        let thread = Looping::spawn(move || {
            if let Ok(mut t) = times2.lock() {
                t.push(Instant::now());
            }
            // a send may fail while routes flap; the stream goes on
            if socket.send(&seq.to_be_bytes()).is_ok() {
                sent2.fetch_add(1, Ordering::Relaxed);
            }
            seq += 1;
            std::thread::sleep(STREAM_EVERY);
            started.elapsed() < STREAM_MAX
        });
        Ok(Stream { sent, times, thread })
    }

    /// When datagram `seq` was sent.
    fn sent_at(&self, seq: u64) -> Option<Instant> {
        self.times.lock().ok().and_then(|t| usize::try_from(seq).ok().and_then(|i| t.get(i).copied()))
    }

    /// Stops the stream; the datagrams sent.
    fn finish(mut self) -> u64 {
        self.thread.stop();
        self.sent.load(Ordering::Relaxed)
    }
}

/// What killing a gateway's agent did to a stream through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKill {
    /// The gateway whose agent was killed (`SIGKILL`) and started again.
    pub gateway: String,
    /// Datagrams the pod sent, and the server received, over the whole trial.
    pub sent: u64,
    pub received: u64,
    /// Received from another source than the egress IP used before the kill.
    pub moved: u64,
    /// Whether the pod's node ever marked the gateway down.
    pub marked_down: bool,
}

impl MiniCluster {
    /// Whether `node_name`'s `egret_gw_live` marks `gateway` down (read
    /// from its pins; `false` while the map is not pinned).
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn sees_down(&self, node_name: &str, gateway: impl Into<std::net::IpAddr>) -> Result<bool, ClusterError> {
        let layout = PinLayout::new(self.bpffs_root(node_name));
        let io = |e: egret_loader::StateMapError| ClusterError::Io {
            what: format!("reading {node_name}'s egret_gw_live"),
            source: std::io::Error::other(e.to_string()),
        };
        let Some(m) = StateMap::open(&layout, &GatewayLive::map_def()).map_err(io)? else { return Ok(false) };
        let key = GatewayLive { gateway: gateway.into(), down: true }.key();
        Ok(m.get(&key).map_err(io)?.and_then(|v| GatewayLive::from_bytes(&key, &v)).is_some_and(|e| e.down))
    }

    /// Waits (at most [`TRIAL_TIMEOUT`]) until none of `nodes` marks `gw` down.
    fn wait_seen_up(&self, nodes: &[&str], gw: NodeSpec) -> Result<(), ClusterError> {
        let back = Instant::now() + TRIAL_TIMEOUT;
        for n in nodes {
            while self.sees_down(n, gw.address)? {
                if Instant::now() > back {
                    return Err(ClusterError::Timeout { what: format!("{n} to see {} up again", gw.name) });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Starts an [`crate::arpwatch::ArpWatch`] for `ip` on the external
    /// segment, from the server's side (its `eth1` bridge).
    ///
    /// # Errors
    /// The watch cannot start.
    pub fn arp_watch(&self, ip: Ipv4Addr) -> Result<crate::arpwatch::ArpWatch, ClusterError> {
        crate::minicluster::in_netns(&self.ns("srv"), move || {
            crate::arpwatch::ArpWatch::start("eth1", crate::minicluster::ROUTER_EXTERNAL, ip)
                .map_err(|e| ClusterError::Io { what: "the ARP watch".into(), source: std::io::Error::other(e) })
        })
    }

    fn fail(&mut self, gw: NodeSpec, failure: Failure, undo: bool) -> Result<(), ClusterError> {
        let ns = self.ns(gw.short);
        let ip = |args: &[&str]| crate::minicluster::ip_in(&ns, args).map(|_| ());
        let state = if undo { "up" } else { "down" };
        match failure {
            Failure::UnderlayDown => ip(&["link", "set", "eth0", state]),
            Failure::NodeGone => {
                for dev in ["eth0", "eth1", "egret0"] {
                    ip(&["link", "set", dev, state])?;
                }
                if undo {
                    // the route through eth1 went with the link
                    ip(&["route", "replace", "203.0.113.0/24", "via", "198.51.100.1", "dev", "eth1"])?;
                }
                Ok(())
            }
            Failure::DatapathDetached if !undo => {
                let links = PinLayout::new(self.bpffs_root(gw.name)).links_dir();
                let entries = std::fs::read_dir(&links)
                    .map_err(|e| ClusterError::Io { what: format!("listing {}", links.display()), source: e })?;
                for e in entries.flatten() {
                    let path = e.path().to_string_lossy().into_owned();
                    crate::minicluster::run("bpftool", &["link", "detach", "pinned", &path], None)?;
                }
                Ok(())
            }
            // the agent finds its programs detached and nothing to re-apply
            // (same artifact): start it afresh on an empty root
            Failure::DatapathDetached => self.reset_node(gw.name),
        }
    }

    /// One trial: see the module documentation. `pod` streams; the gateway
    /// its datagrams leave through is failed with `failure`, then restored.
    ///
    /// # Errors
    /// Set-up failures, or a stream that never reaches the server.
    pub fn failover_trial(&mut self, pod: &str, failure: Failure) -> Result<Trial, ClusterError> {
        let worker = crate::minicluster::pod(pod).node;
        let rec = Recorder::start(self)?;
        let stream = Stream::start(self, pod)?;
        let egress = egress_ips();
        // the gateway in use
        let deadline = Instant::now() + TRIAL_TIMEOUT;
        let before = loop {
            let seen = rec.snapshot();
            if seen.len() >= 20
                && let Some((_, ip)) = seen.last()
                && egress.contains(ip)
            {
                break *ip;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout { what: format!("{pod}'s stream at the server via a gateway") });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let gw =
            gateway_of(before).ok_or_else(|| ClusterError::Timeout { what: format!("the gateway of {before}") })?;
        let t0 = Instant::now();
        self.fail(gw, failure, false)?;
        let (mut detect, mut recover, mut after) = (None, None, None);
        while Instant::now() < t0 + TRIAL_TIMEOUT && (detect.is_none() || recover.is_none()) {
            if detect.is_none() && self.sees_down(worker, gw.address)? {
                detect = Some(t0.elapsed());
            }
            if recover.is_none()
                && let Some((t, ip)) =
                    rec.snapshot().into_iter().find(|(t, ip)| *t > t0 && *ip != before && egress.contains(ip))
            {
                recover = Some(t - t0);
                after = Some(ip);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        stream.finish();
        std::thread::sleep(Duration::from_millis(50));
        let seen = rec.snapshot();
        drop(rec);
        let leaked = seen.iter().filter(|(_, ip)| !egress.contains(ip)).count() as u64;
        // restore, and wait for the pod's node to take the gateway back
        self.fail(gw, failure, true)?;
        self.wait_seen_up(&[worker], gw)?;
        Ok(Trial {
            failure,
            gateway: gw.name.to_owned(),
            before,
            after,
            detect,
            recover,
            leaked,
            received: seen.len() as u64,
        })
    }

    /// The failover policy: the labelled pods through `gateway-1` (egress IP
    /// [`crate::minicluster::EGRESS_IP`]) or `gateway-2`
    /// ([`crate::minicluster::EGRESS_IP_3`]), as `egressGateways` (each
    /// endpoint hashed to one, failing over to the other).
    #[must_use]
    pub fn failover_policy() -> String {
        let gw = |name: &str, ip: Ipv4Addr| {
            format!(
                "  - nodeSelector:\n      matchLabels:\n        kubernetes.io/hostname: {name}\n    egressIP: {ip}\n"
            )
        };
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: egress-gateway-policy\nspec:\n  selectors:\n  - podSelector:\n      matchLabels:\n        use-egress-gateway: \"true\"\n  destinationCIDRs:\n  - 203.0.113.0/24\n  egressGateways:\n{}{}",
            gw("gateway-1", crate::minicluster::EGRESS_IP),
            gw("gateway-2", crate::minicluster::EGRESS_IP_3),
        )
    }

    /// Kills the agent of the gateway `pod`'s stream uses (`SIGKILL`: its
    /// datapath stays), keeps streaming for `dead` while watching whether
    /// the pod's node marks the gateway down, starts the agent again (it
    /// adopts the pinned generation), streams a little longer, and counts.
    ///
    /// # Errors
    /// Set-up failures, or a stream that never reaches the server.
    pub fn agent_kill_trial(&mut self, pod: &str, dead: Duration) -> Result<AgentKill, ClusterError> {
        let worker = crate::minicluster::pod(pod).node;
        let rec = Recorder::start(self)?;
        let stream = Stream::start(self, pod)?;
        let egress = egress_ips();
        let deadline = Instant::now() + TRIAL_TIMEOUT;
        let before = loop {
            if let Some((_, ip)) = rec.snapshot().last().copied().filter(|(_, ip)| egress.contains(ip)) {
                break ip;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout { what: format!("{pod}'s stream at the server via a gateway") });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let gw = match gateway_of(before) {
            Some(g) => g,
            None => self
                .holders(before)?
                .first()
                .map(|n| node(n))
                .ok_or_else(|| ClusterError::Timeout { what: format!("the gateway of {before}") })?,
        };
        self.stop_agent(gw.name)?;
        let mut marked_down = false;
        let until = Instant::now() + dead;
        while Instant::now() < until {
            marked_down |= self.sees_down(worker, gw.address)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        self.start_agent_again(gw.name)?;
        marked_down |= self.sees_down(worker, gw.address)?;
        std::thread::sleep(Duration::from_millis(200));
        let sent = stream.finish();
        // the last datagrams in flight
        std::thread::sleep(Duration::from_millis(100));
        let seen = rec.snapshot();
        Ok(AgentKill {
            gateway: gw.name.to_owned(),
            sent,
            received: seen.len() as u64,
            moved: seen.iter().filter(|(_, ip)| *ip != before).count() as u64,
            marked_down,
        })
    }

    /// Writes [`MiniCluster::failover_policy`] and waits until the nodes it
    /// changes have swapped (the workers and `gateway-2`; `gateway-1` keeps
    /// its slot and sources, so its artifact may not change).
    ///
    /// # Errors
    /// The write, or a node that does not swap in time.
    pub fn apply_failover_policy(&mut self) -> Result<(), ClusterError> {
        let before: Vec<_> = ["worker-1", "worker-2", "gateway-2"].iter().map(|n| (*n, self.generation(n))).collect();
        self.write_snapshot_file(crate::minicluster::POLICY_FILE, &MiniCluster::failover_policy())?;
        for (n, g) in before {
            self.wait_swap(n, g)?;
        }
        Ok(())
    }

    /// Removes everything egret pinned on a node (its agent stopped first)
    /// and starts the agent again on the empty root: a fresh generation,
    /// attached everywhere.
    ///
    /// # Errors
    /// No agent for the node, the uninstall, or the agent's start.
    pub fn reset_node(&mut self, node_name: &str) -> Result<(), ClusterError> {
        self.stop_agent(node_name)?;
        let root = self.bpffs_root(node_name);
        crate::minicluster::in_netns(&self.ns(node(node_name).short), move || {
            let uninstalled = egret_loader::Loader::open(egret_loader::LoaderConfig::new(&root))
                .and_then(|(loader, _)| loader.uninstall());
            uninstalled.map_err(|e| ClusterError::Io {
                what: format!("uninstalling egret from {}", root.display()),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        self.start_agent_again(node_name)
    }
}

/// The server's TCP port for the floating-IP trials' long-lived connection.
pub const TCP_STREAM_PORT: u16 = 8084;
/// Bytes the pod writes on the connection every [`TCP_EVERY`].
const TCP_CHUNK: usize = 512;
/// Time between two writes on the connection.
const TCP_EVERY: Duration = Duration::from_millis(5);

/// How a TCP connection ended, as the server's side saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEnd {
    /// Still open when the trial stopped (then closed by the pod: the
    /// connection survived).
    Open,
    /// Closed by the peer (FIN) before the trial stopped.
    Closed,
    /// Reset, or failed otherwise.
    Reset,
}

/// An established TCP connection from a pod to the server, written to
/// every [`TCP_EVERY`]: the server records when bytes arrive.
struct TcpFlow {
    arrivals: Arc<Mutex<Vec<(Instant, usize)>>>,
    end: Arc<Mutex<TcpEnd>>,
    /// The connection's source as the server saw it at accept.
    peer: std::net::SocketAddr,
    writer: Looping,
    reader: Looping,
    write_errors: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpFlow {
    fn start(c: &MiniCluster, pod: &str) -> Result<TcpFlow, ClusterError> {
        use std::io::{Read, Write};
        fn io(what: &'static str) -> impl Fn(std::io::Error) -> ClusterError {
            move |source| ClusterError::Io { what: what.to_owned(), source }
        }
        let listener = crate::minicluster::in_netns(&c.ns("srv"), || {
            let l = std::net::TcpListener::bind(SocketAddrV4::new(SERVER, TCP_STREAM_PORT))
                .map_err(io("binding the TCP stream's listener"))?;
            Ok(l)
        })?;
        let client = crate::minicluster::in_netns(&c.ns(pod), || {
            let s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::V4(SocketAddrV4::new(SERVER, TCP_STREAM_PORT)),
                Duration::from_secs(3),
            )
            .map_err(io("connecting the pod's TCP stream"))?;
            s.set_write_timeout(Some(Duration::from_millis(50))).map_err(io("TCP write timeout"))?;
            s.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
            Ok(s)
        })?;
        let (mut server, peer) = listener.accept().map_err(io("accepting the TCP stream"))?;
        server.set_read_timeout(Some(Duration::from_millis(20))).map_err(io("TCP read timeout"))?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(TcpEnd::Open));
        let (a2, e2) = (arrivals.clone(), end.clone());
        let mut buf = vec![0u8; 64 * 1024];
        let reader = Looping::spawn(move || match server.read(&mut buf) {
            Ok(0) => {
                if let Ok(mut e) = e2.lock() {
                    *e = TcpEnd::Closed;
                }
                false
            }
            Ok(n) => {
                if let Ok(mut v) = a2.lock() {
                    v.push((Instant::now(), n));
                }
                true
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => true,
            Err(_) => {
                if let Ok(mut e) = e2.lock() {
                    *e = TcpEnd::Reset;
                }
                false
            }
        });
        let write_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w2 = write_errors.clone();
        let started = Instant::now();
        let mut client = client;
        let chunk = [0x5au8; TCP_CHUNK];
        let writer = Looping::spawn(move || {
            match client.write_all(&chunk) {
                Ok(()) => {}
                // a full send buffer while the path is down: the write times out, TCP retransmits
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => {
                    w2.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            std::thread::sleep(TCP_EVERY);
            started.elapsed() < STREAM_MAX
        });
        Ok(TcpFlow { arrivals, end, peer, writer, reader, write_errors })
    }

    fn arrivals(&self) -> Vec<(Instant, usize)> {
        self.arrivals.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops writing (the pod's socket closes with the thread), lets the
    /// reader see the end, and says how the connection ended.
    fn finish(mut self) -> (TcpEnd, u64) {
        self.writer.stop();
        let deadline = Instant::now() + Duration::from_secs(2);
        while *self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == TcpEnd::Open
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reader.stop();
        let end = *self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (end, self.write_errors.load(Ordering::Relaxed))
    }
}

/// The longest gap between consecutive times in `times` that ends after `t0`.
fn longest_gap_after(times: impl IntoIterator<Item = Instant>, t0: Instant) -> Option<Duration> {
    let mut last: Option<Instant> = None;
    let mut longest: Option<Duration> = None;
    for t in times {
        if let Some(l) = last
            && t > t0
        {
            let gap = t.saturating_duration_since(l);
            longest = Some(longest.map_or(gap, |g: Duration| g.max(gap)));
        }
        last = Some(t);
    }
    longest
}

/// One floating-IP trial's outcome ([`MiniCluster::floating_trial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingTrial {
    pub failure: Failure,
    /// The candidate that held the floating IP and was failed.
    pub owner_before: String,
    /// The candidate holding it after the failover, if one did.
    pub owner_after: Option<String>,
    /// Failure → the pod's node (or a candidate whose datapath has a
    /// classifier) marks the owner down in its `egret_gw_live` (its probes).
    pub detect: Option<Duration>,
    /// Failure → the server receives the first datagram sent after the
    /// failure took effect (through the new owner: the old one carries
    /// nothing).
    pub recover: Option<Duration>,
    /// The longest gap between datagrams at the server, across the failover.
    pub udp_stall: Option<Duration>,
    /// The longest gap between bytes arriving on the TCP connection across
    /// the failover.
    pub tcp_stall: Option<Duration>,
    /// The TCP connection carried data after the failover and was never
    /// reset (the pod's writes never failed, the server saw no reset).
    pub tcp_survived: bool,
    /// The connection's source port as the server saw it (kept: the same
    /// socket carries on).
    pub tcp_source: Option<std::net::SocketAddr>,
    /// Datagrams from any source but the floating IP (leaks).
    pub leaked: u64,
    /// Datagrams received in all.
    pub received: u64,
}

impl MiniCluster {
    /// The gateways whose `eth1` holds `ip` now (in node order).
    ///
    /// # Errors
    /// An `ip` command fails.
    pub fn holders(&self, ip: Ipv4Addr) -> Result<Vec<&'static str>, ClusterError> {
        let mut v = Vec::new();
        for n in NODES.iter().filter(|n| n.external.is_some()) {
            let out = crate::minicluster::ip_in(&self.ns(n.short), &["-4", "-o", "addr", "show", "dev", "eth1"])?;
            if out.split_whitespace().any(|w| w == format!("{ip}/32")) {
                v.push(n.name);
            }
        }
        Ok(v)
    }

    /// One floating-IP trial: `pod` streams UDP datagrams and writes on a
    /// TCP connection to the server through [`crate::minicluster::FLOATING_IP`];
    /// the candidate holding it is failed with `failure`; the server's
    /// receive times give the recovery and the stalls; then the failure is
    /// undone and the trial waits until every node sees the old owner up
    /// again (it does not take the IP back: ownership is sticky).
    ///
    /// # Errors
    /// Set-up failures, a stream that never reaches the server, or a
    /// cluster that does not settle after the failure is undone.
    pub fn floating_trial(&mut self, pod: &str, failure: Failure) -> Result<FloatingTrial, ClusterError> {
        let floating = crate::minicluster::FLOATING_IP;
        let worker = crate::minicluster::pod(pod).node;
        let rec = Recorder::start(self)?;
        let stream = Stream::start(self, pod)?;
        let tcp = TcpFlow::start(self, pod)?;
        let deadline = Instant::now() + TRIAL_TIMEOUT;
        loop {
            let seen = rec.snapshot();
            if seen.len() >= 20 && seen.last().is_some_and(|(_, ip)| *ip == floating) && tcp.arrivals().len() >= 5 {
                break;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout { what: format!("{pod}'s streams at the server via {floating}") });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let holders = self.holders(floating)?;
        let [owner] = holders.as_slice() else {
            return Err(ClusterError::Timeout { what: format!("exactly one holder of {floating}: {holders:?}") });
        };
        let owner = node(owner);
        let others: Vec<NodeSpec> =
            NODES.iter().filter(|n| n.external.is_some() && n.name != owner.name).copied().collect();
        // t0: the failure starts; t1: it is in effect (the `ip`/`bpftool`
        // commands returned): a datagram sent after t1 cannot go through
        // the old owner
        let t0 = Instant::now();
        self.fail(owner, failure, false)?;
        let t1 = Instant::now();
        let (mut detect, mut recover) = (None, None);
        while Instant::now() < t0 + TRIAL_TIMEOUT && (detect.is_none() || recover.is_none()) {
            if detect.is_none() {
                // the pod's node, or a candidate with a classifier (its gw_live)
                for n in others.iter().map(|o| o.name).chain([worker]) {
                    if self.sees_down(n, owner.address)? {
                        detect = Some(t0.elapsed());
                        break;
                    }
                }
            }
            if recover.is_none() {
                let seen = rec.with_seq();
                recover = seen
                    .iter()
                    .find(|(t, _, seq)| *t > t1 && stream.sent_at(*seq).is_some_and(|s| s > t1))
                    .map(|(t, _, _)| *t - t0);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // the TCP flow resumes when its retransmission timer fires (a few
        // hundred ms after the new path works): wait for its first bytes
        // after the failover, within the trial's bound, then a little more
        // traffic for the stall figures
        if let Some(r) = recover {
            while Instant::now() < t0 + TRIAL_TIMEOUT && !tcp.arrivals().iter().any(|(t, _)| *t > t0 + r) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let owner_after = self.holders(floating)?.first().map(|n| (*n).to_owned());
        let arrivals = tcp.arrivals();
        let tcp_after = arrivals.iter().filter(|(t, _)| recover.is_some_and(|r| *t > t0 + r)).count();
        let tcp_stall = longest_gap_after(arrivals.iter().map(|(t, _)| *t), t0);
        let tcp_source = Some(tcp.peer);
        let (end, write_errors) = tcp.finish();
        stream.finish();
        std::thread::sleep(Duration::from_millis(50));
        let seen = rec.snapshot();
        drop(rec);
        let udp_stall = longest_gap_after(seen.iter().map(|(t, _)| *t), t0);
        let leaked = seen.iter().filter(|(_, ip)| *ip != floating).count() as u64;
        let tcp_survived = tcp_after > 0 && write_errors == 0 && matches!(end, TcpEnd::Open | TcpEnd::Closed);
        // restore, and wait until every node sees the old owner up again
        self.fail(owner, failure, true)?;
        let watchers: Vec<&str> = others.iter().map(|n| n.name).chain([worker]).collect();
        self.wait_seen_up(&watchers, owner)?;
        Ok(FloatingTrial {
            failure,
            owner_before: owner.name.to_owned(),
            owner_after,
            detect,
            recover,
            udp_stall,
            tcp_stall,
            tcp_survived,
            tcp_source,
            leaked,
            received: seen.len() as u64,
        })
    }

    /// Waits (at most 30 s) until exactly one gateway holds
    /// [`crate::minicluster::FLOATING_IP`] and `pod`'s connections leave
    /// from it; that gateway.
    ///
    /// # Errors
    /// No single owner carrying traffic in time, or an `ip` command fails.
    pub fn floating_settled(&self, pod: &str) -> Result<&'static str, ClusterError> {
        let floating = crate::minicluster::FLOATING_IP;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let holders = self.holders(floating)?;
            if let [one] = holders.as_slice()
                && self.tcp_request(pod, SERVER).is_ok_and(|s| s.ip == floating)
            {
                return Ok(one);
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: format!("a single owner of {floating} carrying {pod}'s traffic (holders: {holders:?})"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The floating-IP policy: the labelled pods through
    /// [`crate::minicluster::FLOATING_IP`], floating over every node
    /// labelled `cilium.io/egress-gateway: "true"` (the three gateways).
    #[must_use]
    pub fn floating_policy() -> String {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: egress-gateway-policy\n  annotations:\n    egret.dev/floating-egress-ip: \"true\"\nspec:\n  selectors:\n  - podSelector:\n      matchLabels:\n        use-egress-gateway: \"true\"\n  destinationCIDRs:\n  - 203.0.113.0/24\n  egressGateway:\n    nodeSelector:\n      matchLabels:\n        cilium.io/egress-gateway: \"true\"\n    egressIP: {}\n",
            crate::minicluster::FLOATING_IP
        )
    }
}

/// What a partition between the floating IP's owner and the other
/// candidates came to ([`MiniCluster::partition_trial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The owner cut off from the other candidates.
    pub owner_before: String,
    /// The holders at the end of the partition.
    pub holders_at_end: Vec<String>,
    /// Changes of the set of holders seen while partitioned.
    pub changes: u64,
    /// The nodes that held the address, in the order they did (a node
    /// that withdraws and adds it again appears once): two at most means
    /// no ping-pong.
    pub owners: Vec<String>,
    /// The longest time two or more candidates were seen holding the
    /// address at once (sampled: every holder listing takes a few ms).
    pub longest_dual: Duration,
}

impl MiniCluster {
    /// Cuts every packet between the floating IP's owner and the other
    /// candidates (nftables in the owner's namespace; the workers and the
    /// API server stay reachable from all), holds the partition for
    /// `hold` while sampling who holds the address, then heals it and waits
    /// until every candidate sees every other up again.
    ///
    /// # Errors
    /// Set-up failures, no single owner before, or no settling after.
    pub fn partition_trial(&mut self, hold: Duration) -> Result<Partition, ClusterError> {
        let floating = crate::minicluster::FLOATING_IP;
        let holders = self.holders(floating)?;
        let [owner] = holders.as_slice() else {
            return Err(ClusterError::Timeout { what: format!("exactly one holder of {floating}: {holders:?}") });
        };
        let owner = node(owner);
        let others: Vec<NodeSpec> =
            NODES.iter().filter(|n| n.external.is_some() && n.name != owner.name).copied().collect();
        let set = others.iter().map(|n| n.address.to_string()).collect::<Vec<_>>().join(", ");
        let rules = format!(
            "table ip egret_partition {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    ip saddr {{ {set} }} drop\n  }}\n  chain output {{\n    type filter hook output priority -300; policy accept;\n    ip daddr {{ {set} }} drop\n  }}\n}}\n"
        );
        let ns = self.ns(owner.short);
        crate::minicluster::exec_in(&ns, "nft", &["-f", "-"], Some(&rules))?;
        let started = Instant::now();
        let (mut last, mut changes) = (vec![owner.name], 0u64);
        let mut owners = vec![owner.name.to_owned()];
        let (mut dual_since, mut longest_dual) = (None::<Instant>, Duration::ZERO);
        while started.elapsed() < hold {
            let now = self.holders(floating)?;
            let at = Instant::now();
            if now != last {
                changes += 1;
                last = now.clone();
                for h in &now {
                    if owners.last() != Some(&(*h).to_owned()) {
                        owners.push((*h).to_owned());
                    }
                }
            }
            match (now.len() > 1, dual_since) {
                (true, None) => dual_since = Some(at),
                (false, Some(since)) => {
                    longest_dual = longest_dual.max(at - since);
                    dual_since = None;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(since) = dual_since {
            longest_dual = longest_dual.max(since.elapsed());
        }
        let holders_at_end = self.holders(floating)?.into_iter().map(str::to_owned).collect();
        crate::minicluster::exec_in(&ns, "nft", &["delete", "table", "ip", "egret_partition"], None)?;
        for a in NODES.iter().filter(|n| n.external.is_some()) {
            let watchers: Vec<&str> =
                NODES.iter().filter(|n| n.external.is_some() && n.name != a.name).map(|n| n.name).collect();
            self.wait_seen_up(&watchers, *a)?;
        }
        Ok(Partition { owner_before: owner.name.to_owned(), holders_at_end, changes, owners, longest_dual })
    }
}

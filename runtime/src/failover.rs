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

/// Every egress IP of the mini-cluster's gateways.
fn egress_ips() -> BTreeSet<Ipv4Addr> {
    NODES.iter().flat_map(|n| n.egress_ips.iter().copied()).collect()
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

/// The server side of a stream: receive times and sources.
struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, Ipv4Addr)>>>,
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
            if let Ok((_, std::net::SocketAddr::V4(from))) = socket.recv_from(&mut buf)
                && let Ok(mut v) = seen2.lock()
            {
                v.push((Instant::now(), *from.ip()));
            }
            true
        });
        Ok(Recorder { seen, _thread: thread })
    }

    fn snapshot(&self) -> Vec<(Instant, Ipv4Addr)> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The pod side: one datagram every [`STREAM_EVERY`], for at most [`STREAM_MAX`].
struct Stream {
    sent: Arc<std::sync::atomic::AtomicU64>,
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
        let started = Instant::now();
        let mut seq: u64 = 0;
        let thread = Looping::spawn(move || {
            // a send may fail while routes flap; the stream goes on
            if socket.send(&seq.to_be_bytes()).is_ok() {
                sent2.fetch_add(1, Ordering::Relaxed);
            }
            seq += 1;
            std::thread::sleep(STREAM_EVERY);
            started.elapsed() < STREAM_MAX
        });
        Ok(Stream { sent, thread })
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
    pub fn sees_down(&self, node_name: &str, gateway: Ipv4Addr) -> Result<bool, ClusterError> {
        let layout = PinLayout::new(self.bpffs_root(node_name));
        let io = |e: egret_loader::StateMapError| ClusterError::Io {
            what: format!("reading {node_name}'s egret_gw_live"),
            source: std::io::Error::other(e.to_string()),
        };
        let Some(m) = StateMap::open(&layout, &GatewayLive::map_def()).map_err(io)? else { return Ok(false) };
        let key = GatewayLive { gateway, down: true }.key();
        Ok(m.get(&key).map_err(io)?.and_then(|v| GatewayLive::from_bytes(&key, &v)).is_some_and(|e| e.down))
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
        let back = Instant::now() + TRIAL_TIMEOUT;
        while self.sees_down(worker, gw.address)? {
            if Instant::now() > back {
                return Err(ClusterError::Timeout { what: format!("{worker} to see {} up again", gw.name) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let gw =
            gateway_of(before).ok_or_else(|| ClusterError::Timeout { what: format!("the gateway of {before}") })?;
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

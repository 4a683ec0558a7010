//! The mini-cluster: the article's "Step 5: Test Egress Gateway" on one
//! machine, in network namespaces (TESTING.md rules: documentation and
//! 10.x ranges only, nothing routed out of the namespaces, everything
//! removed on drop).
//!
//! ```text
//!                        underlay 192.0.2.0/24 (bridge br0 in `ul`)
//!      ┌──────────────────────┬──────────────────────┬──────────────────────┬──────────────────┬──────────────┬───────────┐
//!   worker-1 .11           worker-2 .12          gateway-1 .13          gateway-2 .14      gateway-3 .15    server .1
//!   (eth0)                 (eth0)                (eth0)  eth1 ─┐        (eth0)  eth1 ─┐    (eth0) eth1 ─┐  (eth0)
//!    ├ veth0 ─ egress-1     ├ veth0 ─ egress-2    198.51.100.13 │        198.51.100.14 │    198.51.100.15 │
//!    │  10.244.1.10 (*)     │  10.244.2.10 (*)    + .100, .101  │        + .102        │    (+ .150 when  │
//!    └ veth1 ─ plain-1      └ veth1 ─ plain-2                   │                      │     it owns it)  │
//!       10.244.1.11            10.244.2.11                      └── bridge eth1 in `srv` ┴──────────────────┘
//!                                                                   198.51.100.1; lo 203.0.113.10, .200
//!                                                 (*) use-egress-gateway: "true"
//! ```
//!
//! - **Nodes** (`worker-1`, `worker-2`, `gateway-1`, `gateway-2`, `gateway-3`): their own namespaces,
//!   `eth0` on the underlay. Workers forward their pods' traffic and
//!   masquerade it to their node address with nftables — the cluster's
//!   normal path that egret leaves alone. They reach the server through the
//!   underlay router (`192.0.2.1`, the server's `eth0`).
//! - **Pods**: one namespace each, `eth0` with a /32 address and a default
//!   route via `169.254.1.1` (a static neighbour: the host-side veth), the
//!   node routes the /32 to the host-side veth (as routed CNIs do). MTU
//!   1450 (VXLAN overhead).
//! - **Gateways**: `eth1` on the external segment (a bridge in the server's
//!   namespace) holds the egress IPs: [`EGRESS_IP`] and [`EGRESS_IP_2`] on
//!   `gateway-1`, [`EGRESS_IP_3`] on `gateway-2`, none on `gateway-3`
//!   ([`FLOATING_IP`] moves between the three gateways in the floating-IP
//!   trials); the route to the server goes
//!   through `eth1`. No forwarding: only egret's programs move pod traffic.
//!   All three are labelled `cilium.io/egress-gateway: "true"`; a policy whose
//!   one gateway entry selects that label resolves to `gateway-1` (the first
//!   by name), so `gateway-2` and `gateway-3` carry traffic only for policies
//!   that name them (the failover trials, [`MiniCluster::failover_trial`]) or
//!   make that entry's egress IP floating (every selected node a candidate).
//! - **Server**: answers TCP on [`TCP_PORT`] and UDP on [`UDP_PORT`] with
//!   the source address and port it sees, echoes ICMP (the kernel) and logs
//!   every echo request's source. Reachable only from the nodes' uplinks.
//! - **Agents**: one `egret-agent --snapshot DIR --node NAME --netns NS`
//!   process per node (the binary is passed in), each with its own bpffs
//!   root on a private bpffs mount, all reading one snapshot directory
//!   ([`MiniCluster::snapshot_dir`]) that the caller may edit; or, with
//!   [`Source::Kube`], `egret-agent --kube` fed by an API server the caller
//!   runs (typically in the server's namespace, on [`API_SERVER`], which
//!   every node reaches over the underlay), the snapshot's objects served
//!   by it ([`MiniCluster::prepare`], then [`MiniCluster::start_agents`]).
//!
//! The policy is the article's "Step 4" policy (corrected, as in
//! `examples/policies/egress-gateway-policy.yaml`) with one more excluded
//! CIDR, [`EXCLUDED_CIDR`], so that an excluded destination can be tested.
//!
//! **Dual stack** ([`Stack::Dual`], [`MiniCluster::start_dual_stack`]): the
//! same topology, and everything but the tunnel also speaks IPv6 — the
//! underlay segment (`2001:db8:2::/64`: node `eth0`s, the server's `eth0`
//! `2001:db8:2::1`, so the workers' normal path and its masquerade work for
//! IPv6 too), the pods (`2001:db8:244:N::/64`, a `/128` each, default route
//! via `fe80::1`, a static neighbour like `169.254.1.1`), the gateways'
//! `eth1` (gateway-1's one global IPv6, [`EGRESS_IP6`], is its slot's IPv6
//! egress address: the first IPv6 of the interface holding the IPv4
//! `egressIP`, SEMANTICS.md "Egress IP") and the server ([`SERVER6`],
//! [`EXCLUDED_SERVER6`] on its loopback, `2001:db8:100::1` on the external
//! segment). Pods' `podIPs` and nodes' `podCIDRs` and `InternalIP`s list
//! both families; the policy ([`dual_stack_policy`]) adds `::/0` to its
//! destinations and excludes the pods' IPv6 range and [`EXCLUDED_CIDR6`].
//! One more pod, [`GATEWAY_POD`], runs on gateway-1 itself (its traffic
//! leaves through `egret_gw_local`, both families). The tunnel stays IPv4
//! (a node's underlay address is its first IPv4 `InternalIP`). Every IPv6 address is added `nodad`
//! and the bridges do not snoop multicast, so neighbour discovery works at
//! once.
//!
//! **IPv6 only** ([`Stack::V6Only`]): the dual-stack topology with every
//! IPv4 address left out of nodes, pods and the gateways' `eth1` — nodes'
//! `InternalIP`s are IPv6 only, so the tunnel, the gateway probes and NAT
//! replication run over the IPv6 underlay (`2001:db8:2::/64`); the policy is
//! [`ipv6_only_policy`]. The kernel-NAT comparison datapath is not built for it.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_loader::inspect;
use egret_loader::pins::Generation;

/// UDP port of `egret0` in the mini-cluster.
pub const TUNNEL_PORT: u16 = 4799;
/// The external server's address.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// A second server address, inside [`EXCLUDED_CIDR`].
pub const EXCLUDED_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
/// The CIDR the mini-cluster's policy excludes besides the article's.
pub const EXCLUDED_CIDR: &str = "203.0.113.128/25";
/// The agents' flow-log expiry sweep ([`MiniCluster::enable_flow_log`]), ms.
pub const FLOW_LOG_SWEEP_MS: u64 = 200;
/// The server's TCP port.
pub const TCP_PORT: u16 = 8080;
/// The server's UDP port.
pub const UDP_PORT: u16 = 8081;
/// Where each agent serves its metrics, inside its node's namespace.
pub const METRICS_PORT: u16 = 9964;
/// The server's UDP sink port: it counts datagrams and answers nothing.
pub const SINK_PORT: u16 = 8082;
/// The policy's egress IP (on the gateway's `eth1`).
pub const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// A second egress IP on the gateway's `eth1`.
pub const EGRESS_IP_2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 101);
/// The egress IP on `gateway-2`'s `eth1` (the failover tests' second gateway).
pub const EGRESS_IP_3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 102);
/// The server's IPv6 address ([`Stack::Dual`]).
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xcafe, 0, 0, 0, 0, 0x10);
/// A second server IPv6 address, inside [`EXCLUDED_CIDR6`].
pub const EXCLUDED_SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xcafe, 1, 0, 0, 0, 0x200);
/// The IPv6 CIDR the dual-stack policy excludes.
pub const EXCLUDED_CIDR6: &str = "2001:db8:cafe:1::/64";
/// The pods' IPv6 range (cluster-internal: excluded by the dual-stack policy).
pub const POD_RANGE6: &str = "2001:db8:244::/48";
/// The IPv6 egress address of gateway-1's slot: the one global IPv6 of its
/// `eth1` ([`Stack::Dual`]).
pub const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);
/// The floating egress IP of the floating-IP trials: on no node's `eth1`
/// until a candidate (the three gateways) takes its Lease and adds it.
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 150);
/// Where an API server for [`Source::Kube`] listens: the server
/// namespace's underlay address, which every node routes to directly.
pub const API_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 6443);
/// The policy file in the snapshot directory.
pub const POLICY_FILE: &str = "policy.yaml";
/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

const ROUTER_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's address on the external segment (its `eth1` bridge).
pub const ROUTER_EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(crate) const POD_GATEWAY: &str = "169.254.1.1";
/// The pods' IPv6 default gateway (link-local; its neighbour entry is the host side).
pub const POD_GATEWAY6: &str = "fe80::1";
/// The server's IPv6 on the underlay segment (its `eth0`).
const ROUTER_UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// The server's IPv6 on the external segment (its `eth1` bridge).
pub const ROUTER_EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// The server's IPv6 service range (routed by the nodes to the server).
const SERVICE_RANGE6: &str = "2001:db8:cafe::/48";
const POD_MTU: &str = "1450";

/// A node of the mini-cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    /// Kubernetes name.
    pub name: &'static str,
    /// Short role used in namespace names.
    pub short: &'static str,
    /// IPv4 underlay address (`InternalIP`; none on [`Stack::V6Only`]).
    pub address: Ipv4Addr,
    /// Pod CIDR.
    pub pod_cidr: &'static str,
    /// Labelled `cilium.io/egress-gateway: "true"`; its `eth1` on the
    /// external segment has `external` and holds `egress_ips`.
    pub gateway: bool,
    /// The gateway's own address on the external segment.
    pub external: Option<Ipv4Addr>,
    /// The egress IPs on the gateway's `eth1`.
    pub egress_ips: &'static [Ipv4Addr],
    /// Its IPv6 underlay address ([`Stack::Dual`], where the tunnel stays
    /// IPv4; [`Stack::V6Only`], where the tunnel runs over it).
    pub address6: Ipv6Addr,
    /// Its pods' IPv6 range ([`Stack::Dual`], [`Stack::V6Only`]).
    pub pod_cidr6: &'static str,
    /// A gateway's one global IPv6 on `eth1` ([`Stack::Dual`], [`Stack::V6Only`]): the IPv6
    /// egress address of its slots there.
    pub external6: Option<Ipv6Addr>,
}

/// The five nodes.
pub const NODES: [NodeSpec; 5] = [
    NodeSpec {
        name: "worker-1",
        short: "w1",
        address: Ipv4Addr::new(192, 0, 2, 11),
        pod_cidr: "10.244.1.0/24",
        gateway: false,
        external: None,
        egress_ips: &[],
        address6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11),
        pod_cidr6: "2001:db8:244:1::/64",
        external6: None,
    },
    NodeSpec {
        name: "worker-2",
        short: "w2",
        address: Ipv4Addr::new(192, 0, 2, 12),
        pod_cidr: "10.244.2.0/24",
        gateway: false,
        external: None,
        egress_ips: &[],
        address6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x12),
        pod_cidr6: "2001:db8:244:2::/64",
        external6: None,
    },
    NodeSpec {
        name: "gateway-1",
        short: "gw",
        address: Ipv4Addr::new(192, 0, 2, 13),
        pod_cidr: "10.244.3.0/24",
        gateway: true,
        external: Some(Ipv4Addr::new(198, 51, 100, 13)),
        egress_ips: &[EGRESS_IP, EGRESS_IP_2],
        address6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x13),
        pod_cidr6: "2001:db8:244:3::/64",
        external6: Some(EGRESS_IP6),
    },
    NodeSpec {
        name: "gateway-2",
        short: "gw2",
        address: Ipv4Addr::new(192, 0, 2, 14),
        pod_cidr: "10.244.4.0/24",
        gateway: true,
        external: Some(Ipv4Addr::new(198, 51, 100, 14)),
        egress_ips: &[EGRESS_IP_3],
        address6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x14),
        pod_cidr6: "2001:db8:244:4::/64",
        external6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x14)),
    },
    NodeSpec {
        name: "gateway-3",
        short: "gw3",
        address: Ipv4Addr::new(192, 0, 2, 15),
        pod_cidr: "10.244.5.0/24",
        gateway: true,
        external: Some(Ipv4Addr::new(198, 51, 100, 15)),
        egress_ips: &[],
        address6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x15),
        pod_cidr6: "2001:db8:244:5::/64",
        external6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x15)),
    },
];

/// A pod of the mini-cluster (namespace `production`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSpec {
    /// Pod name (also the short name of its network namespace).
    pub name: &'static str,
    /// Its node.
    pub node: &'static str,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Labelled `use-egress-gateway: "true"`.
    pub egress: bool,
    /// Its `lane` label: `a` on worker-1, `b` on worker-2.
    pub lane: &'static str,
    /// Its IPv6 address ([`Stack::Dual`]).
    pub ip6: Ipv6Addr,
}

/// The four pods.
pub const PODS: [PodSpec; 4] = [
    PodSpec {
        name: "egress-1",
        node: "worker-1",
        ip: Ipv4Addr::new(10, 244, 1, 10),
        egress: true,
        lane: "a",
        ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x244, 1, 0, 0, 0, 0x10),
    },
    PodSpec {
        name: "plain-1",
        node: "worker-1",
        ip: Ipv4Addr::new(10, 244, 1, 11),
        egress: false,
        lane: "a",
        ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x244, 1, 0, 0, 0, 0x11),
    },
    PodSpec {
        name: "egress-2",
        node: "worker-2",
        ip: Ipv4Addr::new(10, 244, 2, 10),
        egress: true,
        lane: "b",
        ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x244, 2, 0, 0, 0, 0x10),
    },
    PodSpec {
        name: "plain-2",
        node: "worker-2",
        ip: Ipv4Addr::new(10, 244, 2, 11),
        egress: false,
        lane: "b",
        ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x244, 2, 0, 0, 0, 0x11),
    },
];

/// The pod on gateway-1 itself, labelled for the gateway ([`Stack::Dual`]
/// only): its traffic is translated on its own node (`egret_gw_local`).
pub const GATEWAY_POD: PodSpec = PodSpec {
    name: "egress-g",
    node: "gateway-1",
    ip: Ipv4Addr::new(10, 244, 3, 10),
    egress: true,
    lane: "g",
    ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x244, 3, 0, 0, 0, 0x10),
};

/// The pod named `name` (of either stack).
///
/// # Panics
/// If there is no such pod (a caller's typo).
#[must_use]
pub fn pod(name: &str) -> PodSpec {
    *PODS
        .iter()
        .chain([&GATEWAY_POD])
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod `{name}` in the mini-cluster"))
}

/// Which address families the mini-cluster has (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// IPv4 only: the article's cluster.
    V4,
    /// IPv4 and IPv6 (the tunnel IPv4), with [`GATEWAY_POD`].
    Dual,
    /// IPv6 only, the tunnel over IPv6 too: the dual-stack topology without
    /// a single IPv4 address on a node, a pod or the gateways' `eth1`
    /// (module doc), with [`GATEWAY_POD`] and [`ipv6_only_policy`].
    V6Only,
}

impl Stack {
    /// The pods of a cluster of this stack.
    #[must_use]
    pub fn pods(self) -> Vec<PodSpec> {
        let mut pods = PODS.to_vec();
        if self.v6() {
            pods.push(GATEWAY_POD);
        }
        pods
    }

    /// Whether the cluster has IPv4 addresses.
    #[must_use]
    pub fn v4(self) -> bool {
        self != Stack::V6Only
    }

    /// Whether the cluster has IPv6 addresses.
    #[must_use]
    pub fn v6(self) -> bool {
        self != Stack::V4
    }
}

/// The node named `name`.
///
/// # Panics
/// If there is no such node.
#[must_use]
pub fn node(name: &str) -> NodeSpec {
    *NODES.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node `{name}` in the mini-cluster"))
}

/// Why the mini-cluster could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A set-up command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or why it did not run).
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The node has no agent (a [`Datapath::KernelNat`] cluster, or an unknown node).
    #[error("no agent runs on {node}")]
    NoAgent {
        /// The node.
        node: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// An agent exited.
    #[error("the agent of `{node}` exited ({status}); its stderr:\n{stderr}")]
    AgentExited {
        /// The node.
        node: String,
        /// Its exit status.
        status: String,
        /// Its stderr so far.
        stderr: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Runs `program args…`; its stdout on success.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
    let command = format!("{program} {}", args.join(" "));
    let fail = |stderr: String| ClusterError::Command { command: command.clone(), stderr };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the mini-cluster needs that a machine may lack: `None` if it has
/// everything (root is checked by the callers' privilege gates).
#[must_use]
pub fn missing_tools() -> Option<String> {
    for (tool, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("`{tool}` ({package}) is missing"));
        }
    }
    None
}

/// Moves the calling thread into the named network namespace.
///
/// # Errors
/// The namespace does not exist or `setns` fails.
pub fn enter_netns(name: &str) -> Result<(), ClusterError> {
    let path = Path::new("/run/netns").join(name);
    let f = File::open(&path).map_err(io(format!("opening {}", path.display())))?;
    rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(|e| ClusterError::Io { what: format!("setns into {name}"), source: e.into() })
}

/// Runs `f` on a new thread inside network namespace `ns` (sockets it
/// creates stay in that namespace wherever they are used afterwards).
///
/// # Errors
/// Entering the namespace fails, or `f` fails.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(ClusterError::Io { what: "a namespace thread panicked".into(), source: std::io::ErrorKind::Other.into() })
    })
}

/// What the server saw of one request: the source address and port (ICMP:
/// the echo identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seen {
    /// Source address as the server saw it (compares with an `Ipv4Addr` or
    /// `Ipv6Addr` directly).
    pub ip: IpAddr,
    /// Source port (ICMP echo: identifier).
    pub port: u16,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.ip, self.port))
    }
}

fn parse_seen(line: &str) -> Option<Seen> {
    let mut it = line.split_whitespace();
    Some(Seen { ip: it.next()?.parse().ok()?, port: it.next()?.parse().ok()? })
}

/// The outcome of [`MiniCluster::udp_flood`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Datagrams the pod's sockets accepted.
    pub sent: u64,
    /// Sends that failed (e.g. `ENOBUFS`).
    pub failed: u64,
    /// Frames that arrived at the server's external interface (`eth1`).
    pub arrived: u64,
    /// Datagrams the server's sink socket received.
    pub delivered: u64,
    /// How long the sending took.
    pub elapsed: Duration,
}

impl Flood {
    /// Frames arrived at the server per second of sending.
    #[must_use]
    pub fn arrived_pps(&self) -> f64 {
        self.arrived as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An ICMP or ICMPv6 echo request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EchoSeen {
    src: IpAddr,
    id: u16,
    payload: Vec<u8>,
}

/// Every TCP SYN the server saw: its source and MSS option.
type SynLog = Mutex<Vec<(Seen, Option<u16>)>>;

/// The server's threads and what they logged.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    echoes: Arc<Mutex<Vec<EchoSeen>>>,
    /// Every TCP SYN's source and MSS option.
    syns: Arc<SynLog>,
    sink: Arc<AtomicU64>,
}

impl Server {
    fn start(ns: &str, stack: Stack) -> Result<Server, ClusterError> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoes = Arc::new(Mutex::new(Vec::new()));
        // IPv4: the wildcard; IPv6: each service address (a v6 socket on a
        // specific address takes no IPv4 and does not clash with the wildcard)
        let mut tcp_addresses = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, TCP_PORT))];
        // one UDP socket per service address: an answer must leave from the
        // address that was asked (a wildcard socket would answer from the
        // outgoing interface's address, which no NAT on the way expects)
        let mut udp_addresses: Vec<IpAddr> =
            if stack.v4() { vec![SERVER.into(), EXCLUDED_SERVER.into()] } else { Vec::new() };
        if stack.v6() {
            tcp_addresses.extend([SERVER6, EXCLUDED_SERVER6].map(|a| SocketAddr::from((a, TCP_PORT))));
            udp_addresses.extend([IpAddr::from(SERVER6), IpAddr::from(EXCLUDED_SERVER6)]);
        }
        let mut tcp = Vec::new();
        for addr in tcp_addresses {
            tcp.push(in_netns(ns, move || {
                let l = TcpListener::bind(addr).map_err(io(format!("binding the TCP server on {addr}")))?;
                l.set_nonblocking(true).map_err(io("TCP server"))?;
                Ok(l)
            })?);
        }
        let mut udp = Vec::new();
        for addr in udp_addresses {
            udp.push(in_netns(ns, move || {
                let s = UdpSocket::bind((addr, UDP_PORT)).map_err(io(format!("binding the UDP server on {addr}")))?;
                s.set_read_timeout(Some(Duration::from_millis(50))).map_err(io("UDP server"))?;
                Ok(s)
            })?);
        }
        let raw = in_netns(ns, || raw_socket(rustix::net::ipproto::ICMP, Duration::from_millis(50)))?;
        let raw6 = if stack.v6() {
            Some(in_netns(ns, || raw_socket6(rustix::net::ipproto::ICMPV6, Duration::from_millis(50)))?)
        } else {
            None
        };
        let raw_tcp = in_netns(ns, || raw_socket(rustix::net::ipproto::TCP, Duration::from_millis(50)))?;
        let syns = Arc::new(Mutex::new(Vec::new()));
        let mut sink_addresses: Vec<IpAddr> = if stack.v4() { vec![SERVER.into()] } else { Vec::new() };
        if stack.v6() {
            sink_addresses.push(SERVER6.into());
        }
        let sink = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for addr in sink_addresses {
            let sink_socket = in_netns(ns, move || {
                let s = UdpSocket::bind((addr, SINK_PORT)).map_err(io(format!("binding the UDP sink on {addr}")))?;
                s.set_read_timeout(Some(Duration::from_millis(50))).map_err(io("UDP sink"))?;
                // room for bursts, so the sink's socket is not what limits a flood
                let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, 8 << 20);
                Ok(s)
            })?;
            let (s, count) = (stop.clone(), sink.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::Relaxed) {
                    if sink_socket.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for l in tcp {
            let s = stop.clone();
            threads.push(std::thread::spawn(move || tcp_server(&l, &s)));
        }
        for u in udp {
            let s = stop.clone();
            threads.push(std::thread::spawn(move || udp_server(&u, &s)));
        }
        let (s, log) = (stop.clone(), echoes.clone());
        threads.push(std::thread::spawn(move || icmp_log(&raw, &s, &log)));
        if let Some(raw6) = raw6 {
            let (s, log) = (stop.clone(), echoes.clone());
            threads.push(std::thread::spawn(move || icmp6_log(&raw6, &s, &log)));
        }
        let (s, log) = (stop.clone(), syns.clone());
        threads.push(std::thread::spawn(move || syn_log(&raw_tcp, &s, &log)));
        Ok(Server { stop, threads, echoes, syns, sink })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_server(l: &TcpListener, stop: &Arc<AtomicBool>) {
    let mut handlers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((stream, peer)) => {
                let stop = stop.clone();
                let h = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || tcp_connection(stream, peer, &stop));
                if let Ok(h) = h {
                    handlers.push(h);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        handlers.retain(|h| !h.is_finished());
    }
    for h in handlers {
        let _ = h.join();
    }
}

/// Greets with `"<ip> <port>\n"`, then answers every line with
/// `"<ip> <port> <line>\n"` until the peer closes or the server stops.
fn tcp_connection(stream: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut out) = stream.try_clone() else { return };
    let who = format!("{} {}", peer.ip(), peer.port());
    if writeln!(out, "{who}").is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if writeln!(out, "{who} {}", line.trim_end()).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Answers every datagram with `"<ip> <port> <payload>"`.
fn udp_server(s: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, peer)) = s.recv_from(&mut buf) {
            let reply = format!("{} {} {}", peer.ip(), peer.port(), String::from_utf8_lossy(&buf[..n]));
            let _ = s.send_to(reply.as_bytes(), peer);
        }
    }
}

/// A raw IPv4 socket for `protocol` in the calling thread's namespace
/// (it receives a copy of every incoming packet of that protocol, IPv4
/// header included), with a receive timeout.
pub(crate) fn raw_socket(
    protocol: rustix::net::Protocol,
    timeout: Duration,
) -> Result<rustix::fd::OwnedFd, ClusterError> {
    raw_socket_of(rustix::net::AddressFamily::INET, protocol, timeout)
}

/// A raw IPv6 socket for `protocol` (no IPv6 header on receive: the
/// source comes from `recvfrom`; for ICMPv6 the kernel computes the
/// checksum of what is sent).
fn raw_socket6(protocol: rustix::net::Protocol, timeout: Duration) -> Result<rustix::fd::OwnedFd, ClusterError> {
    raw_socket_of(rustix::net::AddressFamily::INET6, protocol, timeout)
}

fn raw_socket_of(
    family: rustix::net::AddressFamily,
    protocol: rustix::net::Protocol,
    timeout: Duration,
) -> Result<rustix::fd::OwnedFd, ClusterError> {
    let err = |e: rustix::io::Errno| ClusterError::Io { what: "raw socket".into(), source: e.into() };
    let fd = rustix::net::socket(family, rustix::net::SocketType::RAW, Some(protocol)).map_err(err)?;
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, Some(timeout)).map_err(err)?;
    Ok(fd)
}

/// One datagram of a raw IPv6 socket and its source address.
fn recv6(fd: &rustix::fd::OwnedFd, buf: &mut [u8]) -> Option<(usize, Ipv6Addr)> {
    let (n, _, from) = rustix::net::recvfrom(fd, buf, rustix::net::RecvFlags::empty()).ok()?;
    let from = std::net::SocketAddrV6::try_from(from?).ok()?;
    Some((n, *from.ip()))
}

/// `ICMPV6_ECHO_REQUEST`, `ICMPV6_ECHO_REPLY`.
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

/// Logs the source and the MSS option (if any) of every TCP SYN.
fn syn_log(fd: &rustix::fd::OwnedFd, stop: &AtomicBool, log: &SynLog) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = rustix::io::read(fd, &mut buf) else { continue };
        let p = &buf[..n];
        if p.len() < 20 {
            continue;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let Some(tcp) = p.get(ihl..) else { continue };
        if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
            continue;
        }
        let ip = Ipv4Addr::new(p[12], p[13], p[14], p[15]).into();
        let src = Seen { ip, port: u16::from_be_bytes([tcp[0], tcp[1]]) };
        let end = (usize::from(tcp[12] >> 4) * 4).min(tcp.len());
        let (mut i, mut mss) = (20, None);
        while i < end {
            match tcp[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let len = usize::from(*tcp.get(i + 1).unwrap_or(&0));
                    if len < 2 {
                        break;
                    }
                    if kind == 2 && len == 4 && i + 4 <= end {
                        mss = Some(u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]));
                    }
                    i += len;
                }
            }
        }
        if let Ok(mut l) = log.lock() {
            l.push((src, mss));
        }
    }
}

/// Logs the source, identifier and payload of every ICMP echo request.
fn icmp_log(fd: &rustix::fd::OwnedFd, stop: &AtomicBool, log: &Mutex<Vec<EchoSeen>>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = rustix::io::read(fd, &mut buf) else { continue };
        let p = &buf[..n];
        if p.len() < 20 {
            continue;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if p.len() < ihl + 8 || p[ihl] != 8 {
            continue;
        }
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]).into();
        let id = u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]);
        if let Ok(mut l) = log.lock() {
            l.push(EchoSeen { src, id, payload: p[ihl + 8..].to_vec() });
        }
    }
}

/// Logs the source, identifier and payload of every ICMPv6 echo request.
fn icmp6_log(fd: &rustix::fd::OwnedFd, stop: &AtomicBool, log: &Mutex<Vec<EchoSeen>>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Some((n, src)) = recv6(fd, &mut buf) else { continue };
        let p = &buf[..n];
        if p.len() < 8 || p[0] != ICMP6_ECHO_REQUEST {
            continue;
        }
        let id = u16::from_be_bytes([p[4], p[5]]);
        if let Ok(mut l) = log.lock() {
            l.push(EchoSeen { src: src.into(), id, payload: p[8..].to_vec() });
        }
    }
}

/// An agent process; killed (by its pid, it is our child) and reaped on drop.
struct AgentProcess {
    node: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// How it was started (to start it again).
    command: (PathBuf, Vec<String>, Vec<(String, std::ffi::OsString)>),
}

impl AgentProcess {
    fn spawn(
        binary: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        node: &'static str,
    ) -> Result<AgentProcess, ClusterError> {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        let lines = |r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if let Ok(mut v) = b.lock() {
                        v.push(line);
                    }
                }
            });
            buf
        };
        let stdout = child.stdout.take().map_or_else(|| Arc::new(Mutex::new(Vec::new())), |o| lines(Box::new(o)));
        let stderr = child.stderr.take().map_or_else(|| Arc::new(Mutex::new(Vec::new())), |e| lines(Box::new(e)));
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Ok(AgentProcess { node, child, stdout, stderr, command: (binary.to_path_buf(), args.to_vec(), env) })
    }

    /// The same command again (the old process must have ended).
    fn respawn(&mut self) -> Result<(), ClusterError> {
        let (binary, args, env) = self.command.clone();
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())).collect();
        *self = AgentProcess::spawn(&binary, &args, &env, self.node)?;
        Ok(())
    }

    fn exited(&mut self) -> Option<ClusterError> {
        let status = self.child.try_wait().ok().flatten()?;
        let stderr = self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default();
        Some(ClusterError::AgentExited { node: self.node.to_owned(), status: status.to_string(), stderr })
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private bpffs mount; unmounted (dropping every pin) and removed on drop.
struct BpffsMount {
    dir: PathBuf,
}

impl BpffsMount {
    fn new(dir: PathBuf) -> Result<BpffsMount, ClusterError> {
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let d = dir.to_string_lossy().into_owned();
        if let Err(e) = run("mount", &["-t", "bpf", "bpf", &d], None) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(BpffsMount { dir })
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The named network namespaces; deleted on drop, last created first.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String, stack: Stack) -> Result<(), ClusterError> {
        run("ip", &["netns", "add", &name], None)?;
        self.0.push(name.clone());
        if stack.v6() {
            // no duplicate address detection on the links created from now
            // on (link-local addresses included): addresses usable at once
            for key in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
                exec_in(&name, "sysctl", &["-qw", key], None)?;
            }
        }
        run("ip", &["-n", &name, "link", "set", "lo", "up"], None)?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// `ip -n NS args…`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, ClusterError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all, None)
}

/// `ip netns exec NS program args…` (for `sysctl` and `nft`, which need no bpffs).
pub(crate) fn exec_in(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all, stdin)
}

/// A locally administered MAC from a role byte and an IPv4 address.
fn mac(role: u8, ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:{role:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// The running mini-cluster. Dropping it stops the agents and the server,
/// deletes every namespace (and with them every interface and tcx link),
/// unmounts the private bpffs (every pin) and removes the snapshot.
pub struct MiniCluster {
    prefix: String,
    stack: Stack,
    // field order is drop order: agents before the pins and namespaces they use
    agents: Vec<AgentProcess>,
    server: Option<Server>,
    namespaces: Namespaces,
    bpffs: Option<BpffsMount>,
    snapshot: PathBuf,
    /// The agents' flow logs' directory and bound ([`MiniCluster::enable_flow_log`]).
    flow_log: Option<(PathBuf, u64)>,
}

impl fmt::Debug for MiniCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniCluster").field("prefix", &self.prefix).field("namespaces", &self.namespaces.0).finish()
    }
}

impl Drop for MiniCluster {
    fn drop(&mut self) {
        self.agents.clear();
        self.server = None;
        let _ = std::fs::remove_dir_all(&self.snapshot);
        if let Some((d, _)) = &self.flow_log {
            let _ = std::fs::remove_dir_all(d);
        }
        // what the agents' floating-IP controllers left for `egret-agent status`
        for n in NODES {
            let _ = std::fs::remove_file(egret_runtime::ha::ownership::status_file(&self.bpffs_root(n.name)));
        }
    }
}

/// Where the agents read the cluster from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// The snapshot directory ([`MiniCluster::snapshot_dir`]): `--snapshot`.
    Snapshot,
    /// An API server: `--kube`, with `KUBECONFIG` set to this file.
    Kube {
        /// The kubeconfig every agent reads.
        kubeconfig: &'a Path,
    },
}

/// What moves the labelled pods' traffic out through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath<'a> {
    /// egret: one `egret-agent` process per node (the binary at this path).
    Egret(&'a Path),
    /// The comparison for benchmarks: no egret at all. The workers route
    /// the labelled pods' traffic to the server (source-based routing, no
    /// masquerade) to the gateway node — through a plain VXLAN device per
    /// worker (`tunnel: true`, the same encapsulation egret uses, UDP port
    /// 4800) or directly over the underlay (`tunnel: false`); the gateway
    /// forwards it and netfilter rewrites the source to [`EGRESS_IP`]
    /// (`snat`, the static form of MASQUERADE, with conntrack) — a classic
    /// NAT gateway. On [`Stack::Dual`] the same for IPv6 (over the same
    /// IPv4 tunnel, or routed over the underlay's IPv6), `ip6` `snat` to
    /// [`EGRESS_IP6`].
    KernelNat {
        /// Tunnel to the gateway as egret does.
        tunnel: bool,
    },
}

impl MiniCluster {
    /// Builds the topology, writes the snapshot, starts the server and one
    /// agent per node (`agent` is the `egret-agent` binary), and waits until
    /// every agent serves a generation with its pods attached.
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn start(tag: &str, agent: &Path) -> Result<MiniCluster, ClusterError> {
        MiniCluster::start_with(tag, Datapath::Egret(agent))
    }

    /// [`MiniCluster::start`] with a choice of [`Datapath`].
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn start_with(tag: &str, datapath: Datapath<'_>) -> Result<MiniCluster, ClusterError> {
        MiniCluster::start_with_stack(tag, Stack::V4, datapath)
    }

    /// [`MiniCluster::start_with`] on a [`Stack`].
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn start_with_stack(tag: &str, stack: Stack, datapath: Datapath<'_>) -> Result<MiniCluster, ClusterError> {
        let mut c = MiniCluster::prepare_with(tag, stack)?;
        match datapath {
            Datapath::Egret(agent) => c.start_agents(agent, Source::Snapshot)?,
            Datapath::KernelNat { tunnel } => c.kernel_nat(tunnel)?,
        }
        Ok(c)
    }

    /// [`MiniCluster::start`] on the dual-stack cluster ([`Stack::Dual`]).
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn start_dual_stack(tag: &str, agent: &Path) -> Result<MiniCluster, ClusterError> {
        let mut c = MiniCluster::prepare_with(tag, Stack::Dual)?;
        c.start_agents(agent, Source::Snapshot)?;
        Ok(c)
    }

    /// Builds the topology, writes the snapshot, mounts the bpffs and
    /// starts the server: everything but the agents.
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn prepare(tag: &str) -> Result<MiniCluster, ClusterError> {
        MiniCluster::prepare_with(tag, Stack::V4)
    }

    /// [`MiniCluster::prepare`] with a choice of [`Stack`].
    ///
    /// # Errors
    /// Any set-up step; everything created so far is removed.
    pub fn prepare_with(tag: &str, stack: Stack) -> Result<MiniCluster, ClusterError> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("egret-{tag}-{}x{n}", std::process::id() % 100_000);
        let snapshot = std::env::temp_dir().join(format!("{prefix}-snapshot"));
        let mut c = MiniCluster {
            prefix: prefix.clone(),
            stack,
            agents: Vec::new(),
            server: None,
            namespaces: Namespaces(Vec::new()),
            bpffs: None,
            snapshot: snapshot.clone(),
            flow_log: None,
        };
        c.build_network()?;
        std::fs::create_dir_all(&snapshot).map_err(io(format!("creating {}", snapshot.display())))?;
        c.write_snapshot()?;
        c.bpffs = Some(BpffsMount::new(std::env::temp_dir().join(format!("{prefix}-bpffs")))?);
        c.server = Some(Server::start(&c.ns("srv"), stack)?);
        Ok(c)
    }

    /// The cluster's address families.
    #[must_use]
    pub fn stack(&self) -> Stack {
        self.stack
    }

    /// The cluster's pods ([`Stack::pods`]).
    #[must_use]
    pub fn pods(&self) -> Vec<PodSpec> {
        self.stack.pods()
    }

    /// The host side of a pod's veth on its node (`veth0`, `veth1`, … in
    /// the order of the node's pods).
    fn host_veth(&self, pod_name: &str) -> String {
        let p = pod(pod_name);
        let i = self.pods().iter().filter(|q| q.node == p.node).position(|q| q.name == p.name).unwrap_or(0);
        format!("veth{i}")
    }

    /// Starts one agent per node (`agent` is the `egret-agent` binary)
    /// reading `source`, and waits until every agent serves a generation
    /// with its pods attached.
    ///
    /// # Errors
    /// An agent that does not start or exits, or a timeout.
    pub fn start_agents(&mut self, agent: &Path, source: Source<'_>) -> Result<(), ClusterError> {
        let c = self;
        for node in NODES {
            let (mut args, env): (Vec<String>, Vec<(&str, &std::ffi::OsStr)>) = match source {
                Source::Snapshot => (vec!["--snapshot".into(), c.snapshot.to_string_lossy().into_owned()], Vec::new()),
                Source::Kube { kubeconfig } => (vec!["--kube".into()], vec![("KUBECONFIG", kubeconfig.as_os_str())]),
            };
            args.extend([
                "--node".into(),
                node.name.into(),
                "--bpffs".into(),
                c.bpffs_root(node.name).to_string_lossy().into_owned(),
                "--netns".into(),
                c.ns(node.short),
                "--tunnel-port".into(),
                TUNNEL_PORT.to_string(),
                "--metrics".into(),
                format!("127.0.0.1:{METRICS_PORT}"),
            ]);
            if let (Some(dir), Some((_, max_bytes))) = (c.flow_log_dir(node.name), &c.flow_log) {
                args.extend(["--flow-log".into(), dir.to_string_lossy().into_owned()]);
                args.extend(["--flow-log-sweep".into(), FLOW_LOG_SWEEP_MS.to_string()]);
                args.extend(["--flow-log-max-bytes".into(), max_bytes.to_string()]);
            }
            c.agents.push(AgentProcess::spawn(agent, &args, &env, node.name)?);
        }
        for node in NODES {
            c.wait_ready(node.name)?;
        }
        for node in NODES {
            c.wait_gateways_live(node.name)?;
        }
        Ok(())
    }

    /// Makes the agents started from now on write a flow log of at most
    /// `max_bytes` (`--flow-log`, one directory per node under a temporary
    /// directory removed with the cluster; expiry swept every
    /// [`FLOW_LOG_SWEEP_MS`]).
    pub fn enable_flow_log(&mut self, max_bytes: u64) {
        self.flow_log = Some((std::env::temp_dir().join(format!("{}-flows", self.prefix)), max_bytes));
    }

    /// A node's flow log directory, when [`MiniCluster::enable_flow_log`] was called.
    #[must_use]
    pub fn flow_log_dir(&self, node_name: &str) -> Option<PathBuf> {
        self.flow_log.as_ref().map(|(d, _)| d.join(node_name))
    }

    /// Stops (`SIGSTOP`, `pause: true`) or continues (`SIGCONT`) a node's
    /// agent, by pid: a stalled agent whose pins and programs keep serving.
    ///
    /// # Errors
    /// No agent for the node, or `kill` failed.
    pub fn pause_agent(&mut self, node_name: &str, pause: bool) -> Result<(), ClusterError> {
        let a = self.agent(node_name).ok_or_else(|| ClusterError::NoAgent { node: node_name.to_owned() })?;
        let pid = a.child.id().to_string();
        run("kill", &[if pause { "-STOP" } else { "-CONT" }, &pid], None)?;
        Ok(())
    }

    /// One UDP datagram from a pod to each of `ports` at `dst` (one socket,
    /// so each port is a new connection for the gateway), as fast as one
    /// thread sends; then waits for the last ones to arrive. The figures are
    /// a [`Flood`]'s.
    ///
    /// # Errors
    /// Socket failures.
    pub fn udp_to_ports(
        &self,
        pod_name: &str,
        dst: IpAddr,
        ports: std::ops::RangeInclusive<u16>,
    ) -> Result<Flood, ClusterError> {
        let any: IpAddr = if dst.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let s = in_netns(&self.ns(pod(pod_name).name), move || UdpSocket::bind((any, 0)).map_err(io("UDP socket")))?;
        let rx_before = self.server_rx_packets("eth1")?;
        let (mut sent, mut failed) = (0u64, 0u64);
        let start = Instant::now();
        for port in ports {
            if s.send_to(b"egret-flood", (dst, port)).is_ok() {
                sent += 1;
            } else {
                failed += 1;
            }
        }
        let elapsed = start.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let arrived = self.server_rx_packets("eth1")?.saturating_sub(rx_before);
        Ok(Flood { sent, failed, arrived, delivered: 0, elapsed })
    }

    /// The network namespace of a role (`ul`, `srv`, a node's short name, a pod's name).
    #[must_use]
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The network namespace of a node by its Kubernetes name.
    #[must_use]
    pub fn node_ns(&self, node_name: &str) -> String {
        self.ns(node(node_name).short)
    }

    /// The snapshot directory every agent reads.
    #[must_use]
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot
    }

    /// The loader root of a node's agent.
    #[must_use]
    pub fn bpffs_root(&self, node_name: &str) -> PathBuf {
        self.bpffs.as_ref().map_or_else(PathBuf::new, |b| b.dir.join(node_name))
    }

    /// The namespaces that exist (for leak checks).
    #[must_use]
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.0.clone()
    }

    /// The [`Datapath::KernelNat`] configuration on top of the common topology.
    fn kernel_nat(&self, tunnel: bool) -> Result<(), ClusterError> {
        if !self.stack.v4() {
            return Err(ClusterError::Io {
                what: "the kernel NAT datapath on the IPv6-only cluster".into(),
                source: std::io::ErrorKind::Unsupported.into(),
            });
        }
        let dual = self.stack == Stack::Dual;
        let gw_node = NODES.iter().find(|n| n.gateway).copied().unwrap_or(NODES[2]);
        let gw_ns = self.ns(gw_node.short);
        for (i, node) in NODES.iter().filter(|n| !n.gateway).enumerate() {
            let ns = self.ns(node.short);
            // the next hop towards the gateway, and the gateway's towards
            // this worker: (IPv4, IPv6, device)
            let (via, back) = if tunnel {
                let id = (i + 1).to_string();
                let (local, remote) = (format!("10.99.{id}.1"), format!("10.99.{id}.2"));
                let (local6, remote6) = (format!("2001:db8:99:{id}::1"), format!("2001:db8:99:{id}::2"));
                let dev = format!("vx{id}");
                // worker end: remote = the gateway; gateway end: remote = the worker
                for (ns, dev, addr, addr6, peer) in [
                    (&ns, "vx0", &local, &local6, gw_node.address),
                    (&gw_ns, dev.as_str(), &remote, &remote6, node.address),
                ] {
                    let peer = peer.to_string();
                    ip_in(
                        ns,
                        &[
                            "link", "add", dev, "type", "vxlan", "id", &id, "remote", &peer, "dstport", "4800", "dev",
                            "eth0",
                        ],
                    )?;
                    ip_in(ns, &["addr", "add", &format!("{addr}/30"), "dev", dev])?;
                    if dual {
                        ip_in(ns, &["-6", "addr", "add", &format!("{addr6}/64"), "dev", dev, "nodad"])?;
                    }
                    ip_in(ns, &["link", "set", dev, "up"])?;
                }
                ((remote, remote6, "vx0".to_owned()), (local, local6, dev))
            } else {
                (
                    (gw_node.address.to_string(), gw_node.address6.to_string(), "eth0".to_owned()),
                    (node.address.to_string(), node.address6.to_string(), "eth0".to_owned()),
                )
            };
            ip_in(&ns, &["route", "add", "203.0.113.0/25", "via", &via.0, "dev", &via.2, "table", "100"])?;
            ip_in(&gw_ns, &["route", "add", node.pod_cidr, "via", &back.0, "dev", &back.2])?;
            if dual {
                ip_in(&ns, &["-6", "route", "add", SERVICE_RANGE6, "via", &via.1, "dev", &via.2, "table", "100"])?;
                ip_in(&gw_ns, &["-6", "route", "add", node.pod_cidr6, "via", &back.1, "dev", &back.2])?;
            }
            for p in PODS.iter().filter(|p| p.node == node.name && p.egress) {
                let from = p.ip.to_string();
                ip_in(&ns, &["rule", "add", "from", &from, "lookup", "100", "priority", "100"])?;
                exec_in(
                    &ns,
                    "nft",
                    &["insert", "rule", "ip", "egret_minicluster", "postrouting", "ip", "saddr", &from, "accept"],
                    None,
                )?;
                if dual {
                    let from = p.ip6.to_string();
                    ip_in(&ns, &["-6", "rule", "add", "from", &from, "lookup", "100", "priority", "100"])?;
                    exec_in(
                        &ns,
                        "nft",
                        &[
                            "insert",
                            "rule",
                            "ip6",
                            "egret_minicluster6",
                            "postrouting",
                            "ip6",
                            "saddr",
                            &from,
                            "accept",
                        ],
                        None,
                    )?;
                }
            }
        }
        let ns = gw_ns;
        exec_in(&ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"], None)?;
        let nat = format!(
            "table ip egret_kernel_nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 10.244.0.0/16 oifname \"eth1\" snat to {EGRESS_IP}\n  }}\n}}\n"
        );
        exec_in(&ns, "nft", &["-f", "-"], Some(&nat))?;
        if dual {
            exec_in(&ns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"], None)?;
            let nat6 = format!(
                "table ip6 egret_kernel_nat6 {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip6 saddr {POD_RANGE6} oifname \"eth1\" snat to {EGRESS_IP6}\n  }}\n}}\n"
            );
            exec_in(&ns, "nft", &["-f", "-"], Some(&nat6))?;
        }
        Ok(())
    }

    /// Frames received so far by the server's interface `dev`.
    fn server_rx_packets(&self, dev: &str) -> Result<u64, ClusterError> {
        let out = ip_in(&self.ns("srv"), &["-s", "link", "show", "dev", dev])?;
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim_start().starts_with("RX:") {
                let numbers = lines.next().unwrap_or_default();
                if let Some(Ok(p)) = numbers.split_whitespace().nth(1).map(str::parse) {
                    return Ok(p);
                }
            }
        }
        Err(ClusterError::Command {
            command: format!("ip -s link show dev {dev}"),
            stderr: format!("no RX counters in {out:?}"),
        })
    }

    /// Sends UDP datagrams of `payload` bytes from a pod to the server
    /// ([`SERVER`]:[`SINK_PORT`], which only counts), round robin over
    /// `flows` sockets (distinct source ports), as fast as one thread can,
    /// for `duration` or `max_packets`, whichever comes first; then waits
    /// for the last ones to arrive.
    ///
    /// # Errors
    /// Socket failures.
    pub fn udp_flood(
        &self,
        pod_name: &str,
        flows: usize,
        payload: usize,
        duration: Duration,
        max_packets: u64,
    ) -> Result<Flood, ClusterError> {
        let to = SocketAddr::V4(SocketAddrV4::new(SERVER, SINK_PORT));
        self.udp_flood_to(pod_name, to, flows, payload, duration, max_packets)
    }

    /// [`MiniCluster::udp_flood`] to any address behind the server's `eth1`
    /// ([`SERVER6`]:[`SINK_PORT`] is the sink's IPv6 address, [`Stack::Dual`]).
    ///
    /// # Errors
    /// Socket failures.
    pub fn udp_flood_to(
        &self,
        pod_name: &str,
        to: SocketAddr,
        flows: usize,
        payload: usize,
        duration: Duration,
        max_packets: u64,
    ) -> Result<Flood, ClusterError> {
        let sockets = in_netns(&self.ns(pod(pod_name).name), move || {
            (0..flows.max(1))
                .map(|_| {
                    let any = if to.is_ipv6() {
                        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
                    } else {
                        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
                    };
                    let s = UdpSocket::bind(any).map_err(io("UDP socket"))?;
                    s.connect(to).map_err(io("UDP connect"))?;
                    Ok(s)
                })
                .collect::<Result<Vec<_>, ClusterError>>()
        })?;
        let sink = self.server.as_ref().map(|s| s.sink.clone());
        let sink_before = sink.as_ref().map_or(0, |s| s.load(Ordering::Relaxed));
        let rx_before = self.server_rx_packets("eth1")?;
        let buf = vec![0x5a_u8; payload];
        let (mut sent, mut failed) = (0u64, 0u64);
        let start = Instant::now();
        'send: loop {
            for s in &sockets {
                if s.send(&buf).is_ok() {
                    sent += 1;
                } else {
                    failed += 1;
                }
                if sent + failed >= max_packets {
                    break 'send;
                }
            }
            if (sent + failed) % 1024 < sockets.len() as u64 && start.elapsed() >= duration {
                break;
            }
        }
        let elapsed = start.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let arrived = self.server_rx_packets("eth1")?.saturating_sub(rx_before);
        let delivered = sink.as_ref().map_or(0, |s| s.load(Ordering::Relaxed)) - sink_before;
        Ok(Flood { sent, failed, arrived, delivered, elapsed })
    }

    fn build_network(&mut self) -> Result<(), ClusterError> {
        let (ul, srv) = (self.ns("ul"), self.ns("srv"));
        // `dual`: the IPv6 half of the topology; `v4`: the IPv4 half (not on V6Only)
        let (dual, v4) = (self.stack.v6(), self.stack.v4());
        let pods = self.pods();
        for role in ["ul", "srv"].into_iter().chain(NODES.iter().map(|n| n.short)).chain(pods.iter().map(|p| p.name)) {
            self.namespaces.add(self.ns(role), self.stack)?;
        }
        // an IPv6 address usable at once (no duplicate address detection)
        let addr6 = |ns: &str, a: &str, dev: &str| ip_in(ns, &["-6", "addr", "add", a, "dev", dev, "nodad"]);
        // bridges that flood neighbour discovery's multicast (no snooping)
        let bridge: &[&str] = if dual { &["type", "bridge", "mcast_snooping", "0"] } else { &["type", "bridge"] };
        ip_in(&ul, &[&["link", "add", "br0"][..], bridge].concat())?;
        ip_in(&ul, &["link", "set", "br0", "up"])?;
        // the server: the underlay's router leg, the external link, the service addresses
        let server_mac = mac(0xfe, ROUTER_UNDERLAY);
        run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &srv,
                "address",
                &server_mac,
                "type",
                "veth",
                "peer",
                "name",
                "srv",
                "netns",
                &ul,
            ],
            None,
        )?;
        ip_in(&ul, &["link", "set", "srv", "master", "br0", "up"])?;
        if v4 {
            ip_in(&srv, &["addr", "add", &format!("{ROUTER_UNDERLAY}/24"), "dev", "eth0"])?;
            for a in [SERVER, EXCLUDED_SERVER] {
                ip_in(&srv, &["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
            }
        }
        ip_in(&srv, &["link", "set", "eth0", "up"])?;
        if dual {
            addr6(&srv, &format!("{ROUTER_UNDERLAY6}/64"), "eth0")?;
            for a in [SERVER6, EXCLUDED_SERVER6] {
                addr6(&srv, &format!("{a}/128"), "lo")?;
            }
        }
        // the external segment: a bridge named `eth1` joining the gateways' `eth1`
        let external_mac = mac(0xe1, ROUTER_EXTERNAL);
        ip_in(&srv, &[&["link", "add", "eth1", "address", &external_mac][..], bridge].concat())?;
        for node in NODES {
            let ns = self.ns(node.short);
            let port = format!("n-{}", node.short);
            let m = mac(0xc0, node.address);
            run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &ns, "address", &m, "type", "veth", "peer", "name", &port, "netns",
                    &ul,
                ],
                None,
            )?;
            ip_in(&ul, &["link", "set", &port, "master", "br0", "up"])?;
            if v4 {
                ip_in(&ns, &["addr", "add", &format!("{}/24", node.address), "dev", "eth0"])?;
            }
            if dual {
                addr6(&ns, &format!("{}/64", node.address6), "eth0")?;
            }
            ip_in(&ns, &["link", "set", "eth0", "up"])?;
            if let Some(external) = node.external {
                // eth1 on the external segment: the server's bridge `eth1`
                let port = format!("x-{}", node.short);
                run(
                    "ip",
                    &[
                        "link",
                        "add",
                        "eth1",
                        "netns",
                        &ns,
                        "address",
                        &mac(0xe0, external),
                        "type",
                        "veth",
                        "peer",
                        "name",
                        &port,
                        "netns",
                        &srv,
                    ],
                    None,
                )?;
                ip_in(&srv, &["link", "set", &port, "master", "eth1", "up"])?;
                if v4 {
                    ip_in(&ns, &["addr", "add", &format!("{external}/24"), "dev", "eth1"])?;
                    for a in node.egress_ips {
                        ip_in(&ns, &["addr", "add", &format!("{a}/32"), "dev", "eth1"])?;
                    }
                }
                if let (true, Some(external6)) = (dual, node.external6) {
                    addr6(&ns, &format!("{external6}/64"), "eth1")?;
                }
                ip_in(&ns, &["link", "set", "eth1", "up"])?;
                if v4 {
                    let via = ROUTER_EXTERNAL.to_string();
                    ip_in(&ns, &["route", "add", "203.0.113.0/24", "via", &via, "dev", "eth1"])?;
                }
                if dual {
                    let via = ROUTER_EXTERNAL6.to_string();
                    ip_in(&ns, &["-6", "route", "add", SERVICE_RANGE6, "via", &via, "dev", "eth1"])?;
                }
            } else if v4 {
                ip_in(&ns, &["route", "add", "203.0.113.0/24", "via", &ROUTER_UNDERLAY.to_string(), "dev", "eth0"])?;
                exec_in(&ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"], None)?;
                let nat = format!(
                    "table ip egret_minicluster {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {} oifname \"eth0\" masquerade\n  }}\n}}\n",
                    node.pod_cidr
                );
                exec_in(&ns, "nft", &["-f", "-"], Some(&nat))?;
            }
            if node.external.is_none() && dual {
                let via = ROUTER_UNDERLAY6.to_string();
                ip_in(&ns, &["-6", "route", "add", SERVICE_RANGE6, "via", &via, "dev", "eth0"])?;
                exec_in(&ns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"], None)?;
                let nat6 = format!(
                    "table ip6 egret_minicluster6 {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip6 saddr {} oifname \"eth0\" masquerade\n  }}\n}}\n",
                    node.pod_cidr6
                );
                exec_in(&ns, "nft", &["-f", "-"], Some(&nat6))?;
            }
        }
        if v4 {
            ip_in(&srv, &["addr", "add", &format!("{ROUTER_EXTERNAL}/24"), "dev", "eth1"])?;
        }
        if dual {
            addr6(&srv, &format!("{ROUTER_EXTERNAL6}/64"), "eth1")?;
        }
        ip_in(&srv, &["link", "set", "eth1", "up"])?;
        for p in &pods {
            let (pns, nns) = (self.ns(p.name), self.node_ns(p.node));
            let veth = self.host_veth(p.name);
            let (pod_mac, host_mac) = (mac(0x0a, p.ip), mac(0x0b, p.ip));
            run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &pns, "address", &pod_mac, "mtu", POD_MTU, "type", "veth", "peer",
                    "name", &veth, "netns", &nns, "address", &host_mac, "mtu", POD_MTU,
                ],
                None,
            )?;
            ip_in(&pns, &["link", "set", "eth0", "up"])?;
            ip_in(&nns, &["link", "set", &veth, "up"])?;
            if v4 {
                ip_in(&pns, &["addr", "add", &format!("{}/32", p.ip), "dev", "eth0"])?;
                ip_in(&pns, &["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
                ip_in(&pns, &["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
                let gw_neigh = ["neigh", "replace", POD_GATEWAY, "lladdr", &host_mac, "dev", "eth0"];
                ip_in(&pns, &[&gw_neigh[..], &["nud", "permanent"]].concat())?;
                ip_in(&nns, &["route", "add", &format!("{}/32", p.ip), "dev", &veth])?;
                let ip = p.ip.to_string();
                ip_in(&nns, &["neigh", "replace", &ip, "lladdr", &pod_mac, "dev", &veth, "nud", "permanent"])?;
            }
            if dual {
                // as for IPv4: a /128, a link-local default gateway whose
                // neighbour entry is the host side, the node routes the /128
                addr6(&pns, &format!("{}/128", p.ip6), "eth0")?;
                ip_in(&pns, &["-6", "route", "add", "default", "via", POD_GATEWAY6, "dev", "eth0"])?;
                let gw_neigh = ["-6", "neigh", "replace", POD_GATEWAY6, "lladdr", &host_mac, "dev", "eth0"];
                ip_in(&pns, &[&gw_neigh[..], &["nud", "permanent"]].concat())?;
                ip_in(&nns, &["-6", "route", "add", &format!("{}/128", p.ip6), "dev", &veth])?;
                let ip6 = p.ip6.to_string();
                ip_in(&nns, &["-6", "neigh", "replace", &ip6, "lladdr", &pod_mac, "dev", &veth, "nud", "permanent"])?;
            }
        }
        Ok(())
    }

    fn write_file(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        let path = self.snapshot.join(name);
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
    }

    fn write_snapshot(&self) -> Result<(), ClusterError> {
        let (v4, v6) = (self.stack.v4(), self.stack.v6());
        // each family's items of a YAML flow list, IPv4 first
        let both = |a: String, b: String| -> String {
            [(v4, a), (v6, b)].into_iter().filter(|(on, _)| *on).map(|(_, s)| s).collect::<Vec<_>>().join(", ")
        };
        let mut nodes = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for n in NODES {
            let gw = if n.gateway { "\n      cilium.io/egress-gateway: \"true\"" } else { "" };
            let cidrs = both(format!("\"{}\"", n.pod_cidr), format!("\"{}\"", n.pod_cidr6));
            let addresses = both(
                format!("{{type: InternalIP, address: \"{}\"}}", n.address),
                format!("{{type: InternalIP, address: \"{}\"}}", n.address6),
            );
            nodes.push_str(&format!(
                "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n    labels:\n      kubernetes.io/hostname: {name}{gw}\n  spec:\n    podCIDRs: [{cidrs}]\n  status:\n    addresses: [{addresses}]\n    conditions:\n    - {{type: Ready, status: \"True\"}}\n",
                name = n.name,
            ));
        }
        self.write_file("nodes.yaml", &nodes)?;
        self.write_file(
            "namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels:\n    kubernetes.io/metadata.name: production\n",
        )?;
        let mut pods = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for p in self.pods() {
            let egress = if p.egress { ", use-egress-gateway: \"true\"" } else { "" };
            let ips = both(format!("{{ip: \"{}\"}}", p.ip), format!("{{ip: \"{}\"}}", p.ip6));
            pods.push_str(&format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: {name}\n    namespace: production\n    labels: {{app: {app}, lane: {lane}{egress}}}\n  spec: {{nodeName: {node}}}\n  status: {{phase: Running, podIPs: [{ips}]}}\n",
                name = p.name,
                app = if p.egress { "egress" } else { "plain" },
                lane = p.lane,
                node = p.node,
            ));
        }
        self.write_file("pods.yaml", &pods)?;
        // no NodeNetwork: the gateway's agent reads its interfaces (eth1 and
        // its egress IPs) from its own namespace
        let policy = match self.stack {
            Stack::V4 => article_policy(EGRESS_IP),
            Stack::Dual => dual_stack_policy(EGRESS_IP),
            Stack::V6Only => ipv6_only_policy(),
        };
        self.write_file(POLICY_FILE, &policy)
    }

    /// Writes `text` to `name` in the snapshot directory, atomically
    /// (the agents poll the directory and must never read half a file).
    ///
    /// # Errors
    /// File errors.
    pub fn write_snapshot_file(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        let tmp = std::env::temp_dir().join(format!("{}-{name}.tmp", self.prefix));
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        let dst = self.snapshot.join(name);
        std::fs::rename(&tmp, &dst).map_err(io(format!("renaming to {}", dst.display())))
    }

    /// Removes `name` from the snapshot directory.
    ///
    /// # Errors
    /// File errors.
    pub fn remove_snapshot_file(&self, name: &str) -> Result<(), ClusterError> {
        let p = self.snapshot.join(name);
        std::fs::remove_file(&p).map_err(io(format!("removing {}", p.display())))
    }

    fn agent(&mut self, node_name: &str) -> Option<&mut AgentProcess> {
        self.agents.iter_mut().find(|a| a.node == node_name)
    }

    /// Kills a node's agent (`SIGKILL`, by pid: a crash, or the last step of
    /// a DaemonSet update) and reaps it. Its pins, links and `egret0` stay:
    /// the node keeps forwarding with the generation it was serving.
    ///
    /// # Errors
    /// No agent for the node.
    pub fn stop_agent(&mut self, node_name: &str) -> Result<(), ClusterError> {
        let a = self.agent(node_name).ok_or_else(|| ClusterError::NoAgent { node: node_name.to_owned() })?;
        let _ = a.child.kill();
        let _ = a.child.wait();
        Ok(())
    }

    /// Starts a node's agent again, with the arguments it had (the new
    /// version of a DaemonSet update), and waits until it has synced once
    /// and serves its pods.
    ///
    /// # Errors
    /// No agent for the node, a start failure, or a timeout.
    pub fn start_agent_again(&mut self, node_name: &str) -> Result<(), ClusterError> {
        let a = self.agent(node_name).ok_or_else(|| ClusterError::NoAgent { node: node_name.to_owned() })?;
        let _ = a.child.kill();
        let _ = a.child.wait();
        a.respawn()?;
        let node = node(node_name).name;
        // its own first sync (the pins it finds were served by the old one)
        self.wait_until(node, &format!("{node}'s new agent to sync"), |c| {
            c.agent_output(node).iter().any(|l| l.ends_with(" generation") || l.contains(" generation "))
        })?;
        self.wait_ready(node)
    }

    /// The generation a node's agent is serving.
    #[must_use]
    pub fn generation(&self, node_name: &str) -> Option<Generation> {
        inspect::status(&self.bpffs_root(node_name)).ok().and_then(|s| s.running)
    }

    /// Lines the node's agent printed on stdout so far.
    #[must_use]
    pub fn agent_output(&self, node_name: &str) -> Vec<String> {
        self.agents
            .iter()
            .find(|a| a.node == node_name)
            .and_then(|a| a.stdout.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }

    /// Waits (20 s at most) until `f` holds, failing early if the node's agent exits.
    ///
    /// # Errors
    /// Timeout or the agent exited.
    pub fn wait_until(
        &mut self,
        node_name: &str,
        what: &str,
        mut f: impl FnMut(&MiniCluster) -> bool,
    ) -> Result<(), ClusterError> {
        let start = Instant::now();
        loop {
            if f(self) {
                return Ok(());
            }
            if let Some(e) = self.agent(node_name).and_then(AgentProcess::exited) {
                return Err(e);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let out = self.agent_output(node_name).join("\n");
                let err = self
                    .agents
                    .iter()
                    .find(|a| a.node == node_name)
                    .and_then(|a| a.stderr.lock().ok().map(|v| v.join("\n")))
                    .unwrap_or_default();
                return Err(ClusterError::Timeout {
                    what: format!("{what} (agent of {node_name} said:\n{out}\n{err})"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node's prober has an answer from every gateway its
    /// decision table names and marks none of them down. Agents start
    /// together: a node that probes a gateway before that gateway's datapath
    /// answers marks it down (3 misses) and takes it back only after the
    /// hold-down, so without this wait a test's first packets could meet a
    /// start-up `no-gateway` window.
    fn wait_gateways_live(&mut self, node_name: &str) -> Result<(), ClusterError> {
        use egret_bpf::templates::{GatewayLive, map, probe::ProbeRx};
        let root = self.bpffs_root(node_name);
        let gateways: std::collections::BTreeSet<std::net::IpAddr> = egret_loader::view::decisions(&root)
            .map(|d| {
                d.rows
                    .iter()
                    .flat_map(|r| std::iter::once(&r.decision).chain(&r.failover))
                    .filter_map(|d| match d {
                        egret_bpf::artifact::Decision::Redirect { gateway, .. } => Some(*gateway),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if gateways.is_empty() {
            return Ok(());
        }
        let what = format!("{node_name} to hear from its gateways {gateways:?} and mark none down");
        self.wait_until(node_name, &what, |_| {
            let Ok((_, dumps)) = inspect::maps(&root) else { return false };
            let dump = |name: &str| dumps.iter().find(|d| d.name == name);
            let answered =
                |g: &std::net::IpAddr| dump(map::PROBE_RX).is_some_and(|d| d.value(&ProbeRx::key(*g)).is_some());
            let down = dump(map::GW_LIVE).is_some_and(|d| {
                d.entries.iter().any(|e| {
                    let (k, v) = (unhex(&e.key), e.values.first().map(|v| unhex(v)).unwrap_or_default());
                    GatewayLive::from_bytes(&k, &v).is_some_and(|l| l.down && gateways.contains(&l.gateway))
                })
            });
            gateways.iter().all(answered) && !down
        })
    }

    fn wait_ready(&mut self, node_name: &str) -> Result<(), ClusterError> {
        // the agent attaches the pods that policies select (the plan's endpoints)
        let pods = self.pods().iter().filter(|p| p.node == node_name && p.egress).count();
        let root = self.bpffs_root(node_name);
        self.wait_until(node_name, &format!("{node_name} serving with {pods} pod(s) attached"), |_| {
            inspect::status(&root).is_ok_and(|s| {
                s.running.is_some()
                    && s.attachments
                        .iter()
                        .filter(|a| a.attach == egret_bpf::artifact::AttachPoint::PodVethIngress)
                        .count()
                        == pods
            })
        })
    }

    /// Waits until the node's agent serves a generation other than `before`.
    ///
    /// # Errors
    /// Timeout or the agent exited.
    pub fn wait_swap(&mut self, node_name: &str, before: Option<Generation>) -> Result<Generation, ClusterError> {
        let mut now = None;
        self.wait_until(node_name, &format!("{node_name} to swap from {before:?}"), |c| {
            now = c.generation(node_name);
            now.is_some() && now != before
        })?;
        now.ok_or_else(|| ClusterError::Timeout { what: format!("{node_name} generation") })
    }

    /// Waits until the node's agent has printed at least `lines` lines (one per sync).
    ///
    /// # Errors
    /// Timeout or the agent exited.
    pub fn wait_syncs(&mut self, node_name: &str, lines: usize) -> Result<(), ClusterError> {
        self.wait_until(node_name, &format!("{node_name} to sync ({lines} lines)"), |c| {
            c.agent_output(node_name).len() >= lines
        })
    }

    /// A per-CPU counter `{packets, bytes}` at `index` of `map` in the node's
    /// running generation, summed over CPUs.
    ///
    /// # Errors
    /// The map cannot be read.
    pub fn counter(&self, node_name: &str, map: &str, index: u32) -> Result<(u64, u64), ClusterError> {
        let (_, dumps) = inspect::maps(&self.bpffs_root(node_name)).map_err(|e| ClusterError::Io {
            what: format!("reading {node_name}'s maps"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let sum = dumps.iter().find(|d| d.name == map).and_then(|d| d.counters().get(&index).copied());
        Ok(sum.unwrap_or_default())
    }

    /// The MSS option of the SYN the server received from `seen` (a
    /// connection's source as the server saw it), if it logged one.
    #[must_use]
    pub fn syn_mss(&self, seen: Seen) -> Option<Option<u16>> {
        let log = self.server.as_ref()?.syns.lock().ok()?;
        log.iter().rev().find(|(s, _)| *s == seen).map(|(_, m)| *m)
    }

    /// Sets the MTU of a pod's `eth0` and of its host-side veth.
    ///
    /// # Errors
    /// `ip` fails.
    pub fn set_pod_mtu(&self, pod_name: &str, mtu: u16) -> Result<(), ClusterError> {
        let p = pod(pod_name);
        let mtu = mtu.to_string();
        ip_in(&self.ns(p.name), &["link", "set", "eth0", "mtu", &mtu])?;
        ip_in(&self.node_ns(p.node), &["link", "set", &self.host_veth(pod_name), "mtu", &mtu])?;
        Ok(())
    }

    /// GETs `path` from the node's agent's metrics server (in the node's
    /// namespace): the HTTP status and body.
    ///
    /// # Errors
    /// Connection or read failures.
    pub fn agent_http(&self, node_name: &str, path: &str) -> Result<(u16, String), ClusterError> {
        let path = path.to_owned();
        in_netns(&self.node_ns(node_name), move || {
            let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).map_err(io("connecting to the agent"))?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io("agent socket"))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").map_err(io("writing to the agent"))?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(io("reading from the agent"))?;
            let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            Ok((code, body))
        })
    }

    /// Opens a TCP connection from a pod to `dst`:[`TCP_PORT`] (either
    /// family) and reads the greeting.
    ///
    /// # Errors
    /// Connect, read or parse failures (within [`REQUEST_TIMEOUT`]).
    pub fn tcp_connect(&self, pod_name: &str, dst: impl Into<IpAddr>) -> Result<Connection, ClusterError> {
        let dst = dst.into();
        let stream = in_netns(&self.ns(pod(pod_name).name), move || {
            let s = TcpStream::connect_timeout(&SocketAddr::new(dst, TCP_PORT), REQUEST_TIMEOUT)
                .map_err(io(format!("TCP connect to {dst}")))?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io("TCP socket"))?;
            Ok(s)
        })?;
        let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let mut c = Connection {
            reader: BufReader::new(stream),
            local,
            seen: Seen { ip: Ipv4Addr::UNSPECIFIED.into(), port: 0 },
        };
        let line = c.read_line()?;
        c.seen = parse_seen(&line).ok_or_else(|| ClusterError::Io {
            what: format!("bad greeting {line:?}"),
            source: std::io::ErrorKind::InvalidData.into(),
        })?;
        Ok(c)
    }

    /// One TCP request/response from a pod: what the server saw.
    ///
    /// # Errors
    /// As [`MiniCluster::tcp_connect`] and [`Connection::exchange`].
    pub fn tcp_request(&self, pod_name: &str, dst: impl Into<IpAddr>) -> Result<Seen, ClusterError> {
        let mut c = self.tcp_connect(pod_name, dst)?;
        let echoed = c.exchange("hello")?;
        if echoed != c.seen {
            return Err(ClusterError::Io {
                what: format!("the server saw {} then {echoed} on one connection", c.seen),
                source: std::io::ErrorKind::InvalidData.into(),
            });
        }
        Ok(echoed)
    }

    /// One UDP datagram from a pod to `dst`:[`UDP_PORT`] (either family)
    /// and its answer: what the server saw.
    ///
    /// # Errors
    /// Send, receive (within [`REQUEST_TIMEOUT`]) or parse failures.
    pub fn udp_request(&self, pod_name: &str, dst: impl Into<IpAddr>) -> Result<Seen, ClusterError> {
        self.udp_request_in(&self.ns(pod(pod_name).name), dst)
    }

    /// [`MiniCluster::udp_request`] from any network namespace (a pod the
    /// fixture does not list, e.g. one made through `egret-cni`).
    ///
    /// # Errors
    /// As [`MiniCluster::udp_request`].
    pub fn udp_request_in(&self, netns: &str, dst: impl Into<IpAddr>) -> Result<Seen, ClusterError> {
        let dst = dst.into();
        let any: IpAddr = if dst.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let s = in_netns(netns, move || {
            let s = UdpSocket::bind((any, 0)).map_err(io("UDP socket"))?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io("UDP socket"))?;
            Ok(s)
        })?;
        let token = format!("udp-{}", INSTANCE.fetch_add(1, Ordering::Relaxed));
        s.send_to(token.as_bytes(), (dst, UDP_PORT)).map_err(io(format!("UDP send to {dst}")))?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).map_err(io(format!("UDP answer from {dst}")))?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.ends_with(&token) {
            return Err(ClusterError::Io {
                what: format!("UDP answer {text:?}"),
                source: std::io::ErrorKind::InvalidData.into(),
            });
        }
        parse_seen(&text).ok_or_else(|| ClusterError::Io {
            what: format!("UDP answer {text:?}"),
            source: std::io::ErrorKind::InvalidData.into(),
        })
    }

    /// One ICMP (IPv4) or ICMPv6 (IPv6) echo from a pod to `dst`; on its
    /// reply, what the server logged for it (source address and the
    /// identifier it arrived with).
    ///
    /// # Errors
    /// Socket failures, no reply within [`REQUEST_TIMEOUT`], or the server has no log of it.
    pub fn ping(&self, pod_name: &str, dst: impl Into<IpAddr>) -> Result<Seen, ClusterError> {
        let dst = dst.into();
        let fd = in_netns(&self.ns(pod(pod_name).name), move || match dst {
            IpAddr::V4(_) => raw_socket(rustix::net::ipproto::ICMP, Duration::from_millis(100)),
            IpAddr::V6(_) => raw_socket6(rustix::net::ipproto::ICMPV6, Duration::from_millis(100)),
        })?;
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() as u16) ^ (n as u16).rotate_left(8);
        let token = format!("egret-ping-{n:08}").into_bytes();
        let request_type = if dst.is_ipv4() { 8u8 } else { ICMP6_ECHO_REQUEST };
        let mut pkt = vec![request_type, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&1u16.to_be_bytes());
        pkt.extend_from_slice(&token);
        let sent = match dst {
            IpAddr::V4(dst) => {
                let sum = internet_checksum(&pkt);
                pkt[2..4].copy_from_slice(&sum.to_be_bytes());
                rustix::net::sendto(&fd, &pkt, rustix::net::SendFlags::empty(), &SocketAddrV4::new(dst, 0))
            }
            // the kernel fills an ICMPv6 raw socket's checksum (RFC 3542)
            IpAddr::V6(dst) => rustix::net::sendto(
                &fd,
                &pkt,
                rustix::net::SendFlags::empty(),
                &std::net::SocketAddrV6::new(dst, 0, 0, 0),
            ),
        };
        sent.map_err(|e| ClusterError::Io { what: format!("ICMP echo to {dst}"), source: e.into() })?;
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            if start.elapsed() > REQUEST_TIMEOUT {
                return Err(ClusterError::Timeout { what: format!("an ICMP echo reply from {dst} to {pod_name}") });
            }
            // the echo reply's source and its ICMP message
            let (src, icmp, reply_type): (IpAddr, &[u8], u8) = match dst {
                IpAddr::V4(_) => {
                    let Ok(len) = rustix::io::read(&fd, &mut buf) else { continue };
                    let p = &buf[..len];
                    if p.len() < 28 {
                        continue;
                    }
                    let ihl = usize::from(p[0] & 0x0f) * 4;
                    (Ipv4Addr::new(p[12], p[13], p[14], p[15]).into(), p.get(ihl..).unwrap_or_default(), 0)
                }
                IpAddr::V6(_) => {
                    let Some((len, src)) = recv6(&fd, &mut buf) else { continue };
                    (src.into(), &buf[..len], ICMP6_ECHO_REPLY)
                }
            };
            if icmp.len() >= 8
                && icmp[0] == reply_type
                && src == dst
                && u16::from_be_bytes([icmp[4], icmp[5]]) == id
                && icmp[8..].starts_with(&token)
            {
                break;
            }
        }
        // the server's log thread may see its copy a little after the reply left
        let log = self.server.as_ref().map(|s| s.echoes.clone());
        let start = Instant::now();
        loop {
            let seen = log.as_ref().and_then(|l| {
                l.lock().ok().and_then(|v| v.iter().rev().find(|e| e.payload.starts_with(&token)).cloned())
            });
            if let Some(e) = seen {
                return Ok(Seen { ip: e.src, port: e.id });
            }
            if start.elapsed() > REQUEST_TIMEOUT {
                let last = log
                    .as_ref()
                    .and_then(|l| l.lock().ok().map(|v| format!("{:?}", v.iter().rev().take(3).collect::<Vec<_>>())));
                return Err(ClusterError::Timeout {
                    what: format!(
                        "the server's log of the echo from {pod_name} (last logged: {})",
                        last.unwrap_or_default()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// An open TCP connection from a pod to the server.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    /// The pod's side of the connection.
    pub local: SocketAddr,
    /// What the server saw when it accepted the connection.
    pub seen: Seen,
}

impl Connection {
    fn read_line(&mut self) -> Result<String, ClusterError> {
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(io("reading from the server"))?;
        if line.is_empty() {
            return Err(ClusterError::Io {
                what: "the server closed the connection".into(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(line)
    }

    /// Sends a line and reads the server's answer: what the server sees now.
    ///
    /// # Errors
    /// Write or read failures (within [`REQUEST_TIMEOUT`]).
    pub fn exchange(&mut self, msg: &str) -> Result<Seen, ClusterError> {
        writeln!(self.reader.get_mut(), "{msg}").map_err(io("writing to the server"))?;
        let line = self.read_line()?;
        let seen = parse_seen(&line);
        match seen {
            Some(s) if line.trim_end().ends_with(msg) => Ok(s),
            _ => Err(ClusterError::Io {
                what: format!("unexpected answer {line:?}"),
                source: std::io::ErrorKind::InvalidData.into(),
            }),
        }
    }
}

/// The bytes of a hex string (as map dumps print them).
fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2).filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The article's "Step 4" policy, corrected (see
/// `examples/policies/egress-gateway-policy.yaml`), with egress IP `egress_ip`
/// and [`EXCLUDED_CIDR`] added to its exclusions.
#[must_use]
pub fn article_policy(egress_ip: Ipv4Addr) -> String {
    policy_text(egress_ip, &["0.0.0.0/0"], &[])
}

/// [`article_policy`] for both families ([`Stack::Dual`]): `::/0` added to
/// its destinations, the pods' IPv6 range ([`POD_RANGE6`]) and
/// [`EXCLUDED_CIDR6`] to its exclusions. The IPv6 egress address is the
/// first IPv6 of the interface holding `egress_ip` (gateway-1: [`EGRESS_IP6`]).
#[must_use]
pub fn dual_stack_policy(egress_ip: Ipv4Addr) -> String {
    policy_text(egress_ip, &["0.0.0.0/0", "::/0"], &[POD_RANGE6, EXCLUDED_CIDR6])
}

/// The policy of the IPv6-only cluster ([`Stack::V6Only`]): [`article_policy`]
/// for IPv6 alone — destination `::/0`, the pods' range ([`POD_RANGE6`]) and
/// [`EXCLUDED_CIDR6`] excluded, egress IP [`EGRESS_IP6`].
#[must_use]
pub fn ipv6_only_policy() -> String {
    let list = |items: &[&str]| -> String { items.iter().map(|d| format!("\n  - \"{d}\"")).collect() };
    policy_doc(EGRESS_IP6.into(), &list(&["::/0"]), &list(&[POD_RANGE6, EXCLUDED_CIDR6]))
}

fn policy_text(egress_ip: Ipv4Addr, destinations: &[&str], more_excluded: &[&str]) -> String {
    let list = |items: &[&str]| -> String { items.iter().map(|d| format!("\n  - \"{d}\"")).collect() };
    let excluded =
        list(&[&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", EXCLUDED_CIDR][..], more_excluded].concat());
    policy_doc(egress_ip.into(), &list(destinations), &excluded)
}

/// The mini-cluster's policy document with these (rendered) lists.
fn policy_doc(egress_ip: IpAddr, destinations: &str, excluded: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-gateway-policy
spec:
  selectors:
  - podSelector:
      matchLabels:
        use-egress-gateway: \"true\"
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: production
  destinationCIDRs:{destinations}
  excludedCIDRs:{excluded}
  egressGateway:
    nodeSelector:
      matchLabels:
        cilium.io/egress-gateway: \"true\"
    egressIP: \"{egress_ip}\"
"
    )
}

/// `egret-demo`: starts the dual-stack mini-cluster (agents from the
/// `agent` binary), shows what the external server sees from each pod for
/// TCP, UDP and ICMP echo, to the server and to an excluded address — the
/// IPv4 table first (as on the IPv4 cluster), then the same over IPv6 —
/// prints the gateway's counters, and tears everything down.
///
/// # Errors
/// Set-up failures; a request that fails is shown as such, not an error.
pub fn demo(agent: &Path, out: &mut dyn Write) -> Result<(), ClusterError> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(io("writing the demo's output"));
    w(
        out,
        "building the dual-stack mini-cluster: namespaces for 5 nodes, 5 pods (one on gateway-1), the underlay and the server …"
            .into(),
    )?;
    let started = Instant::now();
    let c = MiniCluster::start_dual_stack("demo", agent)?;
    w(out, format!("ready in {} ms:", started.elapsed().as_millis()))?;
    for n in NODES {
        let role = if n.gateway {
            let mut ips: Vec<String> = n.egress_ips.iter().map(ToString::to_string).collect();
            ips.extend(n.external6.map(|a| a.to_string()));
            let held = if ips.is_empty() { "no egress IP".to_owned() } else { ips.join(" and ") };
            format!("gateway (cilium.io/egress-gateway=true), eth1 holds {held}")
        } else {
            "worker".to_owned()
        };
        let generation = c.generation(n.name).map_or_else(|| "-".to_owned(), |g| g.to_string());
        w(
            out,
            format!(
                "  {:<10} {:<12} {role}; egret-agent serving generation {generation}",
                n.name,
                n.address.to_string()
            ),
        )?;
        w(out, format!("  {:<10} {} (its IPv6 on the underlay segment; the tunnel runs over IPv4)", "", n.address6))?;
    }
    for p in c.pods() {
        let labels = if p.egress { "use-egress-gateway=true" } else { "-" };
        w(out, format!("  pod {:<9} {:<12} on {:<9} labels: {labels}", p.name, p.ip.to_string(), p.node))?;
        w(out, format!("  {:<13} {}", "", p.ip6))?;
    }
    w(out, format!("  server     {SERVER} (and {EXCLUDED_SERVER}), reachable from the nodes' uplinks only"))?;
    w(out, format!("             {SERVER6} (and {EXCLUDED_SERVER6})"))?;
    w(
        out,
        format!("policy: the article's egress-gateway-policy (egressIP {EGRESS_IP}), excluding also {EXCLUDED_CIDR}"),
    )?;
    w(
        out,
        format!(
            "        and ::/0 (IPv6 egress: {EGRESS_IP6}, the first IPv6 of eth1), excluding {POD_RANGE6} and {EXCLUDED_CIDR6}"
        ),
    )?;
    let egress: [IpAddr; 3] = [EGRESS_IP.into(), EGRESS_IP_2.into(), EGRESS_IP6.into()];
    let via = |ip: IpAddr| {
        if egress.contains(&ip) {
            "egress gateway"
        } else if NODES.iter().any(|n| n.address == ip || n.address6 == ip) {
            "node address"
        } else {
            "?"
        }
    };
    // (family, server, excluded, destination column, what-the-server-sees column)
    for (family, server, excluded, width, seen_width) in [
        ("IPv4", IpAddr::from(SERVER), IpAddr::from(EXCLUDED_SERVER), 18, 32),
        ("IPv6", SERVER6.into(), EXCLUDED_SERVER6.into(), 28, 34),
    ] {
        w(out, String::new())?;
        if family == "IPv6" {
            w(out, "over IPv6:".into())?;
        }
        w(out, format!("{:<9} {:<9} {:<5} {:<width$} {}", "POD", "NODE", "PROTO", "DESTINATION", "THE SERVER SEES"))?;
        let icmp = if family == "IPv4" { "icmp" } else { "icmp6" };
        for p in c.pods() {
            // the gateway node routes no pod traffic of its own: its pod's
            // excluded destinations have no normal path to take
            let to_excluded = p.node != GATEWAY_POD.node;
            for (proto, dst) in [("tcp", server), ("udp", server), (icmp, server), ("tcp", excluded)] {
                if dst == excluded && !to_excluded {
                    continue;
                }
                let r = match proto {
                    "tcp" => c.tcp_request(p.name, dst),
                    "udp" => c.udp_request(p.name, dst),
                    _ => c.ping(p.name, dst),
                };
                let seen = match r {
                    Ok(s) => {
                        let what = if proto.starts_with("icmp") {
                            format!("{} (echo id {})", s.ip, s.port)
                        } else {
                            s.to_string()
                        };
                        format!("{what:<seen_width$} {}", via(s.ip))
                    }
                    Err(e) => format!("no answer: {e}"),
                };
                let dest = if proto.starts_with("icmp") {
                    dst.to_string()
                } else {
                    SocketAddr::new(dst, if proto == "tcp" { TCP_PORT } else { UDP_PORT }).to_string()
                };
                w(out, format!("{:<9} {:<9} {proto:<5} {dest:<width$} {seen}", p.name, p.node))?;
            }
        }
    }
    w(out, String::new())?;
    w(out, "gateway-1 datapath counters (egret_gw_stats, packets, both families):".into())?;
    let mut line = String::new();
    for s in egret_bpf::templates::Stat::ALL {
        let (packets, _) = c.counter("gateway-1", egret_bpf::templates::map::GW_STATS, s.index())?;
        if packets > 0 {
            line.push_str(&format!("  {}={packets}", s.name()));
        }
    }
    w(out, line)?;
    let started = Instant::now();
    let namespaces = c.namespace_names().len();
    drop(c);
    w(
        out,
        format!(
            "torn down: {namespaces} namespaces, agents, pins and snapshot removed in {} ms",
            started.elapsed().as_millis()
        ),
    )
}

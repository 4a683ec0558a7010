//! The flow audit log: who was behind a translated connection.
//!
//! Contract:
//! - **Source**: the gateway programs write one
//!   [`egret_bpf::templates::FlowEvent`] to the ring buffer
//!   `egret_flow_events` (a state map) when a translation is created and when
//!   a TCP FIN or RST closes it. A full ring costs the event, never the
//!   packet: the datapath counts it (`flow-event-dropped`) and goes on.
//! - **Reader** ([`reader`]): one agent thread drains the ring (through
//!   `mmap`, never blocking the programs), names each event
//!   ([`Directory`]: the pod's namespace/name and node, the policy), and
//!   writes it as one JSON line ([`FlowRecord`]) to the log. Entries that
//!   leave the connection table without a FIN or RST (idle timeout, LRU
//!   eviction) run no program: the reader looks the connections it saw
//!   created up in `egret_rnat_v*` every sweep and writes *expired* for
//!   those gone or past their timeout.
//! - **Log** ([`log`]): segment files in a directory, rotated at a size,
//!   the oldest deleted so that the directory stays within its bound; each
//!   sealed segment has an index (egress `IP:port` → line offsets, time
//!   range) that lookups use.
//! - **Queries** ([`query`]): `egret-agent flows who EGRESS_IP:PORT [--at
//!   TIME]` and `egret-agent flows list`, read from the log directory, by any
//!   process on the node (the agent need not run).

pub mod log;
pub mod query;
pub mod reader;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use egret_bpf::templates::{FlowEvent, FlowEventKind};
use egret_compiler::resolve::World;
use egret_lang::net::Cidr;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a record says happened to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    /// A new translation (the connection's first packet through the gateway).
    Created,
    /// A TCP FIN or RST, either way.
    Closed,
    /// The translation left the connection table without a FIN or RST (its
    /// idle timeout passed, or the table evicted it, or the port went to
    /// another connection).
    Expired,
}

impl FlowKind {
    /// Its name in the log.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FlowKind::Created => "created",
            FlowKind::Closed => "closed",
            FlowKind::Expired => "expired",
        }
    }
}

/// The pod of a connection, as known when the record was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Its namespace (`None`: no pod of the cluster has this address).
    pub namespace: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its address.
    pub ip: IpAddr,
    /// Its source port (ICMP: the echo identifier).
    pub port: u16,
    /// The node it sent from (the tunnel's source; the node's name when known).
    pub node: Option<String>,
}

impl PodRef {
    /// `namespace/name`, or the address when the pod is unknown.
    #[must_use]
    pub fn display(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            _ => self.ip.to_string(),
        }
    }
}

/// A translated connection: what a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, `icmpv6` (or the protocol number).
    pub proto: String,
    /// The translated source: the egress IP and the NAT port.
    pub egress: SocketAddr,
    /// The remote end.
    pub dst: SocketAddr,
    /// The pod.
    pub pod: PodRef,
    /// The policy that sent the pod's traffic to this egress IP (`None`: no
    /// policy of the current view does, e.g. a policy deleted meanwhile).
    pub policy: Option<String>,
    /// The egress slot.
    pub slot: u32,
    /// The gateway node that held the translation (the log's node).
    pub gateway: String,
}

/// One line of the flow log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When it happened (the packet's time; for *expired*, when the
    /// translation timed out, or when the reader found it gone).
    pub time: Timestamp,
    /// What happened.
    pub event: FlowKind,
    /// The connection.
    #[serde(flatten)]
    pub flow: Flow,
    /// For *closed* and *expired*: when the connection was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<Timestamp>,
}

impl FlowRecord {
    /// When the connection this record is about was created.
    #[must_use]
    pub fn opened_at(&self) -> Timestamp {
        match self.event {
            FlowKind::Created => self.time,
            FlowKind::Closed | FlowKind::Expired => self.opened.unwrap_or(self.time),
        }
    }
}

/// The protocol's name in the log.
#[must_use]
pub fn proto_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// The protocol number of a name [`proto_name`] gives.
#[must_use]
pub fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        n => n.parse().ok(),
    }
}

/// A policy as the flow log names it: where it sends which destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    name: String,
    destinations: Vec<Cidr>,
    excluded: Vec<Cidr>,
    slots: Vec<u32>,
}

impl Route {
    /// The length of the longest destination prefix holding `dst` (none if
    /// excluded or not held).
    fn matches(&self, dst: IpAddr) -> Option<u8> {
        if self.excluded.iter().any(|c| c.contains_ip(dst)) {
            return None;
        }
        self.destinations.iter().filter(|c| c.contains_ip(dst)).map(|c| c.len).max()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PodInfo {
    namespace: String,
    name: String,
    node: Option<String>,
    /// Indexes into [`Directory::routes`] of the policies selecting it.
    routes: Vec<usize>,
}

/// What the reader names events with: the cluster's pods by address, nodes
/// by underlay address and the policies' destinations and slots, from the
/// world the node was last compiled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pods: HashMap<IpAddr, PodInfo>,
    nodes: HashMap<IpAddr, String>,
    routes: Vec<Route>,
}

impl Directory {
    /// The directory of a resolved world.
    #[must_use]
    pub fn of_world(world: &World) -> Directory {
        let routes: Vec<Route> = world
            .policies()
            .iter()
            .map(|p| Route {
                name: p.name.clone(),
                destinations: p.destinations.clone(),
                excluded: p.excluded.clone(),
                slots: p.gateways.iter().filter_map(|g| world.slot_of(g.node, &g.spec)).map(|s| s.id.0).collect(),
            })
            .collect();
        let mut pods = HashMap::new();
        for e in world.endpoints() {
            let info = PodInfo {
                namespace: e.namespace.clone(),
                name: e.name.clone(),
                node: e.node_name.clone(),
                routes: world.selecting(e.id).iter().map(|p| p.index()).collect(),
            };
            for ip in &e.ips {
                pods.insert(*ip, info.clone());
            }
        }
        let mut nodes = HashMap::new();
        for n in world.nodes() {
            for ip in n.ip.iter().chain(&n.internal_ips) {
                nodes.insert(*ip, n.name.clone());
            }
        }
        Directory { pods, nodes, routes }
    }

    /// The record of `event` on `gateway` at `time` (`opened`: the
    /// connection's creation, for *closed* and *expired*).
    #[must_use]
    pub fn record(
        &self,
        gateway: &str,
        event: &FlowEvent,
        kind: FlowKind,
        time: Timestamp,
        opened: Option<Timestamp>,
    ) -> FlowRecord {
        let pod = self.pods.get(&event.src);
        let node = if event.node.is_unspecified() {
            Some(gateway.to_owned())
        } else {
            Some(self.nodes.get(&event.node).cloned().unwrap_or_else(|| event.node.to_string()))
        };
        // the most specific destination of the policies selecting the pod
        // that send to this slot (the classifier's longest prefix match)
        let policy = pod.and_then(|p| {
            p.routes
                .iter()
                .filter_map(|&i| self.routes.get(i))
                .filter(|r| r.slots.contains(&event.slot))
                .filter_map(|r| Some((r.matches(event.dst)?, r)))
                .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.name.cmp(&a.1.name)))
                .map(|(_, r)| r.name.clone())
        });
        let flow = Flow {
            proto: proto_name(event.proto),
            egress: SocketAddr::new(event.egress_ip, event.nat_port),
            dst: SocketAddr::new(event.dst, event.dport),
            pod: PodRef {
                namespace: pod.map(|p| p.namespace.clone()),
                name: pod.map(|p| p.name.clone()),
                ip: event.src,
                port: event.sport,
                node: node.or_else(|| pod.and_then(|p| p.node.clone())),
            },
            policy,
            slot: event.slot,
            gateway: gateway.to_owned(),
        };
        FlowRecord { time, event: kind, flow, opened }
    }
}

/// The kind of a datapath event.
#[must_use]
pub const fn kind_of(kind: FlowEventKind) -> FlowKind {
    match kind {
        FlowEventKind::Created => FlowKind::Created,
        FlowEventKind::Closed => FlowKind::Closed,
    }
}

#[cfg(test)]
mod tests;

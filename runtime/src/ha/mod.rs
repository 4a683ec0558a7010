//! Gateway failover without recompiling: the agent side that decides which
//! gateways are live and writes it to the dataplane.
//!
//! The source classifier reads `egret_gw_live` (a state map; key gateway
//! IPv4, value flags, `GL_F_DOWN` = down, no entry = up:
//! `egret_bpf::templates::GatewayLive`) and sends each endpoint's traffic to
//! the first live gateway of its compiled order. This module fills that map:
//! - [`liveness`]: one gateway's state machine (pure, no clock): down after
//!   consecutive unanswered probes, up again only after a hold-down of
//!   continuous answers, down whatever the probes say while Kubernetes says
//!   the node is not Ready;
//! - [`probe`]: the prober — a UDP socket and a thread of its own that sends
//!   probes over the underlay to each gateway's tunnel port, reads the
//!   replies the node's `egret_tunnel_in` records in `egret_probe_rx`,
//!   advances the state machines and writes `egret_gw_live`;
//! - [`float`]: who holds one floating egress IP on one node (pure, no
//!   clock): when to acquire, renew, preempt or release its Lease, and when
//!   to add, announce or remove the address;
//! - [`announce`]: the address itself — add or remove it on an interface
//!   (netlink) and announce it with gratuitous ARP (`AF_PACKET`).
//! - [`replicate`]: NAT state replication for floating egress IPs — the
//!   owner of a floating slot streams its translations to the slot's
//!   standbys over TCP, so a takeover keeps connections and their ports.
//! - [`ownership`]: the floating IPs' controller — runs a [`float`] machine
//!   per IP, makes the Lease calls, adds and announces the address, writes
//!   `egret_float_owner`, gives [`replicate`] its roles, and reports.
//!
//! The agent loop owns a [`probe::Prober`] (created on its thread, so the
//! socket and the thread are in the node's network namespace), tells it the
//! gateways the node's plan uses and those Kubernetes says are not Ready,
//! and hands [`probe::Prober::status_handle`] to the telemetry
//! ([`crate::metrics::Telemetry::gateways`]).

pub mod announce;
// the loader's privileged-test support (root/bpf gate, namespaces), shared
// by the announce and replicate tests
pub mod float;
pub mod liveness;
pub mod ownership;
pub mod probe;
pub mod replicate;

//! egret's benchmarks against their anchors.
//!
//! - [`cilium_dp`]: the Cilium-equivalent classifier (one LPM trie keyed by
//!   source IP and destination prefix, Cilium's key and value layout).
//! - [`classify`]: per-packet cost with BPF_PROG_TEST_RUN, egret vs the anchor vs a floor.
//! - [`footprint`]: map footprint per node, egret's layout against Cilium's.
//! - [`parts`]: the cost of each building block of a classifier (parse,
//!   counters, lookups per map kind, tunnel key, redirect).
//! - [`lint`], [`compile`], [`codegen`]: the compiler's own speed (lint of
//!   10,000 policies; compiling 5,000 nodes; generating and verifying a
//!   busy node's classifier).
//! - [`layouts`]: inline trees against the maps layout in the kernel.
//! - [`swap`]: the loader's generation swap latency.
//! - [`gateway`]: gateway throughput against a kernel NAT gateway (mini-cluster).
//! - [`failover`]: time to fail over from a failed gateway or floating-IP
//!   owner, connections surviving, dual owners (mini-cluster, API server).
//! - [`failover_scale`]: a gateway failure at 100,000 pods: decision to map
//!   write, beside what a change costs (resolution, compile).
//! - [`report`]: the tables every subcommand prints and writes as JSON.

pub mod cilium_dp;
// egret-kube's in-process API server and the mini-cluster served by it
// (shared with the e2e tests): the failover benchmark's `--kube` agents
#[path = "../../kube/tests/support/apiserver.rs"]
#[allow(dead_code, clippy::unwrap_used, reason = "a test server; the benchmark uses part of it")]
mod apiserver;
pub mod classify;
pub mod codegen;
pub mod compile;
pub mod failover;
pub mod failover_scale;
pub mod footprint;
pub mod gateway;
// real maps for the failover-scale benchmark's prober (shared with the tests)
#[path = "../../tests/support/kubecluster.rs"]
#[allow(dead_code, reason = "shared with the e2e tests, which read the served objects")]
mod kubecluster;
pub mod layouts;
pub mod lint;
pub mod parts;
#[path = "../../tests/support/pinned_maps.rs"]
mod pinned_maps;
pub mod report;
pub mod swap;

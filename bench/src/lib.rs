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
//! - [`cni`]: the leak window of a new pod, the watch alone against
//!   `egret-cni`, and the plugin's `ADD` latency (mini-cluster, API server).
//! - [`report`]: the tables every subcommand prints and writes as JSON.

// the mini-cluster served by the test API server (failover), real pinned
// maps for the failover-scale benchmark's prober: from the test kit
use egret_testkit::{kubecluster, pinned_maps};

pub mod cilium_dp;
pub mod classify;
pub mod cni;
pub mod codegen;
pub mod compile;
pub mod failover;
pub mod failover_scale;
pub mod footprint;
pub mod gateway;
pub mod layouts;
pub mod lint;
pub mod metrics_server;
pub mod parts;
pub mod report;
pub mod swap;

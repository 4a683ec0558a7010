//! egret's benchmarks against their anchors.
//!
//! - [`cilium_dp`]: the Cilium-equivalent classifier (one LPM trie keyed by
//!   source IP and destination prefix, Cilium's key and value layout).
//! - [`classify`]: per-packet cost with BPF_PROG_TEST_RUN, egret vs the anchor vs a floor.
//! - [`footprint`]: map footprint per node, egret's layout against Cilium's.
//! - [`parts`]: the cost of each building block of a classifier (parse,
//!   counters, lookups per map kind, tunnel key, redirect).

pub mod cilium_dp;
pub mod classify;
pub mod footprint;
pub mod gateway;
pub mod parts;

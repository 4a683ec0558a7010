//! egret's benchmarks against their anchors.
//!
//! - [`cilium_dp`]: the Cilium-equivalent classifier (one LPM trie keyed by
//!   source IP and destination prefix, Cilium's key and value layout).

pub mod cilium_dp;

//! egret's benchmarks against their anchors.
//!
//! - [`cilium_dp`]: the Cilium-equivalent classifier (one LPM trie keyed by
//!   source IP and destination prefix, Cilium's key and value layout).
//! - [`footprint`]: map footprint per node, egret's layout against Cilium's.

pub mod cilium_dp;
pub mod footprint;

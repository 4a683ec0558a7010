//! egret's test kit (not published): what the crates' integration tests, the
//! end-to-end tests and the benchmarks share, in one place instead of
//! `#[path]` includes.
//!
//! | module | what |
//! |---|---|
//! | [`privileged`] | the one privileged-test gate (TESTING.md): skip with a printed line, or fail under `EGRET_REQUIRE_PRIVILEGED=1` |
//! | [`netns`] | bpffs mounts, network namespaces, `setns`, unique names, small UDP topologies and demo artifacts for the loader's and the agent's tests |
//! | [`pinned_maps`] | pinned maps made from `MapDef`s, for tests of code that opens pins |
//! | [`gateway`] | the gateway-template test cluster: map entries, packet builders and checkers |
//! | [`apiserver`] | an in-process Kubernetes API server (list/watch, Leases, Events, TLS) |
//! | [`agent_process`] | an `egret-agent` process driven from a test: output, metrics, pins |
//! | [`minicluster`] | the five-node mini-cluster in network namespaces, with real agents (IPv4, or dual-stack with an IPv4 tunnel) |
//! | [`failover`] | gateway failover trials on the mini-cluster |
//! | [`arpwatch`] | who answers ARP for an address, seen from the external segment |
//! | [`kubecluster`] | the mini-cluster served by [`apiserver`] |
//! | [`standin`] | stand-ins for a CNI's own eBPF programs on a pod's veth (tcx count-pass and redirect, legacy `cls_bpf`) |
//! | [`cni`] | `egret-cni` on the mini-cluster: pods created as a runtime does, the leak trial, an agent serving the CNI socket |

pub mod agent_process;
pub mod apiserver;
pub mod arpwatch;
pub mod cni;
pub mod failover;
pub mod gateway;
pub mod kubecluster;
pub mod minicluster;
pub mod netns;
pub mod pinned_maps;
pub mod privileged;
pub mod standin;

//! egret-kube: egret in a Kubernetes cluster.
//!
//! Owns what the agent needs from the API server, and nothing of the
//! dataplane:
//! - [`crd`]: the `CiliumEgressGatewayPolicy` type (Cilium's, verbatim) and
//!   its CRD, which `deploy/crd.yaml` holds;
//! - [`view`]: the trimmed cluster (only what egret reads) and its
//!   conversion to egret's input through egret's own loader, so diagnostics
//!   are those of `egret lint`;
//! - [`watch`]: list+watch of policies, pods, namespaces and nodes, a synced
//!   gate, and debounced recompilation through a callback.
//!
//! `egret-runtime` plugs the loader in through [`watch::run`]'s callback.

pub mod crd;
pub mod view;
pub mod watch;
pub mod wire;

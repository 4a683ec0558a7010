//! egret-kube: egret in a Kubernetes cluster.
//!
//! Owns what the agent needs from the API server, and nothing of the
//! dataplane (no aya, no loader):
//! - [`crd`]: the `CiliumEgressGatewayPolicy` type (Cilium's, verbatim) and
//!   its CRD, which `deploy/cilium-crd/crd.yaml` holds;
//! - [`wire`]: API objects decoded trimmed to what egret reads;
//! - [`view`]: the trimmed cluster ([`view::ClusterView`]) and its
//!   compilation through egret's own loader, so diagnostics are those of
//!   `egret lint`; per-policy reports (for Events);
//! - [`events`]: Kubernetes Events about policies (what, which agent, how);
//! - [`lease`]: floating egress IPs owned through one Lease each (acquire,
//!   renew, release with optimistic concurrency; an owner table kept by a
//!   watch; the RBAC it needs, [`lease::api_calls`]);
//! - [`watch`]: list+watch of policies, pods, namespaces and nodes, a synced
//!   gate, and debounced recompilation through a callback; the RBAC the
//!   watchers need ([`watch::api_calls`]).
//!
//! How the agent plugs in (the callback runs on the watch task, only after
//! every kind has listed, debounced):
//!
//! ```no_run
//! # async fn agent(client: kube::Client, node: String) {
//! use egret_kube::watch::{ClusterWatch, WatchConfig};
//! let watch = ClusterWatch::new(client, WatchConfig::default());
//! let ready = watch.status(); // `ready.synced()` for /readyz
//! let nudge = watch.nudge(); // call `nudge.nudge()` when netlink facts change
//! watch
//!     .run(std::future::pending(), move |view, _batch| {
//!         let facts: Option<egret_lang::ast::NodeNetwork> = None; // the node's own, from netlink
//!         let c = view.plan(&node, &Default::default(), facts.as_ref());
//!         match &c.plan {
//!             Ok(_plan) => { /* codegen, then the loader (digest-equal loads nothing) */ }
//!             Err(_e) => { /* keep the running generation; report */ }
//!         }
//!         // Events: egret_kube::events::events_for(view, &c, &node), through an EventLog and a Publisher
//!     })
//!     .await;
//! # }
//! ```

pub mod admit;
pub mod crd;
pub mod events;
pub mod lease;
pub mod node_network;
pub mod view;
pub mod watch;
pub mod wire;

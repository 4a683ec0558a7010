//! egret-loader: keeps a node's eBPF dataplane equal to its compiled artifact.
//!
//! An artifact (`egret_bpf::artifact`: object + manifest with attach points,
//! hole sources, map images, digest) becomes a *generation*: its maps are
//! created and filled from their images, late-bound holes are filled on the
//! node, its programs are loaded with aya, and everything is pinned under
//! `<root>/gen-N/` ([`pins`]). Programs are attached with tcx links pinned
//! under `<root>/links/`; a new generation replaces the program inside every
//! link (`bpf_link_update`), so each packet sees all of N−1 or all of N, then
//! N−1 is deleted. A restarted loader adopts what is pinned instead of
//! detaching anything. See [`Loader`] for the contracts.
//!
//! Modules:
//! - [`loader`]: [`Loader`] — open/adopt, apply (build + swap), pod attachments;
//! - [`check`]: pure checks of an artifact against its object;
//! - [`pins`]: every pin path, as pure functions;
//! - [`meta`]: a generation's metadata and its commit-marker encoding;
//! - [`scan`]: reading pinned state, and the pure recovery decision;
//! - [`state`]: state maps (NAT tables, counters, gateway liveness) shared across
//!   generations, and [`StateMap`], typed access to them by name for the agent;
//! - [`inspect`]: read-only status and map dumps;
//! - [`netlink`]: rtnetlink (links, addresses, routes of every table, notifications);
//! - [`netdev`]: interface and pod-route lookups;
//! - [`demo`]: sample artifacts for tests, benchmarks and demos;
//! - [`view`]: decoded views: the decision table (Cilium's columns), NAT use, drops, connections;
//! - [`tunnel`]: creating and owning the tunnel device `egret0` (rtnetlink, sysctls);
//! - `generation`, `links`, `sys`: building generations, link operations, raw bpf(2).
//!
//! Requirements: root (CAP_BPF + CAP_NET_ADMIN), a kernel with tcx (≥ 6.6),
//! the root directory on a bpffs mount. Everything that names an interface
//! resolves it in the calling thread's network namespace.

pub mod check;
pub mod demo;
pub mod error;
mod generation;
pub mod inspect;
mod links;
pub mod loader;
pub mod meta;
pub mod netdev;
pub mod netlink;
pub mod pins;
pub mod scan;
pub mod state;
mod sys;
pub mod tunnel;
pub mod view;

pub use error::LoaderError;
pub use loader::{
    ApplyReport, EgressSyncReport, Loader, LoaderConfig, MapWrite, PodAttachment, PodState, PodTarget, Recovery,
    SwapTimings, SyncReport,
};
pub use pins::{Generation, PinLayout};
pub use state::{StateFate, StateMap, StateMapError, StateMapReport};
pub use sys::LinkInfo;

//! The integration tests of `egret-kube`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod lease;
mod manifests;
mod snapshot_recipe;
mod watch;

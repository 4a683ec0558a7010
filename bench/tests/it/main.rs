//! The integration tests of `egret-bench`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod cilium_dp;
mod footprint;
mod gateway;
mod layouts;

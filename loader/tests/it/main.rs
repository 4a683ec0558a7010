//! The integration tests of `egret-loader`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod bad_artifacts;
mod cli;
mod crash;
mod egress;
mod lifecycle;
mod node_local;
mod refuse_tampered;
mod state_access;
mod state_maps;
mod swap_under_traffic;
mod tail_call;
mod test_run;
mod tunnel;

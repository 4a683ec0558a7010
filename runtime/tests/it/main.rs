//! The integration tests of `egret-runtime`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod agent;
mod capabilities;
mod chart;
mod cli;
mod container;
mod facts;
mod ha_probe;
mod kube;
mod metrics;
mod show;
mod uninstall;

//! The integration tests of `egret-bpf`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod asm;
mod common;
mod encoding;
mod filetests;
mod gateway_interp;
mod gateway_kernel;
mod gateway_templates;
mod interp;
mod kernel;
mod long_jumps;
mod objdump;
mod robustness;
mod verifier;

//! The integration tests of `egret-compiler`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod ci_tools;
mod cilium_acceptance;
mod cilium_cases;
mod cli;
mod codegen_admit;
mod codegen_cli;
mod codegen_common;
mod codegen_disasm;
mod codegen_equivalence;
mod codegen_kernel;
mod codegen_node;
mod codegen_snapshots;
mod codegen_static;
mod core_bad_inputs;
mod core_common;
mod core_property;
mod core_semantics;
mod core_snapshots;
mod floating;
mod fuzz_artifacts;
mod fuzz_lint;
mod lint_fixtures;
mod messages;
mod verify_rederive;

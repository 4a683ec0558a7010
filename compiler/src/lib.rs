//! egret's compiler: from policies and a cluster snapshot to verified per-node
//! datapaths, plus the CI tooling around them (lint, diff, explain).
//!
//! Stages, each a module with typed input and output:
//! `lint` (checks); [`resolve`] (AST bundle + snapshot → [`resolve::World`];
//! `build`, `endpoints`, `selection`, `gateways`, `egress`, `internal`);
//! [`eval`] (the reference evaluator, SEMANTICS.md as code); [`ir`] (lowering,
//! the passes — [`ir::passes::PIPELINE`], their one list —, text form,
//! verifier); [`plan`] (per-node layout, verifier,
//! [`plan::Verified`]); [`planner`] (world + node → verified plan);
//! [`codegen`] (verified plan → verified artifact); [`driver`] (the compile
//! driver: input → world → plan → artifact, with one typed error);
//! [`cilium`], [`explain`], [`diff`] (views for people and CI).
//!
//! "Compile" means one thing: policies and a cluster → a verified per-node
//! artifact, which is what [`driver`] does; its stages are *resolve*,
//! *plan* and *generate*.
//!
//! # CLI hooks
//! - World: `driver::resolve(&loaded, &resolve::Options { service_cidrs })`
//!   (refuses loader and validation errors as `driver::CompileError::Input`);
//!   `world.diagnostics()` (snapshot problems).
//! - `egret compile --node N`: `driver::Driver::new(codegen_options)`;
//!   `driver.plan(&world, "N")` → `Result<plan::Verified<plan::Plan>,
//!   driver::CompileError>` (`err.diagnostics()` for input errors);
//!   `driver.compile(&world, "N")` adds the artifact (`-o`); `--emit plan`:
//!   `plan.to_text()`; `--emit ir|ir-opt`: `planner::emit_ir(&world, "N",
//!   ir::Stage::Lowered | ir::Stage::Minimized)` then `ir::text::emit(&module)`;
//!   `--emit cilium`: `cilium::view_for(&world, "N", cilium::Release::V1_20)`, then
//!   `cilium::render_view(&view, cilium::Format::Text | Json)`.
//!   All nodes: `planner::Planner::new().plan_all(&world)`; sizes:
//!   `plan.counts()` and `cilium::entry_count(&world)` (Cilium's layout,
//!   cluster-wide).
//! - `egret explain --from F --to T`: `explain::explain(&world, F, T)` →
//!   `Result<Explanation, Diagnostic>`; `explain::render(&e, explain::Format::Human | Json)`.
//! - `egret diff OLD NEW`: `diff::compute(&old_world, &new_world)`;
//!   `diff::render(&d, diff::Format::Human | Json | Markdown)`; exit 1 when
//!   `!d.is_empty()`.
//! - Code generation: accepts `plan::Verified<plan::Plan>`; `plan.lookup(src, dst)`
//!   is the reference for its equivalence checker, with the reference
//!   evaluator (`eval::Reference`, the prepared form of `eval::decide`).
//!   `driver.generate(&world, &plan)` (`codegen::node::verified_node`) → the
//!   node's complete artifact as a `codegen::equiv::VerifiedArtifact`
//!   (static verifier + equivalence checker passed; `codegen::verified_classifier` is
//!   the classifier alone); `codegen::write(dir, &verified, &plan)`;
//!   `codegen::generate(..).asm()` for `--emit asm`; `egret verify`:
//!   `codegen::equiv::check` / `codegen::plan_text::parse`; `egret inspect`:
//!   `codegen::inspect::inspect`.
//! - Linter: `world.selected_endpoints(&policy)`, `world.selected_workloads(&policy)`,
//!   `world.selected_endpoints_in(&policy, resolve::Reading::Cilium)`,
//!   `world.matching_nodes(&selector)`, `world.resolve_gateways(&policy)`,
//!   `world.egress_ip(&gateway_spec, node_id, family)`, `world.internal_ranges()`.

pub mod cilium;
pub mod codegen;
pub mod diff;
pub mod driver;
pub mod eval;
pub mod explain;
pub mod ir;
pub mod lint;
pub mod plan;
pub mod planner;
pub mod resolve;
pub mod synth;

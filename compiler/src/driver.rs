//! The compile driver: policies and a cluster → a verified per-node
//! artifact. In egret "compile" means this, and only this; `egret compile`,
//! the snapshot agent and the kube agent all go through here.
//!
//! Stages, each a function with typed input and output:
//! 1. **Input**: what egret's loader read ([`egret_lang::load::Loaded`]),
//!    plus the node's own facts as AST ([`add_node_facts`]: a
//!    `NodeNetwork` that joins the cluster unless it has one for the node).
//! 2. **Resolve** ([`resolve()`]): loader and validation errors refuse the
//!    input ([`CompileError::Input`]); otherwise the [`World`].
//! 3. **Plan** ([`Driver::plan`]): world + node → [`Verified<Plan>`]
//!    (lowering, the IR passes, layout, the plan verifier; see
//!    [`crate::planner`]).
//! 4. **Generate** ([`Driver::generate`]): verified plan → the node's
//!    complete artifact, statically verified and equivalence-checked
//!    ([`VerifiedArtifact`]).
//!
//! [`Driver::compile`] runs 3 and 4. Every stage fails with the one
//! [`CompileError`], which keeps diagnostics (and their codes) to the end:
//! callers render, count or report them; nothing is stringified on the way.

use crate::codegen::equiv::VerifiedArtifact;
use crate::codegen::{self, CodegenError};
use crate::ir::verify::Violation;
use crate::plan::{LayoutError, Plan, PlanViolation, Verified};
use crate::planner::Planner;
use crate::resolve::{self, World};
use egret_lang::ast::{Bundle, NodeNetwork};
use egret_lang::diag::Diagnostic;
use egret_lang::load::Loaded;
use egret_lang::source::{SourceMap, Span, Spanned};
use std::sync::Arc;

/// Why a node cannot be compiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompileError {
    /// Problems with the input (loader or validation errors, an unknown
    /// node): render the diagnostics.
    #[error("the input has {} error(s)", diagnostics.len())]
    Input { diagnostics: Vec<Diagnostic> },
    /// The IR verifier rejected a pass's output (a compiler bug).
    #[error("internal error: IR of node `{node}` invalid after `{pass}`: {}", first(violations))]
    InvalidIr { node: String, pass: &'static str, violations: Vec<Violation> },
    /// The plan verifier rejected a plan (a compiler bug).
    #[error("internal error: plan of node `{node}` invalid: {}", first(violations))]
    InvalidPlan { node: String, violations: Vec<PlanViolation> },
    #[error("internal error: {source}")]
    Layout {
        #[from]
        source: LayoutError,
    },
    /// Code generation or its checks (static verifier, equivalence) failed.
    #[error("code generation for node `{node}`: {source}")]
    Codegen { node: String, source: Arc<CodegenError> },
}

fn first<T: std::fmt::Display>(v: &[T]) -> String {
    match v {
        [] => String::new(),
        [one] => one.to_string(),
        [one, rest @ ..] => format!("{one} (and {} more)", rest.len()),
    }
}

impl CompileError {
    /// The diagnostics of an input error (empty for internal errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            CompileError::Input { diagnostics } => diagnostics,
            _ => &[],
        }
    }

    /// The codes of its error diagnostics, in order (empty for internal errors).
    pub fn codes(&self) -> Vec<&'static str> {
        self.diagnostics().iter().filter(|d| d.is_error()).map(|d| d.code.id).collect()
    }
}

/// Adds the node's own facts (read on the node: its interfaces, addresses
/// and default route) to the input as its `NodeNetwork`, unless the input
/// has one for that node (the snapshot's word wins). The facts' spans point
/// into a one-line source `<facts of NODE>`. Returns whether they joined.
pub fn add_node_facts(sources: &mut SourceMap, bundle: &mut Bundle, mut facts: NodeNetwork) -> bool {
    let node = facts.node.value.clone();
    if bundle.cluster.node_networks.iter().any(|n| n.node.value == node) {
        return false;
    }
    let text = format!("NodeNetwork {node} (read by egret-agent from the node's network namespace)\n");
    let span = Span::new(sources.add(format!("<facts of {node}>"), text), 0, "NodeNetwork".len() + 1 + node.len());
    facts.span = span;
    facts.node = Spanned::new(node, span);
    bundle.cluster.node_networks.push(facts);
    bundle.objects += 1;
    true
}

/// Resolves the input: its loader errors and validation errors
/// ([`World::validation_errors`], in that order) refuse it; otherwise the world.
///
/// # Errors
/// [`CompileError::Input`] with every error diagnostic.
pub fn resolve(loaded: &Loaded, options: &resolve::Options) -> Result<World, CompileError> {
    let mut errors: Vec<Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).cloned().collect();
    if !errors.is_empty() {
        // the world is not built for input that does not load; its
        // validation errors are reported along
        errors.extend(egret_lang::validate::bundle(&loaded.bundle).into_iter().filter(Diagnostic::is_error));
        return Err(CompileError::Input { diagnostics: errors });
    }
    let world = World::new(&loaded.bundle, options);
    if !world.validation_errors().is_empty() {
        return Err(CompileError::Input { diagnostics: world.validation_errors().to_vec() });
    }
    Ok(world)
}

/// A node compiled: its verified plan and its verified artifact.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub plan: Verified<Plan>,
    pub artifact: VerifiedArtifact,
}

/// Plans and generates nodes of a world (see the module doc); the planner's
/// memo is kept across nodes and across a world's pod updates.
#[derive(Debug, Default)]
pub struct Driver {
    planner: Planner,
    options: codegen::Options,
}

impl Driver {
    /// A driver generating code with `options`.
    pub fn new(options: codegen::Options) -> Driver {
        Driver { planner: Planner::new(), options }
    }

    /// The code generation options.
    pub fn options(&self) -> &codegen::Options {
        &self.options
    }

    /// The planner (its memo and stage times).
    pub fn planner(&mut self) -> &mut Planner {
        &mut self.planner
    }

    /// Stage 3: the node's verified plan.
    ///
    /// # Errors
    /// An unknown node or a world with validation errors
    /// ([`CompileError::Input`]); internal errors.
    pub fn plan(&mut self, world: &World, node: &str) -> Result<Verified<Plan>, CompileError> {
        self.planner.plan_node(world, node)
    }

    /// Stage 4: the node's complete artifact from its verified plan and the
    /// world it was planned in.
    ///
    /// # Errors
    /// [`CompileError::Codegen`].
    pub fn generate(&self, world: &World, plan: &Verified<Plan>) -> Result<VerifiedArtifact, CompileError> {
        codegen::node::verified_node(plan, &self.options, Some(world))
            .map_err(|source| CompileError::Codegen { node: plan.node.clone(), source: Arc::new(source) })
    }

    /// Compiles one node: [`Driver::plan`], then [`Driver::generate`].
    ///
    /// # Errors
    /// As those.
    pub fn compile(&mut self, world: &World, node: &str) -> Result<Compiled, CompileError> {
        let plan = self.plan(world, node)?;
        let artifact = self.generate(world, &plan)?;
        Ok(Compiled { plan, artifact })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_lang::ast::Interface;

    fn example() -> (SourceMap, Loaded) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut sources = SourceMap::new();
        let loaded = egret_lang::load::load(&mut sources, &[dir.join("policies"), dir.join("cluster")]);
        (sources, loaded)
    }

    fn facts(node: &str) -> NodeNetwork {
        NodeNetwork {
            span: Span::default(),
            node: Spanned::new(node.to_string(), Span::default()),
            interfaces: vec![Interface {
                name: "eth9".into(),
                index: Some(9),
                addresses: vec!["192.0.2.99/24".parse().expect("cidr")],
                alt_names: Vec::new(),
            }],
            default_route_interface: Some("eth9".into()),
        }
    }

    #[test]
    fn node_facts_join_as_ast_with_a_source_unless_the_input_has_them() {
        let (mut sources, mut loaded) = example();
        let objects = loaded.bundle.objects;
        assert!(add_node_facts(&mut sources, &mut loaded.bundle, facts("worker-1")));
        assert!(!add_node_facts(&mut sources, &mut loaded.bundle, facts("worker-1")), "the input's word wins");
        assert_eq!(loaded.bundle.objects, objects + 1);
        let n = loaded.bundle.cluster.node_networks.iter().find(|n| n.node.value == "worker-1").expect("joined");
        let file = sources.get(n.span.file).expect("its source");
        assert_eq!(file.name, "<facts of worker-1>");
        assert_eq!(&file.text[n.node.span.range()], "NodeNetwork worker-1");
        let world = resolve(&loaded, &resolve::Options::default()).expect("resolves");
        let network = world.node_by_name("worker-1").and_then(|n| n.network.as_ref()).expect("a network");
        assert_eq!(network.interfaces[0].name, "eth9");
    }

    #[test]
    fn errors_keep_their_diagnostics_and_codes() {
        let (_, loaded) = example();
        let world = resolve(&loaded, &resolve::Options::default()).expect("resolves");
        let mut driver = Driver::default();
        let err = driver.compile(&world, "no-such-node").expect_err("an unknown node");
        assert_eq!(err.codes(), ["E0401"]);
        let compiled = driver.compile(&world, "worker-1").expect("compiles");
        assert_eq!(compiled.artifact.artifact().manifest.node, "worker-1");
        assert_eq!(compiled.plan.node, "worker-1");
    }
}

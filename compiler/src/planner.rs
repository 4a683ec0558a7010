//! The planner: world + node → verified plan, through the IR (stage 3 of
//! the compile driver, [`crate::driver`]).
//!
//! Lowering, the IR passes ([`crate::ir::passes::PIPELINE`], the one list of
//! them), layout, the plan verifier.
//!
//! [`emit_ir`] runs the passes one by one (verifying the IR after each) for
//! `--emit ir|ir-opt`. [`Planner::plan_node`] takes the memoized path
//! ([`crate::ir::lower::lower_optimized`]): class tables are computed once per
//! distinct rule set and shared by all nodes, so planning every node of a
//! large cluster, or replanning one node after a pod change, only redoes
//! what changed. Both paths produce the same module (tested).
//!
//! A world whose policies have field errors is refused
//! ([`CompileError::Input`]); verifier failures are internal errors.

use crate::driver::CompileError;
use crate::ir::lower::{ClassMemo, lower, lower_optimized};
use crate::ir::passes;
use crate::ir::{self, Module, Stage};
use crate::plan::{self, Plan, Verified};
use crate::resolve::{EndpointId, NodeId, World};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Time spent per stage, summed over the nodes planned by a planner.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Class tables (subtract, decide, merge, prune, minimize), memoized.
    pub tables: Duration,
    /// Lowering: grouping endpoints into classes, gateway tables.
    pub lower: Duration,
    pub verify_ir: Duration,
    pub layout: Duration,
    pub verify_plan: Duration,
}

impl StageTimes {
    pub fn total(&self) -> Duration {
        self.tables + self.lower + self.verify_ir + self.layout + self.verify_plan
    }
}

fn resolve_node(world: &World, node: &str) -> Result<NodeId, CompileError> {
    if !world.validation_errors().is_empty() {
        return Err(CompileError::Input { diagnostics: world.validation_errors().to_vec() });
    }
    world
        .node_by_name(node)
        .map(|n| n.id)
        .ok_or_else(|| CompileError::Input { diagnostics: vec![unknown_node(world, node)] })
}

/// The E0401 diagnostic for a node name not in the world.
pub fn unknown_node(world: &World, node: &str) -> Diagnostic {
    let mut d = Diagnostic::new(&codes::UNKNOWN_NODE, format!("no node `{node}` in the snapshot"));
    let names: Vec<&str> = world.nodes().iter().map(|n| n.name.as_str()).collect();
    if let Some(s) = egret_lang::k8s::did_you_mean(node, &names) {
        d = d.help(format!("did you mean `{s}`?"));
    } else if names.is_empty() {
        d = d.help("the snapshot has no Node objects; add them with `kubectl get nodes -o yaml`");
    } else {
        d = d.help(format!("the snapshot has {} nodes, e.g. `{}`", names.len(), names[0]));
    }
    d
}

/// Lowers a node and runs the passes up to `stage`, verifying the IR after
/// lowering and after every pass (`--emit ir` = `lowered`, `--emit ir-opt` = `minimized`).
pub fn emit_ir(world: &World, node: &str, stage: Stage) -> Result<Module, CompileError> {
    let id = resolve_node(world, node)?;
    let mut memo = ClassMemo::new();
    let mut m = lower(world, id, &mut memo);
    check_ir(&m, "lower")?;
    for p in passes::until(stage) {
        (p.run)(&mut m);
        check_ir(&m, p.name)?;
    }
    Ok(m)
}

fn check_ir(m: &Module, pass: &'static str) -> Result<(), CompileError> {
    ir::verify::verify(m).map_err(|violations| CompileError::InvalidIr { node: m.node.clone(), pass, violations })
}

/// Lays out and verifies a plan from an optimized module.
pub fn plan_of(m: &Module) -> Result<Verified<Plan>, CompileError> {
    let p = plan::layout(m)?;
    plan::verify::verify(p).map_err(|violations| CompileError::InvalidPlan { node: m.node.clone(), violations })
}

/// Plans one node with a fresh planner.
pub fn plan_node(world: &World, node: &str) -> Result<Verified<Plan>, CompileError> {
    Planner::new().plan_node(world, node)
}

/// A planner: memoized class tables for one world (valid across
/// its [`World::add_pod`] / [`World::remove_pod`] updates, if the changed
/// endpoints are [forgotten](Planner::forget_endpoint)), and stage times.
#[derive(Debug, Default)]
pub struct Planner {
    memo: ClassMemo,
    pub times: StageTimes,
}

impl Planner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct rule sets (class keys) planned so far.
    pub fn distinct_classes(&self) -> usize {
        self.memo.distinct_classes()
    }

    /// Drops what the planner remembers about an endpoint (after it changed).
    pub fn forget_endpoint(&mut self, e: EndpointId) {
        self.memo.forget_endpoint(e);
    }

    /// Computes the class tables of every endpoint of the world up front
    /// (what [`Planner::plan_all`] would do lazily), timed as `tables`.
    pub fn warm(&mut self, world: &World) {
        let t = Instant::now();
        for e in world.endpoints() {
            self.memo.for_endpoint(world, e.id).optimized();
        }
        self.times.tables += t.elapsed();
    }

    /// Plans one node, through the memoized path.
    pub fn plan_node(&mut self, world: &World, node: &str) -> Result<Verified<Plan>, CompileError> {
        let id = resolve_node(world, node)?;
        self.plan_id(world, id)
    }

    fn plan_id(&mut self, world: &World, id: NodeId) -> Result<Verified<Plan>, CompileError> {
        let t = Instant::now();
        let m = lower_optimized(world, id, &mut self.memo);
        let t1 = Instant::now();
        self.times.lower += t1 - t;
        check_ir(&m, "lower-optimized")?;
        let t2 = Instant::now();
        self.times.verify_ir += t2 - t1;
        let p = plan::layout(&m)?;
        let t3 = Instant::now();
        self.times.layout += t3 - t2;
        let v = plan::verify::verify(p)
            .map_err(|violations| CompileError::InvalidPlan { node: m.node.clone(), violations });
        self.times.verify_plan += t3.elapsed();
        v
    }

    /// Plans every node, by name.
    pub fn plan_all(&mut self, world: &World) -> Result<BTreeMap<String, Verified<Plan>>, CompileError> {
        if !world.validation_errors().is_empty() {
            return Err(CompileError::Input { diagnostics: world.validation_errors().to_vec() });
        }
        let mut out = BTreeMap::new();
        for n in world.nodes() {
            out.insert(n.name.clone(), self.plan_id(world, n.id)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn planners_and_worlds_can_move_between_threads() {
        send_sync::<Planner>();
        send_sync::<World>();
        send_sync::<Verified<Plan>>();
        assert!(Planner::new().times.total().is_zero());
    }
}

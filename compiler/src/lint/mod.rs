//! `egret lint`: everything egret can tell about a policy set before it runs.
//!
//! Three layers, each adding to the last:
//! 1. field validation of each policy (`egret_lang::validate`), shared with `compile`;
//! 2. policy-set checks that need no cluster ([`set`]): exclusions without effect,
//!    ties and conflicts, shadowed policies, and the inputs where Cilium and egret
//!    read a policy differently — reasoning over *hypothetical* pods with
//!    [`constraints`];
//! 3. with a snapshot ([`cluster`]): selection, gateway resolution, namespace
//!    labels, cluster-internal destinations, egress IPs and interfaces.
//!
//! The linter never stops at the first problem: it returns every diagnostic,
//! sorted by file and position.

pub mod cluster;
pub mod constraints;
pub mod intervals;
pub mod set;

use egret_lang::ast::Bundle;
use egret_lang::diag::{self, Diagnostic};
use egret_lang::net::Cidr;

/// What the linter knows besides the policies.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Whether cluster objects were given (`--cluster`): enables the snapshot checks.
    pub snapshot: bool,
    /// Service CIDRs (`--service-cidr`), cluster-internal like pod CIDRs and node IPs.
    pub service_cidrs: Vec<Cidr>,
}

/// Lints a bundle. Diagnostics from parsing are the caller's; these are the linter's own.
pub fn lint(bundle: &Bundle, opts: &Options) -> Vec<Diagnostic> {
    let mut out = egret_lang::validate::bundle(bundle);
    let world = opts.snapshot.then(|| {
        crate::resolve::World::new(bundle, &crate::resolve::Options { service_cidrs: opts.service_cidrs.clone() })
    });
    out.extend(set::check(&bundle.policies, world.as_ref()));
    if let Some(world) = &world {
        out.extend(cluster::check(world, &bundle.policies));
    }
    diag::sort_dedup(&mut out);
    out
}

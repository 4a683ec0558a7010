//! `egret lint`.

use super::{Inputs, print_diagnostics, read};
use anyhow::Result;
use egret_compiler::lint;
use egret_lang::diag::{self, Format};
use std::process::ExitCode;

pub fn run(inputs: &Inputs, format: Format, deny_warnings: bool, verbose: bool) -> Result<ExitCode> {
    let r = read(inputs);
    let mut diags = r.loaded.diagnostics.clone();
    diags.extend(lint::lint(
        &r.loaded.bundle,
        &lint::Options { snapshot: r.has_snapshot, service_cidrs: inputs.service_cidrs.clone() },
    ));
    diag::sort_dedup(&mut diags);
    if verbose && !r.loaded.bundle.skipped.is_empty() {
        let kinds: Vec<String> = r.loaded.bundle.skipped.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        eprintln!("note: skipped documents of kinds egret does not read: {}", kinds.join(", "));
    }
    if verbose {
        let b = &r.loaded.bundle;
        eprintln!(
            "note: read {} files: {} policies, {} nodes, {} namespaces, {} pods, {} workloads, {} NodeNetworks",
            r.loaded.files.len(),
            b.policies.len(),
            b.cluster.nodes.len(),
            b.cluster.namespaces.len(),
            b.cluster.pods.len(),
            b.cluster.workloads.len(),
            b.cluster.node_networks.len()
        );
    }
    print_diagnostics(&diags, &r.sources, format);
    let errors = diags.iter().any(|d| d.is_error());
    let warnings = diags.iter().any(|d| !d.is_error());
    Ok(if errors || (deny_warnings && warnings) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

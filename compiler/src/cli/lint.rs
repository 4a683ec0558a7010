//! `egret lint`.

use super::exit::{self, Exit};
use super::{Inputs, print_diagnostics, read};
use anyhow::Result;
use egret_compiler::lint;
use egret_lang::diag::{self, Format};
use egret_lang::suppress::{self, Rules};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How `egret lint` reports and filters.
pub struct LintOptions<'a> {
    pub format: Format,
    pub deny_warnings: bool,
    pub verbose: bool,
    /// `--ignore CODE`.
    pub ignore: &'a [String],
    /// `--config FILE` (default: `.egret.yaml` in the working directory, when present).
    pub config: Option<&'a Path>,
}

pub fn run(inputs: &Inputs, o: &LintOptions<'_>) -> Result<ExitCode> {
    let mut r = read(inputs);
    if r.policy_files == 0 && !r.unreadable {
        let paths: Vec<String> = inputs.policies.iter().map(|p| format!("`{}`", p.display())).collect();
        return Ok(exit::input(format_args!("no policy files (`*.yaml`, `*.yml`, `*.egret`) in {}", paths.join(", "))));
    }
    let mut rules = Rules::default();
    for k in o.ignore {
        match suppress::code(k) {
            Ok(c) => rules.flag.push(c),
            Err(e) => return Ok(exit::usage(format_args!("--ignore: {e}"))),
        }
    }
    let config: Option<PathBuf> = match o.config {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(suppress::CONFIG_FILE)).filter(|p| p.is_file()),
    };
    let mut diags = r.loaded.diagnostics.clone();
    if let Some(path) = &config {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return Ok(exit::input(format_args!("cannot read config `{}`: {e}", path.display()))),
        };
        let id = r.sources.add(path.display().to_string(), text.clone());
        let (config_rules, problems) = suppress::parse_config(id, &text);
        if !problems.is_empty() {
            // a broken config never silently stops suppressing (or starts)
            eprint!("{}", diag::render::render(&problems, &r.sources, Format::Human));
            return Ok(Exit::Input.into());
        }
        rules.config = config_rules;
        rules.config_path = Some(path.display().to_string());
    }
    diags.extend(lint::lint(
        &r.loaded.bundle,
        &lint::Options { snapshot: r.has_snapshot, service_cidrs: inputs.service_cidrs.clone() },
    ));
    diag::sort_dedup(&mut diags);
    let (diags, suppressed) = suppress::apply(diags, &r.sources, &rules);
    if o.verbose {
        let b = &r.loaded.bundle;
        if !b.skipped.is_empty() {
            let kinds: Vec<String> = b.skipped.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            eprintln!("note: skipped documents of kinds egret does not read: {}", kinds.join(", "));
        }
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
        if let Some(p) = &rules.config_path {
            eprintln!("note: suppressions from {p}: {} rule(s)", rules.config.len());
        }
        for s in &suppressed {
            let at = s.diagnostic.primary_span().map_or_else(String::new, |span| {
                let (line, col) = r.sources.line_col(span.file, span.start);
                format!(" at {}:{line}:{col}", r.sources.name(span.file))
            });
            eprintln!(
                "note: suppressed {}[{}]{at} by {}: {}",
                s.diagnostic.severity.as_str(),
                s.diagnostic.code.id,
                s.by,
                s.diagnostic.message
            );
        }
    } else if !suppressed.is_empty() {
        eprintln!("note: {} diagnostic(s) suppressed (-v lists them)", suppressed.len());
    }
    print_diagnostics(&diags, &r.sources, o.format);
    let errors = diags.iter().any(|d| d.is_error());
    let warnings = diags.iter().any(|d| !d.is_error());
    Ok(if r.unreadable {
        Exit::Input
    } else if errors || (o.deny_warnings && warnings) {
        Exit::Findings
    } else {
        Exit::Ok
    }
    .into())
}

//! `egret-agent status` and `egret-agent maps`: node-side inspection, read
//! from the pins alone (no lock, nothing changed; usable while an agent runs).
//!
//! ```text
//! egret-agent status [--bpffs ROOT] [--json]   generation, attachments, map fill levels, state maps
//! egret-agent maps   [--bpffs ROOT] [--json]   the live decision table (Source IP, Destination CIDR,
//!                                              Egress IP, Gateway IP), NAT table use, drops by
//!                                              reason, NAT connections
//! ```
//!
//! The decoding is the loader's ([`egret_loader::inspect::status`],
//! [`egret_loader::view`]). With the `inline` layout the decisions are code,
//! so the table shown is the one the artifact recorded
//! ([`egret_bpf::artifact::DecisionTable`], pinned read-only in `gen-N/info`);
//! [`decision_table`] builds it from a plan — the compiler should attach it to
//! every node artifact (`Artifact::with_decisions`), and until it does an
//! inline generation shows no table.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use egret_bpf::artifact::{Decision, DecisionRow, DecisionTable};
use egret_compiler::codegen::partition;
use egret_compiler::ir::Action;
use egret_compiler::plan::Plan;
use egret_compiler::resolve::{EgressIp, World};
use egret_loader::{LoaderError, inspect, view};

/// Usage of the two subcommands.
pub const USAGE: &str = "usage: egret-agent status|maps [--bpffs ROOT] [--json]";

/// The decision table of `plan` for an artifact of layout `layout` (`inline`
/// or `maps`): one row per (local endpoint, entry of its class), the
/// cluster-internal prefixes, and the egress address of every slot the rows
/// name that is known at compile time (from `world`, else from the slots the
/// node serves).
#[must_use]
pub fn decision_table(plan: &Plan, world: Option<&World>, layout: &str) -> DecisionTable {
    let rules = partition::rules(plan);
    let mut rows = Vec::new();
    for e in &plan.endpoints {
        let Some(class) = plan.classes.get(e.class.0 as usize) else { continue };
        for (i, entry) in class.entries.iter().enumerate() {
            let decision = match entry.action {
                Action::Pass => Decision::Pass,
                Action::Drop(_) => Decision::Drop,
                Action::Redirect { gateway, slot } => Decision::Redirect { gateway, slot: slot.0 },
                Action::LocalEgress { slot } => Decision::LocalEgress { slot: slot.0 },
            };
            let rule = rules.by_entry.get(e.class.0 as usize).and_then(|r| r.get(i).copied().flatten());
            rows.push(DecisionRow { source: e.ip, destination: entry.prefix.network().to_string(), decision, rule });
        }
    }
    rows.sort_by(|a, b| (a.source, &a.destination).cmp(&(b.source, &b.destination)));
    let mut internal: Vec<String> = plan.internal.iter().map(|c| c.network().to_string()).collect();
    internal.sort();
    let known = |ip: Option<&EgressIp>| ip.and_then(EgressIp::known);
    let mut egress: std::collections::BTreeMap<u32, IpAddr> =
        plan.slots.iter().filter_map(|s| Some((s.id.0, known(s.v4.as_ref())?))).collect();
    if let Some(w) = world {
        egress.extend(w.slots().iter().filter_map(|s| Some((s.id.0, known(s.v4.as_ref())?))));
    }
    let named: std::collections::BTreeSet<u32> = rows
        .iter()
        .filter_map(|r| match r.decision {
            Decision::Redirect { slot, .. } | Decision::LocalEgress { slot } => Some(slot),
            Decision::Pass | Decision::Drop => None,
        })
        .collect();
    egress.retain(|slot, _| named.contains(slot));
    let classes = plan.endpoints.iter().map(|e| (e.ip, e.class.0)).collect();
    DecisionTable { layout: layout.to_owned(), internal, rows, classes, egress }
}

/// `egret-agent status`: generations, attachments, map fill levels, state maps.
///
/// # Errors
/// Reading the pins failed.
pub fn status(root: &Path, json: bool) -> Result<String, LoaderError> {
    let st = inspect::status(root)?;
    Ok(if json { st.to_json() } else { st.to_string() })
}

/// `egret-agent maps`: the decision table, NAT table use, drops, connections.
///
/// # Errors
/// Reading the pins failed.
pub fn maps(root: &Path, json: bool) -> Result<String, LoaderError> {
    let report = view::MapsReport::read(root)?;
    Ok(if json { report.to_json() } else { report.to_string() })
}

/// Runs `egret-agent status|maps …` if `args` (without the program name)
/// start with one of them; `None` otherwise (another subcommand or mode).
pub fn main(args: &[String]) -> Option<ExitCode> {
    let (command, rest) = args.split_first()?;
    let run: fn(&Path, bool) -> Result<String, LoaderError> = match command.as_str() {
        "status" => status,
        "maps" => maps,
        _ => return None,
    };
    let (mut root, mut json) = (PathBuf::from(egret_loader::pins::DEFAULT_ROOT), false);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--json", _) => json = true,
            ("--bpffs", Some(v)) => {
                root = PathBuf::from(v);
                it.next();
            }
            _ => {
                eprintln!("unknown argument `{a}`\n{USAGE}");
                return Some(ExitCode::from(2));
            }
        }
    }
    Some(match run(&root, json) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    })
}

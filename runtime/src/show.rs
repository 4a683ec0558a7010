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
//! the compiler attaches it to every node artifact ([`decision_table`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use egret_compiler::codegen::decisions::decision_table;
use egret_loader::{LoaderError, inspect, view};

/// Usage of the two subcommands.
pub const USAGE: &str = "usage: egret-agent status|maps [--bpffs ROOT] [--json]";

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

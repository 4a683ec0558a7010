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

/// `egret-agent status`: generations, attachments, map fill levels, state
/// maps, and the gateways as this node sees them ([`gateways`]).
///
/// # Errors
/// Reading the pins failed.
pub fn status(root: &Path, json: bool) -> Result<String, LoaderError> {
    let st = inspect::status(root)?;
    let gw = gateways(root);
    Ok(if json {
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        v["gateways"] = serde_json::to_value(&gw).unwrap_or_default();
        format!("{v:#}\n")
    } else {
        let mut out = st.to_string();
        out.push_str(&gw.to_string());
        out
    })
}

/// One gateway as this node's datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayView {
    /// The gateway node's IPv4 address.
    pub gateway: std::net::Ipv4Addr,
    /// Whether `egret_gw_live` marks it down (the classifier fails over).
    pub down: bool,
    /// The last probe reply's round trip, µs.
    pub rtt_us: Option<u64>,
    /// How long ago the last probe reply arrived, ms.
    pub reply_age_ms: Option<u64>,
}

/// The gateways of `egret_gw_live` and `egret_probe_rx` (read from the pins).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewaysView {
    pub gateways: Vec<GatewayView>,
    /// Why the maps could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl std::fmt::Display for GatewaysView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "gateways (as this node probes them; egret_gw_live, egret_probe_rx):")?;
        if let Some(p) = &self.problem {
            writeln!(f, "  unreadable: {p}")?;
        }
        if self.gateways.is_empty() && self.problem.is_none() {
            writeln!(f, "  none probed or marked down")?;
        }
        for g in &self.gateways {
            let state = if g.down { "DOWN" } else { "up" };
            let rtt = g.rtt_us.map_or_else(|| "-".to_string(), |r| format!("{r} µs"));
            let age = g.reply_age_ms.map_or_else(|| "never".to_string(), |a| format!("{a} ms ago"));
            writeln!(f, "  {:<15} {state:<4}  last reply {age}, rtt {rtt}", g.gateway)?;
        }
        Ok(())
    }
}

/// The gateways this node's datapath knows: every one with a down flag in
/// `egret_gw_live` or a probe reply in `egret_probe_rx`.
pub fn gateways(root: &Path) -> GatewaysView {
    use egret_bpf::templates::GatewayLive;
    use egret_bpf::templates::probe::ProbeRx;
    let layout = egret_loader::PinLayout::new(root);
    let read = || -> Result<Vec<GatewayView>, egret_loader::StateMapError> {
        let mut by_ip: std::collections::BTreeMap<std::net::Ipv4Addr, GatewayView> = Default::default();
        let view = |gateway| GatewayView { gateway, down: false, rtt_us: None, reply_age_ms: None };
        if let Some(m) = egret_loader::StateMap::open(&layout, &GatewayLive::map_def())? {
            for k in m.keys()? {
                if let Some(v) = m.get(&k)?
                    && let Some(e) = GatewayLive::from_bytes(&k, &v)
                {
                    by_ip.entry(e.gateway).or_insert_with(|| view(e.gateway)).down = e.down;
                }
            }
        }
        if let Some(m) = egret_loader::StateMap::open(&layout, &ProbeRx::map_def())? {
            let now = crate::ha::probe::monotonic_ns();
            for k in m.keys()? {
                let Ok(key) = <[u8; 4]>::try_from(k.as_slice()) else { continue };
                let gateway = std::net::Ipv4Addr::from(u32::from_le_bytes(key));
                if let Some(v) = m.get(&k)?
                    && let Some(rx) = ProbeRx::from_bytes(&v)
                {
                    let g = by_ip.entry(gateway).or_insert_with(|| view(gateway));
                    g.rtt_us = Some(rx.recv_ns.saturating_sub(rx.sent_ns) / 1000);
                    g.reply_age_ms = Some(now.saturating_sub(rx.recv_ns) / 1_000_000);
                }
            }
        }
        Ok(by_ip.into_values().collect())
    };
    match read() {
        Ok(gateways) => GatewaysView { gateways, problem: None },
        Err(e) => GatewaysView { gateways: Vec::new(), problem: Some(e.to_string()) },
    }
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

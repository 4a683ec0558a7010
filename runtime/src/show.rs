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
    let fl = floating(root);
    Ok(if json {
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        v["gateways"] = serde_json::to_value(&gw).unwrap_or_default();
        v["floating"] = serde_json::to_value(&fl).unwrap_or_default();
        format!("{v:#}\n")
    } else {
        let mut out = st.to_string();
        out.push_str(&gw.to_string());
        out.push_str(&fl.to_string());
        out
    })
}

/// The floating IPs as this node sees them: the owners its datapath
/// forwards to (`egret_float_owner`, from the pins), and what its agent's
/// ownership controller last wrote ([`crate::ha::ownership::status_file`]):
/// Lease holders, this node's own address, the NAT replication and its lag.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FloatingView {
    /// `egret_float_owner`: slot → (owner, is this node).
    pub owners: Vec<(u32, std::net::IpAddr, bool)>,
    /// The controller's status, and how old it is (ms).
    pub controller: Option<crate::ha::ownership::OwnershipStatus>,
    pub controller_age_ms: Option<u64>,
    /// Why something could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl std::fmt::Display for FloatingView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.owners.is_empty() && self.controller.is_none() && self.problem.is_none() {
            return Ok(());
        }
        writeln!(f, "floating egress IPs (egret_float_owner; the agent's ownership controller):")?;
        if let Some(p) = &self.problem {
            writeln!(f, "  unreadable: {p}")?;
        }
        for (slot, owner, me) in &self.owners {
            writeln!(f, "  slot {slot:#x}: owner {owner}{}", if *me { " (this node)" } else { "" })?;
        }
        if let Some(c) = &self.controller {
            let age = self.controller_age_ms.map_or_else(String::new, |a| format!(", written {a} ms ago"));
            writeln!(f, "  controller{age}:")?;
            for x in &c.floating {
                writeln!(
                    f,
                    "    {} (slot {:#x}): lease held by {}, owner {}{}{}; {} owner changes",
                    x.ip,
                    x.slot,
                    x.lease_holder.as_deref().unwrap_or("nobody"),
                    x.owner.as_deref().unwrap_or("nobody"),
                    if x.address_added { ", address on this node" } else { "" },
                    x.deposed_by.as_ref().map_or_else(String::new, |d| format!(", deposed by {d}")),
                    x.owner_changes,
                )?;
            }
            let r = &c.replication;
            for (ip, s) in &r.standbys {
                writeln!(
                    f,
                    "    replicating to {ip}: {}, lag last {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} entries sent",
                    if s.connected { "connected" } else { "NOT connected" },
                    s.lag.last_ns as f64 / 1e6,
                    s.lag.p99_ns as f64 / 1e6,
                    s.lag.max_ns as f64 / 1e6,
                    s.upserts_sent + s.deletes_sent,
                )?;
            }
            for (ip, o) in &r.owners {
                writeln!(f, "    standby of {ip}: {} entries installed, {} deleted", o.installed, o.deleted)?;
            }
            if let Some(e) = &c.last_error {
                writeln!(f, "    last error: {e}")?;
            }
        }
        Ok(())
    }
}

/// Reads [`FloatingView`] for the agent whose root is `root`.
pub fn floating(root: &Path) -> FloatingView {
    use egret_bpf::templates::FloatOwner;
    let mut v = FloatingView::default();
    let layout = egret_loader::PinLayout::new(root);
    let read = || -> Result<Vec<(u32, std::net::IpAddr, bool)>, egret_loader::StateMapError> {
        let mut out = Vec::new();
        if let Some(m) = egret_loader::StateMap::open(&layout, &FloatOwner::map_def())? {
            for k in m.keys()? {
                if let Some(val) = m.get(&k)?
                    && let Some(o) = FloatOwner::from_bytes(&k, &val)
                {
                    out.push((o.slot, o.owner, o.is_self));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    };
    match read() {
        Ok(o) => v.owners = o,
        Err(e) => v.problem = Some(e.to_string()),
    }
    let file = crate::ha::ownership::status_file(root);
    if let Ok(text) = std::fs::read_to_string(&file) {
        match serde_json::from_str(&text) {
            Ok(c) => {
                v.controller = Some(c);
                v.controller_age_ms = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            }
            Err(e) => v.problem = Some(format!("{}: {e}", file.display())),
        }
    }
    v
}

/// One gateway as this node's datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayView {
    /// The gateway node's underlay address.
    pub gateway: std::net::IpAddr,
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
        let mut by_ip: std::collections::BTreeMap<std::net::IpAddr, GatewayView> = Default::default();
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
                let Some(gateway) = egret_bpf::layout::node_addr::NODE.node(&k) else { continue };
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

//! The IR's canonical text form (`egret compile --emit ir|ir-opt`).
//!
//! One item per line, in the module's canonical order, so equal modules
//! print equal text and snapshots change only when the IR does. Classes are
//! numbered `c0, c1, …` in their canonical order (by first endpoint key).
//!
//! ```text
//! ; egret ir, stage lowered
//! node worker-1 192.168.1.11
//! internal 10.244.0.0/16
//! gateway gateway-1 192.168.1.10
//! slot 0x5d1c2a on gateway-1 egress-ip 192.168.1.100: ipv4 192.168.1.100, interface late(egress-ip 192.168.1.100)
//! class c0
//!   endpoint production/app-1 10.244.1.5
//!   policy egress: redirect gateway-1 192.168.1.10 slot 0x5d1c2a
//!     capture 0.0.0.0/0 rank 0
//!     exclude 10.0.0.0/8
//! serve slot 0x5d1c2a
//!   source 10.244.1.5 production/app-1
//! ```

use super::{Action, GatewayDecl, Module, SlotDecl, Target};
use std::fmt::Write;

/// Formats an action, naming the gateway node of each remote target:
/// `redirect NODE IP slot ID` or `local-egress slot ID` per target, in
/// failover order, joined by ` else ` (the plan text reads it back).
pub fn action_text(gateways: &[GatewayDecl], a: &Action) -> String {
    let Action::Egress(choice) = a else { return a.to_string() };
    let target = |t: &Target| match gateways.iter().find(|g| g.ip == t.gateway) {
        Some(g) if !t.local => format!("redirect {} {} slot {}", g.node, g.ip, t.slot),
        _ => t.to_string(),
    };
    choice.targets().iter().map(target).collect::<Vec<_>>().join(" else ")
}

/// `slot ID on NODE SPEC: ipv4 X, ipv6 Y, interface Z`, and for a floating
/// slot `; floating among NODE IP, NODE IP…` (every candidate, by IP).
pub fn slot_text(s: &SlotDecl) -> String {
    let mut parts = Vec::new();
    if let Some(v4) = &s.v4 {
        parts.push(format!("ipv4 {v4}"));
    }
    if let Some(v6) = &s.v6 {
        parts.push(format!("ipv6 {v6}"));
    }
    parts.push(format!("interface {}", s.interface));
    let mut text = format!("slot {} on {} {}: {}", s.id, s.gateway, s.spec, parts.join(", "));
    if let Some(f) = &s.floating {
        let among: Vec<String> = f.candidates.iter().map(|(node, ip)| format!("{node} {ip}")).collect();
        let _ = write!(text, "{FLOATING_AMONG}{}", among.join(", "));
    }
    text
}

/// What introduces a floating slot's candidates in [`slot_text`].
pub const FLOATING_AMONG: &str = "; floating among ";

/// The canonical text of a module.
pub fn emit(m: &Module) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "; egret ir, stage {}", m.stage.as_str());
    match m.node_ip {
        Some(ip) => {
            let _ = writeln!(out, "node {} {ip}", m.node);
        }
        None => {
            let _ = writeln!(out, "node {}", m.node);
        }
    }
    for c in &m.internal {
        let _ = writeln!(out, "internal {c}");
    }
    for g in &m.gateways {
        let _ = writeln!(out, "gateway {} {}", g.node, g.ip);
    }
    for s in &m.slots {
        let _ = writeln!(out, "{}", slot_text(s));
    }
    for (i, c) in m.classes.iter().enumerate() {
        let _ = writeln!(out, "class c{i}");
        for e in &c.endpoints {
            let ips: Vec<String> = e.ips.iter().map(|ip| ip.to_string()).collect();
            let _ = writeln!(out, "  endpoint {} {}", e.key, ips.join(" "));
        }
        for p in &c.policies {
            let _ = writeln!(out, "  policy {}: {}", p.name, action_text(&m.gateways, &p.action));
            for cap in &p.captures {
                let _ = writeln!(out, "    capture {} rank {}", cap.prefix, cap.rank);
            }
            for x in &p.excludes {
                let _ = writeln!(out, "    exclude {x}");
            }
        }
        if m.stage >= super::Stage::Decided {
            let _ = writeln!(out, "  table ({} entries)", c.table.len());
            for e in &c.table {
                let _ = writeln!(out, "    {} -> {}", e.prefix, action_text(&m.gateways, &e.action));
            }
        }
    }
    for s in &m.served {
        let _ = writeln!(out, "serve slot {}", s.slot);
        for src in &s.sources {
            match src.from {
                Some(node) => {
                    let _ = writeln!(out, "  source {} {} from {node}", src.ip, src.endpoint);
                }
                None => {
                    let _ = writeln!(out, "  source {} {}", src.ip, src.endpoint);
                }
            }
        }
    }
    out
}

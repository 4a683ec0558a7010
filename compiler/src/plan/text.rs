//! The plan's canonical text form (`egret compile --emit plan`): every table
//! in its canonical order, then the node's counts.

use super::Plan;
use crate::ir::text::{action_text, slot_text};
use std::fmt::Write;

/// The header's node address when the node has no InternalIP.
pub const NO_NODE_IP: &str = "no InternalIP";

impl Plan {
    /// The canonical text of the plan.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let ip = self.node_ip.map_or_else(|| NO_NODE_IP.to_string(), |i| i.to_string());
        let _ = writeln!(out, "; egret plan for node {} ({ip})", self.node);
        let _ = writeln!(out, "internal ({})", self.internal.len());
        for c in &self.internal {
            let _ = writeln!(out, "  {c} -> pass");
        }
        let _ = writeln!(out, "gateways ({})", self.gateways.len());
        for g in &self.gateways {
            let _ = writeln!(out, "  {} {}", g.node, g.ip);
        }
        let _ = writeln!(out, "slots ({})", self.slots.len());
        for s in &self.slots {
            let _ = writeln!(out, "  {}", slot_text(s));
        }
        let _ = writeln!(out, "endpoints ({})", self.endpoints.len());
        for e in &self.endpoints {
            let _ = writeln!(out, "  {} -> class {}  ; {}", e.ip, e.class.0, e.endpoint);
        }
        let _ = writeln!(out, "classes ({})", self.classes.len());
        for c in &self.classes {
            let _ = writeln!(out, "  class {} ({} entries)", c.id.0, c.entries.len());
            for e in &c.entries {
                let _ = writeln!(out, "    {} -> {}", e.prefix, action_text(&self.gateways, &e.action));
            }
        }
        let _ = writeln!(out, "gateway-tables ({})", self.gateway_tables.len());
        for t in &self.gateway_tables {
            let _ = writeln!(out, "  slot {} ({} sources)", t.slot, t.sources.len());
            for (i, s) in t.sources.iter().enumerate() {
                match t.from.get(i).copied().flatten() {
                    Some(node) => {
                        let _ = writeln!(out, "    allow {s} from {node}");
                    }
                    None => {
                        let _ = writeln!(out, "    allow {s}");
                    }
                }
            }
        }
        let c = self.counts();
        let _ = writeln!(
            out,
            "counts: endpoints {}, classes {}, class entries {}, internal {}, slots {}, gateway entries {}, total {}",
            c.endpoints,
            c.classes,
            c.class_entries,
            c.internal_entries,
            c.slots,
            c.gateway_entries,
            c.total()
        );
        out
    }
}

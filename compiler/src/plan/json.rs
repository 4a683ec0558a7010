//! The plan as JSON (`egret compile --emit plan --format json`).
//!
//! A stable, documented shape for tools; addresses and prefixes are strings,
//! actions are objects with a `kind`. An egress action is its first target
//! (`redirect` or `local-egress`, where it goes while every gateway is live)
//! with the rest of its failover order in `failover` when there is more. A
//! slot's `floating` is `null`, or for the shared slot of a floating egress
//! IP `{"ip", "candidates": [{"node", "ip"}]}` (every candidate gateway, this
//! node included, by underlay IP). The text form ([`Plan::to_text`]) stays
//! the canonical one for people and snapshots.

use super::Plan;
use crate::ir::{Action, Target};
use crate::resolve::FloatingSlot;
use serde_json::{Value, json};

fn action(a: &Action) -> Value {
    match a {
        Action::Pass => json!({"kind": "pass"}),
        Action::Drop(r) => json!({"kind": "drop", "reason": r.as_str()}),
        Action::Egress(c) => {
            let mut v = target(&c.primary());
            if c.targets().len() > 1 {
                v["failover"] = c.targets()[1..].iter().map(target).collect();
            }
            v
        }
    }
}

/// A floating slot: `{"ip", "candidates": [{"node", "ip"}]}` (also in `egret explain --json`).
pub fn floating(f: &FloatingSlot) -> Value {
    json!({
        "ip": f.ip.to_string(),
        "candidates": f.candidates.iter().map(|(node, ip)| json!({"node": node, "ip": ip.to_string()})).collect::<Vec<_>>(),
    })
}

/// A target as the action it is while its gateway is the first live one.
fn target(t: &Target) -> Value {
    if t.local {
        json!({"kind": "local-egress", "slot": t.slot.0})
    } else {
        json!({"kind": "redirect", "gateway": t.gateway.to_string(), "slot": t.slot.0})
    }
}

impl Plan {
    /// The plan as a JSON value (see the module docs).
    pub fn to_json(&self) -> Value {
        let c = self.counts();
        json!({
            "node": self.node,
            "node_ip": self.node_ip.map(|i| i.to_string()),
            "internal": self.internal.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "gateways": self.gateways.iter().map(|g| json!({"node": g.node, "ip": g.ip.to_string()})).collect::<Vec<_>>(),
            "slots": self.slots.iter().map(|s| json!({
                "id": s.id.0,
                "gateway": s.gateway,
                "spec": s.spec.to_string(),
                "egress_ipv4": s.v4.as_ref().map(ToString::to_string),
                "egress_ipv6": s.v6.as_ref().map(ToString::to_string),
                "interface": s.interface.to_string(),
                "floating": s.floating.as_ref().map(floating),
            })).collect::<Vec<_>>(),
            "endpoints": self.endpoints.iter().map(|e| json!({"ip": e.ip.to_string(), "class": e.class.0, "endpoint": e.endpoint})).collect::<Vec<_>>(),
            "classes": self.classes.iter().map(|t| json!({
                "id": t.id.0,
                "entries": t.entries.iter().map(|e| json!({"prefix": e.prefix.to_string(), "action": action(&e.action)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "gateway_tables": self.gateway_tables.iter().map(|g| json!({
                "slot": g.slot.0,
                "sources": g.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "from": g.from.iter().map(|n| n.map(|ip| ip.to_string())).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "counts": {
                "endpoints": c.endpoints, "classes": c.classes, "class_entries": c.class_entries,
                "internal_entries": c.internal_entries, "slots": c.slots, "gateway_entries": c.gateway_entries,
            },
        })
    }
}

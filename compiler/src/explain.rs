//! `egret explain --from NAMESPACE/POD|IP --to IP[:PORT]`: a [`Decision`]
//! and its trail, for people and machines.
//!
//! The port is shown but does not take part in the decision (egress
//! policies are layer 3). `--from` is `namespace/pod`, a bare pod name (in
//! `default`, as kubectl reads it) or an IP; an unknown pod, or one that is
//! not an endpoint, is an E0402 diagnostic; an unparsable address is E0107.
//! An IP that belongs to no endpoint is explained (it passes).

use crate::eval::{
    Consideration, Decision, DestinationMatch, Outcome, PassReason, Selection, Source, Verdict, WinReason, decide,
};
use crate::resolve::{EgressIp, FloatingSlot, World};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use serde_json::{Value, json};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// An explained decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `--from` as given.
    pub from: String,
    pub to: IpAddr,
    pub port: Option<u16>,
    pub decision: Decision,
    /// When the verdict's slot is a floating egress IP's: the IP and its candidates.
    pub floating: Option<FloatingSlot>,
}

/// Parses `--to`: `IP`, `IPv4:PORT` or `[IPv6]:PORT`.
pub fn parse_to(s: &str) -> Result<(IpAddr, Option<u16>), Diagnostic> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    Err(Diagnostic::new(&codes::INVALID_IP, format!("`{s}` is not an IP address or IP:PORT"))
        .help("write e.g. `203.0.113.7`, `203.0.113.7:443` or `[2001:db8::7]:443`"))
}

/// Explains a packet from `from` to `to`.
pub fn explain(world: &World, from: &str, to: &str) -> Result<Explanation, Diagnostic> {
    let (dst, port) = parse_to(to)?;
    let source = match from.parse::<IpAddr>() {
        Ok(ip) => Source::Ip(ip),
        Err(_) => {
            let key = if from.contains('/') { from.to_string() } else { format!("default/{from}") };
            match world.endpoint_by_key(&key) {
                Some(e) => Source::Endpoint(e.id),
                None => {
                    let mut d =
                        Diagnostic::new(&codes::UNKNOWN_ENDPOINT, format!("no endpoint `{key}` in the snapshot"));
                    d = match world.non_endpoint_reason(&key) {
                        Some(why) => d.note(format!("pod `{key}` is in the snapshot but is not an endpoint: {why}")),
                        None => {
                            let keys: Vec<&str> = world.endpoints().map(|e| e.key.as_str()).collect();
                            match egret_lang::k8s::did_you_mean(&key, &keys) {
                                Some(s) => d.help(format!("did you mean `{s}`?")),
                                None => d.help("give NAMESPACE/POD of a pod with an IP in the snapshot, or its IP"),
                            }
                        }
                    };
                    return Err(d);
                }
            }
        }
    };
    let decision = decide(world, source, dst);
    let floating = match &decision.verdict {
        Verdict::Redirect { slot, .. } | Verdict::LocalEgress { slot, .. } => {
            world.slot_by_id(*slot).and_then(|s| s.floating.clone())
        }
        _ => None,
    };
    Ok(Explanation { from: from.to_string(), to: dst, port, decision, floating })
}

fn egress_text(e: &Option<EgressIp>) -> String {
    match e {
        Some(EgressIp::Known(ip)) => ip.to_string(),
        Some(EgressIp::LateBound { spec, family }) => {
            format!("resolved on the gateway node ({spec}, first {} address)", family.as_str())
        }
        Some(EgressIp::Unavailable { reason }) => format!("none ({reason}); the gateway drops it (no-egress-ip)"),
        None => "none".to_string(),
    }
}

fn verdict_line(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Pass { reason: PassReason::NotAnEndpoint } => {
            "pass: the source is not the IP of any endpoint, so no policy applies".to_string()
        }
        Verdict::Pass { reason: PassReason::ClusterInternal { range, source } } => {
            format!(
                "pass: {} is cluster-internal ({range}, {source}); traffic to it never uses a gateway",
                d.destination
            )
        }
        Verdict::Pass { reason: PassReason::NoPolicyMatches } => {
            "pass: no policy selects the endpoint and captures the destination".to_string()
        }
        Verdict::Drop { reason } => format!("drop ({}): the winning policy has no usable gateway", reason.as_str()),
        Verdict::Redirect { gateway, egress_ip, .. } => format!(
            "redirect to gateway {} ({}), which sends it from egress IP {}",
            gateway.node,
            gateway.ip,
            egress_text(egress_ip)
        ),
        Verdict::LocalEgress { gateway, egress_ip, .. } => format!(
            "local egress: this node ({}) is the gateway and sends it from egress IP {}",
            gateway.node,
            egress_text(egress_ip)
        ),
    }
}

fn selection_text(c: &Consideration) -> Vec<String> {
    let mut v = Vec::new();
    match &c.selection {
        Selection::Selected { item } => v.push(format!("selects the endpoint: yes, item {}", item + 1)),
        Selection::NotSelected { misses } => {
            v.push("selects the endpoint: no".to_string());
            for m in misses {
                v.push(format!("  item {}: {}", m.item + 1, m.reason));
            }
        }
    }
    let egret = matches!(c.selection, Selection::Selected { .. });
    if let Some(cilium) = c.cilium_selected
        && egret != cilium
    {
        v.push(format!(
            "note: Cilium's reading ({}) {} the endpoint",
            "nodeSelectors pooled across items",
            if cilium { "selects" } else { "does not select" }
        ));
    }
    v
}

fn destination_text(c: &Consideration, dst: IpAddr) -> String {
    match &c.destination {
        DestinationMatch::Contains { entry } => format!("destination: {entry} contains {dst}"),
        DestinationMatch::Excluded { entry, by } => {
            format!("destination: {entry} contains {dst}, but excluded CIDR {by} removes it")
        }
        DestinationMatch::NoEntryContains => format!("destination: no destinationCIDRs entry contains {dst}"),
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Won => "won".to_string(),
        Outcome::LostToLongerPrefix { winner, winner_len } => {
            format!("lost: `{winner}` matches a longer prefix (/{winner_len})")
        }
        Outcome::LostTieBreak { winner } => format!("lost: tied with `{winner}`, whose name is smaller"),
        Outcome::NotSelected => "not applicable: does not select the endpoint".to_string(),
        Outcome::NoMatchingDestination => "not applicable: does not capture the destination".to_string(),
        Outcome::OverriddenByClusterInternal => "matched, but the destination is cluster-internal".to_string(),
    }
}

fn outcome_tag(o: &Outcome) -> &'static str {
    match o {
        Outcome::Won => "won",
        Outcome::LostToLongerPrefix { .. } => "lost-longer-prefix",
        Outcome::LostTieBreak { .. } => "lost-tie-break",
        Outcome::NotSelected => "not-selected",
        Outcome::NoMatchingDestination => "no-matching-destination",
        Outcome::OverriddenByClusterInternal => "cluster-internal",
    }
}

/// Renders an explanation.
pub fn render(e: &Explanation, format: Format) -> String {
    match format {
        Format::Human => human(e),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(e)).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

fn human(e: &Explanation) -> String {
    let d = &e.decision;
    let mut out = String::new();
    let src = match (&d.source.key, d.source.ip) {
        (Some(k), Some(ip)) => format!("{k} ({ip})"),
        (Some(k), None) => format!("{k} (no IP of the destination's family)"),
        (None, Some(ip)) => format!("{ip} (no endpoint)"),
        (None, None) => e.from.clone(),
    };
    let _ = writeln!(out, "from   {src}{}", d.source.node.as_ref().map_or(String::new(), |n| format!(" on node {n}")));
    let _ = writeln!(
        out,
        "to     {}{}",
        e.to,
        e.port.map_or(String::new(), |p| format!(" port {p} (ports do not affect the decision)"))
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "verdict: {}", verdict_line(d));
    if let Some(f) = &e.floating {
        let among: Vec<String> = f.candidates.iter().map(|(n, ip)| format!("{n} ({ip})")).collect();
        let _ = writeln!(
            out,
            "floating: {} moves between its candidates {}; the gateway in effect forwards to the one that holds it",
            f.ip,
            among.join(", ")
        );
    }
    if let Some(w) = &d.winner {
        let why = match &w.reason {
            WinReason::OnlyMatch => {
                "the only policy that selects the endpoint and captures the destination".to_string()
            }
            WinReason::LongestPrefix { runner_up, runner_up_len } => {
                format!("longest matching prefix (/{} beats `{runner_up}`'s /{runner_up_len})", w.prefix.len)
            }
            WinReason::TieBreakByName { tied_with } => format!(
                "tied at /{} with {}; the smallest name wins (lint reports this tie)",
                w.prefix.len,
                tied_with.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        let _ = writeln!(out, "winner:  {} via {} — {why}", w.policy, w.prefix);
    }
    if let Some(g) = &d.gateway {
        let n = g.candidates.len();
        if n == 0 {
            let _ = writeln!(out, "gateway: none: no gateway entry resolves to a node with an IPv4 InternalIP");
        } else {
            let list: Vec<String> = g
                .candidates
                .iter()
                .map(|(c, h)| format!("{} ({}){}", c.node, c.ip, if *h { "" } else { " not Ready" }))
                .collect();
            let _ = writeln!(out, "gateway: candidates by IP: {}", list.join(", "));
            if let Some(h) = g.assignment.hashed {
                let _ = writeln!(
                    out,
                    "         fnv1a_32(identity) = 0x{:08x}; mod {n} = {h} → {}",
                    g.hash, g.candidates[h].0.node
                );
            }
            if g.order.len() > 1 {
                let order: Vec<&str> = g.order.iter().map(|i| g.candidates[*i].0.node.as_str()).collect();
                let _ = writeln!(
                    out,
                    "         failover order: {} (the first live one; then by rendezvous weight)",
                    order.join(" → ")
                );
            }
            match (g.assignment.failed_over(), g.assignment.chosen) {
                (true, Some(c)) => {
                    let _ = writeln!(
                        out,
                        "         not Ready: moved to {}, the healthy gateway with the highest rendezvous weight",
                        g.candidates[c].0.node
                    );
                }
                (_, None) => {
                    let _ = writeln!(out, "         no healthy gateway: traffic is dropped (no-gateway)");
                }
                _ => {}
            }
        }
    }
    let _ = writeln!(out);
    let unselected = d.trail.iter().filter(|c| matches!(c.outcome, Outcome::NotSelected)).count();
    if d.trail.is_empty() {
        let _ = writeln!(out, "policies: none considered");
        return out;
    }
    let _ = writeln!(out, "policies ({}):", d.trail.len());
    let show_all = d.trail.len() <= 12;
    for c in &d.trail {
        if !show_all && matches!(c.outcome, Outcome::NotSelected) {
            continue;
        }
        let _ = writeln!(out, "  {}", c.policy);
        for l in selection_text(c) {
            let _ = writeln!(out, "    {l}");
        }
        let _ = writeln!(out, "    {}", destination_text(c, e.to));
        let _ = writeln!(out, "    outcome: {}", outcome_text(&c.outcome));
    }
    if !show_all && unselected > 0 {
        let _ = writeln!(out, "  … and {unselected} more that do not select the endpoint (see --format json)");
    }
    out
}

/// The JSON form of an explanation.
pub fn to_json(e: &Explanation) -> Value {
    let d = &e.decision;
    let egress = |x: &Option<EgressIp>| match x {
        Some(EgressIp::Known(ip)) => json!({"kind": "known", "ip": ip.to_string()}),
        Some(EgressIp::LateBound { spec, family }) => {
            json!({"kind": "late-bound", "spec": spec.to_string(), "family": family.as_str()})
        }
        Some(EgressIp::Unavailable { reason }) => json!({"kind": "unavailable", "reason": reason.to_string()}),
        None => Value::Null,
    };
    let verdict = match &d.verdict {
        Verdict::Pass { reason } => {
            let (r, extra) = match reason {
                PassReason::NotAnEndpoint => ("not-an-endpoint", Value::Null),
                PassReason::ClusterInternal { range, source } => {
                    ("cluster-internal", json!({"range": range.to_string(), "source": source.to_string()}))
                }
                PassReason::NoPolicyMatches => ("no-policy-matches", Value::Null),
            };
            json!({"kind": "pass", "reason": r, "internal": extra})
        }
        Verdict::Drop { reason } => json!({"kind": "drop", "reason": reason.as_str()}),
        Verdict::Redirect { gateway, slot, egress_ip } => json!({
            "kind": "redirect", "gateway": {"node": gateway.node, "ip": gateway.ip.to_string()},
            "slot": slot.to_string(), "egress_ip": egress(egress_ip)}),
        Verdict::LocalEgress { gateway, slot, egress_ip } => json!({
            "kind": "local-egress", "gateway": {"node": gateway.node, "ip": gateway.ip.to_string()},
            "slot": slot.to_string(), "egress_ip": egress(egress_ip)}),
    };
    let winner = d.winner.as_ref().map_or(Value::Null, |w| {
        let reason = match &w.reason {
            WinReason::OnlyMatch => json!({"kind": "only-match"}),
            WinReason::LongestPrefix { runner_up, runner_up_len } => {
                json!({"kind": "longest-prefix", "runner_up": runner_up, "runner_up_len": runner_up_len})
            }
            WinReason::TieBreakByName { tied_with } => json!({"kind": "tie-break-by-name", "tied_with": tied_with}),
        };
        json!({"policy": w.policy, "prefix": w.prefix.to_string(), "reason": reason})
    });
    let gateway = d.gateway.as_ref().map_or(Value::Null, |g| {
        json!({
            "candidates": g.candidates.iter().map(|(c, h)| json!({"node": c.node, "ip": c.ip.to_string(), "healthy": h})).collect::<Vec<_>>(),
            "hash": format!("0x{:08x}", g.hash),
            "hashed_index": g.assignment.hashed,
            "failover_order": g.order,
            "chosen_index": g.assignment.chosen,
            "failed_over": g.assignment.failed_over(),
        })
    });
    let trail: Vec<Value> = d
        .trail
        .iter()
        .map(|c| {
            let selection = match &c.selection {
                Selection::Selected { item } => json!({"selected": true, "item": item + 1}),
                Selection::NotSelected { misses } => json!({"selected": false, "misses": misses.iter().map(|m| json!({"item": m.item + 1, "reason": m.reason})).collect::<Vec<_>>()}),
            };
            let destination = match &c.destination {
                DestinationMatch::Contains { entry } => json!({"kind": "contains", "entry": entry.to_string()}),
                DestinationMatch::Excluded { entry, by } => {
                    json!({"kind": "excluded", "entry": entry.to_string(), "by": by.to_string()})
                }
                DestinationMatch::NoEntryContains => json!({"kind": "no-entry-contains"}),
            };
            json!({
                "policy": c.policy,
                "selection": selection,
                "cilium_selected": c.cilium_selected,
                "destination": destination,
                "outcome": outcome_tag(&c.outcome),
                "outcome_text": outcome_text(&c.outcome),
            })
        })
        .collect();
    json!({
        "from": e.from,
        "source": {
            "endpoint": d.source.key,
            "ip": d.source.ip.map(|i| i.to_string()),
            "node": d.source.node,
        },
        "to": e.to.to_string(),
        "port": e.port,
        "verdict": verdict,
        "floating": e.floating.as_ref().map(crate::plan::json::floating),
        "winner": winner,
        "gateway": gateway,
        "policies": trail,
    })
}

//! Reads a plan back from its text form (`NODE.plan.txt`, what
//! [`Plan::to_text`] writes), for `egret verify` and `egret inspect` when
//! no cluster is given.
//!
//! Everything the node's artifact depends on is reconstructed exactly: node,
//! internal prefixes, gateways, endpoints with their classes, class tables
//! with their actions, slots (id, gateway node, egress spec, egress IPv4 and
//! IPv6, interface, floating candidates: the gateway templates' map images
//! are made from them), gateway tables. Contract: for a verified plan `p`,
//! `parse(&p.to_text())` equals `p` (so `egret verify` regenerates the
//! artifact from it byte for byte), except the reason an egress address or
//! interface is unavailable, which the text gives in words only (read back
//! where it is one of [`NoEgressIp`]'s phrasings).

use crate::ir::text::FLOATING_AMONG;
use crate::ir::{Action, Choice, DropReason, Entry, GatewayDecl, MAX_FAILOVER, SlotDecl, Target};
use crate::plan::{ClassId, ClassTable, EndpointEntry, GatewayTable, Plan};
use crate::resolve::{EgressIp, EgressSpec, FloatingSlot, InterfaceBinding, NoEgressIp, SlotId};
use egret_lang::net::{Cidr, Family};
use std::net::IpAddr;

/// A line of the plan text that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan text line {line}: {message}: `{text}`")]
pub struct PlanTextError {
    pub line: usize,
    pub text: String,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Internal,
    Gateways,
    Slots,
    Endpoints,
    Classes,
    GatewayTables,
}

fn slot_id(s: &str) -> Option<SlotId> {
    u32::from_str_radix(s.strip_prefix("0x")?, 16).ok().map(SlotId)
}

/// One action; local-egress targets take the node's address `node_ip`.
fn action(s: &str, node_ip: Option<IpAddr>) -> Option<Action> {
    let w: Vec<&str> = s.split_whitespace().collect();
    match w.as_slice() {
        ["pass"] => return Some(Action::Pass),
        ["drop", "no-gateway"] => return Some(Action::Drop(DropReason::NoGateway)),
        _ => {}
    }
    let target = |t: &str| -> Option<Target> {
        let w: Vec<&str> = t.split_whitespace().collect();
        match w.as_slice() {
            ["redirect", _, ip, "slot", id] | ["redirect", ip, "slot", id] => {
                Some(Target { gateway: ip.parse().ok()?, slot: slot_id(id)?, local: false })
            }
            ["local-egress", "slot", id] => Some(Target { gateway: node_ip?, slot: slot_id(id)?, local: true }),
            _ => None,
        }
    };
    let targets: Vec<Target> = s.split(" else ").map(target).collect::<Option<_>>()?;
    (targets.len() <= MAX_FAILOVER).then_some(())?;
    Choice::new(targets).map(Action::Egress)
}

/// `s` split at `sep` outside parentheses.
fn split_top(s: &str, sep: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if depth == 0 && rest.starts_with(sep) {
            parts.push(String::new());
            rest = &rest[sep.len()..];
            continue;
        }
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    parts
}

/// An egress spec as [`EgressSpec`]'s `Display` writes it.
fn egress_spec(s: &str) -> Option<EgressSpec> {
    let w: Vec<&str> = s.split_whitespace().collect();
    match w.as_slice() {
        ["egress-ip", ip] => ip.parse().ok().map(EgressSpec::EgressIp),
        ["floating-ip", ip] => ip.parse().ok().map(EgressSpec::Floating),
        ["interface", name] => Some(EgressSpec::Interface((*name).to_string())),
        ["default-route"] => Some(EgressSpec::DefaultRoute),
        _ => None,
    }
}

/// A reason as [`NoEgressIp`]'s `Display` writes it.
fn no_egress_ip(s: &str) -> Option<NoEgressIp> {
    if s == "the node reports no default-route interface" {
        return Some(NoEgressIp::NoDefaultRoute);
    }
    if let Some(ip) = s.strip_suffix(" is on no interface of the node") {
        return ip.parse().ok().map(|ip| NoEgressIp::EgressIpNotOnNode { ip });
    }
    let interface = s.strip_prefix("interface ")?;
    if let Some(name) = interface.strip_suffix(" is not on the node") {
        return Some(NoEgressIp::InterfaceNotOnNode { interface: name.to_string() });
    }
    let (name, family) = interface.split_once(" has no non-link-local ")?;
    let family = match family.strip_suffix(" address")? {
        "ipv4" => Family::V4,
        "ipv6" => Family::V6,
        _ => return None,
    };
    Some(NoEgressIp::NoAddress { interface: name.to_string(), family })
}

/// An egress address as [`EgressIp`]'s `Display` writes it.
fn egress_ip(s: &str) -> Option<EgressIp> {
    if let Some(inner) = s.strip_prefix("late(").and_then(|r| r.strip_suffix(')')) {
        let (spec, family) = inner.rsplit_once(", ")?;
        let family = match family {
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            _ => return None,
        };
        return Some(EgressIp::LateBound { spec: egress_spec(spec)?, family });
    }
    if let Some(reason) = s.strip_prefix("none(").and_then(|r| r.strip_suffix(')')) {
        return Some(EgressIp::Unavailable { reason: no_egress_ip(reason)? });
    }
    s.parse().ok().map(EgressIp::Known)
}

/// An interface binding as [`InterfaceBinding`]'s `Display` writes it.
fn interface(s: &str) -> Option<InterfaceBinding> {
    if let Some(spec) = s.strip_prefix("late(").and_then(|r| r.strip_suffix(')')) {
        return Some(InterfaceBinding::LateBound { spec: egress_spec(spec)? });
    }
    if let Some(reason) = s.strip_prefix("none(").and_then(|r| r.strip_suffix(')')) {
        return Some(InterfaceBinding::Unavailable { reason: no_egress_ip(reason)? });
    }
    match s.rsplit_once('#') {
        Some((name, index)) => {
            Some(InterfaceBinding::Known { name: name.to_string(), index: Some(index.parse().ok()?) })
        }
        None if !s.is_empty() => Some(InterfaceBinding::Known { name: s.to_string(), index: None }),
        None => None,
    }
}

/// A slot line, as `ir::text::slot_text` writes it:
/// `slot ID on NODE SPEC: [ipv4 IP, ][ipv6 IP, ]interface IF[; floating among NODE IP, …]`.
fn slot(t: &str) -> Result<SlotDecl, String> {
    let (t, among) = match t.split_once(FLOATING_AMONG) {
        Some((t, among)) => (t, Some(among)),
        None => (t, None),
    };
    let (head, fields) = t.split_once(": ").ok_or("expected `slot ID on NODE SPEC: …`")?;
    let w: Vec<&str> = head.splitn(5, ' ').collect();
    let (id, gateway, spec) = match w.as_slice() {
        ["slot", id, "on", gw, spec] => (
            slot_id(id).ok_or("bad slot id")?,
            (*gw).to_string(),
            egress_spec(spec).ok_or_else(|| format!("bad egress spec `{spec}`"))?,
        ),
        _ => return Err("expected `slot ID on NODE SPEC: …`".into()),
    };
    let (mut v4, mut v6, mut binding) = (None, None, None);
    for f in split_top(fields, ", ") {
        let bad = || format!("bad slot field `{f}`");
        if let Some(v) = f.strip_prefix("ipv4 ") {
            v4 = Some(egress_ip(v).ok_or_else(bad)?);
        } else if let Some(v) = f.strip_prefix("ipv6 ") {
            v6 = Some(egress_ip(v).ok_or_else(bad)?);
        } else if let Some(v) = f.strip_prefix("interface ") {
            binding = Some(interface(v).ok_or_else(bad)?);
        } else {
            return Err(bad());
        }
    }
    let floating = match (&spec, among) {
        (EgressSpec::Floating(ip), Some(among)) => {
            let candidates = among
                .split(", ")
                .map(|c| {
                    let (node, ip) = c.split_once(' ')?;
                    Some((node.to_string(), ip.parse::<IpAddr>().ok()?))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or("expected `floating among NODE IP, …`")?;
            Some(FloatingSlot { ip: *ip, candidates })
        }
        (_, None) => None,
        (_, Some(_)) => return Err("candidates for a slot that does not float".into()),
    };
    Ok(SlotDecl { id, gateway, spec, v4, v6, interface: binding.ok_or("expected `interface …`")?, floating })
}

/// Parses a plan's text form.
///
/// # Errors
/// The first line that does not read.
pub fn parse(text: &str) -> Result<Plan, PlanTextError> {
    let mut plan = Plan {
        node: String::new(),
        node_ip: None,
        internal: Vec::new(),
        gateways: Vec::new(),
        slots: Vec::new(),
        endpoints: Vec::new(),
        classes: Vec::new(),
        gateway_tables: Vec::new(),
    };
    let mut section = Section::None;
    let mut seen_header = false;
    for (n, raw) in text.lines().enumerate() {
        let err = |message: &str| PlanTextError { line: n + 1, text: raw.to_string(), message: message.to_string() };
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("; egret plan for node ") {
            let (node, ip) = rest.split_once(" (").ok_or_else(|| err("expected `NODE (IP)`"))?;
            plan.node = node.to_string();
            let ip = ip.strip_suffix(')').ok_or_else(|| err("expected `)`"))?;
            plan.node_ip = if ip == crate::plan::text::NO_NODE_IP {
                None
            } else {
                Some(ip.parse::<IpAddr>().map_err(|_| err("bad node IP"))?)
            };
            seen_header = true;
            continue;
        }
        if line.starts_with("counts:") {
            section = Section::None;
            continue;
        }
        if !line.starts_with(' ') {
            let name = line.split_whitespace().next().unwrap_or_default();
            section = match name {
                "internal" => Section::Internal,
                "gateways" => Section::Gateways,
                "slots" => Section::Slots,
                "endpoints" => Section::Endpoints,
                "classes" => Section::Classes,
                "gateway-tables" => Section::GatewayTables,
                _ => return Err(err("unknown section")),
            };
            continue;
        }
        let t = line.trim_start();
        let indent = line.len() - t.len();
        match section {
            Section::None => return Err(err("line outside a section")),
            Section::Internal => {
                let c = t.strip_suffix(" -> pass").ok_or_else(|| err("expected `CIDR -> pass`"))?;
                plan.internal.push(c.parse::<Cidr>().map_err(|_| err("bad prefix"))?);
            }
            Section::Gateways => {
                let (node, ip) = t.split_once(' ').ok_or_else(|| err("expected `NODE IP`"))?;
                plan.gateways.push(GatewayDecl { node: node.into(), ip: ip.parse().map_err(|_| err("bad IPv4"))? });
            }
            Section::Slots => plan.slots.push(slot(t).map_err(|m| err(&m))?),
            Section::Endpoints => {
                let (main, key) = t.split_once("  ; ").ok_or_else(|| err("expected `IP -> class N  ; KEY`"))?;
                let w: Vec<&str> = main.split_whitespace().collect();
                let (ip, class) = match w.as_slice() {
                    [ip, "->", "class", c] => (
                        ip.parse::<IpAddr>().map_err(|_| err("bad IP"))?,
                        c.parse::<u32>().map_err(|_| err("bad class"))?,
                    ),
                    _ => return Err(err("expected `IP -> class N`")),
                };
                plan.endpoints.push(EndpointEntry { ip, class: ClassId(class), endpoint: key.to_string() });
            }
            Section::Classes if indent == 2 => {
                let w: Vec<&str> = t.split_whitespace().collect();
                match w.as_slice() {
                    ["class", c, ..] => {
                        let id = c.parse::<u32>().map_err(|_| err("bad class"))?;
                        plan.classes.push(ClassTable { id: ClassId(id), entries: Vec::new() });
                    }
                    _ => return Err(err("expected `class N (M entries)`")),
                }
            }
            Section::Classes => {
                let (p, a) = t.split_once(" -> ").ok_or_else(|| err("expected `CIDR -> ACTION`"))?;
                let prefix = p.parse::<Cidr>().map_err(|_| err("bad prefix"))?;
                let action = action(a, plan.node_ip).ok_or_else(|| err("bad action"))?;
                let class = plan.classes.last_mut().ok_or_else(|| err("entry before any class"))?;
                class.entries.push(Entry { prefix, action });
            }
            Section::GatewayTables if indent == 2 => {
                let w: Vec<&str> = t.split_whitespace().collect();
                match w.as_slice() {
                    ["slot", id, ..] => plan.gateway_tables.push(GatewayTable {
                        slot: slot_id(id).ok_or_else(|| err("bad slot id"))?,
                        sources: Vec::new(),
                        from: Vec::new(),
                    }),
                    _ => return Err(err("expected `slot ID (N sources)`")),
                }
            }
            Section::GatewayTables => {
                let rest = t.strip_prefix("allow ").ok_or_else(|| err("expected `allow IP [from NODE-IP]`"))?;
                let (ip, from) = match rest.split_once(" from ") {
                    Some((ip, node)) => (ip, Some(node.parse().map_err(|_| err("bad node IP"))?)),
                    None => (rest, None),
                };
                let table = plan.gateway_tables.last_mut().ok_or_else(|| err("source before any slot"))?;
                table.sources.push(ip.parse().map_err(|_| err("bad IP"))?);
                table.from.push(from);
            }
        }
    }
    if !seen_header {
        return Err(PlanTextError {
            line: 1,
            text: String::new(),
            message: "no `; egret plan for node` header".into(),
        });
    }
    Ok(plan)
}

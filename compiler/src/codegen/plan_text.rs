//! Reads a plan back from its text form (`NODE.plan.txt`, what
//! [`Plan::to_text`] writes), for `egret verify` and `egret inspect` when
//! no cluster is given.
//!
//! Everything the classifier depends on is reconstructed exactly: node,
//! internal prefixes, gateways, endpoints with their classes, class tables
//! with their actions, slot ids with their gateway node, gateway tables.
//! What a slot's egress IPs and interface are is *not* parsed back (the
//! source-side classifier never reads it): those fields come back as
//! "late-bound, default route" — except a floating slot's IP and
//! candidates (the gateway images depend on them). Contract: for a verified plan `p`,
//! `parse(&p.to_text())` has the same `to_text()` up to those slot details,
//! and the same [`Plan::lookup`] everywhere.

use crate::ir::text::FLOATING_AMONG;
use crate::ir::{Action, Choice, DropReason, Entry, GatewayDecl, MAX_FAILOVER, SlotDecl, Target};
use crate::plan::{ClassId, ClassTable, EndpointEntry, GatewayTable, Plan};
use crate::resolve::{EgressIp, EgressSpec, FloatingSlot, InterfaceBinding, SlotId};
use egret_lang::net::Cidr;
use std::net::{IpAddr, Ipv4Addr};

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
            Section::Slots => {
                let (t, among) = match t.split_once(FLOATING_AMONG) {
                    Some((t, among)) => (t, Some(among)),
                    None => (t, None),
                };
                let w: Vec<&str> = t.split_whitespace().collect();
                let (id, gw, ip) = match w.as_slice() {
                    ["slot", id, "on", gw, spec, ip, ..] if among.is_some() && *spec == "floating-ip" => (
                        slot_id(id).ok_or_else(|| err("bad slot id"))?,
                        gw.to_string(),
                        Some(ip.trim_end_matches(':').parse::<Ipv4Addr>().map_err(|_| err("bad floating IP"))?),
                    ),
                    ["slot", id, "on", gw, ..] if among.is_none() => {
                        (slot_id(id).ok_or_else(|| err("bad slot id"))?, gw.to_string(), None)
                    }
                    _ => return Err(err("expected `slot ID on NODE …`")),
                };
                let floating = match (ip, among) {
                    (Some(ip), Some(among)) => {
                        let candidates = among
                            .split(", ")
                            .map(|c| {
                                let (node, ip) = c.split_once(' ')?;
                                Some((node.to_string(), ip.parse::<IpAddr>().ok()?))
                            })
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| err("expected `floating among NODE IP, …`"))?;
                        Some(FloatingSlot { ip, candidates })
                    }
                    _ => None,
                };
                let spec = floating.as_ref().map_or(EgressSpec::DefaultRoute, |f| EgressSpec::Floating(f.ip));
                plan.slots.push(SlotDecl {
                    id,
                    gateway: gw,
                    v4: floating.as_ref().map(|f| EgressIp::Known(IpAddr::V4(f.ip))),
                    v6: None,
                    interface: InterfaceBinding::LateBound { spec: spec.clone() },
                    spec,
                    floating,
                });
            }
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

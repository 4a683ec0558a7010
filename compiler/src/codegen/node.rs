//! A node's complete artifact: the `egret_src` classifier plus, when the
//! node hosts endpoints or serves egress slots, the gateway datapath
//! templates (`egret_bpf::templates`) in the same object, with their map
//! images filled from the plan.
//!
//! Programs (one object; all programs share maps by name — the
//! classifier's maps (`egret_reasons`, `egret_policy_stats`,
//! `egret_gw_progs`, `egret_dst_v4/v6`)
//! and the templates' maps (`egret_local_eps_v4/v6`, `egret_gw_slots`,
//! `egret_gw_allowed_v4/v6`, `egret_nat_v4/v6`, `egret_rnat_v4/v6`, `egret_gw_stats`, …)
//! have disjoint names, checked by [`node_artifact`]):
//!
//! | program | manifest |
//! |---|---|
//! | `egret_src` | attach `pod-veth-ingress` |
//! | `egret_tunnel_in` | attach `tunnel-ingress` |
//! | `egret_gw_reply` | attach `egress-ingress` |
//! | `egret_gw_local` | tail-call target `egret_gw_progs[0]` (filled by the loader with the program of the same generation) |
//!
//! The hole `%tunnel_ifindex` (classifier and `egret_gw_reply`) is one
//! `Ifindex { link: "egret0" }` source; the classifier's `%mss_v4` and
//! `%mss_v6` are constants ([`super::mss`]).
//!
//! Map images (contract):
//! - `egret_local_eps_v4` and `egret_local_eps_v6` are **empty**: the host-side veth ifindex of a pod is
//!   node-local and changes with the pod; the loader (or the agent driving
//!   it) fills it at attach time. Until then reply delivery to local pods
//!   and `egret_gw_local` drop (`no-local-endpoint` / `spoofed-source`).
//! - `egret_gw_slots`: one entry per slot the node serves, with an egress
//!   IPv4 and an egress IPv6, each written when known at compile time, a
//!   late field when late-bound (IPv4: `SlotIpv4 { slot }`, `be32`; IPv6:
//!   `SlotIpv6 { slot }`, 16 bytes in network order; at the offsets of
//!   `layout::gw_slot`), and left `0.0.0.0` / `::` (drop `no-egress-ip` for
//!   that family) when unavailable. The egress ifindex is
//!   a late field `Ifindex { link }` when the interface is known by name;
//!   a late-bound or unavailable interface leaves it 0 (the redirect fails:
//!   the packet is dropped) — resolving an interface from an egress spec on
//!   the node is not implemented.
//! - `egret_gw_allowed_v4` / `egret_gw_allowed_v6`: one entry per (served
//!   slot, source) in the map of the source's family. A source
//!   that is a local endpoint of this node is `GA_F_LOCAL` (only
//!   `egret_gw_local` accepts it); any other source is accepted only
//!   through the tunnel from its own node (value: the node's IPv4 address,
//!   the plan's `from`, which `bpf_skb_get_tunnel_key` reports as the
//!   remote), so a node cannot send another node's pods' addresses. A
//!   source whose node has no IPv4 address is accepted from any node
//!   (value 0).
//!   A floating slot (the plan's `floating`) has the flag `GS_F_FLOATING`:
//!   every candidate serves it; only the owner SNATs.
//! - `egret_gw_peers`: for each floating slot the node serves, one entry per
//!   *other* candidate (its underlay IPv4), from which forwarded packets of
//!   the slot's allowed sources are accepted.
//! - `egret_nat_v4/v6`, `egret_rnat_v4/v6`, `egret_gw_stats`, `egret_gw_progs`,
//!   `egret_float_owner` (a state map the agent writes): empty.
//!
//! The equivalence checker runs on `egret_src` exactly as for a
//! classifier-only artifact (its maps are the same; the templates' maps
//! are extra images it loads but the classifier never reads).

use super::{CodegenError, Options, PROGRAM, equiv, tables};
use crate::plan::{Plan, Verified};
use crate::resolve::{EgressIp, InterfaceBinding, World};
use egret_bpf::artifact::{Artifact, AttachPoint, FieldEncoding, HoleSource, LateField, MapImage, ProgramSpec};
use egret_bpf::elf;
use egret_bpf::layout::{self, gw_slot};
use egret_bpf::templates::{self, AllowedSource, GW_LOCAL_PROG_INDEX, GatewayPeer, GatewaySlot, SourceNode, Template};
use egret_bpf::{MapDef, Program};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// Whether the node's artifact carries the gateway templates: it hosts
/// endpoints (reply delivery) or serves slots.
#[must_use]
pub fn needs_gateway(plan: &Plan) -> bool {
    !plan.endpoints.is_empty() || !plan.slots.is_empty()
}

/// The images of the template maps for `plan` (see the module doc).
///
/// # Errors
/// A slot wider than the 24-bit VNI.
pub fn gateway_images(plan: &Plan) -> Result<Vec<MapImage>, CodegenError> {
    let mut images: Vec<MapImage> = templates::maps().iter().map(MapImage::of).collect();
    let image = |images: &mut Vec<MapImage>, name: &str| images.iter().position(|m| m.name == name);
    let slots_at = image(&mut images, templates::map::GW_SLOTS);
    let allowed_at = [templates::map::GW_ALLOWED, templates::map::GW_ALLOWED6].map(|m| image(&mut images, m));
    let peers_at = image(&mut images, templates::map::GW_PEERS);
    if let Some(i) = slots_at {
        for s in &plan.slots {
            if s.id.0 > 0x00ff_ffff {
                return Err(CodegenError::SlotTooWide { slot: s.id.0 });
            }
            let mut late = Vec::new();
            let mut late_field = |field: &layout::Field, source, encoding| {
                late.push(LateField { offset: field.offset as u32, source, encoding });
            };
            let egress_ip = match &s.v4 {
                Some(EgressIp::Known(IpAddr::V4(ip))) => *ip,
                Some(EgressIp::LateBound { .. }) => {
                    late_field(&gw_slot::EGRESS_IP, HoleSource::SlotIpv4 { slot: s.id.0 }, FieldEncoding::Be32);
                    Ipv4Addr::UNSPECIFIED
                }
                _ => Ipv4Addr::UNSPECIFIED,
            };
            if let InterfaceBinding::Known { name, .. } = &s.interface {
                late_field(&gw_slot::IFINDEX, HoleSource::Ifindex { link: name.clone() }, FieldEncoding::Le32);
            }
            let egress_ip6 = match &s.v6 {
                Some(EgressIp::Known(IpAddr::V6(ip))) => *ip,
                Some(EgressIp::LateBound { .. }) => {
                    late_field(&gw_slot::EGRESS_IP6, HoleSource::SlotIpv6 { slot: s.id.0 }, FieldEncoding::Ipv6);
                    Ipv6Addr::UNSPECIFIED
                }
                _ => Ipv6Addr::UNSPECIFIED,
            };
            let entry =
                GatewaySlot { slot: s.id.0, egress_ip, egress_ip6, egress_ifindex: 0, floating: s.floating.is_some() };
            images[i].push_late(&entry.key(), &entry.value(), late);
        }
    }
    if let Some(i) = peers_at {
        for s in &plan.slots {
            for (_, peer) in s.floating.iter().flat_map(|f| f.peers_of(plan.node_ip)) {
                let entry = GatewayPeer { slot: s.id.0, peer: *peer };
                images[i].push(&entry.key(), &entry.value());
            }
        }
    }
    let local: BTreeSet<IpAddr> = plan.endpoints.iter().map(|e| e.ip).collect();
    for t in &plan.gateway_tables {
        for (k, src) in t.sources.iter().enumerate() {
            let from = match t.from.get(k).copied().flatten() {
                _ if local.contains(src) => SourceNode::Local,
                Some(node) => SourceNode::Node(node),
                None => SourceNode::AnyNode,
            };
            let entry = AllowedSource { slot: t.slot.0, src: *src, from };
            if let Some(i) = allowed_at[usize::from(src.is_ipv6())] {
                images[i].push(&entry.key(), &entry.value());
            }
        }
    }
    Ok(images)
}

/// The gateway templates, assembled once per process (their text is
/// constant; assembling takes longer than the rest of a small node's artifact).
fn template_programs() -> Result<&'static [(Template, Program)], CodegenError> {
    /// The programs, or the template that does not assemble and why.
    type Assembled = Result<Vec<(Template, Program)>, (&'static str, String)>;
    static ASSEMBLED: OnceLock<Assembled> = OnceLock::new();
    let assembled = ASSEMBLED.get_or_init(|| {
        [Template::TunnelIn, Template::GwReply, Template::GwLocal]
            .into_iter()
            .map(|t| t.assemble().map(|a| (t, a.program)).map_err(|e| (t.name(), e.to_string())))
            .collect()
    });
    match assembled {
        Ok(v) => Ok(v),
        Err((program, message)) => Err(CodegenError::Template { program, message: message.clone() }),
    }
}

/// Builds the node's complete artifact from a classifier-only candidate
/// (`egret_src`, as [`super::Generated::artifact`] makes it): the same
/// program and images, plus the templates when [`needs_gateway`].
///
/// # Errors
/// Template assembly (a bug), a map-name clash, static verification, or a slot too wide.
pub fn node_artifact(plan: &Plan, generated: &super::Generated) -> Result<Artifact, CodegenError> {
    if !needs_gateway(plan) {
        return generated.artifact(plan);
    }
    let mut programs = vec![generated.program.clone()];
    let mut maps: Vec<MapDef> = generated.maps.clone();
    let template_maps = templates::maps();
    if let Some(clash) = template_maps.iter().find(|t| maps.iter().any(|m| m.name == t.name)) {
        return Err(CodegenError::MapClash { map: clash.name.clone() });
    }
    maps.extend(template_maps);
    let mut specs = vec![ProgramSpec::attached(PROGRAM, AttachPoint::PodVethIngress)];
    for (t, program) in template_programs()? {
        programs.push(program.clone());
        specs.push(match t.attach() {
            Some(a) => ProgramSpec::attached(t.name(), a),
            None => ProgramSpec::tail_call_target(t.name(), tables::GW_PROGS, GW_LOCAL_PROG_INDEX),
        });
    }
    // the static verifier runs here on every program, the classifier included
    let object = elf::verify_and_write(&programs, &maps, super::LICENSE)?;
    let mut images = generated.images.clone();
    images.extend(gateway_images(plan)?);
    // counter labels stay the classifier's: the equivalence checker requires
    // exactly the plan's (egret_gw_stats indexes are `templates::Stat`)
    let counters = tables::counter_labels(plan, &generated.rules, &std::collections::BTreeMap::new());
    let holes = generated.hole_specs();
    Ok(Artifact::new(&plan.node, object, specs, holes, images)
        .with_counters(counters)
        // reasons are the same in every plan: their counts carry over swaps
        // (`egret_policy_stats` is indexed by this plan's rules: it does not)
        .with_state([tables::REASONS])
        .with_decisions(super::decisions::decision_table(plan, None, generated.layout.as_str())))
}

/// [`super::verified_classifier`] for the node's complete artifact: generates, builds
/// [`node_artifact`] and equivalence-checks its `egret_src` program.
///
/// # Errors
/// Any generation, verification or equivalence failure.
pub fn verified_node(
    plan: &Verified<Plan>,
    options: &Options,
    reference: Option<&World>,
) -> Result<equiv::VerifiedArtifact, CodegenError> {
    let g = super::generate(plan, options)?;
    let mut candidate = node_artifact(plan, &g)?;
    if reference.is_some() {
        // with the world, remote slots' egress addresses are known too
        candidate = candidate.with_decisions(super::decisions::decision_table(plan, reference, g.layout.as_str()));
    }
    let check = equiv::CheckOptions { reference_limit: options.reference_limit };
    equiv::check_with(candidate, plan, reference, &check).map_err(|e| CodegenError::Equivalence { source: Box::new(e) })
}

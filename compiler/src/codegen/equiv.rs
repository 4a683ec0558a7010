//! The equivalence checker: runs the classifier of an artifact in egret-bpf's
//! interpreter, with the artifact's map images loaded, and compares every
//! outcome with the plan ([`Plan::lookup`]) and, when given the world, with
//! the reference evaluator ([`crate::eval::Reference`], the prepared form of
//! [`crate::eval::decide`]).
//!
//! What is run ([`cases`]):
//! - for every class and family, with the first endpoint IP of that class
//!   and family as source, both ends of every destination interval cut by
//!   the plan's prefixes (the class's entries and the internal prefixes; all
//!   of the plan's prefixes when the plan is small or inline) and by the
//!   prefixes of that class found in the artifact's `egret_dst_*` images
//!   (cluster-internal prefixes are entries of every class there); the
//!   first and last of them also
//!   behind an 802.1Q tag;
//! - every endpoint IP of the plan once (its class lookup);
//! - sources that are no endpoint of the plan (the extremes of each family,
//!   the neighbours of endpoint IPs; with the world, the node's endpoints
//!   without rules);
//! - frames that are not IP, truncated IP headers, with and without a tag;
//! - TCP frames ([`mss::battery`]): for every class and family, a SYN with
//!   MSS 1460 to one destination of each plan outcome; for the first class
//!   of each family with a redirect, every shape of the battery (MSS first,
//!   after NOPs and other options, at odd offsets, beyond the walk, below
//!   the clamp, SYN-ACK, plain ACK, malformed options, truncated headers,
//!   IPv4 options and fragments, behind a tag).
//!
//! Why that suffices: the plan's decision for a class is constant between
//! the boundaries of its prefixes and the internal ones, and the maps
//! layout's decision depends on the destination only through one LPM
//! lookup keyed by (class, destination), constant between the boundaries of
//! the image's keys of that class; the inline layout compares against interval
//! starts derived from the plan's prefixes, all of which are cut points.
//!
//! What is compared per packet: the return code and effects (tunnel key
//! remote, id and TTL, redirect target `ifindex` and flags, tail call and
//! `cb[0]`), mapped back to a plan action, with `plan.lookup` (through its
//! longest-prefix index, [`Plan::lookup_index`], whose probes per packet
//! grow with the prefix lengths, not the entries) and with
//! `decide` (for every packet, or a deterministic sample of at most
//! [`CheckOptions::reference_limit`]); the expected `egret_reasons` reason
//! and `egret_policy_stats` rule gain one packet and the frame's bytes; at
//! the end every counter's total is exact (a counter that moved when it
//! should not is traced back to its packet by a replay); the frame the
//! program leaves is [`mss::clamped`] for redirects (with the clamp the
//! manifest records in its `%mss_v4`/`%mss_v6` holes) and the input
//! otherwise, and a frame whose MSS was clamped has a TCP checksum that is
//! right when computed from scratch. Any difference is an [`EquivError`]
//! naming the packet (hex) and both answers.
//!
//! Contract: only [`check`] constructs a [`VerifiedArtifact`], and only when
//! every program of the object (the classifier and, in a node's complete
//! artifact, the gateway templates) passes egret-bpf's static verifier
//! against the object's map definitions, the manifest's map images match those definitions, and
//! every case agrees.

use super::mss::{self, MssClamp};
use super::partition::{self, Rules, class_families};
use super::reasons::{Counter, Reason};
use super::tables;
use super::{HOLE_TUNNEL_IFINDEX, Layout, PROGRAM};
use crate::eval::{self, Source};
use crate::ir::prefix::segments;
use crate::ir::{Action, DropReason, Effect, Health};
use crate::plan::{ClassId, LookupIndex, Plan, Verified};
use crate::resolve::{SlotId, World};
use egret_bpf::artifact::{self, Artifact, ArtifactError};
use egret_bpf::elf::{self, ElfError};
use egret_bpf::interp::{self, Fault, MapStore, RunInput, RunOutcome};
use egret_bpf::layout::BPF_F_TUNINFO_IPV6;
use egret_bpf::program::HoleError;
use egret_bpf::templates::{GatewayLive, GatewaysDown};
use egret_bpf::verifier::{self, VerifyErrors};
use egret_bpf::{MapDef, Program};
use egret_lang::net::{Cidr, Family, family_max, ip_to_u128, u128_to_ip};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ifindex the checker puts in the `tunnel_ifindex` hole.
pub const CHECK_IFINDEX: u32 = 0x7e57;

/// Above this many distinct plan prefixes, maps-layout classes are checked
/// against their own cut points only (see the module documentation).
const GLOBAL_CUTS_MAX: usize = 2048;

/// A failed check.
#[derive(Debug, thiserror::Error)]
pub enum EquivError {
    #[error("artifact: {source}")]
    Artifact { source: ArtifactError },
    #[error("cannot read the object: {source}")]
    Object { source: ElfError },
    #[error("the object has no program `{name}`")]
    MissingProgram { name: String },
    #[error("static verifier rejects `{program}`:\n{source}")]
    Static { program: String, source: VerifyErrors },
    #[error("map `{map}`: {problem}")]
    MapImage { map: String, problem: String },
    #[error("cannot fill holes: {source}")]
    Hole { source: HoleError },
    #[error("{at}: the interpreter faulted: {source}")]
    Fault { at: Box<Counterexample>, source: Fault },
    #[error("{at}: the classifier says {program}, the plan says {plan}")]
    Mismatch { at: Box<Counterexample>, program: String, plan: String },
    #[error("{at}: the classifier says {program}, the reference evaluator says {reference}")]
    Reference { at: Box<Counterexample>, program: String, reference: String },
    #[error("{at}: `{map}`[{index}] ({name}) is {found}, expected {expected}")]
    Counter { at: Box<Counterexample>, map: String, index: u32, name: String, found: String, expected: String },
    #[error("manifest counter labels differ from the plan's: {detail}")]
    Labels { detail: String },
    #[error("{at}: the classifier leaves the frame as {found}, expected {expected}")]
    Frame { at: Box<Counterexample>, found: String, expected: String },
    #[error("{at}: the clamped frame's TCP checksum is wrong when computed from scratch")]
    Checksum { at: Box<Counterexample> },
    #[error("manifest: {detail}")]
    MssHoles { detail: String },
}

/// The packet a failure was found with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    /// The frame, hex.
    pub packet: String,
    /// `src -> dst`, or what kind of frame it is.
    pub flow: String,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "packet {} ({})", self.packet, self.flow)
    }
}

impl Case {
    fn counterexample(&self) -> Box<Counterexample> {
        let flow = match self.what {
            Some(w) => format!("{}, {w}", self.flow()),
            None => self.flow(),
        };
        Box::new(Counterexample { packet: hex(&self.frame), flow })
    }
}

/// What the checker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Packets run.
    pub cases: usize,
    /// Packets also compared with `eval::decide`.
    pub reference_checks: usize,
    /// (class, family) pairs covered.
    pub class_families: usize,
    /// Interpreter instructions executed over all cases.
    pub insns: u64,
    /// Instructions the static verifier processed, over every program of the object.
    pub verifier_insns: u64,
    /// Programs in the object (the classifier, and the gateway templates in
    /// a node's complete artifact).
    pub programs: usize,
    /// The MSS clamp the manifest records (`None`: the program does not clamp).
    pub mss_clamp: Option<MssClamp>,
    /// Packets whose MSS the program clamped (each checked against
    /// [`mss::clamped`] and with its TCP checksum recomputed).
    pub mss_clamped: usize,
    /// Packets run with some gateways down ([`health_patterns`]).
    pub liveness_cases: usize,
}

/// An artifact that passed the static verifier and the equivalence checker.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    artifact: Artifact,
    layout: Layout,
    report: Report,
    program: Program,
}

impl VerifiedArtifact {
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }
    pub fn into_artifact(self) -> Artifact {
        self.artifact
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn report(&self) -> Report {
        self.report
    }
    /// The program as read back from the object.
    pub fn program(&self) -> &Program {
        &self.program
    }
}

/// What a packet should get, from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The final reason (local egress ends as `drop-no-gateway-program`
    /// while no gateway program is loaded).
    pub reason: Reason,
    pub rule: Option<u32>,
    /// The plan's action (`Pass` for frames that are not classified).
    pub action: Action,
    /// What the packet gets under the case's liveness.
    pub effect: Effect,
}

impl Expected {
    /// The classifier's return code.
    pub fn return_code(&self) -> i32 {
        self.reason.return_code()
    }
}

/// One packet of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub frame: Vec<u8>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub expected: Expected,
    /// Whether to compare with `eval::decide` too (sources the world knows
    /// as endpoints of other nodes are not).
    pub reference: bool,
    /// The gateways down (`egret_gw_live` entries with the down flag) while
    /// the packet runs; empty: all up.
    pub down: Vec<IpAddr>,
    /// What kind of frame it is, when not [`ip_frame`]'s UDP datagram.
    pub what: Option<&'static str>,
}

impl Case {
    fn flow(&self) -> String {
        let down = if self.down.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = self.down.iter().map(ToString::to_string).collect();
            format!(" with gateways {} down", v.join(", "))
        };
        match (self.src, self.dst) {
            (Some(s), Some(d)) => format!("{s} -> {d}{down}"),
            _ => "not an IP packet".into(),
        }
    }

    /// The liveness the packet runs under.
    pub fn health(&self) -> Health {
        Health::with_down(self.down.iter().copied())
    }
}

/// The hole values a node's loader fills for an artifact whose `egret0`
/// has ifindex `tunnel_ifindex`: every `Ifindex` source gets it, constants
/// (the MSS clamp) their recorded value; slot-address sources are left out.
#[must_use]
pub fn hole_values(holes: &[artifact::HoleSpec], tunnel_ifindex: i64) -> BTreeMap<String, i64> {
    holes
        .iter()
        .filter_map(|h| match &h.source {
            artifact::HoleSource::Ifindex { .. } => Some((h.name.clone(), tunnel_ifindex)),
            artifact::HoleSource::Constant { value } => Some((h.name.clone(), *value as i64)),
            artifact::HoleSource::SlotIpv4 { .. } | artifact::HoleSource::SlotIpv6 { .. } => None,
            artifact::HoleSource::UnderlayMss { default, .. } => Some((h.name.clone(), i64::from(*default))),
        })
        .collect()
}

/// Hex of a frame.
pub fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// An Ethernet frame (optionally 802.1Q-tagged, VLAN 100) carrying a UDP
/// datagram from `src` to `dst` (14 bytes of payload), with a valid IPv4
/// header checksum.
pub fn ip_frame(src: IpAddr, dst: IpAddr, vlan: bool) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    }
    let payload = b"egret-checker!";
    let udp_len = 8 + payload.len() as u16;
    let udp = |f: &mut Vec<u8>| {
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&443u16.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
            h[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = interp::inet_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
            udp(&mut f);
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(x) => x.octets(),
                IpAddr::V4(x) => x.to_ipv6_mapped().octets(),
            };
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&v6(s));
            f.extend_from_slice(&v6(d));
            udp(&mut f);
        }
    }
    f
}

/// Frames that are not classified: ARP, LLDP, runts, truncated IP headers.
pub fn special_frames() -> Vec<(Vec<u8>, Reason)> {
    let mac = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x02];
    let with = |ethertype: &[u8], body: &[u8]| {
        let mut f = mac.to_vec();
        f.extend_from_slice(ethertype);
        f.extend_from_slice(body);
        f
    };
    let arp = [0u8, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2];
    let v4 = ip_frame(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), IpAddr::V4(Ipv4Addr::BROADCAST), false);
    let v6 = ip_frame(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        false,
    );
    vec![
        (with(&[0x08, 0x06], &arp), Reason::NonIp),
        (with(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x06], &arp), Reason::NonIp),
        (with(&[0x88, 0xcc], &[0; 46]), Reason::NonIp),
        (mac[..10].to_vec(), Reason::NonIp),
        (with(&[0x81, 0x00], &[0x00]), Reason::NonIp),
        (v4[..14 + 19].to_vec(), Reason::PassMalformed),
        (v6[..14 + 39].to_vec(), Reason::PassMalformed),
        (with(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00], &v4[14..14 + 19]), Reason::PassMalformed),
        (with(&[0x81, 0x00, 0x00, 0x64, 0x86, 0xdd], &v6[14..14 + 39]), Reason::PassMalformed),
    ]
}

/// The expected outcome of a packet from `src` to `dst` under `health`,
/// from the plan alone (its prefixes hashed by length, [`Plan::lookup_index`]:
/// written independently of the interval partition the generator uses).
pub fn expected(index: &LookupIndex<'_>, rules: &Rules, src: IpAddr, dst: IpAddr, health: &Health) -> Expected {
    let plan = index.plan();
    let pass = |reason| Expected { reason, rule: None, action: Action::Pass, effect: Effect::Pass };
    let Some(class) = plan.class_of(src) else { return pass(Reason::PassNotEndpoint) };
    if index.internal(dst) {
        return pass(Reason::PassInternal);
    }
    let Some(table) = plan.classes.get(class.0 as usize) else { return pass(Reason::PassNotEndpoint) };
    let Some((i, e)) = index.entry(class, dst).and_then(|i| Some((i, table.entries.get(i)?))) else {
        return pass(Reason::PassNoMatch);
    };
    let rule = rules.by_entry.get(class.0 as usize).and_then(|v| v.get(i).copied().flatten());
    let effect = e.action.resolve(health);
    let reason = match effect {
        Effect::Pass => return pass(Reason::PassNoMatch),
        Effect::Drop(DropReason::NoGateway) => Reason::DropNoGateway,
        Effect::Redirect { .. } => Reason::Redirect,
        Effect::LocalEgress { .. } => Reason::DropNoGatewayProgram,
    };
    Expected { reason, rule, action: e.action, effect }
}

/// The liveness patterns the checker runs egress packets under, besides all
/// up: with at most [`ALL_PATTERNS_MAX`] gateways in the plan's choices,
/// every subset down; otherwise, per choice, each prefix of its failover
/// order down (so every target of every choice is taken once, and the
/// `no-gateway` end), deduplicated. Sorted, deterministic.
pub fn health_patterns(plan: &Plan) -> Vec<Vec<IpAddr>> {
    let choices = tables::choices(plan);
    let gateways: BTreeSet<IpAddr> = choices.iter().flat_map(|c| c.targets().iter().map(|t| t.gateway)).collect();
    let gateways: Vec<IpAddr> = gateways.into_iter().collect();
    let mut out: BTreeSet<Vec<IpAddr>> = BTreeSet::new();
    if gateways.len() <= ALL_PATTERNS_MAX {
        for mask in 1u32..(1 << gateways.len()) {
            out.insert(gateways.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, g)| *g).collect());
        }
    } else {
        for c in &choices {
            for k in 1..=c.targets().len() {
                let mut down: Vec<IpAddr> = c.targets()[..k].iter().map(|t| t.gateway).collect();
                down.sort();
                down.dedup();
                out.insert(down);
            }
        }
    }
    out.into_iter().collect()
}

/// Up to this many distinct gateways, [`health_patterns`] is every subset.
pub const ALL_PATTERNS_MAX: usize = 5;

/// Destinations for one (class, family): both ends of every segment.
fn representatives(family: Family, cuts: &[Cidr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for s in segments(family, cuts) {
        out.push(u128_to_ip(family, s.lo));
        if s.hi != s.lo {
            out.push(u128_to_ip(family, s.hi));
        }
    }
    out
}

/// The packets of the check. `image_cuts`: prefixes per class found in the
/// artifact's `egret_dst_*` images.
pub fn cases(
    plan: &Plan,
    rules: &Rules,
    layout: Layout,
    image_cuts: &BTreeMap<u32, Vec<Cidr>>,
    world: Option<&World>,
) -> Vec<Case> {
    let all = plan.prefixes();
    let global = layout == Layout::Inline || all.len() <= GLOBAL_CUTS_MAX;
    let mut out = Vec::new();
    let up = Health::all_up();
    let index = plan.lookup_index();
    let case = |src: IpAddr, dst: IpAddr, vlan: bool, reference: bool| Case {
        frame: ip_frame(src, dst, vlan),
        src: Some(src),
        dst: Some(dst),
        expected: expected(&index, rules, src, dst, &up),
        reference,
        down: Vec::new(),
        what: None,
    };
    let tcp_case = |src: IpAddr, dst: IpAddr, probe: mss::Probe, reference: bool| Case {
        frame: probe.frame,
        src: Some(src),
        dst: Some(dst),
        expected: expected(&index, rules, src, dst, &up),
        reference,
        down: Vec::new(),
        what: Some(probe.what),
    };
    let mut battery_done: BTreeSet<Family> = BTreeSet::new();
    let has_ref = world.is_some();
    let mut reps_of: BTreeMap<(ClassId, Family), Vec<IpAddr>> = BTreeMap::new();
    for c in &plan.classes {
        for f in class_families(plan, c.id) {
            let Some(src) = plan.endpoints.iter().find(|e| e.class == c.id && Family::of(&e.ip) == f).map(|e| e.ip)
            else {
                continue;
            };
            let mut cuts: Vec<Cidr> = if global {
                all.iter().filter(|p| p.family() == f).copied().collect()
            } else {
                plan.internal
                    .iter()
                    .chain(c.entries.iter().map(|e| &e.prefix))
                    .filter(|p| p.family() == f)
                    .copied()
                    .collect()
            };
            cuts.extend(image_cuts.get(&c.id.0).into_iter().flatten().filter(|p| p.family() == f).copied());
            let reps = representatives(f, &cuts);
            for d in &reps {
                out.push(case(src, *d, false, has_ref));
            }
            if let (Some(first), Some(last)) = (reps.first(), reps.last()) {
                out.push(case(src, *first, true, has_ref));
                out.push(case(src, *last, true, has_ref));
            }
            // TCP SYNs: one per outcome; the whole battery once per family, on a redirect
            let mut outcomes = BTreeSet::new();
            for d in &reps {
                let e = expected(&index, rules, src, *d, &up);
                if !outcomes.insert((e.reason, e.rule)) {
                    continue;
                }
                let mut probes = mss::battery(src, *d);
                if e.reason == Reason::Redirect && battery_done.insert(f) {
                    for p in probes {
                        out.push(tcp_case(src, *d, p, has_ref));
                    }
                } else {
                    out.push(tcp_case(src, *d, probes.swap_remove(0), has_ref));
                }
            }
            reps_of.insert((c.id, f), reps);
        }
    }
    // every endpoint IP: the class lookup
    for e in &plan.endpoints {
        let f = Family::of(&e.ip);
        if let Some(reps) = reps_of.get(&(e.class, f)) {
            let d = reps[reps.len() / 2];
            out.push(case(e.ip, d, false, has_ref));
        }
    }
    // sources that are not endpoints of the plan
    let fallback = |f: Family| u128_to_ip(f, 0x0808_0808);
    let some_dsts = |f: Family| -> Vec<IpAddr> {
        let v: Vec<IpAddr> =
            reps_of.iter().filter(|((_, g), _)| *g == f).flat_map(|(_, r)| r.iter().copied()).collect();
        if v.is_empty() { vec![fallback(f)] } else { v }
    };
    let mut others: BTreeSet<IpAddr> = BTreeSet::new();
    for f in [Family::V4, Family::V6] {
        others.insert(u128_to_ip(f, 0));
        others.insert(u128_to_ip(f, family_max(f)));
    }
    for e in plan.endpoints.iter().take(64) {
        let f = Family::of(&e.ip);
        let v = ip_to_u128(e.ip);
        for n in [v.wrapping_sub(1), v.wrapping_add(1)] {
            if n <= family_max(f) {
                others.insert(u128_to_ip(f, n));
            }
        }
    }
    if let Some(w) = world
        && let Some(node) = w.node_by_name(&plan.node)
    {
        for ep in w.endpoints_on(node.id) {
            others.extend(ep.ips.iter().copied());
        }
    }
    for (i, s) in others.into_iter().filter(|s| plan.class_of(*s).is_none()).enumerate() {
        let f = Family::of(&s);
        let dsts = some_dsts(f);
        let reference = world.is_some_and(|w| match w.endpoint_by_ip(s) {
            None => true,
            Some(ep) => ep.node.is_some_and(|n| w.node(n).name == plan.node),
        });
        for k in 0..2 {
            let d = dsts[(i * 7 + k * 3) % dsts.len()];
            out.push(case(s, d, false, reference));
        }
    }
    for (frame, reason) in special_frames() {
        out.push(Case {
            frame,
            src: None,
            dst: None,
            expected: Expected { reason, rule: None, action: Action::Pass, effect: Effect::Pass },
            reference: false,
            down: Vec::new(),
            what: None,
        });
    }
    // egress under every liveness pattern: one packet per (source class,
    // family, rule) — within one, the decision depends on the rule alone
    let mut firsts: BTreeMap<(Option<ClassId>, bool, Option<u32>), Case> = BTreeMap::new();
    for c in &out {
        if let (Some(s), Action::Egress(_), None) = (c.src, c.expected.action, c.what) {
            firsts.entry((plan.class_of(s), s.is_ipv4(), c.expected.rule)).or_insert_with(|| c.clone());
        }
    }
    for down in health_patterns(plan) {
        let health = Health::with_down(down.iter().copied());
        for c in firsts.values() {
            let (Some(s), Some(d)) = (c.src, c.dst) else { continue };
            out.push(Case { expected: expected(&index, rules, s, d, &health), down: down.clone(), ..c.clone() });
        }
    }
    out
}

/// A classifier outcome in plan terms.
fn observed_effect(out: &RunOutcome) -> Result<Effect, String> {
    let r0 = out.r0 as i32;
    let e = &out.effects;
    let describe = || {
        format!(
            "r0 {r0}, tunnel key {:?}, redirect {:?}, tail call {:?}",
            e.tunnel_key.as_ref().map(|t| (&t.key.remote, t.key.tunnel_id, t.key.ttl, t.flags)),
            e.redirect.as_ref().map(|r| (r.ifindex, r.flags)),
            e.tail_call.as_ref().map(|t| (&t.map, t.index))
        )
    };
    match r0 {
        -1 if e.tunnel_key.is_none() && e.redirect.is_none() && e.tail_call.is_none() => Ok(Effect::Pass),
        2 if e.redirect.is_none() => match &e.tail_call {
            Some(t) if t.map == tables::GW_PROGS && t.index == 0 && t.target.is_none() => {
                Ok(Effect::LocalEgress { slot: SlotId(out.skb.cb[0]) })
            }
            None if e.tunnel_key.is_none() => Ok(Effect::Drop(DropReason::NoGateway)),
            _ => Err(describe()),
        },
        7 => {
            let (Some(t), Some(r)) = (&e.tunnel_key, &e.redirect) else { return Err(describe()) };
            // the key's family is the gateway's underlay family: IPv4 with no
            // flags, or a real IPv6 address (never IPv4 mapped) with
            // BPF_F_TUNINFO_IPV6
            let family_ok = match t.key.remote {
                IpAddr::V4(_) => t.flags == 0,
                IpAddr::V6(a) => t.flags == BPF_F_TUNINFO_IPV6 as u64 && a.to_ipv4_mapped().is_none(),
            };
            if family_ok && r.ifindex == CHECK_IFINDEX && r.flags == 0 && t.key.ttl == 64 && e.tail_call.is_none() {
                Ok(Effect::Redirect { gateway: t.key.remote, slot: SlotId(t.key.tunnel_id) })
            } else {
                Err(describe())
            }
        }
        _ => Err(describe()),
    }
}

/// Makes `egret_gw_live` in `store` hold exactly `down` (each with the down
/// flag) and `egret_gw_down` their number, as the agent keeps them.
fn set_liveness(store: &mut MapStore, current: &mut Vec<IpAddr>, down: &[IpAddr]) -> Result<(), EquivError> {
    if current.as_slice() == down {
        return Ok(());
    }
    let problem = |e: String| EquivError::MapImage { map: tables::GW_LIVE.into(), problem: e };
    for g in current.iter() {
        let key = GatewayLive { gateway: *g, down: true }.key();
        store.delete(tables::GW_LIVE, &key).map_err(|e| problem(e.to_string()))?;
    }
    for g in down {
        let entry = GatewayLive { gateway: *g, down: true };
        store.update(tables::GW_LIVE, &entry.key(), &entry.value(), 0).map_err(|e| problem(e.to_string()))?;
    }
    let count = GatewaysDown { count: down.len() as u32 };
    store.update(tables::GW_DOWN, &GatewaysDown::KEY, &count.value(), 0).map_err(|e| problem(e.to_string()))?;
    *current = down.to_vec();
    Ok(())
}

fn counter(maps: &MapStore, map: &str, index: u32) -> Counter {
    let mut total = Counter::default();
    if let Ok(Some(per_cpu)) = maps.lookup_percpu(map, &index.to_le_bytes()) {
        for v in per_cpu {
            if let Some(c) = Counter::from_bytes(&v) {
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
        }
    }
    total
}

/// How many packets are also compared with `eval::decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOptions {
    /// `None` (the default): every packet from a source the reference can
    /// judge. `Some(n)`: at most `n`, chosen deterministically: first one per
    /// (class, family, plan outcome), then evenly spread over the rest (every
    /// packet is still compared with the plan).
    pub reference_limit: Option<usize>,
}

/// Checks an artifact against a plan and, when given, the world (every
/// packet compared with `eval::decide` too).
///
/// # Errors
/// The first failure, with its counterexample packet where there is one.
pub fn check(artifact: Artifact, plan: &Verified<Plan>, world: Option<&World>) -> Result<VerifiedArtifact, EquivError> {
    check_with(artifact, plan, world, &CheckOptions::default())
}

/// [`check`] with options.
///
/// # Errors
/// See [`check`].
pub fn check_with(
    artifact: Artifact,
    plan: &Verified<Plan>,
    world: Option<&World>,
    options: &CheckOptions,
) -> Result<VerifiedArtifact, EquivError> {
    check_plan(artifact, plan, world, options)
}

/// Which cases are compared with the reference, within the limit.
fn reference_selection(plan: &Plan, all: &[Case], limit: Option<usize>) -> Vec<bool> {
    let eligible: Vec<usize> = (0..all.len()).filter(|i| all[*i].reference).collect();
    let mut chosen = vec![false; all.len()];
    let Some(limit) = limit.filter(|l| *l < eligible.len()) else {
        for i in eligible {
            chosen[i] = true;
        }
        return chosen;
    };
    let mut seen = BTreeSet::new();
    let mut first: Vec<usize> = Vec::new();
    let mut rest: Vec<usize> = Vec::new();
    for i in eligible {
        let c = &all[i];
        let key = (
            c.src.and_then(|s| plan.class_of(s)),
            c.src.map(|s| s.is_ipv4()),
            c.expected.reason,
            c.expected.rule,
            c.down.clone(),
        );
        if seen.insert(key) { first.push(i) } else { rest.push(i) }
    }
    let spread = |v: &[usize], n: usize| -> Vec<usize> {
        if n >= v.len() {
            return v.to_vec();
        }
        (0..n).map(|k| v[k * v.len() / n]).collect()
    };
    let take_first = spread(&first, limit);
    let remaining = limit - take_first.len();
    for i in take_first.into_iter().chain(spread(&rest, remaining)) {
        chosen[i] = true;
    }
    chosen
}

/// [`check`] for a plan whose invariants the caller vouches for.
fn check_plan(
    artifact: Artifact,
    plan: &Plan,
    world: Option<&World>,
    options: &CheckOptions,
) -> Result<VerifiedArtifact, EquivError> {
    artifact.check().map_err(|source| EquivError::Artifact { source })?;
    let parsed = elf::read_object(&artifact.object).map_err(|source| EquivError::Object { source })?;
    let program =
        parsed.program(PROGRAM).cloned().ok_or_else(|| EquivError::MissingProgram { name: PROGRAM.into() })?;
    let verified = verifier::verify(&program, &parsed.maps)
        .map_err(|source| EquivError::Static { program: PROGRAM.into(), source })?;
    let mut verifier_insns = verified.stats().processed_insns;
    // a node's complete artifact also holds the gateway templates: the same static checks
    for other in parsed.programs.iter().map(|p| &p.program).filter(|p| p.name != PROGRAM) {
        let v = verifier::verify(other, &parsed.maps)
            .map_err(|source| EquivError::Static { program: other.name.clone(), source })?;
        verifier_insns += v.stats().processed_insns;
    }
    // the images must describe exactly the object's maps
    artifact::check_images(&artifact.manifest.maps, &parsed.maps).map_err(|e| {
        let map = match &e {
            artifact::ImageMismatch::Unknown { map }
            | artifact::ImageMismatch::Missing { map }
            | artifact::ImageMismatch::Field { map, .. } => map.clone(),
        };
        EquivError::MapImage { map, problem: e.to_string() }
    })?;
    let mut store = MapStore::new(&parsed.maps);
    for img in &artifact.manifest.maps {
        let entries = img.decoded().map_err(|source| EquivError::Artifact { source })?;
        for (k, v) in entries {
            store
                .update(&img.name, &k, &v, 0)
                .map_err(|e| EquivError::MapImage { map: img.name.clone(), problem: e.to_string() })?;
        }
    }
    let image_cuts = image_cuts(&artifact)?;
    let mut program = program;
    program.fill_hole(HOLE_TUNNEL_IFINDEX, i64::from(CHECK_IFINDEX)).map_err(|source| EquivError::Hole { source })?;
    let mss_clamp = match mss::from_holes(&artifact.manifest.holes) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(detail)) => return Err(EquivError::MssHoles { detail }),
    };
    if let Some(c) = mss_clamp {
        for (hole, value) in [(mss::HOLE_MSS_V4, c.v4), (mss::HOLE_MSS_V6, c.v6)] {
            program.fill_hole(hole, i64::from(value)).map_err(|source| EquivError::Hole { source })?;
        }
    }
    if let Some(h) = program.holes.first() {
        return Err(EquivError::MssHoles {
            detail: format!("the program has hole %{} and the manifest no value for it", h.name),
        });
    }
    let layout = tables::layout_of(parsed.maps.iter().map(|m| m.name.as_str()));
    let rules = partition::rules(plan);
    // counter labels must be the plan's (policies aside)
    let want = tables::counter_labels(plan, &rules, &BTreeMap::new());
    let have: Vec<_> = artifact
        .manifest
        .counters
        .iter()
        .map(|m| {
            let mut m = m.clone();
            for l in &mut m.labels {
                l.policies.clear();
            }
            m
        })
        .collect();
    if have != want {
        let detail = format!("manifest has {} counter maps / plan needs {}", have.len(), want.len());
        return Err(EquivError::Labels { detail });
    }

    let all = cases(plan, &rules, layout, &image_cuts, world);
    let plan_index = plan.lookup_index();
    let reference = reference_selection(plan, &all, options.reference_limit);
    let prepared = interp::prepare(&program, &store).map_err(|source| EquivError::Fault {
        at: Box::new(Counterexample { packet: String::new(), flow: "preparing the program".into() }),
        source,
    })?;
    let mut report = Report { verifier_insns, programs: parsed.programs.len(), mss_clamp, ..Report::default() };
    report.class_families = plan.classes.iter().map(|c| class_families(plan, c.id).len()).sum();
    let mut reason_totals = vec![Counter::default(); Reason::ALL.len()];
    let mut live_now: Vec<IpAddr> = Vec::new();
    let mut rule_totals = vec![Counter::default(); rules.rules.len()];
    let mut attribution: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut reference_evaluator = world.map(eval::Reference::new);
    for (n, case) in all.iter().enumerate() {
        let at = || case.counterexample();
        set_liveness(&mut store, &mut live_now, &case.down)?;
        report.liveness_cases += usize::from(!case.down.is_empty());
        let out = prepared
            .run(&mut store, &RunInput::for_frame(&case.frame))
            .map_err(|source| EquivError::Fault { at: at(), source })?;
        report.cases += 1;
        report.insns += out.insns;
        let exp = case.expected;
        let got = observed_effect(&out);
        let expected_text = format!("{} ({}, return {})", exp.effect, exp.reason.name(), exp.return_code());
        let got_text = match &got {
            Ok(a) => format!("{a} (return {})", out.r0 as i32),
            Err(d) => format!("an unexpected outcome: {d}"),
        };
        if got.as_ref().ok() != Some(&exp.effect) || out.r0 as i32 != exp.return_code() {
            return Err(EquivError::Mismatch { at: at(), program: got_text, plan: expected_text });
        }
        // the frame: MSS clamped on redirects, untouched otherwise
        let want_frame = match (exp.effect, mss_clamp) {
            (Effect::Redirect { gateway, .. }, Some(c)) => mss::clamped(&case.frame, c, gateway.is_ipv6()),
            _ => case.frame.clone(),
        };
        if out.packet != want_frame {
            return Err(EquivError::Frame { at: at(), found: hex(&out.packet), expected: hex(&want_frame) });
        }
        if want_frame != case.frame {
            if mss::tcp_checksum_ok(&out.packet) != Some(true) {
                return Err(EquivError::Checksum { at: at() });
            }
            report.mss_clamped += 1;
        }
        if let (Some(s), Some(d)) = (case.src, case.dst) {
            let lookup = plan_index.lookup(s, d);
            if lookup != exp.action {
                return Err(EquivError::Mismatch {
                    at: at(),
                    program: got_text,
                    plan: format!("{lookup} (plan.lookup)"),
                });
            }
            if reference[n]
                && let Some(r) = reference_evaluator.as_mut()
            {
                let decision = r.decide_with(Source::Ip(s), d, &case.health());
                report.reference_checks += 1;
                if decision.verdict.effect() != exp.effect {
                    return Err(EquivError::Reference {
                        at: at(),
                        program: got_text,
                        reference: format!("{} ({:?})", decision.verdict.effect(), decision.verdict),
                    });
                }
                if let (Some(k), Some(winner)) = (exp.rule, decision.winner) {
                    attribution.entry(k).or_default().insert(winner.policy);
                }
            }
        }
        // counters
        let len = case.frame.len() as u64;
        let idx = exp.reason.index() as usize;
        reason_totals[idx].packets += 1;
        reason_totals[idx].bytes += len;
        let found = counter(&store, tables::REASONS, exp.reason.index());
        if found != reason_totals[idx] {
            return Err(counter_error(
                case,
                tables::REASONS,
                exp.reason.index(),
                exp.reason.name().into(),
                found,
                reason_totals[idx],
            ));
        }
        if let Some(k) = exp.rule
            && let Some(t) = rule_totals.get_mut(k as usize)
        {
            t.packets += 1;
            t.bytes += len;
            let found = counter(&store, tables::POLICY_STATS, k);
            if found != *t {
                let name = tables::rule_label(plan, &rules, k);
                return Err(counter_error(case, tables::POLICY_STATS, k, name, found, *t));
            }
        }
    }
    // totals of every counter (catches a bump of an unexpected index)
    let totals = Reason::COUNTED
        .iter()
        .map(|r| (tables::REASONS, r.index(), reason_totals[r.index() as usize], r.name().to_string()))
        .chain(
            rule_totals
                .iter()
                .enumerate()
                .map(|(k, t)| (tables::POLICY_STATS, k as u32, *t, tables::rule_label(plan, &rules, k as u32))),
        );
    for (map, k, want, name) in totals {
        let found = counter(&store, map, k);
        if found != want {
            let culprit = find_culprit(&prepared, &parsed.maps, &artifact, &all, map, k);
            let mut e = counter_error(culprit.unwrap_or(&all[0]), map, k, name, found, want);
            if culprit.is_none()
                && let EquivError::Counter { at, .. } = &mut e
            {
                **at = Counterexample { packet: "(not found by replay)".into(), flow: "totals".into() };
            }
            return Err(e);
        }
    }
    let artifact = if world.is_some() {
        artifact.with_counters(tables::counter_labels(plan, &rules, &attribution))
    } else {
        artifact
    };
    Ok(VerifiedArtifact { artifact, layout, report, program: verified.into_program() })
}

/// The prefixes per class of the artifact's `egret_dst_*` images.
fn image_cuts(artifact: &Artifact) -> Result<BTreeMap<u32, Vec<Cidr>>, EquivError> {
    let mut cuts: BTreeMap<u32, Vec<Cidr>> = BTreeMap::new();
    for img in artifact.manifest.maps.iter().filter(|m| m.name == tables::DST_V4 || m.name == tables::DST_V6) {
        for (k, _) in img.decoded().map_err(|source| EquivError::Artifact { source })? {
            match tables::parse_dst_key(&k) {
                Some((class, prefix)) => cuts.entry(class).or_default().push(prefix),
                None => {
                    return Err(EquivError::MapImage {
                        map: img.name.clone(),
                        problem: format!("bad key {}", hex(&k)),
                    });
                }
            }
        }
    }
    Ok(cuts)
}

/// The packets [`check`] runs for an artifact (for replaying them
/// elsewhere, e.g. with `BPF_PROG_TEST_RUN`).
///
/// # Errors
/// Undecodable map images.
pub fn artifact_cases(artifact: &Artifact, plan: &Plan, world: Option<&World>) -> Result<Vec<Case>, EquivError> {
    let layout = tables::layout_of(artifact.manifest.maps.iter().map(|m| m.name.as_str()));
    Ok(cases(plan, &partition::rules(plan), layout, &image_cuts(artifact)?, world))
}

fn counter_error(case: &Case, map: &str, index: u32, name: String, found: Counter, want: Counter) -> EquivError {
    EquivError::Counter {
        at: case.counterexample(),
        map: map.into(),
        index,
        name,
        found: format!("{} packets / {} bytes", found.packets, found.bytes),
        expected: format!("{} packets / {} bytes", want.packets, want.bytes),
    }
}

/// Replays the cases on fresh maps until counter `map[k]` moves when it
/// should not.
fn find_culprit<'a>(
    program: &interp::Prepared,
    defs: &[MapDef],
    artifact: &Artifact,
    all: &'a [Case],
    map: &str,
    k: u32,
) -> Option<&'a Case> {
    let mut store = MapStore::new(defs);
    for img in &artifact.manifest.maps {
        for (key, v) in img.decoded().ok()? {
            store.update(&img.name, &key, &v, 0).ok()?;
        }
    }
    let mut before = counter(&store, map, k);
    let mut live_now = Vec::new();
    for c in all {
        set_liveness(&mut store, &mut live_now, &c.down).ok()?;
        program.run(&mut store, &RunInput::for_frame(&c.frame)).ok()?;
        let after = counter(&store, map, k);
        let expected = if map == tables::REASONS { c.expected.reason.index() == k } else { c.expected.rule == Some(k) };
        if after != before && !expected {
            return Some(c);
        }
        before = after;
    }
    None
}

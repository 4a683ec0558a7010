//! `egret-bench layouts` (privileged): the inline layout against the maps
//! layout on the same plans of increasing size, measured in the kernel with
//! `BPF_PROG_TEST_RUN`.
//!
//! Plans are synthetic (seeded, deterministic): 4 classes with 4 endpoints
//! each, cluster-internal 10.0.0.0/8 and 192.0.2.0/24 (IPv6: fd00::/8), and
//! per class N/4 nested and disjoint prefixes (/12–/28, IPv6 /44–/60)
//! outside them with a mix of redirect, drop, local-egress and pass
//! actions. For every size and layout: the program is generated, statically
//! verified and equivalence-checked, loaded (kernel verifier, load time
//! measured), and 8 packets from an endpoint of class 0 to destinations
//! spread over its table are run with `repeat` each; a trial is the mean of
//! the 8 kernel-reported per-run durations, and the figure is the median of
//! the trials.

use crate::report::Table;
use egret_compiler::codegen::{self, Layout, Options, partition};
use egret_compiler::ir::prefix::prefix_order;
use egret_compiler::ir::{Action, DropReason, Entry, GatewayDecl, SlotDecl};
use egret_compiler::plan::{self, ClassId, ClassTable, EndpointEntry, Plan, Verified};
use egret_compiler::resolve::{EgressSpec, InterfaceBinding, SlotId};
use egret_lang::net::{Cidr, Family, prefix_mask, u128_to_ip};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

const CLASSES: u32 = 4;
const ENDPOINTS_PER_CLASS: u32 = 4;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The synthetic plan with `entries_per_class` entries per class.
#[must_use]
pub fn synthetic_plan(entries_per_class: usize, family: Family, seed: u64) -> Verified<Plan> {
    let mut r = Rng(seed);
    let gw = Ipv4Addr::new(192, 0, 2, 100);
    let slot = SlotId(0x00ab_cdef);
    let local = SlotId(0x0012_3456);
    let internal: Vec<Cidr> = match family {
        Family::V4 => vec!["10.0.0.0/8".parse(), "192.0.2.0/24".parse()],
        Family::V6 => vec!["fd00::/8".parse()],
    }
    .into_iter()
    .map(|c: Result<Cidr, _>| c.expect("literal"))
    .collect();
    let mut endpoints = Vec::new();
    for c in 0..CLASSES {
        for e in 0..ENDPOINTS_PER_CLASS {
            let n = c * ENDPOINTS_PER_CLASS + e;
            let ip = match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::new(10, 1, (n / 200) as u8, (n % 200 + 2) as u8)),
                Family::V6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, n as u16 + 2)),
            };
            endpoints.push(EndpointEntry { ip, class: ClassId(c), endpoint: format!("bench/pod-{n}") });
        }
    }
    endpoints.sort_by_key(|e| e.ip);
    let mut classes = Vec::new();
    for c in 0..CLASSES {
        let mut prefixes: Vec<Cidr> = Vec::new();
        while prefixes.len() < entries_per_class {
            let len = 12 + (r.next() % 17) as u8; // /12../28 (v6: /44../60 below)
            let len = if family == Family::V6 { len + 32 } else { len };
            let v: u128 = match family {
                Family::V4 => u128::from((r.next() as u32) | 0x2000_0000) & u128::from(u32::MAX),
                Family::V6 => (0x2001_0db8u128 << 96) | (u128::from(r.next()) << 32),
            };
            let mask = prefix_mask(family, len);
            let p = Cidr::new(u128_to_ip(family, v & mask), len);
            if internal.iter().any(|i| i.overlaps(&p)) || prefixes.contains(&p) {
                continue;
            }
            prefixes.push(p);
        }
        prefixes.sort_by(prefix_order);
        let entries = prefixes
            .into_iter()
            .map(|prefix| {
                let action = match r.next() % 8 {
                    0 => Action::Drop(DropReason::NoGateway),
                    1 => Action::Pass,
                    2 => Action::local_egress(Ipv4Addr::new(192, 0, 2, 1).into(), local),
                    _ => Action::redirect(gw.into(), slot),
                };
                Entry { prefix, action }
            })
            .collect();
        classes.push(ClassTable { id: ClassId(c), entries });
    }
    let p = Plan {
        node: "bench".into(),
        node_ip: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
        internal,
        gateways: vec![GatewayDecl { node: "gw".into(), ip: gw.into() }],
        slots: vec![SlotDecl {
            id: local,
            gateway: "bench".into(),
            spec: EgressSpec::DefaultRoute,
            v4: None,
            v6: None,
            interface: InterfaceBinding::LateBound { spec: EgressSpec::DefaultRoute },
            floating: None,
        }],
        endpoints,
        classes,
        gateway_tables: Vec::new(),
    };
    plan::verify::verify(p).unwrap_or_else(|v| unreachable!("synthetic plan invalid: {v:?}"))
}

/// 8 destinations spread over class 0's intervals, from its first endpoint.
fn packets(plan: &Plan, family: Family) -> Vec<Vec<u8>> {
    let rules = partition::rules(plan);
    let iv = partition::partition(plan, &rules, ClassId(0), family);
    let src = plan.endpoints.iter().find(|e| e.class == ClassId(0)).map(|e| e.ip).expect("endpoint");
    (0..8)
        .map(|i| {
            let x = &iv[(i * iv.len() / 8 + iv.len() / 16).min(iv.len() - 1)];
            let dst = u128_to_ip(family, x.lo + (x.hi - x.lo) / 2);
            codegen::equiv::ip_frame(src, dst, false)
        })
        .collect()
}

/// The kernel verifier's processed-instruction count of the loaded
/// classifier (`bpf_prog_info.verified_insns`, kernel ≥ 5.16), "?" if the
/// kernel does not report it.
fn kernel_processed(bpf: &aya::Ebpf) -> anyhow::Result<String> {
    let prog: &aya::programs::SchedClassifier =
        bpf.program(codegen::PROGRAM).ok_or_else(|| anyhow::anyhow!("no program"))?.try_into()?;
    Ok(prog.info()?.verified_instruction_count().map_or_else(|| "?".into(), |n| n.to_string()))
}

/// Runs the benchmark for one family.
///
/// # Errors
/// Loading or running a program that the checks accepted failed.
pub fn run(family: Family, trials: usize, repeat: u32) -> anyhow::Result<Vec<Table>> {
    run_sizes(family, trials, repeat, &SIZES)
}

/// Entries per class of the benchmark's plans, smallest first (16,384 per
/// class: ~28,000 IPv4 tree leaves, 65,536 prefixes).
pub const SIZES: [usize; 13] = [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];

/// [`run`] over the given entries per class only.
///
/// # Errors
/// Loading or running a program that the checks accepted failed.
pub fn run_sizes(family: Family, trials: usize, repeat: u32, sizes: &[usize]) -> anyhow::Result<Vec<Table>> {
    let mut t = Table::new(
        format!(
            "Classifier layouts, {}: {CLASSES} classes × {ENDPOINTS_PER_CLASS} endpoints; {trials} trials × 8 packets × repeat {repeat}",
            family.as_str()
        ),
        &[
            "tree leaves",
            "class entries",
            "inline ns/packet",
            "maps ns/packet",
            "inline insns",
            "maps insns",
            "inline load ms",
            "maps load ms",
            "inline kernel insns processed",
            "maps kernel insns processed",
        ],
    );
    let mut faster = Vec::new();
    for &per_class in sizes {
        let plan = synthetic_plan(per_class, family, 7 + per_class as u64);
        let rules = partition::rules(&plan);
        let leaves = partition::inline_size(&plan, &rules);
        let frames = packets(&plan, family);
        let mut ns = [f64::NAN; 2];
        let mut insns = ["—".to_string(), "—".to_string()];
        let mut load = ["—".to_string(), "—".to_string()];
        let mut processed = ["—".to_string(), "—".to_string()];
        for (i, layout) in [Layout::Inline, Layout::Maps].into_iter().enumerate() {
            let v = match codegen::verified_classifier(
                &plan,
                &Options { layout: Some(layout), ..Options::default() },
                None,
            ) {
                Ok(v) => v,
                Err(e) => {
                    let short: String = e.to_string().chars().take(160).collect();
                    eprintln!("  {leaves} leaves, {layout}: not generated: {short}…");
                    continue;
                }
            };
            insns[i] = v.program().insns.len().to_string();
            let a = v.artifact();
            let holes = codegen::equiv::hole_values(&a.manifest.holes, 1);
            let start = Instant::now();
            let mut bpf = crate::classify::load(&a.object, &a.manifest.maps, &holes, codegen::PROGRAM)?;
            load[i] = format!("{:.1}", start.elapsed().as_secs_f64() * 1e3);
            processed[i] = kernel_processed(&bpf)?;
            let mut per_trial = Vec::new();
            for _ in 0..trials.max(1) {
                per_trial.push(crate::classify::trial(&mut bpf, codegen::PROGRAM, &frames, repeat, None)?);
            }
            ns[i] = crate::classify::median(per_trial);
        }
        if ns[0] < ns[1] {
            faster.push(leaves);
        }
        let f = |x: f64| if x.is_nan() { "—".to_string() } else { format!("{x:.1}") };
        eprintln!("  {leaves} leaves: inline {} ns, maps {} ns", f(ns[0]), f(ns[1]));
        let [i0, i1] = insns;
        let [l0, l1] = load;
        let [p0, p1] = processed;
        t.row(vec![
            leaves.to_string(),
            plan.counts().class_entries.to_string(),
            f(ns[0]),
            f(ns[1]),
            i0,
            i1,
            l0,
            l1,
            p0,
            p1,
        ]);
    }
    eprintln!("inline is faster at {faster:?} leaves; INLINE_MAX_LEAVES = {}", codegen::INLINE_MAX_LEAVES);
    Ok(vec![t])
}

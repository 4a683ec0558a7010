//! Layout benchmark (privileged; a program, not a timed test): the inline
//! layout against the maps layout on the same plans of increasing size,
//! measured in the kernel with `BPF_PROG_TEST_RUN` (aya 0.14 `TestRun`).
//!
//! Plans are synthetic (seeded, deterministic): 4 classes with 4 endpoints
//! each, cluster-internal 10.0.0.0/8 and 192.0.2.0/24, and per class N/4
//! nested and disjoint prefixes (/12–/28) outside them with a mix of
//! redirect, drop, local-egress and pass actions. For every size and layout:
//! the program is generated, statically verified and equivalence-checked,
//! loaded (kernel verifier, load time measured), and 8 packets from an
//! endpoint of class 0 to destinations spread over its table are run with
//! `repeat` = 1,000,000 each; a trial is the mean of the 8 kernel-reported
//! per-run durations, and the figure is the median of 5 trials.
//!
//! Run: `cargo run --release -p egret-compiler --example bench_codegen_layouts [v4|v6] [trials] [repeat]`

#[path = "../tests/codegen_common/kernel.rs"]
mod kernel;

use egret_compiler::codegen::{self, Layout, Options, partition};
use egret_compiler::ir::prefix::prefix_order;
use egret_compiler::ir::{Action, DropReason, Entry, GatewayDecl, SlotDecl};
use egret_compiler::plan::{self, ClassId, ClassTable, EndpointEntry, Plan, Verified};
use egret_compiler::resolve::{EgressSpec, InterfaceBinding, SlotId};
use egret_lang::net::{Cidr, Family, prefix_mask, u128_to_ip};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

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

fn synthetic_plan(entries_per_class: usize, family: Family, seed: u64) -> Verified<Plan> {
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
                    2 => Action::LocalEgress { slot: local },
                    _ => Action::Redirect { gateway: gw, slot },
                };
                Entry { prefix, action }
            })
            .collect();
        classes.push(ClassTable { id: ClassId(c), entries });
    }
    let p = Plan {
        node: "bench".into(),
        node_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
        internal,
        gateways: vec![GatewayDecl { node: "gw".into(), ip: gw }],
        slots: vec![SlotDecl {
            id: local,
            gateway: "bench".into(),
            spec: EgressSpec::DefaultRoute,
            v4: None,
            v6: None,
            interface: InterfaceBinding::LateBound { spec: EgressSpec::DefaultRoute },
        }],
        endpoints,
        classes,
        gateway_tables: Vec::new(),
    };
    plan::verify::verify(p).unwrap_or_else(|v| panic!("synthetic plan invalid: {v:?}"))
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Row {
    leaves: usize,
    entries: usize,
    insns: [usize; 2],
    processed: [u64; 2],
    check: [Duration; 2],
    load: [Duration; 2],
    ns: [f64; 2],
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let family = if args.get(1).map(String::as_str) == Some("v6") { Family::V6 } else { Family::V4 };
    let trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let repeat: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    if let Some(why) = kernel::missing_privilege() {
        println!("bench_codegen_layouts needs root and bpf: {why}");
        return;
    }
    println!(
        "{} plans, {CLASSES} classes x {ENDPOINTS_PER_CLASS} endpoints; {trials} trials x 8 packets x repeat {repeat}",
        family.as_str()
    );
    let mut rows = Vec::new();
    for per_class in [1usize, 4, 16, 32, 64, 128, 256, 512, 1024, 2048] {
        let plan = synthetic_plan(per_class, family, 7 + per_class as u64);
        let rules = partition::rules(&plan);
        let leaves = partition::inline_size(&plan, &rules);
        let frames = packets(&plan, family);
        let mut row = Row {
            leaves,
            entries: plan.counts().class_entries,
            insns: [0; 2],
            processed: [0; 2],
            check: [Duration::ZERO; 2],
            load: [Duration::ZERO; 2],
            ns: [0.0; 2],
        };
        for (i, layout) in [Layout::Inline, Layout::Maps].into_iter().enumerate() {
            let t = Instant::now();
            let v = match codegen::compile(&plan, &Options { layout: Some(layout), ..Options::default() }, None) {
                Ok(v) => v,
                Err(e) => {
                    let e = e.to_string();
                    let short: String = e.chars().take(160).collect();
                    println!("  {leaves} leaves, {layout}: not generated: {short}…");
                    row.ns[i] = f64::NAN;
                    continue;
                }
            };
            row.check[i] = t.elapsed();
            row.insns[i] = v.program().insns.len();
            row.processed[i] = v.report().verifier_insns;
            let t = Instant::now();
            let mut k = match kernel::load(v.artifact()) {
                Ok(k) => k,
                Err(e) => {
                    println!("  {leaves} leaves, {layout}: kernel: {}", e.lines().next().unwrap_or_default());
                    row.ns[i] = f64::NAN;
                    continue;
                }
            };
            row.load[i] = t.elapsed();
            let mut per_trial = Vec::new();
            for _ in 0..trials {
                let mut sum = 0.0;
                for f in &frames {
                    let r = k.run(f, repeat).expect("test_run");
                    sum += r.duration.as_nanos() as f64;
                }
                per_trial.push(sum / frames.len() as f64);
            }
            row.ns[i] = median(per_trial);
        }
        println!(
            "  {:>6} leaves ({:>5} entries): inline {:>6.1} ns ({} insns, {} processed, load {:.1} ms, check {:.1} ms) | maps {:>6.1} ns ({} insns, load {:.1} ms, check {:.1} ms)",
            row.leaves,
            row.entries,
            row.ns[0],
            row.insns[0],
            row.processed[0],
            row.load[0].as_secs_f64() * 1e3,
            row.check[0].as_secs_f64() * 1e3,
            row.ns[1],
            row.insns[1],
            row.load[1].as_secs_f64() * 1e3,
            row.check[1].as_secs_f64() * 1e3
        );
        rows.push(row);
    }
    println!(
        "\n| tree leaves | class entries | inline ns/packet | maps ns/packet | inline insns | inline load ms | maps load ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} |",
            r.leaves,
            r.entries,
            r.ns[0],
            r.ns[1],
            r.insns[0],
            r.load[0].as_secs_f64() * 1e3,
            r.load[1].as_secs_f64() * 1e3
        );
    }
    let faster: Vec<usize> = rows.iter().filter(|r| r.ns[0] < r.ns[1]).map(|r| r.leaves).collect();
    println!("\ninline is faster at {faster:?} leaves; current INLINE_MAX_LEAVES = {}", codegen::INLINE_MAX_LEAVES);
}

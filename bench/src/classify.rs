//! Per-packet classification cost with `BPF_PROG_TEST_RUN` (privileged).
//!
//! For each rule set — one node hosting E endpoints selected by one policy with
//! P destination prefixes (distinct, non-adjacent /24s), gateway on another node — three
//! programs run the same packets in the same process, one after the other per
//! trial: egret's generated classifier (its automatic layout, or a forced one),
//! the Cilium-equivalent anchor ([`crate::cilium_dp`], its LPM trie filled from
//! the Cilium view of the node: E × P entries), and a pass-through program (the
//! floor: the cost of `BPF_PROG_TEST_RUN` itself). Packets go from endpoints to
//! addresses inside the prefixes (the redirect path, the same work after the
//! decision in both). A trial is the mean of the kernel's per-run duration over
//! the packets; a figure is the median over trials.

use crate::cilium_dp;
use aya::maps::HashMap as AyaHashMap;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egret_bpf::artifact::MapImage;
use egret_compiler::codegen::{self, Layout, tables};
use egret_compiler::planner::Planner;
use egret_compiler::resolve::{Options, World};
use egret_compiler::{cilium, synth};
use egret_lang::ast::{Bundle, GatewaySpec, Namespace, Node, Origin, Pod, Policy, SelectorItem};
use egret_lang::source::Span;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

const TUNNEL_IFINDEX: i64 = 1;
/// Cilium-side rule sets larger than this are not loaded (report says so).
pub const MAX_CILIUM_ENTRIES: usize = 2_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub prefixes: usize,
    pub endpoints: usize,
    pub packet: Packet,
    /// Whether egret's program clamps the MSS of redirected SYNs.
    pub mss_clamp: bool,
    pub egret_layout: String,
    pub egret_insns: usize,
    pub egret_ns: f64,
    pub cilium_entries: usize,
    pub cilium_ns: Option<f64>,
    pub floor_ns: f64,
    /// egret / Cilium-equivalent, measured in the same run.
    pub ratio: Option<f64>,
}

fn bundle(prefixes: usize, endpoints: usize) -> Bundle {
    let mut b = Bundle::default();
    for (i, name) in ["n1", "gw"].iter().enumerate() {
        let mut labels = synth::labels(&[]);
        if *name == "gw" {
            labels.insert("egress".into(), "true".into());
        }
        b.cluster.nodes.push(Node {
            span: Span::default(),
            name: synth::sp(name.to_string()),
            uid: String::new(),
            labels,
            internal_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8))],
            pod_cidrs: vec![synth::v4(10, i as u8, 0, 0, 16)],
            ready: Some(true),
        });
    }
    b.cluster.namespaces.push(Namespace {
        span: Span::default(),
        name: synth::sp("app".into()),
        labels: synth::labels(&[]),
    });
    for e in 0..endpoints {
        b.cluster.pods.push(Pod {
            span: Span::default(),
            namespace: "app".into(),
            name: synth::sp(format!("web-{e}")),
            uid: format!("uid-{e}"),
            labels: synth::labels(&[("app", "web".into())]),
            node_name: Some("n1".into()),
            host_network: false,
            pod_ips: vec![IpAddr::V4(endpoint_ip(e))],
            phase: Some("Running".into()),
        });
    }
    let dests = (0..prefixes).map(|i| synth::sp(prefix(i))).collect();
    b.policies.push(Policy {
        name: synth::sp("p".into()),
        uid: None,
        namespace: None,
        origin: Origin::Crd,
        span: Span::default(),
        spec_span: Span::default(),
        selectors: vec![SelectorItem {
            span: Span::default(),
            pod_selector: Some(synth::selector(&[("app", "web".into())])),
            namespace_selector: None,
            node_selector: None,
        }],
        destination_cidrs: dests,
        excluded_cidrs: Vec::new(),
        egress_gateway: Some(GatewaySpec {
            span: Span::default(),
            node_selector: synth::selector(&[("egress", "true".into())]),
            egress_ip: Some(synth::sp(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)))),
            interface: None,
            floating: None,
        }),
        egress_gateways: Vec::new(),
    });
    b
}

/// The i-th destination: every other /24 from 11.0.0.0, so that no two are
/// siblings egret's minimizer could merge (Cilium's layout cannot merge either).
pub fn prefix(i: usize) -> egret_lang::net::Cidr {
    let j = 2 * i;
    synth::v4(11 + (j / 65_536) as u8, ((j / 256) % 256) as u8, (j % 256) as u8, 0, 24)
}

/// The address of endpoint `e`.
pub fn endpoint_ip(e: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (e / 250) as u8, (e % 250 + 1) as u8)
}

/// What the measured packets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Packet {
    /// UDP datagrams (the figures of docs/PERFORMANCE.md before MSS clamping).
    Udp,
    /// TCP ACKs (an established connection's packets).
    TcpAck,
    /// TCP SYNs with MSS 1460: the first run clamps it, the repeats find it
    /// at the clamp (`BPF_PROG_TEST_RUN` reuses the packet), so this is the
    /// cost of the option walk, not of the rewrite.
    TcpSyn,
}

impl Packet {
    /// Parses `udp`, `tcp-ack`, `tcp-syn`.
    pub fn parse(s: &str) -> Option<Packet> {
        match s {
            "udp" => Some(Packet::Udp),
            "tcp-ack" => Some(Packet::TcpAck),
            "tcp-syn" => Some(Packet::TcpSyn),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Packet::Udp => "udp",
            Packet::TcpAck => "tcp-ack",
            Packet::TcpSyn => "tcp-syn",
        }
    }
}

/// The 8 packets of a measurement: endpoints spread, destinations spread
/// over the prefixes (inside them: the redirect path).
pub fn frames(endpoints: usize, prefixes: usize, packet: Packet) -> Vec<Vec<u8>> {
    use egret_compiler::codegen::mss::{Segment, mss_option, tcp_frame};
    (0..8)
        .map(|k| {
            let e = (k * 7919) % endpoints.max(1);
            let c = prefix((k * 104_729) % prefixes.max(1));
            let IpAddr::V4(net) = c.addr else { unreachable!("IPv4 prefixes") };
            let (src, dst) = (endpoint_ip(e), Ipv4Addr::from(u32::from(net) + 1 + k as u32));
            match packet {
                Packet::Udp => frame(src, dst),
                Packet::TcpAck => tcp_frame(
                    src.into(),
                    dst.into(),
                    false,
                    &Segment::syn(0x10, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
                ),
                Packet::TcpSyn => tcp_frame(src.into(), dst.into(), false, &Segment::syn(0x02, &mss_option(1460))),
            }
        })
        .collect()
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 22];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&(50u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f
}

fn arr<const N: usize>(b: &[u8]) -> anyhow::Result<[u8; N]> {
    b.try_into().map_err(|_| anyhow::anyhow!("expected {N} bytes, got {}", b.len()))
}

/// Loads an object, fills its maps from images, loads `program` through the verifier.
/// `holes`: values besides `%tunnel_ifindex` (egret's MSS clamp).
pub fn load(
    object: &[u8],
    images: &[MapImage],
    holes: &BTreeMap<String, i64>,
    program: &str,
) -> anyhow::Result<aya::Ebpf> {
    let mut values = BTreeMap::from([(codegen::HOLE_TUNNEL_IFINDEX.to_string(), TUNNEL_IFINDEX)]);
    values.extend(holes.iter().map(|(k, v)| (k.clone(), *v)));
    let object = egret_bpf::elf::fill_holes(object, &values)?;
    let mut bpf = aya::Ebpf::load(&object)?;
    const ACTION: usize = egret_bpf::layout::action_record::SIZE;
    for img in images {
        let entries = img.decoded()?;
        if entries.is_empty() {
            continue;
        }
        let map = bpf.map_mut(&img.name).ok_or_else(|| anyhow::anyhow!("no map {}", img.name))?;
        match img.name.as_str() {
            tables::DST_V4 => {
                let mut m: LpmTrie<_, [u8; 8], [u8; ACTION]> = LpmTrie::try_from(map)?;
                for (k, v) in entries {
                    m.insert(
                        &Key::new(u32::from_le_bytes(arr::<4>(&k[..4])?), arr::<8>(&k[4..])?),
                        arr::<ACTION>(&v)?,
                        0,
                    )?;
                }
            }
            tables::DST_V6 => {
                let mut m: LpmTrie<_, [u8; 20], [u8; ACTION]> = LpmTrie::try_from(map)?;
                for (k, v) in entries {
                    m.insert(
                        &Key::new(u32::from_le_bytes(arr::<4>(&k[..4])?), arr::<20>(&k[4..])?),
                        arr::<ACTION>(&v)?,
                        0,
                    )?;
                }
            }
            tables::CHOICES => {
                const N: usize = egret_bpf::choices::VALUE_SIZE as usize;
                let mut m: aya::maps::Array<_, [u8; N]> = aya::maps::Array::try_from(map)?;
                for (k, v) in entries {
                    m.set(u32::from_le_bytes(arr::<4>(&k)?), arr::<N>(&v)?, 0)?;
                }
            }
            crate::parts::SOURCE_HASH => {
                let mut m: AyaHashMap<_, [u8; 20], [u8; 4]> = AyaHashMap::try_from(map)?;
                for (k, v) in entries {
                    m.insert(arr::<20>(&k)?, arr::<4>(&v)?, 0)?;
                }
            }
            cilium_dp::POLICY_MAP => {
                let mut m: LpmTrie<_, [u8; 8], [u8; 8]> = LpmTrie::try_from(map)?;
                for (k, v) in entries {
                    m.insert(&Key::new(u32::from_le_bytes(arr::<4>(&k[..4])?), arr::<8>(&k[4..])?), arr::<8>(&v)?, 0)?;
                }
            }
            other => anyhow::bail!("no loader for the image of {other}"),
        }
    }
    let prog: &mut SchedClassifier =
        bpf.program_mut(program).ok_or_else(|| anyhow::anyhow!("no program {program}"))?.try_into()?;
    prog.load()?;
    Ok(bpf)
}

/// Mean kernel ns per run over the packets; with `want`, checks every run's return code.
pub fn trial(
    bpf: &mut aya::Ebpf,
    program: &str,
    frames: &[Vec<u8>],
    repeat: u32,
    want: Option<i32>,
) -> anyhow::Result<f64> {
    let prog: &mut SchedClassifier =
        bpf.program_mut(program).ok_or_else(|| anyhow::anyhow!("no program {program}"))?.try_into()?;
    let mut total = 0.0;
    for f in frames {
        let mut out = vec![0u8; f.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(f),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        anyhow::ensure!(
            want.is_none_or(|w| res.return_value as i32 == w),
            "{program}: returned {}, expected {want:?}",
            res.return_value as i32
        );
        total += res.duration.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const FLOOR: &str = "    r0 = -1\n    exit\n";

/// What [`measure`] compiles and runs besides the rule set's size.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// egret's layout (`None`: its automatic choice).
    pub layout: Option<Layout>,
    /// egret's MSS clamp (`None`: compiled without the clamping code).
    pub mss_clamp: Option<codegen::mss::MssClamp>,
    pub packet: Packet,
    pub trials: usize,
    pub repeat: u32,
}

pub fn measure(prefixes: usize, endpoints: usize, setup: &Setup) -> anyhow::Result<Row> {
    let Setup { layout, mss_clamp, packet, trials, repeat } = *setup;
    let b = bundle(prefixes, endpoints);
    let w = World::new(&b, &Options::default());
    let plan = Planner::new().plan_node(&w, "n1").map_err(|e| anyhow::anyhow!("{e}"))?;
    let art = codegen::verified_classifier(
        &plan,
        &codegen::Options { layout, reference_limit: Some(64), mss_clamp },
        Some(&w),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let egret_layout = format!("{:?}", art.layout()).to_lowercase();
    let egret_insns = art.program().insns.len();
    let a = art.artifact();
    let holes = codegen::equiv::hole_values(&a.manifest.holes, TUNNEL_IFINDEX);
    let mut egret = load(&a.object, &a.manifest.maps, &holes, codegen::PROGRAM)?;

    let view = cilium::view(&w, "n1").map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let cilium_entries = view.rows.len();
    let mut cil = if cilium_entries <= MAX_CILIUM_ENTRIES {
        let size = (cilium_entries as u32).max(cilium_dp::CILIUM_MAP_SIZE);
        let (program, maps) = cilium_dp::program_sized(size).map_err(|e| anyhow::anyhow!(e))?;
        let object = egret_bpf::elf::verify_and_write(&[program], &maps, "Dual MIT/GPL")?;
        Some(load(&object, &[cilium_dp::policy_map_image(&view, size)], &BTreeMap::new(), "cilium_equiv")?)
    } else {
        None
    };
    let floor_prog = egret_bpf::asm::assemble("floor", FLOOR).map_err(|e| anyhow::anyhow!("{e}"))?.program;
    let mut floor =
        load(&egret_bpf::elf::verify_and_write(&[floor_prog], &[], "Dual MIT/GPL")?, &[], &BTreeMap::new(), "floor")?;

    let frames = frames(endpoints, prefixes, packet);
    const TC_ACT_REDIRECT: i32 = 7;
    let (mut e_t, mut c_t, mut f_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        e_t.push(trial(&mut egret, codegen::PROGRAM, &frames, repeat, Some(TC_ACT_REDIRECT))?);
        if let Some(c) = cil.as_mut() {
            c_t.push(trial(c, "cilium_equiv", &frames, repeat, Some(TC_ACT_REDIRECT))?);
        }
        f_t.push(trial(&mut floor, "floor", &frames, repeat, Some(-1))?);
    }
    let egret_ns = median(e_t);
    let cilium_ns = (!c_t.is_empty()).then(|| median(c_t));
    Ok(Row {
        prefixes,
        endpoints,
        packet,
        mss_clamp: mss_clamp.is_some(),
        egret_layout,
        egret_insns,
        egret_ns,
        cilium_entries,
        cilium_ns,
        floor_ns: median(f_t),
        ratio: cilium_ns.map(|c| egret_ns / c),
    })
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| prefixes | endpoints | egret layout (insns) | egret ns/pkt | Cilium-equiv. entries | Cilium-equiv. ns/pkt | floor ns/pkt | egret ÷ Cilium |\n|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {:.1} | {} | {} | {:.1} | {} |\n",
            r.prefixes,
            r.endpoints,
            r.egret_layout,
            r.egret_insns,
            r.egret_ns,
            r.cilium_entries,
            r.cilium_ns.map_or("not loaded".to_string(), |c| format!("{c:.1}")),
            r.floor_ns,
            r.ratio.map_or("—".to_string(), |x| format!("{x:.2}×")),
        ));
    }
    s
}

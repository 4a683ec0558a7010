//! Where a classifier's nanoseconds go: the building blocks of egret's and
//! the Cilium-equivalent programs, each measured alone with
//! `BPF_PROG_TEST_RUN` on the packets of [`crate::classify`] (privileged).
//!
//! Every program parses Ethernet + IPv4 like the classifiers (bounds check,
//! source and destination loaded) and then does one thing: nothing, one or
//! two per-CPU counter updates, one lookup in a map of a given kind and size,
//! the tunnel key, the tunnel key and the redirect. A part's cost is its
//! figure minus the parse-only program's, measured in the same trial.
//! The trie is egret's `egret_dst_v4` (its key and value layout), so that
//! [`crate::classify::load`] fills it from an image, as it fills
//! [`SOURCE_HASH`] (the 20-byte `{addr[16], u32 family}` key of egret's
//! former source-class map).

use crate::classify::{self, frames, load, trial};
use egret_bpf::MapDef;
use egret_bpf::artifact::MapImage;
use egret_compiler::codegen::tables;
use serde::Serialize;

/// One building block's cost.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub name: String,
    /// Median ns per run of the whole program.
    pub ns: f64,
    /// Minus the parse-only program, same trials.
    pub over_parse_ns: f64,
}

const PARSE: &str = "
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 34
    if r4 > r3 goto out
    r8 = *(u32 *)(r2 + 26)
    r9 = *(u32 *)(r2 + 30)
";

const OUT: &str = "
out:
    r0 = -1
    exit
";

const COUNT: &str = "
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r2 = r10
    r2 += -4
    r1 = map[egret_reasons] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = *(u64 *)(r0 + 0)
    r1 += 1
    *(u64 *)(r0 + 0) = r1
";

const TUNNEL_KEY: &str = "
    r1 = 0
    *(u64 *)(r10 - 48) = r1
    *(u64 *)(r10 - 40) = r1
    *(u64 *)(r10 - 32) = r1
    *(u64 *)(r10 - 24) = r1
    *(u64 *)(r10 - 16) = r1
    *(u32 *)(r10 - 8) = r1
    r1 = 0x0a000001
    *(u32 *)(r10 - 44) = r1
    r1 = 64
    *(u8 *)(r10 - 27) = r1
    r1 = r6
    r2 = r10
    r2 += -48
    r3 = 44
    r4 = 0
    call skb_set_tunnel_key
";

const REDIRECT: &str = "
    r1 = 1
    r2 = 0
    call redirect
    exit
";

/// A hash map keyed like egret's former `egret_src_class`.
pub const SOURCE_HASH: &str = "bench_src_hash";
/// An array of 16-byte records.
const ARRAY: &str = "bench_array";

fn lookup(map: &str, key_setup: &str) -> String {
    format!(
        "{key_setup}\n    r2 = r10\n    r2 += -24\n    r1 = map[{map}] ll\n    call map_lookup_elem\n    if r0 == 0 goto out\n    r1 = *(u32 *)(r0 + 0)\n"
    )
}

const SRC_KEY_20: &str = "
    r1 = 0
    *(u64 *)(r10 - 24) = r1
    *(u64 *)(r10 - 16) = r1
    *(u32 *)(r10 - 24) = r8
    r1 = 4
    *(u32 *)(r10 - 8) = r1
";

/// The trie's value: the classifier's action record.
const ACTION: usize = egret_bpf::layout::action_record::SIZE;

const LPM_KEY_12: &str = "
    r1 = 64
    *(u32 *)(r10 - 24) = r1
    r1 = 0
    *(u32 *)(r10 - 20) = r1
    *(u32 *)(r10 - 16) = r9
";

const ARRAY_KEY: &str = "
    r1 = 0
    *(u32 *)(r10 - 24) = r1
";

/// The map declarations the programs use.
fn maps(hash_entries: usize, lpm_entries: usize) -> String {
    format!(
        ".map egret_reasons, percpu_array, key_size=4, value_size=16, max_entries=1\n\
         .map {}, hash, key_size=20, value_size=4, max_entries={}\n\
         .map {}, lpm_trie, key_size=12, value_size={}, max_entries={}, flags=1\n\
         .map {}, array, key_size=4, value_size=16, max_entries=1\n",
        SOURCE_HASH,
        hash_entries.max(1),
        tables::DST_V4,
        ACTION,
        lpm_entries.max(1),
        ARRAY
    )
}

/// Images of `defs`: the endpoints of [`classify`]'s packets in the hash,
/// the destination prefixes (class 0) in the trie.
fn images(defs: &[MapDef], endpoints: usize, prefixes: usize) -> Vec<MapImage> {
    let mut out = Vec::new();
    for d in defs {
        let mut img = MapImage::of(d);
        match d.name.as_str() {
            SOURCE_HASH => {
                for e in 0..endpoints {
                    let mut key = [0u8; 20];
                    key[..4].copy_from_slice(&classify::endpoint_ip(e).octets());
                    key[16] = 4;
                    img.push(&key, &0u32.to_le_bytes());
                }
            }
            tables::DST_V4 => {
                for i in 0..prefixes {
                    img.push(&tables::dst_key(0, &classify::prefix(i)), &[0; ACTION]);
                }
            }
            _ => continue,
        }
        out.push(img);
    }
    out
}

/// Measures every part for `endpoints` × `prefixes` (the sizes of the hash and the trie).
///
/// # Errors
/// Assembly, load or test-run failures.
pub fn measure(endpoints: usize, prefixes: usize, trials: usize, repeat: u32) -> anyhow::Result<Vec<Part>> {
    let programs: Vec<(String, String, i32)> = vec![
        ("parse only".into(), String::new(), -1),
        ("+ 1 per-CPU counter (PERCPU_ARRAY lookup + add)".into(), COUNT.into(), -1),
        ("+ 2 per-CPU counters".into(), format!("{COUNT}{COUNT}"), -1),
        ("+ ARRAY lookup".into(), lookup(ARRAY, ARRAY_KEY), -1),
        (format!("+ HASH lookup, 20-byte key, {endpoints} entries"), lookup(SOURCE_HASH, SRC_KEY_20), -1),
        (format!("+ LPM_TRIE lookup, 12-byte key, {prefixes} entries"), lookup(tables::DST_V4, LPM_KEY_12), -1),
        ("+ bpf_skb_set_tunnel_key".into(), TUNNEL_KEY.into(), -1),
        ("+ bpf_skb_set_tunnel_key + bpf_redirect".into(), format!("{TUNNEL_KEY}{REDIRECT}"), 7),
    ];
    let frames = frames(endpoints, prefixes, crate::classify::Packet::Udp);
    let mut loaded = Vec::new();
    for (i, (name, body, want)) in programs.iter().enumerate() {
        let source = format!("{}{PARSE}{body}{OUT}", maps(endpoints, prefixes));
        let prog = format!("part{i}");
        let asm = egret_bpf::asm::assemble(&prog, &source).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let images = images(&asm.maps, endpoints, prefixes);
        let object = egret_bpf::elf::verify_and_write(&[asm.program], &asm.maps, "Dual MIT/GPL")?;
        loaded.push((
            name.clone(),
            prog,
            load(&object, &images, &std::collections::BTreeMap::new(), &format!("part{i}"))?,
            *want,
        ));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); loaded.len()];
    let mut over: Vec<Vec<f64>> = vec![Vec::new(); loaded.len()];
    for _ in 0..trials {
        let mut this = Vec::new();
        for (_, prog, bpf, want) in &mut loaded {
            this.push(trial(bpf, prog, &frames, repeat, Some(*want))?);
        }
        for (i, t) in this.iter().enumerate() {
            times[i].push(*t);
            over[i].push(t - this[0]);
        }
    }
    Ok(loaded
        .iter()
        .zip(times.into_iter().zip(over))
        .map(|((name, ..), (t, o))| Part {
            name: name.clone(),
            ns: classify::median(t),
            over_parse_ns: classify::median(o),
        })
        .collect())
}

/// The parts as a Markdown table.
pub fn table(parts: &[Part]) -> String {
    let mut s = String::from("| program | ns/packet | over parse-only |\n|---|---:|---:|\n");
    for p in parts {
        s.push_str(&format!("| {} | {:.1} | {:.1} |\n", p.name, p.ns, p.over_parse_ns));
    }
    s
}

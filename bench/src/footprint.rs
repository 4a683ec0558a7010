//! Map footprint per node: egret's compiled layout against Cilium's.
//!
//! For each synthetic cluster shape ([`egret_compiler::synth`]) every node is
//! compiled and its classifier generated. egret's footprint on a node is what
//! that node's datapath holds: **entries** = the plan's table entries
//! (endpoint → class, class entries, internal prefixes, gateway entries;
//! in the inline layout they are compiled into code, in the maps layout they
//! are map entries), **bytes** = generated code (8 bytes per instruction slot)
//! plus every map image entry's key + value bytes, plus the gateway templates'
//! tables for the slots the node serves (an `egret_gw_allowed_v4` key and
//! value per allowed source, an `egret_gw_slots` key and value per slot, their
//! sizes from `egret_bpf::layout`). Cilium's layout holds one
//! entry per (selected pod IP, destination or excluded CIDR) of the whole
//! cluster on every node ([`egret_compiler::cilium::entry_count`]), a 12-byte
//! key and an 8-byte value each, in a map of 16,384 entries by default. Kernel
//! per-entry overhead (LPM trie nodes, hash buckets) is left out on both sides.

use egret_bpf::layout;
use egret_compiler::codegen;
use egret_compiler::planner::Planner;
use egret_compiler::resolve::{Options, World};
use egret_compiler::{cilium, synth};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub shape: &'static str,
    pub nodes: usize,
    pub pods: usize,
    pub policies: usize,
    pub egret_entries_median: usize,
    pub egret_entries_max: usize,
    pub egret_bytes_median: usize,
    pub egret_bytes_max: usize,
    pub egret_bytes_total: usize,
    pub cilium_entries_per_node: usize,
    pub cilium_bytes_per_node: usize,
    pub cilium_overflows_default_map: bool,
    /// Cilium bytes per node / egret median bytes per node.
    pub ratio_median: f64,
    /// Cilium bytes per node / egret bytes on the largest node.
    pub ratio_max: f64,
    pub seconds: f64,
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn measure(name: &'static str, shape: &synth::Shape) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let bundle = synth::bundle(shape);
    let world = World::new(&bundle, &Options::default());
    let plans = Planner::new().plan_all(&world).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut entries = Vec::with_capacity(plans.len());
    let mut bytes = Vec::with_capacity(plans.len());
    for plan in plans.values() {
        let g = codegen::generate(plan, &codegen::Options::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let code = g.program.insns.len() * 8;
        let maps: usize = g.images.iter().map(|m| m.entries.len() * (m.key_size + m.value_size) as usize).sum();
        let counts = plan.counts();
        // Gateway duty: the gateway templates' maps (`egret_bpf::layout`):
        // an `egret_gw_allowed_v4` key and value per allowed source (the
        // synthetic clusters are IPv4), an `egret_gw_slots` key and value
        // per slot. `codegen::generate` builds the classifier only, so they
        // are counted here.
        let gateway = counts.gateway_entries * (layout::allowed_key::SIZE + layout::allowed::SIZE)
            + counts.slots * (layout::slot::SIZE + layout::gw_slot::SIZE);
        entries.push(counts.total());
        bytes.push(code + maps + gateway);
    }
    let cilium_entries = cilium::entry_count(&world);
    let cilium_bytes = cilium_entries * crate::cilium_dp::ENTRY_BYTES;
    let em = median(bytes.clone());
    let ex = bytes.iter().copied().max().unwrap_or(0);
    Ok(Row {
        shape: name,
        nodes: shape.nodes,
        pods: shape.pods,
        policies: shape.policies,
        egret_entries_median: median(entries.clone()),
        egret_entries_max: entries.iter().copied().max().unwrap_or(0),
        egret_bytes_median: em,
        egret_bytes_max: ex,
        egret_bytes_total: bytes.iter().sum(),
        cilium_entries_per_node: cilium_entries,
        cilium_bytes_per_node: cilium_bytes,
        cilium_overflows_default_map: cilium_entries > crate::cilium_dp::CILIUM_MAP_SIZE as usize,
        ratio_median: cilium_bytes as f64 / em.max(1) as f64,
        ratio_max: cilium_bytes as f64 / ex.max(1) as f64,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| cluster | nodes | pods | policies | egret entries/node (median / max) | egret bytes/node (median / max) | Cilium entries/node | Cilium bytes/node | Cilium > 16,384? | Cilium ÷ egret bytes (median node / largest node) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {:.0}× / {:.1}× |\n",
            r.shape,
            r.nodes,
            r.pods,
            r.policies,
            r.egret_entries_median,
            r.egret_entries_max,
            r.egret_bytes_median,
            r.egret_bytes_max,
            r.cilium_entries_per_node,
            r.cilium_bytes_per_node,
            if r.cilium_overflows_default_map {
                format!("yes ({:.0}×)", r.cilium_entries_per_node as f64 / 16_384.0)
            } else {
                "no".to_string()
            },
            r.ratio_median,
            r.ratio_max
        ));
    }
    s
}

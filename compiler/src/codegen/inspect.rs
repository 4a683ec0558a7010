//! `egret inspect NODE.o`: the object's programs disassembled with map names,
//! holes and labels, its maps, and — when the manifest and the plan text sit
//! beside it — the map images and plan annotations (which class, interval
//! and rule each branch tests).
//!
//! Annotations are recovered by generating the classifier again from the
//! plan text, in the layout the object has, and used only if that program is
//! identical to the object's (same slots, map references and holes);
//! otherwise the listing says so and shows none.

use super::{Options, PROGRAM, generate_unchecked, tables};
use egret_bpf::artifact::Manifest;
use egret_bpf::disasm::{Dialect, slot_text};
use egret_bpf::elf::{self, ElfError, PROGRAM_SECTION};
use egret_bpf::insn::decode;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why an object cannot be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read the object: {source}")]
    Object {
        #[from]
        source: ElfError,
    },
}

/// The listing of an object; `manifest` and `plan` when available.
///
/// # Errors
/// An unreadable object.
pub fn inspect(
    object: &[u8],
    manifest: Option<&Manifest>,
    plan: Option<&crate::plan::Plan>,
) -> Result<String, InspectError> {
    let parsed = elf::read_object(object)?;
    let mut s = String::new();
    let _ = writeln!(s, "; license \"{}\"", parsed.license);
    if let Some(m) = manifest {
        let _ = writeln!(s, "; node {} (manifest {}, digest {})", m.node, m.format, m.digest);
    }
    let _ = writeln!(s, "; {} map(s)", parsed.maps.len());
    for d in &parsed.maps {
        let image = manifest.and_then(|m| m.maps.iter().find(|i| i.name == d.name));
        let entries = image.map_or_else(String::new, |i| format!(", image {} entries", i.entries.len()));
        let _ = writeln!(
            s,
            ";   {}: {} key {} value {} max_entries {} flags {}{entries}",
            d.name, d.kind, d.key_size, d.value_size, d.max_entries, d.flags
        );
        if let Some(img) = image.filter(|_| d.name == tables::DST_V4 || d.name == tables::DST_V6) {
            for (k, v) in img.decoded().unwrap_or_default() {
                if let Some((class, prefix)) = tables::parse_dst_key(&k) {
                    let action = match tables::ActionRecord::from_bytes(&v) {
                        Some(r) if r.rule == tables::NO_RULE => r.reason.name().to_string(),
                        Some(r) => format!("{} slot {} gateway {} rule {}", r.reason.name(), r.slot, r.gateway, r.rule),
                        None => format!("undecodable record {}", super::equiv::hex(&v)),
                    };
                    let _ = writeln!(s, ";     class {class} {prefix} -> {action}");
                }
            }
        }
    }
    if let Some(m) = manifest {
        for h in &m.holes {
            let _ = writeln!(s, "; hole %{}: {}", h.name, h.source);
        }
        for c in &m.counters {
            let _ = writeln!(s, "; counters {}: {} labels", c.map, c.labels.len());
        }
    }
    let layout = tables::layout_of(parsed.maps.iter().map(|m| m.name.as_str()));
    for op in &parsed.programs {
        let p = &op.program;
        let mut notes: BTreeMap<usize, String> = BTreeMap::new();
        let mut plan_line = String::new();
        if let Some(plan) = plan.filter(|_| p.name == PROGRAM) {
            match generate_unchecked(plan, &Options { layout: Some(layout), ..Options::default() }) {
                Ok(g)
                    if g.program.insns == p.insns
                        && g.program.map_relocs == p.map_relocs
                        && g.program.holes == p.holes =>
                {
                    notes = g.notes;
                    plan_line = format!("; annotated from the plan of node {} ({} layout)", plan.node, layout);
                }
                Ok(_) => {
                    plan_line = "; the plan beside the object does not generate this program: no annotations".into();
                }
                Err(e) => plan_line = format!("; cannot regenerate from the plan: {e}"),
            }
        }
        let _ = writeln!(s, "\n; program {} ({}), {} instructions", p.name, PROGRAM_SECTION, p.insns.len());
        for h in &p.holes {
            let _ = writeln!(s, "; hole %{} ({}) at insn {}", h.name, h.kind.name(), h.insn);
        }
        if !plan_line.is_empty() {
            let _ = writeln!(s, "{plan_line}");
        }
        let mut pc = 0;
        while pc < p.insns.len() {
            if let Some(l) = p.labels.get(&pc) {
                let _ = writeln!(s, "{l}:");
            }
            let n = decode(&p.insns, pc).map_or(1, |(_, n)| n);
            let text = slot_text(p, pc, Dialect::Llvm14Alu32).unwrap_or_else(|| "<undecodable>".into());
            match notes.get(&pc) {
                Some(note) => {
                    let _ = writeln!(s, "{pc:>6}:  {text:<44} ; {note}");
                }
                None => {
                    let _ = writeln!(s, "{pc:>6}:  {text}");
                }
            }
            pc += n;
        }
    }
    Ok(s)
}

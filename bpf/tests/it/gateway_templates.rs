//! The gateway templates as artifacts: each assembles, passes egret's static
//! verifier, disassembles to text that assembles to the identical program,
//! survives the ELF writer and reader, and agrees with the Rust side of its
//! layouts (constants, map definitions, holes).

use std::collections::BTreeMap;

use egret_bpf::artifact::AttachPoint;
use egret_bpf::disasm::{Dialect, to_asm};
use egret_bpf::elf::{PROGRAM_SECTION, read_object, verify_and_write};
use egret_bpf::templates::{self, FILES, Stat, Template};
use egret_bpf::verifier::verify;

#[test]
fn every_template_assembles_and_passes_the_static_verifier() {
    for t in Template::ALL {
        let a = t.assemble().unwrap_or_else(|e| panic!("{}: {e}", t.name()));
        assert_eq!(a.program.name, t.name());
        let v = verify(&a.program, &a.maps).unwrap_or_else(|e| panic!("{}: {e}", t.name()));
        let stats = v.stats();
        assert!(stats.exits > 0 && stats.processed_insns < 1_000_000);
        println!(
            "{}: {} slots, {} insns processed, {} states pruned, {} exits",
            t.name(),
            a.program.insns.len(),
            stats.processed_insns,
            stats.pruned_states,
            stats.exits
        );
    }
}

#[test]
fn disassembly_round_trips_to_identical_programs() {
    for t in Template::ALL {
        let a = t.assemble().expect("assembles");
        for dialect in [Dialect::Llvm14, Dialect::Llvm14Alu32] {
            let text = to_asm(&a.program, dialect);
            let b = egret_bpf::asm::assemble(t.name(), &text)
                .unwrap_or_else(|e| panic!("{} ({dialect:?}) re-assembles: {e}\n{text}", t.name()));
            assert_eq!(b.program.insns, a.program.insns, "{} ({dialect:?}): bytes", t.name());
            assert_eq!(b.program.map_relocs, a.program.map_relocs, "{}: map references", t.name());
            assert_eq!(b.program.holes, a.program.holes, "{}: holes", t.name());
        }
    }
}

#[test]
fn the_object_reads_back_with_every_program_map_and_hole() {
    let programs: Vec<_> = Template::ALL.iter().map(|t| t.assemble().expect("assembles").program).collect();
    let bytes = verify_and_write(&programs, &templates::maps(), "GPL").expect("verifies and writes");
    let parsed = read_object(&bytes).expect("reads back");
    assert_eq!(parsed.maps, templates::maps());
    for (t, p) in Template::ALL.iter().zip(&programs) {
        let obj = parsed.programs.iter().find(|q| q.program.name == t.name()).expect("program in the object");
        assert_eq!(obj.section, PROGRAM_SECTION);
        let back = &obj.program;
        assert_eq!(back.insns, p.insns, "{}", obj.section);
        assert_eq!(back.map_relocs, p.map_relocs);
        // a hole may occur more than once (the SNAT path of each family forwards)
        let holes: std::collections::BTreeSet<&str> = back.holes.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(holes, t.holes().iter().copied().collect(), "{}: holes", t.name());
    }
}

#[test]
fn templates_declare_exactly_the_layout_maps() {
    // the prelude (bpf/src/layout.rs) declares the maps; no `.s` file adds one
    for t in Template::ALL {
        let a = t.assemble().expect("assembles");
        assert_eq!(a.maps, templates::maps(), "{}: map declarations", t.name());
        for m in &a.maps {
            m.validate().expect("kernel-valid map");
        }
    }
    // every counter index fits the stats map and the names are unique labels
    let names: std::collections::BTreeSet<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), Stat::ALL.len());
    for (i, s) in Stat::ALL.iter().enumerate() {
        assert_eq!(s.index() as usize, i);
        assert!(s.index() < templates::STATS_MAX);
    }
    assert_eq!(Template::TunnelIn.attach(), Some(AttachPoint::TunnelIngress));
    assert_eq!(Template::GwReply.attach(), Some(AttachPoint::EgressIngress));
    assert_eq!(Template::GwLocal.attach(), None, "a tail-call target");
}

#[test]
fn the_test_prelude_changes_only_the_front_of_tunnel_in() {
    let shipped = Template::TunnelIn.assemble().expect("assembles").program;
    let keyed = egret_bpf::asm::assemble(
        "keyed",
        &templates::with_test_tunnel_key(Template::TunnelIn, 7, std::net::Ipv4Addr::new(192, 0, 2, 2).into()),
    )
    .expect("assembles")
    .program;
    let extra = keyed.insns.len() - shipped.insns.len();
    assert!(extra > 0);
    assert_eq!(&keyed.insns[extra..], &shipped.insns[..], "the shipped program follows unchanged");
    verify(&keyed, &templates::maps()).expect("the keyed variant verifies too");
}

#[test]
fn sources_are_commented_and_use_named_constants() {
    // every file opens with a comment, and the map/stat constants are used by name
    let mut bare_offsets: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, text) in FILES {
        assert!(text.trim_start().starts_with("//"), "{name} opens with a comment");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("r10 -") {
                *bare_offsets.entry(name).or_default() += 1;
            }
        }
    }
    assert!(bare_offsets.is_empty(), "stack slots by name (defs.s), not raw offsets: {bare_offsets:?}");
}

#[test]
fn the_stack_frame_slots_do_not_overlap() {
    let c = Template::GwReply.assemble().expect("assembles").constants;
    let slots: [(&str, i64); 23] = [
        ("FKEY", 16),
        ("RKEY", 16),
        ("RVAL", 32),
        ("FVAL", 32),
        ("NOW", 8),
        ("SLOT", 4),
        ("NODE", 4),
        ("ALLOWK", 8),
        ("EGRESS_IFINDEX", 4),
        ("SRC_FLAGS", 4),
        ("CSUM_OFF", 4),
        ("PORT_OFF", 4),
        ("L4_FLAGS", 4),
        ("TTL_OLD", 2),
        ("TTL_NEW", 2),
        ("TCP_FLAGS", 4),
        ("STATS_KEY", 4),
        ("DELIVER_IFINDEX", 4),
        ("NH", 20),
        ("TUNKEY", 44),
        ("PEERK", 8),
        ("SLOT_FLAGS", 4),
        ("REPLY_NODE", 4),
    ];
    let mut spans: Vec<(i64, i64, &str)> = slots
        .iter()
        .map(|(name, size)| {
            let off = c[*name];
            assert!(off >= -512 && off + size <= 0, "{name} inside the 512-byte stack");
            assert_eq!(off % size.min(&8), 0, "{name} aligned");
            (off, off + size, *name)
        })
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{} overlaps {}", w[0].2, w[1].2);
    }
}

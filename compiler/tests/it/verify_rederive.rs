//! `codegen::rederive`: an artifact is accepted only as egret generates it
//! for its plan. Every instruction flip, every map image, hole, attach point,
//! tail-call and label edit is a named difference, digest recomputed or not.

use crate::codegen_common::example_world;
use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource};
use egret_bpf::insn::insns_to_bytes;
use egret_bpf::templates;
use egret_compiler::codegen::rederive::{self, CheckOptions, Difference, Expected, NodeCheckError};
use egret_compiler::codegen::{self, mss};
use egret_compiler::driver::Driver;
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::World;

fn compiled(w: &World, node: &str) -> (Verified<Plan>, Artifact) {
    let options = codegen::Options { reference_limit: Some(64), ..codegen::Options::default() };
    let c = Driver::new(options).compile(w, node).expect("compiles");
    (c.plan, c.artifact.into_artifact())
}

/// The plan as `egret verify` reads it back from `NODE.plan.txt`.
fn read_back(plan: &Plan) -> Verified<Plan> {
    let parsed = codegen::plan_text::parse(&plan.to_text()).expect("plan text reads");
    egret_compiler::plan::verify::verify(parsed).expect("plan verifies")
}

fn differences(plan: &Verified<Plan>, found: &Artifact) -> Vec<Difference> {
    match Expected::derive(plan, found, None, None) {
        Ok(e) => e.compare(found),
        Err(rederive::RederiveError::Choice { difference }) => vec![*difference],
        Err(e) => panic!("cannot regenerate: {e}"),
    }
}

fn rendered(d: &[Difference]) -> String {
    d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn compiled_artifacts_equal_their_regeneration() {
    let w = example_world();
    for node in ["gateway-1", "worker-1", "worker-2"] {
        let (plan, a) = compiled(&w, node);
        let from_text = read_back(&plan);
        assert_eq!(differences(&from_text, &a), [], "{node}: against the plan text");
        // with the world: counters' policies and remote egress addresses too
        let e = Expected::derive(&plan, &a, Some(&w), Some(1500)).expect("derives");
        let e = e.with_counters(a.manifest.counters.clone());
        assert_eq!(e.compare(&a), [], "{node}: against the world");
        assert_eq!(e.artifact().object, a.object, "{node}: byte for byte");
    }
}

/// Where `program`'s instructions start in the object.
fn text_offset(object: &[u8], program: &egret_bpf::Program) -> usize {
    let bytes = insns_to_bytes(&program.insns);
    object.windows(bytes.len()).position(|w| w == bytes.as_slice()).expect("the program's text is in the object")
}

#[test]
fn every_instruction_flip_is_rejected_naming_program_and_instruction() {
    let w = example_world();
    let (plan, a) = compiled(&w, "worker-1");
    let plan = read_back(&plan);
    let expected = Expected::derive(&plan, &a, None, None).expect("derives");
    let parsed = egret_bpf::elf::read_object(&a.object).expect("parses");
    assert_eq!(parsed.programs.len(), 4, "the classifier and the three gateway templates");
    let mut flips = 0;
    for p in parsed.programs.iter().map(|p| &p.program) {
        let at = text_offset(&a.object, p);
        for i in 0..p.insns.len() {
            // a different byte and bit of each instruction slot, one at a time
            let mut t = a.clone();
            t.object[at + i * 8 + i % 8] ^= 1 << ((i / 8) % 8);
            let t = t.resealed();
            let d = expected.compare(&t);
            let named = d.iter().any(|d| match d {
                Difference::Instruction { program, index, expected, found } => {
                    program == &p.name && *index == i && expected != found
                }
                Difference::Object { .. } => true,
                _ => false,
            });
            assert!(named, "program {} instruction {i}: flip not named:\n{}", p.name, rendered(&d));
            flips += 1;
        }
    }
    assert!(flips > 1000, "{flips} flips");
    // the edit: egret_tunnel_in's common drop exit returns TC_ACT_OK instead of TC_ACT_SHOT
    let tunnel = parsed.program(templates::Template::TunnelIn.name()).expect("tunnel_in");
    let exit = (0..tunnel.insns.len())
        .rev()
        .find(|&i| tunnel.insns[i].code == 0xb7 && tunnel.insns[i].dst == 0 && tunnel.insns[i].imm == 2)
        .expect("r0 = 2");
    let mut t = a.clone();
    t.object[text_offset(&a.object, tunnel) + exit * 8 + 4] = 0;
    let d = expected.compare(&t.resealed());
    assert_eq!(
        d.first().map(ToString::to_string),
        Some(format!(
            "program `egret_tunnel_in`, instruction {exit}: expected `r0 = 2 [b700000002000000]`, found `r0 = 0 [b700000000000000]`"
        )),
        "{}",
        rendered(&d)
    );
    // a byte outside every program (the string table, BTF) is still a difference
    let mut t = a.clone();
    let last = t.object.len() - 1;
    t.object[last] ^= 0x20;
    assert!(!expected.compare(&t.resealed()).is_empty());
}

fn image<'a>(a: &'a mut Artifact, map: &str) -> &'a mut egret_bpf::artifact::MapImage {
    a.manifest.maps.iter_mut().find(|m| m.name == map).unwrap_or_else(|| panic!("image {map}"))
}

/// `hex` with the byte at `offset` replaced by `byte`.
fn set_byte(hex: &str, offset: usize, byte: u8) -> String {
    let mut s = hex.to_owned();
    s.replace_range(offset * 2..offset * 2 + 2, &format!("{byte:02x}"));
    s
}

#[test]
fn map_images_holes_attach_points_tail_calls_and_labels_are_compared() {
    let w = example_world();
    let (plan, a) = compiled(&w, "gateway-1");
    let plan = read_back(&plan);
    assert_eq!(differences(&plan, &a), []);
    type Edit = fn(&mut Artifact);
    let edits: [(&str, Edit, &str); 11] = [
        (
            "another egress IP",
            |a| {
                let e = &mut image(a, templates::map::GW_SLOTS).entries[0];
                let at = egret_bpf::layout::gw_slot::EGRESS_IP.offset;
                e.value = set_byte(&e.value, at, 0xcb);
            },
            "map image `egret_gw_slots`: entry 0: expected",
        ),
        (
            "an extra allowed source",
            |a| {
                let img = image(a, templates::map::GW_ALLOWED);
                let mut extra = img.entries[0].clone();
                extra.key = set_byte(&extra.key, extra.key.len() / 2 - 1, 0x99);
                img.entries.push(extra);
            },
            "map image `egret_gw_allowed_v4`: entry ",
        ),
        (
            "a source allowed from any node",
            |a| {
                let e = &mut image(a, templates::map::GW_ALLOWED).entries[0];
                e.value = "0".repeat(e.value.len());
            },
            "map image `egret_gw_allowed_v4`: entry 0: expected",
        ),
        (
            "tunnel_ifindex from eth0",
            |a| a.manifest.holes[0].source = HoleSource::Ifindex { link: "eth0".into() },
            "manifest holes: expected",
        ),
        (
            "MSS 9000 for IPv4",
            |a| {
                let h = a.manifest.holes.iter_mut().find(|h| h.name == mss::HOLE_MSS_V4).expect("mss hole");
                h.source = HoleSource::UnderlayMss { ipv6: false, default: 9000 };
            },
            "manifest MSS holes: expected 9000 (IPv4) / 8980 (IPv6) (underlay MTU 9090), found 9000 (IPv4) / 1390 (IPv6)",
        ),
        (
            "swapped attach points",
            |a| {
                a.manifest.programs[1].attach = Some(AttachPoint::EgressIngress);
                a.manifest.programs[2].attach = Some(AttachPoint::TunnelIngress);
            },
            "manifest programs: expected",
        ),
        (
            "an out-of-range tail call",
            |a| {
                let p = a.manifest.programs.iter_mut().find(|p| p.tail_call.is_some()).expect("tail call");
                if let Some(t) = p.tail_call.as_mut() {
                    t.index = 7;
                }
            },
            "manifest programs: expected",
        ),
        (
            "a renamed counter label",
            |a| a.manifest.counters[0].labels[0].name = "renamed".into(),
            "manifest counters[0]: expected",
        ),
        (
            "a state map more",
            |a| a.manifest.state.push(templates::map::GW_SLOTS.into()),
            "manifest state maps: expected",
        ),
        (
            "another decision",
            |a| {
                if let Some(d) = a.manifest.decisions.as_mut() {
                    d.internal.push("203.0.113.0/24".into());
                }
            },
            "manifest decisions: expected",
        ),
        ("another node", |a| a.manifest.node = "worker-1".into(), "manifest node: expected gateway-1, found worker-1"),
    ];
    for (what, edit, want) in edits {
        let mut t = a.clone();
        edit(&mut t);
        let d = differences(&plan, &t.resealed());
        let text = rendered(&d);
        assert!(text.contains(want), "{what}: `{want}` not in\n{text}");
    }
    // the same clamp for another underlay MTU than the caller names
    let e = Expected::derive(&plan, &a, None, Some(9000)).expect_err("MTU 9000 is not this artifact's");
    assert!(e.to_string().contains("underlay MTU 9000"), "{e}");
}

/// A fresh directory holding the example's artifacts, removed on drop.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn written(w: &World, name: &str, nodes: &[&str]) -> Dir {
    let dir = Dir(std::env::temp_dir().join(format!("egret-rederive-{}-{name}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("dir");
    let mut driver = Driver::new(codegen::Options { reference_limit: Some(64), ..codegen::Options::default() });
    for n in nodes {
        let c = driver.compile(w, n).expect("compiles");
        codegen::write(&dir.0, &c.artifact, &c.plan).expect("writes");
    }
    dir
}

#[test]
fn check_node_accounts_for_every_file_and_the_node_name() {
    let w = example_world();
    let dir = written(&w, "files", &["worker-1", "worker-2"]);
    let options = CheckOptions { reference_limit: Some(64), ..CheckOptions::default() };
    for n in ["worker-1", "worker-2"] {
        rederive::check_node(&dir.0, n, &options).expect("verifies");
        let with_world = CheckOptions { world: Some(&w), ..options };
        rederive::check_node(&dir.0, n, &with_world).expect("verifies against the cluster");
    }
    // worker-2's files copied over worker-1's: the names inside say so
    for ext in rederive::NODE_FILES {
        std::fs::copy(dir.0.join(format!("worker-2.{ext}")), dir.0.join(format!("worker-1.{ext}"))).expect("copy");
    }
    let e = rederive::check_node(&dir.0, "worker-1", &options).expect_err("copied");
    assert!(
        matches!(&e, NodeCheckError::NodeName { node, inside, .. } if node == "worker-1" && inside == "worker-2"),
        "{e}"
    );
    // an orphan object and plan text, without a manifest
    std::fs::remove_file(dir.0.join("worker-2.artifact.json")).expect("rm");
    let files = rederive::artifact_files(&dir.0).expect("lists");
    assert_eq!(files.get("worker-2").map(Vec::len), Some(2), "{files:?}");
    let e = rederive::check_node(&dir.0, "worker-2", &options).expect_err("no manifest");
    assert!(matches!(&e, NodeCheckError::MissingFile { path } if path.ends_with("worker-2.artifact.json")), "{e}");
}

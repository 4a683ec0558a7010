//! Throws mutated artifacts at the readers `egret verify`, `egret inspect`
//! and `egret-loader apply` use: the plan text parser, the manifest (JSON),
//! the ELF reader, and the re-derivation check (`codegen::rederive`).
//!
//! Bounded and seeded like `fuzz_lint` (`EGRET_FUZZ_SEED=N` replays a run);
//! the corpus is the artifact of `worker-1` compiled from `examples/` (in the
//! repository), mutated by byte flips, truncations, and line drops,
//! duplications and insertions. Every input must not panic, and a changed
//! object never compares equal to what egret generates (a manifest may change
//! only where the check does not look without a cluster: its digest, which
//! `Artifact::check` reads, or remote slots' addresses in the decision table).

use crate::codegen_common::example_world;
use crate::fuzz_lint::Rng;
use egret_bpf::artifact::{Artifact, Manifest};
use egret_compiler::codegen::{self, rederive::Expected};
use egret_compiler::driver::Driver;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Pieces inserted into text: the plan text's and JSON's own punctuation.
const PIECES: &[&str] = &[
    "slot ",
    " on ",
    "; floating among ",
    "(",
    ")",
    ", ",
    ": ",
    "::",
    "#",
    "0",
    "-",
    "{",
    "}",
    "\"",
    "[",
    "]",
    "\n",
    " ",
];

fn mutate_text(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(4) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let l = &mut lines[i];
                let at = (0..=l.len()).filter(|&k| l.is_char_boundary(k)).nth(rng.below(l.chars().count() + 1));
                l.insert_str(at.unwrap_or(0), PIECES[rng.below(PIECES.len())]);
            }
            _ => {
                let l = &mut lines[i];
                let keep = (0..=l.len()).filter(|&k| l.is_char_boundary(k)).nth(rng.below(l.chars().count() + 1));
                l.truncate(keep.unwrap_or(0));
            }
        }
        if lines.is_empty() {
            break;
        }
    }
    lines.join("\n") + "\n"
}

fn mutate_bytes(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if rng.below(8) == 0 {
        b.truncate(rng.below(b.len()));
        return b;
    }
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(b.len());
        b[i] ^= 1 << rng.below(8);
    }
    b
}

#[test]
fn mutated_artifacts_never_panic_and_never_compare_equal() {
    let seed: u64 = std::env::var("EGRET_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xa27_1fac7);
    let w = example_world();
    let options = codegen::Options { reference_limit: Some(16), ..codegen::Options::default() };
    let c = Driver::new(options).compile(&w, "worker-1").expect("compiles");
    let plan_text = c.plan.to_text();
    let original: Artifact = c.artifact.into_artifact();
    let expected = Expected::derive(&c.plan, &original, None, None).expect("derives");
    assert_eq!(expected.compare(&original), []);
    let manifest_json = serde_json::to_string_pretty(&original.manifest).expect("json");

    let mut rng = Rng(seed);
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures: Vec<String> = Vec::new();
    let (mut plans, mut parsed_plans, mut manifests, mut parsed_manifests, mut objects) = (0, 0, 0, 0, 0);
    for round in 0..1500 {
        match round % 3 {
            0 => {
                let text = mutate_text(&mut rng, &plan_text);
                plans += 1;
                let r = catch_unwind(|| {
                    codegen::plan_text::parse(&text)
                        .ok()
                        .and_then(|p| egret_compiler::plan::verify::verify(p).ok())
                        .map(|p| p.to_text())
                });
                match r {
                    Ok(Some(_)) => parsed_plans += 1,
                    Ok(None) => {}
                    Err(_) => failures.push(format!("plan text, round {round}:\n{text}")),
                }
            }
            1 => {
                let text = mutate_text(&mut rng, &manifest_json);
                manifests += 1;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let m: Manifest = serde_json::from_str(&text).ok()?;
                    let a = Artifact { object: original.object.clone(), manifest: m };
                    let _ = a.check();
                    Some(expected.compare(&a).len())
                }));
                match r {
                    Ok(Some(_)) => parsed_manifests += 1,
                    Ok(None) => {}
                    Err(_) => failures.push(format!("manifest, round {round}: panics:\n{text}")),
                }
            }
            _ => {
                let object = mutate_bytes(&mut rng, &original.object);
                objects += 1;
                let changed = object != original.object;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let _ = egret_bpf::elf::read_object(&object);
                    let a = Artifact { object: object.clone(), manifest: original.manifest.clone() };
                    expected.compare(&a).is_empty()
                }));
                match r {
                    Ok(true) if changed => failures.push(format!("object, round {round}: changed but equal")),
                    Ok(_) => {}
                    Err(_) => failures.push(format!("object, round {round}: panics")),
                }
            }
        }
    }
    std::panic::set_hook(prev_hook);
    assert!(failures.is_empty(), "seed {seed}: {} failures, first:\n{}", failures.len(), failures[0]);
    assert_eq!((plans, manifests, objects), (500, 500, 500));
    // the mutations reach past the first parse error often enough to test what follows it
    assert!(parsed_plans > 20 && parsed_manifests > 5, "{parsed_plans} plans and {parsed_manifests} manifests parsed");
}

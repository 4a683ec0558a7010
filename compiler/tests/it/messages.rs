//! Every run of the `egret` binary in this suite goes through [`run`], which
//! checks what it printed: an error line says each thing once (no cause
//! repeated inside the chain, issue #22: "insn 377 … cannot decode: insn 377
//! … cannot decode") and never shows Rust `Debug` output.

use std::process::{Command, Output};

/// Runs `c` and checks its error lines ([`check`]).
pub fn run(c: &mut Command) -> Output {
    let out = c.output().expect("run egret");
    for stream in [&out.stdout, &out.stderr] {
        check(&String::from_utf8_lossy(stream));
    }
    out
}

/// Panics on an error line (`error: …`, `FAILED …`) that repeats a part of
/// itself or prints `Debug` output.
pub fn check(text: &str) {
    for line in text.lines().filter(|l| l.starts_with("error: ") || l.starts_with("FAILED ")) {
        if let Some(r) = repeated(line) {
            panic!("error line repeats `{r}`:\n{line}");
        }
        for debug in ["Some(", "None)", "Error {", "Os {", "kind: "] {
            assert!(!line.contains(debug), "error line shows Debug output (`{debug}`):\n{line}");
        }
    }
}

/// A part of `line` (between `: `) of 12 or more characters that an earlier part already says.
fn repeated(line: &str) -> Option<&str> {
    let parts: Vec<&str> = line.split(": ").collect();
    (1..parts.len()).find_map(|j| {
        let p = parts[j].trim();
        (p.len() >= 12 && parts[..j].iter().any(|q| q.contains(p))).then_some(p)
    })
}

#[test]
fn the_check_catches_a_repeated_cause_and_passes_a_chain() {
    assert_eq!(repeated("error: insn 377 cannot decode: insn 377 cannot decode"), Some("insn 377 cannot decode"));
    assert_eq!(repeated("error: cannot read `a.yaml`: No such file or directory (os error 2)"), None);
    check("error: cannot read `a.yaml`: No such file or directory (os error 2)\nok");
    assert!(std::panic::catch_unwind(|| check("error: hole %x is Some(Constant { value: 1 })")).is_err());
}

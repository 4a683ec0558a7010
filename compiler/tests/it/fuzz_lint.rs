//! Throws mutated inputs (YAML and `.egret`) at the parsers and the linter.
//!
//! Seeded and deterministic; a failure prints the seed and the input so it can
//! be replayed (`EGRET_FUZZ_SEED=… cargo test -p egret-compiler --test fuzz_lint`).
//! Every input must: not panic; give diagnostics whose spans lie inside their
//! file; render in all three formats; and when nothing parsed into a policy or
//! object while the file has content, say why with at least one diagnostic.

use egret_compiler::lint;
use egret_lang::diag::{Format, render};
use egret_lang::load;
use egret_lang::source::SourceMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// The suite's seeded generator (xorshift64*), shared with `fuzz_artifacts`.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const TOKENS: &[&str] = &[
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "&a ",
    "*a",
    "!!str ",
    "\t",
    "  ",
    "\n",
    "---\n",
    "#",
    "é",
    "✓",
    "null",
    "true",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.1/8",
    "300.1.1.1",
    "podSelector:",
    "matchLabels:",
    "selectors:",
    "namespaceSelector:",
    "egressGateways:",
    "In",
    "NotIn",
    "(",
    ")",
    "*",
    "!",
    "=",
    "!=",
    "policy",
    "select",
    "pods",
    "via",
    "to",
    "except",
    "ip",
    "interface",
    "kind: List\n",
    "items:\n",
    "apiVersion: v1\n",
];

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut s: Vec<u8> = base.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(6) {
            0 if !s.is_empty() => {
                let i = rng.below(s.len());
                s[i] = (rng.next() & 0x7f) as u8;
            }
            1 if !s.is_empty() => {
                let end = (at + 1 + rng.below(12)).min(s.len());
                let at = at.min(end);
                s.drain(at..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                s.splice(at..at, t.bytes());
            }
            3 => {
                // duplicate a line
                let text = String::from_utf8_lossy(&s).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let mut v: Vec<&str> = lines.clone();
                    v.insert(i, lines[i]);
                    s = v.join("\n").into_bytes();
                }
            }
            4 => {
                // swap two lines
                let text = String::from_utf8_lossy(&s).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                    s = lines.join("\n").into_bytes();
                }
            }
            _ => s.truncate(at),
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["tests/fixtures/lint", "tests/fixtures/article", "../examples/policies", "../examples/cluster"] {
        let files = load::expand(&[root.join(dir)]).expect("corpus dir");
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                out.push((f.file_name().and_then(|n| n.to_str()).unwrap_or("x.yaml").to_string(), t));
            }
        }
    }
    out
}

fn check_one(name: &str, text: &str) -> Result<(), String> {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut sources = SourceMap::new();
        let loaded = load::parse_text(&mut sources, name, text.to_string());
        let mut diags = loaded.diagnostics.clone();
        diags.extend(lint::lint(&loaded.bundle, &lint::Options { snapshot: true, service_cidrs: Vec::new() }));
        for d in &diags {
            for l in &d.labels {
                let len = sources.text(l.span.file).len() as u32;
                if l.span.start > l.span.end || l.span.end > len {
                    return Err(format!("{}: span {:?} outside file of {len} bytes", d.code.id, l.span));
                }
            }
        }
        for f in [Format::Human, Format::Json, Format::Github] {
            let _ = render::render(&diags, &sources, f);
        }
        let b = &loaded.bundle;
        let parsed_something = !b.policies.is_empty() || b.objects > 0;
        let has_content = text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "---" && t != "..."
        });
        if has_content && !parsed_something && diags.is_empty() {
            return Err("input with content produced nothing and no diagnostic".to_string());
        }
        Ok(())
    }));
    match r {
        Ok(x) => x,
        Err(_) => Err("panicked".to_string()),
    }
}

#[test]
fn mutated_inputs_never_panic_and_always_explain() {
    let seed: u64 = std::env::var("EGRET_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_e63e7);
    let corpus = corpus();
    assert!(corpus.len() > 20);
    let mut rng = Rng(seed);
    let mut n = 0usize;
    let mut egret_inputs = 0usize;
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    while n < 12_000 {
        let (name, base) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base);
        if name.ends_with(".egret") {
            egret_inputs += 1;
        }
        if let Err(why) = check_one(name, &input) {
            failures.push(format!("seed {seed} input #{n} ({name}): {why}\n---\n{input}\n---"));
            if failures.len() > 5 {
                break;
            }
        }
        n += 1;
    }
    std::panic::set_hook(prev_hook);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(egret_inputs > 100, "too few .egret inputs: {egret_inputs}");
    println!("fuzzed {n} inputs ({egret_inputs} .egret), seed {seed}");
}

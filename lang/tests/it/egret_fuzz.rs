//! Mutation fuzzing of the `.egret` parser: ≥10,000 seeded, deterministic
//! byte and token mutations of valid files.
//!
//! For every input: no panic (parse, print, format, YAML, rendering); every
//! diagnostic has an E0003/E0105/E0107 code, one primary label on `char`
//! boundaries inside the text, and a help line; and the parser agrees with an
//! independent reference recognizer of the grammar (below) on whether the
//! input is valid — so every invalid input yields at least one diagnostic,
//! and no valid input yields one. Valid inputs must also format idempotently
//! and print/parse back to the same policies.
//!
//! A failure prints the seed, the case number and the input; replay it with
//! `EGRET_FUZZ_SEED=<seed> cargo test -p egret-lang --test egret_fuzz`.

use egret_lang::diag::render;
use egret_lang::source::{FileId, SourceMap};
use egret_lang::{egret, emit};
use std::panic::{AssertUnwindSafe, catch_unwind};

const CASES: usize = 12_000;
const DEFAULT_SEED: u64 = 0x00e9_9e7f_u64;

/// splitmix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const CORPUS: &[&str] = &[
    r#"# Payments leave through the address the processor allow-lists.
policy egress-payments {
  select pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)
  select namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)
  to 0.0.0.0/0, ::/0
  except 10.0.0.0/8, 192.168.0.0/16
  via nodes(cilium.io/egress-gateway = "true") ip 192.168.1.100
}
"#,
    "policy ha { # two gateways\n  select pods(tier notin (debug, test), !canary, version, x != y) on nodes(*)\n  to 203.0.113.0/24; except 203.0.113.128/25\n  via nodes(gw = a) interface eth1\n  via nodes(gw == b) ip 2001:db8::1\n}\npolicy b {}\n",
    "policy \"quoted\" {\n  select pods(\"k e y\" = \"v\\u00e9\\\"\\\\\", in = to) in namespaces(*)\n  to 2001:db8::/32\n  via nodes(a in (\"1\", two)) interface \"bond0.100\"\n}\n# end\n",
    "policy a{select pods(*);to 10.0.0.0/8,10.1.0.0/16;via nodes(*)}policy c{select namespaces(x)}\n",
];

/// Fragments inserted by token mutations.
const FRAGMENTS: &[&str] = &[
    "policy",
    "select",
    "to",
    "except",
    "via",
    "pods",
    "namespaces",
    "nodes",
    "in",
    "notin",
    "on",
    "ip",
    "interface",
    "(",
    ")",
    "{",
    "}",
    ",",
    ";",
    "=",
    "==",
    "!=",
    "!",
    "*",
    "\"",
    "\"s\"",
    "'x'",
    "#c\n",
    "\n",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "::/0",
    "300.1.1.1",
    "1.2.3.4",
    "fe80::1",
    "pods()",
    "nodes(*)",
    "a = b",
    "x",
    "\\",
    "\"\\q\"",
    "\"\\ud83d\"",
    "@",
    "é",
    "\u{0}",
    "\u{feff}",
    // Whole clauses, so mutants are often valid but unusual.
    " ip 10.0.0.1 ",
    " ip ::1 ",
    " interface eth9 ",
    " interface \"a b\" ",
    ", app = web",
    ", app == other",
    ", !gone",
    ", k in (v)",
    ", k notin (v, w)",
    " in namespaces(*) ",
    " on nodes(z = 1) ",
    "\n  select pods(a = b)\n",
    "\n  to 10.0.0.0/8\n",
    "\n  except ::/0, 10.1.0.0/16\n",
    "\n  via nodes(*)\n",
    "\npolicy extra { }\n",
    "; ;",
    "# x\n",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..1 + rng.below(4) {
        s = if rng.below(2) == 0 { mutate_bytes(rng, &s) } else { mutate_tokens(rng, &s) };
    }
    s
}

fn mutate_bytes(rng: &mut Rng, text: &str) -> String {
    let mut b = text.as_bytes().to_vec();
    let at = rng.below(b.len() + 1);
    match rng.below(5) {
        0 => {
            let end = (at + 1 + rng.below(8)).min(b.len());
            b.drain(at.min(end)..end);
        }
        1 => {
            let ins: Vec<u8> = match rng.below(3) {
                0 => vec![(rng.next() & 0xff) as u8],
                _ => rng.pick(FRAGMENTS).as_bytes().to_vec(),
            };
            b.splice(at..at, ins);
        }
        2 => {
            if at < b.len() {
                b[at] = (rng.next() & 0xff) as u8;
            }
        }
        3 => {
            let end = (at + 1 + rng.below(16)).min(b.len());
            let chunk = b[at.min(end)..end].to_vec();
            let to = rng.below(b.len() + 1);
            b.splice(to..to, chunk);
        }
        _ => {
            let other = rng.below(b.len() + 1);
            if at < b.len() && other < b.len() {
                b.swap(at, other);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Splits into words, punctuation and whitespace runs (roughly as the lexer
/// does) and edits the sequence.
fn mutate_tokens(rng: &mut Rng, text: &str) -> String {
    let mut toks: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        let word = c.is_ascii_alphanumeric() || "._/:-".contains(c);
        if word {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                toks.push(std::mem::take(&mut cur));
            }
            toks.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        toks.push(cur);
    }
    let at = rng.below(toks.len() + 1);
    match rng.below(5) {
        0 if at < toks.len() => {
            toks.remove(at);
        }
        1 if at < toks.len() => {
            let t = toks[at].clone();
            toks.insert(at, t);
        }
        2 if at + 1 < toks.len() => toks.swap(at, at + 1),
        3 if at < toks.len() => toks[at] = rng.pick(FRAGMENTS).to_string(),
        _ => {
            let f = rng.pick(FRAGMENTS).to_string();
            toks.insert(at, format!(" {f} "));
        }
    }
    toks.concat()
}

#[test]
fn ten_thousand_mutations_never_panic_and_always_explain_themselves() {
    let seed = std::env::var("EGRET_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let mut rng = Rng(seed);
    let (mut valid, mut invalid) = (0usize, 0usize);
    for case in 0..CASES {
        let base = *rng.pick(CORPUS);
        let text = mutate(&mut rng, base);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&text, case)));
        match outcome {
            Ok(Ok(true)) => valid += 1,
            Ok(Ok(false)) => invalid += 1,
            Ok(Err(why)) => panic!("seed {seed}, case {case}: {why}\ninput: {text:?}"),
            Err(_) => panic!("seed {seed}, case {case}: panicked\ninput: {text:?}"),
        }
    }
    println!("seed {seed}: {valid} valid, {invalid} invalid inputs");
    assert_eq!(valid + invalid, CASES);
    assert!(valid >= CASES / 20, "too few valid mutants ({valid}) to exercise the printer");
    assert!(invalid >= CASES / 2, "too few invalid mutants ({invalid}) to exercise recovery");
}

/// Checks one input; `Ok(valid)` or the reason it fails.
fn check(text: &str, case: usize) -> Result<bool, String> {
    let file = FileId(5);
    let (policies, diags) = egret::parse(file, text);
    for d in &diags {
        if !["E0003", "E0105", "E0107"].contains(&d.code.id) {
            return Err(format!("unexpected code {}", d.code.id));
        }
        if d.help.as_deref().is_none_or(str::is_empty) {
            return Err(format!("no help on {:?}", d.message));
        }
        if d.labels.iter().filter(|l| l.primary).count() != 1 {
            return Err(format!("not one primary label on {:?}", d.message));
        }
        for l in &d.labels {
            let r = l.span.range();
            if l.span.file != file || text.get(r.clone()).is_none() {
                return Err(format!("label {r:?} outside the text or not on char boundaries: {:?}", d.message));
            }
        }
    }
    let reference = reference::valid(text);
    if reference != diags.is_empty() {
        let msgs: Vec<String> = diags.iter().map(|d| format!("{} {}", d.code.id, d.message)).collect();
        return Err(format!("reference says valid={reference}, parser says {msgs:?}"));
    }
    // Printing and emitting work on whatever was recovered.
    let printed = egret::print(&policies);
    let _ = emit::policies_to_yaml(&policies);
    if case.is_multiple_of(8) {
        let mut sources = SourceMap::new();
        let f = sources.add("fuzz.egret", text);
        let (_, d) = egret::parse(f, text);
        if d != egret::parse(f, text).1 {
            return Err("parse is not deterministic".into());
        }
        let _ = render::human(&d, &sources);
    }
    if !diags.is_empty() {
        return Ok(false);
    }
    let formatted = egret::format(file, text).map_err(|_| "format failed on a valid file".to_string())?;
    let again = egret::format(file, &formatted).map_err(|_| "format output does not parse".to_string())?;
    if again != formatted {
        return Err(format!("format is not idempotent:\n{formatted}\n---\n{again}"));
    }
    let (back, d) = egret::parse(file, &printed);
    if !d.is_empty() || back.len() != policies.len() {
        return Err(format!("printed text does not parse back:\n{printed}"));
    }
    if policies.iter().zip(&back).any(|(a, b)| !egret::semantically_equal(a, b)) {
        return Err(format!("printed text means something else:\n{printed}"));
    }
    Ok(true)
}

/// An independent recognizer of the `.egret` grammar (SPEC in `egret/mod.rs`),
/// written without the parser's code: valid iff the parser must report nothing.
mod reference {
    use egret_lang::net::Cidr;
    use std::net::IpAddr;

    #[derive(Debug, Clone, PartialEq)]
    enum T {
        Word(String),
        Str,
        P(&'static str),
    }

    const PUNCT: [&str; 11] = ["==", "!=", "=", "!", "(", ")", "{", "}", ",", ";", "*"];
    const RESERVED: [&str; 5] = ["select", "to", "except", "via", "policy"];

    pub fn valid(text: &str) -> bool {
        match lex(text) {
            Some((toks, texts)) => Parser { toks, texts, i: 0 }.file().is_some(),
            None => false,
        }
    }

    fn is_word(c: char) -> bool {
        c.is_ascii_alphanumeric() || "._/:-".contains(c)
    }

    /// Tokens, and the decoded text of each word or string.
    fn lex(text: &str) -> Option<(Vec<T>, Vec<String>)> {
        let cs: Vec<char> = text.chars().collect();
        let (mut toks, mut texts) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            if matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{feff}') {
                i += 1;
            } else if c == '#' {
                while i < cs.len() && cs[i] != '\n' {
                    i += 1;
                }
            } else if is_word(c) {
                let start = i;
                while i < cs.len() && is_word(cs[i]) {
                    i += 1;
                }
                let w: String = cs[start..i].iter().collect();
                toks.push(T::Word(w.clone()));
                texts.push(w);
            } else if c == '"' {
                let start = i;
                i += 1;
                loop {
                    match cs.get(i) {
                        None | Some('\n') => return None,
                        Some('"') => break,
                        Some('\\') => {
                            if matches!(cs.get(i + 1), None | Some('\n')) {
                                return None;
                            }
                            i += 2;
                        }
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let lit: String = cs[start..i].iter().collect();
                let s: String = serde_json::from_str(&lit).ok()?;
                toks.push(T::Str);
                texts.push(s);
            } else {
                let rest: String = cs[i..cs.len().min(i + 2)].iter().collect();
                let p = PUNCT.iter().find(|p| rest.starts_with(**p))?;
                toks.push(T::P(p));
                texts.push(p.to_string());
                i += p.chars().count();
            }
        }
        Some((toks, texts))
    }

    struct Parser {
        toks: Vec<T>,
        texts: Vec<String>,
        i: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&T> {
            self.toks.get(self.i)
        }
        fn is_word(&self, w: &str) -> bool {
            matches!(self.peek(), Some(T::Word(x)) if x == w)
        }
        fn eat_word(&mut self, w: &str) -> bool {
            let ok = self.is_word(w);
            self.i += usize::from(ok);
            ok
        }
        fn eat(&mut self, p: &str) -> bool {
            let ok = matches!(self.peek(), Some(T::P(x)) if *x == p);
            self.i += usize::from(ok);
            ok
        }
        fn expect(&mut self, p: &str) -> Option<()> {
            self.eat(p).then_some(())
        }
        /// A word or string; returns its text.
        fn text(&mut self) -> Option<String> {
            match self.peek() {
                Some(T::Word(_) | T::Str) => {
                    self.i += 1;
                    Some(self.texts[self.i - 1].clone())
                }
                _ => None,
            }
        }
        fn address(&mut self) -> Option<String> {
            if let Some(T::Word(w)) = self.peek()
                && RESERVED.contains(&w.as_str())
            {
                return None;
            }
            self.text()
        }

        fn file(&mut self) -> Option<()> {
            while self.i < self.toks.len() {
                self.policy()?;
            }
            Some(())
        }

        fn policy(&mut self) -> Option<()> {
            self.eat_word("policy").then_some(())?;
            self.text()?;
            self.expect("{")?;
            loop {
                if self.eat("}") {
                    return Some(());
                }
                if self.eat(";") {
                    continue;
                }
                self.statement()?;
            }
        }

        fn statement(&mut self) -> Option<()> {
            if self.eat_word("select") {
                if self.eat_word("pods") {
                    self.selector()?;
                    if self.eat_word("in") {
                        self.eat_word("namespaces").then_some(())?;
                        self.selector()?;
                    }
                } else if self.eat_word("namespaces") {
                    self.selector()?;
                } else {
                    return None;
                }
                if self.eat_word("on") {
                    self.eat_word("nodes").then_some(())?;
                    self.selector()?;
                }
                Some(())
            } else if self.eat_word("to") || self.eat_word("except") {
                loop {
                    self.address()?.parse::<Cidr>().ok()?;
                    if !self.eat(",") {
                        return Some(());
                    }
                }
            } else if self.eat_word("via") {
                self.eat_word("nodes").then_some(())?;
                self.selector()?;
                let (mut ip, mut iface) = (false, false);
                loop {
                    if self.eat_word("ip") {
                        if ip {
                            return None;
                        }
                        ip = true;
                        self.address()?.parse::<IpAddr>().ok()?;
                    } else if self.eat_word("interface") {
                        if iface {
                            return None;
                        }
                        iface = true;
                        self.text()?;
                    } else {
                        return Some(());
                    }
                }
            } else {
                None
            }
        }

        fn selector(&mut self) -> Option<()> {
            self.expect("(")?;
            if self.eat("*") {
                return self.expect(")");
            }
            let mut label_keys: Vec<String> = Vec::new();
            loop {
                if self.eat("!") {
                    self.text()?;
                } else {
                    let key = self.text()?;
                    if self.eat("=") || self.eat("==") {
                        self.text()?;
                        if label_keys.contains(&key) {
                            return None;
                        }
                        label_keys.push(key);
                    } else if self.eat("!=") {
                        self.text()?;
                    } else if self.eat_word("in") || self.eat_word("notin") {
                        self.expect("(")?;
                        loop {
                            self.text()?;
                            if !self.eat(",") {
                                break;
                            }
                        }
                        self.expect(")")?;
                    }
                }
                if !self.eat(",") {
                    return self.expect(")");
                }
            }
        }
    }
}

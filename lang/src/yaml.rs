//! A YAML reader that keeps byte spans on every node.
//!
//! Built on saphyr-parser's event stream. Produces one [`Node`] tree per
//! document. Anchors/aliases, non-scalar keys and duplicate keys are reported
//! (E0005) and the offending entry is left out; a syntax error (E0002) ends
//! the file's parse, keeping the documents completed before it.

use crate::codes;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A scalar; `plain` is false for quoted and block scalars.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A plain scalar that YAML (1.1, as Kubernetes' YAML decoder reads it) does
    /// not read as a string: null, booleans, numbers.
    pub fn is_non_string_scalar(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if plain_is_not_string(value))
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of node this is, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Whether a plain scalar resolves to a non-string under YAML 1.1 (go-yaml v2,
/// which `kubectl` and sigs.k8s.io/yaml use) or the YAML 1.2 core schema.
pub fn plain_is_not_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "no",
        "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N", ".inf", ".Inf", ".INF", "-.inf",
        "+.inf", ".nan", ".NaN", ".NAN",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if t.is_empty() {
        return false;
    }
    if let Some(h) = t.strip_prefix("0x") {
        return !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_');
    }
    if let Some(o) = t.strip_prefix("0o") {
        return !o.is_empty() && o.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    // integers and floats: digits, at most one dot, optional exponent
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits_ok = !mant.is_empty()
        && mant.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'_')
        && mant.bytes().filter(|&b| b == b'.').count() <= 1
        && mant.bytes().any(|b| b.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    digits_ok && exp_ok
}

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub root: Node,
}

/// Converts the parser's character offsets into byte offsets.
struct Offsets {
    /// Byte offset of every char index, or empty for ASCII text.
    table: Vec<u32>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Offsets {
        let table = if text.is_ascii() {
            Vec::new()
        } else {
            let mut t: Vec<u32> = text.char_indices().map(|(i, _)| i as u32).collect();
            t.push(text.len() as u32);
            t
        };
        Offsets { table, len: text.len() }
    }
    fn byte(&self, char_index: usize) -> usize {
        if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).map_or(self.len, |&b| b as usize)
        }
    }
}

enum Frame {
    Seq {
        start: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// The keys of `entries` by position, once the mapping is long
        /// enough that a scan per new key would make it quadratic.
        index: Option<std::collections::HashMap<String, usize>>,
    },
}

/// A mapping with more entries than this looks its keys up in a hash index
/// (duplicate keys are found in linear time, however long a hostile mapping).
const MAP_SCAN_MAX: usize = 16;

/// The entry of `entries` whose key is `key`, if any.
fn find_key<'e>(
    entries: &'e [(Node, Node)],
    index: &mut Option<std::collections::HashMap<String, usize>>,
    key: &str,
) -> Option<&'e Node> {
    if entries.len() <= MAP_SCAN_MAX {
        return entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k);
    }
    let index = index.get_or_insert_with(|| {
        entries.iter().enumerate().filter_map(|(i, (k, _))| Some((k.as_str()?.to_owned(), i))).collect()
    });
    index.get(key).map(|&i| &entries[i].0)
}

/// Parses every document of a YAML file. Returns the documents read and the
/// diagnostics met.
pub fn parse(file: FileId, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut docs = Vec::new();
    let diags = parse_each(file, text, |d| docs.push(d));
    (docs, diags)
}

/// Parses the documents of a YAML file one at a time: `each` gets every
/// document as soon as it is complete, so only one document's tree is held
/// at a time. Returns the diagnostics met.
pub fn parse_each(file: FileId, text: &str, mut each: impl FnMut(Document)) -> Vec<Diagnostic> {
    let offsets = Offsets::new(text);
    let mut diags = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut skip_depth = 0usize; // >0 while inside a container we are discarding

    let span = |a: usize, b: usize| Span::new(file, offsets.byte(a), offsets.byte(b));

    for item in Parser::new_from_str(text) {
        let (event, sp) = match item {
            Ok(x) => x,
            Err(e) => {
                let at = offsets.byte(e.marker().index());
                let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                diags.push(
                    Diagnostic::new(&codes::YAML_SYNTAX, format!("invalid YAML: {}", e.info()))
                        .primary(Span::new(file, at, end), e.info().to_string())
                        .help("fix the YAML syntax here; documents after this point in the file are not read"),
                );
                break;
            }
        };
        let (s, e) = (sp.start.index(), sp.end.index());
        if skip_depth > 0 {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => skip_depth += 1,
                Event::SequenceEnd | Event::MappingEnd => skip_depth -= 1,
                _ => {}
            }
            continue;
        }
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take() {
                    each(Document { root: r });
                }
                continue;
            }
            Event::Alias(_) => {
                diags.push(
                    Diagnostic::new(&codes::YAML_UNSUPPORTED, "YAML aliases are not supported")
                        .primary(span(s, e), "alias")
                        .help("write the value out in full"),
                );
                Node { span: span(s, e), kind: Kind::Scalar { value: String::new(), plain: true } }
            }
            Event::Scalar(value, style, anchor, _) => {
                if anchor != 0 {
                    diags.push(
                        Diagnostic::new(&codes::YAML_UNSUPPORTED, "YAML anchors are not supported")
                            .primary(span(s, e), "anchored value")
                            .help("remove the anchor; write values out in full"),
                    );
                }
                let plain = matches!(style, ScalarStyle::Plain);
                let (s, e) = trim_scalar_span(text, &offsets, s, e, style);
                Node { span: Span::new(file, s, e), kind: Kind::Scalar { value: value.into_owned(), plain } }
            }
            Event::SequenceStart(..) => {
                stack.push(Frame::Seq { start: s, items: Vec::new() });
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Frame::Map { start: s, entries: Vec::new(), key: None, index: None });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { start, items }) => {
                    let end = items.last().map_or(offsets.byte(e), |n| n.span.end as usize).max(offsets.byte(start));
                    Node { span: Span::new(file, offsets.byte(start), end), kind: Kind::Seq(items) }
                }
                _ => continue,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { start, entries, .. }) => {
                    let end =
                        entries.last().map_or(offsets.byte(e), |(_, v)| v.span.end as usize).max(offsets.byte(start));
                    Node { span: Span::new(file, offsets.byte(start), end), kind: Kind::Map(entries) }
                }
                _ => continue,
            },
        };
        // attach `node` to its parent
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, index, .. }) => match key.take() {
                None => {
                    if !matches!(node.kind, Kind::Scalar { .. }) {
                        diags.push(
                            Diagnostic::new(&codes::YAML_UNSUPPORTED, "mapping keys must be scalars")
                                .primary(node.span, "complex key")
                                .help("use a plain string key"),
                        );
                    }
                    *key = Some(node);
                }
                Some(k) => {
                    if let Some(first) = k.as_str().and_then(|k| find_key(entries, index, k)) {
                        diags.push(
                            Diagnostic::new(
                                &codes::YAML_UNSUPPORTED,
                                format!("duplicate key `{}`", k.as_str().unwrap_or("")),
                            )
                            .primary(k.span, "duplicate key")
                            .secondary(first.span, "first defined here")
                            .help("remove one of them; the API server rejects duplicate keys"),
                        );
                    } else if let Kind::Scalar { value, .. } = &k.kind {
                        if let Some(index) = index {
                            index.insert(value.clone(), entries.len());
                        }
                        entries.push((k, node));
                    }
                }
            },
        }
    }
    // A syntax error can leave containers open; nothing more is read from the file.
    let _ = skip_depth;
    diags
}

/// Shrinks a scalar span to its text (the parser's end may include trailing blanks).
fn trim_scalar_span(text: &str, offsets: &Offsets, s: usize, e: usize, style: ScalarStyle) -> (usize, usize) {
    let bs = offsets.byte(s);
    let mut be = offsets.byte(e).max(bs);
    // a quoted scalar ends at its closing quote (not at a comment after it)
    let bytes = text.as_bytes();
    let quote = match style {
        ScalarStyle::DoubleQuoted => Some(b'"'),
        ScalarStyle::SingleQuoted => Some(b'\''),
        _ => None,
    };
    if let Some(q) = quote
        && bytes.get(bs) == Some(&q)
    {
        let mut i = bs + 1;
        while i < be {
            match bytes[i] {
                b'\\' if q == b'"' => i += 2,
                b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b if b == q => return (bs, i + 1),
                _ => i += 1,
            }
        }
    }
    while be > bs && bytes.get(be - 1).is_some_and(|b| b.is_ascii_whitespace()) {
        be -= 1;
    }
    (bs, be)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> (Vec<Document>, Vec<Diagnostic>) {
        parse(FileId(0), t)
    }

    #[test]
    fn spans_point_at_values() {
        let t = "a: 1\nb:\n  - x\n  - \"y z\"\nc: {d: e}\n";
        let (docs, diags) = p(t);
        assert!(diags.is_empty(), "{diags:?}");
        let r = &docs[0].root;
        let b = r.get("b").unwrap();
        let Kind::Seq(items) = &b.kind else { panic!() };
        assert_eq!(&t[items[0].span.range()], "x");
        assert_eq!(&t[items[1].span.range()], "\"y z\"");
        assert_eq!(&t[r.get("c").unwrap().get("d").unwrap().span.range()], "e");
    }

    #[test]
    fn a_quoted_scalar_followed_by_a_comment_ends_at_its_quote() {
        let t = "a: \"x \\\" y\"   # comment\nb: 'it''s'  # more\nc: plain  # comment\n";
        let (docs, diags) = p(t);
        assert!(diags.is_empty(), "{diags:?}");
        let r = &docs[0].root;
        assert_eq!(&t[r.get("a").unwrap().span.range()], "\"x \\\" y\"");
        assert_eq!(&t[r.get("b").unwrap().span.range()], "'it''s'");
        assert_eq!(&t[r.get("c").unwrap().span.range()], "plain");
    }

    #[test]
    fn multi_document_and_errors() {
        let (docs, diags) = p("a: 1\n---\nb: 2\n---\nc: [1, 2\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code.id, "E0002");
    }

    #[test]
    fn duplicate_keys_and_aliases() {
        let (_, diags) = p("a: 1\na: 2\nb: &x 3\nc: *x\n");
        let ids: Vec<_> = diags.iter().map(|d| d.code.id).collect();
        assert_eq!(ids, vec!["E0005", "E0005", "E0005"]);
    }

    #[test]
    fn duplicate_keys_of_long_mappings_are_found_through_the_index() {
        // past MAP_SCAN_MAX entries keys are looked up in a hash index
        let mut text: String = (0..1000).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k500: again\nk3: again\nlast: 1\n");
        let (docs, diags) = p(&text);
        let dups: Vec<_> = diags.iter().map(|d| (d.code.id, d.message.as_str())).collect();
        assert_eq!(dups, vec![("E0005", "duplicate key `k500`"), ("E0005", "duplicate key `k3`")]);
        let root = &docs[0].root;
        assert_eq!(root.get("k500").and_then(Node::as_str), Some("500"), "the first value is kept");
        assert_eq!(root.get("last").and_then(Node::as_str), Some("1"));
        let Kind::Map(entries) = &root.kind else { panic!("a mapping") };
        assert_eq!(entries.len(), 1001);
    }

    #[test]
    fn non_ascii_offsets() {
        let t = "# héllo ✓\nname: wörld\n";
        let (docs, _) = p(t);
        let n = docs[0].root.get("name").unwrap();
        assert_eq!(&t[n.span.range()], "wörld");
    }

    #[test]
    fn yaml_typing() {
        for s in ["true", "yes", "on", "1", "-2", "1.5", "1e3", "0x1f", "null", "~", ""] {
            assert!(plain_is_not_string(s), "{s}");
        }
        for s in ["production", "1.2.3", "v1", "10.0.0.0/8", "e", "-", "x1"] {
            assert!(!plain_is_not_string(s), "{s}");
        }
    }
}

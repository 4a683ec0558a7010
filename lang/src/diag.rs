//! Diagnostics as data.
//!
//! A [`Diagnostic`] has a stable [`Code`] (defined once, in [`crate::codes`]), a
//! severity, a message, labelled spans (one primary, any number of secondary),
//! notes and an optional help line. Rendering (human, JSON, GitHub Actions
//! annotations) happens only at the edge, in [`render`].

use crate::codes::Code;
use crate::source::{SourceMap, Span};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: &'static Code,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: &'static Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label { span, message: message.into(), primary: true });
        self
    }

    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label { span, message: message.into(), primary: false });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map(|l| l.span)
    }

    /// Sort key: file, position, code — so output order is stable.
    fn sort_key(&self) -> (u32, u32, &'static str, &str) {
        let s = self.primary_span().unwrap_or_default();
        (s.file.0, s.start, self.code.id, &self.message)
    }
}

/// An error and its causes on one line, `message: cause: cause`, saying
/// each thing once: a cause whose text the messages before it already
/// contain (an error whose message prints its own `source`) is left out.
/// The one rendering of a cause chain for every egret binary; never `Debug`.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Sorts diagnostics into a stable, reader-friendly order and removes exact duplicates.
pub fn sort_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diags.dedup();
}

/// Output formats for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    /// GitHub Actions workflow commands (annotations).
    Github,
    /// SARIF 2.1.0 (GitHub code scanning and other SARIF viewers).
    Sarif,
    /// JUnit XML (test-report views of CI systems).
    Junit,
    /// GitLab code-quality report (JSON).
    Gitlab,
}

pub mod render {
    //! Rendering of diagnostics for people, machines and GitHub Actions.
    use super::*;
    use codespan_reporting::diagnostic as cs;
    use codespan_reporting::files::SimpleFiles;
    use codespan_reporting::term;

    /// Renders diagnostics in `format`. Human output ends with a summary line.
    pub fn render(diags: &[Diagnostic], sources: &SourceMap, format: Format) -> String {
        match format {
            Format::Human => human(diags, sources),
            Format::Json => json(diags, sources),
            Format::Github => github(diags, sources),
            Format::Sarif => sarif(diags, sources),
            Format::Junit => junit(diags, sources),
            Format::Gitlab => gitlab(diags, sources),
        }
    }

    /// Where a diagnostic points: file name and 1-based line/column range.
    struct Place<'a> {
        file: &'a str,
        line: usize,
        column: usize,
        end_line: usize,
        end_column: usize,
    }

    fn place<'a>(sources: &'a SourceMap, span: Span) -> Place<'a> {
        let (line, column) = sources.line_col(span.file, span.start);
        let (end_line, end_column) = sources.line_col(span.file, span.end);
        Place { file: sources.name(span.file), line, column, end_line, end_column }
    }

    /// The message with its notes and help, for formats with one text field.
    fn full_text(d: &Diagnostic) -> String {
        let mut msg = d.message.clone();
        for n in &d.notes {
            msg.push_str(&format!("\nnote: {n}"));
        }
        if let Some(h) = &d.help {
            msg.push_str(&format!("\nhelp: {h}"));
        }
        msg
    }

    /// A file name as a SARIF `uri-reference`: path separators kept, the
    /// rest of what a URI cannot hold percent-encoded.
    fn uri(path: &str) -> String {
        let mut out = String::new();
        for b in path.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// SARIF 2.1.0: one run of the `egret` driver, every code of the registry
    /// as a rule, one result per diagnostic (secondary labels as related locations).
    pub fn sarif(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let level = |s: Severity| match s {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let rules: Vec<serde_json::Value> = crate::codes::ALL
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "name": c.name,
                    "shortDescription": {"text": c.summary},
                    "fullDescription": {"text": c.doc},
                    "help": {"text": format!("egret rule {}", c.id)},
                    "defaultConfiguration": {"level": level(c.severity)},
                })
            })
            .collect();
        let location = |span: Span, message: Option<&str>| {
            let p = place(sources, span);
            let mut v = serde_json::json!({
                "physicalLocation": {
                    "artifactLocation": {"uri": uri(p.file)},
                    "region": {"startLine": p.line, "startColumn": p.column, "endLine": p.end_line, "endColumn": p.end_column},
                }
            });
            if let Some(m) = message.filter(|m| !m.is_empty()) {
                v["message"] = serde_json::json!({"text": m});
            }
            v
        };
        let results: Vec<serde_json::Value> = diags
            .iter()
            .map(|d| {
                let rule_index = crate::codes::ALL.iter().position(|c| std::ptr::eq(*c, d.code)).unwrap_or(0);
                let mut r = serde_json::json!({
                    "ruleId": d.code.id,
                    "ruleIndex": rule_index,
                    "level": level(d.severity),
                    "message": {"text": full_text(d)},
                });
                if let Some(span) = d.primary_span() {
                    r["locations"] = serde_json::json!([location(span, None)]);
                }
                let related: Vec<serde_json::Value> = d
                    .labels
                    .iter()
                    .filter(|l| !l.primary)
                    .enumerate()
                    .map(|(i, l)| {
                        let mut v = location(l.span, Some(&l.message));
                        v["id"] = serde_json::json!(i);
                        v
                    })
                    .collect();
                if !related.is_empty() {
                    r["relatedLocations"] = serde_json::Value::Array(related);
                }
                r
            })
            .collect();
        let log = serde_json::json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "egret",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "results": results,
            }],
        });
        let mut s = serde_json::to_string_pretty(&log).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Text for XML character data and attribute values (characters XML 1.0
    /// cannot hold at all are dropped).
    fn xml(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                '\n' => out.push_str("&#10;"),
                '\t' | '\r' => out.push(' '),
                c if (c as u32) < 0x20 => {}
                c => out.push(c),
            }
        }
        out
    }

    /// JUnit XML: one test case per diagnostic (an error is a failure, a
    /// warning a passing case that carries its text), or one passing case
    /// when there is nothing to report.
    pub fn junit(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let errors = diags.iter().filter(|d| d.is_error()).count();
        let tests = diags.len().max(1);
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"egret lint\" tests=\"{tests}\" failures=\"{errors}\" errors=\"0\">\n"
        ));
        out.push_str(&format!(
            "  <testsuite name=\"egret lint\" tests=\"{tests}\" failures=\"{errors}\" errors=\"0\" skipped=\"0\">\n"
        ));
        if diags.is_empty() {
            out.push_str("    <testcase classname=\"egret.lint\" name=\"no problems found\"/>\n");
        }
        for d in diags {
            let (file, at) = match d.primary_span() {
                Some(span) => {
                    let p = place(sources, span);
                    (p.file.to_string(), format!("{}:{}:{}", p.file, p.line, p.column))
                }
                None => ("egret".to_string(), "-".to_string()),
            };
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\">\n",
                xml(&file),
                xml(&format!("{} {} at {at}", d.code.id, d.code.name)),
                xml(&file)
            ));
            let text = xml(&format!("{at}: {}[{}]: {}", d.severity.as_str(), d.code.id, full_text(d)));
            if d.is_error() {
                out.push_str(&format!(
                    "      <failure message=\"{}\" type=\"{}\">{text}</failure>\n",
                    xml(&d.message),
                    d.code.id
                ));
            } else {
                out.push_str(&format!("      <system-out>{text}</system-out>\n"));
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }

    /// FNV-1a, 64 bits: a stable fingerprint (not a security measure).
    fn fnv64(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    /// GitLab code quality: an array of issues with a fingerprint, a
    /// severity (`major` for errors, `minor` for warnings) and a location.
    pub fn gitlab(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let mut seen = std::collections::BTreeMap::<u64, u32>::new();
        let items: Vec<serde_json::Value> = diags
            .iter()
            .map(|d| {
                let (path, begin, end) = match d.primary_span() {
                    Some(span) => {
                        let p = place(sources, span);
                        (p.file.to_string(), p.line, p.end_line)
                    }
                    None => ("egret".to_string(), 1, 1),
                };
                // same code, file and message twice: the fingerprints still differ
                let base = fnv64(&format!("{}\0{path}\0{}", d.code.id, d.message));
                let n = seen.entry(base).or_default();
                *n += 1;
                serde_json::json!({
                    "description": format!("{}: {}", d.code.id, d.message),
                    "check_name": d.code.id,
                    "fingerprint": format!("{base:016x}{:08x}", *n),
                    "severity": if d.is_error() { "major" } else { "minor" },
                    "location": {"path": path, "lines": {"begin": begin, "end": end}},
                })
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string());
        s.push('\n');
        s
    }

    pub fn human(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let mut files = SimpleFiles::new();
        for (_, f) in sources.files() {
            files.add(f.name.clone(), f.text.clone());
        }
        let config = term::Config::default();
        let mut out = String::new();
        for d in diags {
            let sev = match d.severity {
                Severity::Error => cs::Severity::Error,
                Severity::Warning => cs::Severity::Warning,
            };
            let labels = d
                .labels
                .iter()
                .map(|l| {
                    let style = if l.primary { cs::LabelStyle::Primary } else { cs::LabelStyle::Secondary };
                    cs::Label::new(style, l.span.file.0 as usize, l.span.range()).with_message(&l.message)
                })
                .collect();
            let mut notes: Vec<String> = d.notes.iter().map(|n| format!("note: {n}")).collect();
            if let Some(h) = &d.help {
                notes.push(format!("help: {h}"));
            }
            let cd = cs::Diagnostic::new(sev)
                .with_code(d.code.id)
                .with_message(&d.message)
                .with_labels(labels)
                .with_notes(notes);
            match term::emit_into_string(&config, &files, &cd) {
                Ok(s) => out.push_str(&s),
                Err(_) => out.push_str(&format!("{}[{}]: {}\n", d.severity.as_str(), d.code.id, d.message)),
            }
        }
        let errors = diags.iter().filter(|d| d.is_error()).count();
        let warnings = diags.len() - errors;
        out.push_str(&summary(errors, warnings));
        out
    }

    pub fn summary(errors: usize, warnings: usize) -> String {
        fn plural(n: usize, w: &str) -> String {
            format!("{n} {w}{}", if n == 1 { "" } else { "s" })
        }
        if errors == 0 && warnings == 0 {
            "no problems found\n".to_string()
        } else {
            format!("{}, {}\n", plural(errors, "error"), plural(warnings, "warning"))
        }
    }

    #[derive(Serialize)]
    struct JsonLabel<'a> {
        file: &'a str,
        start: u32,
        end: u32,
        line: usize,
        column: usize,
        end_line: usize,
        end_column: usize,
        message: &'a str,
        primary: bool,
    }

    #[derive(Serialize)]
    struct JsonDiag<'a> {
        code: &'static str,
        name: &'static str,
        severity: Severity,
        message: &'a str,
        labels: Vec<JsonLabel<'a>>,
        notes: &'a [String],
        help: Option<&'a str>,
    }

    pub fn json(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let items: Vec<JsonDiag<'_>> = diags
            .iter()
            .map(|d| JsonDiag {
                code: d.code.id,
                name: d.code.name,
                severity: d.severity,
                message: &d.message,
                labels: d
                    .labels
                    .iter()
                    .map(|l| {
                        let (line, column) = sources.line_col(l.span.file, l.span.start);
                        let (end_line, end_column) = sources.line_col(l.span.file, l.span.end);
                        JsonLabel {
                            file: sources.name(l.span.file),
                            start: l.span.start,
                            end: l.span.end,
                            line,
                            column,
                            end_line,
                            end_column,
                            message: &l.message,
                            primary: l.primary,
                        }
                    })
                    .collect(),
                notes: &d.notes,
                help: d.help.as_deref(),
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string());
        s.push('\n');
        s
    }

    /// GitHub Actions workflow commands (`::error file=…,line=…::message`).
    pub fn github(diags: &[Diagnostic], sources: &SourceMap) -> String {
        let mut out = String::new();
        for d in diags {
            let cmd = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut msg = d.message.clone();
            if let Some(h) = &d.help {
                msg.push_str(&format!("\nhelp: {h}"));
            }
            for n in &d.notes {
                msg.push_str(&format!("\nnote: {n}"));
            }
            match d.primary_span() {
                Some(span) => {
                    let (line, col) = sources.line_col(span.file, span.start);
                    let (end_line, end_col) = sources.line_col(span.file, span.end);
                    out.push_str(&format!(
                        "::{cmd} file={},line={line},col={col},endLine={end_line},endColumn={end_col},title={}::{}\n",
                        escape_prop(sources.name(span.file)),
                        escape_prop(&format!("{} {}", d.code.id, d.code.name)),
                        escape_data(&msg)
                    ));
                }
                None => out.push_str(&format!(
                    "::{cmd} title={}::{}\n",
                    escape_prop(&format!("{} {}", d.code.id, d.code.name)),
                    escape_data(&msg)
                )),
            }
        }
        out
    }

    fn escape_data(s: &str) -> String {
        s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
    }

    fn escape_prop(s: &str) -> String {
        escape_data(s).replace(':', "%3A").replace(',', "%2C")
    }
}

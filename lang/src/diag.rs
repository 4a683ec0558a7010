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
    Github,
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
        }
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

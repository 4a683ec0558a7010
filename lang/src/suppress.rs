//! Suppressing diagnostics, in three places:
//!
//! - an inline comment `# egret:ignore CODE[,CODE…]` (YAML and `.egret` both
//!   use `#` comments) on the line a diagnostic points at, or alone on the
//!   line above it;
//! - `--ignore CODE` on the command line (everywhere);
//! - a checked-in config file, `.egret.yaml` (read from the working
//!   directory, or given with `--config`):
//!
//!   ```yaml
//!   ignore:
//!   - W0203                 # everywhere
//!   - code: W0312
//!     paths: [examples/]    # only in files under these path prefixes
//!   ```
//!
//! A code is an id (`W0203`) or a name (`tie`). What was suppressed, and by
//! what, is kept so `egret lint -v` can report it.

use crate::codes::{self, Code};
use crate::diag::Diagnostic;
use crate::source::{FileId, SourceMap, Span};
use crate::yaml::{self, Kind, Node};

/// The marker of an inline suppression, after `#`.
pub const MARKER: &str = "egret:ignore";

/// The config file read from the working directory when `--config` is not given.
pub const CONFIG_FILE: &str = ".egret.yaml";

/// What suppressed a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// `# egret:ignore` on this 1-based line.
    Comment { line: usize },
    /// `--ignore`.
    Flag,
    /// The config file at this path.
    Config { path: String },
}

impl std::fmt::Display for By {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            By::Comment { line } => write!(f, "`# {MARKER}` comment on line {line}"),
            By::Flag => f.write_str("--ignore"),
            By::Config { path } => write!(f, "{path}"),
        }
    }
}

/// One config rule: a code, everywhere or under path prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRule {
    pub code: &'static Code,
    /// Empty: every file.
    pub paths: Vec<String>,
}

/// Every suppression in force for a run.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub flag: Vec<&'static Code>,
    pub config: Vec<ConfigRule>,
    /// Where the config rules came from.
    pub config_path: Option<String>,
}

/// A diagnostic that was suppressed, and by what.
#[derive(Debug, Clone)]
pub struct Suppressed {
    pub diagnostic: Diagnostic,
    pub by: By,
}

/// Looks up a code by id or name; the error names the unknown one.
pub fn code(key: &str) -> Result<&'static Code, String> {
    codes::lookup(key.trim()).ok_or_else(|| format!("no diagnostic code `{}`; `egret rule` lists them", key.trim()))
}

/// Parses a config file's text. Problems are diagnostics with spans (the
/// file is already in `sources` as `file`).
pub fn parse_config(file: FileId, text: &str) -> (Vec<ConfigRule>, Vec<Diagnostic>) {
    let (docs, mut diags) = yaml::parse(file, text);
    let mut rules = Vec::new();
    let bad = |span: Span, what: &str| {
        Diagnostic::new(&codes::CONFIG, format!("config: {what}"))
            .primary(span, "here")
            .help("`ignore:` is a list of codes (`- W0203`) or of `{code: W0203, paths: [dir/]}`")
    };
    for doc in &docs {
        let root = &doc.root;
        if root.is_null() {
            continue;
        }
        let Kind::Map(entries) = &root.kind else {
            diags.push(bad(root.span, "expected a mapping with `ignore`"));
            continue;
        };
        for (k, v) in entries {
            match k.as_str() {
                Some("ignore") => match &v.kind {
                    Kind::Seq(items) => {
                        for it in items {
                            match rule(it) {
                                Ok(r) => rules.push(r),
                                Err((span, why)) => diags.push(bad(span, &why)),
                            }
                        }
                    }
                    _ if v.is_null() => {}
                    _ => diags.push(bad(v.span, "`ignore` must be a list")),
                },
                _ => diags.push(bad(k.span, &format!("unknown key `{}`", k.as_str().unwrap_or("")))),
            }
        }
    }
    (rules, diags)
}

fn rule(it: &Node) -> Result<ConfigRule, (Span, String)> {
    if let Some(s) = it.as_str().filter(|_| !matches!(it.kind, Kind::Map(_))) {
        return Ok(ConfigRule { code: code(s).map_err(|e| (it.span, e))?, paths: Vec::new() });
    }
    let c = it.get("code").ok_or((it.span, "an entry needs `code`".to_string()))?;
    let code = code(c.as_str().unwrap_or("")).map_err(|e| (c.span, e))?;
    let mut paths = Vec::new();
    if let Some(p) = it.get("paths") {
        let Kind::Seq(items) = &p.kind else { return Err((p.span, "`paths` must be a list".to_string())) };
        for q in items {
            paths.push(q.as_str().ok_or((q.span, "a path must be a string".to_string()))?.to_string());
        }
    }
    Ok(ConfigRule { code, paths })
}

/// The codes an inline comment in line `l` names.
fn inline_codes(l: &str) -> Vec<String> {
    let Some(i) = l.find('#') else { return Vec::new() };
    let comment = l[i + 1..].trim_start();
    let Some(rest) = comment.strip_prefix(MARKER) else { return Vec::new() };
    rest.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn names(d: &Diagnostic, key: &str) -> bool {
    d.code.id.eq_ignore_ascii_case(key) || d.code.name.eq_ignore_ascii_case(key)
}

/// Why `d` is suppressed, if it is.
fn suppressed_by(d: &Diagnostic, sources: &SourceMap, rules: &Rules) -> Option<By> {
    if rules.flag.iter().any(|c| std::ptr::eq(*c, d.code)) {
        return Some(By::Flag);
    }
    let span = d.primary_span();
    let file = span.map(|s| sources.name(s.file).to_string());
    for r in &rules.config {
        if std::ptr::eq(r.code, d.code)
            && (r.paths.is_empty()
                || file.as_deref().is_some_and(|f| {
                    let f = f.strip_prefix("./").unwrap_or(f);
                    r.paths.iter().any(|p| f.starts_with(p.strip_prefix("./").unwrap_or(p)))
                }))
        {
            return Some(By::Config { path: rules.config_path.clone().unwrap_or_else(|| CONFIG_FILE.to_string()) });
        }
    }
    let span = span?;
    let (line, _) = sources.line_col(span.file, span.start);
    // on the line itself, or alone on the line above
    if sources.line(span.file, line).is_some_and(|l| inline_codes(l).iter().any(|k| names(d, k))) {
        return Some(By::Comment { line });
    }
    let above = sources.line(span.file, line.checked_sub(1)?)?;
    (above.trim_start().starts_with('#') && inline_codes(above).iter().any(|k| names(d, k)))
        .then_some(By::Comment { line: line - 1 })
}

/// Splits diagnostics into those kept and those suppressed.
pub fn apply(diags: Vec<Diagnostic>, sources: &SourceMap, rules: &Rules) -> (Vec<Diagnostic>, Vec<Suppressed>) {
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for d in diags {
        match suppressed_by(&d, sources, rules) {
            Some(by) => gone.push(Suppressed { diagnostic: d, by }),
            None => kept.push(d),
        }
    }
    (kept, gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_marker_is_read_from_a_comment() {
        assert_eq!(inline_codes("a: 1  # egret:ignore W0203, E0106"), vec!["W0203", "E0106"]);
        assert!(inline_codes("a: 1  # something else").is_empty());
        assert!(inline_codes("a: 1").is_empty());
    }

    #[test]
    fn config_rules_parse_and_bad_entries_are_diagnostics() {
        let mut sources = SourceMap::new();
        let text = "ignore:\n- W0203\n- code: shadowed-policy\n  paths: [examples/]\n- NOPE\n";
        let id = sources.add(".egret.yaml", text);
        let (rules, diags) = parse_config(id, text);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].code.id, "W0203");
        assert_eq!(rules[1].code.id, "W0204");
        assert_eq!(rules[1].paths, vec!["examples/"]);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("NOPE"), "{}", diags[0].message);
    }
}

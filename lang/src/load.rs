//! Reading inputs: files and directories of YAML and `.egret`.
//!
//! A directory is read recursively (`*.yaml`, `*.yml`, `*.egret`), in sorted
//! path order so results are deterministic. Every file read is added to the
//! [`SourceMap`] so diagnostics can show it.

use crate::ast::Bundle;
use crate::codes;
use crate::diag::Diagnostic;
use crate::source::{FileId, SourceMap, Span};
use std::path::{Path, PathBuf};

/// What a set of inputs produced.
#[derive(Debug, Default)]
pub struct Loaded {
    pub bundle: Bundle,
    pub diagnostics: Vec<Diagnostic>,
    /// Files read, in order.
    pub files: Vec<FileId>,
}

impl Loaded {
    pub fn extend(&mut self, other: Loaded) {
        self.bundle.extend(other.bundle);
        self.diagnostics.extend(other.diagnostics);
        self.files.extend(other.files);
    }
}

/// Whether a path names a file egret reads when it walks a directory.
pub fn is_input_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "egret"))
}

/// Expands files and directories into the list of files to read.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| (p.clone(), e))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| (p.clone(), e))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_input_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses one text by its file name: `.egret` as egret's language, anything else as YAML.
pub fn parse_text(sources: &mut SourceMap, name: &str, text: String) -> Loaded {
    let is_egret = name.ends_with(".egret");
    let id = sources.add(name, text);
    let text = sources.text(id);
    let (bundle, diagnostics) = if is_egret {
        let (policies, d) = crate::egret::parse(id, text);
        (Bundle { policies, ..Bundle::default() }, d)
    } else {
        crate::k8s::parse_yaml(id, text)
    };
    Loaded { bundle, diagnostics, files: vec![id] }
}

/// The path that names standard input.
pub const STDIN: &str = "-";

/// Reads files and directories (`-`: YAML from standard input, once).
/// Unreadable paths are diagnostics (E0001), not errors.
pub fn load(sources: &mut SourceMap, paths: &[PathBuf]) -> Loaded {
    let mut out = Loaded::default();
    if paths.iter().any(|p| p.as_os_str() == STDIN) {
        let mut text = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            Ok(_) => out.extend(parse_text(sources, "<stdin>", text)),
            Err(e) => out.diagnostics.push(io_diag(sources, Path::new("<stdin>"), &e)),
        }
        let rest: Vec<PathBuf> = paths.iter().filter(|p| p.as_os_str() != STDIN).cloned().collect();
        if rest.is_empty() {
            return out;
        }
        out.extend(load(sources, &rest));
        return out;
    }
    let files = match expand(paths) {
        Ok(f) => f,
        Err((p, e)) => {
            out.diagnostics.push(io_diag(sources, &p, &e));
            // read what can be read
            paths
                .iter()
                .filter(|q| **q != p)
                .flat_map(|q| expand(std::slice::from_ref(q)).unwrap_or_default())
                .collect()
        }
    };
    for f in files {
        match std::fs::read(&f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => out.extend(parse_text(sources, &f.display().to_string(), text)),
                Err(_) => out.diagnostics.push(
                    Diagnostic::new(&codes::IO, format!("`{}` is not UTF-8 text", f.display()))
                        .primary(file_span(sources, &f), "not UTF-8")
                        .help("save the file as UTF-8"),
                ),
            },
            Err(e) => out.diagnostics.push(io_diag(sources, &f, &e)),
        }
    }
    out
}

fn file_span(sources: &mut SourceMap, p: &Path) -> Span {
    let id = sources.add(p.display().to_string(), String::new());
    Span::new(id, 0, 0)
}

fn io_diag(sources: &mut SourceMap, p: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::new(&codes::IO, format!("cannot read `{}`: {e}", p.display()))
        .primary(file_span(sources, p), "unreadable")
        .help("check the path and its permissions")
}

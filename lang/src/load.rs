//! Reading inputs: files and directories of YAML and `.egret`.
//!
//! A directory is read recursively (`*.yaml`, `*.yml`, `*.egret`), in sorted
//! path order so results are deterministic. Every file read is added to the
//! [`SourceMap`] so diagnostics can show it.
//!
//! Reading is bounded ([`Limits`]): only regular files are read (a FIFO,
//! socket or device in a directory is skipped with W0009; named on the
//! command line it is E0008), each file once however many symbolic links
//! lead to it, a directory reached again through a link loop is not walked
//! again, and a file or a run larger than its limit is E0007, naming the
//! file and the limit, after reading at most one byte more than the limit.

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

/// How much one run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes per file (and for standard input).
    pub file_bytes: u64,
    /// Bytes of all inputs of one run together.
    pub total_bytes: u64,
}

impl Limits {
    /// 16 MiB per file, 256 MiB per run.
    pub const DEFAULT: Limits = Limits { file_bytes: 16 << 20, total_bytes: 256 << 20 };
    /// The environment variable that sets [`Limits::file_bytes`].
    pub const FILE_ENV: &'static str = "EGRET_MAX_FILE_BYTES";
    /// The environment variable that sets [`Limits::total_bytes`].
    pub const TOTAL_ENV: &'static str = "EGRET_MAX_INPUT_BYTES";

    /// [`Limits::DEFAULT`], with what [`Limits::FILE_ENV`] and
    /// [`Limits::TOTAL_ENV`] set.
    ///
    /// # Errors
    /// A variable that is not a number of bytes (the message names it).
    pub fn from_env() -> Result<Limits, String> {
        let var = |name: &str, default: u64| match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v.trim().parse::<u64>().map_err(|_| format!("{name}=`{v}` is not a number of bytes")),
        };
        Ok(Limits {
            file_bytes: var(Limits::FILE_ENV, Limits::DEFAULT.file_bytes)?,
            total_bytes: var(Limits::TOTAL_ENV, Limits::DEFAULT.total_bytes)?,
        })
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// What a walk found besides the files to read.
#[derive(Debug, Default)]
struct Walk {
    files: Vec<PathBuf>,
    /// Entries of a directory that are not regular files.
    skipped: Vec<(PathBuf, &'static str)>,
    /// Named paths that are neither a regular file nor a directory.
    refused: Vec<(PathBuf, &'static str)>,
    /// Directories walked and files listed (by device and inode): each once.
    seen: std::collections::BTreeSet<(u64, u64)>,
}

/// What kind of non-regular file `t` is.
fn special_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (m.dev(), m.ino())
}

/// Expands files and directories into the list of files to read.
///
/// # Errors
/// The first path that cannot be read.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut w = Walk::default();
    for p in paths {
        expand_into(p, &mut w)?;
    }
    Ok(w.files)
}

fn expand_into(p: &Path, w: &mut Walk) -> Result<(), (PathBuf, std::io::Error)> {
    let meta = std::fs::metadata(p).map_err(|e| (p.to_path_buf(), e))?;
    if meta.is_dir() {
        walk(p, w).map_err(|e| (p.to_path_buf(), e))
    } else if meta.is_file() {
        if w.seen.insert(identity(&meta)) {
            w.files.push(p.to_path_buf());
        }
        Ok(())
    } else {
        w.refused.push((p.to_path_buf(), special_kind(meta.file_type())));
        Ok(())
    }
}

fn walk(dir: &Path, w: &mut Walk) -> std::io::Result<()> {
    if !w.seen.insert(identity(&std::fs::metadata(dir)?)) {
        // reached again (a symbolic link loop, or two links to one directory)
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        // follows symbolic links; a dangling one is left to the read (E0001)
        let Ok(meta) = std::fs::metadata(&p) else {
            if is_input_file(&p) {
                w.files.push(p);
            }
            continue;
        };
        if meta.is_dir() {
            walk(&p, w)?;
        } else if is_input_file(&p) {
            if !meta.is_file() {
                w.skipped.push((p, special_kind(meta.file_type())));
            } else if w.seen.insert(identity(&meta)) {
                w.files.push(p);
            }
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

/// Reads files and directories (`-`: YAML from standard input, once),
/// within the [`Limits`] of the environment ([`Limits::from_env`]).
/// Unreadable paths are diagnostics (E0001, E0007, E0008), not errors.
pub fn load(sources: &mut SourceMap, paths: &[PathBuf]) -> Loaded {
    match Limits::from_env() {
        Ok(limits) => load_with(sources, paths, limits),
        Err(message) => {
            let mut out = Loaded::default();
            let span = file_span(sources, Path::new("<environment>"));
            out.diagnostics.push(
                Diagnostic::new(&codes::INPUT_TOO_LARGE, message).primary(span, "invalid limit").help(format!(
                    "set {} and {} to a number of bytes, or unset them",
                    Limits::FILE_ENV,
                    Limits::TOTAL_ENV
                )),
            );
            out
        }
    }
}

/// [`load`] within `limits`.
pub fn load_with(sources: &mut SourceMap, paths: &[PathBuf], limits: Limits) -> Loaded {
    let mut out = Loaded::default();
    let mut budget = limits.total_bytes;
    if paths.iter().any(|p| p.as_os_str() == STDIN) {
        let name = Path::new("<stdin>");
        match read_bounded(std::io::stdin().lock(), limits.file_bytes.min(budget)) {
            Ok(Some(bytes)) => {
                budget -= bytes.len() as u64;
                out.extend(parse_bytes(sources, name, bytes));
            }
            Ok(None) => out.diagnostics.push(too_large(sources, name, limits, budget)),
            Err(e) => out.diagnostics.push(io_diag(sources, name, &e)),
        }
    }
    let mut w = Walk::default();
    for p in paths.iter().filter(|p| p.as_os_str() != STDIN) {
        if let Err((p, e)) = expand_into(p, &mut w) {
            // read what can be read
            out.diagnostics.push(io_diag(sources, &p, &e));
        }
    }
    for (p, kind) in &w.refused {
        out.diagnostics.push(
            Diagnostic::new(
                &codes::NOT_A_REGULAR_FILE,
                format!("`{}` is {kind}, not a file or directory", p.display()),
            )
            .primary(file_span(sources, p), "not read")
            .help("name a file or directory of manifests; `-` reads standard input"),
        );
    }
    for (p, kind) in &w.skipped {
        out.diagnostics.push(
            Diagnostic::new(
                &codes::SKIPPED_SPECIAL_FILE,
                format!("skipped `{}`: {kind}, not a regular file", p.display()),
            )
            .primary(file_span(sources, p), "not read")
            .help("remove it from the input directory"),
        );
    }
    for f in w.files {
        let read = std::fs::File::open(&f).and_then(|file| {
            // the walk saw a regular file; what was opened must be one too
            if file.metadata()?.is_file() {
                read_bounded(file, limits.file_bytes.min(budget))
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        match read {
            Ok(Some(bytes)) => {
                budget -= bytes.len() as u64;
                out.extend(parse_bytes(sources, &f, bytes));
            }
            Ok(None) => {
                out.diagnostics.push(too_large(sources, &f, limits, budget));
                if budget < limits.file_bytes {
                    // the run's limit: nothing more is read
                    break;
                }
            }
            Err(e) => out.diagnostics.push(io_diag(sources, &f, &e)),
        }
    }
    out
}

/// At most `limit` bytes of `r`; `None` when there are more.
fn read_bounded(r: impl std::io::Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(r, limit.saturating_add(1)), &mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

fn parse_bytes(sources: &mut SourceMap, name: &Path, bytes: Vec<u8>) -> Loaded {
    match String::from_utf8(bytes) {
        Ok(text) => parse_text(sources, &name.display().to_string(), text),
        Err(_) => Loaded {
            diagnostics: vec![
                Diagnostic::new(&codes::IO, format!("`{}` is not UTF-8 text", name.display()))
                    .primary(file_span(sources, name), "not UTF-8")
                    .help("save the file as UTF-8"),
            ],
            ..Loaded::default()
        },
    }
}

fn too_large(sources: &mut SourceMap, name: &Path, limits: Limits, budget: u64) -> Diagnostic {
    let (message, help) = if budget < limits.file_bytes {
        (
            format!(
                "`{}`: the inputs of this run exceed the limit of {} bytes; it and the files after it were not read",
                name.display(),
                limits.total_bytes
            ),
            format!("pass fewer files, or raise the limit ({}=BYTES)", Limits::TOTAL_ENV),
        )
    } else {
        (
            format!("`{}` is larger than the limit of {} bytes per file", name.display(), limits.file_bytes),
            format!("split the file, or raise the limit ({}=BYTES)", Limits::FILE_ENV),
        )
    };
    Diagnostic::new(&codes::INPUT_TOO_LARGE, message).primary(file_span(sources, name), "not read").help(help)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("egret-load-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("dir");
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n";

    fn codes(l: &Loaded) -> Vec<&'static str> {
        l.diagnostics.iter().map(|d| d.code.id).collect()
    }

    #[test]
    fn a_fifo_in_a_directory_is_skipped_and_a_named_device_refused() {
        let d = Dir::new("fifo");
        std::fs::write(d.0.join("a.yaml"), NS).expect("write");
        let fifo = d.0.join("pipe.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        let mut sm = SourceMap::new();
        let l = load(&mut sm, std::slice::from_ref(&d.0));
        assert_eq!(codes(&l), ["W0009"], "{:?}", l.diagnostics);
        assert!(l.diagnostics[0].message.contains("pipe.yaml`: a FIFO"), "{}", l.diagnostics[0].message);
        assert!(l.diagnostics[0].primary_span().is_some());
        assert_eq!(l.bundle.cluster.namespaces.len(), 1);
        // named on the command line: refused, never opened
        for p in [fifo, PathBuf::from("/dev/zero")] {
            let l = load(&mut sm, std::slice::from_ref(&p));
            assert_eq!(codes(&l), ["E0008"], "{}: {:?}", p.display(), l.diagnostics);
        }
    }

    #[test]
    fn symbolic_link_loops_are_walked_once_and_files_read_once() {
        let d = Dir::new("loop");
        std::fs::create_dir_all(d.0.join("sub")).expect("sub");
        std::fs::write(d.0.join("sub/a.yaml"), NS).expect("write");
        std::os::unix::fs::symlink(&d.0, d.0.join("sub/loop")).expect("loop");
        std::os::unix::fs::symlink(d.0.join("sub/a.yaml"), d.0.join("b.yaml")).expect("link");
        let mut sm = SourceMap::new();
        let l = load(&mut sm, &[d.0.clone(), d.0.join("sub/a.yaml")]);
        assert_eq!(codes(&l), Vec::<&str>::new(), "{:?}", l.diagnostics);
        assert_eq!(l.files.len(), 1, "one file, however many paths lead to it");
    }

    #[test]
    fn files_and_runs_beyond_the_limits_are_e0007_naming_file_and_limit() {
        let d = Dir::new("limits");
        // 100 MB (sparse): refused after reading one byte more than the limit
        let big = d.0.join("big.yaml");
        std::fs::File::create(&big).and_then(|f| f.set_len(100 << 20)).expect("big file");
        let mut sm = SourceMap::new();
        let l = load_with(&mut sm, std::slice::from_ref(&big), Limits::DEFAULT);
        assert_eq!(codes(&l), ["E0007"]);
        let message = &l.diagnostics[0].message;
        assert!(message.contains("big.yaml` is larger than the limit of 16777216 bytes per file"), "{message}");
        // the run's limit: the file that crosses it and those after it are not read
        for n in ["a", "b", "c"] {
            std::fs::write(d.0.join(format!("{n}.yaml")), NS).expect("write");
        }
        std::fs::remove_file(&big).expect("rm");
        let limits = Limits { file_bytes: 1000, total_bytes: 2 * NS.len() as u64 + 10 };
        let l = load_with(&mut sm, std::slice::from_ref(&d.0), limits);
        assert_eq!(codes(&l), ["E0007"], "{:?}", l.diagnostics);
        assert!(l.diagnostics[0].message.contains("c.yaml`: the inputs of this run exceed the limit of"));
        assert_eq!(l.files.len(), 2);
    }
}

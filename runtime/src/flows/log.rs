//! The flow log's files: JSON-lines segments in one directory, rotated at a
//! size, the oldest deleted, each sealed segment with its index.
//!
//! - `flows-NNNNNNNNNN.jsonl`: a segment, one [`FlowRecord`] per line, in the
//!   order written; the highest number is the one being written.
//! - `flows-NNNNNNNNNN.idx.json`: the index of a sealed segment
//!   ([`SegmentIndex`]), written when the next segment starts.
//! - The bound: at most [`LogConfig::files`] segments of at most
//!   `max_bytes / files` bytes each, so the segments never hold more than
//!   [`LogConfig::max_bytes`] (the indexes are small besides: one offset per
//!   line).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::FlowRecord;

/// Where the log is and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory.
    pub dir: PathBuf,
    /// The most bytes the segments hold together.
    pub max_bytes: u64,
    /// How many segments are kept (the one being written included).
    pub files: u32,
}

/// The default directory.
pub const DEFAULT_DIR: &str = "/var/log/egret/flows";
/// The default bound (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// The default number of segments.
pub const DEFAULT_FILES: u32 = 8;
/// The smallest segment allowed: a record always fits in one.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

impl LogConfig {
    /// The defaults in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig { dir: dir.into(), max_bytes: DEFAULT_MAX_BYTES, files: DEFAULT_FILES }
    }

    /// The size at which a segment is sealed.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / u64::from(self.files.max(2))).max(MIN_SEGMENT_BYTES)
    }
}

/// A sealed segment's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// The first record's time.
    pub first: Option<Timestamp>,
    /// The last record's time.
    pub last: Option<Timestamp>,
    /// Egress `IP:port` → the byte offsets of its lines.
    pub egress: BTreeMap<String, Vec<u64>>,
}

impl SegmentIndex {
    fn add(&mut self, r: &FlowRecord, offset: u64) {
        self.first = Some(self.first.map_or(r.time, |t| t.min(r.time)));
        self.last = Some(self.last.map_or(r.time, |t| t.max(r.time)));
        self.egress.entry(r.flow.egress.to_string()).or_default().push(offset);
    }
}

/// A segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its number.
    pub seq: u64,
    /// Its records.
    pub path: PathBuf,
    /// Its index, when sealed.
    pub index: PathBuf,
}

fn segment(dir: &Path, seq: u64) -> Segment {
    Segment {
        seq,
        path: dir.join(format!("flows-{seq:010}.jsonl")),
        index: dir.join(format!("flows-{seq:010}.idx.json")),
    }
}

/// The segments in `dir`, oldest first (none if the directory is missing).
///
/// # Errors
/// A directory that cannot be read.
pub fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("flows-")?.strip_suffix(".jsonl")) else { continue };
        if let Ok(seq) = n.parse() {
            out.push(segment(dir, seq));
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Every record of a segment (lines that do not parse, such as a line cut
/// short by a crash, are skipped).
///
/// # Errors
/// A file that cannot be read.
pub fn read_segment(path: &Path) -> io::Result<Vec<FlowRecord>> {
    let f = match File::open(path) {
        Ok(f) => f,
        // rotated away meanwhile
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        if let Ok(r) = serde_json::from_str(&line?) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A sealed segment's index (`None`: not sealed, or unreadable: scan it).
#[must_use]
pub fn read_index(s: &Segment) -> Option<SegmentIndex> {
    serde_json::from_slice(&fs::read(&s.index).ok()?).ok()
}

/// The records at `offsets` of a segment.
///
/// # Errors
/// A file that cannot be read.
pub fn read_at(path: &Path, offsets: &[u64]) -> io::Result<Vec<FlowRecord>> {
    let mut f = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut line = String::new();
    for &o in offsets {
        f.seek(SeekFrom::Start(o))?;
        line.clear();
        f.read_line(&mut line)?;
        if let Ok(r) = serde_json::from_str(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The writer.
#[derive(Debug)]
pub struct FlowLog {
    config: LogConfig,
    current: Segment,
    out: BufWriter<File>,
    size: u64,
    index: SegmentIndex,
    line: Vec<u8>,
}

impl FlowLog {
    /// Opens the log in `config.dir` (created if missing): appends to its
    /// newest segment (re-indexed), or starts the first.
    ///
    /// # Errors
    /// The directory or the segment cannot be created or read.
    pub fn open(config: LogConfig) -> io::Result<FlowLog> {
        fs::create_dir_all(&config.dir)?;
        let current = segments(&config.dir)?.pop().unwrap_or_else(|| segment(&config.dir, 1));
        let mut index = SegmentIndex::default();
        let mut size = 0;
        if let Ok(f) = File::open(&current.path) {
            let mut r = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = r.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                if let Ok(rec) = serde_json::from_str::<FlowRecord>(&line) {
                    index.add(&rec, size);
                }
                size += n as u64;
            }
        }
        let f = OpenOptions::new().create(true).append(true).open(&current.path)?;
        // a line cut short by a crash is cut off, so that appends start a line
        f.set_len(size)?;
        Ok(FlowLog { config, current, out: BufWriter::new(f), size, index, line: Vec::with_capacity(512) })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Appends a record (buffered until [`FlowLog::flush`]); seals the
    /// segment first when the record would not fit, and deletes the oldest
    /// segments beyond the bound.
    ///
    /// # Errors
    /// Writing, rotating or deleting failed.
    pub fn append(&mut self, r: &FlowRecord) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, r).map_err(io::Error::other)?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.size > 0 && self.size + len > self.config.segment_bytes() {
            self.rotate()?;
        }
        self.out.write_all(&self.line)?;
        self.index.add(r, self.size);
        self.size += len;
        Ok(())
    }

    /// Writes what is buffered to the file.
    ///
    /// # Errors
    /// Writing failed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let index = serde_json::to_vec(&std::mem::take(&mut self.index)).map_err(io::Error::other)?;
        // the index appears whole or not at all
        let tmp = self.current.index.with_extension("tmp");
        fs::write(&tmp, index)?;
        fs::rename(&tmp, &self.current.index)?;
        self.current = segment(&self.config.dir, self.current.seq + 1);
        let f = OpenOptions::new().create(true).append(true).open(&self.current.path)?;
        f.set_len(0)?;
        self.out = BufWriter::new(f);
        self.size = 0;
        let all = segments(&self.config.dir)?;
        let excess = all.len().saturating_sub(self.config.files.max(1) as usize);
        for s in &all[..excess] {
            for p in [&s.path, &s.index] {
                match fs::remove_file(p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The bytes the segments of `dir` hold.
///
/// # Errors
/// A directory that cannot be read.
pub fn size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for s in segments(dir)? {
        total += fs::metadata(&s.path).map_or(0, |m| m.len());
    }
    Ok(total)
}

//! Questions to the flow log: `flows who` and `flows list`.
//!
//! Records are joined into connections: a *created* record and the
//! *closed* or *expired* record of the same connection (same protocol,
//! egress, destination, pod address and port, and creation time, which
//! *closed* and *expired* records carry) make one [`Connection`]. Either
//! alone is enough to answer, so a connection whose *created* record was
//! rotated away is still found by its end.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

use super::log::{read_at, read_index, read_segment, segments};
use super::{Flow, FlowKind, FlowRecord};

/// A connection as the log knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The connection.
    #[serde(flatten)]
    pub flow: Flow,
    /// Created.
    pub opened: Timestamp,
    /// Closed or expired, and when (`None`: open when the log was last written).
    pub ended: Option<Ended>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ended {
    /// `closed` or `expired`.
    pub how: FlowKind,
    /// When.
    pub at: Timestamp,
}

impl Connection {
    /// Whether it was alive at `t`.
    #[must_use]
    pub fn alive_at(&self, t: Timestamp) -> bool {
        self.opened <= t && self.ended.is_none_or(|e| e.at >= t)
    }

    /// Whether its lifetime meets `[since, until]`.
    #[must_use]
    pub fn overlaps(&self, since: Option<Timestamp>, until: Option<Timestamp>) -> bool {
        until.is_none_or(|u| self.opened <= u) && since.is_none_or(|s| self.ended.is_none_or(|e| e.at >= s))
    }
}

type ConnKey = (String, SocketAddr, SocketAddr, IpAddr, u16, Timestamp);

/// Joins records (in log order) into connections, oldest first.
#[must_use]
pub fn connections(records: impl IntoIterator<Item = FlowRecord>) -> Vec<Connection> {
    let mut by: BTreeMap<ConnKey, Connection> = BTreeMap::new();
    for r in records {
        let opened = r.opened_at();
        let f = &r.flow;
        let key = (f.proto.clone(), f.egress, f.dst, f.pod.ip, f.pod.port, opened);
        let c = by.entry(key).or_insert_with(|| Connection { flow: r.flow.clone(), opened, ended: None });
        if r.event != FlowKind::Created {
            c.ended = Some(Ended { how: r.event, at: r.time });
        }
    }
    let mut out: Vec<Connection> = by.into_values().collect();
    out.sort_by_key(|c| (c.opened, c.flow.egress));
    out
}

/// The connections of the log in `dir` whose translated source was
/// `egress`, alive at `at` when given, oldest first. Sealed segments are
/// read through their index; the segment being written is scanned.
///
/// # Errors
/// The log cannot be read.
pub fn who(dir: &Path, egress: SocketAddr, at: Option<Timestamp>) -> io::Result<Vec<Connection>> {
    let key = egress.to_string();
    let mut records = Vec::new();
    for s in segments(dir)? {
        match read_index(&s) {
            Some(index) => {
                if let Some(offsets) = index.egress.get(&key) {
                    records.extend(read_at(&s.path, offsets)?);
                }
            }
            None => records.extend(read_segment(&s.path)?.into_iter().filter(|r| r.flow.egress == egress)),
        }
    }
    let mut out = connections(records);
    if let Some(t) = at {
        out.retain(|c| c.alive_at(t));
    }
    Ok(out)
}

/// What `flows list` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `namespace/name`, or the pod's address.
    pub pod: Option<String>,
    /// The policy's name.
    pub policy: Option<String>,
    /// The destination address, with or without its port.
    pub dst: Option<String>,
    /// Alive at or after.
    pub since: Option<Timestamp>,
    /// Alive at or before.
    pub until: Option<Timestamp>,
}

impl Filter {
    fn keeps(&self, c: &Connection) -> bool {
        let (c, lifetime) = (&c.flow, c);
        let pod_ok = self.pod.as_deref().is_none_or(|p| c.pod.display() == p || c.pod.ip.to_string() == p);
        let policy_ok = self.policy.as_deref().is_none_or(|p| c.policy.as_deref() == Some(p));
        let dst_ok = self.dst.as_deref().is_none_or(|d| c.dst.to_string() == d || c.dst.ip().to_string() == d);
        pod_ok && policy_ok && dst_ok && lifetime.overlaps(self.since, self.until)
    }
}

/// The connections of the log in `dir` that `filter` keeps, oldest first
/// (every segment is read: a connection opened long ago may still be open).
///
/// # Errors
/// The log cannot be read.
pub fn list(dir: &Path, filter: &Filter) -> io::Result<Vec<Connection>> {
    let mut records = Vec::new();
    for s in segments(dir)? {
        records.extend(read_segment(&s.path)?);
    }
    let mut out = connections(records);
    out.retain(|c| filter.keeps(c));
    Ok(out)
}

/// One line of text per connection.
#[must_use]
pub fn text(conns: &[Connection]) -> String {
    let mut out = String::new();
    if conns.is_empty() {
        out.push_str("no connection found\n");
    }
    for k in conns {
        let ended = match k.ended {
            Some(e) => format!("{} {}", e.how.name(), e.at),
            None => "open".to_owned(),
        };
        let c = &k.flow;
        out.push_str(&format!(
            "{} {} -> {} pod {} ({}:{}, node {}) policy {} gateway {} opened {} {}\n",
            c.proto,
            c.egress,
            c.dst,
            c.pod.display(),
            c.pod.ip,
            c.pod.port,
            c.pod.node.as_deref().unwrap_or("?"),
            c.policy.as_deref().unwrap_or("?"),
            c.gateway,
            k.opened,
            ended,
        ));
    }
    out
}

/// A time on the command line: RFC 3339 (`2026-12-08T10:32:00Z`,
/// `2026-12-08T10:32:00+01:00`), or a date and time without offset, taken as
/// UTC (`2026-12-08T10:32`, `2026-12-08 10:32:05`).
///
/// # Errors
/// Neither form.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| format!("`{s}` is not a time (RFC 3339, or YYYY-MM-DDTHH:MM[:SS] in UTC)"))
}

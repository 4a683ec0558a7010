//! Every bpffs path the loader uses, as pure functions of one root (bpfman's
//! rule: pin paths come from one module, nowhere else).
//!
//! Layout under the root (default [`DEFAULT_ROOT`]):
//!
//! ```text
//! <root>/
//!   gen-<N>/                  generation N (N ≥ 1, decimal, no leading zeros)
//!     maps/<map>              every map of the artifact, filled from its image
//!     progs/<program>         every program of the artifact, loaded
//!     info                    optional: counter labels and the decision
//!                             table (read-only ARRAY map, frozen)
//!     meta                    the commit marker: an ARRAY map holding the
//!                             generation's metadata; pinned last, unpinned first
//!   links/<attach>-<ifindex>  one tcx link per attachment, e.g.
//!                             `pod-veth-ingress-17`, `tunnel-ingress-4`
//!   state/<map>               the running generation's state maps (NAT
//!                             tables, counters: the artifact's `state`),
//!                             a second pin of `gen-<N>/maps/<map>`; the next
//!                             generation reuses them
//! ```
//!
//! Links live outside generations: a swap replaces the program inside each
//! pinned link (`bpf_link_update`), so a link outlives every generation it has
//! served and is never re-created by a swap.
//!
//! Contracts:
//! - every function here is pure (no filesystem access);
//! - [`PinLayout::link`] and [`parse_link_name`] are inverse, as are
//!   [`PinLayout::generation_dir`] and [`parse_generation_dir`];
//! - names are escaped with [`escape_name`] because bpffs refuses any name
//!   containing `.` (measured: `mkdir` fails with `EPERM`), while map names may
//!   contain dots; the escaping is injective.

use std::fmt;
use std::path::{Path, PathBuf};

use egret_bpf::artifact::AttachPoint;

/// Where pins go unless configured otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/egret";

/// Directory name prefix of a generation.
pub const GENERATION_PREFIX: &str = "gen-";

/// Name of the links directory.
pub const LINKS_DIR: &str = "links";

/// Name of the state maps directory.
pub const STATE_DIR: &str = "state";

/// Suffix of a state pin being replaced (`<escaped map>%new`): never the
/// output of [`escape_name`], whose only `%` sequences are `%25` and `%2e`.
pub const STATE_TEMP_SUFFIX: &str = "%new";

/// Name of a generation's maps directory.
pub const MAPS_DIR: &str = "maps";

/// Name of a generation's programs directory.
pub const PROGS_DIR: &str = "progs";

/// Name of a generation's informational record (counter labels, decision
/// table): a read-only ARRAY map no program reads.
pub const INFO_PIN: &str = "info";

/// Name of a generation's commit marker.
pub const META_PIN: &str = "meta";

/// A generation number: 1 for the first artifact ever loaded under a root,
/// then increasing by one per swap attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation after this one.
    #[must_use]
    pub const fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The pin layout under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    /// The layout under `root` (a directory on a bpffs mount).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> PinLayout {
        PinLayout { root: root.into() }
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/links`.
    #[must_use]
    pub fn links_dir(&self) -> PathBuf {
        self.root.join(LINKS_DIR)
    }

    /// `<root>/links/<attach>-<ifindex>`.
    #[must_use]
    pub fn link(&self, attach: AttachPoint, ifindex: u32) -> PathBuf {
        self.links_dir().join(link_name(attach, ifindex))
    }

    /// `<root>/state`.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// `<root>/state/<escaped map name>`.
    #[must_use]
    pub fn state_map(&self, map: &str) -> PathBuf {
        self.state_dir().join(escape_name(map))
    }

    /// `<root>/state/<escaped map name>%new`: where a replacement is pinned
    /// before it is renamed over [`PinLayout::state_map`].
    #[must_use]
    pub fn state_map_temp(&self, map: &str) -> PathBuf {
        self.state_dir().join(format!("{}{STATE_TEMP_SUFFIX}", escape_name(map)))
    }

    /// `<root>/gen-<N>`.
    #[must_use]
    pub fn generation_dir(&self, n: Generation) -> PathBuf {
        self.root.join(generation_dir_name(n))
    }

    /// `<root>/gen-<N>/maps`.
    #[must_use]
    pub fn maps_dir(&self, n: Generation) -> PathBuf {
        self.generation_dir(n).join(MAPS_DIR)
    }

    /// `<root>/gen-<N>/maps/<escaped map name>`.
    #[must_use]
    pub fn map(&self, n: Generation, map: &str) -> PathBuf {
        self.maps_dir(n).join(escape_name(map))
    }

    /// `<root>/gen-<N>/progs`.
    #[must_use]
    pub fn programs_dir(&self, n: Generation) -> PathBuf {
        self.generation_dir(n).join(PROGS_DIR)
    }

    /// `<root>/gen-<N>/progs/<escaped program name>`.
    #[must_use]
    pub fn program(&self, n: Generation, program: &str) -> PathBuf {
        self.programs_dir(n).join(escape_name(program))
    }

    /// `<root>/gen-<N>/info`, the generation's informational record.
    #[must_use]
    pub fn info(&self, n: Generation) -> PathBuf {
        self.generation_dir(n).join(INFO_PIN)
    }

    /// `<root>/gen-<N>/meta`, the generation's commit marker.
    #[must_use]
    pub fn meta(&self, n: Generation) -> PathBuf {
        self.generation_dir(n).join(META_PIN)
    }
}

/// `gen-<N>`.
#[must_use]
pub fn generation_dir_name(n: Generation) -> String {
    format!("{GENERATION_PREFIX}{}", n.0)
}

/// The generation a directory name denotes: `gen-17` → 17. Rejects leading
/// zeros, signs, zero and anything else, so each generation has one name.
#[must_use]
pub fn parse_generation_dir(name: &str) -> Option<Generation> {
    let digits = name.strip_prefix(GENERATION_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Generation)
}

/// The kebab-case name of an attach point (the manifest's spelling).
#[must_use]
pub const fn attach_point_name(attach: AttachPoint) -> &'static str {
    match attach {
        AttachPoint::PodVethIngress => "pod-veth-ingress",
        AttachPoint::TunnelIngress => "tunnel-ingress",
        AttachPoint::EgressIngress => "egress-ingress",
    }
}

/// Every attach point, in a fixed order.
pub const ATTACH_POINTS: [AttachPoint; 3] =
    [AttachPoint::PodVethIngress, AttachPoint::TunnelIngress, AttachPoint::EgressIngress];

/// Parses [`attach_point_name`].
#[must_use]
pub fn parse_attach_point(name: &str) -> Option<AttachPoint> {
    ATTACH_POINTS.into_iter().find(|a| attach_point_name(*a) == name)
}

/// `<attach>-<ifindex>`, the file name of a link pin.
#[must_use]
pub fn link_name(attach: AttachPoint, ifindex: u32) -> String {
    format!("{}-{ifindex}", attach_point_name(attach))
}

/// Parses [`link_name`]; `None` for anything the loader did not name.
#[must_use]
pub fn parse_link_name(name: &str) -> Option<(AttachPoint, u32)> {
    let (attach, ifindex) = name.rsplit_once('-')?;
    if ifindex.is_empty() || ifindex.starts_with('0') || !ifindex.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parse_attach_point(attach)?, ifindex.parse().ok()?))
}

/// A bpffs-safe file name for a map or program name: `%` becomes `%25` and
/// `.` becomes `%2e`; everything else is kept.
#[must_use]
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2e"),
            c => out.push(c),
        }
    }
    out
}

/// Inverse of [`escape_name`]; `None` for a name [`escape_name`] cannot produce.
#[must_use]
pub fn unescape_name(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find(['%', '.']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("%25") {
            out.push('%');
        } else if tail.starts_with("%2e") {
            out.push('.');
        } else {
            return None;
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let l = PinLayout::new("/sys/fs/bpf/egret");
        let g = Generation(7);
        assert_eq!(l.generation_dir(g), Path::new("/sys/fs/bpf/egret/gen-7"));
        assert_eq!(l.map(g, "src_class"), Path::new("/sys/fs/bpf/egret/gen-7/maps/src_class"));
        assert_eq!(l.map(g, ".rodata"), Path::new("/sys/fs/bpf/egret/gen-7/maps/%2erodata"));
        assert_eq!(l.program(g, "egret_src"), Path::new("/sys/fs/bpf/egret/gen-7/progs/egret_src"));
        assert_eq!(l.meta(g), Path::new("/sys/fs/bpf/egret/gen-7/meta"));
        assert_eq!(l.state_map("egret_nat_v4"), Path::new("/sys/fs/bpf/egret/state/egret_nat_v4"));
        assert_eq!(l.state_map_temp("a.b"), Path::new("/sys/fs/bpf/egret/state/a%2eb%new"));
        assert_eq!(unescape_name("a%2eb%new"), None, "a temporary pin never names a map");
        assert_eq!(l.link(AttachPoint::PodVethIngress, 17), Path::new("/sys/fs/bpf/egret/links/pod-veth-ingress-17"));
        assert_eq!(l.link(AttachPoint::TunnelIngress, 4), Path::new("/sys/fs/bpf/egret/links/tunnel-ingress-4"));
        assert_eq!(l.link(AttachPoint::EgressIngress, 3), Path::new("/sys/fs/bpf/egret/links/egress-ingress-3"));
    }

    #[test]
    fn attach_point_names_match_the_manifest_spelling() {
        for a in ATTACH_POINTS {
            let json = serde_json::to_string(&a).expect("serializes");
            assert_eq!(json, format!("\"{}\"", attach_point_name(a)));
            assert_eq!(parse_attach_point(attach_point_name(a)), Some(a));
        }
        assert_eq!(parse_attach_point("pod-veth"), None);
    }

    #[test]
    fn generation_dirs_round_trip_and_reject_other_spellings() {
        for n in [1, 2, 10, 999, u64::MAX] {
            assert_eq!(parse_generation_dir(&generation_dir_name(Generation(n))), Some(Generation(n)));
        }
        for bad in
            ["gen-", "gen-0", "gen-01", "gen--1", "gen-+1", "gen-1a", "gen1", "links", "gen-18446744073709551616"]
        {
            assert_eq!(parse_generation_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn link_names_round_trip_and_reject_other_spellings() {
        for a in ATTACH_POINTS {
            for i in [1, 2, 4096, u32::MAX] {
                assert_eq!(parse_link_name(&link_name(a, i)), Some((a, i)));
            }
        }
        for bad in [
            "pod-veth-ingress",
            "pod-veth-ingress-",
            "pod-veth-ingress-0",
            "pod-veth-ingress-07",
            "pod-veth-ingress-x",
            "egress-7",
            "pod-veth-ingress-4294967296",
        ] {
            assert_eq!(parse_link_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn escaping_is_injective_and_dot_free() {
        let names = ["a", "a.b", "a%2eb", "a%b", "%", ".", "..", "%25", "x_y.z%"];
        let escaped: Vec<String> = names.iter().map(|n| escape_name(n)).collect();
        for (n, e) in names.iter().zip(&escaped) {
            assert!(!e.contains('.'), "{e}");
            assert_eq!(unescape_name(e).as_deref(), Some(*n));
        }
        let mut sorted = escaped.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(unescape_name("a.b"), None);
        assert_eq!(unescape_name("a%2"), None);
        assert_eq!(unescape_name("a%41"), None);
    }
}

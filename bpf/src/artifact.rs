//! A node's compiled artifact: what `egret compile -o DIR` writes and the loader reads.
//!
//! On disk, per node `NODE`:
//! - `NODE.o` — the relocatable BPF object (programs, BTF-defined maps, holes in
//!   `.egret.holes`, see [`crate::elf`]);
//! - `NODE.artifact.json` — the [`Manifest`]: which program attaches where, how
//!   each hole is filled on the node, and the initial content of every map
//!   (map images); optionally what each index of the counter maps counts
//!   (`counters`, for metrics labels); plus a SHA-256 digest of everything,
//!   so a loader can tell that a new artifact is identical to the running
//!   one without comparing bytes, and a reader that object and manifest were
//!   written together. The digest is no signature: whoever can write the
//!   directory can recompute it ([`Artifact::resealed`]); what an artifact
//!   does is checked by re-deriving it from its plan
//!   (`egret_compiler::codegen::rederive`, `egret verify`, `egret-loader apply`).
//!
//! Map image entries are hex strings of the exact key and value bytes the
//! kernel map holds (network byte order inside addresses, little-endian for
//! host integers, exactly as the generated program reads them). Per-CPU maps
//! list one value, which the loader writes for every CPU.
//!
//! **State maps** (`state` in the manifest): maps whose content the compiler
//! does not produce — written by the programs (NAT connection tables,
//! counters, probe replies) or by the node's agent at run time (floating
//! slots' owners) — and must outlive a generation swap. A loader reuses the running generation's map of that name
//! for the next generation when the definition (kind, key size, value size,
//! capacity, flags) is unchanged, and creates a new one otherwise. A state
//! map's image is empty and it is never a `prog_array` ([`Artifact::check`]).
//! [`Artifact::new`] marks the gateway templates' such maps
//! ([`TEMPLATE_STATE_MAPS`]) by rule; other producers add theirs with
//! [`Artifact::with_state`].
//!
//! Contract: [`write_dir`] then [`read_dir`] returns an equal [`Artifact`];
//! [`Artifact::digest`] depends only on the object bytes and the manifest
//! content (not on file names or time).

use crate::maps::{MapDef, MapKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest format identifier; bumped on any incompatible change.
pub const FORMAT: &str = "egret-artifact/v1";

/// Where a program is attached on the node (tcx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachPoint {
    /// Ingress of each local pod's host-side veth (packets leaving the pod).
    PodVethIngress,
    /// Ingress of egret's tunnel device `egret0`.
    TunnelIngress,
    /// Ingress of an egress interface (replies from outside).
    EgressIngress,
}

/// How the loader fills a hole (or a late-bound map value field) on the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HoleSource {
    /// The ifindex of a link, by name (e.g. `egret0`).
    Ifindex { link: String },
    /// A constant known at compile time (kept for completeness; normally patched before writing).
    Constant { value: u64 },
    /// The IPv4 address of an egress slot, resolved on the node (host byte order).
    SlotIpv4 { slot: u32 },
    /// The IPv6 address of an egress slot, resolved on the node: 16 bytes,
    /// so a late field only ([`FieldEncoding::Ipv6`]), never a hole (an
    /// instruction's immediate holds 64 bits at most; [`Artifact::check`]).
    SlotIpv6 { slot: u32 },
    /// The TCP MSS clamp of inner IPv4 (`ipv6` false) or IPv6 packets for
    /// this node's underlay MTU ([`crate::layout::tunnel_mss`]), or `default`
    /// (the value compiled in) where the loader is not told that MTU. Tools
    /// that check an artifact offline use `default`.
    UnderlayMss { ipv6: bool, default: u16 },
}

impl std::fmt::Display for HoleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoleSource::Ifindex { link } => write!(f, "the ifindex of `{link}`"),
            HoleSource::Constant { value } => write!(f, "the constant {value}"),
            HoleSource::SlotIpv4 { slot } => write!(f, "the IPv4 egress address of slot {slot}"),
            HoleSource::SlotIpv6 { slot } => write!(f, "the IPv6 egress address of slot {slot}"),
            HoleSource::UnderlayMss { ipv6, default } => {
                write!(f, "the underlay's {} MSS (default {default})", if *ipv6 { "IPv6" } else { "IPv4" })
            }
        }
    }
}

impl HoleSource {
    /// Whether the source fills a hole or a 32-bit late field (everything
    /// but [`HoleSource::SlotIpv6`]).
    #[must_use]
    pub fn is_word(&self) -> bool {
        !matches!(self, HoleSource::SlotIpv6 { .. })
    }
}

/// A program of the artifact: where it is attached and/or which
/// `prog_array` slot it fills.
///
/// Contract: a program has an attach point, a tail-call slot, or both (the
/// loader rejects a program with neither). `attach` and `tail_call` are
/// omitted from the JSON when absent, so an attached program without a slot
/// serializes (and digests) exactly as in artifacts written before tail-call
/// targets existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramSpec {
    /// Program (function symbol) name in the object.
    pub name: String,
    /// Where it is attached; `None` for a pure tail-call target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachPoint>,
    /// The `prog_array` slot the loader fills with this program (of the same
    /// generation), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_call: Option<TailCallSlot>,
}

impl ProgramSpec {
    /// A program attached at `attach`.
    #[must_use]
    pub fn attached(name: impl Into<String>, attach: AttachPoint) -> ProgramSpec {
        ProgramSpec { name: name.into(), attach: Some(attach), tail_call: None }
    }

    /// An unattached program that fills slot `index` of the `prog_array` `map`.
    #[must_use]
    pub fn tail_call_target(name: impl Into<String>, map: impl Into<String>, index: u32) -> ProgramSpec {
        ProgramSpec { name: name.into(), attach: None, tail_call: Some(TailCallSlot { map: map.into(), index }) }
    }
}

/// A slot of a `prog_array` map. The map's image must be empty: the loader
/// writes each slot with the file descriptor of the program that names it,
/// loaded in the same generation, so a generation swap replaces the tail-call
/// targets together with the programs that call them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TailCallSlot {
    /// The `prog_array` map's name.
    pub map: String,
    /// The slot (map key).
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoleSpec {
    pub name: String,
    pub source: HoleSource,
}

/// One map entry, as hex strings of the raw key and value bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// Value fields the loader overwrites on the node before writing the
    /// entry (node-local facts: an interface's ifindex, a slot's egress
    /// address). Omitted when empty, so entries without late fields encode
    /// and digest as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<LateField>,
}

/// A field of a map value that the loader fills on the node from a
/// [`HoleSource`] (the bytes in `value` there are placeholders, zero): 4
/// bytes for a 32-bit source, 16 for an IPv6 address.
///
/// Contract ([`Artifact::check`]): `offset + encoding.width() <= value_size`,
/// and the encoding is [`FieldEncoding::Ipv6`] exactly when the source is
/// [`HoleSource::SlotIpv6`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LateField {
    /// Byte offset in the value.
    pub offset: u32,
    /// Where the value comes from.
    pub source: HoleSource,
    /// How the resolved value is written.
    pub encoding: FieldEncoding,
}

/// How a [`LateField`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldEncoding {
    /// Little-endian `u32` (host integers: ifindexes).
    Le32,
    /// Big-endian `u32` (IPv4 addresses in network byte order).
    Be32,
    /// An IPv6 address, 16 bytes in network byte order.
    Ipv6,
}

/// A late field's value as resolved on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateValue {
    /// A 32-bit value (ifindex, IPv4 address in host order).
    Word(u32),
    /// An IPv6 address.
    Ipv6(std::net::Ipv6Addr),
}

impl std::fmt::Display for FieldEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FieldEncoding::Le32 => "a little-endian u32",
            FieldEncoding::Be32 => "a big-endian u32",
            FieldEncoding::Ipv6 => "an IPv6 address",
        })
    }
}

impl FieldEncoding {
    /// The field's width in bytes.
    #[must_use]
    pub const fn width(self) -> u32 {
        match self {
            FieldEncoding::Le32 | FieldEncoding::Be32 => 4,
            FieldEncoding::Ipv6 => 16,
        }
    }

    /// The bytes of `v` in this encoding ([`FieldEncoding::width`] of
    /// them); `None` when the value is not of the encoding's kind (an IPv6
    /// address for a 32-bit field, or a word for an IPv6 one).
    #[must_use]
    pub fn encode(self, v: LateValue) -> Option<Vec<u8>> {
        match (self, v) {
            (FieldEncoding::Le32, LateValue::Word(w)) => Some(w.to_le_bytes().to_vec()),
            (FieldEncoding::Be32, LateValue::Word(w)) => Some(w.to_be_bytes().to_vec()),
            (FieldEncoding::Ipv6, LateValue::Ipv6(a)) => Some(a.octets().to_vec()),
            _ => None,
        }
    }
}

/// A map's definition and initial content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapImage {
    pub name: String,
    /// `hash`, `array`, `lpm_trie`, `percpu_array`, `percpu_hash`, `lru_hash`.
    pub kind: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub entries: Vec<Entry>,
}

impl MapImage {
    /// An empty image of a map definition.
    pub fn of(def: &MapDef) -> MapImage {
        MapImage {
            name: def.name.clone(),
            kind: kind_name(def.kind).to_string(),
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            flags: def.flags,
            entries: Vec::new(),
        }
    }

    /// Adds an entry; sizes are checked by [`Manifest::check`].
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.entries.push(Entry { key: hex(key), value: hex(value), late: Vec::new() });
    }

    /// Adds an entry with late-bound value fields.
    pub fn push_late(&mut self, key: &[u8], value: &[u8], late: Vec<LateField>) {
        self.entries.push(Entry { key: hex(key), value: hex(value), late });
    }

    /// Decoded entries.
    pub fn decoded(&self) -> Result<Vec<KeyValue>, ArtifactError> {
        self.entries.iter().map(|e| Ok((unhex(&e.key, &self.name)?, unhex(&e.value, &self.name)?))).collect()
    }
}

pub fn kind_name(k: MapKind) -> &'static str {
    k.name()
}

/// How a manifest's map images fail to describe an object's maps
/// ([`check_images`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageMismatch {
    /// An image for a map the object does not define.
    #[error("map image `{map}` names no map of the object")]
    Unknown {
        /// Map name.
        map: String,
    },
    /// An object map without an image.
    #[error("the object's map `{map}` has no map image")]
    Missing {
        /// Map name.
        map: String,
    },
    /// An image whose geometry differs from the object's map (or a second
    /// image of one map: field `image count`).
    #[error("map image `{map}`: {field} is {image} in the image, {object} in the object")]
    Field {
        /// Map name.
        map: String,
        /// Which field differs (`kind`, `key_size`, ...).
        field: &'static str,
        /// The image's value.
        image: String,
        /// The object's value.
        object: String,
    },
}

/// The one check that map images describe exactly an object's maps: one
/// image per map, none for maps the object lacks, and each image's kind, key
/// size, value size, capacity and flags equal the object's. The first
/// failure, images in manifest order, then maps without an image.
///
/// # Errors
/// [`ImageMismatch`].
pub fn check_images(images: &[MapImage], maps: &[MapDef]) -> Result<(), ImageMismatch> {
    let mut seen = std::collections::BTreeSet::new();
    for img in images {
        let Some(def) = maps.iter().find(|d| d.name == img.name) else {
            return Err(ImageMismatch::Unknown { map: img.name.clone() });
        };
        let field =
            |field, image: String, object: String| ImageMismatch::Field { map: img.name.clone(), field, image, object };
        if !seen.insert(img.name.as_str()) {
            return Err(field("image count", "2 or more".into(), "1".into()));
        }
        let fields: [(&'static str, String, String); 5] = [
            ("kind", img.kind.clone(), kind_name(def.kind).to_owned()),
            ("key_size", img.key_size.to_string(), def.key_size.to_string()),
            ("value_size", img.value_size.to_string(), def.value_size.to_string()),
            ("max_entries", img.max_entries.to_string(), def.max_entries.to_string()),
            ("flags", img.flags.to_string(), def.flags.to_string()),
        ];
        if let Some((name, image, object)) = fields.into_iter().find(|(_, i, o)| i != o) {
            return Err(field(name, image, object));
        }
    }
    match maps.iter().find(|d| !seen.contains(d.name.as_str())) {
        Some(missing) => Err(ImageMismatch::Missing { map: missing.name.clone() }),
        None => Ok(()),
    }
}

/// What one index of a counter map counts, for people and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterLabel {
    pub index: u32,
    /// A bounded label value (a drop/pass reason name, or a rule's text).
    pub name: String,
    /// The policies whose traffic this index counts, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// The labels of one counter map (an array indexed by what it counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterMap {
    pub map: String,
    pub labels: Vec<CounterLabel>,
}

/// What the source classifier does for packets from `source` to
/// `destination`, for people: the node's decision table as its plan has it
/// (inspection only; no program reads it). With the `inline` layout the
/// decisions are compiled into code and no map holds them, so the artifact
/// carries this table for `egret-agent maps` / `egret-loader maps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// A local endpoint's address.
    pub source: std::net::IpAddr,
    /// The destination prefix (`203.0.113.0/24`).
    pub destination: String,
    /// What happens while every gateway is live.
    pub decision: Decision,
    /// Where it goes instead, in order, when the gateways before are down
    /// (the rest of the endpoint's failover order; `egret_gw_live` decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Decision>,
    /// The rule index (`egret_policy_stats`) that counts it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
}

/// A decision of the source classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Decision {
    /// Normal routing (an excluded prefix).
    Pass,
    /// Dropped: no gateway.
    Drop,
    /// Tunnelled to `gateway` with the slot (VNI) `slot`.
    Redirect { gateway: std::net::IpAddr, slot: u32 },
    /// SNATed on this node through the slot `slot`.
    LocalEgress { slot: u32 },
}

/// A node's decision table ([`DecisionRow`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DecisionTable {
    /// The classifier layout (`inline` or `maps`).
    pub layout: String,
    /// Cluster-internal prefixes (always pass, before any row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub internal: Vec<String>,
    /// One row per (local endpoint, prefix of its class), sorted.
    pub rows: Vec<DecisionRow>,
    /// The class of each source in the classifier's tables, where the
    /// layout keys its destination tables by class (lets a reader join the
    /// live `egret_dst_*` maps with their sources).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub classes: std::collections::BTreeMap<std::net::IpAddr, u32>,
    /// Egress address of each slot the rows name, where known at compile
    /// time: the IPv4 one (IPv4 sources' rows).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub egress: std::collections::BTreeMap<u32, std::net::IpAddr>,
    /// The same for IPv6 (IPv6 sources' rows). Omitted when empty, so
    /// IPv4-only tables encode and digest as before.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub egress6: std::collections::BTreeMap<u32, std::net::Ipv6Addr>,
}

/// The maps whose content the compiler does not produce (`crate::templates`:
/// the NAT tables, the per-CPU counters and the probe replies, which the
/// programs write, and the gateways' liveness and the floating slots'
/// owners, which the node's agent writes, and the flow events' ring buffer,
/// which the agent reads while generations change): state maps wherever they appear
/// with an empty image ([`Artifact::new`] marks them), kept across swaps.
pub const TEMPLATE_STATE_MAPS: [&str; 10] = [
    crate::templates::map::NAT_V4,
    crate::templates::map::RNAT_V4,
    crate::templates::map::NAT_V6,
    crate::templates::map::RNAT_V6,
    crate::templates::map::GW_STATS,
    crate::templates::map::PROBE_RX,
    crate::templates::map::FLOAT_OWNER,
    crate::templates::map::GW_LIVE,
    crate::templates::map::GW_DOWN,
    crate::templates::map::FLOW_EVENTS,
];

/// The manifest (`NODE.artifact.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub node: String,
    /// SHA-256 over the object bytes and the manifest's other fields
    /// (each length-prefixed), 64 hex digits.
    pub digest: String,
    pub programs: Vec<ProgramSpec>,
    pub holes: Vec<HoleSpec>,
    pub maps: Vec<MapImage>,
    /// What each index of the counter maps counts (optional; part of the
    /// digest when present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterMap>,
    /// Names of the state maps (see the module doc), sorted, unique.
    /// Omitted when empty and then not part of the digest, so artifacts
    /// without state maps encode and digest as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    /// The node's decision table, for inspection (optional; part of the
    /// digest when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionTable>,
}

/// A map entry's key and value bytes.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An artifact in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub object: Vec<u8>,
    pub manifest: Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not an egret artifact manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("artifact format `{found}` is not `{FORMAT}`")]
    Format { found: String },
    #[error("map `{map}`: {message}")]
    Map { map: String, message: String },
    #[error("hole `%{hole}`: {message}")]
    Hole { hole: String, message: String },
    #[error("digest mismatch: manifest says {manifest}, content hashes to {actual}")]
    Digest { manifest: String, actual: String },
}

impl Artifact {
    /// Builds an artifact and computes its digest.
    pub fn new(
        node: &str,
        object: Vec<u8>,
        programs: Vec<ProgramSpec>,
        holes: Vec<HoleSpec>,
        maps: Vec<MapImage>,
    ) -> Artifact {
        let mut manifest = Manifest {
            format: FORMAT.to_string(),
            node: node.to_string(),
            digest: String::new(),
            programs,
            holes,
            maps,
            counters: Vec::new(),
            state: Vec::new(),
            decisions: None,
        };
        manifest.state = manifest
            .maps
            .iter()
            .filter(|m| TEMPLATE_STATE_MAPS.contains(&m.name.as_str()) && m.entries.is_empty())
            .map(|m| m.name.clone())
            .collect();
        manifest.state.sort();
        manifest.digest = digest(&object, &manifest);
        Artifact { object, manifest }
    }

    /// The same artifact with `maps` added to its state maps, digest
    /// recomputed ([`Artifact::check`] rejects names that are not
    /// program-only maps of the artifact).
    #[must_use]
    pub fn with_state<S: Into<String>>(mut self, maps: impl IntoIterator<Item = S>) -> Artifact {
        self.manifest.state.extend(maps.into_iter().map(Into::into));
        self.manifest.state.sort();
        self.manifest.state.dedup();
        self.manifest.digest = digest(&self.object, &self.manifest);
        self
    }

    /// The same artifact carrying its decision table, digest recomputed.
    #[must_use]
    pub fn with_decisions(mut self, table: DecisionTable) -> Artifact {
        self.manifest.decisions = Some(table);
        self.manifest.digest = digest(&self.object, &self.manifest);
        self
    }

    /// True if `map` is a state map of this artifact.
    #[must_use]
    pub fn is_state(&self, map: &str) -> bool {
        self.manifest.state.iter().any(|s| s == map)
    }

    /// The same artifact with counter labels, digest recomputed.
    #[must_use]
    pub fn with_counters(mut self, counters: Vec<CounterMap>) -> Artifact {
        self.manifest.counters = counters;
        self.manifest.digest = digest(&self.object, &self.manifest);
        self
    }

    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The same artifact with its digest recomputed over its current
    /// content: what anyone who can write an artifact directory can do. The
    /// digest tells that object and manifest belong together; it
    /// authenticates nothing (`egret_compiler::codegen::rederive` catches
    /// changes of behaviour).
    #[must_use]
    pub fn resealed(mut self) -> Artifact {
        self.manifest.digest = digest(&self.object, &self.manifest);
        self
    }

    /// Checks the format, the digest and every map image's entry sizes and count.
    pub fn check(&self) -> Result<(), ArtifactError> {
        if self.manifest.format != FORMAT {
            return Err(ArtifactError::Format { found: self.manifest.format.clone() });
        }
        let actual = digest(&self.object, &self.manifest);
        if actual != self.manifest.digest {
            return Err(ArtifactError::Digest { manifest: self.manifest.digest.clone(), actual });
        }
        if let Some(h) = self.manifest.holes.iter().find(|h| !h.source.is_word()) {
            return Err(ArtifactError::Hole {
                hole: h.name.clone(),
                message: format!("source {} is 16 bytes wide: a late field only, never a hole", h.source),
            });
        }
        for m in &self.manifest.maps {
            let entries = m.decoded()?;
            if entries.len() > m.max_entries as usize {
                return Err(ArtifactError::Map {
                    map: m.name.clone(),
                    message: format!("{} entries exceed max_entries {}", entries.len(), m.max_entries),
                });
            }
            for f in m.entries.iter().flat_map(|e| &e.late) {
                let message = if f.offset.saturating_add(f.encoding.width()) > m.value_size {
                    format!("late field at offset {} exceeds the {}-byte value", f.offset, m.value_size)
                } else if f.source.is_word() == (f.encoding == FieldEncoding::Ipv6) {
                    format!(
                        "late field at offset {}: source {} cannot be written as {}",
                        f.offset, f.source, f.encoding
                    )
                } else {
                    continue;
                };
                return Err(ArtifactError::Map { map: m.name.clone(), message });
            }
            if self.is_state(&m.name) && (!entries.is_empty() || m.kind == kind_name(MapKind::ProgArray)) {
                return Err(ArtifactError::Map {
                    map: m.name.clone(),
                    message: "a state map must have an empty image and must not be a prog_array".into(),
                });
            }
            for (k, v) in &entries {
                if k.len() != m.key_size as usize || v.len() != m.value_size as usize {
                    return Err(ArtifactError::Map {
                        map: m.name.clone(),
                        message: format!(
                            "entry of {}+{} bytes, map is {}+{}",
                            k.len(),
                            v.len(),
                            m.key_size,
                            m.value_size
                        ),
                    });
                }
            }
        }
        if let Some(s) = self.manifest.state.iter().find(|s| !self.manifest.maps.iter().any(|m| &m.name == *s)) {
            return Err(ArtifactError::Map {
                map: s.clone(),
                message: "is named as state but has no map image".into(),
            });
        }
        Ok(())
    }
}

pub fn object_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.o"))
}

pub fn manifest_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.artifact.json"))
}

/// Writes `NODE.o` and `NODE.artifact.json` into `dir`.
pub fn write_dir(dir: &Path, a: &Artifact) -> Result<(), ArtifactError> {
    let node = &a.manifest.node;
    let op = object_path(dir, node);
    std::fs::write(&op, &a.object).map_err(|source| ArtifactError::Io { path: op.clone(), source })?;
    let mp = manifest_path(dir, node);
    let json = serde_json::to_string_pretty(&a.manifest)
        .map_err(|e| ArtifactError::Manifest { path: mp.clone(), message: e.to_string() })?;
    std::fs::write(&mp, json + "\n").map_err(|source| ArtifactError::Io { path: mp, source })
}

/// Reads and checks a node's artifact from `dir`.
pub fn read_dir(dir: &Path, node: &str) -> Result<Artifact, ArtifactError> {
    let op = object_path(dir, node);
    let object = std::fs::read(&op).map_err(|source| ArtifactError::Io { path: op, source })?;
    let mp = manifest_path(dir, node);
    let text = std::fs::read_to_string(&mp).map_err(|source| ArtifactError::Io { path: mp.clone(), source })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| ArtifactError::Manifest { path: mp, message: e.to_string() })?;
    let a = Artifact { object, manifest };
    a.check()?;
    Ok(a)
}

fn digest(object: &[u8], m: &Manifest) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    // each field length-prefixed, so field boundaries matter
    let mut eat = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    eat(object);
    eat(m.format.as_bytes());
    eat(m.node.as_bytes());
    let rest = serde_json::to_vec(&(&m.programs, &m.holes, &m.maps)).unwrap_or_default();
    eat(&rest);
    if !m.counters.is_empty() {
        // only when present, so digests of artifacts without labels are unchanged
        eat(&serde_json::to_vec(&m.counters).unwrap_or_default());
    }
    if !m.state.is_empty() {
        // likewise: artifacts without state maps digest as before
        eat(b"state");
        eat(&serde_json::to_vec(&m.state).unwrap_or_default());
    }
    if let Some(d) = &m.decisions {
        eat(b"decisions");
        eat(&serde_json::to_vec(d).unwrap_or_default());
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str, map: &str) -> Result<Vec<u8>, ArtifactError> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ArtifactError::Map { map: map.to_string(), message: format!("`{s}` is not hex") });
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|e| ArtifactError::Map { map: map.to_string(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_round_trip_and_digest() {
        let def = MapDef::new("src_class", MapKind::Hash, 4, 4, 16).expect("map");
        let mut img = MapImage::of(&def);
        img.push(&[10, 244, 1, 10], &[0, 0, 0, 0]);
        let a = Artifact::new(
            "n1",
            vec![1, 2, 3],
            vec![ProgramSpec::attached("egret_src", AttachPoint::PodVethIngress)],
            vec![HoleSpec { name: "tunnel_ifindex".into(), source: HoleSource::Ifindex { link: "egret0".into() } }],
            vec![img],
        );
        let labelled = a.clone().with_counters(vec![CounterMap {
            map: "counters".into(),
            labels: vec![CounterLabel { index: 0, name: "pass".into(), policies: vec!["p".into()] }],
        }]);
        assert_ne!(labelled.digest(), a.digest());
        labelled.check().expect("labelled artifact checks");
        let dir = std::env::temp_dir().join(format!("egret-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        write_dir(&dir, &a).expect("write");
        let b = read_dir(&dir, "n1").expect("read");
        assert_eq!(a, b);
        // tampering is detected
        let mut c = b.clone();
        c.manifest.maps[0].entries[0].value = "01000000".into();
        assert!(matches!(c.check(), Err(ArtifactError::Digest { .. })));
        let mut e = b.clone();
        e.manifest.maps[0].entries[0].late =
            vec![LateField { offset: 1, source: HoleSource::SlotIpv4 { slot: 1 }, encoding: FieldEncoding::Be32 }];
        e.manifest.digest = digest(&e.object, &e.manifest);
        assert!(matches!(e.check(), Err(ArtifactError::Map { message, .. }) if message.contains("late field")));
        e.manifest.maps[0].entries[0].late[0].offset = 0;
        e.manifest.digest = digest(&e.object, &e.manifest);
        e.check().expect("a late field inside the value");
        assert_eq!(FieldEncoding::Be32.encode(LateValue::Word(0x0a00_0001)), Some(vec![10, 0, 0, 1]));
        let ip6: std::net::Ipv6Addr = "2001:db8::1".parse().expect("ipv6");
        assert_eq!(FieldEncoding::Ipv6.encode(LateValue::Ipv6(ip6)), Some(ip6.octets().to_vec()));
        assert_eq!(FieldEncoding::Ipv6.encode(LateValue::Word(1)), None);
        assert_eq!(FieldEncoding::Le32.encode(LateValue::Ipv6(ip6)), None);
        // an IPv6 late field is 16 bytes wide and must take an IPv6 source
        e.manifest.maps[0].entries[0].late =
            vec![LateField { offset: 0, source: HoleSource::SlotIpv6 { slot: 1 }, encoding: FieldEncoding::Ipv6 }];
        e.manifest.digest = digest(&e.object, &e.manifest);
        assert!(matches!(e.check(), Err(ArtifactError::Map { message, .. }) if message.contains("exceeds")));
        e.manifest.maps[0].entries[0].late[0].encoding = FieldEncoding::Be32;
        e.manifest.digest = digest(&e.object, &e.manifest);
        assert!(matches!(e.check(), Err(ArtifactError::Map { message, .. }) if message.contains("cannot be written")));
        let mut h = b.clone();
        h.manifest.holes[0].source = HoleSource::SlotIpv6 { slot: 1 };
        h.manifest.digest = digest(&h.object, &h.manifest);
        assert!(matches!(h.check(), Err(ArtifactError::Hole { hole, .. }) if hole == "tunnel_ifindex"));
        let mut d = b.clone();
        d.manifest.maps[0].entries[0].key = "0a".into();
        d.manifest.digest = digest(&d.object, &d.manifest);
        assert!(matches!(d.check(), Err(ArtifactError::Map { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn template_state_maps_are_marked_by_rule_and_checked() {
        let maps = crate::templates::maps();
        let images: Vec<MapImage> = maps.iter().map(MapImage::of).collect();
        let a = Artifact::new("gw", vec![1], vec![], vec![], images.clone());
        assert_eq!(
            a.manifest.state,
            [
                "egret_float_owner",
                "egret_flow_events",
                "egret_gw_stats",
                "egret_nat_v4",
                "egret_nat_v6",
                "egret_probe_rx",
                "egret_rnat_v4",
                "egret_rnat_v6"
            ]
        );
        assert!(!a.is_state("egret_gw_peers"), "compiled from the plan: not state");
        assert!(a.is_state("egret_nat_v4") && !a.is_state("egret_local_eps_v4"));
        a.check().expect("state maps with empty images check");
        // the manifest round-trips through JSON with its state list
        let json = serde_json::to_string(&a.manifest).expect("json");
        assert_eq!(serde_json::from_str::<Manifest>(&json).expect("parses"), a.manifest);
        // a template map with an image is loader-written: not marked
        let mut filled = images.clone();
        filled.iter_mut().find(|m| m.name == "egret_gw_stats").expect("stats").push(&[0; 4], &[0; 16]);
        assert!(!Artifact::new("gw", vec![1], vec![], vec![], filled).is_state("egret_gw_stats"));
        // other producers add theirs; unknown or filled maps fail the check
        let b = a.clone().with_state(["egret_local_eps_v4"]);
        assert_ne!(b.digest(), a.digest());
        assert!(b.is_state("egret_local_eps_v4"));
        b.check().expect("an empty hash may be state");
        assert!(matches!(a.clone().with_state(["nope"]).check(), Err(ArtifactError::Map { map, .. }) if map == "nope"));
        let mut slots = images;
        slots.iter_mut().find(|m| m.name == "egret_gw_slots").expect("slots").push(&[0; 4], &[0; 28]);
        let c = Artifact::new("gw", vec![1], vec![], vec![], slots).with_state(["egret_gw_slots"]);
        assert!(matches!(c.check(), Err(ArtifactError::Map { map, .. }) if map == "egret_gw_slots"));
        // an artifact without state maps serializes without the field
        let plain = Artifact::new("n", vec![1], vec![], vec![], vec![]);
        assert!(!serde_json::to_string(&plain.manifest).expect("json").contains("state"));
    }

    #[test]
    fn program_specs_serialize_compatibly() {
        let attached = ProgramSpec::attached("egret_src", AttachPoint::PodVethIngress);
        let json = serde_json::to_string(&attached).expect("json");
        // the pre-tail-call encoding: digests of existing artifacts are unchanged
        assert_eq!(json, r#"{"name":"egret_src","attach":"pod-veth-ingress"}"#);
        assert_eq!(serde_json::from_str::<ProgramSpec>(&json).expect("parses"), attached);
        let target = ProgramSpec::tail_call_target("egret_gw_local", "egret_gw_progs", 0);
        let json = serde_json::to_string(&target).expect("json");
        assert_eq!(json, r#"{"name":"egret_gw_local","tail_call":{"map":"egret_gw_progs","index":0}}"#);
        assert_eq!(serde_json::from_str::<ProgramSpec>(&json).expect("parses"), target);
    }
}

//! Map definitions: the kinds of map egret emits and the constraints the kernel
//! places on them.
//!
//! Contract: a [`MapDef`] that passes [`MapDef::validate`] is accepted by the
//! kernel's `map_alloc_check` for its kind (sizes, flags), so a later
//! `BPF_MAP_CREATE` fails only for resource reasons. The map type ids are the
//! kernel's `enum bpf_map_type` values.

use std::fmt;

/// `BPF_F_NO_PREALLOC`: required by `LPM_TRIE`, refused by arrays and LRU maps.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Largest LPM trie data part in bytes (`LPM_DATA_SIZE_MAX`).
pub const LPM_DATA_SIZE_MAX: u32 = 256;

/// The page size a ring buffer's size must be a multiple of (4 KiB on every
/// target egret supports).
pub const RINGBUF_PAGE: u32 = 4096;

/// Largest per-CPU value (`PCPU_MIN_UNIT_SIZE`).
pub const PERCPU_VALUE_MAX: u32 = 32 * 1024;

/// The map kinds egret uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH` (1).
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (2).
    Array,
    /// `BPF_MAP_TYPE_PROG_ARRAY` (3): `u32` index → program, used only by
    /// `bpf_tail_call` (programs cannot look it up); filled by the loader.
    ProgArray,
    /// `BPF_MAP_TYPE_PERCPU_HASH` (5).
    PercpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (6).
    PercpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH` (9).
    LruHash,
    /// `BPF_MAP_TYPE_LPM_TRIE` (11).
    LpmTrie,
    /// `BPF_MAP_TYPE_RINGBUF` (27): no keys or values; `max_entries` is the
    /// ring's size in bytes (a power of two, a multiple of the page size).
    /// Programs write records with `bpf_ringbuf_output` only; user space
    /// reads them through `mmap` (Linux 5.8, commit 457f44363a88).
    RingBuf,
}

impl MapKind {
    /// All kinds.
    pub const ALL: [MapKind; 8] = [
        MapKind::Hash,
        MapKind::Array,
        MapKind::ProgArray,
        MapKind::PercpuHash,
        MapKind::PercpuArray,
        MapKind::LruHash,
        MapKind::LpmTrie,
        MapKind::RingBuf,
    ];

    /// The kernel's `enum bpf_map_type` value.
    #[must_use]
    pub const fn type_id(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::ProgArray => 3,
            MapKind::PercpuHash => 5,
            MapKind::PercpuArray => 6,
            MapKind::LruHash => 9,
            MapKind::LpmTrie => 11,
            MapKind::RingBuf => 27,
        }
    }

    /// The kind for a kernel map type id.
    #[must_use]
    pub fn from_type_id(id: u32) -> Option<MapKind> {
        MapKind::ALL.into_iter().find(|k| k.type_id() == id)
    }

    /// The name used in assembly (`.map` directive) and in text forms.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::Array => "array",
            MapKind::ProgArray => "prog_array",
            MapKind::PercpuHash => "percpu_hash",
            MapKind::PercpuArray => "percpu_array",
            MapKind::LruHash => "lru_hash",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::RingBuf => "ringbuf",
        }
    }

    /// Parses [`MapKind::name`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<MapKind> {
        MapKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// True for kinds whose values exist once per CPU.
    #[must_use]
    pub const fn is_percpu(self) -> bool {
        matches!(self, MapKind::PercpuHash | MapKind::PercpuArray)
    }

    /// True for array kinds (keys are `u32` indexes, entries always exist).
    #[must_use]
    pub const fn is_array(self) -> bool {
        matches!(self, MapKind::Array | MapKind::PercpuArray)
    }
}

impl fmt::Display for MapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A BTF-defined map as it appears in `.maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapDef {
    /// Symbol and map name.
    pub name: String,
    /// Map type.
    pub kind: MapKind,
    /// Key size in bytes (for LPM tries: 4-byte prefix length + data).
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
}

/// Why a map definition is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapDefError {
    /// Empty or non-identifier name.
    #[error("invalid map name {name:?}: use letters, digits, `_` and `.`")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A size or count the kernel refuses for this kind.
    #[error("map `{name}` ({kind}): {reason}")]
    Invalid {
        /// Map name.
        name: String,
        /// Map kind.
        kind: MapKind,
        /// What is wrong.
        reason: String,
    },
}

impl MapDef {
    /// A definition with the flags the kind requires (`BPF_F_NO_PREALLOC` for
    /// LPM tries, none otherwise), validated.
    ///
    /// # Errors
    /// See [`MapDef::validate`].
    pub fn new(
        name: &str,
        kind: MapKind,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Result<MapDef, MapDefError> {
        let flags = if kind == MapKind::LpmTrie { BPF_F_NO_PREALLOC } else { 0 };
        let def = MapDef { name: name.to_owned(), kind, key_size, value_size, max_entries, flags };
        def.validate()?;
        Ok(def)
    }

    /// Checks the kernel's constraints for the kind.
    ///
    /// # Errors
    /// [`MapDefError`] naming the map and the violated constraint.
    pub fn validate(&self) -> Result<(), MapDefError> {
        if !is_identifier(&self.name) {
            return Err(MapDefError::InvalidName { name: self.name.clone() });
        }
        let bad = |reason: String| Err(MapDefError::Invalid { name: self.name.clone(), kind: self.kind, reason });
        if self.max_entries == 0 {
            return bad("max_entries must be positive".into());
        }
        if self.kind == MapKind::RingBuf {
            // `ringbuf_map_alloc`: no key or value, a power-of-two size of whole pages
            if self.key_size != 0 || self.value_size != 0 || self.flags != 0 {
                return bad("a ring buffer has key_size 0, value_size 0 and no flags".into());
            }
            if !self.max_entries.is_power_of_two() || !self.max_entries.is_multiple_of(RINGBUF_PAGE) {
                return bad(format!(
                    "a ring buffer's size must be a power of two and a multiple of {RINGBUF_PAGE}, not {}",
                    self.max_entries
                ));
            }
            return Ok(());
        }
        if self.value_size == 0 {
            return bad("value_size must be positive".into());
        }
        if self.key_size == 0 {
            return bad("key_size must be positive".into());
        }
        if self.kind.is_percpu() && self.value_size > PERCPU_VALUE_MAX {
            return bad(format!("per-CPU value_size {} exceeds {PERCPU_VALUE_MAX}", self.value_size));
        }
        let no_prealloc = self.flags & BPF_F_NO_PREALLOC != 0;
        if self.flags & !BPF_F_NO_PREALLOC != 0 {
            return bad(format!("flags {:#x} are not supported by egret", self.flags));
        }
        match self.kind {
            MapKind::Array | MapKind::PercpuArray => {
                if self.key_size != 4 {
                    return bad(format!("array key_size must be 4, not {}", self.key_size));
                }
                if no_prealloc {
                    return bad("arrays do not accept BPF_F_NO_PREALLOC".into());
                }
            }
            MapKind::ProgArray => {
                if self.key_size != 4 || self.value_size != 4 {
                    return bad(format!(
                        "prog array key_size and value_size must be 4, not {} and {}",
                        self.key_size, self.value_size
                    ));
                }
                if no_prealloc {
                    return bad("prog arrays do not accept BPF_F_NO_PREALLOC".into());
                }
            }
            MapKind::LruHash => {
                if no_prealloc {
                    return bad("LRU maps do not accept BPF_F_NO_PREALLOC".into());
                }
            }
            MapKind::Hash | MapKind::PercpuHash | MapKind::RingBuf => {}
            MapKind::LpmTrie => {
                if !no_prealloc {
                    return bad("LPM tries require BPF_F_NO_PREALLOC".into());
                }
                if self.key_size <= 4 || self.key_size > 4 + LPM_DATA_SIZE_MAX {
                    return bad(format!(
                        "LPM key_size must be 4 + 1..={LPM_DATA_SIZE_MAX} bytes, not {}",
                        self.key_size
                    ));
                }
            }
        }
        Ok(())
    }
}

/// True for `[A-Za-z_.][A-Za-z0-9_.]*`.
#[must_use]
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_gets_no_prealloc_and_checks_key() {
        let m = MapDef::new("dst_lpm", MapKind::LpmTrie, 12, 4, 16).expect("valid");
        assert_eq!(m.flags, BPF_F_NO_PREALLOC);
        assert!(MapDef::new("x", MapKind::LpmTrie, 4, 4, 16).is_err());
        assert!(MapDef::new("a", MapKind::Array, 8, 4, 16).is_err());
        assert!(MapDef::new("9a", MapKind::Hash, 8, 4, 16).is_err());
        assert!(MapDef::new("progs", MapKind::ProgArray, 4, 4, 1).is_ok());
        assert!(MapDef::new("progs", MapKind::ProgArray, 4, 8, 1).is_err());
        assert_eq!(MapKind::from_type_id(3), Some(MapKind::ProgArray));
        assert!(MapDef::new("events", MapKind::RingBuf, 0, 0, 1 << 18).is_ok());
        assert!(MapDef::new("events", MapKind::RingBuf, 0, 0, 3 * 4096).is_err(), "not a power of two");
        assert!(MapDef::new("events", MapKind::RingBuf, 0, 0, 1024).is_err(), "less than a page");
        assert!(MapDef::new("events", MapKind::RingBuf, 4, 0, 4096).is_err(), "a key");
        assert_eq!(MapKind::from_name("ringbuf").map(MapKind::type_id), Some(27));
    }
}

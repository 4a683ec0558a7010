//! The BTF that describes BTF-defined maps: building the minimal `.BTF` of
//! EBPF-FACTS.md and reading map definitions back from any `.BTF`.
//!
//! Written layout (little endian, accepted by libbpf 1.1, aya 0.14 and the
//! kernel on this machine):
//! - `[1]` INT `unsigned int` (4 bytes, 32 bits);
//! - per distinct integer `N` among all map attributes, in order of first use:
//!   ARRAY(elem 1, index 1, nelems N) and PTR to it;
//! - per map: an anonymous STRUCT of 40 bytes with the members `type`,
//!   `max_entries`, `map_flags`, `key_size`, `value_size` (each a PTR to the
//!   ARRAY whose `nelems` is the value, at bit offsets 0, 64, ..., 256), and a
//!   VAR named like the map, linkage 1 (global);
//! - DATASEC `.maps` with the real size (40 × maps) and each VAR's offset.
//!
//! A map whose definition is one of [`crate::layout::MAPS`] (name, kind and
//! sizes agree) gets typed `key` and `value` members instead of `key_size`
//! and `value_size`: PTRs to its layouts' types — a STRUCT named like the
//! layout whose members are the fields (INTs `__u8`..`__u64`, TYPEDEFs
//! `__be16`/`__be32`, ARRAYs for byte strings and records), or `unsigned int`
//! for an array's index (the kernel wants an INT there). So the kernel maps
//! get BTF key/value type ids and `bpftool map dump` prints field names.
//! Every name is a C identifier (kernel-valid BTF; aya 0.14 fails on BTF the
//! kernel refuses), LPM trie keys are STRUCTs (aya 0.14 has no retry without
//! BTF), and `PROG_ARRAY`s keep the sizes (the kernel refuses BTF types for
//! them). Other maps keep `key_size`/`value_size`. The reader understands
//! both (it takes the pointee's size), as clang emits typed members.

use std::collections::BTreeMap;

use crate::layout::{self, Struct, Ty as FieldTy};
use crate::maps::{MapDef, MapKind};

const BTF_MAGIC: u16 = 0xeb9f;
const HDR_LEN: u32 = 24;

/// BTF kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Failure to read map definitions from BTF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Not BTF, or a truncated header/type.
    #[error("malformed BTF: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// No DATASEC `.maps`.
    #[error("BTF has no DATASEC `.maps`")]
    NoMapsDatasec,
    /// A map whose BTF definition is incomplete or unsupported.
    #[error("map `{map}`: {reason}")]
    BadMap {
        /// Map name.
        map: String,
        /// What is wrong.
        reason: String,
    },
}

struct Writer {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Writer {
    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn ty(&mut self, name_off: u32, kind: u32, vlen: u32, size_or_type: u32, tail: &[u32]) -> u32 {
        for w in [name_off, (kind << 24) | vlen, size_or_type].into_iter().chain(tail.iter().copied()) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Size of one map's definition in `.maps` (5 pointers).
pub const MAP_DEF_SIZE: u32 = 40;

/// The BTF types of map layouts, each written once.
struct Types {
    uint: u32,
    ints: BTreeMap<usize, u32>,
    typedefs: BTreeMap<&'static str, u32>,
    structs: BTreeMap<&'static str, u32>,
    arrays: BTreeMap<(u32, usize), u32>,
    ptrs: BTreeMap<u32, u32>,
}

impl Types {
    fn int(&mut self, w: &mut Writer, size: usize) -> u32 {
        if size == 4 {
            return self.uint;
        }
        *self.ints.entry(size).or_insert_with(|| {
            let name = w.str(&format!("__u{}", size * 8));
            w.ty(name, kind::INT, 0, size as u32, &[(size * 8) as u32])
        })
    }

    fn typedef(&mut self, w: &mut Writer, name: &'static str, size: usize) -> u32 {
        if let Some(id) = self.typedefs.get(name) {
            return *id;
        }
        let int = self.int(w, size);
        let n = w.str(name);
        let id = w.ty(n, kind::TYPEDEF, 0, int, &[]);
        self.typedefs.insert(name, id);
        id
    }

    fn array(&mut self, w: &mut Writer, elem: u32, n: usize) -> u32 {
        if let Some(id) = self.arrays.get(&(elem, n)) {
            return *id;
        }
        let id = w.ty(0, kind::ARRAY, 0, 0, &[elem, self.uint, n as u32]);
        self.arrays.insert((elem, n), id);
        id
    }

    fn field(&mut self, w: &mut Writer, ty: FieldTy) -> u32 {
        match ty {
            FieldTy::U8 | FieldTy::U16 | FieldTy::U32 | FieldTy::U64 => self.int(w, ty.size()),
            FieldTy::Be16 => self.typedef(w, "__be16", 2),
            FieldTy::Be32 => self.typedef(w, "__be32", 4),
            FieldTy::Bytes(n) => {
                let byte = self.int(w, 1);
                self.array(w, byte, n)
            }
            FieldTy::Records(s, n) => {
                let elem = self.structure(w, s);
                self.array(w, elem, n)
            }
        }
    }

    fn structure(&mut self, w: &mut Writer, s: &'static Struct) -> u32 {
        if s.scalar {
            return self.uint;
        }
        if let Some(id) = self.structs.get(s.name) {
            return *id;
        }
        let members: Vec<u32> = s.fields.iter().map(|f| self.field(w, f.ty)).collect();
        let mut tail = Vec::new();
        for (f, ty) in s.fields.iter().zip(members) {
            let name = w.str(f.name);
            tail.extend_from_slice(&[name, ty, (f.offset * 8) as u32]);
        }
        let name = w.str(s.name);
        let id = w.ty(name, kind::STRUCT, s.fields.len() as u32, s.size as u32, &tail);
        self.structs.insert(s.name, id);
        id
    }

    fn ptr(&mut self, w: &mut Writer, s: &'static Struct) -> u32 {
        let target = self.structure(w, s);
        *self.ptrs.entry(target).or_insert_with(|| w.ty(0, kind::PTR, 0, target, &[]))
    }
}

/// The attributes written per map, in member order: the sizes, or for a map
/// of [`layout::MAPS`] its key and value layouts.
enum Attr {
    Uint(&'static str, u32),
    Ptr(&'static str, &'static Struct),
}

fn map_attrs(m: &MapDef) -> Vec<Attr> {
    let mut v = vec![
        Attr::Uint("type", m.kind.type_id()),
        Attr::Uint("max_entries", m.max_entries),
        Attr::Uint("map_flags", m.flags),
    ];
    match layout::of(m).filter(|l| l.typed()) {
        Some(l) => v.extend([Attr::Ptr("key", l.key), Attr::Ptr("value", l.value)]),
        None => v.extend([Attr::Uint("key_size", m.key_size), Attr::Uint("value_size", m.value_size)]),
    }
    v
}

/// Builds the `.BTF` section for `maps`, laid out in `.maps` in slice order.
#[must_use]
pub fn maps_btf(maps: &[MapDef]) -> Vec<u8> {
    let mut w = Writer { types: Vec::new(), strings: vec![0], next_id: 1 };
    let uint_name = w.str("unsigned int");
    let uint = w.ty(uint_name, kind::INT, 0, 4, &[32]);
    let mut ptr_for: BTreeMap<u32, u32> = BTreeMap::new();
    for m in maps {
        for a in map_attrs(m) {
            if let Attr::Uint(_, v) = a
                && let std::collections::btree_map::Entry::Vacant(e) = ptr_for.entry(v)
            {
                let arr = w.ty(0, kind::ARRAY, 0, 0, &[uint, uint, v]);
                let ptr = w.ty(0, kind::PTR, 0, arr, &[]);
                e.insert(ptr);
            }
        }
    }
    let mut types = Types {
        uint,
        ints: BTreeMap::new(),
        typedefs: BTreeMap::new(),
        structs: BTreeMap::new(),
        arrays: BTreeMap::new(),
        ptrs: BTreeMap::new(),
    };
    let mut vars = Vec::new();
    for (n, m) in maps.iter().enumerate() {
        let attrs = map_attrs(m);
        let mut tail = Vec::new();
        for (i, a) in attrs.iter().enumerate() {
            let (member, ty) = match a {
                Attr::Uint(member, v) => (*member, ptr_for[v]),
                Attr::Ptr(member, s) => (*member, types.ptr(&mut w, s)),
            };
            let name = w.str(member);
            tail.extend_from_slice(&[name, ty, (i as u32) * 64]);
        }
        let st = w.ty(0, kind::STRUCT, attrs.len() as u32, MAP_DEF_SIZE, &tail);
        let var_name = w.str(&m.name);
        let var = w.ty(var_name, kind::VAR, 0, st, &[1]);
        vars.push((var, n as u32 * MAP_DEF_SIZE));
    }
    if maps.is_empty() {
        // no DATASEC: libbpf would look for a `.maps` section to size it
        return finish(&w);
    }
    let sec_name = w.str(".maps");
    let tail: Vec<u32> = vars.iter().flat_map(|(var, off)| [*var, *off, MAP_DEF_SIZE]).collect();
    w.ty(sec_name, kind::DATASEC, vars.len() as u32, MAP_DEF_SIZE * maps.len() as u32, &tail);
    finish(&w)
}

fn finish(w: &Writer) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    out.extend_from_slice(&HDR_LEN.to_le_bytes());
    let type_len = w.types.len() as u32;
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&type_len.to_le_bytes());
    out.extend_from_slice(&type_len.to_le_bytes());
    out.extend_from_slice(&(w.strings.len() as u32).to_le_bytes());
    out.extend_from_slice(&w.types);
    out.extend_from_slice(&w.strings);
    out
}

/// One parsed BTF type: kind, name offset, `size_or_type`, vlen and its tail words.
#[derive(Debug, Clone)]
struct Ty {
    kind: u32,
    name_off: u32,
    vlen: u32,
    size_or_type: u32,
    tail: Vec<u32>,
}

/// A parsed `.BTF` (types and strings), enough to read map definitions.
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<Ty>,
    strings: Vec<u8>,
}

fn malformed(reason: &str) -> BtfError {
    BtfError::Malformed { reason: reason.to_owned() }
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| malformed("truncated"))
}

impl Btf {
    /// Parses a little-endian `.BTF` section.
    ///
    /// # Errors
    /// [`BtfError::Malformed`] for a bad header or an unknown type kind.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HDR_LEN as usize || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_b = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| malformed("string section out of bounds"))?
            .to_vec();
        let mut types = Vec::new();
        let mut p = 0;
        while p < types_b.len() {
            let name_off = u32_at(types_b, p)?;
            let info = u32_at(types_b, p + 4)?;
            let size_or_type = u32_at(types_b, p + 8)?;
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let tail_words = match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 1,
                kind::ARRAY => 3,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 3 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 2 * vlen,
                kind::PTR
                | 7
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | 12
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                other => return Err(malformed(&format!("unknown kind {other}"))),
            } as usize;
            let mut tail = Vec::with_capacity(tail_words);
            for _ in 0..tail_words {
                tail.push(u32_at(types_b, p)?);
                p += 4;
            }
            types.push(Ty { kind, name_off, vlen, size_or_type, tail });
        }
        Ok(Btf { types, strings })
    }

    /// Number of types (ids run from 1 to this).
    #[must_use]
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    fn name(&self, off: u32) -> String {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return String::new();
        };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }

    fn get(&self, id: u32) -> Option<&Ty> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// Follows typedefs and qualifiers.
    fn skip_mods(&self, mut id: u32) -> Option<&Ty> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    fn type_size(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > 32 {
            return None;
        }
        let t = self.skip_mods(id)?;
        match t.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => Some(t.size_or_type),
            kind::PTR => Some(8),
            kind::ARRAY => {
                let elem = self.type_size(*t.tail.first()?, depth + 1)?;
                elem.checked_mul(*t.tail.get(2)?)
            }
            _ => None,
        }
    }

    /// The `__uint(name, N)` encoding: PTR -> ARRAY with nelems N.
    fn uint_member(&self, id: u32) -> Option<u32> {
        let p = self.skip_mods(id)?;
        if p.kind != kind::PTR {
            return None;
        }
        let a = self.skip_mods(p.size_or_type)?;
        if a.kind != kind::ARRAY {
            return None;
        }
        a.tail.get(2).copied()
    }

    /// Reads every map of DATASEC `.maps`, ordered by offset, with its offset.
    ///
    /// # Errors
    /// No `.maps` DATASEC, or a map whose definition lacks `type`,
    /// `max_entries` or key/value sizes, or has an unsupported type.
    pub fn maps(&self) -> Result<Vec<(u32, MapDef)>, BtfError> {
        let sec = self
            .types
            .iter()
            .find(|t| t.kind == kind::DATASEC && self.name(t.name_off) == ".maps")
            .ok_or(BtfError::NoMapsDatasec)?;
        let mut out = Vec::new();
        for v in sec.tail.chunks_exact(3) {
            let (var_id, off) = (v[0], v[1]);
            let var = self
                .get(var_id)
                .filter(|t| t.kind == kind::VAR)
                .ok_or_else(|| malformed("DATASEC entry is not a VAR"))?;
            let name = self.name(var.name_off);
            let bad = |reason: &str| BtfError::BadMap { map: name.clone(), reason: reason.to_owned() };
            let st = self
                .skip_mods(var.size_or_type)
                .filter(|t| t.kind == kind::STRUCT)
                .ok_or_else(|| bad("definition is not a struct"))?;
            let mut fields: BTreeMap<String, u32> = BTreeMap::new();
            for m in st.tail.chunks_exact(3).take(st.vlen as usize) {
                let member = self.name(m[0]);
                let value = match member.as_str() {
                    "key" | "value" => {
                        let p = self
                            .skip_mods(m[1])
                            .filter(|t| t.kind == kind::PTR)
                            .ok_or_else(|| bad("key/value member is not a pointer"))?;
                        self.type_size(p.size_or_type, 0).ok_or_else(|| bad("key/value type has no size"))?
                    }
                    _ => match self.uint_member(m[1]) {
                        Some(v) => v,
                        None => continue,
                    },
                };
                let key = match member.as_str() {
                    "key" => "key_size".to_owned(),
                    "value" => "value_size".to_owned(),
                    other => other.to_owned(),
                };
                fields.insert(key, value);
            }
            let get = |k: &str| fields.get(k).copied().ok_or_else(|| bad(&format!("missing `{k}`")));
            let type_id = get("type")?;
            let kind = MapKind::from_type_id(type_id).ok_or_else(|| bad(&format!("unsupported map type {type_id}")))?;
            out.push((
                off,
                MapDef {
                    name: name.clone(),
                    kind,
                    key_size: get("key_size")?,
                    value_size: get("value_size")?,
                    max_entries: get("max_entries")?,
                    flags: fields.get("map_flags").copied().unwrap_or(0),
                },
            ));
        }
        out.sort_by_key(|(off, _)| *off);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_roundtrip_and_sizes_match_the_facts() {
        let maps = vec![
            MapDef::new("src_class", MapKind::Hash, 4, 4, 1024).expect("valid"),
            MapDef::new("dst_lpm", MapKind::LpmTrie, 12, 4, 16384).expect("valid"),
            MapDef::new("counters", MapKind::PercpuArray, 4, 8, 2).expect("valid"),
        ];
        let b = maps_btf(&maps);
        let btf = Btf::parse(&b).expect("parses");
        // INT + 10 distinct integers × 2 + 3 × (STRUCT + VAR) + DATASEC
        let distinct = [1u32, 1024, 0, 4, 11, 16384, 12, 6, 2, 8].len();
        assert_eq!(btf.type_count(), 1 + 2 * distinct + 6 + 1);
        let back: Vec<MapDef> = btf.maps().expect("maps").into_iter().map(|(_, m)| m).collect();
        assert_eq!(back, maps);
    }
}

//! The maps: in-memory instances of every map kind, shared by the program
//! (through addresses in the flat address space) and user space ([`MapStore`]).

use std::collections::BTreeMap;

use super::{E2BIG, EAGAIN, EEXIST, EINVAL, ENOENT, ENOSPC, MAP_BASE, MAP_WINDOW_SHIFT};
use crate::maps::{MapDef, MapKind};

#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Value bytes for every CPU (one copy unless per-CPU).
    pub(super) data: Vec<u8>,
    /// For LRU eviction.
    pub(super) last_use: u64,
}

#[derive(Debug, Clone)]
pub(super) struct MapInstance {
    pub(super) def: MapDef,
    /// Key → slot index (hash kinds: the key; LPM: the key with masked data;
    /// arrays: the little-endian index).
    index: BTreeMap<Vec<u8>, usize>,
    pub(super) slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    pub(super) clock: u64,
    /// LPM tries: how many keys have each prefix length.
    lpm_lens: BTreeMap<u32, usize>,
    /// Ring buffers: the records not yet drained, and the bytes they take.
    ring: Vec<Vec<u8>>,
    ring_used: usize,
}

/// `BPF_RINGBUF_HDR_SZ`: the header before each ring buffer record.
const RINGBUF_HDR: usize = 8;

/// Failure of a map operation from user space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// No map of that name.
    #[error("no map `{map}`")]
    UnknownMap {
        /// Map name.
        map: String,
    },
    /// Key or value of the wrong length.
    #[error("map `{map}`: {what} has {found} bytes, expected {expected}")]
    BadSize {
        /// Map name.
        map: String,
        /// "key" or "value".
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// The kernel-style error code the operation returned.
    #[error("map `{map}`: operation failed with errno {errno}")]
    Errno {
        /// Map name.
        map: String,
        /// Positive errno.
        errno: i64,
    },
}

/// The maps of one program run (or of many runs sharing state), by name.
#[derive(Debug, Clone)]
pub struct MapStore {
    pub(super) maps: Vec<MapInstance>,
    ncpus: usize,
}

impl MapStore {
    /// Empty maps for these definitions, one CPU.
    #[must_use]
    pub fn new(defs: &[MapDef]) -> MapStore {
        MapStore::with_cpus(defs, 1)
    }

    /// Empty maps with `ncpus` copies of per-CPU values.
    #[must_use]
    pub fn with_cpus(defs: &[MapDef], ncpus: usize) -> MapStore {
        let ncpus = ncpus.max(1);
        let maps = defs
            .iter()
            .map(|d| {
                let mut m = MapInstance {
                    def: d.clone(),
                    index: BTreeMap::new(),
                    slots: Vec::new(),
                    free: Vec::new(),
                    clock: 0,
                    lpm_lens: BTreeMap::new(),
                    ring: Vec::new(),
                    ring_used: 0,
                };
                if d.kind.is_array() {
                    let copies = if d.kind.is_percpu() { ncpus } else { 1 };
                    for i in 0..d.max_entries {
                        m.index.insert(i.to_le_bytes().to_vec(), i as usize);
                        m.slots.push(Some(Slot { data: vec![0; d.value_size as usize * copies], last_use: 0 }));
                    }
                }
                m
            })
            .collect();
        MapStore { maps, ncpus }
    }

    /// The definition of map `name`.
    #[must_use]
    pub fn def(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().map(|m| &m.def).find(|d| d.name == name)
    }

    pub(super) fn index(&self, name: &str) -> Result<usize, MapError> {
        self.maps.iter().position(|m| m.def.name == name).ok_or_else(|| MapError::UnknownMap { map: name.to_owned() })
    }

    pub(super) fn copies(&self, m: usize) -> usize {
        if self.maps[m].def.kind.is_percpu() { self.ncpus } else { 1 }
    }

    fn check_key(&self, m: usize, key: &[u8]) -> Result<(), MapError> {
        let d = &self.maps[m].def;
        if key.len() != d.key_size as usize {
            return Err(MapError::BadSize {
                map: d.name.clone(),
                what: "key",
                expected: d.key_size as usize,
                found: key.len(),
            });
        }
        Ok(())
    }

    /// Inserts or replaces an entry (`flags`: 0 any, 1 no-exist, 2 exist). For
    /// per-CPU maps, `value` is either one value (copied to every CPU) or one
    /// value per CPU, concatenated. LPM keys are `u32` prefix length (host
    /// order) followed by the data.
    ///
    /// # Errors
    /// Unknown map, wrong sizes, or the errno the kernel would return.
    pub fn update(&mut self, map: &str, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        let vs = self.maps[m].def.value_size as usize;
        let copies = self.copies(m);
        let data = if value.len() == vs {
            value.repeat(copies)
        } else if value.len() == vs * copies {
            value.to_vec()
        } else {
            return Err(MapError::BadSize { map: map.to_owned(), what: "value", expected: vs, found: value.len() });
        };
        match self.update_raw(m, key, &data, flags, None) {
            0 => Ok(()),
            e => Err(MapError::Errno { map: map.to_owned(), errno: -e }),
        }
    }

    /// The value for `key` (CPU 0's for per-CPU maps); LPM maps do a
    /// longest-prefix lookup.
    ///
    /// # Errors
    /// Unknown map or wrong key size.
    pub fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        Ok(self.lookup_percpu(map, key)?.and_then(|v| v.into_iter().next()))
    }

    /// The per-CPU values for `key` (one element for other maps).
    ///
    /// # Errors
    /// Unknown map or wrong key size.
    pub fn lookup_percpu(&self, map: &str, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        let vs = self.maps[m].def.value_size as usize;
        Ok(self.find(m, key).and_then(|s| {
            self.maps[m].slots[s].as_ref().map(|slot| slot.data.chunks(vs.max(1)).map(<[u8]>::to_vec).collect())
        }))
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    /// Unknown map, wrong key size, or arrays (which cannot delete).
    pub fn delete(&mut self, map: &str, key: &[u8]) -> Result<bool, MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        match self.delete_raw(m, key) {
            0 => Ok(true),
            e if e == -ENOENT => Ok(false),
            e => Err(MapError::Errno { map: map.to_owned(), errno: -e }),
        }
    }

    /// All keys, sorted (LPM keys with masked data).
    ///
    /// # Errors
    /// Unknown map.
    pub fn keys(&self, map: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let m = self.index(map)?;
        Ok(self.maps[m].index.keys().cloned().collect())
    }

    fn lpm_canonical(def: &MapDef, key: &[u8]) -> Option<Vec<u8>> {
        let prefixlen = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        let data_bits = (def.key_size - 4) * 8;
        if prefixlen > data_bits {
            return None;
        }
        let mut out = key.to_vec();
        for (i, b) in out[4..].iter_mut().enumerate() {
            let bit = i as u32 * 8;
            if bit >= prefixlen {
                *b = 0;
            } else if prefixlen - bit < 8 {
                *b &= 0xffu8 << (8 - (prefixlen - bit));
            }
        }
        Some(out)
    }

    pub(super) fn find(&self, m: usize, key: &[u8]) -> Option<usize> {
        let inst = &self.maps[m];
        if inst.def.kind != MapKind::LpmTrie {
            return inst.index.get(key).copied();
        }
        let max = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        let data = &key[4..];
        let data_bits = (inst.def.key_size - 4) * 8;
        if inst.index.len() <= 64 {
            let mut best: Option<(u32, usize)> = None;
            for (k, slot) in &inst.index {
                let plen = u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
                if plen > max || best.is_some_and(|(b, _)| b >= plen) {
                    continue;
                }
                if prefix_matches(&k[4..], data, plen) {
                    best = Some((plen, *slot));
                }
            }
            return best.map(|(_, s)| s);
        }
        // larger tries: stored keys are canonical (data masked to the prefix),
        // so probe each prefix length present, longest first, by exact key
        let mut probe = key.to_vec();
        for plen in inst.lpm_lens.range(..=max.min(data_bits)).rev().map(|(l, _)| *l) {
            probe[..4].copy_from_slice(&plen.to_le_bytes());
            probe[4..].copy_from_slice(data);
            let full = (plen / 8) as usize;
            let rem = plen % 8;
            for (i, b) in probe[4..].iter_mut().enumerate() {
                if i > full || (i == full && rem == 0) {
                    *b = 0;
                } else if i == full {
                    *b &= 0xffu8 << (8 - rem);
                }
            }
            if let Some(s) = inst.index.get(&probe) {
                return Some(*s);
            }
        }
        None
    }

    /// `bpf_ringbuf_output` into ring buffer `m`: 0, or `-EAGAIN` when the
    /// record (with its header, rounded up to 8 bytes) does not fit in what
    /// user space has not drained; `-EINVAL` for unknown flags (only
    /// `BPF_RB_NO_WAKEUP` 1 and `BPF_RB_FORCE_WAKEUP` 2 exist).
    pub(super) fn ringbuf_push(&mut self, m: usize, data: &[u8], flags: u64) -> i64 {
        if flags & !3 != 0 {
            return -EINVAL;
        }
        let inst = &mut self.maps[m];
        let size = (data.len() + RINGBUF_HDR).next_multiple_of(8);
        if inst.ring_used + size > inst.def.max_entries as usize {
            return -EAGAIN;
        }
        inst.ring_used += size;
        inst.ring.push(data.to_vec());
        0
    }

    /// Takes every record of ring buffer `map`, oldest first (as a consumer
    /// does, freeing their room).
    ///
    /// # Errors
    /// Unknown map, or a map that is not a ring buffer.
    pub fn ringbuf_drain(&mut self, map: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let m = self.index(map)?;
        let inst = &mut self.maps[m];
        if inst.def.kind != MapKind::RingBuf {
            return Err(MapError::Errno { map: map.to_owned(), errno: EINVAL });
        }
        inst.ring_used = 0;
        Ok(std::mem::take(&mut inst.ring))
    }

    /// Update with kernel errno semantics; returns 0 or `-errno`.
    pub(super) fn update_raw(&mut self, m: usize, key: &[u8], data: &[u8], flags: u64, _cpu: Option<usize>) -> i64 {
        if flags > 2 || self.maps[m].def.kind == MapKind::RingBuf {
            return -EINVAL;
        }
        let def = self.maps[m].def.clone();
        let inst = &mut self.maps[m];
        inst.clock += 1;
        let clock = inst.clock;
        if def.kind.is_array() {
            let idx = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
            if idx >= def.max_entries {
                return -E2BIG;
            }
            if flags == 1 {
                return -EEXIST;
            }
            if let Some(Some(slot)) = inst.slots.get_mut(idx as usize) {
                slot.data.copy_from_slice(data);
            }
            return 0;
        }
        if def.kind == MapKind::ProgArray && u32::from_le_bytes([key[0], key[1], key[2], key[3]]) >= def.max_entries {
            return -E2BIG;
        }
        let canonical = if def.kind == MapKind::LpmTrie {
            match MapStore::lpm_canonical(&def, key) {
                Some(k) => k,
                None => return -EINVAL,
            }
        } else {
            key.to_vec()
        };
        if let Some(&s) = inst.index.get(&canonical) {
            if flags == 1 {
                return -EEXIST;
            }
            if let Some(slot) = inst.slots[s].as_mut() {
                slot.data.copy_from_slice(data);
                slot.last_use = clock;
            }
            return 0;
        }
        if flags == 2 {
            return -ENOENT;
        }
        if inst.index.len() >= def.max_entries as usize {
            match def.kind {
                MapKind::LruHash => {
                    let victim = inst
                        .index
                        .iter()
                        .min_by_key(|(_, s)| inst.slots[**s].as_ref().map_or(0, |x| x.last_use))
                        .map(|(k, s)| (k.clone(), *s));
                    if let Some((k, s)) = victim {
                        inst.index.remove(&k);
                        inst.slots[s] = None;
                        inst.free.push(s);
                    }
                }
                MapKind::LpmTrie => return -ENOSPC,
                _ => return -E2BIG,
            }
        }
        let slot = Slot { data: data.to_vec(), last_use: clock };
        let s = match inst.free.pop() {
            Some(s) => {
                inst.slots[s] = Some(slot);
                s
            }
            None => {
                inst.slots.push(Some(slot));
                inst.slots.len() - 1
            }
        };
        if def.kind == MapKind::LpmTrie {
            *inst
                .lpm_lens
                .entry(u32::from_le_bytes([canonical[0], canonical[1], canonical[2], canonical[3]]))
                .or_default() += 1;
        }
        inst.index.insert(canonical, s);
        0
    }

    pub(super) fn delete_raw(&mut self, m: usize, key: &[u8]) -> i64 {
        let def = self.maps[m].def.clone();
        if def.kind.is_array() || def.kind == MapKind::RingBuf {
            return -EINVAL;
        }
        let canonical = if def.kind == MapKind::LpmTrie {
            match MapStore::lpm_canonical(&def, key) {
                Some(k) => k,
                None => return -EINVAL,
            }
        } else {
            key.to_vec()
        };
        let inst = &mut self.maps[m];
        match inst.index.remove(&canonical) {
            Some(s) => {
                if def.kind == MapKind::LpmTrie {
                    let plen = u32::from_le_bytes([canonical[0], canonical[1], canonical[2], canonical[3]]);
                    if let Some(n) = inst.lpm_lens.get_mut(&plen) {
                        *n -= 1;
                        if *n == 0 {
                            inst.lpm_lens.remove(&plen);
                        }
                    }
                }
                inst.slots[s] = None;
                inst.free.push(s);
                0
            }
            None => -ENOENT,
        }
    }

    fn stride(&self, m: usize) -> u64 {
        let vs = u64::from(self.maps[m].def.value_size) * self.copies(m) as u64;
        vs.div_ceil(8) * 8
    }

    pub(super) fn value_addr(&self, m: usize, slot: usize, cpu: usize) -> u64 {
        let cpu = if self.maps[m].def.kind.is_percpu() { cpu.min(self.ncpus - 1) } else { 0 };
        MAP_BASE
            + ((m as u64) << MAP_WINDOW_SHIFT)
            + slot as u64 * self.stride(m)
            + cpu as u64 * u64::from(self.maps[m].def.value_size)
    }

    /// Resolves an address inside a live map value to (map, slot, byte offset
    /// in the slot's data).
    pub(super) fn resolve(&self, addr: u64, len: usize) -> Option<(usize, usize, usize)> {
        let rel = addr.checked_sub(MAP_BASE)?;
        let m = (rel >> MAP_WINDOW_SHIFT) as usize;
        let inst = self.maps.get(m)?;
        let within = rel & ((1u64 << MAP_WINDOW_SHIFT) - 1);
        let stride = self.stride(m);
        if stride == 0 {
            return None;
        }
        let slot = (within / stride) as usize;
        let off = (within % stride) as usize;
        let data = inst.slots.get(slot)?.as_ref()?;
        (off + len <= data.data.len()).then_some((m, slot, off))
    }
}

fn prefix_matches(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = bits % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    (a[full] & mask) == (b[full] & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_lpm_tries_probe_by_prefix_length() {
        let def = MapDef::new("lpm", MapKind::LpmTrie, 8, 4, 1024).expect("valid");
        let mut s = MapStore::new(&[def]);
        let key = |plen: u32, a: [u8; 4]| {
            let mut k = plen.to_le_bytes().to_vec();
            k.extend_from_slice(&a);
            k
        };
        for i in 0..200u32 {
            s.update("lpm", &key(24, [10, 0, i as u8, 0]), &i.to_le_bytes(), 0).expect("ok");
        }
        s.update("lpm", &key(8, [10, 0, 0, 0]), &1000u32.to_le_bytes(), 0).expect("ok");
        s.update("lpm", &key(27, [10, 0, 7, 32]), &2000u32.to_le_bytes(), 0).expect("ok");
        let get = |s: &MapStore, a| s.lookup("lpm", &key(32, a)).expect("ok").map(|v| v[0] as u32 | (v[1] as u32) << 8);
        assert_eq!(get(&s, [10, 0, 7, 33]), Some(2000));
        assert_eq!(get(&s, [10, 0, 7, 64]), Some(7));
        assert_eq!(get(&s, [10, 0, 250, 1]), Some(1000));
        assert_eq!(get(&s, [11, 0, 0, 1]), None);
        assert_eq!(s.delete("lpm", &key(27, [10, 0, 7, 32])), Ok(true));
        assert_eq!(get(&s, [10, 0, 7, 33]), Some(7));
    }

    #[test]
    fn lpm_is_longest_prefix() {
        let def = MapDef::new("lpm", MapKind::LpmTrie, 8, 4, 16).expect("valid");
        let mut s = MapStore::new(&[def]);
        let key = |plen: u32, a: [u8; 4]| {
            let mut k = plen.to_le_bytes().to_vec();
            k.extend_from_slice(&a);
            k
        };
        s.update("lpm", &key(8, [10, 0, 0, 0]), &1u32.to_le_bytes(), 0).expect("ok");
        s.update("lpm", &key(24, [10, 1, 2, 99]), &2u32.to_le_bytes(), 0).expect("ok");
        let get = |s: &MapStore, a| s.lookup("lpm", &key(32, a)).expect("ok");
        assert_eq!(get(&s, [10, 1, 2, 3]), Some(2u32.to_le_bytes().to_vec()));
        assert_eq!(get(&s, [10, 1, 3, 3]), Some(1u32.to_le_bytes().to_vec()));
        assert_eq!(get(&s, [11, 1, 2, 3]), None);
        assert_eq!(s.keys("lpm").expect("ok")[1], key(24, [10, 1, 2, 0]));
    }
}

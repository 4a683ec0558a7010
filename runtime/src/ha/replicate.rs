//! NAT state replication for floating egress IPs: the owner of a floating
//! slot streams its translations (`egret_nat_v4`, `egret_rnat_v4`) to the
//! slot's standby candidates, so that after a takeover replies find their
//! translations and flows keep their NAT ports.
//!
//! # Roles
//! The agent tells a [`Replicator`] ([`Replicator::set_roles`]) which
//! floating slots this node *owns*, with each slot's standby candidates
//! (their underlay IPv4s), and which slots it is a *standby* for, with the
//! peers allowed to send them. A slot named in both is treated as owned
//! (nothing received for it is installed). The node's own address is never
//! a peer.
//!
//! # Owner side (contract)
//! Every [`ReplicatorConfig::scan_interval`] (default [`SCAN_INTERVAL`]) the
//! replicator thread reads both NAT maps (`egret_rnat_v4`, then
//! `egret_nat_v4`; [`StateMap::entries`]) and keeps the entries whose slot
//! (the value's `slot` field) it owns. A round is skipped, and nothing is
//! sent, while either map is not pinned or cannot be read (a missing map
//! must not look like "every translation deleted"). Each standby has a
//! thread of its own ([`Link`]) with a TCP connection to `standby:port`
//! (made from `node_ip`, connect timeout, exponential backoff between
//! [`BACKOFF_MIN`] and [`BACKOFF_MAX`]), and the view of the entries that
//! standby has *acknowledged*. Per round it sends:
//! - after a (re)connect, a **full snapshot**: every entry of the slots it
//!   stands by for, in frames of at most [`MAX_ENTRIES_PER_FRAME`], the first
//!   naming the slots covered and the last marked as the end;
//! - otherwise a **delta** against the acknowledged view ([`diff`]): entries
//!   that are new, whose non-time fields changed (flags such as
//!   `RV_F_SEEN_REPLY`/`RV_F_CLOSING`, NAT port, node), or whose times moved
//!   by more than [`ReplicatorConfig::refresh`] (default [`REFRESH`]); and
//!   deletes of entries gone. Times change with every packet and alone are
//!   not worth a message: a standby's copy is at most `refresh` behind.
//!   An entry of a slot the standby no longer stands by for is forgotten
//!   from the view *without* a delete (it may be the new owner's by now);
//! - at least one frame per round (an empty delta is the heartbeat that
//!   measures lag and keeps the connection alive).
//!
//! The link waits for the ack of the round's last frame (at most
//! [`ReplicatorConfig::ack_timeout`]) before it updates the acknowledged
//! view; the next round diffs against that. A round that fails (write,
//! read, ack timeout, garbage) drops the connection and the view, so the
//! next connection starts with a full snapshot. A link busy with a round
//! skips the scans that come meanwhile and takes the newest one.
//!
//! **Times** are `ktime_get_ns` (`CLOCK_MONOTONIC`) of the node that wrote
//! them and mean nothing on another node: the wire carries each time as an
//! offset from the scan's instant ([`relative`]), and the standby adds it to
//! its own clock at install ([`absolute`], saturating at 0). A reverse
//! entry's `expires` is sent `refresh` later than the owner's, so a copy
//! never expires before a pending refresh of it arrives.
//!
//! **Node**: a reverse entry of a pod on the owner itself (`RV_F_LOCAL`,
//! node 0) is sent with the owner's address as its node and without the
//! flag — after a takeover its replies must be tunnelled to that node —,
//! and an entry whose node is the standby itself is installed as local
//! (node 0, `RV_F_LOCAL`): the pod runs there.
//!
//! # Standby side (contract)
//! A listener on `node_ip:port` accepts connections only from peers allowed
//! for some slot at that moment (others are closed at once and counted as
//! `refused`), at most [`MAX_SESSIONS`] at a time, each served by a thread
//! of its own. The first frame must be a [`Frame::Hello`] naming the
//! connection's source address. For each batch, in order: upserts of slots
//! this node stands by for *from that peer* are written (times converted,
//! see above); others are ignored and counted; deletes remove an entry only
//! if the standby's current entry under that key belongs to such a slot; at
//! the end of a full snapshot, entries of the covered slots (and accepted
//! from this peer) that the snapshot did not name are deleted (stale
//! translations from before the connection). Entries of any other slot —
//! those the standby's own datapath made — are never touched. Then the batch
//! is acked. When the slots accepted from that peer change (roles), the
//! session is closed before the next batch: the owner's acknowledged view
//! would otherwise miss what was ignored, and its reconnect sends a full
//! snapshot. A map that is not pinned is skipped (counted as `map_absent`),
//! the batch still acked. A connection silent for
//! [`ReplicatorConfig::idle_timeout`] is closed.
//!
//! # Wire format ([`encode`], [`decode`])
//! Frames: `u32` big-endian length of the rest, `u8` [`VERSION`], `u8` type,
//! payload; at most [`MAX_FRAME`] bytes after the length. Hello (1): the
//! sender's underlay address, 16 bytes (`egret_bpf::layout::NODE_ADDR`: IPv4
//! mapped, or IPv6). Batch (2): `u64` seq, `u8` flags (1 = first frame of a
//! full snapshot, 2 = last frame of it), `u16` slot count + `u32` slots
//! (only with flag 1), `u32` upsert count + upserts (`u8` table: 0 reverse,
//! 1 forward; 16-byte key, the value (48 bytes reverse, 32 forward), both in the maps' own layouts
//! [`NatKey`]/[`ReverseNat`]/[`ForwardNat`], the value's times being
//! offsets as above), `u32` delete count + deletes (table, key). Ack (3):
//! `u64` seq. Integers big-endian. Anything else — another version, an
//! unknown type or table, a count beyond the limits, trailing bytes, a
//! length over the limit — closes the connection and counts a `protocol`
//! error; a length over the limit is refused before its body is read, so
//! memory per connection is bounded.
//!
//! # Lag
//! Owner side, per standby: from the start of the scan a round carries to
//! the ack of its last frame — one clock, no synchronisation needed. Last,
//! max, p50/p99 over the last [`LAG_WINDOW`] rounds and a cumulative
//! histogram over [`LAG_BUCKETS`] ([`LagStats`]).
//!
//! # What a takeover can still lose
//! The standby's tables are those of the last acknowledged round, so a new
//! owner lacks, or has stale versions of:
//! - connections opened (or whose state changed, e.g. a first reply seen,
//!   a FIN) within the last scan interval plus transfer time before the old
//!   owner stopped — at most about `scan_interval` + one round trip + the
//!   install, i.e. the lag;
//! - everything the old owner created after its last acknowledged round,
//!   e.g. while its link was reconnecting (no standby connected = nothing
//!   replicated until the next full snapshot is acked);
//! - connections whose only change was time (refresh pending) keep working:
//!   their copies carry the `refresh` grace.
//!
//! A lost connection re-maps on its next packet: a new port, so the remote
//! sees a new flow (TCP: reset).
//!
//! # Threads
//! [`Replicator::start`] binds the listener and spawns the replicator and
//! listener threads from the calling thread; link and session threads are
//! spawned by those. All therefore live in the caller's network namespace
//! (the node's). Dropping the [`Replicator`] stops and joins every thread
//! (bounded by the connect, write and poll timeouts). Nothing panics:
//! failures are counted in [`ReplicationStatus::errors`] with the last
//! one's message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_bpf::MapDef;
use egret_bpf::layout::node_addr;
use egret_bpf::templates::{self, ForwardNat, NatKey, RV_F_LOCAL, ReverseNat};
use egret_loader::state::EntryBytes;
use egret_loader::{PinLayout, StateMap, StateMapError};
use serde::{Deserialize, Serialize};

use super::probe::monotonic_ns;

/// The default TCP port of the replication listener.
pub const DEFAULT_PORT: u16 = 4800;
/// How often the owner scans its NAT maps by default.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// By default an entry whose only change is its times is resent once they
/// moved by more than this.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Default connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default wait for a round's ack (and write timeout).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default: a standby closes a connection without frames for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay; doubled per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often blocked reads and the listener look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Concurrent standby-side connections.
pub const MAX_SESSIONS: usize = 32;

/// Wire protocol version (2: reverse values carry the pod's node as a 16-byte
/// address, `egret_bpf::layout::NODE_ADDR`).
pub const VERSION: u8 = 3;
/// Upserts plus deletes in one batch frame.
pub const MAX_ENTRIES_PER_FRAME: usize = 2048;
/// Slots a snapshot may name (a node serves at most this many slots).
pub const MAX_SLOTS: usize = templates::GW_SLOTS_MAX as usize;
/// Bytes of the largest upsert on the wire: table, key, value.
const UPSERT_LEN: usize = 1 + NatKey::SIZE + max_value_size();
/// Bytes of the smallest upsert (what a count must leave room for).
const MIN_UPSERT_LEN: usize = 1 + NatKey::SIZE + min_value_size();
/// Bytes of one delete on the wire: table, key.
const DELETE_LEN: usize = 1 + NatKey::SIZE;
/// Batch bytes before the entries: version, type, seq, flags, slot count,
/// upsert count, delete count.
const BATCH_FIXED: usize = 1 + 1 + 8 + 1 + 2 + 4 + 4;
/// Largest frame after its length prefix.
pub const MAX_FRAME: usize = BATCH_FIXED + 4 * MAX_SLOTS + MAX_ENTRIES_PER_FRAME * UPSERT_LEN;
/// Entries a standby remembers while a full snapshot is open (both maps full).
const MAX_SNAPSHOT: usize = 2 * templates::NAT_MAX as usize;

/// Upper bounds (seconds) of the lag histogram's buckets: a round is one
/// scan interval (50 ms) at most behind plus a round trip and the install.
pub const LAG_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Rounds the lag percentiles are computed over.
pub const LAG_WINDOW: usize = 1024;

const fn max_value_size() -> usize {
    if ForwardNat::SIZE > ReverseNat::SIZE { ForwardNat::SIZE } else { ReverseNat::SIZE }
}

const fn min_value_size() -> usize {
    if ForwardNat::SIZE < ReverseNat::SIZE { ForwardNat::SIZE } else { ReverseNat::SIZE }
}

const FRAME_HELLO: u8 = 1;
const FRAME_BATCH: u8 = 2;
const FRAME_ACK: u8 = 3;
const BATCH_F_BEGIN: u8 = 1;
const BATCH_F_END: u8 = 2;

// ---------------------------------------------------------------------------
// entries

/// One of the two NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    /// `egret_rnat_v4`: the connection's state, keyed by the translated tuple.
    Reverse,
    /// `egret_nat_v4`: forward mappings, keyed by the original tuple.
    Forward,
}

impl Table {
    /// Both, in the order they are read and installed.
    pub const ALL: [Table; 2] = [Table::Reverse, Table::Forward];

    /// The map's name.
    #[must_use]
    pub const fn map_name(self) -> &'static str {
        match self {
            Table::Reverse => templates::map::RNAT_V4,
            Table::Forward => templates::map::NAT_V4,
        }
    }

    /// The map's definition, as the templates declare it.
    #[must_use]
    pub fn map_def(self) -> Option<MapDef> {
        templates::maps().into_iter().find(|d| d.name == self.map_name())
    }

    const fn byte(self) -> u8 {
        match self {
            Table::Reverse => 0,
            Table::Forward => 1,
        }
    }

    const fn from_byte(b: u8) -> Option<Table> {
        match b {
            0 => Some(Table::Reverse),
            1 => Some(Table::Forward),
            _ => None,
        }
    }

    const fn value_size(self) -> usize {
        match self {
            Table::Reverse => ReverseNat::SIZE,
            Table::Forward => ForwardNat::SIZE,
        }
    }
}

/// An entry's identity: its map and key.
pub type EntryKey = (Table, NatKey);

/// A NAT map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatValue {
    /// An `egret_rnat_v4` value.
    Reverse(ReverseNat),
    /// An `egret_nat_v4` value.
    Forward(ForwardNat),
}

impl NatValue {
    /// The map it belongs to.
    #[must_use]
    pub const fn table(&self) -> Table {
        match self {
            NatValue::Reverse(_) => Table::Reverse,
            NatValue::Forward(_) => Table::Forward,
        }
    }

    /// The slot of the translation.
    #[must_use]
    pub const fn slot(&self) -> u32 {
        match self {
            NatValue::Reverse(r) => r.slot,
            NatValue::Forward(f) => f.slot,
        }
    }

    /// Decodes `bytes` as a value of `table`.
    #[must_use]
    pub fn decode(table: Table, bytes: &[u8]) -> Option<NatValue> {
        match table {
            Table::Reverse => ReverseNat::from_bytes(bytes).map(NatValue::Reverse),
            Table::Forward => ForwardNat::from_bytes(bytes).map(NatValue::Forward),
        }
    }

    /// The value bytes in the map's layout.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            NatValue::Reverse(r) => r.to_bytes().to_vec(),
            NatValue::Forward(f) => f.to_bytes().to_vec(),
        }
    }

    /// The time fields: forward (created, last seen), reverse (last seen, expires).
    #[must_use]
    pub const fn times(&self) -> [u64; 2] {
        match self {
            NatValue::Reverse(r) => [r.last_seen_ns, r.expires_ns],
            NatValue::Forward(f) => [f.created_ns, f.last_seen_ns],
        }
    }

    /// The same value with other times (in [`NatValue::times`]' order).
    #[must_use]
    pub const fn with_times(self, [a, b]: [u64; 2]) -> NatValue {
        match self {
            NatValue::Reverse(mut r) => {
                r.last_seen_ns = a;
                r.expires_ns = b;
                NatValue::Reverse(r)
            }
            NatValue::Forward(mut f) => {
                f.created_ns = a;
                f.last_seen_ns = b;
                NatValue::Forward(f)
            }
        }
    }

    /// Equal apart from the times.
    #[must_use]
    pub fn same_state(&self, other: &NatValue) -> bool {
        self.with_times([0, 0]) == other.with_times([0, 0])
    }
}

/// `t` as the wire carries it: its offset from `now`, two's complement
/// (negative for the past).
#[must_use]
pub const fn relative(t: u64, now: u64) -> u64 {
    t.wrapping_sub(now)
}

/// The local time of a wire offset: `now + offset`, saturating at 0 and
/// `u64::MAX` (a node up for less than an entry's age gives 0).
#[must_use]
pub const fn absolute(offset: u64, now: u64) -> u64 {
    now.saturating_add_signed(offset.cast_signed())
}

/// The owner's value as sent (module doc): times relative to `now`, the
/// reverse entry's `expires` `grace` later, a local pod's node made `owner`.
#[must_use]
pub fn to_wire(value: NatValue, now: u64, grace_ns: u64, owner: IpAddr) -> NatValue {
    let value = match value {
        NatValue::Reverse(mut r) => {
            if r.flags & RV_F_LOCAL != 0 {
                r.flags &= !RV_F_LOCAL;
                r.node = owner;
            }
            r.expires_ns = r.expires_ns.saturating_add(grace_ns);
            NatValue::Reverse(r)
        }
        forward @ NatValue::Forward(_) => forward,
    };
    value.with_times(value.times().map(|t| relative(t, now)))
}

/// A received value as the standby installs it (module doc): times on its
/// own clock `now`, a pod on `me` local.
#[must_use]
pub fn from_wire(value: NatValue, now: u64, me: IpAddr) -> NatValue {
    let value = value.with_times(value.times().map(|t| absolute(t, now)));
    match value {
        NatValue::Reverse(mut r) if r.node == me => {
            r.node = Ipv4Addr::UNSPECIFIED.into();
            r.flags |= RV_F_LOCAL;
            NatValue::Reverse(r)
        }
        other => other,
    }
}

/// What a round sends a standby.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// New or changed entries (owner's values, owner's clock).
    pub upserts: Vec<(NatKey, NatValue)>,
    /// Entries gone.
    pub deletes: Vec<EntryKey>,
}

/// Whether `current` must be resent over `acked`: another state, or a time
/// moved by more than `refresh_ns`.
#[must_use]
pub fn needs_send(current: &NatValue, acked: &NatValue, refresh_ns: u64) -> bool {
    !current.same_state(acked) || current.times().iter().zip(acked.times()).any(|(c, a)| c.abs_diff(a) > refresh_ns)
}

/// The delta from what a standby acknowledged to the current entries (both
/// limited to the slots it stands by for), in key order.
#[must_use]
pub fn diff(current: &BTreeMap<EntryKey, NatValue>, acked: &BTreeMap<EntryKey, NatValue>, refresh_ns: u64) -> Delta {
    let upserts = current
        .iter()
        .filter(|(k, v)| acked.get(k).is_none_or(|a| needs_send(v, a, refresh_ns)))
        .map(|((_, key), v)| (*key, *v))
        .collect();
    let deletes = acked.keys().filter(|k| !current.contains_key(k)).copied().collect();
    Delta { upserts, deletes }
}

// ---------------------------------------------------------------------------
// maps

/// One NAT map, byte-level: [`StateMap`] on a node, an in-memory table in tests.
pub trait NatMap {
    /// Every entry.
    ///
    /// # Errors
    /// A failed walk or lookup.
    fn entries(&self) -> Result<Vec<EntryBytes>, StateMapError>;
    /// The value under `key`.
    ///
    /// # Errors
    /// A failed lookup.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateMapError>;
    /// Creates or replaces an entry.
    ///
    /// # Errors
    /// A failed update.
    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StateMapError>;
    /// Deletes an entry (absent is fine).
    ///
    /// # Errors
    /// A failed delete.
    fn remove(&self, key: &[u8]) -> Result<(), StateMapError>;
}

impl NatMap for StateMap {
    fn entries(&self) -> Result<Vec<EntryBytes>, StateMapError> {
        StateMap::entries(self)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateMapError> {
        StateMap::get(self, key)
    }
    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StateMapError> {
        StateMap::set(self, key, value)
    }
    fn remove(&self, key: &[u8]) -> Result<(), StateMapError> {
        StateMap::remove(self, key)
    }
}

/// Where the NAT maps are: opened per round or batch, so a map a swap
/// recreated is picked up.
pub trait NatMaps: Send + Sync + fmt::Debug {
    /// Opens one map; `None` if it is not there (no generation yet).
    ///
    /// # Errors
    /// A pin that is not a fitting map.
    fn open(&self, table: Table) -> Result<Option<Box<dyn NatMap + '_>>, StateMapError>;
}

/// The NAT state maps pinned under a loader root.
#[derive(Debug, Clone)]
pub struct PinnedNatMaps {
    layout: PinLayout,
}

impl PinnedNatMaps {
    /// The maps of the loader root `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> PinnedNatMaps {
        PinnedNatMaps { layout: PinLayout::new(root.into()) }
    }
}

impl NatMaps for PinnedNatMaps {
    fn open(&self, table: Table) -> Result<Option<Box<dyn NatMap + '_>>, StateMapError> {
        let Some(def) = table.map_def() else { return Ok(None) };
        Ok(StateMap::open(&self.layout, &def)?.map(|m| Box::new(m) as Box<dyn NatMap>))
    }
}

/// Reads a map's decodable entries.
fn read_map(map: &dyn NatMap, table: Table) -> Result<Vec<(NatKey, NatValue)>, StateMapError> {
    Ok(map.entries()?.iter().filter_map(|(k, v)| Some((NatKey::from_bytes(k)?, NatValue::decode(table, v)?))).collect())
}

/// Why a scan gave nothing to send.
#[derive(Debug)]
enum ScanError {
    Absent,
    Map(StateMapError),
}

/// Both maps' entries of the slots in `owned`.
fn scan(maps: &dyn NatMaps, owned: &BTreeSet<u32>) -> Result<BTreeMap<EntryKey, NatValue>, ScanError> {
    let mut out = BTreeMap::new();
    for table in Table::ALL {
        let map = maps.open(table).map_err(ScanError::Map)?.ok_or(ScanError::Absent)?;
        for (key, value) in read_map(&*map, table).map_err(ScanError::Map)? {
            if owned.contains(&value.slot()) {
                out.insert((table, key), value);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// wire

/// A protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a connection: who sends.
    Hello {
        /// The sender's underlay address.
        node: IpAddr,
    },
    /// Changes.
    Batch(Batch),
    /// A batch was installed.
    Ack {
        /// Its seq.
        seq: u64,
    },
}

/// Changes in one frame; values as on the wire ([`to_wire`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Per connection, from 1.
    pub seq: u64,
    /// First frame of a full snapshot: the slots it covers.
    pub snapshot_of: Option<BTreeSet<u32>>,
    /// Last frame of a full snapshot.
    pub snapshot_end: bool,
    /// Entries to create or replace.
    pub upserts: Vec<(NatKey, NatValue)>,
    /// Entries to delete.
    pub deletes: Vec<EntryKey>,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix is over [`MAX_FRAME`] (or zero).
    #[error("frame length {len} is not in 1..={max}")]
    Length {
        /// The length read.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another protocol version.
    #[error("protocol version {version}, expected {VERSION}")]
    Version {
        /// The version read.
        version: u8,
    },
    /// An unknown frame type.
    #[error("unknown frame type {kind}")]
    Kind {
        /// The type read.
        kind: u8,
    },
    /// A frame whose body does not parse.
    #[error("malformed frame: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
}

fn malformed(what: &'static str) -> WireError {
    WireError::Malformed { what }
}

/// Encodes a frame with its length prefix. A batch over the limits gives
/// a frame [`decode`] refuses; [`split`] keeps batches within them.
#[must_use]
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, VERSION];
    match frame {
        Frame::Hello { node } => {
            b.push(FRAME_HELLO);
            let mut a = [0u8; node_addr::SIZE];
            node_addr::NODE.put_node(&mut a, *node);
            b.extend_from_slice(&a);
        }
        Frame::Ack { seq } => {
            b.push(FRAME_ACK);
            b.extend_from_slice(&seq.to_be_bytes());
        }
        Frame::Batch(batch) => {
            b.push(FRAME_BATCH);
            b.extend_from_slice(&batch.seq.to_be_bytes());
            let begin = if batch.snapshot_of.is_some() { BATCH_F_BEGIN } else { 0 };
            b.push(begin | if batch.snapshot_end { BATCH_F_END } else { 0 });
            let slots = batch.snapshot_of.as_ref();
            b.extend_from_slice(&u16::try_from(slots.map_or(0, BTreeSet::len)).unwrap_or(u16::MAX).to_be_bytes());
            for slot in slots.into_iter().flatten() {
                b.extend_from_slice(&slot.to_be_bytes());
            }
            b.extend_from_slice(&u32::try_from(batch.upserts.len()).unwrap_or(u32::MAX).to_be_bytes());
            for (key, value) in &batch.upserts {
                b.push(value.table().byte());
                b.extend_from_slice(&key.to_bytes());
                b.extend_from_slice(&value.to_bytes());
            }
            b.extend_from_slice(&u32::try_from(batch.deletes.len()).unwrap_or(u32::MAX).to_be_bytes());
            for (table, key) in &batch.deletes {
                b.push(table.byte());
                b.extend_from_slice(&key.to_bytes());
            }
        }
    }
    let len = u32::try_from(b.len() - 4).unwrap_or(u32::MAX);
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// A cursor over a frame body.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| malformed("truncated"))
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn count(&mut self, bytes_each: usize, max: usize) -> Result<usize, WireError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        // each entry needs its bytes: a count the frame cannot hold is garbage
        if n > max || n.saturating_mul(bytes_each) > self.b.len() {
            return Err(malformed("entry count beyond the frame"));
        }
        Ok(n)
    }
    fn table(&mut self) -> Result<Table, WireError> {
        Table::from_byte(self.u8()?).ok_or(malformed("unknown table"))
    }
    fn key(&mut self) -> Result<NatKey, WireError> {
        NatKey::from_bytes(self.take(NatKey::SIZE)?).ok_or(malformed("key"))
    }
}

/// Decodes the frame at the start of `buf`: `Ok(None)` while incomplete,
/// else the frame and the bytes it took. A length prefix over
/// [`MAX_FRAME`] is an error as soon as it is read.
///
/// # Errors
/// Anything that is not a frame of this version.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(prefix) = buf.get(0..4) else { return Ok(None) };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::Length { len, max: MAX_FRAME });
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let mut c = Cursor { b: body };
    let version = c.u8()?;
    if version != VERSION {
        return Err(WireError::Version { version });
    }
    let frame = match c.u8()? {
        FRAME_HELLO => Frame::Hello {
            node: node_addr::NODE.node(&c.array::<{ node_addr::SIZE }>()?).ok_or_else(|| malformed("hello"))?,
        },
        FRAME_ACK => Frame::Ack { seq: u64::from_be_bytes(c.array()?) },
        FRAME_BATCH => {
            let seq = u64::from_be_bytes(c.array()?);
            let flags = c.u8()?;
            if flags & !(BATCH_F_BEGIN | BATCH_F_END) != 0 {
                return Err(malformed("unknown batch flags"));
            }
            let slots = usize::from(u16::from_be_bytes(c.array()?));
            if slots > MAX_SLOTS || (slots > 0 && flags & BATCH_F_BEGIN == 0) {
                return Err(malformed("slot list"));
            }
            let mut covered = BTreeSet::new();
            for _ in 0..slots {
                covered.insert(u32::from_be_bytes(c.array()?));
            }
            let n = c.count(MIN_UPSERT_LEN, MAX_ENTRIES_PER_FRAME)?;
            let mut upserts = Vec::with_capacity(n);
            for _ in 0..n {
                let table = c.table()?;
                let key = c.key()?;
                let value = NatValue::decode(table, c.take(table.value_size())?).ok_or(malformed("value"))?;
                upserts.push((key, value));
            }
            let m = c.count(DELETE_LEN, MAX_ENTRIES_PER_FRAME - n)?;
            let mut deletes = Vec::with_capacity(m);
            for _ in 0..m {
                let table = c.table()?;
                deletes.push((table, c.key()?));
            }
            Frame::Batch(Batch {
                seq,
                snapshot_of: (flags & BATCH_F_BEGIN != 0).then_some(covered),
                snapshot_end: flags & BATCH_F_END != 0,
                upserts,
                deletes,
            })
        }
        kind => return Err(WireError::Kind { kind }),
    };
    if !c.b.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    Ok(Some((frame, 4 + len)))
}

/// Splits a round into batches of at most [`MAX_ENTRIES_PER_FRAME`]
/// entries (upserts first), seqs from `first_seq`; always at least one
/// batch. With `snapshot_of`, the first batch opens a full snapshot of
/// those slots and the last closes it.
#[must_use]
pub fn split(
    first_seq: u64,
    upserts: Vec<(NatKey, NatValue)>,
    deletes: Vec<EntryKey>,
    snapshot_of: Option<BTreeSet<u32>>,
) -> Vec<Batch> {
    enum Change {
        Up((NatKey, NatValue)),
        Del(EntryKey),
    }
    let changes: Vec<Change> =
        upserts.into_iter().map(Change::Up).chain(deletes.into_iter().map(Change::Del)).collect();
    let mut batches: Vec<Batch> = Vec::new();
    let mut changes = changes.into_iter().peekable();
    loop {
        let mut batch = Batch { seq: first_seq.wrapping_add(batches.len() as u64), ..Batch::default() };
        for change in changes.by_ref().take(MAX_ENTRIES_PER_FRAME) {
            match change {
                Change::Up(u) => batch.upserts.push(u),
                Change::Del(d) => batch.deletes.push(d),
            }
        }
        batches.push(batch);
        if changes.peek().is_none() {
            break;
        }
    }
    if let Some(slots) = snapshot_of {
        if let Some(first) = batches.first_mut() {
            first.snapshot_of = Some(slots);
        }
        if let Some(last) = batches.last_mut() {
            last.snapshot_end = true;
        }
    }
    batches
}

/// Reads frames from a stream with a read timeout, into a buffer bounded
/// by the frame limit.
#[derive(Debug, Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame; `Ok(None)` when the read timed out first.
    fn next(&mut self, stream: &mut impl Read) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some((frame, used)) = decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
    #[error("no ack within {0:?}")]
    AckTimeout(Duration),
    #[error("stopping")]
    Stopped,
    #[error("the slots accepted from this owner changed: resynchronising")]
    Resync,
}

// ---------------------------------------------------------------------------
// roles, config, status

/// What this node does for which floating slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Slots this node owns, with their standby candidates.
    pub owned: BTreeMap<u32, BTreeSet<IpAddr>>,
    /// Slots this node is a standby for, with the peers allowed to send them.
    pub standby_for: BTreeMap<u32, BTreeSet<IpAddr>>,
}

impl Roles {
    /// Per standby (never `me`), the owned slots it stands by for.
    #[must_use]
    pub fn standbys(&self, me: IpAddr) -> BTreeMap<IpAddr, BTreeSet<u32>> {
        let mut out: BTreeMap<IpAddr, BTreeSet<u32>> = BTreeMap::new();
        for (slot, peers) in &self.owned {
            for peer in peers.iter().filter(|p| **p != me) {
                out.entry(*peer).or_default().insert(*slot);
            }
        }
        out
    }

    /// The slots whose entries `peer` may install here: standby for them,
    /// `peer` allowed, not owned.
    #[must_use]
    pub fn accepted_from(&self, peer: IpAddr) -> BTreeSet<u32> {
        self.standby_for
            .iter()
            .filter(|(slot, peers)| peers.contains(&peer) && !self.owned.contains_key(slot))
            .map(|(slot, _)| *slot)
            .collect()
    }
}

/// How a replicator is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatorConfig {
    /// The loader's bpffs root (the NAT maps are its state maps).
    pub root: PathBuf,
    /// This node's underlay IPv4: the listener's address and the source of
    /// connections to standbys.
    pub node_ip: IpAddr,
    /// The TCP port every node listens on.
    pub port: u16,
    /// How often the owner scans.
    pub scan_interval: Duration,
    /// Time-only changes smaller than this are not resent.
    pub refresh: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Wait for a round's ack; also the write timeout.
    pub ack_timeout: Duration,
    /// A standby closes connections silent for this long.
    pub idle_timeout: Duration,
}

impl ReplicatorConfig {
    /// Defaults: [`DEFAULT_PORT`], [`SCAN_INTERVAL`], [`REFRESH`],
    /// [`CONNECT_TIMEOUT`], [`ACK_TIMEOUT`], [`IDLE_TIMEOUT`].
    #[must_use]
    pub fn new(root: impl Into<PathBuf>, node_ip: IpAddr) -> ReplicatorConfig {
        ReplicatorConfig {
            root: root.into(),
            node_ip,
            port: DEFAULT_PORT,
            scan_interval: SCAN_INTERVAL,
            refresh: REFRESH,
            connect_timeout: CONNECT_TIMEOUT,
            ack_timeout: ACK_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Why a replicator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The listener cannot be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// A thread cannot be started.
    #[error("cannot start a replication thread: {source}")]
    Spawn {
        /// The error.
        source: io::Error,
    },
}

/// Replication lag samples of one standby (module doc, "Lag").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagStats {
    /// Rounds acked.
    pub samples: u64,
    /// The last round's lag, ns.
    pub last_ns: u64,
    /// The largest so far, ns.
    pub max_ns: u64,
    /// Median over the last [`LAG_WINDOW`] rounds, ns.
    pub p50_ns: u64,
    /// 99th percentile over the last [`LAG_WINDOW`] rounds, ns.
    pub p99_ns: u64,
    /// Per bound of [`LAG_BUCKETS`]: rounds at most that late (cumulative).
    pub buckets: [u64; LAG_BUCKETS.len()],
    /// Sum of all lags, seconds.
    pub sum_seconds: f64,
    #[serde(skip)]
    window: VecDeque<u64>,
}

impl LagStats {
    /// Adds one round's lag.
    pub fn record(&mut self, lag: Duration) {
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        let s = lag.as_secs_f64();
        self.samples += 1;
        self.last_ns = ns;
        self.max_ns = self.max_ns.max(ns);
        self.sum_seconds += s;
        for (bound, n) in LAG_BUCKETS.iter().zip(&mut self.buckets) {
            if s <= *bound {
                *n += 1;
            }
        }
        if self.window.len() == LAG_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(ns);
        let mut sorted: Vec<u64> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        self.p50_ns = percentile(&sorted, 50);
        self.p99_ns = percentile(&sorted, 99);
    }
}

/// The `p`th percentile (nearest rank) of sorted samples; 0 if none.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Owner side: one standby.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StandbyStatus {
    /// The slots it stands by for.
    pub slots: BTreeSet<u32>,
    /// Whether a connection is up.
    pub connected: bool,
    /// Connections made.
    pub connects: u64,
    /// Rounds acked.
    pub rounds: u64,
    /// Batch frames of acked rounds.
    pub batches: u64,
    /// Full snapshots acked.
    pub snapshots: u64,
    /// Upserts sent.
    pub upserts_sent: u64,
    /// Deletes sent.
    pub deletes_sent: u64,
    /// Entries it has acknowledged (its copy of this node's state).
    pub acked_entries: u64,
    /// Scans skipped while a round was in progress.
    pub skipped_scans: u64,
    /// Lag.
    pub lag: LagStats,
}

/// Standby side: one owner sending here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerStatus {
    /// Open connections from it.
    pub connections: u64,
    /// Batches received.
    pub batches: u64,
    /// Full snapshots completed.
    pub snapshots: u64,
    /// Entries written.
    pub installed: u64,
    /// Entries deleted on its word.
    pub deleted: u64,
    /// Stale entries deleted at the end of a full snapshot.
    pub swept: u64,
    /// Entries of slots not accepted from it, ignored.
    pub ignored: u64,
    /// `CLOCK_MONOTONIC` ns of the last batch.
    pub last_batch_ns: u64,
}

/// Failures so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connects that failed.
    pub connect: u64,
    /// Reads and writes that failed, connections closed under a round.
    pub io: u64,
    /// Garbage, oversize frames, unexpected frames, a wrong hello.
    pub protocol: u64,
    /// Rounds without an ack in time.
    pub ack_timeout: u64,
    /// Connections from peers not allowed (or over [`MAX_SESSIONS`]).
    pub refused: u64,
    /// Scans or installs while a NAT map was not pinned.
    pub map_absent: u64,
    /// Map opens and walks that failed.
    pub map_read: u64,
    /// Map writes and deletes that failed.
    pub map_write: u64,
}

/// A snapshot of the replicator, for `egret-agent status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// This node.
    pub node: Option<IpAddr>,
    /// The listener's address.
    pub listening: Option<SocketAddr>,
    /// The roles last set.
    pub roles: Roles,
    /// Scans so far.
    pub scans: u64,
    /// Entries of owned slots at the last scan.
    pub scanned_entries: u64,
    /// How long the last scan took, ns.
    pub scan_ns: u64,
    /// Whether both NAT maps were pinned at the last scan.
    pub maps_pinned: bool,
    /// Owner side, per standby.
    pub standbys: BTreeMap<IpAddr, StandbyStatus>,
    /// Standby side, per owner that sent here.
    pub owners: BTreeMap<IpAddr, OwnerStatus>,
    /// Failures so far.
    pub errors: ErrorCounts,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// The replicator's status, shared with whoever reports it.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<ReplicationStatus>>);

impl StatusHandle {
    /// The status now.
    #[must_use]
    pub fn snapshot(&self) -> ReplicationStatus {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ReplicationStatus> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, count: impl FnOnce(&mut ErrorCounts), message: impl fmt::Display) {
        let mut s = self.lock();
        count(&mut s.errors);
        s.last_error = Some(message.to_string());
    }

    fn link_failed(&self, peer: IpAddr, e: &LinkError) {
        let count = |c: &mut ErrorCounts| match e {
            LinkError::Closed | LinkError::Io(_) => c.io += 1,
            LinkError::Wire(_) | LinkError::Unexpected(_) => c.protocol += 1,
            LinkError::AckTimeout(_) => c.ack_timeout += 1,
            LinkError::Stopped | LinkError::Resync => {}
        };
        if !matches!(e, LinkError::Stopped) {
            self.failed(count, format_args!("replication with `{peer}`: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// threads

/// What every thread shares.
#[derive(Debug)]
struct Shared {
    config: ReplicatorConfig,
    maps: Arc<dyn NatMaps>,
    roles: Mutex<Roles>,
    status: StatusHandle,
    stop: AtomicBool,
}

impl Shared {
    fn roles(&self) -> Roles {
        self.roles.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One scan, shared by the links.
#[derive(Debug)]
struct Scan {
    started: Instant,
    now_ns: u64,
    entries: BTreeMap<EntryKey, NatValue>,
}

/// A link's work: the newest scan and the slots its standby stands by for.
#[derive(Debug)]
struct Work {
    scan: Arc<Scan>,
    slots: BTreeSet<u32>,
}

/// Replicates this node's owned slots and installs what owners send here,
/// on threads of its own; stopped and joined when dropped. See the module doc.
#[derive(Debug)]
pub struct Replicator {
    shared: Arc<Shared>,
    wake: Option<mpsc::Sender<()>>,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl Replicator {
    /// Binds the listener and starts the threads in the calling thread's
    /// network namespace, on the NAT maps pinned under `config.root`.
    ///
    /// # Errors
    /// The listener cannot be bound or a thread started.
    pub fn start(config: ReplicatorConfig) -> Result<Replicator, ReplicateError> {
        let maps = Arc::new(PinnedNatMaps::new(config.root.clone()));
        Replicator::start_with(config, maps)
    }

    /// [`Replicator::start`] on other maps (tests).
    ///
    /// # Errors
    /// The listener cannot be bound or a thread started.
    pub fn start_with(config: ReplicatorConfig, maps: Arc<dyn NatMaps>) -> Result<Replicator, ReplicateError> {
        let addr = SocketAddr::new(config.node_ip, config.port);
        let listener = TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ReplicateError::Listen { addr, source })?;
        let local_addr = match listener.local_addr() {
            Ok(a) => a,
            _ => addr,
        };
        let status = StatusHandle::default();
        {
            let mut s = status.lock();
            s.node = Some(config.node_ip);
            s.listening = Some(local_addr);
        }
        let shared = Arc::new(Shared { config, maps, roles: Mutex::default(), status, stop: AtomicBool::new(false) });
        let (wake, inbox) = mpsc::channel();
        let mut r = Replicator { shared: shared.clone(), wake: Some(wake), local_addr, threads: Vec::new() };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(|source| ReplicateError::Spawn { source })
        };
        let s = shared.clone();
        r.threads.push(spawn("egret-repl-listen", Box::new(move || listen(&s, &listener)))?);
        r.threads.push(spawn("egret-repl-owner", Box::new(move || own(&shared, &inbox)))?);
        Ok(r)
    }

    /// What this node owns (with standbys) and stands by for (with the
    /// peers allowed to send), from now on.
    pub fn set_roles(&self, owned: BTreeMap<u32, BTreeSet<IpAddr>>, standby_for: BTreeMap<u32, BTreeSet<IpAddr>>) {
        let roles = Roles { owned, standby_for };
        self.shared.status.lock().roles = roles.clone();
        *self.shared.roles.lock().unwrap_or_else(PoisonError::into_inner) = roles;
        if let Some(wake) = &self.wake {
            // the owner thread only ends when this side hangs up
            let _ = wake.send(());
        }
    }

    /// The listener's address (its port when `config.port` was 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The status now.
    #[must_use]
    pub fn status(&self) -> ReplicationStatus {
        self.shared.status.snapshot()
    }

    /// A handle on the status for the telemetry.
    #[must_use]
    pub fn status_handle(&self) -> StatusHandle {
        self.shared.status.clone()
    }

    /// Stops the threads and waits for them (what dropping does).
    pub fn stop(self) {}
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wake = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A running link thread.
#[derive(Debug)]
struct LinkHandle {
    work: Option<mpsc::SyncSender<Work>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // hanging up ends the thread's wait for work
        self.work = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The owner thread: a scan every interval (a scan taking more than half
/// the interval stretches it, so scanning uses at most half a core),
/// links started and stopped as the roles say, until the handle hangs up.
fn own(shared: &Arc<Shared>, inbox: &mpsc::Receiver<()>) {
    let interval = shared.config.scan_interval.max(Duration::from_millis(1));
    let mut links: BTreeMap<IpAddr, LinkHandle> = BTreeMap::new();
    let mut next = Instant::now();
    loop {
        match inbox.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                // roles changed: act at once
                next = Instant::now();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() < next {
            continue;
        }
        let started = Instant::now();
        round(shared, &mut links);
        let took = started.elapsed();
        next = (started + interval).max(Instant::now() + took);
    }
}

/// One owner round: links as the roles say, a scan, work for each link.
fn round(shared: &Arc<Shared>, links: &mut BTreeMap<IpAddr, LinkHandle>) {
    let roles = shared.roles();
    let standbys = roles.standbys(shared.config.node_ip);
    links.retain(|peer, _| standbys.contains_key(peer));
    shared.status.lock().standbys.retain(|peer, _| standbys.contains_key(peer));
    for peer in standbys.keys() {
        if links.contains_key(peer) {
            continue;
        }
        match start_link(shared, *peer) {
            Ok(h) => {
                links.insert(*peer, h);
            }
            Err(source) => shared.status.failed(|_| {}, ReplicateError::Spawn { source }),
        }
    }
    if links.is_empty() {
        return;
    }
    let started = Instant::now();
    let now_ns = monotonic_ns();
    let owned: BTreeSet<u32> = roles.owned.keys().copied().collect();
    let scanned = scan(&*shared.maps, &owned);
    {
        let mut s = shared.status.lock();
        s.scans += 1;
        s.scan_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.maps_pinned = !matches!(scanned, Err(ScanError::Absent));
    }
    let entries = match scanned {
        Ok(e) => e,
        Err(ScanError::Absent) => {
            shared.status.lock().errors.map_absent += 1;
            return;
        }
        Err(ScanError::Map(e)) => return shared.status.failed(|c| c.map_read += 1, e),
    };
    shared.status.lock().scanned_entries = entries.len() as u64;
    let scan = Arc::new(Scan { started, now_ns, entries });
    for (peer, slots) in standbys {
        let Some(work) = links.get(&peer).and_then(|l| l.work.as_ref()) else { continue };
        if let Err(mpsc::TrySendError::Full(_)) = work.try_send(Work { scan: scan.clone(), slots }) {
            shared.status.lock().standbys.entry(peer).or_default().skipped_scans += 1;
        }
    }
}

fn start_link(shared: &Arc<Shared>, peer: IpAddr) -> io::Result<LinkHandle> {
    let (work, inbox) = mpsc::sync_channel(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut link = Link {
        shared: shared.clone(),
        peer,
        stop: stop.clone(),
        conn: None,
        acked: BTreeMap::new(),
        seq: 0,
        backoff: BACKOFF_MIN,
        retry_at: Instant::now(),
    };
    let thread = std::thread::Builder::new().name(format!("egret-repl-{peer}")).spawn(move || {
        while let Ok(w) = inbox.recv() {
            if link.stop.load(Ordering::Relaxed) {
                break;
            }
            link.round(&w);
        }
        link.disconnect();
    })?;
    Ok(LinkHandle { work: Some(work), stop, thread: Some(thread) })
}

/// An open connection to a standby.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    reader: FrameReader,
}

/// Owner side, one standby: its connection and acknowledged view.
#[derive(Debug)]
struct Link {
    shared: Arc<Shared>,
    peer: IpAddr,
    stop: Arc<AtomicBool>,
    conn: Option<Conn>,
    /// What the standby acknowledged (owner's values, owner's clock).
    acked: BTreeMap<EntryKey, NatValue>,
    /// The last seq sent on this connection.
    seq: u64,
    backoff: Duration,
    retry_at: Instant,
}

impl Link {
    fn status<R>(&self, f: impl FnOnce(&mut StandbyStatus) -> R) -> R {
        f(self.shared.status.lock().standbys.entry(self.peer).or_default())
    }

    fn disconnect(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.acked.clear();
        self.status(|s| s.connected = false);
    }

    fn round(&mut self, work: &Work) {
        self.status(|s| s.slots.clone_from(&work.slots));
        let full = if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return;
            }
            if let Err(e) = self.connect() {
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                let peer = self.peer;
                return self.shared.status.failed(|c| c.connect += 1, format_args!("connecting to `{peer}`: {e}"));
            }
            true
        } else {
            false
        };
        match self.send_round(work, full) {
            Ok(()) => self.backoff = BACKOFF_MIN,
            Err(e) => {
                self.shared.status.link_failed(self.peer, &e);
                self.disconnect();
                self.retry_at = Instant::now() + self.backoff;
            }
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let config = &self.shared.config;
        let mut stream = connect_from(config.node_ip, SocketAddr::new(self.peer, config.port), config.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(config.ack_timeout))?;
        stream.set_read_timeout(Some(POLL))?;
        stream.write_all(&encode(&Frame::Hello { node: config.node_ip }))?;
        self.conn = Some(Conn { stream, reader: FrameReader::default() });
        self.seq = 0;
        self.acked.clear();
        self.status(|s| {
            s.connected = true;
            s.connects += 1;
        });
        Ok(())
    }

    /// Sends one round and waits for its ack; the acked view follows.
    fn send_round(&mut self, work: &Work, full: bool) -> Result<(), LinkError> {
        let config = &self.shared.config;
        let current: BTreeMap<EntryKey, NatValue> =
            work.scan.entries.iter().filter(|(_, v)| work.slots.contains(&v.slot())).map(|(k, v)| (*k, *v)).collect();
        self.acked.retain(|_, v| work.slots.contains(&v.slot()));
        let refresh_ns = u64::try_from(config.refresh.as_nanos()).unwrap_or(u64::MAX);
        let delta = if full {
            Delta { upserts: current.iter().map(|((_, k), v)| (*k, *v)).collect(), deletes: Vec::new() }
        } else {
            diff(&current, &self.acked, refresh_ns)
        };
        let (upserts, deletes) = (delta.upserts.len() as u64, delta.deletes.len() as u64);
        let wire_upserts = delta
            .upserts
            .iter()
            .map(|(k, v)| (*k, to_wire(*v, work.scan.now_ns, refresh_ns, config.node_ip)))
            .collect();
        let batches = split(self.seq + 1, wire_upserts, delta.deletes.clone(), full.then(|| work.slots.clone()));
        let Some(conn) = self.conn.as_mut() else { return Err(LinkError::Closed) };
        let mut last = self.seq;
        for b in &batches {
            conn.stream.write_all(&encode(&Frame::Batch(b.clone())))?;
            last = b.seq;
        }
        self.seq = last;
        let frames = batches.len() as u64;
        let deadline = Instant::now() + config.ack_timeout;
        loop {
            if self.stop.load(Ordering::Relaxed) || self.shared.stopping() {
                return Err(LinkError::Stopped);
            }
            match conn.reader.next(&mut conn.stream)? {
                Some(Frame::Ack { seq }) if seq == last => break,
                Some(Frame::Ack { seq }) if seq < last => {}
                Some(_) => return Err(LinkError::Unexpected("a standby sends only acks")),
                None if Instant::now() >= deadline => return Err(LinkError::AckTimeout(config.ack_timeout)),
                None => {}
            }
        }
        let lag = work.scan.started.elapsed();
        if full {
            self.acked = current;
        } else {
            for k in &delta.deletes {
                self.acked.remove(k);
            }
            for (k, v) in &delta.upserts {
                self.acked.insert((v.table(), *k), *v);
            }
        }
        let acked = self.acked.len() as u64;
        self.status(|s| {
            s.rounds += 1;
            s.batches += frames;
            s.snapshots += u64::from(full);
            s.upserts_sent += upserts;
            s.deletes_sent += deletes;
            s.acked_entries = acked;
            s.lag.record(lag);
        });
        Ok(())
    }
}

/// A TCP connection from `from` (so the standby sees the node's underlay
/// address whatever the routing picks) to `to`, within `timeout` (Linux
/// bounds a blocking `connect(2)` by `SO_SNDTIMEO`: socket(7)).
fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use rustix::net::{self, AddressFamily, SocketFlags, SocketType, sockopt};
    let family = if from.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    net::bind(&fd, &SocketAddr::new(from, 0))?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(timeout.max(Duration::from_millis(1))))?;
    match net::connect(&fd, &to) {
        Ok(()) => Ok(TcpStream::from(fd)),
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::AGAIN) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {timeout:?}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The listener thread: accepts allowed peers, one session thread each,
/// until stopped; then joins the sessions.
fn listen(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut sessions: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        let (stream, addr) = match listener.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                shared.status.failed(|c| c.io += 1, format_args!("accepting: {e}"));
                std::thread::sleep(POLL);
                continue;
            }
        };
        sessions.retain(|t| !t.is_finished());
        // a dual-stack listener would show an IPv4 peer as ::ffff:a.b.c.d
        let peer = addr.ip().to_canonical();
        let allowed = !shared.roles().accepted_from(peer).is_empty();
        if !allowed || sessions.len() >= MAX_SESSIONS {
            let why = if allowed { "too many connections" } else { "not a peer of any slot this node stands by for" };
            shared.status.failed(|c| c.refused += 1, format_args!("refused `{peer}`: {why}"));
            continue;
        }
        let s = shared.clone();
        match std::thread::Builder::new().name(format!("egret-repl-from-{peer}")).spawn(move || serve(&s, stream, peer))
        {
            Ok(t) => sessions.push(t),
            Err(source) => shared.status.failed(|_| {}, ReplicateError::Spawn { source }),
        }
    }
    for t in sessions {
        let _ = t.join();
    }
}

/// A standby session with one owner, until it closes, misbehaves, goes
/// silent or the replicator stops.
fn serve(shared: &Shared, stream: TcpStream, peer: IpAddr) {
    shared.status.lock().owners.entry(peer).or_default().connections += 1;
    if let Err(e) = session(shared, stream, peer) {
        shared.status.link_failed(peer, &e);
    }
    let mut s = shared.status.lock();
    let o = s.owners.entry(peer).or_default();
    o.connections = o.connections.saturating_sub(1);
}

fn session(shared: &Shared, mut stream: TcpStream, peer: IpAddr) -> Result<(), LinkError> {
    let config = &shared.config;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(config.ack_timeout))?;
    let mut reader = FrameReader::default();
    let mut last_frame = Instant::now();
    let mut hello = false;
    let mut sweep: Option<Sweep> = None;
    // the slots accepted from this owner when the session began
    let mut accepting: Option<BTreeSet<u32>> = None;
    loop {
        if shared.stopping() {
            return Ok(());
        }
        let Some(frame) = reader.next(&mut stream)? else {
            if last_frame.elapsed() >= config.idle_timeout {
                return Err(LinkError::Unexpected("silent for the idle timeout"));
            }
            continue;
        };
        last_frame = Instant::now();
        match frame {
            Frame::Hello { node } if !hello && node == peer => hello = true,
            Frame::Hello { .. } => {
                return Err(LinkError::Unexpected("a hello that does not name the connection's source"));
            }
            Frame::Ack { .. } => return Err(LinkError::Unexpected("an owner sends no acks")),
            Frame::Batch(_) if !hello => return Err(LinkError::Unexpected("a batch before the hello")),
            Frame::Batch(batch) => {
                let accepted = shared.roles().accepted_from(peer);
                if accepted.is_empty() || accepting.get_or_insert_with(|| accepted.clone()) != &accepted {
                    // the owner believes acked entries are installed: what was
                    // ignored before must come again, in a full snapshot
                    return Err(LinkError::Resync);
                }
                let report = install(&*shared.maps, &accepted, config.node_ip, monotonic_ns(), &batch, &mut sweep);
                record_install(shared, peer, &batch, &report);
                if let Some(e) = report.overflow {
                    return Err(e);
                }
                stream.write_all(&encode(&Frame::Ack { seq: batch.seq }))?;
            }
        }
    }
}

fn record_install(shared: &Shared, peer: IpAddr, batch: &Batch, r: &Installed) {
    let mut s = shared.status.lock();
    let o = s.owners.entry(peer).or_default();
    o.batches += 1;
    o.snapshots += u64::from(batch.snapshot_end && r.swept.is_some());
    o.installed += r.installed;
    o.deleted += r.deleted;
    o.swept += r.swept.unwrap_or(0);
    o.ignored += r.ignored;
    o.last_batch_ns = monotonic_ns();
    s.errors.map_absent += r.absent;
    s.errors.map_read += r.read_errors.len() as u64;
    s.errors.map_write += r.write_errors.len() as u64;
    if let Some(e) = r.read_errors.last().or(r.write_errors.last()) {
        s.last_error = Some(format!("installing from `{peer}`: {e}"));
    }
}

/// A full snapshot being received: the slots it covers and the keys seen.
#[derive(Debug, Default)]
pub struct Sweep {
    slots: BTreeSet<u32>,
    seen: BTreeSet<EntryKey>,
}

/// What installing one batch did.
#[derive(Debug, Default)]
pub struct Installed {
    /// Entries written.
    pub installed: u64,
    /// Entries deleted on the owner's word.
    pub deleted: u64,
    /// Stale entries deleted, when the batch closed a snapshot.
    pub swept: Option<u64>,
    /// Entries of slots not accepted, left alone.
    pub ignored: u64,
    /// Entries skipped because their map is not pinned.
    pub absent: u64,
    /// Failed opens, walks and lookups.
    pub read_errors: Vec<StateMapError>,
    /// Failed writes and deletes.
    pub write_errors: Vec<StateMapError>,
    overflow: Option<LinkError>,
}

/// Installs one batch from an owner (module doc, "Standby side"): only
/// entries of `accepted` slots, times converted to `now` on this node
/// (`me`); `sweep` carries a full snapshot across its frames.
pub fn install(
    maps: &dyn NatMaps,
    accepted: &BTreeSet<u32>,
    me: IpAddr,
    now: u64,
    batch: &Batch,
    sweep: &mut Option<Sweep>,
) -> Installed {
    let mut r = Installed::default();
    if let Some(slots) = &batch.snapshot_of {
        *sweep = Some(Sweep { slots: slots.clone(), seen: BTreeSet::new() });
    }
    if let Some(s) = sweep.as_mut() {
        s.seen.extend(batch.upserts.iter().map(|(k, v)| (v.table(), *k)));
        if s.seen.len() > MAX_SNAPSHOT {
            *sweep = None;
            r.overflow = Some(LinkError::Unexpected("a snapshot larger than both maps"));
            return r;
        }
    }
    for table in Table::ALL {
        let upserts: Vec<&(NatKey, NatValue)> = batch.upserts.iter().filter(|(_, v)| v.table() == table).collect();
        let deletes: Vec<&NatKey> = batch.deletes.iter().filter(|(t, _)| *t == table).map(|(_, k)| k).collect();
        let sweeping = batch.snapshot_end && sweep.is_some();
        if upserts.is_empty() && deletes.is_empty() && !sweeping {
            continue;
        }
        let map = match maps.open(table) {
            Ok(Some(m)) => m,
            Ok(None) => {
                r.absent += (upserts.len() + deletes.len()) as u64;
                continue;
            }
            Err(e) => {
                r.read_errors.push(e);
                continue;
            }
        };
        for (key, value) in upserts {
            if !accepted.contains(&value.slot()) {
                r.ignored += 1;
                continue;
            }
            match map.set(&key.to_bytes(), &from_wire(*value, now, me).to_bytes()) {
                Ok(()) => r.installed += 1,
                Err(e) => r.write_errors.push(e),
            }
        }
        for key in deletes {
            let k = key.to_bytes();
            let ours = match map.get(&k) {
                Ok(v) => v.and_then(|v| NatValue::decode(table, &v)).is_some_and(|v| accepted.contains(&v.slot())),
                Err(e) => {
                    r.read_errors.push(e);
                    continue;
                }
            };
            if !ours {
                r.ignored += 1;
                continue;
            }
            match map.remove(&k) {
                Ok(()) => r.deleted += 1,
                Err(e) => r.write_errors.push(e),
            }
        }
        if let (true, Some(s)) = (sweeping, sweep.as_ref()) {
            let stale = match read_map(&*map, table) {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|(k, v)| {
                        s.slots.contains(&v.slot()) && accepted.contains(&v.slot()) && !s.seen.contains(&(table, *k))
                    })
                    .collect(),
                Err(e) => {
                    r.read_errors.push(e);
                    Vec::new()
                }
            };
            for (k, _) in stale {
                match map.remove(&k.to_bytes()) {
                    Ok(()) => *r.swept.get_or_insert(0) += 1,
                    Err(e) => r.write_errors.push(e),
                }
            }
            r.swept.get_or_insert(0);
        }
    }
    if batch.snapshot_end {
        *sweep = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_bpf::templates::{RV_F_CLOSING, RV_F_SEEN_REPLY};
    use egret_testkit::pinned_maps;
    use proptest::prelude::*;

    const O: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const S: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    const FLOAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const SEC: u64 = 1_000_000_000;

    /// The reverse and forward entries of one TCP flow of `pod:sport`
    /// through `slot`, NAT port `port`, last packet at `t`.
    fn flow(
        slot: u32,
        pod: Ipv4Addr,
        sport: u16,
        port: u16,
        node: impl Into<IpAddr>,
        flags: u8,
        t: u64,
    ) -> [(NatKey, NatValue); 2] {
        let rkey = NatKey { src: FLOAT, dst: REMOTE, sport: port, dport: 443, proto: 6 };
        let fkey = NatKey { src: pod, dst: REMOTE, sport, dport: 443, proto: 6 };
        let rev = ReverseNat {
            orig_src: pod,
            node: node.into(),
            slot,
            orig_sport: sport,
            flags,
            last_seen_ns: t,
            expires_ns: t + 60 * SEC,
        };
        let fwd = ForwardNat { egress_ip: FLOAT, nat_port: port, slot, created_ns: t - 5 * SEC, last_seen_ns: t };
        [(rkey, NatValue::Reverse(rev)), (fkey, NatValue::Forward(fwd))]
    }

    fn keyed(entries: &[(NatKey, NatValue)]) -> BTreeMap<EntryKey, NatValue> {
        entries.iter().map(|(k, v)| ((v.table(), *k), *v)).collect()
    }

    #[test]
    fn diff_sends_new_changed_and_refreshed_entries_and_deletes_gone_ones() {
        let refresh = SEC;
        let [r1, f1] = flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, O, 0, 100 * SEC);
        let [r2, f2] = flow(7, Ipv4Addr::new(10, 0, 0, 2), 4001, 61001, O, 0, 100 * SEC);
        let [r3, _] = flow(7, Ipv4Addr::new(10, 0, 0, 3), 4002, 61002, O, 0, 100 * SEC);
        let acked = keyed(&[r1, f1, r2, f2]);
        // nothing changed: nothing to send
        assert_eq!(diff(&acked, &acked, refresh), Delta::default());
        // times moved by less than the threshold: still nothing
        let nudged = |v: NatValue, by: u64| v.with_times(v.times().map(|t| t + by));
        let mut current = acked.clone();
        for v in current.values_mut() {
            *v = nudged(*v, refresh);
        }
        assert_eq!(diff(&current, &acked, refresh), Delta::default(), "exactly the threshold is not more");
        // r1's flags changed, f2's times moved by more, r3 is new, f1 is gone
        let NatValue::Reverse(mut r1v) = r1.1 else { panic!("reverse") };
        r1v.flags |= RV_F_SEEN_REPLY;
        current.insert((Table::Reverse, r1.0), NatValue::Reverse(r1v));
        current.insert((Table::Forward, f2.0), nudged(f2.1, refresh + 1));
        current.insert((Table::Reverse, r3.0), r3.1);
        current.remove(&(Table::Forward, f1.0));
        let d = diff(&current, &acked, refresh);
        let mut want_up = vec![(r1.0, NatValue::Reverse(r1v)), r3, (f2.0, nudged(f2.1, refresh + 1))];
        want_up.sort_by_key(|(k, v)| (v.table(), *k));
        assert_eq!(d.upserts, want_up);
        assert_eq!(d.deletes, vec![(Table::Forward, f1.0)]);
        // a time moving backwards (a restarted flow) counts the same
        assert!(needs_send(&r2.1, &nudged(r2.1, refresh + 1), refresh));
    }

    #[test]
    fn times_travel_as_offsets_from_the_scan_and_saturate_on_install() {
        let now = 1_000 * SEC;
        assert_eq!(absolute(relative(now - 3 * SEC, now), 50 * SEC), 47 * SEC, "3 s ago stays 3 s ago");
        assert_eq!(absolute(relative(now + 60 * SEC, now), 50 * SEC), 110 * SEC, "in 60 s stays in 60 s");
        assert_eq!(absolute(relative(now - 100 * SEC, now), 5 * SEC), 0, "older than the standby's uptime: 0");
        assert_eq!(absolute(relative(u64::MAX / 2, 0), u64::MAX - 1), u64::MAX, "saturates upwards too");

        // an owner-local pod's entry travels with the owner as its node
        let grace = SEC;
        let [(_, rev), (_, fwd)] =
            flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, Ipv4Addr::UNSPECIFIED, RV_F_LOCAL, now);
        let NatValue::Reverse(sent) = to_wire(rev, now, grace, O) else { panic!("reverse") };
        assert_eq!((sent.node, sent.flags), (O, 0));
        assert_eq!((sent.last_seen_ns, sent.expires_ns), (0, 61 * SEC), "offsets; expires with the grace");
        let NatValue::Reverse(got) = from_wire(NatValue::Reverse(sent), 20 * SEC, S) else { panic!("reverse") };
        assert_eq!((got.node, got.flags, got.last_seen_ns, got.expires_ns), (O, 0, 20 * SEC, 81 * SEC));
        // installed on the pod's own node it is local again
        let NatValue::Reverse(home) = from_wire(NatValue::Reverse(sent), 20 * SEC, O) else { panic!("reverse") };
        assert_eq!((home.node, home.flags), (Ipv4Addr::UNSPECIFIED.into(), RV_F_LOCAL));
        // forward entries: only the times change
        let back = from_wire(to_wire(fwd, now, grace, O), 20 * SEC, S);
        assert!(back.same_state(&fwd));
        assert_eq!(back.times(), [15 * SEC, 20 * SEC]);
    }

    fn sample_batch() -> Batch {
        let [r, f] = flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, O, RV_F_CLOSING, 9 * SEC);
        Batch {
            seq: 42,
            snapshot_of: Some(BTreeSet::from([7, 9])),
            snapshot_end: true,
            upserts: vec![r, f],
            deletes: vec![(Table::Forward, r.0)],
        }
    }

    #[test]
    fn frames_round_trip_and_report_their_length() {
        let frames = [
            Frame::Hello { node: O },
            Frame::Hello { node: "2001:db8::7".parse().expect("ip") },
            Frame::Ack { seq: u64::MAX },
            Frame::Batch(sample_batch()),
            Frame::Batch(Batch::default()),
        ];
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend(encode(f));
        }
        let mut at = 0;
        for f in &frames {
            let (got, used) = decode(&stream[at..]).expect("decodes").expect("complete");
            assert_eq!(&got, f);
            at += used;
        }
        assert_eq!(at, stream.len());
        // every strict prefix of a frame is incomplete, not an error
        let one = encode(&Frame::Batch(sample_batch()));
        for n in 0..one.len() {
            assert_eq!(decode(&one[..n]), Ok(None), "prefix of {n} bytes");
        }
    }

    #[test]
    fn decode_refuses_garbage() {
        let mut bad_version = encode(&Frame::Ack { seq: 1 });
        bad_version[4] = VERSION + 1;
        assert_eq!(decode(&bad_version), Err(WireError::Version { version: VERSION + 1 }));
        let mut bad_kind = encode(&Frame::Ack { seq: 1 });
        bad_kind[5] = 9;
        assert_eq!(decode(&bad_kind), Err(WireError::Kind { kind: 9 }));
        let over = u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes();
        assert_eq!(decode(&over), Err(WireError::Length { len: MAX_FRAME + 1, max: MAX_FRAME }), "before any body");
        assert_eq!(decode(&[0, 0, 0, 0]), Err(WireError::Length { len: 0, max: MAX_FRAME }));
        // an ack with a byte too many, a hello with one too few
        let mut long = encode(&Frame::Ack { seq: 1 });
        long.push(0);
        long[3] += 1;
        assert_eq!(decode(&long), Err(malformed("trailing bytes")));
        let mut short = encode(&Frame::Hello { node: O });
        short.pop();
        short[3] -= 1;
        assert_eq!(decode(&short), Err(malformed("truncated")));
        // a batch claiming more upserts than its bytes hold
        let mut b = encode(&Frame::Batch(Batch::default()));
        let upserts_at = 4 + BATCH_FIXED - 8;
        b[upserts_at..upserts_at + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(decode(&b), Err(malformed("entry count beyond the frame")));
        // an unknown table byte
        let mut t = encode(&Frame::Batch(sample_batch()));
        let first_upsert = 4 + BATCH_FIXED - 4 + 2 * 4;
        t[first_upsert] = 7;
        assert_eq!(decode(&t), Err(malformed("unknown table")));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_nor_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn batches_round_trip(seq in any::<u64>(), n in 0usize..40, m in 0usize..40, t in any::<u64>(), flags in any::<u8>()) {
            let entries: Vec<(NatKey, NatValue)> = (0..n)
                .flat_map(|i| {
                    let i16 = u16::try_from(i).expect("small");
                    flow(u32::try_from(i).expect("small"), Ipv4Addr::new(10, 0, 0, 1), i16, 61000 + i16, O, flags, t.max(5 * SEC))
                })
                .collect();
            let deletes: Vec<EntryKey> = entries.iter().take(m).map(|(k, v)| (v.table(), *k)).collect();
            let batch = Batch { seq, snapshot_of: None, snapshot_end: m % 2 == 0, upserts: entries, deletes };
            let bytes = encode(&Frame::Batch(batch.clone()));
            prop_assert_eq!(decode(&bytes), Ok(Some((Frame::Batch(batch), bytes.len()))));
        }
    }

    #[test]
    fn a_big_snapshot_is_split_into_frames_within_the_limits() {
        let upserts: Vec<(NatKey, NatValue)> = (0..5000u32)
            .map(|i| {
                let port = u16::try_from(i).expect("small");
                flow(7, Ipv4Addr::from(0x0a00_0000 + i), port, port, S, 0, 10 * SEC)[0]
            })
            .collect();
        let deletes: Vec<EntryKey> = upserts.iter().take(100).map(|(k, v)| (v.table(), *k)).collect();
        let batches = split(5, upserts.clone(), deletes.clone(), Some(BTreeSet::from([7])));
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(
            batches.iter().map(|b| (b.upserts.len(), b.deletes.len())).collect::<Vec<_>>(),
            [(2048, 0), (2048, 0), (904, 100)]
        );
        assert_eq!(batches[0].snapshot_of, Some(BTreeSet::from([7])));
        assert!(batches[1..].iter().all(|b| b.snapshot_of.is_none()));
        assert_eq!(batches.iter().map(|b| b.snapshot_end).collect::<Vec<_>>(), [false, false, true]);
        for b in &batches {
            let bytes = encode(&Frame::Batch(b.clone()));
            assert!(bytes.len() - 4 <= MAX_FRAME);
            assert_eq!(decode(&bytes).expect("within the limits").map(|(f, _)| f), Some(Frame::Batch(b.clone())));
        }
        let all: Vec<_> = batches.iter().flat_map(|b| b.upserts.clone()).collect();
        assert_eq!(all, upserts);
        // nothing to send is still one (heartbeat) batch
        let empty = split(1, Vec::new(), Vec::new(), None);
        assert_eq!(empty, [Batch { seq: 1, ..Batch::default() }]);
    }

    #[test]
    fn roles_name_standbys_without_this_node_and_accept_only_allowed_unowned_slots() {
        let roles = Roles {
            owned: BTreeMap::from([(7, BTreeSet::from([S, O])), (8, BTreeSet::from([S, C])), (3, BTreeSet::from([C]))]),
            standby_for: BTreeMap::from([(5, BTreeSet::from([S])), (6, BTreeSet::from([C])), (3, BTreeSet::from([S]))]),
        };
        assert_eq!(
            roles.standbys(O),
            BTreeMap::from([(S, BTreeSet::from([7, 8])), (C, BTreeSet::from([3, 8]))]),
            "never this node"
        );
        assert_eq!(roles.accepted_from(S), BTreeSet::from([5]), "3 is owned here");
        assert_eq!(roles.accepted_from(C), BTreeSet::from([6]));
        assert!(roles.accepted_from(O).is_empty());
    }

    #[test]
    fn lag_keeps_last_max_percentiles_and_cumulative_buckets() {
        let mut lag = LagStats::default();
        for ms in 1..=100u64 {
            lag.record(Duration::from_millis(ms));
        }
        assert_eq!((lag.samples, lag.last_ns, lag.max_ns), (100, 100_000_000, 100_000_000));
        assert_eq!((lag.p50_ns, lag.p99_ns), (50_000_000, 99_000_000));
        assert_eq!(lag.buckets, [1, 2, 5, 10, 25, 50, 100, 100, 100, 100, 100]);
        // the window forgets, the max does not
        for _ in 0..LAG_WINDOW {
            lag.record(Duration::from_millis(2));
        }
        assert_eq!((lag.p99_ns, lag.max_ns), (2_000_000, 100_000_000));
    }

    /// One in-memory map: key bytes → value bytes.
    type Bytes = BTreeMap<Vec<u8>, Vec<u8>>;

    /// In-memory NAT maps; a table is pinned once it has been created.
    #[derive(Debug, Default)]
    struct MemoryMaps {
        tables: Mutex<BTreeMap<Table, Bytes>>,
    }

    impl MemoryMaps {
        fn pinned() -> MemoryMaps {
            let m = MemoryMaps::default();
            for t in Table::ALL {
                m.tables.lock().expect("lock").insert(t, BTreeMap::new());
            }
            m
        }
    }

    #[derive(Debug)]
    struct MemoryMap<'a> {
        maps: &'a MemoryMaps,
        table: Table,
    }

    impl MemoryMap<'_> {
        fn with<R>(&self, f: impl FnOnce(&mut Bytes) -> R) -> R {
            f(self.maps.tables.lock().expect("lock").entry(self.table).or_default())
        }
    }

    impl NatMap for MemoryMap<'_> {
        fn entries(&self) -> Result<Vec<EntryBytes>, StateMapError> {
            Ok(self.with(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateMapError> {
            Ok(self.with(|t| t.get(key).cloned()))
        }
        fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StateMapError> {
            assert_eq!((key.len(), value.len()), (NatKey::SIZE, self.table.value_size()), "the map's geometry");
            self.with(|t| t.insert(key.to_vec(), value.to_vec()));
            Ok(())
        }
        fn remove(&self, key: &[u8]) -> Result<(), StateMapError> {
            self.with(|t| t.remove(key));
            Ok(())
        }
    }

    impl NatMaps for MemoryMaps {
        fn open(&self, table: Table) -> Result<Option<Box<dyn NatMap + '_>>, StateMapError> {
            let pinned = self.tables.lock().expect("lock").contains_key(&table);
            Ok(pinned.then(|| Box::new(MemoryMap { maps: self, table }) as Box<dyn NatMap>))
        }
    }

    fn put(maps: &dyn NatMaps, entries: &[(NatKey, NatValue)]) {
        for (k, v) in entries {
            maps.open(v.table()).expect("opens").expect("pinned").set(&k.to_bytes(), &v.to_bytes()).expect("set");
        }
    }

    fn drop_entry(maps: &dyn NatMaps, (k, v): (NatKey, NatValue)) {
        maps.open(v.table()).expect("opens").expect("pinned").remove(&k.to_bytes()).expect("remove");
    }

    fn contents(maps: &dyn NatMaps) -> BTreeMap<EntryKey, NatValue> {
        Table::ALL
            .iter()
            .flat_map(|t| {
                let m = maps.open(*t).expect("opens").expect("pinned");
                read_map(&*m, *t).expect("reads").into_iter().map(|(k, v)| ((*t, k), v))
            })
            .collect()
    }

    #[test]
    fn install_writes_accepted_slots_only_and_a_snapshot_sweeps_stale_entries() {
        let maps = MemoryMaps::pinned();
        let now = 500 * SEC;
        let own = flow(9, Ipv4Addr::new(10, 1, 0, 1), 5000, 61100, S, 0, now);
        let stale = flow(7, Ipv4Addr::new(10, 1, 0, 2), 5001, 61101, O, 0, now);
        let gone = flow(7, Ipv4Addr::new(10, 1, 0, 3), 5002, 61102, O, 0, now);
        put(&maps, &own);
        put(&maps, &stale);
        put(&maps, &gone);
        let fresh = flow(7, Ipv4Addr::new(10, 1, 0, 4), 5003, 61103, O, 0, now);
        let foreign = flow(8, Ipv4Addr::new(10, 1, 0, 5), 5004, 61104, O, 0, now);
        let wire = |e: [(NatKey, NatValue); 2]| e.map(|(k, v)| (k, to_wire(v, now, 0, O)));
        let accepted = BTreeSet::from([7]);
        // a two-frame snapshot of slots 7, 8, 9 (9 is not accepted: the standby's own)
        let mut sweep = None;
        let first = Batch {
            seq: 1,
            snapshot_of: Some(BTreeSet::from([7, 8, 9])),
            upserts: wire(fresh).to_vec(),
            deletes: vec![(Table::Reverse, own[0].0), (Table::Reverse, gone[0].0)],
            ..Batch::default()
        };
        let r = install(&maps, &accepted, S, now, &first, &mut sweep);
        assert_eq!((r.installed, r.deleted, r.ignored, r.swept), (1 + 1, 1, 1, None));
        let last = Batch { seq: 2, snapshot_end: true, upserts: wire(foreign).to_vec(), ..Batch::default() };
        let r = install(&maps, &accepted, S, now, &last, &mut sweep);
        assert_eq!((r.installed, r.ignored, r.swept), (0, 2, Some(2 + 1)), "stale flow and gone's forward entry");
        assert!(sweep.is_none() && r.read_errors.is_empty() && r.write_errors.is_empty());
        let want = keyed(&[own, fresh].concat());
        assert_eq!(contents(&maps), want, "own slot-9 flow untouched, slot 7 as the snapshot says, slot 8 ignored");

        // an absent map is skipped and counted
        let empty = MemoryMaps::default();
        let r = install(&empty, &accepted, S, now, &first, &mut None);
        assert_eq!((r.installed, r.absent), (0, 4));
    }

    /// Polls `f` until it holds, at most 10 s (a correctness wait, not a timing).
    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config(node: IpAddr, port: u16) -> ReplicatorConfig {
        let mut c = ReplicatorConfig::new("/nonexistent", node);
        c.port = port;
        c.scan_interval = Duration::from_millis(10);
        c
    }

    /// A standby on `S` and an owner on `O` with the same port.
    fn pair(a: &Arc<dyn NatMaps>, b: &Arc<dyn NatMaps>) -> (Replicator, Replicator) {
        for _ in 0..20 {
            let standby = Replicator::start_with(config(S, 0), b.clone()).expect("standby listens");
            let port = standby.local_addr().port();
            if let Ok(owner) = Replicator::start_with(config(O, port), a.clone()) {
                return (owner, standby);
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2");
    }

    fn standby_roles() -> (BTreeMap<u32, BTreeSet<IpAddr>>, BTreeMap<u32, BTreeSet<IpAddr>>) {
        (BTreeMap::new(), BTreeMap::from([(7, BTreeSet::from([O]))]))
    }

    /// The replication scenario over loopback TCP between two nodes' maps
    /// `a` (owner, 127.0.0.1) and `b` (standby, 127.0.0.2): full snapshot
    /// with times converted, sweep, deletes, flag changes, a reconnect, a
    /// refused peer, garbage.
    fn scenario(a: &Arc<dyn NatMaps>, b: &Arc<dyn NatMaps>) {
        let t = monotonic_ns().max(10 * SEC);
        let local = flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, Ipv4Addr::UNSPECIFIED, RV_F_LOCAL, t);
        let remote = flow(7, Ipv4Addr::new(10, 0, 1, 1), 4001, 61001, Ipv4Addr::new(192, 0, 2, 5), 0, t);
        let unfloating = flow(9, Ipv4Addr::new(10, 0, 0, 2), 4002, 61002, Ipv4Addr::UNSPECIFIED, RV_F_LOCAL, t);
        let standby_own = flow(9, Ipv4Addr::new(10, 0, 2, 1), 4003, 61003, Ipv4Addr::new(192, 0, 2, 6), 0, t);
        let stale = flow(7, Ipv4Addr::new(10, 0, 3, 1), 4004, 61004, Ipv4Addr::new(192, 0, 2, 6), 0, t);
        put(&**a, &[local, remote, unfloating].concat());
        put(&**b, &[standby_own, stale].concat());
        let before = monotonic_ns();

        let (owner, standby) = pair(a, b);
        let port = standby.local_addr().port();
        let (owned, standby_for) = standby_roles();
        standby.set_roles(owned, standby_for);
        owner.set_roles(BTreeMap::from([(7, BTreeSet::from([S]))]), BTreeMap::new());
        let replicated = |b: &BTreeMap<EntryKey, NatValue>, flows: &[[(NatKey, NatValue); 2]]| {
            flows.iter().flatten().all(|(k, v)| b.get(&(v.table(), *k)).is_some_and(|got| got.slot() == v.slot()))
        };
        eventually("the snapshot is installed and the stale flow swept", || {
            let got = contents(&**b);
            replicated(&got, &[local, remote]) && !got.contains_key(&(Table::Reverse, stale[0].0))
        });
        let after = monotonic_ns();
        eventually("the owner has the snapshot's ack", || owner.status().standbys[&S].snapshots == 1);
        let got = contents(&**b);
        assert_eq!(got.len(), 6, "slot 7's two flows and the standby's own flow: {got:?}");
        assert!(replicated(&got, &[standby_own]), "the standby's own slot-9 flow is untouched");
        assert!(!got.contains_key(&(Table::Reverse, unfloating[0].0)), "slot 9 is not replicated");
        // the local pod's replies go to the old owner after a takeover
        let NatValue::Reverse(r) = got[&(Table::Reverse, local[0].0)] else { panic!("reverse") };
        let NatValue::Reverse(orig) = local[0].1 else { panic!("reverse") };
        assert_eq!((r.orig_src, r.orig_sport, r.slot, r.node, r.flags), (orig.orig_src, 4000, 7, O, 0));
        // one clock on both "nodes" here: a time arrives shifted by the transfer
        // time (between 0 and the test's duration), expires also by the grace
        let shift = |got: u64, sent: u64| got.checked_sub(sent).filter(|d| *d <= after - before);
        assert!(shift(r.last_seen_ns, orig.last_seen_ns).is_some(), "{r:?} vs {orig:?}");
        assert!(shift(r.expires_ns, orig.expires_ns + SEC).is_some(), "{r:?} vs {orig:?}");
        let f = got[&(Table::Forward, local[1].0)];
        assert!(f.same_state(&local[1].1));
        assert!(f.times().iter().zip(local[1].1.times()).all(|(g, s)| shift(*g, s).is_some()), "{f:?}");

        let s = owner.status();
        let link = &s.standbys[&S];
        assert!(link.connected && link.connects == 1 && link.snapshots == 1 && link.acked_entries == 4, "{s:?}");
        assert!(link.lag.samples >= 1 && link.lag.last_ns > 0 && link.lag.max_ns >= link.lag.last_ns, "{s:?}");
        let st = standby.status();
        let from = &st.owners[&O];
        assert!(from.installed >= 4 && from.swept == 2 && from.snapshots == 1, "{st:?}");
        assert_eq!(st.errors, ErrorCounts::default(), "{st:?}");

        // a connection closes: deletes and flag changes follow
        drop_entry(&**a, remote[0]);
        drop_entry(&**a, remote[1]);
        let NatValue::Reverse(mut closing) = local[0].1 else { panic!("reverse") };
        closing.flags |= RV_F_SEEN_REPLY | RV_F_CLOSING;
        put(&**a, &[(local[0].0, NatValue::Reverse(closing))]);
        eventually("the delete and the flags arrive", || {
            let got = contents(&**b);
            let flags = match got.get(&(Table::Reverse, local[0].0)) {
                Some(NatValue::Reverse(r)) => r.flags,
                _ => 0,
            };
            !replicated(&got, &[remote]) && got.len() == 4 && flags == RV_F_SEEN_REPLY | RV_F_CLOSING
        });

        // the standby restarts with empty maps: the owner reconnects and resends everything
        standby.stop();
        for (k, _) in contents(&**b) {
            b.open(k.0).expect("opens").expect("pinned").remove(&k.1.to_bytes()).expect("remove");
        }
        let standby = Replicator::start_with(config(S, port), b.clone()).expect("the standby listens again");
        let (owned, standby_for) = standby_roles();
        standby.set_roles(owned, standby_for);
        eventually("a full snapshot after the reconnect", || replicated(&contents(&**b), &[local]));
        eventually("the owner has its ack", || owner.status().standbys[&S].snapshots == 2);
        let s = owner.status();
        assert_eq!(s.standbys[&S].connects, 2, "{s:?}");
        assert!(s.errors.io + s.errors.connect >= 1, "the broken connection was seen: {s:?}");

        // a node that is not an allowed peer is refused, its entries never installed
        let refused = standby.status().errors.refused;
        let c_maps: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        let intruder = flow(7, Ipv4Addr::new(10, 0, 9, 9), 4009, 61009, Ipv4Addr::new(192, 0, 2, 9), 0, t);
        put(&*c_maps, &intruder);
        let c = Replicator::start_with(config(C, port), c_maps).expect("127.0.0.3 listens");
        c.set_roles(BTreeMap::from([(7, BTreeSet::from([S]))]), BTreeMap::new());
        eventually("the intruder is refused", || standby.status().errors.refused > refused);
        drop(c);
        assert!(!replicated(&contents(&**b), &[intruder]));

        // garbage from an allowed peer closes that connection only
        let mut raw = connect_from(O, SocketAddr::new(S, port), Duration::from_secs(5)).expect("connects");
        raw.write_all(&[0xff; 64]).expect("writes");
        raw.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 16];
        assert!(matches!(raw.read(&mut buf), Ok(0) | Err(_)), "closed by the standby");
        eventually("counted as a protocol error", || standby.status().errors.protocol >= 1);
        drop_entry(&**a, local[1]);
        eventually("replication goes on", || !contents(&**b).contains_key(&(Table::Forward, local[1].0)));
        drop(owner);
        drop(standby);
    }

    #[test]
    fn nat_state_replicates_over_loopback_between_in_memory_maps() {
        let a: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        let b: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        scenario(&a, &b);
    }

    #[test]
    fn a_standby_that_starts_accepting_a_slot_gets_its_entries() {
        let a: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        let b: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        let seven = flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, Ipv4Addr::new(192, 0, 2, 5), 0, 10 * SEC);
        let eight = flow(8, Ipv4Addr::new(10, 0, 0, 2), 4001, 61001, Ipv4Addr::new(192, 0, 2, 5), 0, 10 * SEC);
        put(&*a, &[seven, eight].concat());
        let (owner, standby) = pair(&a, &b);
        standby.set_roles(BTreeMap::new(), BTreeMap::from([(7, BTreeSet::from([O]))]));
        owner.set_roles(BTreeMap::from([(7, BTreeSet::from([S])), (8, BTreeSet::from([S]))]), BTreeMap::new());
        eventually("slot 7 installed, slot 8 ignored", || {
            contents(&*b).len() == 2 && standby.status().owners.get(&O).is_some_and(|o| o.ignored == 2)
        });
        standby.set_roles(BTreeMap::new(), BTreeMap::from([(7, BTreeSet::from([O])), (8, BTreeSet::from([O]))]));
        let want: Vec<EntryKey> = keyed(&[seven, eight].concat()).into_keys().collect();
        eventually("slot 8 arrives too", || contents(&*b).into_keys().collect::<Vec<_>>() == want);
        // the owner counts a snapshot when its ack comes back, after the standby installed it
        eventually("a resynchronisation is a new snapshot, acked", || owner.status().standbys[&S].snapshots >= 2);
    }

    #[test]
    fn an_owner_without_pinned_maps_sends_nothing() {
        let a: Arc<dyn NatMaps> = Arc::new(MemoryMaps::default());
        let b: Arc<dyn NatMaps> = Arc::new(MemoryMaps::pinned());
        put(&*b, &flow(7, Ipv4Addr::new(10, 0, 0, 1), 4000, 61000, O, 0, 10 * SEC));
        let (owner, standby) = pair(&a, &b);
        owner.set_roles(BTreeMap::from([(7, BTreeSet::from([S]))]), BTreeMap::new());
        let (owned, standby_for) = standby_roles();
        standby.set_roles(owned, standby_for);
        eventually("a few scans", || owner.status().errors.map_absent >= 3);
        let s = owner.status();
        assert!(!s.maps_pinned && s.standbys.values().all(|l| l.rounds == 0), "{s:?}");
        assert_eq!(contents(&*b).len(), 2, "nothing deleted on the standby");
    }

    /// A private bpffs mount, unmounted (with every pin) on drop.
    struct Bpffs(PathBuf);

    impl Bpffs {
        fn mount(tag: &str) -> Bpffs {
            let dir = std::env::temp_dir().join(format!("egret-repl-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("mount point");
            let ok = std::process::Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status();
            assert!(ok.is_ok_and(|s| s.success()), "mount -t bpf on {}", dir.display());
            Bpffs(dir)
        }
    }

    impl Drop for Bpffs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// The NAT maps as the kernel makes them, pinned as state maps of a root on `fs`.
    fn kernel_maps(fs: &Bpffs) -> Arc<dyn NatMaps> {
        let root = fs.0.join("egret");
        let state = PinLayout::new(&root).state_dir();
        std::fs::create_dir_all(&state).expect("state dir");
        let defs: Vec<MapDef> = Table::ALL.iter().map(|t| t.map_def().expect("the templates declare it")).collect();
        pinned_maps::create_pinned(&state, &defs);
        Arc::new(PinnedNatMaps::new(root))
    }

    #[test]
    fn nat_state_replicates_between_real_kernel_maps() {
        if !egret_testkit::netns::privileged("nat_state_replicates_between_real_kernel_maps") {
            return;
        }
        let (fs_a, fs_b) = (Bpffs::mount("a"), Bpffs::mount("b"));
        let (a, b) = (kernel_maps(&fs_a), kernel_maps(&fs_b));
        scenario(&a, &b);
    }
}

//! Sample artifacts for tests, benchmarks and demos — *not* egret's
//! classifier (that one is generated from plans by the compiler). They are
//! built the way the compiler builds real ones (egret-bpf's assembler,
//! static verifier, ELF writer and `Artifact::new`) so the loader is exercised
//! on the same kind of object.
//!
//! The artifact has two programs and two maps:
//! - `demo_classify` at [`AttachPoint::PodVethIngress`]: for an IPv4/UDP
//!   packet of at least [`MIN_FRAME`] bytes it looks the destination address
//!   up in `verdicts` (HASH, key: address in network byte order; value:
//!   verdict `u32` LE then map tag `u32` LE) and returns the verdict
//!   ([`Verdict::Pass`] = `TC_ACT_OK`, [`Verdict::Drop`] = `TC_ACT_SHOT`), or
//!   `TC_ACT_SHOT` if the address is not in the table. It stamps the UDP
//!   payload: byte [`STAMP_CODE_TAG`] gets the generation tag compiled into
//!   the code (hole `%gen_tag`), byte [`STAMP_MAP_TAG`] the tag stored in the
//!   map entry, byte [`STAMP_IFINDEX`] the low byte of the ifindex filled into
//!   hole `%marker_ifindex` (an `Ifindex` hole source). Other packets pass
//!   unstamped. It counts in `counters` (PERCPU_ARRAY): index 0 passed,
//!   1 dropped, 2 not classified.
//! - `demo_tunnel` at [`AttachPoint::TunnelIngress`]: counts in `counters[3]`
//!   and passes.
//!
//! A packet that crossed generation G therefore carries G's code tag and G's
//! map tag; a mix of one generation's code with another's maps, or a packet
//! seen with a half-filled table (default drop), is visible in the packet.

use std::net::Ipv4Addr;

use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource, HoleSpec, MapImage, ProgramSpec};
use egret_bpf::asm::{AsmErrors, assemble};
use egret_bpf::elf::{DEFAULT_LICENSE, ElfError, verify_and_write};

/// Smallest frame the classifier looks at: Ethernet 14 + IPv4 20 + UDP 8 + payload 8.
pub const MIN_FRAME: usize = 50;
/// Offset of the UDP payload in a frame (IPv4 without options).
pub const PAYLOAD: usize = 42;
/// Frame offset of the code tag stamp (payload byte 4).
pub const STAMP_CODE_TAG: usize = PAYLOAD + 4;
/// Frame offset of the map tag stamp (payload byte 5).
pub const STAMP_MAP_TAG: usize = PAYLOAD + 5;
/// Frame offset of the ifindex stamp (payload byte 6).
pub const STAMP_IFINDEX: usize = PAYLOAD + 6;

/// `counters` index of passed packets.
pub const COUNTER_PASSED: u32 = 0;
/// `counters` index of dropped packets.
pub const COUNTER_DROPPED: u32 = 1;
/// `counters` index of packets that were not IPv4/UDP.
pub const COUNTER_UNCLASSIFIED: u32 = 2;
/// `counters` index of packets seen by `demo_tunnel`.
pub const COUNTER_TUNNEL: u32 = 3;

/// Name of the classifier program.
pub const CLASSIFY_PROGRAM: &str = "demo_classify";
/// Name of the tunnel program.
pub const TUNNEL_PROGRAM: &str = "demo_tunnel";

const CLASSIFY: &str = "
.map verdicts, hash, key_size=4, value_size=8, max_entries=256
.map counters, percpu_array, key_size=4, value_size=8, max_entries=4
.equ DATA, 76
.equ DATA_END, 80
.equ MIN_FRAME, 50
    r6 = r1
    r7 = 0                        // TC_ACT_OK unless an IPv4/UDP packet says otherwise
    r9 = 2                        // counter: not classified
    r2 = *(u32 *)(r6 + DATA)
    r3 = *(u32 *)(r6 + DATA_END)
    r4 = r2
    r4 += MIN_FRAME
    if r4 > r3 goto count
    r4 = *(u16 *)(r2 + 12)
    if r4 != 0x8 goto count       // ethertype IPv4, read little-endian
    r4 = *(u8 *)(r2 + 23)
    if r4 != 17 goto count        // UDP
    r4 = *(u32 *)(r2 + 30)        // destination address, network byte order
    *(u32 *)(r10 - 4) = r4
    r2 = r10
    r2 += -4
    r1 = map[verdicts] ll
    call map_lookup_elem
    r7 = 2                        // TC_ACT_SHOT for a destination not in the table
    r8 = 0                        // map tag 0: no entry
    if r0 == 0 goto decided
    r7 = *(u32 *)(r0 + 0)
    r8 = *(u32 *)(r0 + 4)
decided:
    r9 = 0                        // counter: passed
    if r7 == 0 goto stamp
    r9 = 1                        // counter: dropped
stamp:
    r2 = *(u32 *)(r6 + DATA)      // packet pointers do not survive a helper call
    r3 = *(u32 *)(r6 + DATA_END)
    r4 = r2
    r4 += MIN_FRAME
    if r4 > r3 goto count
    w5 = %gen_tag
    *(u8 *)(r2 + 46) = r5
    *(u8 *)(r2 + 47) = r8
    w5 = %marker_ifindex
    *(u8 *)(r2 + 48) = r5
count:
    *(u32 *)(r10 - 8) = r9
    r2 = r10
    r2 += -8
    r1 = map[counters] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
out:
    r0 = r7
    exit
";

const TUNNEL: &str = "
    *(u32 *)(r10 - 4) = 3         // counter: tunnel
    r2 = r10
    r2 += -4
    r1 = map[counters] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
out:
    r0 = 0
    exit
";

/// What the classifier does with a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `TC_ACT_OK` (0).
    Pass,
    /// `TC_ACT_SHOT` (2).
    Drop,
}

impl Verdict {
    /// The tc action code.
    #[must_use]
    pub const fn action(self) -> u32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Drop => 2,
        }
    }
}

/// A demo artifact's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSpec {
    /// Node name in the manifest.
    pub node: String,
    /// Tag compiled into the code and stored in every map entry (1..=255; 0
    /// means "no entry" in the stamp).
    pub tag: u8,
    /// The `verdicts` table.
    pub verdicts: Vec<(Ipv4Addr, Verdict)>,
    /// The interface whose ifindex fills `%marker_ifindex` (default `lo`,
    /// present in every network namespace).
    pub marker_interface: String,
    /// Whether to include `demo_tunnel` (at `TunnelIngress`).
    pub tunnel_program: bool,
    /// Extra entries for `verdicts` beyond the listed ones, to grow the image
    /// (destinations 10.255.x.y, all [`Verdict::Drop`]).
    pub filler_entries: u32,
}

impl DemoSpec {
    /// A spec with no verdicts, marker `lo`, with the tunnel program.
    #[must_use]
    pub fn new(node: &str, tag: u8) -> DemoSpec {
        DemoSpec {
            node: node.to_owned(),
            tag,
            verdicts: Vec::new(),
            marker_interface: "lo".into(),
            tunnel_program: true,
            filler_entries: 0,
        }
    }

    /// Adds a verdict.
    #[must_use]
    pub fn verdict(mut self, dst: Ipv4Addr, verdict: Verdict) -> DemoSpec {
        self.verdicts.push((dst, verdict));
        self
    }
}

/// Why a demo artifact could not be built (a bug in this module if it happens).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The assembler rejected a source.
    #[error("assembling `{program}`: {source}")]
    Asm {
        /// Program name.
        program: &'static str,
        /// The assembler's errors.
        source: AsmErrors,
    },
    /// Verification or the ELF writer failed.
    #[error("writing the object: {source}")]
    Elf {
        /// The ELF layer's error.
        source: ElfError,
    },
    /// Too many entries for the `verdicts` map.
    #[error("{entries} verdicts exceed the table's 256 entries")]
    TooManyEntries {
        /// Requested entries.
        entries: usize,
    },
}

/// The map value for a verdict with a tag.
#[must_use]
pub fn verdict_value(verdict: Verdict, tag: u8) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&verdict.action().to_le_bytes());
    v[4..].copy_from_slice(&u32::from(tag).to_le_bytes());
    v
}

/// Builds the demo artifact (deterministic: equal specs give equal bytes and digests).
///
/// # Errors
/// See [`DemoError`].
pub fn demo_artifact(spec: &DemoSpec) -> Result<Artifact, DemoError> {
    let classify =
        assemble(CLASSIFY_PROGRAM, CLASSIFY).map_err(|source| DemoError::Asm { program: CLASSIFY_PROGRAM, source })?;
    let maps = classify.maps.clone();
    let mut programs = vec![classify.program];
    let mut specs = vec![ProgramSpec::attached(CLASSIFY_PROGRAM, AttachPoint::PodVethIngress)];
    if spec.tunnel_program {
        let tunnel =
            assemble(TUNNEL_PROGRAM, TUNNEL).map_err(|source| DemoError::Asm { program: TUNNEL_PROGRAM, source })?;
        programs.push(tunnel.program);
        specs.push(ProgramSpec::attached(TUNNEL_PROGRAM, AttachPoint::TunnelIngress));
    }
    let object = verify_and_write(&programs, &maps, DEFAULT_LICENSE).map_err(|source| DemoError::Elf { source })?;
    let total = spec.verdicts.len() + spec.filler_entries as usize;
    if total > 256 {
        return Err(DemoError::TooManyEntries { entries: total });
    }
    let mut images: Vec<MapImage> = maps.iter().map(MapImage::of).collect();
    for (dst, verdict) in &spec.verdicts {
        images[0].push(&dst.octets(), &verdict_value(*verdict, spec.tag));
    }
    for i in 0..spec.filler_entries {
        let [_, _, hi, lo] = i.to_be_bytes();
        images[0].push(&[10, 255, hi, lo], &verdict_value(Verdict::Drop, spec.tag));
    }
    let holes = vec![
        HoleSpec { name: "gen_tag".into(), source: HoleSource::Constant { value: u64::from(spec.tag) } },
        HoleSpec { name: "marker_ifindex".into(), source: HoleSource::Ifindex { link: spec.marker_interface.clone() } },
    ];
    Ok(Artifact::new(&spec.node, object, specs, holes, images))
}

/// Name of the tail-calling entry program of [`tail_call_artifact`].
pub const TAIL_ENTRY_PROGRAM: &str = "demo_tail_entry";
/// Name of the tail-call target of [`tail_call_artifact`].
pub const TAIL_TARGET_PROGRAM: &str = "demo_tail_target";
/// The `prog_array` of [`tail_call_artifact`].
pub const TAIL_MAP: &str = "demo_progs";

const TAIL_ENTRY: &str = "
.map demo_progs, prog_array, key_size=4, value_size=4, max_entries=2
    r2 = map[demo_progs] ll
    r3 = 0
    call tail_call
    r0 = 2                        // TC_ACT_SHOT: the slot was empty
    exit
";

const TAIL_TARGET: &str = "
.equ DATA, 76
.equ DATA_END, 80
.equ MIN_FRAME, 50
    r2 = *(u32 *)(r1 + DATA)
    r3 = *(u32 *)(r1 + DATA_END)
    r4 = r2
    r4 += MIN_FRAME
    if r4 > r3 goto out
    w5 = %gen_tag
    *(u8 *)(r2 + 46) = r5
out:
    r0 = 0
    exit
";

/// A tail-call sample: `demo_tail_entry` at [`AttachPoint::PodVethIngress`]
/// tail-calls slot 0 of `demo_progs` and drops (`TC_ACT_SHOT`) if the slot is
/// empty; `demo_tail_target`, attached nowhere, fills that slot: it stamps
/// the generation tag (hole `%gen_tag`) at [`STAMP_CODE_TAG`] of a frame of
/// at least [`MIN_FRAME`] bytes and passes (`TC_ACT_OK`).
///
/// # Errors
/// See [`DemoError`].
pub fn tail_call_artifact(node: &str, tag: u8) -> Result<Artifact, DemoError> {
    let entry = assemble(TAIL_ENTRY_PROGRAM, TAIL_ENTRY)
        .map_err(|source| DemoError::Asm { program: TAIL_ENTRY_PROGRAM, source })?;
    let target = assemble(TAIL_TARGET_PROGRAM, TAIL_TARGET)
        .map_err(|source| DemoError::Asm { program: TAIL_TARGET_PROGRAM, source })?;
    let maps = entry.maps.clone();
    let object = verify_and_write(&[entry.program, target.program], &maps, DEFAULT_LICENSE)
        .map_err(|source| DemoError::Elf { source })?;
    let specs = vec![
        ProgramSpec::attached(TAIL_ENTRY_PROGRAM, AttachPoint::PodVethIngress),
        ProgramSpec::tail_call_target(TAIL_TARGET_PROGRAM, TAIL_MAP, 0),
    ];
    let holes = vec![HoleSpec { name: "gen_tag".into(), source: HoleSource::Constant { value: u64::from(tag) } }];
    Ok(Artifact::new(node, object, specs, holes, maps.iter().map(MapImage::of).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_bpf::elf::{fill_holes, read_object};
    use egret_bpf::interp::{MapStore, RunInput, run};
    use std::collections::BTreeMap;

    fn frame(dst: [u8; 4], seq: u32) -> Vec<u8> {
        let mut f = vec![0u8; MIN_FRAME];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 51, 100, 10]);
        f[30..34].copy_from_slice(&dst);
        f[PAYLOAD..PAYLOAD + 4].copy_from_slice(&seq.to_le_bytes());
        f
    }

    #[test]
    fn deterministic_and_checked() {
        let s = DemoSpec::new("n", 7).verdict(Ipv4Addr::new(203, 0, 113, 1), Verdict::Pass);
        let a = demo_artifact(&s).expect("builds");
        let b = demo_artifact(&s).expect("builds");
        assert_eq!(a, b);
        a.check().expect("valid artifact");
        let other = demo_artifact(&DemoSpec { tag: 8, ..s }).expect("builds");
        assert_ne!(a.digest(), other.digest());
    }

    #[test]
    fn the_interpreter_sees_verdicts_and_stamps() {
        let s = DemoSpec::new("n", 0xa)
            .verdict(Ipv4Addr::new(203, 0, 113, 1), Verdict::Pass)
            .verdict(Ipv4Addr::new(203, 0, 113, 2), Verdict::Drop);
        let a = demo_artifact(&s).expect("builds");
        let values = BTreeMap::from([("gen_tag".to_owned(), 0xa), ("marker_ifindex".to_owned(), 0x101)]);
        let parsed = read_object(&fill_holes(&a.object, &values).expect("fills")).expect("parses");
        let prog = parsed.program(CLASSIFY_PROGRAM).expect("classifier");
        let mut maps = MapStore::new(&parsed.maps);
        for (k, v) in a.manifest.maps[0].decoded().expect("hex") {
            maps.update("verdicts", &k, &v, 0).expect("update");
        }
        let cases = [([203, 0, 113, 1], 0, 0xa), ([203, 0, 113, 2], 2, 0xa), ([203, 0, 113, 9], 2, 0)];
        for (dst, r0, map_tag) in cases {
            let out = run(prog, &mut maps, &RunInput::for_frame(&frame(dst, 5))).expect("runs");
            assert_eq!(out.r0, r0, "{dst:?}");
            assert_eq!(out.packet[STAMP_CODE_TAG], 0xa);
            assert_eq!(out.packet[STAMP_MAP_TAG], map_tag);
            assert_eq!(out.packet[STAMP_IFINDEX], 0x01);
            assert_eq!(&out.packet[PAYLOAD..PAYLOAD + 4], &5u32.to_le_bytes());
        }
        // a short frame passes unstamped
        let out = run(prog, &mut maps, &RunInput::for_frame(&frame([203, 0, 113, 2], 5)[..40])).expect("runs");
        assert_eq!(out.r0, 0);
    }

    #[test]
    fn tail_call_sample_reaches_its_target_in_the_interpreter() {
        let a = tail_call_artifact("n", 0x5c).expect("builds");
        a.check().expect("valid artifact");
        let values = BTreeMap::from([("gen_tag".to_owned(), 0x5c)]);
        let parsed = read_object(&fill_holes(&a.object, &values).expect("fills")).expect("parses");
        let entry = parsed.program(TAIL_ENTRY_PROGRAM).expect("entry");
        let target = parsed.program(TAIL_TARGET_PROGRAM).expect("target");
        let mut maps = MapStore::new(&parsed.maps);
        // an empty slot falls through: drop
        let out = run(entry, &mut maps, &RunInput::for_frame(&frame([203, 0, 113, 1], 1))).expect("runs");
        assert_eq!(out.r0, 2);
        maps.update(TAIL_MAP, &0u32.to_le_bytes(), &7u32.to_le_bytes(), 0).expect("slot");
        let out = run(entry, &mut maps, &RunInput::for_frame(&frame([203, 0, 113, 1], 1))).expect("runs");
        assert_eq!(out.effects.tail_call.and_then(|t| t.target), Some(7));
        let out = run(target, &mut maps, &RunInput::for_frame(&frame([203, 0, 113, 1], 1))).expect("runs");
        assert_eq!((out.r0, out.packet[STAMP_CODE_TAG]), (0, 0x5c));
    }

    #[test]
    fn filler_entries_grow_the_image() {
        let mut s = DemoSpec::new("n", 1);
        s.filler_entries = 200;
        let a = demo_artifact(&s).expect("builds");
        assert_eq!(a.manifest.maps[0].entries.len(), 200);
        s.filler_entries = 300;
        assert!(matches!(demo_artifact(&s), Err(DemoError::TooManyEntries { .. })));
    }
}

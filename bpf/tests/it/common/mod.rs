//! Shared test material: every instruction form, sample programs and packets.

use egret_bpf::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width, pseudo,
};
use egret_bpf::{MapDef, MapKind, Program, ProgramBuilder};

/// Every instruction form with representative operands (jump offsets 0..2).
pub fn every_instruction() -> Vec<Instruction> {
    let mut v = Vec::new();
    let widths = [Width::W64, Width::W32];
    for width in widths {
        for op in AluOp::ALL {
            v.push(Instruction::Alu { width, op, dst: Reg::R1, src: Operand::Reg(Reg::R2) });
            let imm = match op {
                AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => 3,
                _ => -7,
            };
            v.push(Instruction::Alu { width, op, dst: Reg::R3, src: Operand::Imm(imm) });
        }
        for ext in [SignExt::S8, SignExt::S16, SignExt::S32] {
            if width == Width::W32 && ext == SignExt::S32 {
                continue;
            }
            v.push(Instruction::MovSx { width, ext, dst: Reg::R4, src: Reg::R5 });
        }
        v.push(Instruction::Neg { width, dst: Reg::R6 });
        for cond in JmpCond::ALL {
            v.push(Instruction::Jmp { width, cond, dst: Reg::R1, src: Operand::Reg(Reg::R2), off: 1 });
            v.push(Instruction::Jmp { width, cond, dst: Reg::R3, src: Operand::Imm(-1), off: 0 });
        }
    }
    for op in [EndOp::ToLe, EndOp::ToBe, EndOp::Swap] {
        for bits in [EndBits::B16, EndBits::B32, EndBits::B64] {
            v.push(Instruction::End { op, bits, dst: Reg::R7 });
        }
    }
    v.push(Instruction::Ja { off: 1 });
    v.push(Instruction::JaLong { imm: 0 });
    v.push(Instruction::Call(CallTarget::Helper(1)));
    v.push(Instruction::Call(CallTarget::Local(2)));
    v.push(Instruction::Call(CallTarget::Kfunc(77)));
    v.push(Instruction::Exit);
    v.push(Instruction::ld_imm64(Reg::R1, 0x1234_5678_9abc_def0));
    v.push(Instruction::ld_imm64(Reg::R2, -1));
    for p in 1..=pseudo::MAX {
        v.push(Instruction::LdImm64 { dst: Reg::R3, pseudo: p, imm: 5 });
    }
    for size in [Size::B, Size::H, Size::W] {
        v.push(Instruction::LdAbs { size, imm: 12 });
        v.push(Instruction::LdInd { size, src: Reg::R8, imm: 0 });
        v.push(Instruction::LoadSx { size, dst: Reg::R1, src: Reg::R2, off: -6 });
    }
    for size in Size::ALL {
        v.push(Instruction::load(size, Reg::R2, Reg::R1, 76));
        v.push(Instruction::load(size, Reg::R3, Reg::R10, -8));
        v.push(Instruction::store_imm(size, Reg::R10, -16, 7));
        v.push(Instruction::store_reg(size, Reg::R10, Reg::R1, -24));
    }
    for size in [Size::W, Size::DW] {
        for op in AtomicOp::ALL {
            let src = if op == AtomicOp::CmpXchg { Reg::R2 } else { Reg::R3 };
            v.push(Instruction::Atomic { size, op, dst: Reg::R1, src, off: -8 });
        }
    }
    v
}

/// A program with every instruction form (jumps land inside it), a map
/// reference, holes, and labels — not meant to run or verify.
pub fn opcode_program(name: &str) -> Program {
    let mut b = ProgramBuilder::new(name);
    let mid = b.new_label("LBB0_mid");
    for (n, i) in every_instruction().into_iter().enumerate() {
        if n == 40 {
            b.bind(mid);
        }
        b.emit(i);
    }
    b.ld_map(Reg::R1, "src_class");
    b.jmp32_imm(JmpCond::Eq, Reg::R1, 1, mid);
    b.hole(Instruction::jmp32_imm(JmpCond::Eq, Reg::R1, 0, 1), "vni");
    b.mov32_hole(Reg::R2, "tunnel_ifindex");
    b.ld_imm64_hole(Reg::R3, "node_ip");
    b.hole(Instruction::store_imm(Size::W, Reg::R10, -4, 0), "slot");
    let end = b.new_label("LBB0_end");
    b.ja(end);
    b.emit(Instruction::mov64_imm(Reg::R0, 1));
    b.bind(end);
    b.emit(Instruction::mov64_imm(Reg::R0, 0));
    b.emit(Instruction::exit());
    b.finish().expect("opcode program builds")
}

pub fn sample_maps() -> Vec<MapDef> {
    vec![
        MapDef::new("src_class", MapKind::Hash, 4, 4, 1024).expect("valid"),
        MapDef::new("dst_lpm", MapKind::LpmTrie, 12, 4, 16384).expect("valid"),
        MapDef::new("counters", MapKind::PercpuArray, 4, 8, 4).expect("valid"),
    ]
}

/// Drops IPv4 packets to 203.0.113.20, passes everything else. Bounds-checked.
pub const IPV4_FILTER: &str = "
    // r6 = ctx, r2 = data, r3 = data_end
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 34                      // Ethernet (14) + IPv4 (20)
    if r4 > r3 goto pass
    r5 = *(u16 *)(r2 + 12)        // ethertype, read little endian: IPv4 is 0x0008
    if r5 != 0x8 goto pass
    r5 = *(u32 *)(r2 + 30)        // destination address, network order
    if w5 == 0x147100cb goto drop // 203.0.113.20
pass:
    r0 = 0
    exit
drop:
    r0 = 2
    exit
";

/// Source class by hash map, then an LPM lookup keyed by (class, destination);
/// counts hits (counters[0]) and misses (counters[1]) in a per-CPU array and
/// returns the action found (or 0).
pub const CLASSIFY: &str = "
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
.map dst_lpm, lpm_trie, key_size=12, value_size=4, max_entries=16384
.map counters, percpu_array, key_size=4, value_size=8, max_entries=4
.equ ETH_IP_LEN, 34
    r6 = r1
    r7 = 0                        // action
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += ETH_IP_LEN
    if r4 > r3 goto out
    r5 = *(u16 *)(r2 + 12)
    if r5 != 0x8 goto out
    r8 = *(u32 *)(r2 + 30)        // daddr
    r5 = *(u32 *)(r2 + 26)        // saddr
    *(u32 *)(r10 - 4) = r5
    r2 = r10
    r2 += -4
    r1 = map[src_class] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = *(u32 *)(r0 + 0)         // class
    *(u32 *)(r10 - 16) = 64       // prefixlen: class (32) + address (32)
    *(u32 *)(r10 - 12) = r1
    *(u32 *)(r10 - 8) = r8
    r2 = r10
    r2 += -16
    r1 = map[dst_lpm] ll
    call map_lookup_elem
    r9 = 1                        // counter index: miss
    if r0 == 0 goto count
    r7 = *(u32 *)(r0 + 0)
    r9 = 0                        // hit
count:
    *(u32 *)(r10 - 20) = r9
    r2 = r10
    r2 += -20
    r1 = map[counters] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
out:
    r0 = r7
    exit
";

/// Sets a VXLAN tunnel key (VNI 7, TTL 64, remote from a hole) and redirects
/// to the tunnel device (ifindex from a hole). Returns TC_ACT_REDIRECT.
pub const TUNNEL: &str = "
    r6 = r1
    r1 = 0
    *(u64 *)(r10 - 48) = r1       // struct bpf_tunnel_key (44 bytes) at fp-48
    *(u64 *)(r10 - 40) = r1
    *(u64 *)(r10 - 32) = r1
    *(u64 *)(r10 - 24) = r1
    *(u64 *)(r10 - 16) = r1
    *(u32 *)(r10 - 8) = r1
    *(u32 *)(r10 - 48) = 7        // tunnel_id
    w1 = %remote_ipv4             // host byte order
    *(u32 *)(r10 - 44) = r1
    *(u8 *)(r10 - 27) = 64        // tunnel_ttl (offset 21)
    r1 = r6
    r2 = r10
    r2 += -48
    r3 = 44
    r4 = 0
    call skb_set_tunnel_key
    w1 = %tunnel_ifindex
    r2 = 0
    call redirect
    exit
";

/// Decrements the IPv4 TTL with `l3_csum_replace` and `skb_store_bytes`.
pub const TTL_DEC: &str = "
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 34
    if r4 > r3 goto pass
    r5 = *(u16 *)(r2 + 12)
    if r5 != 0x8 goto pass
    r7 = *(u16 *)(r2 + 22)        // TTL and protocol, memory order
    r8 = r7
    r8 += -1                      // TTL is the low byte in a little-endian read
    *(u16 *)(r10 - 2) = r8
    r1 = r6
    r2 = 24                       // IPv4 header checksum
    r3 = r7
    r4 = r8
    r5 = 2
    call l3_csum_replace
    r1 = r6
    r2 = 22
    r3 = r10
    r3 += -2
    r4 = 2
    r5 = 0
    call skb_store_bytes
pass:
    r0 = 0
    exit
";

/// Reads a variable-length IPv4 header (IHL) and the UDP destination port.
/// Returns 1 for UDP port 5000, 0 otherwise.
pub const UDP_PORT: &str = "
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 80)
    r4 = r2
    r4 += 34
    if r4 > r3 goto no
    r5 = *(u8 *)(r2 + 23)         // protocol
    if r5 != 17 goto no
    r5 = *(u8 *)(r2 + 14)         // version/IHL
    r5 &= 15
    r5 <<= 2                      // header length, 0..60
    r4 = r2
    r4 += r5                      // variable offset: new packet pointer id
    r5 = r4
    r5 += 18                      // 14 + UDP header 4 bytes needed
    if r5 > r3 goto no
    r0 = *(u16 *)(r4 + 16)        // UDP dport at 14 + ihl + 2
    if r0 != 0x8813 goto no       // 5000 in network order, read LE
    r0 = 1
    exit
no:
    r0 = 0
    exit
";

pub fn assemble(name: &str, src: &str) -> egret_bpf::asm::Assembly {
    egret_bpf::asm::assemble(name, src).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An Ethernet + IPv4 + UDP frame with valid IPv4 checksum.
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let payload = b"egret test payload";
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, ttl, 17, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = egret_bpf::interp::inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An Ethernet ARP frame (not IPv4), padded to 60 bytes.
pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.resize(60, 0);
    f
}

pub fn lpm_key(plen: u32, class: u32, addr: [u8; 4]) -> Vec<u8> {
    let mut k = plen.to_le_bytes().to_vec();
    k.extend_from_slice(&class.to_le_bytes());
    k.extend_from_slice(&addr);
    k
}

//! The machine: registers, stack, context and packet of one run, the
//! instruction loop, and the helpers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{csum_add, csum_fold, csum_partial_words, csum_replace4, csum16_add};
use super::io::{
    CsumReplace, Effects, Fault, MapDelete, MapUpdate, Redirect, RedirectKind, RingbufOutput, RunInput, RunOutcome,
    SkbContext, StoredBytes, TailCall, TunnelKey, TunnelKeySet,
};
use super::maps::MapStore;
use super::{
    BPF_F_DONT_FRAGMENT, BPF_F_INGRESS, BPF_F_NO_TUNNEL_KEY, BPF_F_SEQ_NUMBER, BPF_F_TUNINFO_FLAGS, BPF_F_TUNINFO_IPV6,
    BPF_F_ZERO_CSUM_TX, CTX_BASE, EFAULT, EINVAL, ENOTSUPP, EPROTO, MAP_PTR_BASE, PKT_BASE, STACK_BASE, STACK_SIZE,
    TC_ACT_REDIRECT, TC_ACT_SHOT,
};
use crate::helpers::{self, id};
use crate::insn::{
    AtomicOp, CallTarget, Instruction, Operand, Reg, Size, Width, decode, eval_alu, eval_end, eval_movsx, eval_neg,
    imm_value,
};
use crate::layout::{self, tunnel_key};
use crate::maps::MapKind;
use crate::program::Program;
use crate::skb::{self, FieldKind, SKB_SIZE};

struct Machine<'a> {
    pc: usize,
    /// Slots in the program.
    len: usize,
    regs: [u64; 11],
    ctx: [u8; SKB_SIZE],
    packet: Vec<u8>,
    stack: [u8; STACK_SIZE],
    stack_init: [bool; STACK_SIZE],
    maps: &'a mut MapStore,
    map_ids: &'a BTreeMap<usize, usize>,
    input: &'a RunInput,
    effects: Effects,
    rng: u64,
}

enum Region {
    Ctx(usize),
    Pkt(usize),
    Stack(usize),
    Map(usize, usize, usize),
}

/// Runs `program` on `input` with `maps`.
///
/// # Errors
/// A [`Fault`] naming the instruction.
pub fn run(program: &Program, maps: &mut MapStore, input: &RunInput) -> Result<RunOutcome, Fault> {
    prepare(program, maps)?.run(maps, input)
}

/// A program decoded once for many runs ([`prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    decoded: Vec<Option<(Instruction, usize)>>,
    map_ids: BTreeMap<usize, usize>,
    /// Map names in store order, to check a store matches.
    maps: Vec<String>,
}

/// Decodes `program` and resolves its map references against `maps`, for
/// repeated [`Prepared::run`]s on stores with the same map definitions.
///
/// # Errors
/// An unfilled hole, an unknown map or an undecodable slot.
pub fn prepare(program: &Program, maps: &MapStore) -> Result<Prepared, Fault> {
    if let Some(h) = program.holes.first() {
        return Err(Fault::UnfilledHole { insn: h.insn, hole: h.name.clone() });
    }
    let mut map_ids = BTreeMap::new();
    for r in &program.map_relocs {
        let idx = maps.index(&r.map).map_err(|_| Fault::UnknownMap { insn: r.insn, map: r.map.clone() })?;
        map_ids.insert(r.insn, idx);
    }
    let mut decoded = Vec::with_capacity(program.insns.len());
    let mut pc = 0;
    while pc < program.insns.len() {
        match decode(&program.insns, pc) {
            Ok((i, n)) => {
                decoded.push(Some((i, n)));
                if n == 2 {
                    decoded.push(None);
                }
                pc += n;
            }
            Err(source) => return Err(Fault::Decode { insn: pc, source }),
        }
    }
    Ok(Prepared { decoded, map_ids, maps: maps.maps.iter().map(|m| m.def.name.clone()).collect() })
}

impl Prepared {
    /// Runs the prepared program, as [`run`] does.
    ///
    /// # Errors
    /// A [`Fault`] naming the instruction; [`Fault::UnknownMap`] if `maps`
    /// does not have the maps the program was prepared with.
    pub fn run(&self, maps: &mut MapStore, input: &RunInput) -> Result<RunOutcome, Fault> {
        let same =
            maps.maps.len() == self.maps.len() && maps.maps.iter().zip(&self.maps).all(|(m, n)| m.def.name == *n);
        if !same {
            let (insn, map) = self
                .map_ids
                .iter()
                .next()
                .map_or((0, String::new()), |(i, m)| (*i, self.maps.get(*m).cloned().unwrap_or_default()));
            return Err(Fault::UnknownMap { insn, map });
        }
        let decoded = &self.decoded;
        let map_ids = &self.map_ids;
        let len = input.packet.len() as u32;
        let mut m = Machine {
            pc: 0,
            len: decoded.len(),
            regs: [0; 11],
            ctx: input.skb.to_bytes(len),
            packet: input.packet.clone(),
            stack: [0; STACK_SIZE],
            stack_init: [false; STACK_SIZE],
            maps,
            map_ids,
            input,
            effects: Effects::default(),
            rng: input.prandom_seed | 1,
        };
        m.regs[1] = CTX_BASE;
        m.regs[10] = STACK_BASE + STACK_SIZE as u64;
        let mut count = 0u64;
        loop {
            let pc = m.pc;
            if count >= input.budget {
                return Err(Fault::Budget { insn: pc, budget: input.budget });
            }
            count += 1;
            let Some(Some((insn, n))) = decoded.get(pc).copied() else {
                return Err(Fault::OutOfProgram { insn: pc });
            };
            match m.step(&insn, n)? {
                Flow::Continue => {}
                Flow::Exit(r0) => {
                    let skb = SkbContext::from_bytes(&m.ctx);
                    return Ok(RunOutcome { r0, effects: m.effects, insns: count, packet: m.packet, skb });
                }
            }
        }
    }
}

enum Flow {
    Continue,
    Exit(u64),
}

impl Machine<'_> {
    /// The target of a jump at `self.pc` by `off` slots, if inside the program.
    fn jump(&self, off: i64) -> Result<usize, Fault> {
        let target = self.pc as i64 + 1 + off;
        usize::try_from(target).ok().filter(|t| *t < self.len).ok_or(Fault::JumpOutOfProgram {
            insn: self.pc,
            target,
            len: self.len,
        })
    }

    fn region(&self, addr: u64, len: usize, kind: &'static str) -> Result<Region, Fault> {
        let oob = || Fault::OutOfBounds { insn: self.pc, kind, addr, size: len };
        let in_range = |base: u64, size: usize| {
            addr.checked_sub(base)
                .filter(|o| o.checked_add(len as u64).is_some_and(|e| e <= size as u64))
                .map(|o| o as usize)
        };
        if let Some(o) = in_range(CTX_BASE, SKB_SIZE) {
            return Ok(Region::Ctx(o));
        }
        if let Some(o) = in_range(PKT_BASE, self.packet.len()) {
            return Ok(Region::Pkt(o));
        }
        if let Some(o) = in_range(STACK_BASE, STACK_SIZE) {
            return Ok(Region::Stack(o));
        }
        if let Some((m, s, o)) = self.maps.resolve(addr, len) {
            return Ok(Region::Map(m, s, o));
        }
        Err(oob())
    }

    fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, Fault> {
        if len == 0 {
            return Ok(Vec::new());
        }
        match self.region(addr, len, "read")? {
            Region::Ctx(o) => Ok(self.ctx[o..o + len].to_vec()),
            Region::Pkt(o) => Ok(self.packet[o..o + len].to_vec()),
            Region::Stack(o) => {
                if let Some(i) = (o..o + len).find(|i| !self.stack_init[*i]) {
                    return Err(Fault::UninitStack { insn: self.pc, off: i as i64 - STACK_SIZE as i64 });
                }
                Ok(self.stack[o..o + len].to_vec())
            }
            Region::Map(m, s, o) => {
                Ok(self.maps.maps[m].slots[s].as_ref().map_or_else(Vec::new, |slot| slot.data[o..o + len].to_vec()))
            }
        }
    }

    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Fault> {
        let len = bytes.len();
        if len == 0 {
            return Ok(());
        }
        match self.region(addr, len, "write")? {
            Region::Ctx(o) => self.ctx[o..o + len].copy_from_slice(bytes),
            Region::Pkt(o) => self.packet[o..o + len].copy_from_slice(bytes),
            Region::Stack(o) => {
                self.stack[o..o + len].copy_from_slice(bytes);
                for b in &mut self.stack_init[o..o + len] {
                    *b = true;
                }
            }
            Region::Map(m, s, o) => {
                if let Some(slot) = self.maps.maps[m].slots[s].as_mut() {
                    slot.data[o..o + len].copy_from_slice(bytes);
                }
            }
        }
        Ok(())
    }

    fn load(&self, addr: u64, size: Size) -> Result<u64, Fault> {
        let n = size.bytes();
        if let Some(off) = addr.checked_sub(CTX_BASE).filter(|o| *o < SKB_SIZE as u64) {
            let field = skb::check_access(off as i32, n as i32, false).map_err(|_| Fault::CtxAccess {
                insn: self.pc,
                kind: "read",
                off,
                size: n,
            })?;
            match field.kind {
                FieldKind::PktData => return Ok(PKT_BASE),
                FieldKind::PktEnd => return Ok(PKT_BASE + self.packet.len() as u64),
                FieldKind::Scalar => {}
            }
        }
        let b = self.read_bytes(addr, n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&b);
        Ok(u64::from_le_bytes(v))
    }

    fn store(&mut self, addr: u64, size: Size, value: u64) -> Result<(), Fault> {
        let n = size.bytes();
        if let Some(off) = addr.checked_sub(CTX_BASE).filter(|o| *o < SKB_SIZE as u64) {
            skb::check_access(off as i32, n as i32, true).map_err(|_| Fault::CtxAccess {
                insn: self.pc,
                kind: "write",
                off,
                size: n,
            })?;
        }
        self.write_bytes(addr, &value.to_le_bytes()[..n])
    }

    fn operand(&self, width: Width, src: Operand) -> u64 {
        match src {
            Operand::Reg(r) => self.regs[r.index()],
            Operand::Imm(i) => imm_value(width, i),
        }
    }

    fn step(&mut self, insn: &Instruction, n: usize) -> Result<Flow, Fault> {
        let pc = self.pc;
        let mut next = pc + n;
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let s = self.operand(width, src);
                self.regs[dst.index()] = eval_alu(width, op, self.regs[dst.index()], s);
            }
            Instruction::MovSx { width, ext, dst, src } => {
                self.regs[dst.index()] = eval_movsx(width, ext, self.regs[src.index()])
            }
            Instruction::Neg { width, dst } => {
                self.regs[dst.index()] = eval_neg(width, self.regs[dst.index()]);
            }
            Instruction::End { op, bits, dst } => {
                self.regs[dst.index()] = eval_end(op, bits, self.regs[dst.index()]);
            }
            Instruction::Ja { off } => next = self.jump(i64::from(off))?,
            Instruction::JaLong { imm } => next = self.jump(i64::from(imm))?,
            Instruction::Jmp { width, cond, dst, src, off } => {
                if cond.eval(width, self.regs[dst.index()], self.operand(width, src)) {
                    next = self.jump(i64::from(off))?;
                }
            }
            Instruction::Call(CallTarget::Helper(id::TAIL_CALL)) => {
                self.effects.helper_calls.push((pc, id::TAIL_CALL));
                if self.tail_call()? {
                    return Ok(Flow::Exit(0));
                }
                for r in 0..=5 {
                    self.regs[r] = 0;
                }
            }
            Instruction::Call(CallTarget::Helper(hid)) => {
                self.effects.helper_calls.push((pc, hid));
                let r0 = self.call(hid)?;
                self.regs[0] = r0;
                for r in 1..=5 {
                    self.regs[r] = 0;
                }
            }
            Instruction::Call(CallTarget::Local(_)) => {
                return Err(Fault::Unsupported { insn: pc, what: "BPF-to-BPF calls" });
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                return Err(Fault::Unsupported { insn: pc, what: "kfunc calls" });
            }
            Instruction::Exit => return Ok(Flow::Exit(self.regs[0])),
            Instruction::LdImm64 { dst, imm, .. } => {
                self.regs[dst.index()] = match self.map_ids.get(&pc) {
                    Some(m) => MAP_PTR_BASE + *m as u64,
                    None => imm as u64,
                };
            }
            Instruction::LdAbs { size, imm } => return Ok(self.ld_legacy(size, i64::from(imm), next)),
            Instruction::LdInd { size, src, imm } => {
                let off = (self.regs[src.index()] as u32 as i32 as i64).wrapping_add(i64::from(imm));
                return Ok(self.ld_legacy(size, off, next));
            }
            Instruction::Load { size, dst, src, off } => {
                let addr = self.regs[src.index()].wrapping_add(i64::from(off) as u64);
                self.regs[dst.index()] = self.load(addr, size)?;
            }
            Instruction::LoadSx { size, dst, src, off } => {
                let addr = self.regs[src.index()].wrapping_add(i64::from(off) as u64);
                let v = self.load(addr, size)?;
                self.regs[dst.index()] = match size {
                    Size::B => i64::from(v as u8 as i8) as u64,
                    Size::H => i64::from(v as u16 as i16) as u64,
                    Size::W => i64::from(v as u32 as i32) as u64,
                    Size::DW => v,
                };
            }
            Instruction::Store { size, dst, off, imm } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                self.store(addr, size, i64::from(imm) as u64)?;
            }
            Instruction::StoreReg { size, dst, src, off } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                self.store(addr, size, self.regs[src.index()])?;
            }
            Instruction::Atomic { size, op, dst, src, off } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                let old = self.load(addr, size)?;
                let s = self.regs[src.index()];
                let width = if size == Size::DW { Width::W64 } else { Width::W32 };
                let mask = if size == Size::DW { u64::MAX } else { u64::from(u32::MAX) };
                let new = match op {
                    AtomicOp::Add | AtomicOp::FetchAdd => old.wrapping_add(s) & mask,
                    AtomicOp::Or | AtomicOp::FetchOr => (old | s) & mask,
                    AtomicOp::And | AtomicOp::FetchAnd => old & s & mask,
                    AtomicOp::Xor | AtomicOp::FetchXor => (old ^ s) & mask,
                    AtomicOp::Xchg => s & mask,
                    AtomicOp::CmpXchg => {
                        if crate::insn::JmpCond::Eq.eval(width, old, self.regs[0]) {
                            s & mask
                        } else {
                            old
                        }
                    }
                };
                self.store(addr, size, new)?;
                if op == AtomicOp::CmpXchg {
                    self.regs[0] = old;
                } else if op.fetches() {
                    self.regs[src.index()] = old;
                }
            }
        }
        self.pc = next;
        Ok(Flow::Continue)
    }

    fn ld_legacy(&mut self, size: Size, off: i64, next: usize) -> Flow {
        let n = size.bytes();
        for r in 1..=5 {
            self.regs[r] = 0;
        }
        let ok = usize::try_from(off).ok().filter(|o| o + n <= self.packet.len());
        let Some(o) = ok else {
            return Flow::Exit(0);
        };
        let b = &self.packet[o..o + n];
        self.regs[0] = match size {
            Size::B => u64::from(b[0]),
            Size::H => u64::from(u16::from_be_bytes([b[0], b[1]])),
            _ => u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        };
        self.pc = next;
        Flow::Continue
    }

    /// `bpf_tail_call(ctx, prog_array, index)`: records the attempt; true
    /// when the slot holds a program (the run ends there).
    fn tail_call(&mut self) -> Result<bool, Fault> {
        let m = self.map_arg(Reg::R2, "tail_call")?;
        let def = &self.maps.maps[m].def;
        if def.kind != MapKind::ProgArray {
            return Err(Fault::HelperArg {
                insn: self.pc,
                helper: "tail_call",
                reason: format!("map `{}` is not a prog_array", def.name),
            });
        }
        let map = def.name.clone();
        let index = self.regs[3] as u32;
        let target = self.maps.find(m, &index.to_le_bytes()).and_then(|s| {
            self.maps.maps[m].slots[s]
                .as_ref()
                .map(|x| u32::from_le_bytes([x.data[0], x.data[1], x.data[2], x.data[3]]))
        });
        let taken = target.is_some();
        self.effects.tail_call = Some(TailCall { map, index, target });
        Ok(taken)
    }

    fn map_arg(&self, reg: Reg, helper: &'static str) -> Result<usize, Fault> {
        let v = self.regs[reg.index()];
        v.checked_sub(MAP_PTR_BASE)
            .map(|i| i as usize)
            .filter(|i| *i < self.maps.maps.len())
            .ok_or_else(|| Fault::HelperArg { insn: self.pc, helper, reason: format!("{reg} is not a map pointer") })
    }

    fn call(&mut self, hid: i32) -> Result<u64, Fault> {
        let Some(spec) = helpers::by_id(hid) else {
            return Err(Fault::BadHelper { insn: self.pc, id: hid });
        };
        let r = |i: usize| self.regs[i];
        let neg = |e: i64| (-e) as u64;
        Ok(match hid {
            id::MAP_LOOKUP_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                if self.maps.maps[m].def.kind == MapKind::RingBuf {
                    return Err(Fault::HelperArg {
                        insn: self.pc,
                        helper: spec.name,
                        reason: "ring buffers have no elements".into(),
                    });
                }
                if self.maps.maps[m].def.kind == MapKind::ProgArray {
                    return Err(Fault::HelperArg {
                        insn: self.pc,
                        helper: spec.name,
                        reason: "prog arrays cannot be looked up from a program".into(),
                    });
                }
                let key = self.read_bytes(r(2), self.maps.maps[m].def.key_size as usize)?;
                match self.maps.find(m, &key) {
                    Some(slot) => {
                        let inst = &mut self.maps.maps[m];
                        inst.clock += 1;
                        let clock = inst.clock;
                        if let Some(s) = inst.slots[slot].as_mut() {
                            s.last_use = clock;
                        }
                        self.maps.value_addr(m, slot, self.input.cpu as usize)
                    }
                    None => 0,
                }
            }
            id::MAP_UPDATE_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                let def = self.maps.maps[m].def.clone();
                let key = self.read_bytes(r(2), def.key_size as usize)?;
                let value = self.read_bytes(r(3), def.value_size as usize)?;
                let flags = r(4);
                let copies = self.maps.copies(m);
                let result = if copies > 1 {
                    // per-CPU update from a program writes this CPU's copy only
                    let existing = self
                        .maps
                        .find(m, &key)
                        .and_then(|s| self.maps.maps[m].slots[s].as_ref().map(|x| x.data.clone()));
                    let mut data = existing.unwrap_or_else(|| vec![0; value.len() * copies]);
                    let cpu = (self.input.cpu as usize).min(copies - 1);
                    data[cpu * value.len()..(cpu + 1) * value.len()].copy_from_slice(&value);
                    self.maps.update_raw(m, &key, &data, flags, Some(cpu))
                } else {
                    self.maps.update_raw(m, &key, &value, flags, None)
                };
                self.effects.map_updates.push(MapUpdate { map: def.name.clone(), key, value, flags, result });
                result as u64
            }
            id::MAP_DELETE_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                let def = self.maps.maps[m].def.clone();
                let key = self.read_bytes(r(2), def.key_size as usize)?;
                let result = self.maps.delete_raw(m, &key);
                self.effects.map_deletes.push(MapDelete { map: def.name, key, result });
                result as u64
            }
            id::RINGBUF_OUTPUT => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                let def = self.maps.maps[m].def.clone();
                if def.kind != MapKind::RingBuf {
                    return Err(Fault::HelperArg {
                        insn: self.pc,
                        helper: spec.name,
                        reason: format!("map `{}` is not a ringbuf", def.name),
                    });
                }
                let data = self.read_bytes(r(2), r(3) as usize)?;
                let flags = r(4);
                let result = self.maps.ringbuf_push(m, &data, flags);
                self.effects.ringbuf_outputs.push(RingbufOutput { map: def.name, data, flags, result });
                result as u64
            }
            id::KTIME_GET_NS => self.input.ktime_ns,
            id::GET_PRANDOM_U32 => {
                // xorshift64*
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                u64::from((self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32)
            }
            id::GET_SMP_PROCESSOR_ID => u64::from(self.input.cpu),
            id::SKB_STORE_BYTES => {
                let (offset, from, len, flags) = (r(2), r(3), r(4) as usize, r(5));
                if flags & !3 != 0 {
                    neg(EINVAL)
                } else if offset > i32::MAX as u64 || offset as usize + len > self.packet.len() {
                    neg(EFAULT)
                } else {
                    let bytes = self.read_bytes(from, len)?;
                    let o = offset as usize;
                    self.packet[o..o + len].copy_from_slice(&bytes);
                    self.effects.stores.push(StoredBytes { offset: offset as u32, bytes, flags });
                    0
                }
            }
            id::SKB_LOAD_BYTES => {
                let (offset, to, len) = (r(2), r(3), r(4) as usize);
                if offset > i32::MAX as u64 || offset as usize + len > self.packet.len() {
                    self.write_bytes(to, &vec![0; len])?;
                    neg(EFAULT)
                } else {
                    let o = offset as usize;
                    let bytes = self.packet[o..o + len].to_vec();
                    self.write_bytes(to, &bytes)?;
                    0
                }
            }
            id::L3_CSUM_REPLACE | id::L4_CSUM_REPLACE => {
                let l4 = hid == id::L4_CSUM_REPLACE;
                let (offset, from, to, flags) = (r(2), r(3), r(4), r(5));
                self.csum_replace(l4, offset, from, to, flags)
            }
            id::SKB_GET_TUNNEL_KEY => {
                let (to, size, flags) = (r(2), r(3), r(4));
                let res = self.get_tunnel_key(size, flags);
                match res {
                    Ok(bytes) => {
                        self.write_bytes(to, &bytes)?;
                        0
                    }
                    Err(e) => {
                        self.write_bytes(to, &vec![0; size as usize])?;
                        neg(e)
                    }
                }
            }
            id::SKB_SET_TUNNEL_KEY => {
                let (from, size, flags) = (r(2), r(3), r(4));
                let raw = self.read_bytes(from, size as usize)?;
                match parse_tunnel_key(&raw, flags) {
                    Ok(key) => {
                        self.effects.tunnel_key = Some(TunnelKeySet { key, flags, size: size as u32 });
                        0
                    }
                    Err(e) => neg(e),
                }
            }
            id::REDIRECT => {
                let (ifindex, flags) = (r(1), r(2));
                if flags & !BPF_F_INGRESS != 0 {
                    TC_ACT_SHOT
                } else {
                    self.effects.redirect =
                        Some(Redirect { ifindex: ifindex as u32, flags, kind: RedirectKind::Redirect });
                    TC_ACT_REDIRECT
                }
            }
            id::REDIRECT_NEIGH => {
                let (ifindex, params, plen, flags) = (r(1), r(2), r(3), r(4));
                if (plen != 0 && plen < 20) || flags != 0 {
                    TC_ACT_SHOT
                } else {
                    let nexthop = if plen == 0 {
                        None
                    } else {
                        let p = self.read_bytes(params, 20)?;
                        let family = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                        match family {
                            2 => Some(IpAddr::V4(Ipv4Addr::new(p[4], p[5], p[6], p[7]))),
                            10 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(&p[4..20]);
                                Some(IpAddr::V6(Ipv6Addr::from(a)))
                            }
                            _ => None,
                        }
                    };
                    self.effects.redirect =
                        Some(Redirect { ifindex: ifindex as u32, flags, kind: RedirectKind::Neigh { nexthop } });
                    TC_ACT_REDIRECT
                }
            }
            id::CSUM_DIFF => {
                let (from, from_size, to, to_size, seed) = (r(1), r(2), r(3), r(4), r(5));
                if (from_size | to_size) & 3 != 0 || from_size + to_size > 512 {
                    neg(EINVAL)
                } else {
                    let a = self.read_bytes(from, from_size as usize)?;
                    let b = self.read_bytes(to, to_size as usize)?;
                    let mut words: Vec<u32> =
                        a.chunks_exact(4).map(|c| !u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    words.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    u64::from(csum_partial_words(&words, seed as u32))
                }
            }
            id::SKB_CHANGE_TYPE => {
                let t = r(2);
                let cur = u32::from_le_bytes([self.ctx[4], self.ctx[5], self.ctx[6], self.ctx[7]]);
                if t > 3 || cur > 3 {
                    neg(EINVAL)
                } else {
                    self.ctx[4..8].copy_from_slice(&(t as u32).to_le_bytes());
                    self.effects.change_type = Some(t as u32);
                    0
                }
            }
            id::GET_HASH_RECALC => u64::from(self.input.skb.hash),
            id::CSUM_UPDATE => neg(ENOTSUPP),
            _ => return Err(Fault::BadHelper { insn: self.pc, id: hid }),
        })
    }

    fn csum_replace(&mut self, l4: bool, offset: u64, from: u64, to: u64, flags: u64) -> u64 {
        let neg = |e: i64| (-e) as u64;
        const HDR_FIELD_MASK: u64 = layout::BPF_F_HDR_FIELD_MASK as u64;
        const PSEUDO_HDR: u64 = layout::BPF_F_PSEUDO_HDR as u64;
        const MARK_MANGLED_0: u64 = layout::BPF_F_MARK_MANGLED_0 as u64;
        const MARK_ENFORCE: u64 = layout::BPF_F_MARK_ENFORCE as u64;
        const IPV6: u64 = layout::BPF_F_IPV6 as u64;
        let allowed =
            if l4 { HDR_FIELD_MASK | PSEUDO_HDR | MARK_MANGLED_0 | MARK_ENFORCE | IPV6 } else { HDR_FIELD_MASK };
        if flags & !allowed != 0 {
            return neg(EINVAL);
        }
        if offset > 0xffff || offset & 1 != 0 {
            return neg(EFAULT);
        }
        let o = offset as usize;
        if o + 2 > self.packet.len() {
            return neg(EFAULT);
        }
        let mut sum = u16::from_le_bytes([self.packet[o], self.packet[o + 1]]);
        let mmzero = l4 && flags & MARK_MANGLED_0 != 0;
        if mmzero && flags & MARK_ENFORCE == 0 && sum == 0 {
            return 0;
        }
        match flags & HDR_FIELD_MASK {
            0 => {
                if from != 0 {
                    return neg(EINVAL);
                }
                sum = csum_fold(csum_add(to as u32, !u32::from(sum)));
            }
            2 => {
                let (f, t) = (from as u16, to as u16);
                if l4 {
                    sum = csum_replace4(sum, u32::from(f), u32::from(t));
                } else {
                    sum = !csum16_add(csum16_add(!sum, !f), t);
                }
            }
            4 => sum = csum_replace4(sum, from as u32, to as u32),
            _ => return neg(EINVAL),
        }
        if mmzero && sum == 0 {
            sum = 0xffff;
        }
        self.packet[o..o + 2].copy_from_slice(&sum.to_le_bytes());
        self.effects.csum_replaces.push(CsumReplace { l4, offset: offset as u32, from, to, flags });
        0
    }

    fn get_tunnel_key(&self, size: u64, flags: u64) -> Result<Vec<u8>, i64> {
        let Some(info) = &self.input.tunnel else {
            return Err(EINVAL);
        };
        if flags & !(BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS) != 0 {
            return Err(EINVAL);
        }
        let v6 = flags & BPF_F_TUNINFO_IPV6 != 0;
        if v6 != info.remote.is_ipv6() {
            return Err(EPROTO);
        }
        if !matches!(size, 44 | 28 | 24 | 22) {
            if size == 8 && !v6 {
                // offsetof(remote_ipv6[1]): legacy IPv4-only layout
            } else {
                return Err(EINVAL);
            }
        }
        let mut b = tunnel_key::LAYOUT.zeroed();
        tunnel_key::TUNNEL_ID.put(&mut b, u64::from(info.tunnel_id));
        match info.remote {
            IpAddr::V4(a) => layout::TUNNEL_KEY_REMOTE_IPV4.put_ipv4(&mut b, a),
            IpAddr::V6(a) => b[tunnel_key::REMOTE.offset..tunnel_key::REMOTE.end()].copy_from_slice(&a.octets()),
        }
        tunnel_key::TOS.put(&mut b, u64::from(info.tos));
        tunnel_key::TTL.put(&mut b, u64::from(info.ttl));
        tunnel_key::LABEL.put(&mut b, u64::from(info.label));
        match info.local {
            Some(IpAddr::V4(a)) => layout::TUNNEL_KEY_LOCAL_IPV4.put_ipv4(&mut b, a),
            Some(IpAddr::V6(a)) => b[tunnel_key::LOCAL.offset..tunnel_key::LOCAL.end()].copy_from_slice(&a.octets()),
            None => {}
        }
        b.truncate(size as usize);
        Ok(b)
    }
}

fn parse_tunnel_key(raw: &[u8], flags: u64) -> Result<TunnelKey, i64> {
    let known = BPF_F_TUNINFO_IPV6 | BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT | BPF_F_SEQ_NUMBER | BPF_F_NO_TUNNEL_KEY;
    if flags & !known != 0 {
        return Err(EINVAL);
    }
    if !matches!(raw.len(), 44 | 28 | 24 | 22 | 8) {
        return Err(EINVAL);
    }
    let mut b = raw.to_vec();
    b.resize(tunnel_key::SIZE, 0);
    let v6 = flags & BPF_F_TUNINFO_IPV6 != 0;
    let get = |f: layout::Field| f.get_u32(&b).unwrap_or(0);
    let label = get(tunnel_key::LABEL);
    if (!v6 && label != 0) || get(tunnel_key::EXT) != 0 {
        return Err(EINVAL);
    }
    let v6_at = |f: layout::Field| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[f.offset..f.end()]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let remote =
        if v6 { v6_at(tunnel_key::REMOTE) } else { IpAddr::V4(Ipv4Addr::from(get(layout::TUNNEL_KEY_REMOTE_IPV4))) };
    let local = if raw.len() == tunnel_key::SIZE {
        Some(if v6 { v6_at(tunnel_key::LOCAL) } else { IpAddr::V4(Ipv4Addr::from(get(layout::TUNNEL_KEY_LOCAL_IPV4))) })
            .filter(|a| !a.is_unspecified())
    } else {
        None
    };
    Ok(TunnelKey {
        tunnel_id: get(tunnel_key::TUNNEL_ID),
        remote,
        tos: get(tunnel_key::TOS) as u8,
        ttl: get(tunnel_key::TTL) as u8,
        label,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_calls_fall_through_on_empty_slots_and_end_the_run_otherwise() {
        let src = ".map progs, prog_array, key_size=4, value_size=4, max_entries=2
            r6 = r1
            r2 = map[progs] ll
            r3 = 1
            call tail_call
            r0 = 5
            exit";
        let a = crate::asm::assemble("tc", src).expect("assembles");
        crate::verifier::verify(&a.program, &a.maps).expect("verifies");
        let frame = [0u8; 14];
        let mut maps = MapStore::new(&a.maps);
        let out = run(&a.program, &mut maps, &RunInput::for_frame(&frame)).expect("runs");
        assert_eq!(out.r0, 5);
        assert_eq!(out.effects.tail_call, Some(TailCall { map: "progs".into(), index: 1, target: None }));
        maps.update("progs", &1u32.to_le_bytes(), &42u32.to_le_bytes(), 0).expect("ok");
        assert!(maps.update("progs", &2u32.to_le_bytes(), &42u32.to_le_bytes(), 0).is_err());
        let out = run(&a.program, &mut maps, &RunInput::for_frame(&frame)).expect("runs");
        assert_eq!(out.r0, 0);
        assert_eq!(out.effects.tail_call.and_then(|t| t.target), Some(42));
        // R0 is not readable after a tail call that fell through
        let bad = crate::asm::assemble("tc", &src.replace("r0 = 5", "r0 += 5")).expect("assembles");
        let err = crate::verifier::verify(&bad.program, &bad.maps).expect_err("r0 uninit");
        assert!(err.to_string().contains("r0 is read before it is initialized"), "{err}");
        // prog arrays are for tail calls only, and tail calls need one
        let lookup = ".map progs, prog_array, key_size=4, value_size=4, max_entries=2
            *(u32 *)(r10 - 4) = 0
            r2 = r10
            r2 += -4
            r1 = map[progs] ll
            call map_lookup_elem
            r0 = 0
            exit";
        let l = crate::asm::assemble("tc", lookup).expect("assembles");
        let err = crate::verifier::verify(&l.program, &l.maps).expect_err("refused");
        assert!(err.to_string().contains("prog_array"), "{err}");
        let wrong = crate::asm::assemble("tc", &src.replace("prog_array", "array")).expect("assembles");
        let err = crate::verifier::verify(&wrong.program, &wrong.maps).expect_err("refused");
        assert!(err.to_string().contains("a prog_array map"), "{err}");
    }
}

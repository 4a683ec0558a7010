//! Emission of the `egret_src` classifier for both layouts.
//!
//! Register and stack conventions (every path follows them; the static
//! verifier and the equivalence checker check the result, not these notes):
//! - `r6` = ctx for the whole program.
//! - Every path ends by storing the outcome, laid out as
//!   [`action_record`], at `fp-32..-8`: the verdict = reason index | slot <<
//!   8 (slots are 24 bits) at `fp-32`, the rule index (`0xffffffff` = none)
//!   at `fp-28` and the gateway's node address (16 bytes, IPv4 mapped or
//!   IPv6, zero for none) at `fp-24`, then jumps to `finish`, which loads
//!   verdict and rule into `w7`, `w8`. (Values in stack bytes are not tracked by the static
//!   verifier, so all outcomes reach `finish` in one state and the shared
//!   tail is explored once, not once per tree leaf.)
//! - Parsing leaves IPv4 addresses in `r8` (source) and `r9` (destination),
//!   IPv6 addresses as `r2:r3` (source high:low 64-bit words) and `r4:r5`
//!   (destination), all still in network byte order, and overwrites every
//!   other packet pointer, so the VLAN and untagged paths reach the
//!   classification code in identical verifier states.
//! - The inline layout byte-swaps them (`be32`/`be64`) and compares numbers:
//!   a matched source clears its registers before jumping to its class's
//!   tree, and each tree leaf jumps to a block per (family, outcome) that
//!   sets the verdict registers and clears the tree's registers, so all
//!   paths of one outcome meet at `finish` in one verifier state (the static
//!   verifier then explores the shared tail once per outcome, not per leaf);
//!   `JMP32` for IPv4 (64-bit immediates would be sign-extended), pairs of
//!   64-bit compares for IPv6 (constants above `i32::MAX` are loaded with
//!   `ld_imm64` into `r1`).
//! - The maps layout searches the source with the same tree as the inline
//!   layout (only the source registers are byte-swapped; destinations stay
//!   in network order for the key); a matched endpoint's class block writes
//!   the class into the `egret_dst_*` key on the stack and jumps to one
//!   lookup block per family, so the lookup is explored once, not per class.
//!   The LPM value is the outcome itself (`{verdict, rule, gateway}`), copied
//!   to `fp-32..-8`.
//! - A source the tree does not know (both layouts) is looked up in
//!   `egret_admitted_v4/v6` (pod address → class, written by the agent at
//!   CNI `ADD`, [`super::admit`]): a hit restores the registers a tree match
//!   leaves (source cleared, destination as before the call: IPv6's is
//!   saved on the stack across it) and jumps to the class's block, as the
//!   tree does; a miss, or a class that has no block for the family, is
//!   `pass-not-endpoint`.
//! - Stack: `fp-4` counter key; `fp-32..-8` the outcome (above);
//!   `fp-48..-36` the `egret_dst_v4` key, `fp-64..-40` the `egret_dst_v6`
//!   key (both used before the outcome is stored); `fp-112..-68` the tunnel
//!   key; `fp-128..-114` the MSS clamp's values (before the tunnel key);
//!   `fp-144..-129` the `egret_admitted_*` key and `fp-160..-145` the saved
//!   IPv6 destination (before any other use).
//!   Every stack access is aligned to its size.
//! - The redirect path first reads the gateway's underlay family from the
//!   outcome's node address (IPv4 mapped: `::ffff:0:0/96`) into `r9`: 0 for
//!   IPv4, [`layout::UNDERLAY_V6_EXTRA`] for IPv6 (the outer header's extra
//!   bytes). Then it clamps the MSS of TCP SYNs ([`super::mss`]) to the
//!   loader's clamp minus `r9`: it parses the frame again (the
//!   classification code keeps no packet state, so that its paths join),
//!   with `r8` = the TCP header's frame offset (the rule index is no longer
//!   needed there) and `r5` = the option's; `r7`/`r9` keep the verdict and
//!   the underlay family across its calls. The tunnel key takes
//!   `remote_ipv4` (host order, no flags) or `remote_ipv6` with
//!   `BPF_F_TUNINFO_IPV6` by `r9`.
//! - Only register stores are used (LLVM 14's objdump cannot print immediate
//!   stores), so `llvm-objdump -d --mattr=+alu32` prints every instruction.

use super::mss::{HOLE_MSS_V4, HOLE_MSS_V6, OPTION_STEPS};
use super::partition::{Interval, Outcome, Rules, partition};
use super::reasons::{Reason, TC_ACT_SHOT, TC_ACT_UNSPEC};
use super::tables::{self, NO_RULE};
use super::{CodegenError, HOLE_TUNNEL_IFINDEX, Layout, PROGRAM};
use crate::ir::{Action, DropReason, MAX_FAILOVER};
use crate::plan::{ClassId, Plan};
use egret_bpf::helpers::id as helper;
use egret_bpf::insn::{AluOp, EndBits, Instruction as I, JmpCond, Operand, Reg, Size, Width};
use egret_bpf::layout::{
    self, CSUM_SIZE2, ETH_HLEN, ETH_P_8021Q_LE, ETH_P_IP_LE, ETH_P_IPV6_LE, ETH_PROTO, Field, GL_F_DOWN, IP_FRAG,
    IP_PROTO, IP6_NEXTHDR, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, TCP_DOFF_OFF, TCP_FLAGS_OFF, TCP_HLEN, TH_SYN,
    TUNNEL_TTL, VERDICT_REASON_MASK, VERDICT_SLOT_SHIFT, VLAN_HLEN, action_record, choice, choice_target, counter,
    tunnel_key,
};
use egret_bpf::skb::off as skb;
use egret_bpf::{Label, Program, ProgramBuilder};
use egret_lang::net::{Family, u128_to_ip};
use std::collections::BTreeMap;

const CTX: Reg = Reg::R6;
const VERDICT: Reg = Reg::R7;
const RULE: Reg = Reg::R8;
/// On the redirect path: 0 (IPv4 underlay) or [`layout::UNDERLAY_V6_EXTRA`].
const UNDERLAY_EXTRA: Reg = Reg::R9;
const SRC4: Reg = Reg::R8;
const DST4: Reg = Reg::R9;
const SRC6: (Reg, Reg) = (Reg::R2, Reg::R3);
const DST6: (Reg, Reg) = (Reg::R4, Reg::R5);

/// The outcome's stack copy and the tunnel key are laid out as
/// [`action_record`] and [`tunnel_key`] say.
const TUNNEL_KEY_FP: i16 = -112;
const KEY_FP: i16 = -4;
const OUTCOME_FP: i16 = -32;
const VERDICT_FP: i16 = OUTCOME_FP + off(action_record::VERDICT);
const RULE_FP: i16 = OUTCOME_FP + off(action_record::RULE);
/// The gateway's node address: 8-byte aligned.
const NODE_FP: i16 = OUTCOME_FP + off(action_record::NODE);
const _: () = assert!(NODE_FP % 8 == 0, "the redirect path reads the node address's first half as one u64");
const DST4_KEY_FP: i16 = -48;
const DST6_KEY_FP: i16 = -64;
/// The clamp of the packet's family (`u32`).
const MSS_CLAMP_FP: i16 = -116;
/// The new MSS in network byte order, for `bpf_skb_store_bytes` (`u16`).
const MSS_NEW_FP: i16 = -120;
/// `from` and `to` of `bpf_l4_csum_replace` (`u32` each).
const MSS_FROM_FP: i16 = -128;
const MSS_TO_FP: i16 = -124;
/// The `egret_admitted_*` key (a source address in network order, 4 or 16 bytes).
const ADMITTED_KEY_FP: i16 = -144;
/// The IPv6 destination's two words across the `egret_admitted_v6` lookup.
const SAVED_DST6_FP: i16 = -160;

/// A field's offset as an instruction offset.
const fn off(f: Field) -> i16 {
    f.offset as i16
}

/// A generated program with its annotations.
pub(super) struct Emitted {
    pub program: Program,
    /// Slot index → what the instruction tests or does, in plan terms.
    pub notes: BTreeMap<usize, String>,
}

struct Emitter<'a> {
    b: ProgramBuilder,
    plan: &'a Plan,
    rules: &'a Rules,
    notes: BTreeMap<usize, String>,
    labels: usize,
    finish: Label,
    not_endpoint: Label,
    /// Where the source tree of the family being emitted goes on a miss
    /// (the `egret_admitted_*` lookup).
    src_miss: Label,
    /// The maps layout's block for "no entry" (tree leaves have their own).
    no_match: Label,
    /// Whether a jump targets `no_match` (unreachable blocks are refused).
    no_match_used: bool,
    leaf_blocks: BTreeMap<(Family, Outcome), Label>,
    /// Whether redirected TCP SYNs get their MSS clamped.
    clamp: bool,
    /// The plan's failover choices, by `egret_choices` index ([`tables::choices`]).
    choices: Vec<crate::ir::Choice>,
}

fn ip_of(f: Family, v: u128) -> String {
    u128_to_ip(f, v).to_string()
}

fn fam(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

/// Emits the classifier of `plan` in `layout`.
pub(super) fn emit(plan: &Plan, rules: &Rules, layout: Layout, clamp: bool) -> Result<Emitted, CodegenError> {
    for r in &rules.rules {
        let Action::Egress(c) = r.action else { continue };
        if let Some(t) = c.targets().iter().find(|t| t.slot.0 >= 1 << 24) {
            return Err(CodegenError::SlotTooWide { slot: t.slot.0 });
        }
    }
    let choices = tables::choices(plan);
    // trees of any size: a jump beyond the 16-bit offset becomes `gotol` (a
    // conditional one a near jump over a `gotol` trampoline), egret_bpf::builder
    let mut b = ProgramBuilder::new(PROGRAM).long_jumps(true);
    let finish = b.new_label("finish");
    let not_endpoint = b.new_label("not_endpoint");
    let no_match = b.new_label("pass_no_match");
    let mut e = Emitter {
        b,
        plan,
        rules,
        notes: BTreeMap::new(),
        labels: 0,
        finish,
        not_endpoint,
        src_miss: not_endpoint,
        no_match,
        no_match_used: false,
        leaf_blocks: BTreeMap::new(),
        clamp,
        choices,
    };
    e.parse_and_classify(layout);
    e.outcome_blocks(layout);
    e.finish_code();
    let (program, moved) = e.b.finish_mapped().map_err(|source| CodegenError::Build { source })?;
    let notes = e.notes.into_iter().map(|(at, text)| (moved.map(at), text)).collect();
    Ok(Emitted { program, notes })
}

impl Emitter<'_> {
    fn label(&mut self, what: &str) -> Label {
        self.labels += 1;
        let n = self.labels;
        self.b.new_label(&format!("{what}_{n}"))
    }

    fn note(&mut self, at: usize, text: String) {
        self.notes.insert(at, text);
    }

    fn emit(&mut self, i: I) -> usize {
        self.b.emit(i)
    }

    fn has_family(&self, f: Family) -> bool {
        self.plan.endpoints.iter().any(|e| Family::of(&e.ip) == f)
    }

    /// Ethernet (+ one 802.1Q tag) → IPv4/IPv6 addresses in registers.
    fn parse_and_classify(&mut self, layout: Layout) {
        let non_ip = self.b.new_label("non_ip");
        let malformed = self.b.new_label("malformed");
        let v4_at = [self.b.new_label("ipv4"), self.b.new_label("ipv4_vlan")];
        let v6_at = [self.b.new_label("ipv6"), self.b.new_label("ipv6_vlan")];
        let vlan = self.b.new_label("vlan");
        let at = self.emit(I::mov64_reg(CTX, Reg::R1));
        self.note(at, "r6 = ctx for the whole program".into());
        self.emit(I::load(Size::W, Reg::R2, CTX, skb::DATA as i16));
        self.emit(I::load(Size::W, Reg::R3, CTX, skb::DATA_END as i16));
        self.emit(I::mov64_reg(Reg::R4, Reg::R2));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R4, ETH_HLEN));
        self.b.jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, non_ip);
        let at = self.emit(I::load(Size::H, Reg::R5, Reg::R2, 12));
        self.note(at, "ethertype, read little endian (IPv4 0x0800 reads 0x0008)".into());
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IP_LE, v4_at[0]);
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IPV6_LE, v6_at[0]);
        let at = self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_8021Q_LE, vlan);
        self.note(at, "one 802.1Q tag in the frame (a tag in skb->vlan_tci needs nothing)".into());
        self.b.ja(non_ip);
        self.b.bind(vlan);
        self.emit(I::mov64_reg(Reg::R4, Reg::R2));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R4, ETH_HLEN + VLAN_HLEN));
        self.b.jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, non_ip);
        self.emit(I::load(Size::H, Reg::R5, Reg::R2, 16));
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IP_LE, v4_at[1]);
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IPV6_LE, v6_at[1]);
        self.b.ja(non_ip);

        let v4 = self.b.new_label("classify_v4");
        let v6 = self.b.new_label("classify_v6");
        for (i, l3) in [ETH_HLEN, ETH_HLEN + VLAN_HLEN].into_iter().enumerate() {
            // IPv4: saddr at +12, daddr at +16 of a 20-byte header
            self.b.bind(v4_at[i]);
            self.emit(I::mov64_reg(Reg::R4, Reg::R2));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R4, l3 + 20));
            let at = self.b.jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, malformed);
            self.note(at, "bounds check: Ethernet + IPv4 header".into());
            self.emit(I::load(Size::W, SRC4, Reg::R2, (l3 + 12) as i16));
            self.emit(I::load(Size::W, DST4, Reg::R2, (l3 + 16) as i16));
            self.clobber(&[Reg::R2, Reg::R3, Reg::R4, Reg::R5]);
            self.b.ja(v4);
            // IPv6: saddr at +8, daddr at +24 of a 40-byte header
            self.b.bind(v6_at[i]);
            self.emit(I::mov64_reg(Reg::R4, Reg::R2));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R4, l3 + 40));
            let at = self.b.jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, malformed);
            self.note(at, "bounds check: Ethernet + IPv6 header".into());
            self.emit(I::load(Size::DW, DST6.0, Reg::R2, (l3 + 24) as i16));
            self.emit(I::load(Size::DW, DST6.1, Reg::R2, (l3 + 32) as i16));
            self.emit(I::load(Size::DW, SRC6.1, Reg::R2, (l3 + 16) as i16));
            self.emit(I::load(Size::DW, SRC6.0, Reg::R2, (l3 + 8) as i16));
            self.b.ja(v6);
        }
        self.b.bind(non_ip);
        self.set_verdict(Reason::NonIp, 0, None);
        self.b.ja(self.finish);
        self.b.bind(malformed);
        self.set_verdict(Reason::PassMalformed, 0, None);
        self.b.ja(self.finish);
        self.b.bind(self.not_endpoint);
        self.set_verdict(Reason::PassNotEndpoint, 0, None);
        self.b.ja(self.finish);

        self.b.bind(v4);
        if self.has_family(Family::V4) {
            match layout {
                Layout::Inline => self.inline_family(Family::V4),
                Layout::Maps => self.maps_family(Family::V4),
            }
        } else {
            let at = self.b.ja(self.not_endpoint);
            self.note(at, "no IPv4 endpoint has rules on this node".into());
        }
        self.b.bind(v6);
        if self.has_family(Family::V6) {
            match layout {
                Layout::Inline => self.inline_family(Family::V6),
                Layout::Maps => self.maps_family(Family::V6),
            }
        } else {
            let at = self.b.ja(self.not_endpoint);
            self.note(at, "no IPv6 endpoint has rules on this node".into());
        }
    }

    /// Overwrites registers with 0 (so paths join in equal verifier states).
    fn clobber(&mut self, regs: &[Reg]) {
        for r in regs {
            self.emit(I::mov64_imm(*r, 0));
        }
    }

    /// Stores verdict (`reason | slot << 8`) and rule for `finish`, no
    /// gateway (a failover choice's gateway is set by [`Self::choose`]), and
    /// leaves `r1` = 0.
    fn set_verdict(&mut self, reason: Reason, slot: u32, rule: Option<u32>) {
        let verdict = reason.index() | (slot << VERDICT_SLOT_SHIFT);
        for (value, fp) in [(verdict, VERDICT_FP), (rule.unwrap_or(NO_RULE), RULE_FP)] {
            self.emit(I::mov32_imm(Reg::R1, value as i32));
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, fp));
        }
        self.emit(I::mov64_imm(Reg::R1, 0));
        self.store_node_r1();
    }

    /// The outcome's node address = four copies of `w1`. Outcome bytes are
    /// written with 4-byte stores only: the static verifier tracks the
    /// values of 8-byte spills, and outcomes whose stack differed in them
    /// would reach `finish` in different states (its tail explored once per
    /// outcome, not once).
    fn store_node_r1(&mut self) {
        for word in (0..16).step_by(4) {
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, NODE_FP + word));
        }
    }

    /// The outcome's node address = the 16 bytes at `base + off` (4-byte copies, as [`Self::store_node_r1`]).
    fn copy_node(&mut self, base: Reg, off: i16) {
        for word in (0..16).step_by(4) {
            self.emit(I::load(Size::W, Reg::R1, base, off + word));
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, NODE_FP + word));
        }
    }

    // ----- inline layout -------------------------------------------------------------

    fn class_label(&mut self, family: Family, class: ClassId, labels: &mut BTreeMap<ClassId, Label>) -> Label {
        if let Some(l) = labels.get(&class) {
            return *l;
        }
        let l = self.b.new_label(&format!("class{}_{}", class.0, fam(family)));
        labels.insert(class, l);
        l
    }

    /// The inline layout for one family: byte-swap the addresses, search the
    /// source among the endpoints, then the destination in the class's tree.
    fn inline_family(&mut self, family: Family) {
        let regs: &[Reg] = match family {
            Family::V4 => &[SRC4, DST4],
            Family::V6 => &[SRC6.0, SRC6.1, DST6.0, DST6.1],
        };
        let bits = if family == Family::V4 { EndBits::B32 } else { EndBits::B64 };
        for r in regs {
            self.emit(I::be(bits, *r));
        }
        let mut classes = BTreeMap::new();
        let keys = self.endpoint_keys(family, &mut classes);
        self.src_tree(family, &keys, &classes);
        for (class, l) in classes {
            self.b.bind(l);
            let iv = partition(self.plan, self.rules, class, family);
            self.range_tree(family, class, &iv, 0, iv.len());
        }
    }

    /// The endpoints of a family as search keys (sorted by address, as the
    /// plan lists them), each with its class's label.
    fn endpoint_keys(&mut self, family: Family, classes: &mut BTreeMap<ClassId, Label>) -> Vec<(u128, Label, String)> {
        let eps: Vec<_> = self.plan.endpoints.iter().filter(|e| Family::of(&e.ip) == family).cloned().collect();
        let mut keys = Vec::with_capacity(eps.len());
        for e in &eps {
            let l = self.class_label(family, e.class, classes);
            let text = format!("{} ({}) -> class {}", e.ip, e.endpoint, e.class.0);
            keys.push((egret_lang::net::ip_to_u128(e.ip), l, text));
        }
        keys
    }

    /// A 64-bit operand for constant `k`: an immediate when it survives sign
    /// extension, else `r1` loaded with `ld_imm64`.
    fn konst64(&mut self, k: u64) -> Operand {
        if k <= i32::MAX as u64 {
            Operand::Imm(k as i32)
        } else {
            self.emit(I::ld_imm64(Reg::R1, k as i64));
            Operand::Reg(Reg::R1)
        }
    }

    /// Jumps to `target` when the source/destination address `>= s`; falls
    /// through otherwise. Returns the slot of the first instruction.
    fn ge(&mut self, family: Family, regs: (Reg, Reg), s: u128, target: Label) -> usize {
        match family {
            Family::V4 => self.b.jmp32_imm(JmpCond::Ge, regs.0, s as u32 as i32, target),
            Family::V6 => {
                let (sh, sl) = ((s >> 64) as u64, s as u64);
                let at = self.b.pc();
                let hi = self.konst64(sh);
                if sl == 0 {
                    self.b.jump(Width::W64, JmpCond::Ge, regs.0, hi, target);
                } else {
                    let lower = self.label("lt");
                    self.b.jump(Width::W64, JmpCond::Gt, regs.0, hi, target);
                    self.b.jump(Width::W64, JmpCond::Ne, regs.0, hi, lower);
                    let lo = self.konst64(sl);
                    self.b.jump(Width::W64, JmpCond::Ge, regs.1, lo, target);
                    self.b.bind(lower);
                }
                at
            }
        }
    }

    /// The source's class: the tree over the plan's endpoints, then the
    /// sources admitted since (`egret_admitted_*`, see the module doc).
    fn src_tree(&mut self, family: Family, keys: &[(u128, Label, String)], classes: &BTreeMap<ClassId, Label>) {
        let miss = self.b.new_label(&format!("admitted_{}", fam(family)));
        self.src_miss = miss;
        self.exact_tree(family, keys, 0, keys.len());
        self.src_miss = self.not_endpoint;
        self.b.bind(miss);
        let map = match family {
            Family::V4 => {
                self.emit(I::mov64_reg(Reg::R1, SRC4));
                self.emit(I::be(EndBits::B32, Reg::R1));
                self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, ADMITTED_KEY_FP));
                tables::ADMITTED_V4
            }
            Family::V6 => {
                self.emit(I::store_reg(Size::DW, Reg::R10, DST6.0, SAVED_DST6_FP));
                self.emit(I::store_reg(Size::DW, Reg::R10, DST6.1, SAVED_DST6_FP + 8));
                for (i, r) in [SRC6.0, SRC6.1].into_iter().enumerate() {
                    self.emit(I::mov64_reg(Reg::R1, r));
                    self.emit(I::be(EndBits::B64, Reg::R1));
                    self.emit(I::store_reg(Size::DW, Reg::R10, Reg::R1, ADMITTED_KEY_FP + 8 * i as i16));
                }
                tables::ADMITTED_V6
            }
        };
        let at = self.lookup(map, ADMITTED_KEY_FP);
        self.note(at, format!("a source the tree does not know: admitted since the generation was built? ({map})"));
        self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, self.not_endpoint);
        let at = self.emit(I::load(Size::W, Reg::R0, Reg::R0, off(egret_bpf::layout::admitted::CLASS)));
        self.note(at, "its class".into());
        // the registers a tree match leaves
        match family {
            Family::V4 => {
                self.emit(I::mov64_reg(Reg::R1, CTX));
                self.clobber(&[SRC4, Reg::R2, Reg::R3, Reg::R4, Reg::R5]);
            }
            Family::V6 => {
                self.clobber(&[Reg::R1, SRC6.0, SRC6.1]);
                self.emit(I::load(Size::DW, DST6.0, Reg::R10, SAVED_DST6_FP));
                self.emit(I::load(Size::DW, DST6.1, Reg::R10, SAVED_DST6_FP + 8));
            }
        }
        for (class, l) in classes {
            let at = self.b.jmp32_imm(JmpCond::Eq, Reg::R0, class.0 as i32, *l);
            self.note(at, format!("admitted -> class {}", class.0));
        }
        self.b.ja(self.not_endpoint);
    }

    /// Binary search for an exact source address among sorted `keys`.
    fn exact_tree(&mut self, family: Family, keys: &[(u128, Label, String)], lo: usize, hi: usize) {
        let regs = match family {
            Family::V4 => (SRC4, SRC4),
            Family::V6 => SRC6,
        };
        if hi <= lo {
            self.b.ja(self.src_miss);
            return;
        }
        if hi - lo == 1 {
            let (k, target, text) = &keys[lo];
            // compare, then clear the source registers so every endpoint of a
            // class enters its tree in the same verifier state
            let at = match family {
                Family::V4 => {
                    let at = self.b.jmp32_imm(JmpCond::Ne, regs.0, *k as u32 as i32, self.src_miss);
                    self.clobber(&[SRC4]);
                    at
                }
                Family::V6 => {
                    let at = self.b.pc();
                    let h = self.konst64((*k >> 64) as u64);
                    self.b.jump(Width::W64, JmpCond::Ne, regs.0, h, self.src_miss);
                    let l = self.konst64(*k as u64);
                    self.b.jump(Width::W64, JmpCond::Ne, regs.1, l, self.src_miss);
                    self.clobber(&[Reg::R1, SRC6.0, SRC6.1]);
                    at
                }
            };
            self.note(at, format!("src == {text}"));
            self.b.ja(*target);
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let right = self.label(&format!("src_{}", fam(family)));
        let at = self.ge(family, regs, keys[mid].0, right);
        self.note(at, format!("src >= {}", ip_of(family, keys[mid].0)));
        self.exact_tree(family, keys, lo, mid);
        self.b.bind(right);
        self.exact_tree(family, keys, mid, hi);
    }

    /// The block a tree leaf jumps to: one per (family, outcome), setting
    /// the verdict registers and clearing the tree's registers, so that
    /// every leaf of one outcome reaches `finish` in one verifier state.
    fn outcome_label(&mut self, family: Family, o: Outcome) -> Label {
        if let Some(l) = self.leaf_blocks.get(&(family, o)) {
            return *l;
        }
        let name = match o {
            Outcome::Internal => format!("internal_{}", fam(family)),
            Outcome::NoMatch => format!("no_match_{}", fam(family)),
            Outcome::Rule(k) => format!("rule{k}_{}", fam(family)),
        };
        let l = self.b.new_label(&name);
        self.leaf_blocks.insert((family, o), l);
        l
    }

    fn no_match(&mut self) -> Label {
        self.no_match_used = true;
        self.no_match
    }

    fn outcome_text(&self, o: Outcome) -> String {
        match o {
            Outcome::Internal => "pass (cluster-internal)".into(),
            Outcome::NoMatch => "pass (no policy)".into(),
            Outcome::Rule(k) => match self.rules.rules.get(k as usize) {
                Some(r) => format!("rule {k}: {} -> {}", r.prefix, r.action),
                None => format!("rule {k}"),
            },
        }
    }

    fn interval_text(family: Family, iv: &Interval) -> String {
        if iv.lo == iv.hi { ip_of(family, iv.lo) } else { format!("{}-{}", ip_of(family, iv.lo), ip_of(family, iv.hi)) }
    }

    /// Binary search over a class's destination intervals `iv[lo..hi]`.
    fn range_tree(&mut self, family: Family, class: ClassId, iv: &[Interval], lo: usize, hi: usize) {
        let regs = match family {
            Family::V4 => (DST4, DST4),
            Family::V6 => DST6,
        };
        if hi <= lo {
            let l = self.no_match();
            self.b.ja(l);
            return;
        }
        if hi - lo == 1 {
            let target = self.outcome_label(family, iv[lo].outcome);
            let at = self.b.ja(target);
            let text = format!(
                "class {} {}: dst {} -> {}",
                class.0,
                fam(family),
                Self::interval_text(family, &iv[lo]),
                self.outcome_text(iv[lo].outcome)
            );
            self.note(at, text);
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let right = if hi - mid == 1 {
            self.outcome_label(family, iv[mid].outcome)
        } else {
            self.label(&format!("class{}_{}", class.0, fam(family)))
        };
        let at = self.ge(family, regs, iv[mid].lo, right);
        let mut text = format!("class {} {}: dst >= {}", class.0, fam(family), ip_of(family, iv[mid].lo));
        if hi - mid == 1 {
            text.push_str(&format!(
                " ({} -> {})",
                Self::interval_text(family, &iv[mid]),
                self.outcome_text(iv[mid].outcome)
            ));
        }
        self.note(at, text);
        self.range_tree(family, class, iv, lo, mid);
        if hi - mid > 1 {
            self.b.bind(right);
            self.range_tree(family, class, iv, mid, hi);
        }
    }

    // ----- maps layout ---------------------------------------------------------------

    fn lookup(&mut self, map: &str, key_fp: i16) -> usize {
        self.emit(I::mov64_reg(Reg::R2, Reg::R10));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R2, i32::from(key_fp)));
        let at = self.b.ld_map(Reg::R1, map);
        self.emit(I::call(helper::MAP_LOOKUP_ELEM));
        at
    }

    /// The maps layout for one family: the source among the endpoints with
    /// the same binary search tree as the inline layout (no map lookup), its
    /// class written into the `egret_dst_*` key, then one LPM lookup whose
    /// value is the action record (internal prefixes are entries of every
    /// class, [`tables`]).
    fn maps_family(&mut self, family: Family) {
        let (map, key_fp, src_regs, bits): (&str, i16, &[Reg], EndBits) = match family {
            Family::V4 => (tables::DST_V4, DST4_KEY_FP, &[SRC4], EndBits::B32),
            Family::V6 => (tables::DST_V6, DST6_KEY_FP, &[SRC6.0, SRC6.1], EndBits::B64),
        };
        for r in src_regs {
            self.emit(I::be(bits, *r));
        }
        let mut classes = BTreeMap::new();
        let keys = self.endpoint_keys(family, &mut classes);
        self.src_tree(family, &keys, &classes);
        let lookup = self.b.new_label(&format!("lookup_{}", fam(family)));
        for (class, l) in classes {
            self.b.bind(l);
            let at = self.emit(I::mov32_imm(Reg::R1, class.0.to_be() as i32));
            self.note(at, format!("class {} (big endian) into the {map} key", class.0));
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, key_fp + 4));
            self.emit(I::mov64_imm(Reg::R1, 0));
            self.b.ja(lookup);
        }
        self.b.bind(lookup);
        let bits = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        self.emit(I::mov32_imm(Reg::R1, 32 + bits));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, key_fp));
        match family {
            Family::V4 => {
                self.emit(I::store_reg(Size::W, Reg::R10, DST4, key_fp + 8));
            }
            Family::V6 => {
                self.emit(I::store_reg(Size::DW, Reg::R10, DST6.0, key_fp + 8));
                self.emit(I::store_reg(Size::DW, Reg::R10, DST6.1, key_fp + 16));
            }
        }
        let at = self.lookup(map, key_fp);
        self.note(at, format!("longest prefix of the class, cluster-internal prefixes included: {map} {{class, dst}}"));
        let no_match = self.no_match();
        self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, no_match);
        let at = self.emit(I::load(Size::W, Reg::R1, Reg::R0, off(action_record::VERDICT)));
        self.note(at, "action record {verdict, rule, gateway}: the outcome as stored for finish".into());
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, VERDICT_FP));
        self.emit(I::load(Size::W, Reg::R1, Reg::R0, off(action_record::RULE)));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, RULE_FP));
        self.copy_node(Reg::R0, off(action_record::NODE));
        self.b.ja(self.finish);
    }

    // ----- outcomes and the common tail -------------------------------------------------

    fn outcome_blocks(&mut self, layout: Layout) {
        if self.no_match_used {
            self.b.bind(self.no_match);
            self.set_verdict(Reason::PassNoMatch, 0, None);
            self.b.ja(self.finish);
        }
        if layout == Layout::Maps {
            return;
        }
        let blocks: Vec<((Family, Outcome), Label)> = self.leaf_blocks.iter().map(|(k, l)| (*k, *l)).collect();
        for ((family, outcome), l) in blocks {
            self.b.bind(l);
            let at = self.b.pc();
            match family {
                Family::V4 => self.clobber(&[DST4]),
                Family::V6 => self.clobber(&[DST6.0, DST6.1]),
            }
            match outcome {
                Outcome::Internal => {
                    self.set_verdict(Reason::PassInternal, 0, None);
                    self.note(at, "pass: cluster-internal".into());
                }
                Outcome::NoMatch => {
                    self.set_verdict(Reason::PassNoMatch, 0, None);
                    self.note(at, "pass: no policy".into());
                }
                Outcome::Rule(k) => {
                    let Some(rule) = self.rules.rules.get(k as usize).copied() else { continue };
                    match rule.action {
                        Action::Egress(c) => {
                            let index = tables::choice_index(&self.choices, &c);
                            self.set_verdict(Reason::Choose, index, Some(k))
                        }
                        Action::Drop(DropReason::NoGateway) => self.set_verdict(Reason::DropNoGateway, 0, Some(k)),
                        Action::Pass => self.set_verdict(Reason::PassNoMatch, 0, None),
                    }
                    self.note(at, format!("rule {k}: class {} {} -> {}", rule.class.0, rule.prefix, rule.action));
                }
            }
            self.b.ja(self.finish);
        }
    }

    /// `reasons[reason] += (±1, ±len)` with the reason index in `r1`.
    fn count(&mut self, map: &str, sign: i32) {
        let skip = self.label("counted");
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, KEY_FP));
        self.lookup(map, KEY_FP);
        self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, skip);
        self.emit(I::load(Size::DW, Reg::R1, Reg::R0, off(counter::PACKETS)));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R1, sign));
        self.emit(I::store_reg(Size::DW, Reg::R0, Reg::R1, off(counter::PACKETS)));
        self.emit(I::load(Size::W, Reg::R1, CTX, skb::LEN as i16));
        self.emit(I::load(Size::DW, Reg::R2, Reg::R0, off(counter::BYTES)));
        let op = if sign < 0 { AluOp::Sub } else { AluOp::Add };
        self.emit(I::alu64_reg(op, Reg::R2, Reg::R1));
        self.emit(I::store_reg(Size::DW, Reg::R0, Reg::R2, off(counter::BYTES)));
        self.b.bind(skip);
    }

    /// Moves this packet's count from one reason to another.
    fn recount(&mut self, from: Reason, to: Reason) {
        self.emit(I::mov32_imm(Reg::R1, from.index() as i32));
        self.count(tables::REASONS, -1);
        self.emit(I::mov32_imm(Reg::R1, to.index() as i32));
        self.count(tables::REASONS, 1);
    }

    fn finish_code(&mut self) {
        let redirect = self.b.new_label("do_redirect");
        let local = self.b.new_label("do_local_egress");
        let drop = self.b.new_label("do_drop");
        let dispatch = self.b.new_label("dispatch");
        self.b.bind(self.finish);
        if !self.choices.is_empty() {
            self.choose();
        }
        let at = self.emit(I::load(Size::W, VERDICT, Reg::R10, VERDICT_FP));
        self.note(at, "verdict = reason | slot << 8, rule, as stored by the outcome".into());
        self.emit(I::load(Size::W, RULE, Reg::R10, RULE_FP));
        let at = self.emit(I::mov32_reg(Reg::R1, VERDICT));
        self.note(at, "count: egret_reasons[verdict & 0xff], egret_policy_stats[rule]".into());
        self.emit(I::alu32_imm(AluOp::And, Reg::R1, VERDICT_REASON_MASK as i32));
        self.count(tables::REASONS, 1);
        self.b.jmp32_imm(JmpCond::Eq, RULE, NO_RULE as i32, dispatch);
        self.emit(I::mov32_reg(Reg::R1, RULE));
        self.count(tables::POLICY_STATS, 1);
        self.b.bind(dispatch);
        self.emit(I::mov32_reg(Reg::R1, VERDICT));
        self.emit(I::alu32_imm(AluOp::And, Reg::R1, VERDICT_REASON_MASK as i32));
        self.b.jmp32_imm(JmpCond::Eq, Reg::R1, Reason::Redirect.index() as i32, redirect);
        self.b.jmp32_imm(JmpCond::Eq, Reg::R1, Reason::LocalEgress.index() as i32, local);
        self.b.jmp32_imm(JmpCond::Eq, Reg::R1, Reason::DropNoGateway.index() as i32, drop);
        let at = self.emit(I::mov64_imm(Reg::R0, TC_ACT_UNSPEC));
        self.note(at, "pass: TC_ACT_UNSPEC (TCX_NEXT), the next program runs".into());
        self.emit(I::exit());
        self.b.bind(drop);
        self.emit(I::mov64_imm(Reg::R0, TC_ACT_SHOT));
        self.emit(I::exit());

        // redirect: the underlay family, MSS clamp, then tunnel key
        // {tunnel_id = slot, remote = gateway, ttl 64}
        self.b.bind(redirect);
        let tunnel_error = self.b.new_label("tunnel_error");
        let underlay6 = self.b.new_label("underlay_v6");
        let underlay_known = self.b.new_label("underlay_known");
        let at = self.emit(I::mov64_imm(UNDERLAY_EXTRA, 0));
        self.note(at, "the gateway's underlay: IPv4 when its node address is ::ffff:0:0/96 (r9 = 0), else IPv6".into());
        self.emit(I::load(Size::W, Reg::R1, Reg::R10, NODE_FP + 8));
        self.b.jmp32_imm(JmpCond::Ne, Reg::R1, layout::NODE_V4_PREFIX_LE, underlay6);
        self.emit(I::load(Size::DW, Reg::R1, Reg::R10, NODE_FP));
        self.b.jmp_imm(JmpCond::Eq, Reg::R1, 0, underlay_known);
        self.b.bind(underlay6);
        let at = self.emit(I::mov64_imm(UNDERLAY_EXTRA, layout::UNDERLAY_V6_EXTRA));
        self.note(at, "IPv6 underlay: r9 = the outer header's extra bytes".into());
        self.b.bind(underlay_known);
        if self.clamp {
            self.mss_clamp(tunnel_error);
        }
        let at = self.emit(I::mov64_imm(Reg::R1, 0));
        self.note(at, format!("struct bpf_tunnel_key at fp{TUNNEL_KEY_FP}, zeroed"));
        // 44 bytes: five 8-byte stores and a 4-byte one
        for at in (0..tunnel_key::SIZE - 4).step_by(8) {
            self.emit(I::store_reg(Size::DW, Reg::R10, Reg::R1, TUNNEL_KEY_FP + at as i16));
        }
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, TUNNEL_KEY_FP + tunnel_key::SIZE as i16 - 4));
        let at = self.emit(I::mov32_reg(Reg::R1, VERDICT));
        self.note(at, "tunnel_id = slot (VNI)".into());
        self.emit(I::alu32_imm(AluOp::Rsh, Reg::R1, VERDICT_SLOT_SHIFT as i32));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, TUNNEL_KEY_FP + off(tunnel_key::TUNNEL_ID)));
        self.emit(I::mov32_imm(Reg::R1, TUNNEL_TTL));
        self.emit(I::store_reg(Size::B, Reg::R10, Reg::R1, TUNNEL_KEY_FP + off(tunnel_key::TTL)));
        let key6 = self.b.new_label("tunnel_key_v6");
        let set_key = self.b.new_label("set_tunnel_key");
        self.b.jmp_imm(JmpCond::Ne, UNDERLAY_EXTRA, 0, key6);
        let at = self.emit(I::load(Size::W, Reg::R1, Reg::R10, NODE_FP + 12));
        self.note(at, "remote_ipv4 = the gateway's IPv4 (the mapped address's last word), host byte order".into());
        self.emit(I::be(EndBits::B32, Reg::R1));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, TUNNEL_KEY_FP + off(layout::TUNNEL_KEY_REMOTE_IPV4)));
        self.emit(I::mov64_imm(Reg::R4, 0));
        self.b.ja(set_key);
        self.b.bind(key6);
        for word in (0..16).step_by(4) {
            let at = self.emit(I::load(Size::W, Reg::R1, Reg::R10, NODE_FP + word));
            if word == 0 {
                self.note(at, "remote_ipv6 = the gateway's IPv6 address (network order)".into());
            }
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, TUNNEL_KEY_FP + off(tunnel_key::REMOTE) + word));
        }
        let at = self.emit(I::mov64_imm(Reg::R4, layout::BPF_F_TUNINFO_IPV6));
        self.note(at, "flags = BPF_F_TUNINFO_IPV6".into());
        self.b.bind(set_key);
        self.emit(I::mov64_reg(Reg::R1, CTX));
        self.emit(I::mov64_reg(Reg::R2, Reg::R10));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R2, i32::from(TUNNEL_KEY_FP)));
        self.emit(I::mov64_imm(Reg::R3, tunnel_key::SIZE as i32));
        let at = self.emit(I::call(helper::SKB_SET_TUNNEL_KEY));
        self.note(at, "bpf_skb_set_tunnel_key(skb, &key, 44, flags)".into());
        self.b.jmp_imm(JmpCond::Ne, Reg::R0, 0, tunnel_error);
        let at = self.b.mov32_hole(Reg::R1, HOLE_TUNNEL_IFINDEX);
        self.note(at, "ifindex of egret0, filled by the loader".into());
        self.emit(I::mov64_imm(Reg::R2, 0));
        let at = self.emit(I::call(helper::REDIRECT));
        self.note(at, "bpf_redirect(egret0, 0): egress, flags must be 0".into());
        self.emit(I::exit());
        self.b.bind(tunnel_error);
        self.recount(Reason::Redirect, Reason::DropTunnelError);
        self.emit(I::mov64_imm(Reg::R0, TC_ACT_SHOT));
        self.emit(I::exit());

        // local egress: cb[0] = slot, tail call egret_gw_progs[0]
        self.b.bind(local);
        self.emit(I::mov32_reg(Reg::R1, VERDICT));
        self.emit(I::alu32_imm(AluOp::Rsh, Reg::R1, VERDICT_SLOT_SHIFT as i32));
        let at = self.emit(I::store_reg(Size::W, CTX, Reg::R1, skb::CB as i16));
        self.note(at, "skb->cb[0] = slot, for the gateway program".into());
        self.emit(I::mov64_reg(Reg::R1, CTX));
        self.b.ld_map(Reg::R2, tables::GW_PROGS);
        self.emit(I::mov64_imm(Reg::R3, 0));
        let at = self.emit(I::call(helper::TAIL_CALL));
        self.note(at, "tail call egret_gw_progs[0]; returns only if no gateway program is loaded".into());
        self.recount(Reason::LocalEgress, Reason::DropNoGatewayProgram);
        self.emit(I::mov64_imm(Reg::R0, TC_ACT_SHOT));
        self.emit(I::exit());
    }

    /// Resolves a [`Reason::Choose`] outcome in place (falls through for
    /// any other): `egret_choices[slot bits]` holds the choice's targets in
    /// failover order; the first whose gateway has no down flag in
    /// `egret_gw_live` (no entry = up) becomes the stored outcome (verdict
    /// and gateway; the rule stays); none → `drop-no-gateway`. While
    /// `egret_gw_down[0]` is 0 (no gateway down) the first target is taken at
    /// once. Unrolled over [`MAX_FAILOVER`] targets; `r7` holds the choice,
    /// `r8` its count.
    fn choose(&mut self) {
        let resolved = self.b.new_label("chosen");
        let none = self.b.new_label("choose_none");
        let at = self.emit(I::load(Size::W, Reg::R1, Reg::R10, VERDICT_FP));
        self.note(at, "a failover choice? (reason choose, the choice index in the slot bits)".into());
        self.emit(I::alu32_imm(AluOp::And, Reg::R1, VERDICT_REASON_MASK as i32));
        self.b.jmp32_imm(JmpCond::Ne, Reg::R1, Reason::Choose.index() as i32, resolved);
        self.emit(I::load(Size::W, Reg::R1, Reg::R10, VERDICT_FP));
        self.emit(I::alu32_imm(AluOp::Rsh, Reg::R1, VERDICT_SLOT_SHIFT as i32));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, KEY_FP));
        let at = self.lookup(tables::CHOICES, KEY_FP);
        self.note(at, "egret_choices[index]: {count, 0, {verdict, gateway} x 8}".into());
        self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, none);
        self.emit(I::mov64_reg(Reg::R7, Reg::R0));
        self.emit(I::load(Size::W, Reg::R8, Reg::R7, off(choice::COUNT)));
        let takes: Vec<Label> = (0..MAX_FAILOVER).map(|i| self.b.new_label(&format!("choose_take{i}"))).collect();
        let walk = self.b.new_label("choose_walk");
        self.b.jmp32_imm(JmpCond::Eq, Reg::R8, 0, none);
        self.emit(I::mov32_imm(Reg::R1, 0));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, KEY_FP));
        let at = self.lookup(tables::GW_DOWN, KEY_FP);
        self.note(at, "egret_gw_down[0]: no gateway down → the first target, no egret_gw_live lookup".into());
        self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, walk);
        self.emit(I::load(Size::W, Reg::R1, Reg::R0, off(layout::gw_down::COUNT)));
        self.b.jmp32_imm(JmpCond::Eq, Reg::R1, 0, takes[0]);
        self.b.bind(walk);
        for (i, take) in takes.iter().enumerate() {
            let gateway = off(choice::TARGETS.record(i, choice_target::NODE));
            let at = self.b.jmp32_imm(JmpCond::Le, Reg::R8, i as i32, none);
            self.note(at, format!("target {i} of the failover order, if the choice has it"));
            self.emit(I::mov64_reg(Reg::R2, Reg::R7));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R2, i32::from(gateway)));
            let at = self.b.ld_map(Reg::R1, tables::GW_LIVE);
            self.emit(I::call(helper::MAP_LOOKUP_ELEM));
            self.note(
                at,
                "egret_gw_live[gateway]: no entry = up (the key is the target's node address, in the value)".into(),
            );
            self.b.jmp_imm(JmpCond::Eq, Reg::R0, 0, *take);
            self.emit(I::load(Size::W, Reg::R1, Reg::R0, off(layout::gw_live::FLAGS)));
            self.emit(I::alu32_imm(AluOp::And, Reg::R1, GL_F_DOWN as i32));
            self.b.jmp32_imm(JmpCond::Eq, Reg::R1, 0, *take);
        }
        self.b.ja(none);
        for (i, take) in takes.into_iter().enumerate() {
            self.b.bind(take);
            let at =
                self.emit(I::load(Size::W, Reg::R1, Reg::R7, off(choice::TARGETS.record(i, choice_target::VERDICT))));
            self.note(at, format!("target {i} is live: its verdict and gateway become the outcome"));
            self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, VERDICT_FP));
            self.copy_node(Reg::R7, off(choice::TARGETS.record(i, choice_target::NODE)));
            self.b.ja(resolved);
        }
        self.b.bind(none);
        let at = self.emit(I::mov32_imm(Reg::R1, Reason::DropNoGateway.index() as i32));
        self.note(at, "no live gateway: drop no-gateway".into());
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, VERDICT_FP));
        self.emit(I::mov64_imm(Reg::R1, 0));
        self.store_node_r1();
        self.b.bind(resolved);
        self.clobber(&[Reg::R7, Reg::R8]);
    }

    /// The MSS clamp of the redirect path ([`super::mss`]): falls through
    /// when done (clamped or not); jumps to `failed` when the checksum
    /// update fails after the new MSS was stored.
    fn mss_clamp(&mut self, failed: Label) {
        let done = self.b.new_label("mss_done");
        let tcp = self.b.new_label("mss_tcp");
        let found = self.b.new_label("mss_option");
        let (data, end) = (Reg::R2, Reg::R3);
        let at = self.emit(I::load(Size::W, data, CTX, skb::DATA as i16));
        self.note(at, "MSS clamp: TCP SYNs only (IPv4 first fragment or IPv6 next header TCP)".into());
        self.emit(I::load(Size::W, end, CTX, skb::DATA_END as i16));
        let untagged = self.b.new_label("mss_untagged");
        self.emit(I::mov64_reg(Reg::R4, data));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R4, ETH_HLEN));
        self.b.jmp_reg(JmpCond::Gt, Reg::R4, end, done);
        self.emit(I::load(Size::H, Reg::R5, data, ETH_PROTO as i16));
        self.b.jmp32_imm(JmpCond::Ne, Reg::R5, ETH_P_8021Q_LE, untagged);
        self.emit(I::mov64_reg(Reg::R4, data));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R4, ETH_HLEN + VLAN_HLEN));
        self.b.jmp_reg(JmpCond::Gt, Reg::R4, end, done);
        self.emit(I::load(Size::H, Reg::R5, data, (ETH_PROTO + VLAN_HLEN) as i16));
        let at_tag = [self.b.new_label("mss_v4_vlan"), self.b.new_label("mss_v6_vlan")];
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IP_LE, at_tag[0]);
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IPV6_LE, at_tag[1]);
        self.b.ja(done);
        self.b.bind(untagged);
        let at_plain = [self.b.new_label("mss_v4"), self.b.new_label("mss_v6")];
        self.b.jmp32_imm(JmpCond::Eq, Reg::R5, ETH_P_IP_LE, at_plain[0]);
        self.b.jmp32_imm(JmpCond::Ne, Reg::R5, ETH_P_IPV6_LE, done);
        self.b.ja(at_plain[1]);
        for (l3, [v4, v6]) in [(ETH_HLEN, at_plain), (ETH_HLEN + VLAN_HLEN, at_tag)] {
            // IPv4: protocol TCP, fragment offset 0, IHL >= 5 -> r8 = TCP header offset
            self.b.bind(v4);
            self.emit(I::mov64_reg(Reg::R4, data));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R4, l3 + IPV4_HLEN));
            self.b.jmp_reg(JmpCond::Gt, Reg::R4, end, done);
            self.emit(I::load(Size::B, Reg::R1, data, (l3 + IP_PROTO - ETH_HLEN) as i16));
            self.b.jmp32_imm(JmpCond::Ne, Reg::R1, IPPROTO_TCP, done);
            let at = self.emit(I::load(Size::H, Reg::R1, data, (l3 + IP_FRAG - ETH_HLEN) as i16));
            self.note(at, "fragment offset (13 bits, read little endian): first fragments only".into());
            self.emit(I::alu32_imm(AluOp::And, Reg::R1, 0xff1f));
            self.b.jmp32_imm(JmpCond::Ne, Reg::R1, 0, done);
            self.emit(I::load(Size::B, Reg::R8, data, l3 as i16));
            self.emit(I::alu32_imm(AluOp::And, Reg::R8, 0x0f));
            self.b.jmp32_imm(JmpCond::Lt, Reg::R8, 5, done);
            self.emit(I::alu32_imm(AluOp::Lsh, Reg::R8, 2));
            self.emit(I::alu32_imm(AluOp::Add, Reg::R8, l3));
            let at = self.b.mov32_hole(Reg::R0, HOLE_MSS_V4);
            self.note(at, "the IPv4 MSS clamp, filled by the loader".into());
            self.b.ja(tcp);
            // IPv6: next header TCP (no extension headers) -> r8 = TCP header offset
            self.b.bind(v6);
            self.emit(I::mov64_reg(Reg::R4, data));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R4, l3 + IPV6_HLEN));
            self.b.jmp_reg(JmpCond::Gt, Reg::R4, end, done);
            self.emit(I::load(Size::B, Reg::R1, data, (l3 + IP6_NEXTHDR - ETH_HLEN) as i16));
            self.b.jmp32_imm(JmpCond::Ne, Reg::R1, IPPROTO_TCP, done);
            self.emit(I::mov64_imm(Reg::R8, l3 + IPV6_HLEN));
            let at = self.b.mov32_hole(Reg::R0, HOLE_MSS_V6);
            self.note(at, "the IPv6 MSS clamp, filled by the loader".into());
            self.b.ja(tcp);
        }

        // the TCP header: SYN set, options present
        self.b.bind(tcp);
        let (opt, q, p, opt_end) = (Reg::R4, Reg::R4, Reg::R5, Reg::R0);
        self.emit(I::mov64_reg(opt, data));
        self.emit(I::alu64_reg(AluOp::Add, opt, Reg::R8));
        self.emit(I::mov64_reg(Reg::R1, opt));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R1, TCP_HLEN));
        let at = self.b.jmp_reg(JmpCond::Gt, Reg::R1, end, done);
        self.note(at, "bounds check: the TCP header".into());
        let at = self.emit(I::load(Size::B, Reg::R1, opt, TCP_FLAGS_OFF as i16));
        self.note(at, "TCP flags: SYN (with or without ACK)".into());
        self.emit(I::alu32_imm(AluOp::And, Reg::R1, TH_SYN));
        self.b.jmp32_imm(JmpCond::Eq, Reg::R1, 0, done);
        let at = self.emit(I::alu32_reg(AluOp::Sub, Reg::R0, UNDERLAY_EXTRA));
        self.note(at, "clamp -= r9 (an IPv6 underlay's 20 more bytes; below 0 wraps: no clamp)".into());
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R0, MSS_CLAMP_FP));
        self.emit(I::load(Size::B, opt_end, opt, TCP_DOFF_OFF as i16));
        self.emit(I::alu32_imm(AluOp::Rsh, opt_end, 4));
        self.emit(I::alu32_imm(AluOp::Lsh, opt_end, 2));
        self.b.jmp32_imm(JmpCond::Le, opt_end, TCP_HLEN, done);
        let at = self.emit(I::alu64_reg(AluOp::Add, opt_end, Reg::R8));
        self.note(at, "r0 = frame offset of the end of the TCP options".into());
        self.emit(I::mov64_reg(p, Reg::R8));
        self.emit(I::alu64_imm(AluOp::Add, p, TCP_HLEN));
        // at most OPTION_STEPS options, unrolled: NOP advances 1, EOL ends, others by their length
        for step in 0..OPTION_STEPS {
            let next = self.label("mss_step");
            let other = self.label("mss_kind");
            let at = self.b.jmp_reg(JmpCond::Ge, p, opt_end, done);
            self.note(at, format!("TCP option {} of at most {OPTION_STEPS}", step + 1));
            self.emit(I::mov64_reg(q, data));
            self.emit(I::alu64_reg(AluOp::Add, q, p));
            self.emit(I::mov64_reg(Reg::R1, q));
            self.emit(I::alu64_imm(AluOp::Add, Reg::R1, 2));
            self.b.jmp_reg(JmpCond::Gt, Reg::R1, end, done);
            self.emit(I::load(Size::B, Reg::R1, q, 0));
            self.b.jmp32_imm(JmpCond::Eq, Reg::R1, 2, found);
            self.b.jmp32_imm(JmpCond::Eq, Reg::R1, 0, done);
            self.b.jmp32_imm(JmpCond::Ne, Reg::R1, 1, other);
            self.emit(I::alu64_imm(AluOp::Add, p, 1));
            self.b.ja(next);
            self.b.bind(other);
            self.emit(I::load(Size::B, Reg::R1, q, 1));
            self.b.jmp32_imm(JmpCond::Lt, Reg::R1, 2, done);
            self.emit(I::alu64_reg(AluOp::Add, p, Reg::R1));
            self.b.bind(next);
        }
        self.b.ja(done);

        // the MSS option at q (frame offset p): length 4, inside the header and the frame
        self.b.bind(found);
        self.emit(I::mov64_reg(Reg::R1, p));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R1, 4));
        self.b.jmp_reg(JmpCond::Gt, Reg::R1, opt_end, done);
        self.emit(I::mov64_reg(Reg::R1, q));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R1, 4));
        self.b.jmp_reg(JmpCond::Gt, Reg::R1, end, done);
        self.emit(I::load(Size::B, Reg::R1, q, 1));
        self.b.jmp32_imm(JmpCond::Ne, Reg::R1, 4, done);
        let at = self.emit(I::load(Size::H, Reg::R1, q, 2));
        self.note(at, "r1 = the MSS as stored (network order), r3 = its value".into());
        self.emit(I::mov64_reg(Reg::R3, Reg::R1));
        self.emit(I::be(EndBits::B16, Reg::R3));
        self.emit(I::load(Size::W, Reg::R2, Reg::R10, MSS_CLAMP_FP));
        let at = self.b.jmp_reg(JmpCond::Le, Reg::R3, Reg::R2, done);
        self.note(at, "at most the clamp: unchanged".into());
        self.emit(I::mov64_reg(Reg::R4, Reg::R2));
        self.emit(I::be(EndBits::B16, Reg::R4));
        self.emit(I::store_reg(Size::H, Reg::R10, Reg::R4, MSS_NEW_FP));
        // checksum words start at the TCP header (an even offset): a field at
        // an odd offset enters the sum byte-swapped
        let odd = self.b.new_label("mss_odd");
        let update = self.b.new_label("mss_update");
        self.emit(I::mov64_reg(Reg::R0, p));
        self.emit(I::alu64_imm(AluOp::And, Reg::R0, 1));
        self.b.jmp_imm(JmpCond::Ne, Reg::R0, 0, odd);
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R1, MSS_FROM_FP));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R4, MSS_TO_FP));
        self.b.ja(update);
        self.b.bind(odd);
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R3, MSS_FROM_FP));
        self.emit(I::store_reg(Size::W, Reg::R10, Reg::R2, MSS_TO_FP));
        self.b.bind(update);
        self.emit(I::mov64_reg(Reg::R2, p));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R2, 2));
        self.emit(I::mov64_reg(Reg::R1, CTX));
        self.emit(I::mov64_reg(Reg::R3, Reg::R10));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R3, i32::from(MSS_NEW_FP)));
        self.emit(I::mov64_imm(Reg::R4, 2));
        self.emit(I::mov64_imm(Reg::R5, 0));
        let at = self.emit(I::call(helper::SKB_STORE_BYTES));
        self.note(at, "bpf_skb_store_bytes(skb, mss, &clamp, 2, 0); fails: sent unclamped".into());
        self.b.jmp_imm(JmpCond::Ne, Reg::R0, 0, done);
        self.emit(I::mov64_reg(Reg::R1, CTX));
        self.emit(I::mov64_reg(Reg::R2, Reg::R8));
        self.emit(I::alu64_imm(AluOp::Add, Reg::R2, 16));
        self.emit(I::load(Size::W, Reg::R3, Reg::R10, MSS_FROM_FP));
        self.emit(I::load(Size::W, Reg::R4, Reg::R10, MSS_TO_FP));
        self.emit(I::mov64_imm(Reg::R5, CSUM_SIZE2));
        let at = self.emit(I::call(helper::L4_CSUM_REPLACE));
        self.note(at, "bpf_l4_csum_replace(skb, tcp + 16, from, to, 2): no-op under CHECKSUM_PARTIAL".into());
        self.b.jmp_imm(JmpCond::Ne, Reg::R0, 0, failed);
        self.b.bind(done);
    }
}

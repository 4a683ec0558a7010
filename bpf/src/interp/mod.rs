//! An in-process interpreter for tc classifier programs
//! (`BPF_PROG_TYPE_SCHED_CLS` semantics), with in-memory maps and the helpers
//! of [`crate::helpers`].
//!
//! Contract:
//! - [`run`] executes a program whose holes are filled and whose map
//!   references name maps of the [`MapStore`]; it returns R0, the packet and
//!   context after the run, the instruction count and a record of effects
//!   (tunnel key set, redirects, bytes stored, checksum updates, map updates
//!   and deletes, packet-type changes, helper calls, tail calls, ring buffer
//!   records).
//! - `bpf_ringbuf_output` appends the record to its ring buffer in the
//!   [`MapStore`], which holds records until user space drains them
//!   ([`MapStore::ringbuf_drain`]); a record that does not fit (8-byte header
//!   and 8-byte rounding counted, as in `kernel/bpf/ringbuf.c`) fails with
//!   `-EAGAIN`, as the kernel's does.
//! - `bpf_tail_call` looks the index up in the `prog_array` map of the
//!   [`MapStore`] (user space stores a program id there with
//!   [`MapStore::update`]). An empty slot falls through, as in the kernel; a
//!   filled one ends the run with R0 = 0 (the interpreter cannot run the
//!   target), and either way [`Effects::tail_call`] records the attempt.
//! - Arithmetic follows the kernel ([`crate::insn::eval_alu`]): division by
//!   zero gives 0, modulo by zero leaves the dividend. Legacy `LD_ABS`/`LD_IND`
//!   loads outside the packet end the program with R0 = 0, as in the kernel.
//! - Every other problem is a typed [`Fault`] naming the instruction:
//!   out-of-bounds or uninitialized-stack accesses, refused context accesses,
//!   unknown helpers, bad helper arguments, an exhausted instruction budget.
//!   (Programs that pass [`crate::verifier::verify`] never fault, except on the
//!   budget.)
//! - Memory is a flat 64-bit address space: context, packet, stack and each
//!   map value live at fixed, distinct addresses, so pointer arithmetic and
//!   comparisons behave as on the kernel. Helper results that depend on the
//!   machine (time, CPU, random numbers, the packet hash, tunnel metadata of
//!   received packets) come from [`RunInput`].
//! - Checksum helpers model a packet with `ip_summed == CHECKSUM_NONE`, as
//!   `BPF_PROG_TEST_RUN` builds it: the checksum fields are updated in place.

use crate::layout;

mod checksum;
mod io;
mod machine;
mod maps;

pub use checksum::inet_checksum;
pub use io::{
    CsumReplace, Effects, Fault, MapDelete, MapUpdate, Redirect, RedirectKind, RingbufOutput, RunInput, RunOutcome,
    SkbContext, StoredBytes, TailCall, TunnelKey, TunnelKeySet,
};
pub use machine::{Prepared, prepare, run};
pub use maps::{MapError, MapStore};

const CTX_BASE: u64 = 0x0000_1000_0000_0000;
const PKT_BASE: u64 = 0x0000_2000_0000_0000;
const STACK_BASE: u64 = 0x0000_3000_0000_0000;
const MAP_BASE: u64 = 0x0000_4000_0000_0000;
const MAP_WINDOW_SHIFT: u32 = 36;
const MAP_PTR_BASE: u64 = 0x0000_5000_0000_0000;
const STACK_SIZE: usize = 512;

// kernel constants, as the helpers take and return them (defined in [`crate::layout`])
pub const TC_ACT_SHOT: u64 = layout::TC_ACT_SHOT as u64;
pub const TC_ACT_REDIRECT: u64 = layout::TC_ACT_REDIRECT as u64;
const BPF_F_INGRESS: u64 = layout::BPF_F_INGRESS as u64;
const BPF_F_TUNINFO_IPV6: u64 = layout::BPF_F_TUNINFO_IPV6 as u64;
const BPF_F_TUNINFO_FLAGS: u64 = layout::BPF_F_TUNINFO_FLAGS as u64;
const BPF_F_ZERO_CSUM_TX: u64 = layout::BPF_F_ZERO_CSUM_TX as u64;
const BPF_F_DONT_FRAGMENT: u64 = layout::BPF_F_DONT_FRAGMENT as u64;
const BPF_F_SEQ_NUMBER: u64 = layout::BPF_F_SEQ_NUMBER as u64;
const BPF_F_NO_TUNNEL_KEY: u64 = layout::BPF_F_NO_TUNNEL_KEY as u64;

const ENOENT: i64 = 2;
const E2BIG: i64 = 7;
const EAGAIN: i64 = 11;
const EFAULT: i64 = 14;
const EEXIST: i64 = 17;
const EINVAL: i64 = 22;
const ENOSPC: i64 = 28;
const EPROTO: i64 = 71;
const ENOTSUPP: i64 = 524;

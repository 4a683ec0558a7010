//! The verdict reasons the classifier counts: one list, defined once.
//!
//! `egret_reasons` is a `PERCPU_ARRAY` indexed by [`Reason::index`] whose
//! value is [`Counter`] (`{packets u64, bytes u64}`, bytes = `skb->len`,
//! Ethernet header included). Every packet the classifier sees is counted
//! under exactly one reason, the one describing its final outcome:
//! [`Reason::LocalEgress`] counts packets handed to the gateway program;
//! when that tail call falls through, the packet is moved (its count
//! subtracted again) to [`Reason::DropNoGatewayProgram`], and likewise from
//! [`Reason::Redirect`] to [`Reason::DropTunnelError`] when the tunnel key
//! cannot be set. The agent exports the counters by [`Reason::name`] (the
//! manifest lists them too); indexes are part of the artifact format, so
//! new reasons are appended.

/// Why the classifier did what it did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Not IPv4 or IPv6 (ARP, LLDP, …), also behind one 802.1Q tag: passed.
    NonIp,
    /// An IPv4/IPv6 ethertype but a frame too short for the IP header: passed.
    PassMalformed,
    /// The source address is no local endpoint with egress rules: passed.
    PassNotEndpoint,
    /// The destination is cluster-internal (SEMANTICS.md step 1): passed.
    PassInternal,
    /// No policy captures the destination for this endpoint: passed.
    PassNoMatch,
    /// Tunnelled to the gateway node (tunnel key set, redirected to `egret0`).
    Redirect,
    /// This node is the gateway: handed to the gateway program by tail call.
    LocalEgress,
    /// The winning policy has no (healthy) gateway: dropped (`no-gateway`).
    DropNoGateway,
    /// Local egress, but `egret_gw_progs[0]` holds no program (the gateway
    /// program is not loaded): dropped.
    DropNoGatewayProgram,
    /// `bpf_skb_set_tunnel_key` failed: dropped.
    DropTunnelError,
    /// Not a final reason: the outcome names a failover choice
    /// (`egret_choices`), which `finish` resolves into `Redirect`,
    /// `LocalEgress` or `DropNoGateway` before anything is counted. Never
    /// counted (not in [`Reason::COUNTED`]).
    Choose,
}

impl Reason {
    /// Every reason, by index: the counted ones, then [`Reason::Choose`].
    pub const ALL: [Reason; 11] = [
        Reason::NonIp,
        Reason::PassMalformed,
        Reason::PassNotEndpoint,
        Reason::PassInternal,
        Reason::PassNoMatch,
        Reason::Redirect,
        Reason::LocalEgress,
        Reason::DropNoGateway,
        Reason::DropNoGatewayProgram,
        Reason::DropTunnelError,
        Reason::Choose,
    ];

    /// Every reason the classifier counts, by index (`egret_reasons`): all
    /// but [`Reason::Choose`].
    pub const COUNTED: &[Reason] = Reason::ALL.split_at(Reason::ALL.len() - 1).0;

    /// The index in `egret_reasons` (and the low byte of the verdict register).
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The reason at an index.
    pub fn from_index(i: u32) -> Option<Reason> {
        Reason::ALL.get(i as usize).copied()
    }

    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NonIp => "non-ip",
            Reason::PassMalformed => "pass-malformed",
            Reason::PassNotEndpoint => "pass-not-endpoint",
            Reason::PassInternal => "pass-internal",
            Reason::PassNoMatch => "pass-no-match",
            Reason::Redirect => "redirect",
            Reason::LocalEgress => "local-egress",
            Reason::DropNoGateway => "drop-no-gateway",
            Reason::DropNoGatewayProgram => "drop-no-gateway-program",
            Reason::DropTunnelError => "drop-tunnel-error",
            Reason::Choose => "choose",
        }
    }

    /// What the classifier returns for this reason: `TC_ACT_UNSPEC` (-1,
    /// i.e. `TCX_NEXT`: the next program, e.g. the CNI's, still runs) for
    /// passes, `TC_ACT_SHOT` (2) for drops, `TC_ACT_REDIRECT` (7) for
    /// redirects. Local egress ends in the gateway program; if the tail call
    /// falls through the packet is dropped ([`Reason::DropNoGatewayProgram`]).
    pub const fn return_code(self) -> i32 {
        match self {
            Reason::NonIp
            | Reason::PassMalformed
            | Reason::PassNotEndpoint
            | Reason::PassInternal
            | Reason::PassNoMatch => TC_ACT_UNSPEC,
            Reason::Redirect => TC_ACT_REDIRECT,
            Reason::LocalEgress
            | Reason::DropNoGateway
            | Reason::DropNoGatewayProgram
            | Reason::DropTunnelError
            | Reason::Choose => TC_ACT_SHOT,
        }
    }
}

pub use egret_bpf::layout::{Counter, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_names_unique() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index() as usize, i);
            assert_eq!(Reason::from_index(i as u32), Some(*r));
            assert!(Reason::ALL[i + 1..].iter().all(|o| o.name() != r.name()));
        }
        assert_eq!(Reason::from_index(Reason::ALL.len() as u32), None);
        assert_eq!(Reason::COUNTED.len(), 10);
        assert!(!Reason::COUNTED.contains(&Reason::Choose));
        assert_eq!(
            Counter::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
            Some(Counter { packets: 1, bytes: 2 })
        );
        assert_eq!(Counter::from_bytes(&[0; 15]), None);
    }
}

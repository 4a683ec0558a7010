//! `egret_choices`: the source classifier's failover choices — the one
//! definition of the map's layout, for the code generator that fills it
//! (`egret_compiler::codegen::tables`) and the loader that decodes it.
//!
//! `ARRAY`, key `u32` choice index, value [`VALUE_SIZE`] bytes:
//! - `u32` host count of targets (1..=[`MAX_TARGETS`]) @0;
//! - `u32` reserved, 0 @4;
//! - [`MAX_TARGETS`] × `{u32 host verdict, u32 0, gateway node address}` @8
//!   (24 bytes each, [`crate::layout::choice_target`]; the address is a
//!   [`crate::layout::NODE_ADDR`]: IPv4 mapped, or IPv6), in failover order,
//!   unused ones zero. The verdict is the classifier's
//!   outcome word (`reason | slot << 8`: redirect or local egress through a
//!   24-bit slot); the gateway is the node the target sends to (this node's
//!   own address for local egress) and the key of its liveness in
//!   `egret_gw_live` ([`crate::templates::GatewayLive`]).
//!
//! The classifier takes the first target whose gateway has no down flag.

use std::net::IpAddr;

pub use crate::layout::MAX_TARGETS;
use crate::layout::{choice, choice_target};

/// The map's name.
pub const MAP: &str = crate::layout::map::CHOICES;
/// Size of a value ([`crate::layout::choice`]).
pub const VALUE_SIZE: u32 = choice::SIZE as u32;

/// One target of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceTarget {
    /// The outcome word: `reason | slot << 8`.
    pub verdict: u32,
    /// The gateway node's underlay address.
    pub gateway: IpAddr,
}

/// Encodes a value (at most [`MAX_TARGETS`] targets are kept).
#[must_use]
pub fn encode(targets: &[ChoiceTarget]) -> Vec<u8> {
    let targets = &targets[..targets.len().min(MAX_TARGETS)];
    let mut v = choice::LAYOUT.zeroed();
    choice::COUNT.put(&mut v, targets.len() as u64);
    for (i, t) in targets.iter().enumerate() {
        choice::TARGETS.record(i, choice_target::VERDICT).put(&mut v, u64::from(t.verdict));
        choice::TARGETS.record(i, choice_target::NODE).put_node(&mut v, t.gateway);
    }
    v
}

/// Decodes a value; `None` for a wrong size or count.
#[must_use]
pub fn decode(value: &[u8]) -> Option<Vec<ChoiceTarget>> {
    choice::LAYOUT.fits(value).then_some(())?;
    let count = choice::COUNT.get_u32(value)? as usize;
    (1..=MAX_TARGETS).contains(&count).then_some(())?;
    (0..count)
        .map(|i| {
            Some(ChoiceTarget {
                verdict: choice::TARGETS.record(i, choice_target::VERDICT).get_u32(value)?,
                gateway: choice::TARGETS.record(i, choice_target::NODE).node(value)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_refused() {
        let t = [
            ChoiceTarget { verdict: 5 | (0x5d1c2a << 8), gateway: IpAddr::from([192, 0, 2, 13]) },
            ChoiceTarget { verdict: 6 | (7 << 8), gateway: "2001:db8::11".parse().unwrap() },
        ];
        let v = encode(&t);
        assert_eq!(v.len(), VALUE_SIZE as usize);
        assert_eq!(&v[0..4], &[2, 0, 0, 0]);
        assert_eq!(&v[8..12], &[5, 0x2a, 0x1c, 0x5d]);
        assert_eq!(&v[16..32], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 13], "IPv4 mapped");
        assert_eq!(&v[32..36], &[6, 7, 0, 0]);
        assert_eq!(&v[40..56], &"2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(decode(&v), Some(t.to_vec()));
        assert_eq!(decode(&v[..70]), None);
        assert_eq!(decode(&encode(&[])), None, "a choice has at least one target");
        let mut nine = v.clone();
        nine[0] = 9;
        assert_eq!(decode(&nine), None);
    }
}

//! `egret_choices`: the source classifier's failover choices — the one
//! definition of the map's layout, for the code generator that fills it
//! (`egret_compiler::codegen::tables`) and the loader that decodes it.
//!
//! `ARRAY`, key `u32` choice index, value [`VALUE_SIZE`] bytes:
//! - `u32` host count of targets (1..=[`MAX_TARGETS`]) @0;
//! - `u32` reserved, 0 @4;
//! - [`MAX_TARGETS`] × `{u32 host verdict, u32 host gateway IPv4}` @8, in
//!   failover order, unused ones zero. The verdict is the classifier's
//!   outcome word (`reason | slot << 8`: redirect or local egress through a
//!   24-bit slot); the gateway is the node the target sends to (this node's
//!   own address for local egress) and the key of its liveness in
//!   `egret_gw_live` ([`crate::templates::GatewayLive`]).
//!
//! The classifier takes the first target whose gateway has no down flag.

use std::net::Ipv4Addr;

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
    /// The gateway node's IPv4 address.
    pub gateway: Ipv4Addr,
}

/// Encodes a value (at most [`MAX_TARGETS`] targets are kept).
#[must_use]
pub fn encode(targets: &[ChoiceTarget]) -> Vec<u8> {
    let targets = &targets[..targets.len().min(MAX_TARGETS)];
    let mut v = choice::LAYOUT.zeroed();
    choice::COUNT.put(&mut v, targets.len() as u64);
    for (i, t) in targets.iter().enumerate() {
        choice::TARGETS.record(i, choice_target::VERDICT).put(&mut v, u64::from(t.verdict));
        choice::TARGETS.record(i, choice_target::GATEWAY).put_ipv4(&mut v, t.gateway);
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
                gateway: choice::TARGETS.record(i, choice_target::GATEWAY).ipv4(value)?,
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
            ChoiceTarget { verdict: 5 | (0x5d1c2a << 8), gateway: Ipv4Addr::new(192, 0, 2, 13) },
            ChoiceTarget { verdict: 6 | (7 << 8), gateway: Ipv4Addr::new(192, 0, 2, 11) },
        ];
        let v = encode(&t);
        assert_eq!(v.len(), VALUE_SIZE as usize);
        assert_eq!(&v[0..4], &[2, 0, 0, 0]);
        assert_eq!(&v[8..12], &[5, 0x2a, 0x1c, 0x5d]);
        assert_eq!(decode(&v), Some(t.to_vec()));
        assert_eq!(decode(&v[..70]), None);
        assert_eq!(decode(&encode(&[])), None, "a choice has at least one target");
        let mut nine = v.clone();
        nine[0] = 9;
        assert_eq!(decode(&nine), None);
    }
}

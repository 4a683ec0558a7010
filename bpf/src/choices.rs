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

/// The map's name.
pub const MAP: &str = "egret_choices";
/// Targets per choice: the most gateways an endpoint fails over through.
pub const MAX_TARGETS: usize = 8;
/// Size of a value.
pub const VALUE_SIZE: u32 = 8 + 8 * MAX_TARGETS as u32;

/// Offset of target `i`'s verdict in a value (its gateway follows at +4).
#[must_use]
pub const fn target_offset(i: usize) -> usize {
    8 + 8 * i
}

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
    let mut v = vec![0u8; VALUE_SIZE as usize];
    v[0..4].copy_from_slice(&(targets.len() as u32).to_le_bytes());
    for (i, t) in targets.iter().enumerate() {
        let at = target_offset(i);
        v[at..at + 4].copy_from_slice(&t.verdict.to_le_bytes());
        v[at + 4..at + 8].copy_from_slice(&u32::from(t.gateway).to_le_bytes());
    }
    v
}

/// Decodes a value; `None` for a wrong size or count.
#[must_use]
pub fn decode(value: &[u8]) -> Option<Vec<ChoiceTarget>> {
    let w = |i: usize| value.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
    (value.len() == VALUE_SIZE as usize).then_some(())?;
    let count = w(0)? as usize;
    (1..=MAX_TARGETS).contains(&count).then_some(())?;
    (0..count)
        .map(|i| {
            Some(ChoiceTarget { verdict: w(target_offset(i))?, gateway: Ipv4Addr::from(w(target_offset(i) + 4)?) })
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

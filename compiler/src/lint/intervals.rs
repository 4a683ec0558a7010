//! Sets of addresses as sorted, disjoint, inclusive integer ranges (one family).

use egret_lang::net::{Cidr, Family};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    pub fn of(c: &Cidr) -> RangeSet {
        RangeSet { ranges: vec![c.range()] }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn subtract(&mut self, c: &Cidr) {
        let (lo, hi) = c.range();
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if b < lo || a > hi {
                out.push((a, b));
                continue;
            }
            if a < lo {
                out.push((a, lo - 1));
            }
            if b > hi {
                out.push((hi + 1, b));
            }
        }
        self.ranges = out;
    }

    pub fn intersect(&mut self, c: &Cidr) {
        let (lo, hi) = c.range();
        self.ranges = self
            .ranges
            .iter()
            .filter_map(|&(a, b)| {
                let (x, y) = (a.max(lo), b.min(hi));
                (x <= y).then_some((x, y))
            })
            .collect();
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }
}

impl RangeSet {
    /// Appends a range known to lie after every range in the set.
    pub(crate) fn push_raw(&mut self, lo: u128, hi: u128) {
        self.ranges.push((lo, hi));
    }
}

/// A representative address of the first range, for messages.
pub fn first_address(set: &RangeSet, family: Family) -> Option<std::net::IpAddr> {
    set.ranges().first().map(|&(a, _)| egret_lang::net::u128_to_ip(family, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_and_intersect() {
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        let mut s = RangeSet::of(&all);
        s.subtract(&"10.0.0.0/8".parse().unwrap());
        assert_eq!(s.ranges().len(), 2);
        s.intersect(&"10.0.0.0/7".parse().unwrap());
        assert_eq!(s.ranges(), &[(0x0b00_0000, 0x0bff_ffff)]);
        s.subtract(&"11.0.0.0/8".parse().unwrap());
        assert!(s.is_empty());
    }
}

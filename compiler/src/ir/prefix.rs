//! Address-range arithmetic on prefixes, shared by resolution, the passes,
//! the plan and `diff`.
//!
//! Addresses are handled as left-aligned integers of their family's width
//! (`egret_lang::net::ip_to_u128`): IPv4 in the low 32 bits of a `u128`.
//! Ranges are inclusive (`[lo, hi]`), so the whole IPv6 space is
//! representable without overflow.
//!
//! Guarantees: every function is total (no panics on any input), and every
//! function that returns prefixes returns canonical ones (host bits clear)
//! in canonical order ([`prefix_order`]).

use egret_lang::net::{Cidr, Family, family_max, ip_to_u128, u128_to_ip};
use std::cmp::Ordering;
use std::net::IpAddr;

/// An inclusive address range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    pub family: Family,
    pub lo: u128,
    pub hi: u128,
}

impl Range {
    /// The addresses of a prefix (host bits ignored).
    pub fn of(c: &Cidr) -> Range {
        let (lo, hi) = c.range();
        Range { family: c.family(), lo, hi }
    }

    /// The whole address space of a family.
    pub fn full(family: Family) -> Range {
        Range { family, lo: 0, hi: family_max(family) }
    }

    pub fn contains(&self, family: Family, v: u128) -> bool {
        self.family == family && self.lo <= v && v <= self.hi
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(Family::of(&ip), ip_to_u128(ip))
    }

    /// Whether `other` lies inside `self`.
    pub fn covers(&self, other: &Range) -> bool {
        self.family == other.family && self.lo <= other.lo && other.hi <= self.hi
    }

    /// The first address as an `IpAddr`.
    pub fn first(&self) -> IpAddr {
        u128_to_ip(self.family, self.lo)
    }

    /// The minimal list of prefixes covering exactly this range.
    pub fn prefixes(&self) -> Vec<Cidr> {
        range_to_prefixes(self.family, self.lo, self.hi)
    }
}

/// `2^k - 1` without overflow (`k` ≤ 128).
fn ones(k: u32) -> u128 {
    if k >= 128 { u128::MAX } else { (1u128 << k) - 1 }
}

/// The minimal list of prefixes covering exactly `[lo, hi]` (empty when `lo > hi`).
pub fn range_to_prefixes(family: Family, lo: u128, hi: u128) -> Vec<Cidr> {
    let width = u32::from(family.bits());
    let hi = hi.min(family_max(family));
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let mut lo = lo;
    loop {
        let align = if lo == 0 { width } else { lo.trailing_zeros().min(width) };
        let span = hi - lo; // addresses after `lo` still to cover
        // largest k with 2^k - 1 <= span
        let fit = if span == u128::MAX { 128 } else { 127 - (span + 1).leading_zeros() };
        let k = align.min(fit);
        out.push(Cidr::new(u128_to_ip(family, lo), (width - k) as u8));
        let last = lo + ones(k);
        if last >= hi {
            break;
        }
        lo = last + 1;
    }
    out
}

/// Canonical order of prefixes: family, then network address, then length
/// (so a prefix comes right before the prefixes it contains).
pub fn prefix_order(a: &Cidr, b: &Cidr) -> Ordering {
    (a.family(), a.bits(), a.len).cmp(&(b.family(), b.bits(), b.len))
}

/// Sorts ranges and merges overlapping and adjacent ones.
pub fn merge_ranges(mut v: Vec<Range>) -> Vec<Range> {
    v.sort();
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        if let Some(last) = out.last_mut()
            && last.family == r.family
            && (r.lo <= last.hi || r.lo - last.hi == 1)
        {
            last.hi = last.hi.max(r.hi);
            continue;
        }
        out.push(r);
    }
    out
}

/// `a ∖ b`, both sorted and merged (as [`merge_ranges`] returns them).
pub fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for r in a {
        let mut cur = Some(*r);
        for x in b.iter().filter(|x| x.family == r.family) {
            let Some(c) = cur else { break };
            if x.hi < c.lo || x.lo > c.hi {
                continue;
            }
            if x.lo > c.lo {
                out.push(Range { family: c.family, lo: c.lo, hi: x.lo - 1 });
            }
            cur = if x.hi < c.hi { Some(Range { family: c.family, lo: x.hi + 1, hi: c.hi }) } else { None };
        }
        if let Some(c) = cur {
            out.push(c);
        }
    }
    out
}

/// The union of prefixes as the minimal canonical prefix list, both families,
/// in [`prefix_order`].
pub fn canonical_union(cidrs: impl IntoIterator<Item = Cidr>) -> Vec<Cidr> {
    let ranges = merge_ranges(cidrs.into_iter().map(|c| Range::of(&c)).collect());
    ranges.iter().flat_map(Range::prefixes).collect()
}

/// Whether a sorted, merged range list contains an address.
pub fn ranges_contain(ranges: &[Range], ip: IpAddr) -> Option<&Range> {
    let fam = Family::of(&ip);
    let v = ip_to_u128(ip);
    let i = ranges.partition_point(|r| (r.family, r.hi) < (fam, v));
    ranges.get(i).filter(|r| r.contains(fam, v))
}

/// Whether a sorted, merged range list covers `r` entirely.
pub fn ranges_cover(ranges: &[Range], r: &Range) -> bool {
    let i = ranges.partition_point(|x| (x.family, x.hi) < (r.family, r.lo));
    ranges.get(i).is_some_and(|x| x.covers(r))
}

/// The starts of the elementary segments that the boundaries of `prefixes`
/// cut one family's address space into: sorted, unique, always including 0.
/// Any function built from containment in these prefixes is constant on
/// each segment `[starts[i], starts[i+1] - 1]` (the last ends at the
/// family's maximum).
pub fn segment_starts<'a>(family: Family, prefixes: impl IntoIterator<Item = &'a Cidr>) -> Vec<u128> {
    let max = family_max(family);
    let mut pts = vec![0u128];
    for c in prefixes {
        if c.family() != family {
            continue;
        }
        let (lo, hi) = c.range();
        pts.push(lo);
        if hi < max {
            pts.push(hi + 1);
        }
    }
    pts.sort_unstable();
    pts.dedup();
    pts
}

/// The segments for [`segment_starts`], as ranges.
pub fn segments<'a>(family: Family, prefixes: impl IntoIterator<Item = &'a Cidr>) -> Vec<Range> {
    let starts = segment_starts(family, prefixes);
    let max = family_max(family);
    starts
        .iter()
        .enumerate()
        .map(|(i, &lo)| Range { family, lo, hi: starts.get(i + 1).map_or(max, |n| n - 1) })
        .collect()
}

/// Formats a range as the shortest readable text: a prefix when it is one,
/// else `first-last`.
pub fn range_text(r: &Range) -> String {
    let p = r.prefixes();
    match p.as_slice() {
        [one] => one.to_string(),
        _ => format!("{}-{}", u128_to_ip(r.family, r.lo), u128_to_ip(r.family, r.hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn range_to_prefixes_is_minimal_and_exact() {
        let r = Range::of(&c("10.0.0.0/8"));
        assert_eq!(r.prefixes(), vec![c("10.0.0.0/8")]);
        let v = range_to_prefixes(Family::V4, 1, 6);
        let s: Vec<String> = v.iter().map(|c| c.to_string()).collect();
        assert_eq!(s, ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]);
        assert_eq!(Range::full(Family::V6).prefixes(), vec![c("::/0")]);
        assert_eq!(Range::full(Family::V4).prefixes(), vec![c("0.0.0.0/0")]);
        assert!(range_to_prefixes(Family::V4, 5, 4).is_empty());
    }

    #[test]
    fn subtract_and_union() {
        let a = merge_ranges(vec![Range::of(&c("0.0.0.0/0"))]);
        let b = merge_ranges(vec![Range::of(&c("10.0.0.0/8")), Range::of(&c("192.168.0.0/16"))]);
        let d = subtract(&a, &b);
        assert_eq!(d.len(), 3);
        assert!(ranges_contain(&d, "8.8.8.8".parse().unwrap()).is_some());
        assert!(ranges_contain(&d, "10.1.1.1".parse().unwrap()).is_none());
        let u = canonical_union([c("10.0.0.0/9"), c("10.128.0.0/9"), c("::/0")]);
        assert_eq!(u, vec![c("10.0.0.0/8"), c("::/0")]);
        assert!(ranges_cover(&b, &Range::of(&c("10.1.0.0/16"))));
        assert!(!ranges_cover(&b, &Range::of(&c("11.0.0.0/8"))));
    }

    #[test]
    fn segments_partition_the_space() {
        let s = segments(Family::V4, &[c("10.0.0.0/8"), c("10.1.0.0/16"), c("::/0")]);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].lo, 0);
        assert_eq!(s[4].hi, u32::MAX as u128);
        for w in s.windows(2) {
            assert_eq!(w[0].hi + 1, w[1].lo);
        }
        assert_eq!(range_text(&s[1]), "10.0.0.0/16");
    }
}

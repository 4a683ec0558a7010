//! IP prefixes (CIDRs) as written in policies and snapshots.
//!
//! Prefix arithmetic (network, containment, first and last address) is the
//! `ipnet` crate's; parsing is egret's own, stricter than `ipnet`'s (no
//! leading zeros in the length) and with egret's messages ([`CidrError`]).
//! The integer helpers below ([`ip_to_u128`], [`prefix_mask`], …) serve the
//! compiler's interval partition, which works on addresses as integers.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// An address and a prefix length, kept exactly as written: host bits may be
/// set (`10.0.0.1/8`); [`Cidr::has_host_bits`] tells, [`Cidr::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("missing `/prefix-length`")]
    MissingLength,
    #[error("`{addr}` is not an IP address")]
    BadAddress { addr: String },
    #[error("`{len}` is not a prefix length")]
    BadLength { len: String },
    #[error("prefix length {len} is longer than {max} bits")]
    TooLong { len: u32, max: u8 },
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Cidr {
        Cidr { addr, len }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// The address as a left-aligned integer of the family's width.
    pub fn bits(&self) -> u128 {
        ip_to_u128(self.addr)
    }

    /// The prefix as `ipnet`'s, host bits kept (a length beyond the family's
    /// width, which only [`Cidr::new`] can make, is taken as the full width).
    pub fn net(&self) -> IpNet {
        let len = self.len.min(self.family().bits());
        match self.addr {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new_assert(a, len)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new_assert(a, len)),
        }
    }

    pub fn has_host_bits(&self) -> bool {
        self.net().network() != self.addr
    }

    /// The same prefix with host bits cleared.
    pub fn network(&self) -> Cidr {
        Cidr { addr: self.net().network(), len: self.len }
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.net().contains(&ip)
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.net().contains(&other.net())
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// First and last address of the (network) prefix, as integers.
    pub fn range(&self) -> (u128, u128) {
        let n = self.net();
        (ip_to_u128(n.network()), ip_to_u128(n.broadcast()))
    }
}

impl From<Cidr> for IpNet {
    fn from(c: Cidr) -> IpNet {
        c.net()
    }
}

impl From<IpNet> for Cidr {
    fn from(n: IpNet) -> Cidr {
        Cidr { addr: n.addr(), len: n.prefix_len() }
    }
}

/// Mask with the top `len` bits of the family set.
pub fn prefix_mask(family: Family, len: u8) -> u128 {
    let bits = family.bits() as u32;
    let len = (len as u32).min(bits);
    if len == 0 { 0 } else { (family_max(family) >> (bits - len)) << (bits - len) }
}

/// All ones in the family's width.
pub fn family_max(family: Family) -> u128 {
    match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn u128_to_ip(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (a, l) = s.split_once('/').ok_or(CidrError::MissingLength)?;
        let addr: IpAddr = a.parse().map_err(|_| CidrError::BadAddress { addr: a.to_string() })?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || (l.len() > 1 && l.starts_with('0')) {
            return Err(CidrError::BadLength { len: l.to_string() });
        }
        let len: u32 = l.parse().map_err(|_| CidrError::BadLength { len: l.to_string() })?;
        let max = Family::of(&addr).bits();
        if len > max as u32 {
            return Err(CidrError::TooLong { len, max });
        }
        Ok(Cidr { addr, len: len as u8 })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_host_bits() {
        let c: Cidr = "10.0.0.1/8".parse().unwrap();
        assert!(c.has_host_bits());
        assert_eq!(c.network().to_string(), "10.0.0.0/8");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(!c.has_host_bits());
        assert!(c.contains_ip("1.2.3.4".parse().unwrap()));
        assert!(!c.contains_ip("::1".parse().unwrap()));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::TooLong { len: 33, max: 32 }));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/08".parse::<Cidr>().is_err());
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert!(v6.has_host_bits());
        assert_eq!(v6.network().to_string(), "2001:db8::/32");
        assert_eq!("192.0.2.0/24".parse::<Cidr>().unwrap().range(), (0xc0000200, 0xc00002ff));
        // one ipnet conversion each way keeps the address as written
        let n: IpNet = v6.into();
        assert_eq!((Cidr::from(n), n.to_string()), (v6, "2001:db8::1/32".to_string()));
    }

    /// `ipnet`'s arithmetic agrees with the integer masks the partition uses.
    #[test]
    fn prefix_arithmetic_agrees_with_the_integer_masks() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let fam = if i % 2 == 0 { Family::V4 } else { Family::V6 };
            let raw = (u128::from(next()) << 64 | u128::from(next())) & family_max(fam);
            let len = (next() % (u64::from(fam.bits()) + 1)) as u8;
            let c = Cidr::new(u128_to_ip(fam, raw), len);
            let mask = prefix_mask(fam, len);
            let lo = raw & mask;
            assert_eq!(c.range(), (lo, lo | (!mask & family_max(fam))), "{c}");
            assert_eq!(c.has_host_bits(), raw & !mask != 0, "{c}");
            assert_eq!(c.network().addr, u128_to_ip(fam, lo), "{c}");
            let probe = u128_to_ip(fam, (u128::from(next()) << 64 | u128::from(next())) & family_max(fam));
            assert_eq!(c.contains_ip(probe), ip_to_u128(probe) & mask == lo, "{c} ∋ {probe}");
            let inner_len = len + (next() % (u64::from(fam.bits() - len) + 1)) as u8;
            let inner = Cidr::new(if next() % 2 == 0 { c.addr } else { probe }, inner_len);
            let want = inner_len >= len && ip_to_u128(inner.addr) & mask == lo;
            assert_eq!(c.contains(&inner), want, "{c} ⊇ {inner}");
        }
    }
}

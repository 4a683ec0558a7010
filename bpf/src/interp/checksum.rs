//! Checksums: the kernel's one's-complement helpers, on memory-order words.

pub(super) fn csum_add(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s.wrapping_add(u32::from(c))
}

pub(super) fn csum_fold(csum: u32) -> u16 {
    let mut s = (csum & 0xffff) + (csum >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

pub(super) fn csum16_add(csum: u16, addend: u16) -> u16 {
    let (s, c) = csum.overflowing_add(addend);
    s.wrapping_add(u16::from(c))
}

pub(super) fn csum_replace4(sum: u16, from: u32, to: u32) -> u16 {
    let tmp = csum_add(!u32::from(sum), !from);
    csum_fold(csum_add(tmp, to))
}

/// x86-64 `csum_partial` over 32-bit words (little-endian loads), with seed.
pub(super) fn csum_partial_words(words: &[u32], seed: u32) -> u32 {
    let mut acc: u64 = u64::from(seed);
    for w in words {
        let (s, c) = acc.overflowing_add(u64::from(*w));
        acc = s.wrapping_add(u64::from(c));
    }
    csum_add((acc >> 32) as u32, acc as u32)
}

/// The Internet checksum of `data` (RFC 1071), as stored in a header field:
/// use it to build test packets with valid checksums.
#[must_use]
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csum_replace_matches_recomputation() {
        // an IPv4 header with a valid checksum; change the TTL/protocol word
        let mut hdr: Vec<u8> =
            vec![0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 0x01, 0, 0, 198, 51, 100, 10, 203, 0, 113, 20];
        let c = inet_checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_le_bytes([hdr[8], hdr[9]]);
        hdr[8] = 0x3f;
        let new = u16::from_le_bytes([hdr[8], hdr[9]]);
        let sum = u16::from_le_bytes([hdr[10], hdr[11]]);
        let updated = !csum16_add(csum16_add(!sum, !old), new);
        hdr[10..12].copy_from_slice(&updated.to_le_bytes());
        assert_eq!(inet_checksum(&hdr), 0);
    }
}

//! Who answers for an address on an Ethernet segment, seen from the
//! segment itself (the mini-cluster's external server): the floating-IP
//! trials' measure of "two MACs answering for the IP at once".
//!
//! Contract of [`ArpWatch`]:
//! - one `AF_PACKET` socket bound to the interface (ethertype ARP), in the
//!   calling thread's network namespace; a thread of its own sends an ARP
//!   request for the watched address every [`ArpWatch::ROUND`] (one
//!   *round*) and reads every ARP frame whose sender address is the watched
//!   one: replies to the rounds and gratuitous ARPs alike;
//! - each frame is recorded with its receive time, its round (the last
//!   request sent before it) and its sender MAC ([`Answer`]);
//! - [`Overlap::of`] turns the record into the dual-owner figures: a round
//!   whose request two different MACs *replied* to is a *dual round* (both
//!   held the address when the request arrived; a gratuitous ARP is an
//!   announcement, not an answer, and does not count); consecutive dual
//!   rounds make one *event*, whose window is from the first to the last
//!   reply of a MAC other than the first one's inside it;
//! - bounded: at most [`ArpWatch::MAX_ANSWERS`] answers are kept (later
//!   ones are counted, not stored), the thread stops when the watch is
//!   dropped.
//!
//! The only unsafe code is the packet socket (`socket`, `bind` with a
//! `sockaddr_ll`, `sendto`, `recv`): libc calls on one file descriptor the
//! watch owns.
#![expect(unsafe_code, reason = "an AF_PACKET socket; see the module doc")]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `ETH_P_ARP`.
const ETH_P_ARP: u16 = 0x0806;

/// One ARP frame whose sender was the watched address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// When it was read.
    pub at: Instant,
    /// The round it answers (the number of requests sent before it, minus one).
    pub round: u64,
    /// The sender MAC.
    pub mac: [u8; 6],
    /// A gratuitous ARP (target address = sender address) rather than a reply.
    pub gratuitous: bool,
}

/// The watch: see the module doc.
#[derive(Debug)]
pub struct ArpWatch {
    answers: Arc<Mutex<Vec<Answer>>>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The figures of one record ([`Overlap::of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlap {
    /// Rounds in which two or more MACs answered.
    pub dual_rounds: u64,
    /// Runs of consecutive dual rounds.
    pub events: u64,
    /// The longest event's window (from the first to the last answer of a
    /// second MAC inside it; one round's length at least).
    pub longest: Duration,
    /// The distinct MACs that answered, in order of first answer.
    pub macs: Vec<[u8; 6]>,
}

impl Overlap {
    /// The figures of `answers` (in receive order) for rounds of `round` each.
    #[must_use]
    pub fn of(answers: &[Answer], round: Duration) -> Overlap {
        let mut macs: Vec<[u8; 6]> = Vec::new();
        let mut by_round: std::collections::BTreeMap<u64, Vec<&Answer>> = std::collections::BTreeMap::new();
        for a in answers {
            if !macs.contains(&a.mac) {
                macs.push(a.mac);
            }
            if !a.gratuitous {
                by_round.entry(a.round).or_default().push(a);
            }
        }
        let dual: Vec<u64> =
            by_round.iter().filter(|(_, v)| v.iter().any(|a| a.mac != v[0].mac)).map(|(r, _)| *r).collect();
        let mut o = Overlap { dual_rounds: dual.len() as u64, macs, ..Overlap::default() };
        let mut i = 0;
        while i < dual.len() {
            let mut j = i;
            while j + 1 < dual.len() && dual[j + 1] == dual[j] + 1 {
                j += 1;
            }
            o.events += 1;
            let inside: Vec<&Answer> = (dual[i]..=dual[j]).flat_map(|r| by_round[&r].iter().copied()).collect();
            let first = inside[0].mac;
            let others: Vec<Instant> = inside.iter().filter(|a| a.mac != first).map(|a| a.at).collect();
            let window = match (inside.first(), others.last()) {
                (Some(a), Some(b)) => b.saturating_duration_since(a.at),
                _ => Duration::ZERO,
            };
            o.longest = o.longest.max(window.max(round));
            i = j + 1;
        }
        o
    }
}

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArpWatchError {
    /// The interface does not exist.
    #[error("no interface `{0}`")]
    NoInterface(String),
    /// A socket call failed.
    #[error("{what}: {source}")]
    Socket {
        /// The call.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn check(what: &'static str, rc: libc::c_int) -> Result<libc::c_int, ArpWatchError> {
    if rc < 0 { Err(ArpWatchError::Socket { what, source: std::io::Error::last_os_error() }) } else { Ok(rc) }
}

/// An ARP request frame: who has `target`, tell `sender_ip` (`sender_mac`).
#[must_use]
pub fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&sender_mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&sender_mac);
    f[28..32].copy_from_slice(&sender_ip.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender MAC of an ARP frame about `ip` (sender address `ip`), and
/// whether it is gratuitous; `None` for any other frame.
#[must_use]
pub fn sender_of(frame: &[u8], ip: Ipv4Addr) -> Option<([u8; 6], bool)> {
    if frame.len() < 42 || frame[12..14] != ETH_P_ARP.to_be_bytes() || frame[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    if frame[28..32] != ip.octets() {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[22..28]);
    Some((mac, frame[38..42] == ip.octets()))
}

impl ArpWatch {
    /// The time between two requests.
    pub const ROUND: Duration = Duration::from_millis(10);
    /// Answers kept at most.
    pub const MAX_ANSWERS: usize = 200_000;

    /// Starts watching who answers for `ip` on `ifname` (whose own address
    /// `own` is the requests' sender), in the calling thread's namespace.
    ///
    /// # Errors
    /// No such interface, or the socket cannot be set up.
    pub fn start(ifname: &str, own: Ipv4Addr, ip: Ipv4Addr) -> Result<ArpWatch, ArpWatchError> {
        let name = std::ffi::CString::new(ifname).map_err(|_| ArpWatchError::NoInterface(ifname.into()))?;
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(ArpWatchError::NoInterface(ifname.into()));
        }
        let proto = ETH_P_ARP.to_be();
        let raw = check("socket", unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::c_int::from(proto))
        })?;
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        check("bind", unsafe { libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), len) })?;
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 2_000 };
        check("SO_RCVTIMEO", unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        let mac = egret_runtime::ha::announce::hardware_address(&fd, ifindex)
            .map_err(|source| ArpWatchError::Socket { what: "SIOCGIFHWADDR", source })?;
        let frame = request(mac, own, ip);
        let (answers, dropped, stop) = (Arc::default(), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (a2, d2, s2) = (Arc::clone(&answers), Arc::clone(&dropped), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("egret-arpwatch".into())
            .spawn(move || watch(&fd, sll, &frame, mac, ip, &a2, &d2, &s2))
            .map_err(|source| ArpWatchError::Socket { what: "spawning the watch thread", source })?;
        Ok(ArpWatch { answers, dropped, stop, thread: Some(thread) })
    }

    /// The answers so far.
    #[must_use]
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Answers not kept (beyond [`ArpWatch::MAX_ANSWERS`]).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets the answers so far (between trials).
    pub fn clear(&self) {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "the thread's whole state, moved in once")]
fn watch(
    fd: &OwnedFd,
    to: libc::sockaddr_ll,
    frame: &[u8; 42],
    own_mac: [u8; 6],
    ip: Ipv4Addr,
    answers: &Mutex<Vec<Answer>>,
    dropped: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut round: u64 = 0;
    let mut next = Instant::now();
    let mut buf = [0u8; 256];
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let mut dest = to;
            dest.sll_halen = 6;
            dest.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            // a failed send is a lost round: the record shows it as silence
            let _ = unsafe {
                libc::sendto(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0, (&raw const dest).cast(), len)
            };
            round += 1;
            next += ArpWatch::ROUND;
        }
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        if let Some((mac, gratuitous)) = sender_of(&buf[..n], ip)
            && mac != own_mac
        {
            let mut v = answers.lock().unwrap_or_else(PoisonError::into_inner);
            if v.len() < ArpWatch::MAX_ANSWERS {
                v.push(Answer { at: Instant::now(), round: round.saturating_sub(1), mac, gratuitous });
            } else {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 150);

    fn answer(t0: Instant, ms: u64, round: u64, mac: u8) -> Answer {
        Answer { at: t0 + Duration::from_millis(ms), round, mac: [2, 0, 0, 0, 0, mac], gratuitous: false }
    }

    #[test]
    fn a_request_is_a_valid_arp_frame_and_its_answers_decode() {
        let f = request([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 51, 100, 1), IP);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "op request");
        assert_eq!(&f[38..42], &IP.octets());
        // the request's sender is not the watched address
        assert_eq!(sender_of(&f, IP), None);
        // a gratuitous ARP from the owner
        let garp = request([2, 0, 0, 0, 0, 9], IP, IP);
        assert_eq!(sender_of(&garp, IP), Some(([2, 0, 0, 0, 0, 9], true)));
        // a reply: sender IP the watched one, target the asker
        let mut reply = request([2, 0, 0, 0, 0, 9], IP, Ipv4Addr::new(198, 51, 100, 1));
        reply[21] = 2;
        assert_eq!(sender_of(&reply, IP), Some(([2, 0, 0, 0, 0, 9], false)));
        assert_eq!(sender_of(&reply[..41], IP), None, "short");
        let mut ip_frame = reply;
        ip_frame[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(sender_of(&ip_frame, IP), None, "not ARP");
    }

    #[test]
    fn one_mac_per_round_is_no_overlap_and_two_are_counted_as_one_event_per_run() {
        let t0 = Instant::now();
        // the new owner's announcement lands in the old one's last round: no overlap
        let garp = Answer { gratuitous: true, ..answer(t0, 12, 1, 2) };
        let clean = [answer(t0, 0, 0, 1), answer(t0, 10, 1, 1), garp, answer(t0, 25, 2, 2), answer(t0, 30, 3, 2)];
        let o = Overlap::of(&clean, ArpWatch::ROUND);
        assert_eq!((o.dual_rounds, o.events, o.longest), (0, 0, Duration::ZERO));
        assert_eq!(o.macs.len(), 2);
        let dual = [
            answer(t0, 0, 0, 1),
            answer(t0, 10, 1, 1),
            answer(t0, 12, 1, 2),
            answer(t0, 20, 2, 1),
            answer(t0, 27, 2, 2),
            answer(t0, 30, 3, 2),
            answer(t0, 50, 5, 2),
            answer(t0, 51, 5, 1),
        ];
        let o = Overlap::of(&dual, ArpWatch::ROUND);
        assert_eq!(o.dual_rounds, 3);
        assert_eq!(o.events, 2, "rounds 1-2 and round 5");
        assert_eq!(o.longest, Duration::from_millis(17), "10 ms (mac 1) to 27 ms (mac 2)");
    }
}

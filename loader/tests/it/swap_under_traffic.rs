//! Swap atomicity under traffic (privileged).
//!
//! A pod sends UDP datagrams with sequence numbers through its veth, where the
//! demo classifier runs at tcx ingress, while the loader swaps between two
//! generations 1,000 times (each swap builds a new generation: new maps, new
//! programs, new marker; then replaces the program of every link).
//!
//! Generation A passes D0 and D1 and drops D2; B passes D0 and D2 and drops D1.
//! Every passed datagram carries the tag compiled into the code and the tag
//! stored in the map entry that passed it. So each datagram's fate names
//! exactly one generation — D0 by its tags, D1 received ⇒ A and lost ⇒ B,
//! D2 received ⇒ B and lost ⇒ A — and a mixed state would be visible: a code
//! tag that differs from the map tag, a D1 stamped by B or a D2 stamped by A,
//! or a lost D0 (a table seen half-filled drops everything, and a packet that
//! both generations pass must never be lost).
//!
//! The sender is pinned to one CPU, so the veth hands every datagram to one
//! CPU's backlog and the classifier sees them in send order; the swapper waits,
//! after each swap, until a D0 sent after it has arrived. So the generation
//! seen along the send order must change exactly once per swap: a link that
//! flip-flopped, or a packet that saw an older generation after a newer one,
//! would add changes; a swap no packet saw would remove one.
//!
//! Traffic is bounded: the sender keeps at most `WINDOW` triplets in flight
//! (flow control on D0 arrivals), stops when the swaps are done, and never
//! sends more than `MAX_TRIPLETS` or for longer than `MAX_TIME`.

use egret_testkit::netns as common;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use egret_loader::{ApplyReport, Loader, LoaderConfig, PodTarget};

const SWAPS: usize = 1_000;
const WINDOW: u32 = 32;
const MAX_TRIPLETS: u32 = 3_000_000;
const MAX_TIME: Duration = Duration::from_secs(300);

/// Which generation a datagram's fate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    A,
    B,
}

/// Receives until the sender is done and the socket stayed quiet; counts D0 arrivals.
fn collect(sock: &UdpSocket, done: &AtomicBool, d0_arrivals: &AtomicU32) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    let mut quiet_since: Option<Instant> = None;
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                quiet_since = None;
                if let Some(seen) = Seen::parse(&buf[..n]) {
                    if seen.dest == 0 {
                        d0_arrivals.fetch_add(1, Ordering::Release);
                    }
                    out.push(seen);
                }
            }
            Err(_) => {
                if done.load(Ordering::Acquire) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        return out;
                    }
                }
            }
        }
    }
}

/// Sets every flag when dropped, so a panic in the swap loop stops the sender
/// and the receivers instead of leaving them running.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.0 {
            f.store(true, Ordering::Release);
        }
    }
}

#[test]
fn thousand_swaps_under_traffic_every_packet_sees_one_generation() {
    if !privileged("thousand_swaps_under_traffic_every_packet_sees_one_generation") {
        return;
    }
    let fs = Bpffs::new("swap");
    let topo = Topology::new("swap", 2);
    add_tunnel(&topo.node.name);
    let pod_ns = topo.pods[0].name.clone();
    let (gen_a, gen_b) = (demo("n1", TAG_A), demo("n1", TAG_B));

    let entered = topo.node.enter();
    let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");
    for v in &topo.veths {
        loader.attach_pod(&PodTarget::Interface(v.clone())).expect("attach pod");
    }
    loader.apply(&gen_a).expect("apply A");
    // one socket for all three destinations (the payload names the destination),
    // so in-flight datagrams are bounded by one window
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 8 << 20).expect("SO_RCVBUFFORCE");
    let sending_done = AtomicBool::new(false);
    let swapping_done = AtomicBool::new(false);
    let d0_arrivals = AtomicU32::new(0);
    let sent = AtomicU32::new(0);
    let stalled = Mutex::new(None::<u32>);
    let mut swap_times = Vec::with_capacity(SWAPS);

    let seen: Vec<Seen> = std::thread::scope(|s| {
        let receiver = s.spawn(|| collect(&sock, &sending_done, &d0_arrivals));
        let sender = s.spawn(|| {
            // one CPU: the veth hands each datagram to that CPU's backlog, so the
            // classifier sees them in send order
            let allowed = rustix::thread::sched_getaffinity(None).expect("affinity");
            let cpu = (0..rustix::thread::CpuSet::MAX_CPU).find(|c| allowed.is_set(*c)).expect("some CPU");
            let mut one = rustix::thread::CpuSet::new();
            one.set(cpu);
            rustix::thread::sched_setaffinity(None, &one).expect("pin the sender to one CPU");
            let _in = Entered::new(&pod_ns);
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
            let start = Instant::now();
            let mut seq = 0;
            while seq < MAX_TRIPLETS && start.elapsed() < MAX_TIME && !swapping_done.load(Ordering::Acquire) {
                let wait = Instant::now();
                while seq.saturating_sub(d0_arrivals.load(Ordering::Acquire)) > WINDOW {
                    if wait.elapsed() > Duration::from_secs(2) {
                        *stalled.lock().expect("lock") = Some(seq);
                        break;
                    }
                    std::thread::yield_now();
                }
                for (i, d) in DESTS.iter().enumerate() {
                    sock.send_to(&payload_to(seq, i as u8), (Ipv4Addr::from(*d), PORT)).expect("send");
                }
                seq += 1;
                sent.store(seq, Ordering::Release);
            }
        });
        let flags = [&swapping_done, &sending_done];
        let _stop = StopOnDrop(&flags);
        // let traffic start, then swap B, A, B, ... under it
        let wait = Instant::now();
        while sent.load(Ordering::Acquire) < 1000 {
            assert!(wait.elapsed() < Duration::from_secs(20), "traffic does not start");
            std::thread::yield_now();
        }
        for i in 0..SWAPS {
            let next = if i % 2 == 0 { &gen_b } else { &gen_a };
            match loader.apply(next).expect("swap") {
                ApplyReport::Swapped { replaced, timings, .. } => {
                    assert_eq!(replaced, 3, "two pod veths and the tunnel");
                    swap_times.push(timings.to_swapped());
                }
                r @ ApplyReport::Unchanged { .. } => panic!("alternating artifacts never repeat: {r:?}"),
            }
            // pace: before the next swap, a D0 sent after this one returned has
            // been classified (D0 arrive in order and none is lost, so the
            // (s+2)-th arrival is the datagram with sequence s+1)
            let after = sent.load(Ordering::Acquire);
            let wait = Instant::now();
            while d0_arrivals.load(Ordering::Acquire) < after + 2 {
                assert!(wait.elapsed() < Duration::from_secs(10), "traffic stopped after swap {i}");
                std::thread::yield_now();
            }
        }
        swapping_done.store(true, Ordering::Release);
        sender.join().expect("sender");
        sending_done.store(true, Ordering::Release);
        receiver.join().expect("receiver")
    });
    let sent = sent.load(Ordering::Acquire);
    assert_eq!(*stalled.lock().expect("lock"), None, "flow control stalled: D0 datagrams were lost");

    // index every datagram by sequence number
    let mut fate: Vec<[Option<Fate>; 3]> = vec![[None; 3]; sent as usize];
    let mut got = vec![[false; 3]; sent as usize];
    for s in &seen {
        let d = usize::from(s.dest);
        assert!(s.seq < sent && d < 3, "unknown datagram {s:?}");
        assert!(!std::mem::replace(&mut got[s.seq as usize][d], true), "D{d} #{} received twice", s.seq);
        assert_eq!(s.code_tag, s.map_tag, "D{d} #{}: code of one generation with the maps of another", s.seq);
        let f = match s.code_tag {
            TAG_A => Fate::A,
            TAG_B => Fate::B,
            other => panic!("D{d} #{}: unknown tag {other:#x}", s.seq),
        };
        match (d, f) {
            (0, _) | (1, Fate::A) | (2, Fate::B) => {}
            _ => panic!("D{d} #{} passed by {f:?}, which drops D{d}", s.seq),
        }
        fate[s.seq as usize][d] = Some(f);
    }
    for (seq, received) in got.iter().enumerate() {
        for d in 0..3 {
            if !received[d] {
                // a loss names the generation that drops it; D0 both pass
                fate[seq][d] = Some(match d {
                    0 => panic!("D0 #{seq} lost: both generations pass it"),
                    1 => Fate::B,
                    _ => Fate::A,
                });
            }
        }
    }
    // the fates in send order: generation changes need a swap in between
    let order: Vec<Fate> = fate.iter().flat_map(|t| t.iter().map(|f| f.unwrap_or(Fate::A))).collect();
    let transitions = order.windows(2).filter(|w| w[0] != w[1]).count();
    let a = order.iter().filter(|f| **f == Fate::A).count();
    swap_times.sort();
    let median = swap_times[swap_times.len() / 2];
    println!(
        "{SWAPS} swaps, {sent} triplets ({} datagrams): {a} fates A, {} fates B, {transitions} generation changes \
         in send order; swap to all links swapped: median {median:?}, max {:?}",
        order.len(),
        order.len() - a,
        swap_times.last().copied().unwrap_or_default()
    );
    assert!(a > 0 && a < order.len(), "both generations served traffic");
    // traffic crossed every swap, and the generation seen in send order changes
    // only at swaps: exactly one change per swap
    assert_eq!(transitions, SWAPS, "generation changes in send order");

    loader.uninstall().expect("uninstall");
    assert_eq!(fs.pins(), 0, "no pins left");
    drop(sock);
    drop(entered);
    let names: Vec<String> =
        std::iter::once(topo.node.name.clone()).chain(topo.pods.iter().map(|p| p.name.clone())).collect();
    let mount = fs.mount_point().to_path_buf();
    drop(topo);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)), "namespaces left");
    assert!(!mounted(&mount), "bpffs left mounted");
}

//! The prober against real BPF hash maps (privileged): `egret_probe_rx` and
//! `egret_gw_live` created by the kernel and pinned as state maps under a
//! loader root on a private bpffs, the prober stepped by hand with a
//! synthetic clock, inside a network namespace of the test's own. A
//! "gateway" socket on 127.0.0.1 plays the datapath: for each probe it
//! receives it writes `egret_probe_rx` as `egret_tunnel_in` does on a reply;
//! 127.0.0.2 never answers.
//!
//! Checked: missing pins are no error and nothing is judged; nothing is
//! written before the first targets; an earlier agent's entries are adopted
//! (down targets) or deleted (others), and its replies ignored; a silent
//! gateway gets `GL_F_DOWN` after exactly 3 missed ticks; an answering one
//! that stops is down after 3 and cleared only after the 10-tick hold-down;
//! a recreated map is rewritten at the next tick; Kubernetes' not-Ready is
//! written regardless of answers; a removed target's entries are deleted
//! (`egret_gw_live` at once, `egret_probe_rx` at the next full rewrite); the
//! threaded prober probes from the namespace it was started in. The
//! bpffs mount (and with it every pin) and the namespace are gone after.

use egret_testkit::netns as common;

use egret_testkit::pinned_maps;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use common::*;
use egret_bpf::templates::probe::{Kind, Probe, ProbeRx};
use egret_bpf::templates::{GatewayLive, GatewaysDown};
use egret_loader::{PinLayout, StateMap};
use egret_runtime::ha::liveness::State;
use egret_runtime::ha::probe::{ErrorCounts, Prober, ProberConfig, Probing};

const ANSWERS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const SILENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const STALE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
const INTERVAL_NS: u64 = 100_000_000;

/// The datapath's side of the test.
struct Datapath {
    layout: PinLayout,
    gateway: UdpSocket,
    /// Whether 127.0.0.1 answers.
    answering: bool,
}

impl Datapath {
    fn map(&self, def: &egret_bpf::MapDef) -> StateMap {
        StateMap::open(&self.layout, def).expect("opens").expect("pinned")
    }

    /// Reads every probe that reached the gateway socket and, while
    /// answering (and pinned), records its reply in `egret_probe_rx` 250 µs
    /// after it was sent.
    fn answer(&self) -> usize {
        let mut buf = [0u8; 256];
        let mut n = 0;
        while let Ok((len, _)) = self.gateway.recv_from(&mut buf) {
            let p = Probe::from_datagram(&buf[..len]).expect("a probe");
            assert_eq!(p.kind, Kind::Request);
            n += 1;
            // without a generation there is no egret_tunnel_in to record replies
            let probe_rx = StateMap::open(&self.layout, &ProbeRx::map_def()).expect("opens");
            if let (true, Some(m)) = (self.answering, probe_rx) {
                let rx = ProbeRx { seq: p.seq, sent_ns: p.sent_ns, recv_ns: p.sent_ns + 250_000 };
                m.set(&ProbeRx::key(ANSWERS), &rx.to_bytes()).expect("record reply");
            }
        }
        n
    }

    /// `egret_gw_live` as the classifier reads it: gateway → down.
    /// `egret_gw_down[0]`.
    fn down_count(&self) -> u32 {
        let v = self.map(&GatewaysDown::map_def()).get(&GatewaysDown::KEY).expect("reads").expect("an array entry");
        GatewaysDown::from_bytes(&v).expect("decodes").count
    }

    fn live(&self) -> BTreeMap<IpAddr, bool> {
        let m = self.map(&GatewayLive::map_def());
        m.keys()
            .expect("keys")
            .iter()
            .map(|k| {
                let v = m.get(k).expect("lookup").expect("present");
                let g = GatewayLive::from_bytes(k, &v).expect("decodes");
                (g.gateway, g.down)
            })
            .collect()
    }
}

fn down(gws: &[IpAddr]) -> BTreeMap<IpAddr, bool> {
    gws.iter().map(|g| (*g, true)).collect()
}

#[test]
fn the_prober_writes_egret_gw_live_from_replies_in_real_maps() {
    if !privileged("the_prober_writes_egret_gw_live_from_replies_in_real_maps") {
        return;
    }
    let fs = Bpffs::new("hp");
    let ns = Netns::new("hp");
    let ns_name = ns.name.clone();
    let mount = fs.mount_point().to_path_buf();
    {
        let _inside = ns.enter();
        let layout = PinLayout::new(fs.root());
        let gateway = UdpSocket::bind((ANSWERS, 0)).expect("bind the gateway socket");
        gateway.set_nonblocking(true).expect("nonblocking");
        let mut config = ProberConfig::new(fs.root(), Ipv4Addr::new(192, 0, 2, 11).into());
        config.port = gateway.local_addr().expect("addr").port();
        let mut p = Probing::new(config).expect("socket");
        let mut dp = Datapath { layout: layout.clone(), gateway, answering: true };
        let mut now = 5_000_000_000u64;
        let mut tick = |p: &mut Probing, dp: &Datapath| {
            now += INTERVAL_NS;
            let changes = p.tick(now);
            dp.answer();
            changes
        };

        // no generation yet: nothing pinned, no error, nothing judged
        p.set_targets(BTreeSet::from([ANSWERS, SILENT]));
        for _ in 0..5 {
            assert_eq!(tick(&mut p, &dp), []);
        }
        assert_eq!(p.status().errors, ErrorCounts::default(), "{:?}", p.status());
        assert!(p.status().gateways.values().all(|g| g.state == State::Unknown));
        drop(p);

        // the maps appear, holding an earlier agent's entries: SILENT down
        // (adopted), STALE down (not a target: deleted), and a reply to
        // ANSWERS with a big seq sent before this prober started (ignored)
        std::fs::create_dir_all(layout.state_dir()).expect("state dir");
        pinned_maps::create_pinned(
            &layout.state_dir(),
            &[GatewayLive::map_def(), ProbeRx::map_def(), GatewaysDown::map_def()],
        );
        for gw in [SILENT, STALE] {
            let e = GatewayLive { gateway: gw, down: true };
            dp.map(&GatewayLive::map_def()).set(&e.key(), &e.value()).expect("seed");
        }
        let old = ProbeRx { seq: 4_000_000, sent_ns: 1_000, recv_ns: 2_000 };
        dp.map(&ProbeRx::map_def()).set(&ProbeRx::key(ANSWERS), &old.to_bytes()).expect("seed");

        let mut config = ProberConfig::new(fs.root(), Ipv4Addr::new(192, 0, 2, 11).into());
        config.port = dp.gateway.local_addr().expect("addr").port();
        let mut p = Probing::new(config).expect("socket");
        // before the first targets nothing is written
        assert_eq!(tick(&mut p, &dp), []);
        assert_eq!(dp.live(), down(&[SILENT, STALE]));
        // ANSWERS stops answering before the first probe: the stale reply alone
        // must not make it up
        dp.answering = false;
        p.set_targets(BTreeSet::from([ANSWERS, SILENT]));
        assert_eq!(tick(&mut p, &dp), []);
        assert_eq!(dp.live(), down(&[SILENT]), "the first write is a full rewrite: STALE goes, SILENT adopted");
        assert_eq!(p.status().gateways[&SILENT].state, State::Down);
        assert_eq!(tick(&mut p, &dp), []);
        assert_eq!(tick(&mut p, &dp), []);
        assert_eq!(p.status().gateways[&ANSWERS].misses, 2);
        assert_eq!(p.status().gateways[&ANSWERS].rtt.count, 0, "the stale reply is no RTT sample");
        let changes = tick(&mut p, &dp);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].0, changes[0].1.to), (ANSWERS, State::Down), "down after exactly 3 misses");
        assert_eq!(dp.live(), down(&[ANSWERS, SILENT]));
        assert_eq!(dp.down_count(), 2, "egret_gw_down counts the down entries (the classifier's fast path)");

        // it answers again: down through 9 answered ticks, up at the 10th
        dp.answering = true;
        assert_eq!(tick(&mut p, &dp), [], "this tick sends the first probe it answers");
        for i in 1..10 {
            assert_eq!(tick(&mut p, &dp), [], "answered tick {i}");
            assert_eq!(dp.live(), down(&[ANSWERS, SILENT]), "held down after {i} answers");
        }
        let changes = tick(&mut p, &dp);
        assert_eq!((changes.len(), changes[0].1.to), (1, State::Up), "{changes:?}");
        assert_eq!(dp.live(), down(&[SILENT]), "cleared after the hold-down");
        assert_eq!(dp.down_count(), 1, "and the count follows");
        let g = &p.status().gateways[&ANSWERS];
        assert_eq!((g.went_down, g.went_up, g.rtt.count), (1, 1, 10));
        assert_eq!(g.last_rtt, Some(std::time::Duration::from_micros(250)));

        // the silent gateway, never answering, stays down; a fresh prober
        // (nothing adopted) takes exactly 3 ticks to mark it
        drop(p);
        let e = GatewayLive { gateway: SILENT, down: true };
        dp.map(&GatewayLive::map_def()).remove(&e.key()).expect("clear");
        let mut config = ProberConfig::new(fs.root(), Ipv4Addr::new(192, 0, 2, 11).into());
        config.port = dp.gateway.local_addr().expect("addr").port();
        let mut p = Probing::new(config).expect("socket");
        p.set_targets(BTreeSet::from([ANSWERS, SILENT]));
        for i in 0..3 {
            tick(&mut p, &dp);
            assert_eq!(dp.live(), down(&[]), "not down after {i} missed ticks");
        }
        let changes = tick(&mut p, &dp);
        assert!(changes.iter().any(|(g, t)| *g == SILENT && t.to == State::Down), "{changes:?}");
        assert_eq!(dp.live(), down(&[SILENT]), "GL_F_DOWN after the third missed tick");

        // a swap recreated egret_gw_live: rewritten at the next tick
        std::fs::remove_file(layout.state_map(egret_bpf::templates::map::GW_LIVE)).expect("unpin");
        pinned_maps::create_pinned(&layout.state_dir(), &[GatewayLive::map_def()]);
        assert_eq!(dp.live(), down(&[]));
        tick(&mut p, &dp);
        assert_eq!(dp.live(), down(&[SILENT]), "the new map gets the down gateways");

        // an entry written behind the prober's back lasts until the next full rewrite
        let rogue = GatewayLive { gateway: ANSWERS, down: true };
        dp.map(&GatewayLive::map_def()).set(&rogue.key(), &rogue.value()).expect("rogue write");
        let rewrites = p.status().full_rewrites;
        while p.status().full_rewrites == rewrites {
            tick(&mut p, &dp);
            assert!(p.status().ticks < 1_000, "a full rewrite comes");
        }
        assert_eq!(dp.live(), down(&[SILENT]));

        // Kubernetes says ANSWERS is not Ready: down although it answers
        p.set_external_down(BTreeSet::from([ANSWERS]));
        tick(&mut p, &dp);
        assert_eq!(dp.live(), down(&[ANSWERS, SILENT]));
        p.set_external_down(BTreeSet::new());
        tick(&mut p, &dp);
        assert_eq!(dp.live(), down(&[SILENT]), "Ready again, and its probes were answered all along");

        // SILENT is no longer a gateway of this node: its entry goes
        p.set_targets(BTreeSet::from([ANSWERS]));
        tick(&mut p, &dp);
        assert_eq!(dp.live(), down(&[]));
        // and ANSWERS neither: its recorded reply goes at the next full rewrite
        p.set_targets(BTreeSet::new());
        let rx = dp.map(&ProbeRx::map_def());
        assert!(rx.get(&ProbeRx::key(ANSWERS)).expect("lookup").is_some());
        let rewrites = p.status().full_rewrites;
        while p.status().full_rewrites == rewrites {
            tick(&mut p, &dp);
            assert!(p.status().ticks < 1_000, "a full rewrite comes");
        }
        assert_eq!(rx.keys().expect("keys"), Vec::<Vec<u8>>::new(), "egret_probe_rx keeps only targets");
        assert_eq!(p.status().errors, ErrorCounts::default(), "{:?}", p.status());
        drop(p);

        // the threaded prober, started here, probes from this namespace: the
        // gateway socket exists only in it
        dp.gateway.set_nonblocking(false).expect("blocking");
        dp.gateway.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
        let mut config = ProberConfig::new(fs.root(), Ipv4Addr::new(192, 0, 2, 11).into());
        config.port = dp.gateway.local_addr().expect("addr").port();
        config.liveness.interval = std::time::Duration::from_millis(5);
        let prober = Prober::start(config).expect("starts");
        prober.set_targets(BTreeSet::from([ANSWERS]));
        let mut buf = [0u8; 256];
        let (len, _) = dp.gateway.recv_from(&mut buf).expect("a probe from the prober's thread");
        let first = Probe::from_datagram(&buf[..len]).map(|p| (p.kind, p.seq));
        assert_eq!(first, Some((Kind::Request, 1)), "the thread's first probe (the stepped ones were all read)");
        drop(prober);
    }
    drop(ns);
    drop(fs);
    assert!(!netns_exists(&ns_name), "the namespace is gone");
    assert!(!mounted(&mount) && !mount.exists(), "the bpffs mount is gone with every pin");
}

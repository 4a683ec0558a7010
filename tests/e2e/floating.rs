//! A floating egress IP through the API server (issue #14, "Must show"):
//! the three gateways are candidates of [`FLOATING_IP`]; every node runs
//! `egret-agent --kube` against the in-process API server, which serves
//! the Leases. The owner is failed in each way ([`Failure::ALL`]) while a
//! pod streams UDP and writes on an established TCP connection; the
//! server's side says when traffic came back, whether the connection
//! survived, and (an ARP watch on the external segment) whether two MACs
//! ever answered for the IP at once. Then the owner's agent is killed
//! (`kill -9`: no failover), and the owner is partitioned from the other
//! candidates while all still reach the API server (one owner at the end).
//!
//! The benchmark (`egret-bench failover`) runs the same trials 20 times
//! each and reports the figures; this test runs each once and asserts.

use std::path::Path;
use std::time::{Duration, Instant};

use egret_kube::lease::lease_name;
use egret_testkit::arpwatch::{ArpWatch, Overlap};
use egret_testkit::failover::Failure;
use egret_testkit::minicluster::{FLOATING_IP, MiniCluster, Source};

use super::{AGENT, Leftovers, privileged};

/// [`MiniCluster::floating_settled`] for `egress-1`, with the agents'
/// output when it does not settle.
fn settled(c: &MiniCluster) -> &'static str {
    c.floating_settled("egress-1").unwrap_or_else(|e| {
        for n in ["gateway-1", "gateway-2", "gateway-3", "worker-1"] {
            eprintln!("{n}: {:#?}", c.agent_output(n));
        }
        panic!("{e}")
    })
}

#[test]
fn a_floating_egress_ip_moves_to_a_live_candidate_and_keeps_its_connections() {
    if !privileged("a_floating_egress_ip_moves_to_a_live_candidate_and_keeps_its_connections") {
        return;
    }
    let mut c = MiniCluster::prepare("e2efl").expect("the mini-cluster's network");
    let leftovers = Leftovers::of(&c);
    let served = crate::kubecluster::serve(&c, "e2efl").expect("the API server");
    served.apply_yaml(&MiniCluster::floating_policy());
    c.start_agents(Path::new(AGENT), Source::Kube { kubeconfig: &served.kubeconfig })
        .expect("every agent serves its node from the API server");
    let first = settled(&c);
    let key = format!("{}/{}", egret_kube::lease::DEFAULT_NAMESPACE, lease_name(FLOATING_IP.into()));
    let lease = served.server.get(crate::apiserver::Served::Leases, &key).expect("the floating IP's Lease");
    assert_eq!(lease["spec"]["holderIdentity"], first, "the holder of the Lease has the address");

    let arp = c.arp_watch(FLOATING_IP).expect("the ARP watch");
    let mut failed = Vec::new();
    for failure in Failure::ALL {
        arp.clear();
        let t = c.floating_trial("egress-1", failure).expect("the trial runs");
        failed.push(t.owner_before.clone());
        let overlap = Overlap::of(&arp.answers(), ArpWatch::ROUND);
        println!(
            "{}: {} failed, {:?} took over; detect {:?}, first packet after {:?}, UDP stall {:?}, TCP stall {:?} (survived: {}), {} received, {} leaked, ARP: {} MACs, {} dual-owner events (longest {:?})",
            failure.name(),
            t.owner_before,
            t.owner_after,
            t.detect,
            t.recover,
            t.udp_stall,
            t.tcp_stall,
            t.tcp_survived,
            t.received,
            t.leaked,
            overlap.macs.len(),
            overlap.events,
            overlap.longest,
        );
        assert!(t.detect.is_some(), "{failure:?}: no candidate marked {} down: {t:?}", t.owner_before);
        assert!(t.recover.is_some(), "{failure:?}: no datagram after the failure reached the server: {t:?}");
        let after = t.owner_after.clone().unwrap_or_else(|| panic!("{failure:?}: nobody holds the IP: {t:?}"));
        assert_ne!(after, t.owner_before, "{failure:?}: another candidate holds the IP: {t:?}");
        assert_eq!(t.leaked, 0, "{failure:?}: datagrams from another source than {FLOATING_IP}: {t:?}");
        assert!(t.tcp_survived, "{failure:?}: the TCP connection did not survive: {t:?}");
        assert!(overlap.macs.len() >= 2, "{failure:?}: the watch saw the new owner answer: {overlap:?}");
        assert_eq!(overlap.events, 0, "{failure:?}: two MACs answered for {FLOATING_IP} at once: {overlap:?}");
    }
    // an Event per change of owner, from the new owner: a takeover from a
    // holder its probes saw down, or an acquisition of a Lease released by
    // an owner whose own datapath failed; and one from each old owner
    let events = served.server.events();
    let gained = events.iter().filter(|e| e["reason"] == "FloatingIPTakeover" || e["reason"] == "FloatingIPAcquired");
    assert!(gained.count() > Failure::ALL.len(), "the first owner's and one per failover: {events:#?}");
    // and each failed owner's failover, from one node that watches it
    for node in &failed {
        let down = events
            .iter()
            .filter(|e| {
                e["reason"] == "GatewayDown" && e["regarding"]["kind"] == "Node" && e["regarding"]["name"] == *node
            })
            .count();
        assert!(down >= 1, "a GatewayDown Event for {node}: {events:#?}");
    }
    let lost = events.iter().filter(|e| e["reason"] == "FloatingIPLost").count();
    assert!(lost >= Failure::ALL.len() - 1, "the old owners that lived to say it: {events:#?}");

    // the owner's agent killed (kill -9) for longer than the Lease lasts:
    // its datapath answers on, nobody takes over, nothing is lost
    let owner = settled(&c);
    let k = c.agent_kill_trial("egress-1", Duration::from_millis(3000)).expect("the trial runs");
    println!(
        "agent killed on {}: {} sent, {} received, {} via another address",
        k.gateway, k.sent, k.received, k.moved
    );
    assert_eq!(k.gateway, owner);
    assert!(!k.marked_down, "killing {owner}'s agent made worker-1 mark it down: {k:?}");
    assert_eq!((k.moved, k.received), (0, k.sent), "no datagram lost or moved while the agent was down: {k:?}");
    assert_eq!(c.holders(FLOATING_IP).expect("holders"), vec![owner], "the restarted agent re-adopted its Lease");

    // a partition between the owner and the other candidates, all reaching
    // the API server: one owner at the end, no ping-pong
    arp.clear();
    let p = c.partition_trial(Duration::from_secs(4)).expect("the partition runs");
    let overlap = Overlap::of(&arp.answers(), ArpWatch::ROUND);
    println!(
        "partition of {}: holders at the end {:?}, {} changes, longest sampled dual ownership {:?}; ARP: {} dual-owner events (longest {:?})",
        p.owner_before, p.holders_at_end, p.changes, p.longest_dual, overlap.events, overlap.longest
    );
    assert_eq!(p.holders_at_end.len(), 1, "exactly one owner after the partition: {p:?}");
    // the cut-off owner may withdraw and re-add before it loses the Lease;
    // the address never goes back to it once another node held it
    assert!(p.owners.len() <= 2, "no ping-pong: {p:?}");

    // the Lease edited by hand into nonsense (a zero duration): a Warning
    // Event, the Lease written whole again by a candidate, one owner, and
    // traffic through the floating IP
    let mut edited = served.server.get(crate::apiserver::Served::Leases, &key).expect("the Lease");
    edited["spec"]["leaseDurationSeconds"] = serde_json::json!(0);
    served.server.apply(crate::apiserver::Served::Leases, edited);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let said = served.server.events().iter().any(|e| e["reason"] == "FloatingIPLeaseInvalid");
        let lease = served.server.get(crate::apiserver::Served::Leases, &key).expect("the Lease");
        let healed = lease["spec"]["leaseDurationSeconds"].as_i64().is_some_and(|d| d > 0);
        if said && healed {
            break;
        }
        assert!(Instant::now() < deadline, "Event {said}, rewritten {healed}: {lease:#} {:#?}", served.server.events());
        std::thread::sleep(Duration::from_millis(50));
    }
    settled(&c);

    let status_files: Vec<std::path::PathBuf> = ["gateway-1", "gateway-2", "gateway-3"]
        .iter()
        .map(|n| egret_runtime::ha::ownership::status_file(&c.bpffs_root(n)))
        .collect();
    assert!(status_files.iter().all(|f| f.exists()), "the controllers wrote their status: {status_files:?}");
    drop(arp);
    drop(c);
    drop(served);
    for f in &status_files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    leftovers.assert_gone();
}

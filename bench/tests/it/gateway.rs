//! `egret-bench gateway --family v6`, short: the three IPv6 datapaths on
//! the dual-stack mini-cluster carry the pod's datagrams to the server, and
//! nothing of the clusters is left behind. The benchmark itself refuses to
//! report unless each datapath's server saw a UDP request from the egress
//! IPv6 and its answer came back to the pod, and unless egret's gateway
//! translated what arrived from egret's cluster. Needs root, bpffs, `ip`,
//! `nft` and the `egret-agent` binary of the same build (`cargo build
//! --release -p egret-runtime`; `cargo test --workspace` builds it).

use std::path::PathBuf;
use std::time::Duration;

use egret_bench::gateway::{self, Options};
use egret_lang::net::Family;
use egret_testkit::{minicluster, privileged};

/// `egret-agent` next to this test binary's profile directory (`target/release/deps/it-…` → `target/release/`).
fn agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(|deps| deps.parent()).map(|p| p.join("egret-agent")).unwrap_or_default()
}

/// Namespaces and mounts whose names carry this process's mini-cluster prefixes.
fn leftovers() -> Vec<String> {
    let pid = std::process::id() % 100_000;
    let prefixes: Vec<String> = ["bge", "bgk", "bgr"].iter().map(|t| format!("egret-{t}-{pid}x")).collect();
    let netns = minicluster::run("ip", &["netns", "list"], None).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    netns
        .lines()
        .chain(mounts.lines())
        .filter(|l| prefixes.iter().any(|p| l.contains(p.as_str())))
        .map(str::to_owned)
        .collect()
}

#[test]
fn gateway_v6_translates_to_the_egress_ipv6_on_every_datapath() {
    let test = "gateway_v6_translates_to_the_egress_ipv6_on_every_datapath";
    if !privileged::privileged(test) || !privileged::gate(test, minicluster::missing_tools()) {
        return;
    }
    let agent = agent();
    let missing = (!agent.exists())
        .then(|| format!("no egret-agent at {} (cargo build --release -p egret-runtime)", agent.display()));
    if !privileged::gate(test, missing) {
        return;
    }
    let opts = Options {
        agent,
        flows: vec![1, 8],
        payload: 64,
        duration: Duration::from_millis(300),
        max_packets: 20_000,
        trials: 1,
        family: Family::V6,
    };
    // run() fails if a datapath's server saw another source than the egress
    // IPv6, or egret's gateway did not translate what arrived
    let report = gateway::run(&opts).expect("the IPv6 gateway benchmark runs");
    assert_eq!(report.rows.iter().map(|r| r.flows).collect::<Vec<_>>(), vec![1, 8]);
    for r in &report.rows {
        let sides = [
            ("egret", &r.egret),
            ("kernel NAT", &r.kernel_nat),
            ("routed", &r.kernel_nat_routed),
            ("egret with the flow log", &r.egret_flow_log),
        ];
        for (name, s) in sides {
            assert!(s.sent > 0 && s.median_pps > 0.0, "{name}, {} flows: nothing measured: {s:?}", r.flows);
            // frames counted at the server's interface: the datagrams, plus a
            // few neighbour discovery frames; at most a few drops (a flood)
            assert!(
                s.arrived * 10 >= s.sent * 9,
                "{name}, {} flows: {} of {} datagrams arrived",
                r.flows,
                s.arrived,
                s.sent
            );
        }
        assert!(r.ratio.is_finite() && r.ratio > 0.0 && r.ratio_routed.is_finite(), "{r:?}");
        assert!(r.flow_log_cost.is_finite(), "{r:?}");
    }
    // new connections: each datagram a new translation, each a flow event
    // (written or counted dropped), every one arrived
    let n = &report.new_connections;
    assert_eq!(n.events, u64::from(gateway::NEW_CONNECTIONS), "one trial: {n:?}");
    assert!(n.events_dropped <= n.events);
    for s in [&n.egret, &n.egret_flow_log] {
        assert_eq!(s.sent, u64::from(gateway::NEW_CONNECTIONS), "{n:?}");
        assert!(s.arrived >= s.sent, "{n:?}");
    }
    let table = gateway::render(&opts, &report);
    assert!(table.starts_with("gateway throughput, IPv6, "), "{table}");
    assert_eq!(leftovers(), Vec::<String>::new(), "namespaces or mounts left behind");
}

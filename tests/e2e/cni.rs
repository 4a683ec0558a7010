//! `egret-cni` on the mini-cluster (issue #17, "Must show"), through the
//! API server (`egret_testkit::kubecluster`): worker-1's agent serves a CNI
//! socket (`egret_testkit::cni::CniAgent`), pods are created as a runtime
//! creates them (`egret_testkit::cni`'s module doc).
//!
//! - The leak window, side by side: `EGRET_E2E_CNI_PODS` (default 100)
//!   selected pods created on worker-1 with the watch alone, then as many
//!   with `egret-cni` at `ADD`; each sends one UDP datagram to the external
//!   server the moment its creation returns. With the plugin no datagram
//!   reaches the server from an address other than the egress IP; without
//!   it, the number that did is printed (the benchmark `egret-bench cni`
//!   records both in docs/PERFORMANCE.md, with the `ADD` latency).
//! - Bad input to the plugin against the real agent: an error object, and
//!   the node's generation and attachments as they were.
//! - The agent down: `ADD` of a pod a policy could select fails closed
//!   naming the socket; `ADD` of a pod in a namespace no policy selects
//!   succeeds.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use egret_bpf::artifact::AttachPoint;
use egret_loader::inspect;
use egret_testkit::cni::{
    CniAgent, CniCluster, PodToCreate, Sandboxes, plugin_binary, plugin_conf, plugin_env, quantile, run_plugin, sandbox,
};
use egret_testkit::minicluster::MiniCluster;

use super::{AGENT, Leftovers, privileged};

/// The mini-cluster through the API server, worker-1's agent serving a CNI
/// socket; afterwards nothing of it is left.
fn cluster(tag: &str, test: impl FnOnce(&MiniCluster, &crate::kubecluster::Served, &mut CniAgent)) {
    let plugin = plugin_binary();
    assert!(plugin.exists(), "no egret-cni at {} (cargo build --release -p egret-cni)", plugin.display());
    let mut cc = CniCluster::start(tag, Path::new(AGENT)).expect("the mini-cluster with a CNI socket on worker-1");
    let leftovers = Leftovers::of(&cc.cluster);
    let socket_dir = cc.agent.socket().parent().expect("dir").to_path_buf();
    test(&cc.cluster, &cc.served, &mut cc.agent);
    let kubeconfig = cc.served.kubeconfig.clone();
    drop(cc);
    assert!(!socket_dir.exists(), "the socket's directory is removed");
    assert!(!kubeconfig.exists());
    leftovers.assert_gone();
}

/// worker-1's running generation and how many pod veths it has attached
/// (by count: the test process's namespace cannot name them).
fn worker1(c: &MiniCluster) -> (Option<egret_loader::Generation>, usize) {
    let s = inspect::status(&c.bpffs_root("worker-1")).expect("status");
    (s.running, s.attachments.iter().filter(|a| a.attach == AttachPoint::PodVethIngress).count())
}

#[test]
fn cni_closes_the_leak_window_side_by_side_with_the_watch_alone() {
    if !privileged("cni_closes_the_leak_window_side_by_side_with_the_watch_alone") {
        return;
    }
    let pods: usize = std::env::var("EGRET_E2E_CNI_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    assert!((1..=120).contains(&pods), "EGRET_E2E_CNI_PODS: 1 to 120 (two trials share worker-1's /24)");
    let plugin = plugin_binary();
    assert!(plugin.exists(), "no egret-cni at {} (cargo build --release -p egret-cni)", plugin.display());
    let cc = CniCluster::start("e2ecni", Path::new(AGENT)).expect("the mini-cluster with a CNI socket on worker-1");
    let leftovers = Leftovers::of(&cc.cluster);
    {
        let c = &cc.cluster;
        let (without, with) = cc.side_by_side(&plugin, pods).expect("the trials run");
        for r in [&without, &with] {
            println!(
                "{:<15} {} pods: first datagrams {} from the egress IP, {} from another address (leaked), {} lost \
                 ({} dropped by gateway-1 as from a source it did not know yet); a second datagram a second later: \
                 {} from the egress IP",
                if r.plugin { "with egret-cni:" } else { "watch alone:" },
                r.pods,
                r.via_egress,
                r.leaked.len(),
                r.lost,
                r.dropped_at_gateway,
                r.later_via_egress,
            );
            assert_eq!(r.via_egress + r.leaked.len() + r.lost, pods, "every pod accounted for");
            assert_eq!(r.later_via_egress, pods, "every pod under its policy by then");
        }
        println!(
            "ADD with egret-cni over {pods} pods: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            quantile(&with.add, 0.5).as_secs_f64() * 1e3,
            quantile(&with.add, 0.99).as_secs_f64() * 1e3,
            quantile(&with.add, 1.0).as_secs_f64() * 1e3,
        );
        assert!(with.leaked.is_empty(), "with egret-cni, first packets left from other addresses: {:?}", with.leaked);
        assert_eq!(with.add.len(), pods);
        // every leak of the watch alone came from worker-1's own address (its masquerade)
        let worker = IpAddr::V4(egret_testkit::minicluster::node("worker-1").address);
        assert!(without.leaked.iter().all(|(_, s)| *s == worker), "{:?}", without.leaked);
        assert!(
            (0..pods).all(|i| ["wl", "cn"]
                .iter()
                .all(|t| !Path::new("/run/netns").join(c.ns(&format!("{t}-{i}"))).exists())),
            "the pods' namespaces are deleted"
        );
    }
    let kubeconfig = cc.served.kubeconfig.clone();
    drop(cc);
    assert!(!kubeconfig.exists());
    leftovers.assert_gone();
}

#[test]
fn cni_refuses_bad_input_without_touching_the_node_and_fails_closed_when_the_agent_is_down() {
    if !privileged("cni_refuses_bad_input_without_touching_the_node_and_fails_closed_when_the_agent_is_down") {
        return;
    }
    let plugin = plugin_binary();
    cluster("e2ecnibad", |c, served, agent| {
        let mut sandboxes = Sandboxes::default();
        let labels = |selected: bool| {
            let mut l = std::collections::BTreeMap::from([("app".to_owned(), "web".to_owned())]);
            if selected {
                l.insert("use-egress-gateway".into(), "true".into());
            }
            l
        };
        let selected = PodToCreate {
            namespace: "production".into(),
            name: "sel-0".into(),
            node: "worker-1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 50),
            host_veth: "sel0".into(),
            labels: labels(true),
        };
        served.server.apply(egret_testkit::apiserver::Res::Pods, selected.object());
        let prev = sandbox(c, &mut sandboxes, &selected).expect("the sandbox");
        let before = worker1(c);

        // bad input: an error object, nothing attached, no new generation
        let env = plugin_env(c, "ADD", &selected);
        let mut no_ip = prev.clone();
        no_ip["ips"] = serde_json::json!([]);
        let mut old = plugin_conf(&agent.socket(), &agent.selection_file(), Some(&prev));
        old["cniVersion"] = "0.4.0".into();
        for (what, stdin, code) in [
            ("malformed JSON", "{\"cniVersion\":".to_owned(), 6),
            ("no prevResult", plugin_conf(&agent.socket(), &agent.selection_file(), None).to_string(), 7),
            ("an unknown cniVersion", old.to_string(), 1),
            ("a pod with no IP", plugin_conf(&agent.socket(), &agent.selection_file(), Some(&no_ip)).to_string(), 100),
        ] {
            let r = run_plugin(&plugin, &env, &stdin).expect("runs");
            assert_ne!(r.code, 0, "{what}");
            assert_eq!(r.stdout["code"].as_u64(), Some(code), "{what}: {}", r.stdout_text);
            assert!(r.stdout["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", r.stdout_text);
            println!("bad input, {what}: exit {}, {}", r.code, r.stdout_text);
        }
        assert_eq!(worker1(c), before, "bad input changed nothing on the node");

        // the agent down (killed: a crash): the selectable pod fails closed, naming the socket
        agent.kill();
        let conf = plugin_conf(&agent.socket(), &agent.selection_file(), Some(&prev)).to_string();
        let r = run_plugin(&plugin, &env, &conf).expect("runs");
        assert_ne!(r.code, 0);
        assert_eq!(r.stdout["code"].as_u64(), Some(11), "{}", r.stdout_text);
        let socket = agent.socket().display().to_string();
        assert!(r.stdout["msg"].as_str().is_some_and(|m| m.contains(&socket)), "{}", r.stdout_text);
        println!("agent down, selected pod: exit {}, {}", r.code, r.stdout_text);
        // a pod in a namespace no policy selects: admitted without the agent
        let other = PodToCreate {
            namespace: "scratch".into(),
            name: "free-0".into(),
            ip: Ipv4Addr::new(10, 244, 1, 51),
            host_veth: "free0".into(),
            labels: labels(false),
            ..selected.clone()
        };
        let prev = sandbox(c, &mut sandboxes, &other).expect("the sandbox");
        let conf = plugin_conf(&agent.socket(), &agent.selection_file(), Some(&prev)).to_string();
        let r = run_plugin(&plugin, &plugin_env(c, "ADD", &other), &conf).expect("runs");
        assert_eq!((r.code, &r.stdout), (0, &prev), "{} {}", r.stdout_text, r.stderr);
        println!("agent down, a pod no policy could select: exit 0, prevResult passed through");
    });
}

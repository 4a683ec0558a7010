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
//! - Coexistence (`egret_testkit::standin`): a CNI's stand-in programs on
//!   a selected pod's veth before egret starts (tcx count-pass, then a tcx
//!   redirect, and a legacy `cls_bpf` program): egret attaches itself first;
//!   what it redirects no stand-in sees and it leaves through the egress IP;
//!   what it passes reaches the stand-ins, in order, and their counters
//!   say so.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use egret_bpf::artifact::AttachPoint;
use egret_loader::inspect;
use egret_testkit::cni::{
    CniAgent, CniCluster, PodToCreate, Sandboxes, UdpLog, plugin_binary, plugin_conf, plugin_env, quantile, run_plugin,
    sandbox, send_udp_to,
};
use egret_testkit::minicluster::{EGRESS_IP, EXCLUDED_SERVER, MiniCluster, SERVER};
use egret_testkit::standin::StandIns;

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
        // the pods were admitted into the running generation; the full
        // reconcile that followed built one whose plan has them, and it
        // decides them as their admission did
        let (admitted_into, next) = with.generations.expect("the plugin trial watches the generation");
        println!(
            "admitted into generation {admitted_into:?}; the next, with the pods in its plan: {next:?}; \
             third datagrams from the egress IP: {}",
            with.consolidated_via_egress
        );
        assert!(next.is_some() && next != admitted_into, "no generation took the admitted pods into its plan");
        assert_eq!(with.consolidated_via_egress, pods, "the full compile decides the pods as their admission did");
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
            ip6: None,
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

#[test]
fn egret_runs_before_a_cnis_tcx_programs_and_hands_them_and_legacy_tc_what_it_passes() {
    if !privileged("egret_runs_before_a_cnis_tcx_programs_and_hands_them_and_legacy_tc_what_it_passes") {
        return;
    }
    const N: u64 = 20;
    let mut c = MiniCluster::prepare("e2ecoex").expect("the mini-cluster's network");
    let leftovers = Leftovers::of(&c);
    // the CNI's programs are there before egret: egret must put itself first
    let standins = StandIns::attach(&c, "worker-1", "veth0").expect("the stand-ins on egress-1's veth");
    c.start_agents(Path::new(AGENT), egret_testkit::minicluster::Source::Snapshot).expect("the agents");
    let log = UdpLog::start(&c).expect("the server's UDP log");
    let worker = IpAddr::V4(egret_testkit::minicluster::node("worker-1").address);
    let egress = IpAddr::V4(EGRESS_IP);
    // egress-1 is selected: to SERVER egret redirects it into the tunnel (no
    // stand-in sees it); to EXCLUDED_SERVER egret passes (TCX_NEXT) and the
    // stand-ins do
    let send = |tag: &str| {
        for i in 0..N {
            send_udp_to(&c, "egress-1", SERVER, format!("{tag} captured {i}")).expect("send");
            send_udp_to(&c, "egress-1", EXCLUDED_SERVER, format!("{tag} passed {i}")).expect("send");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let sources = |tag: &str, what: &str| -> Vec<IpAddr> {
        (0..N).flat_map(|i| log.sources(&format!("{tag} {what} {i}"))).collect()
    };
    send("a");
    assert_eq!(sources("a", "captured"), vec![egress; N as usize], "selected traffic leaves through the egress IP");
    assert_eq!(sources("a", "passed"), vec![worker; N as usize], "passed traffic takes the node's path");
    let a = standins.counts().expect("counts");
    println!("count-pass and legacy cls_bpf after egret: {a:?}");
    assert_eq!(a.count_pass, [0, N], "the tcx stand-in sees what egret passes, not what it redirects");
    assert_eq!(a.legacy, [0, N], "the legacy cls_bpf program runs after the tcx programs pass");

    // a stand-in that redirects (as a CNI steers pod traffic), after the counter
    standins.add_redirect().expect("the redirect stand-in");
    send("b");
    assert_eq!(
        sources("b", "captured"),
        vec![egress; N as usize],
        "selected traffic still leaves through the egress IP"
    );
    assert!(sources("b", "passed").is_empty(), "passed traffic took the stand-in's path, not the server's");
    let b = standins.counts().expect("counts");
    println!("with the redirect stand-in: {b:?}");
    assert_eq!(b.count_pass, [0, 2 * N]);
    assert_eq!(b.redirect, [0, N], "the redirect stand-in saw exactly what egret passed");
    assert_eq!(b.legacy, [0, N], "redirected before legacy tc: it saw nothing more");
    assert!(b.path_rx >= N, "the stand-in's path received them: {}", b.path_rx);
    // egret's own counters: the captured packets were redirected by the classifier
    let attached = worker1(&c).1;
    assert_eq!(attached, 1, "egret attached to egress-1's veth");
    drop(standins);
    drop(log);
    drop(c);
    leftovers.assert_gone();
}

#[test]
fn cni_admits_a_dual_stack_pod_by_both_addresses() {
    use egret_testkit::minicluster::{EGRESS_IP6, SERVER6, Stack};
    if !privileged("cni_admits_a_dual_stack_pod_by_both_addresses") {
        return;
    }
    let plugin = plugin_binary();
    assert!(plugin.exists(), "no egret-cni at {} (cargo build --release -p egret-cni)", plugin.display());
    let mut cc = CniCluster::start_with("e2ecni6", Path::new(AGENT), Stack::Dual)
        .expect("the dual-stack mini-cluster with a CNI socket on worker-1");
    let leftovers = Leftovers::of(&cc.cluster);
    {
        let mut sandboxes = Sandboxes::default();
        let p = PodToCreate {
            namespace: "production".into(),
            name: "dual-0".into(),
            node: "worker-1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 60),
            ip6: Some("2001:db8:244:1::60".parse().expect("ipv6")),
            host_veth: "dual0".into(),
            labels: [("app", "dual"), ("use-egress-gateway", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let ip6 = p.ip6.expect("set above");
        cc.served.server.apply(egret_testkit::apiserver::Res::Pods, p.object());
        let prev = sandbox(&cc.cluster, &mut sandboxes, &p).expect("the sandbox");
        assert_eq!(prev["ips"].as_array().map(Vec::len), Some(2), "both families in prevResult: {prev}");
        let conf = plugin_conf(&cc.agent.socket(), &cc.agent.selection_file(), Some(&prev));
        let r = run_plugin(&plugin, &plugin_env(&cc.cluster, "ADD", &p), &conf.to_string()).expect("runs");
        assert_eq!((r.code, &r.stdout), (0, &prev), "ADD: {} {}", r.stdout_text, r.stderr);
        // the moment ADD returns, worker-1 holds the pod by both addresses
        for ip in [IpAddr::from(p.ip), IpAddr::from(ip6)] {
            let (key, map) = super::dual_stack::endpoint_key(ip);
            let eps = super::dual_stack::local_endpoints(&cc.cluster, "worker-1", map);
            assert!(eps.iter().any(|(k, _)| *k == key), "{ip} in worker-1's {map}: {eps:?}");
        }
        // and its first IPv6 datagram never leaves from another address (the
        // gateway may not know the pod yet: then it is dropped, not leaked)
        let netns = cc.cluster.ns(&p.name);
        match cc.cluster.udp_request_in(&netns, SERVER6) {
            Ok(seen) => assert_eq!(seen.ip, IpAddr::V6(EGRESS_IP6), "the first IPv6 datagram"),
            Err(e) => println!("first IPv6 datagram not answered (gateway-1 had not seen the pod yet): {e}"),
        }
        // once the kubelet wrote the addresses, both families leave through their egress IPs
        cc.served.server.apply(egret_testkit::apiserver::Res::Pods, p.object_running());
        cc.cluster
            .wait_until("gateway-1", "the pod's IPv6 datagram through the egress IP", |c| {
                c.udp_request_in(&netns, SERVER6).is_ok_and(|seen| seen.ip == IpAddr::V6(EGRESS_IP6))
            })
            .expect("IPv6 through the egress IP");
        let seen = cc.cluster.udp_request_in(&netns, SERVER).expect("IPv4 answered");
        assert_eq!(seen.ip, IpAddr::V4(EGRESS_IP), "IPv4 through the egress IP");
    }
    let kubeconfig = cc.served.kubeconfig.clone();
    drop(cc);
    assert!(!kubeconfig.exists());
    leftovers.assert_gone();
}

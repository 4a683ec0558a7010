//! `egret-agent` on a node (privileged, in network namespaces with a
//! private bpffs mount): one node namespace with one pod behind a veth; the
//! agent creates `egret0`, applies worker-1's artifact (the pod's veth and
//! `egret0` attached, the pod in `egret_local_eps`), and a change to the
//! policy file makes it swap to a new generation. Everything is removed at
//! the end.

use egret_testkit::agent_process;
use egret_testkit::netns as common;

use std::process::{Child, Command};
use std::time::Duration;

use agent_process::{AgentProcess, example_snapshot, wait_within};

use common::*;
use egret_loader::{Loader, LoaderConfig, inspect, tunnel};

const POD: &str = "10.244.1.10";

/// Waits until `f` returns `Some` (20 s at most).
fn wait_for<T>(what: &str, agent: &mut Child, f: impl FnMut() -> Option<T>) -> T {
    wait_within(what, agent, Duration::from_secs(20), Duration::from_millis(100), f)
}

#[test]
fn the_agent_applies_the_node_and_swaps_when_the_policy_changes() {
    if !privileged("the_agent_applies_the_node_and_swaps_when_the_policy_changes") {
        return;
    }
    let fs = Bpffs::new("agt");
    let node = Netns::new("agt");
    let (pod, veth) = pod_behind_veth(&node, POD);
    let dir = std::env::temp_dir().join(unique("egret-agent-snap"));
    example_snapshot(&dir);

    let root = fs.root();
    let mut agent = AgentProcess(
        Command::new(env!("CARGO_BIN_EXE_egret-agent"))
            .args(["--snapshot", &dir.to_string_lossy(), "--node", "worker-1", "--bpffs", &root.to_string_lossy()])
            .args(["--netns", &node.name])
            .spawn()
            .expect("start egret-agent"),
    );
    let entered = node.enter();

    // first generation: pod veth and egret0 attached, the pod a local endpoint
    let first = wait_for("first apply", &mut agent.0, || {
        let st = inspect::status(&root).ok()?;
        let running = st.generations.iter().find(|g| g.running)?;
        let attached: Vec<&str> = st.attachments.iter().filter_map(|a| a.interface.as_deref()).collect();
        (attached.contains(&veth.as_str()) && attached.contains(&"egret0")).then_some(running.generation)
    });
    let (_, maps) = inspect::maps(&root).expect("maps");
    let eps = maps.iter().find(|m| m.name == "egret_local_eps_v4").expect("local endpoints map");
    assert_eq!(eps.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["0af4010a"], "10.244.1.10");
    let link = tunnel::get("egret0").expect("get").expect("egret0 created");
    assert!(link.is_owned() && link.matches(&tunnel::TunnelConfig::default()));

    // a policy change: the destination 203.0.113.0/24 is excluded too
    let policy = dir.join("egress-gateway-policy.yaml");
    let text = std::fs::read_to_string(&policy).expect("policy");
    let changed = text.replacen("  excludedCIDRs:\n", "  excludedCIDRs:\n  - \"203.0.113.0/24\"\n", 1);
    assert_ne!(changed, text, "the policy has excludedCIDRs");
    std::fs::write(&policy, changed).expect("write policy");
    let second = wait_for("swap after the policy change", &mut agent.0, || {
        let st = inspect::status(&root).ok()?;
        let g = st.generations.iter().find(|g| g.running)?.generation;
        (g != first).then_some(g)
    });
    let st = inspect::status(&root).expect("status");
    assert_eq!(st.generations.len(), 1, "the old generation is deleted");
    assert!(st.attachments.iter().all(|a| a.generation == Some(second)), "every link runs the new generation");

    drop(agent);
    let (loader, _) = Loader::open(LoaderConfig::new(&root)).expect("open");
    loader.uninstall().expect("uninstall");
    assert!(tunnel::remove("egret0").expect("remove egret0"));
    assert_eq!(fs.pins(), 0);
    drop(entered);
    std::fs::remove_dir_all(&dir).expect("remove snapshot");
    let names = [node.name.clone(), pod.name.clone()];
    let mount = fs.mount_point().to_path_buf();
    drop(pod);
    drop(node);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
}

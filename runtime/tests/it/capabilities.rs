//! The DaemonSet's capabilities, measured (privileged): `egret-agent
//! --once` on a node namespace with a pod behind a veth, run with *only*
//! the capabilities `deploy/base/daemonset.yaml` adds — `setpriv` limits the
//! bounding set, so the agent (uid 0, as in the container) holds exactly
//! those — applies the node: programs loaded, maps and links pinned, the
//! pod's veth and `egret0` attached. Without any one of them it fails
//! (and says why), so none of the three is superfluous; `CAP_SYS_ADMIN` is
//! not needed.

use egret_testkit::agent_process;
use egret_testkit::netns as common;

use std::process::Command;

use agent_process::example_snapshot;

use common::*;
use egret_loader::{Loader, LoaderConfig, inspect};

const POD: &str = "10.244.1.10";
/// What `deploy/base/daemonset.yaml` adds (after dropping ALL).
const DAEMONSET_CAPS: [&str; 3] = ["bpf", "net_admin", "perfmon"];

/// `egret-agent --once` for worker-1 in a fresh node namespace with only
/// `caps`: its exit status and stderr, and whether the pod's veth ended up
/// attached.
fn run_with(caps: &[&str]) -> (bool, String, bool) {
    let fs = Bpffs::new("cap");
    let node = Netns::new("cap");
    let (pod, veth) = pod_behind_veth(&node, POD);
    let dir = std::env::temp_dir().join(unique("egret-cap-snap"));
    example_snapshot(&dir);
    let root = fs.root();
    let bounding: String =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    // the namespace is entered by `ip netns exec` (with every capability),
    // then setpriv drops all but `caps` before the agent starts; the private
    // bpffs is under /tmp, which `ip netns exec` leaves visible
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name, "setpriv", "--bounding-set", &bounding, "--inh-caps", "-all", "--"])
        .arg(env!("CARGO_BIN_EXE_egret-agent"))
        .args([
            "--snapshot",
            &dir.to_string_lossy(),
            "--node",
            "worker-1",
            "--bpffs",
            &root.to_string_lossy(),
            "--once",
        ])
        .output()
        .expect("run egret-agent under setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // (interface names resolve in the node's namespace)
    let entered = node.enter();
    let attached = inspect::status(&root)
        .map(|s| s.attachments.iter().any(|a| a.interface.as_deref() == Some(veth.as_str())))
        .unwrap_or(false);
    // clean up with every capability: the loader's pins, egret0
    if root.exists()
        && let Ok((loader, _)) = Loader::open(LoaderConfig::new(&root))
    {
        loader.uninstall().expect("uninstall");
    }
    let _ = egret_loader::tunnel::remove("egret0");
    drop(entered);
    std::fs::remove_dir_all(&dir).expect("remove snapshot");
    let names = [node.name.clone(), pod.name.clone()];
    let mount = fs.mount_point().to_path_buf();
    drop(pod);
    drop(node);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
    (out.status.success(), stderr, attached)
}

#[test]
fn the_daemonsets_capabilities_suffice_and_each_is_needed() {
    if !privileged("the_daemonsets_capabilities_suffice_and_each_is_needed") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        panic!("setpriv (util-linux) is needed");
    }
    let (ok, stderr, attached) = run_with(&DAEMONSET_CAPS);
    assert!(ok && attached, "with {DAEMONSET_CAPS:?} the agent applies the node: {stderr}");
    for missing in DAEMONSET_CAPS {
        let caps: Vec<&str> = DAEMONSET_CAPS.iter().copied().filter(|c| *c != missing).collect();
        let (ok, stderr, attached) = run_with(&caps);
        println!(
            "without CAP_{}: exit ok={ok}, pod attached={attached}; stderr: {}",
            missing.to_uppercase(),
            stderr.trim()
        );
        assert!(!ok && !attached, "CAP_{} is not needed after all: {stderr}", missing.to_uppercase());
    }
}

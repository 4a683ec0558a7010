//! `egret-agent uninstall` leaves a node as it was before egret
//! (privileged): in a node namespace with a pod behind a veth and a private
//! bpffs, the node's links, addresses, routes, nftables ruleset, tcx
//! programs and pins are recorded; the agent applies worker-1 (egret0
//! created, the pod's veth and egret0 attached, pins), a floating IP's
//! address and nftables guard are added as the ownership controller adds
//! them (with its status file); `uninstall` runs twice, and after each the
//! node equals the record (tcx programs read with BPF_PROG_QUERY per
//! interface). Everything the test made is removed at the end.

use egret_testkit::agent_process;
use egret_testkit::netns as common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use agent_process::example_snapshot;
use common::*;
use egret_loader::inspect;
use egret_runtime::ha::{announce, ownership};

const POD: &str = "10.244.1.10";
/// The floating IP the test adds (documentation range, inside the namespace only).
const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

/// What `program args…` prints in namespace `ns` (empty if it cannot run).
fn output_in(ns: &str, program: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `ip link` lines without what the kernel changes on its own as carriers
/// come and go (`NO-CARRIER`, `LOWER_UP`, `M-DOWN`, `state X`): a veth whose
/// peer came up after the first record is not egret's doing.
fn without_carrier(links: &str) -> String {
    links
        .lines()
        .map(|l| {
            let mut words = l.split(' ').peekable();
            let mut out = Vec::new();
            while let Some(w) = words.next() {
                if w == "state" {
                    words.next();
                    continue;
                }
                let flags = w.strip_suffix(':').unwrap_or(w);
                if flags.starts_with('<') && flags.ends_with('>') {
                    let kept: Vec<&str> = flags[1..flags.len() - 1]
                        .split(',')
                        .filter(|f| !["NO-CARRIER", "LOWER_UP", "M-DOWN"].contains(f))
                        .collect();
                    out.push(format!("<{}>{}", kept.join(","), if w.ends_with(':') { ":" } else { "" }));
                    continue;
                }
                out.push(w.to_owned());
            }
            out.join(" ") + "\n"
        })
        .collect()
}

/// The tcx programs of every interface of `node` (BPF_PROG_QUERY), by name.
fn tcx_programs(node: &Netns) -> String {
    use aya::programs::tc::{SchedClassifier, TcAttachType};
    let links = ip_in(&node.name, &["-o", "link", "show"]);
    let _entered = node.enter();
    let mut out = String::new();
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        for (dir, at) in [("ingress", TcAttachType::Ingress), ("egress", TcAttachType::Egress)] {
            let programs = match SchedClassifier::query_tcx(name, at) {
                Ok((_, p)) => p.iter().map(|i| i.name_as_str().unwrap_or("?").to_owned()).collect::<Vec<_>>().join(","),
                Err(e) => format!("unreadable: {e}"),
            };
            out.push_str(&format!("{name} {dir}: [{programs}]\n"));
        }
    }
    out
}

/// The node as `ip` and `nft` show it, its tcx programs, the pins under
/// the bpffs mount and the ownership status file.
fn node_state(node: &Netns, mount: &Path, root: &Path) -> Vec<(String, String)> {
    let ns = node.name.as_str();
    let mut pins = Vec::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            pins.push(p.strip_prefix(mount).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    pins.sort();
    vec![
        ("links".into(), without_carrier(&ip_in(ns, &["-d", "-o", "link", "show"]))),
        ("addresses".into(), ip_in(ns, &["-o", "addr", "show"])),
        ("routes".into(), ip_in(ns, &["route", "show", "table", "all"])),
        ("routes6".into(), ip_in(ns, &["-6", "route", "show", "table", "all"])),
        ("nft".into(), output_in(ns, "nft", &["list", "ruleset"])),
        ("tcx programs".into(), tcx_programs(node)),
        ("pins".into(), pins.join("\n")),
        ("status file".into(), ownership::status_file(root).exists().to_string()),
    ]
}

fn assert_same(before: &[(String, String)], after: &[(String, String)], when: &str) {
    for ((what, b), (_, a)) in before.iter().zip(after) {
        assert_eq!(a, b, "{when}: the node's {what} differ from before egret");
    }
}

#[test]
fn uninstall_leaves_the_node_as_it_was_before_egret() {
    if !privileged("uninstall_leaves_the_node_as_it_was_before_egret") {
        return;
    }
    if !Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var("EGRET_REQUIRE_PRIVILEGED").as_deref() != Ok("1"), "nft is needed (.ci/run installs it)");
        println!("skipped uninstall_leaves_the_node_as_it_was_before_egret: no nft");
        return;
    }
    let fs = Bpffs::new("uni");
    let node = Netns::new("uni");
    let (pod, veth) = pod_behind_veth(&node, POD);
    // the egress interface a floating IP goes on has addresses of its own
    // (the kernel flushes an interface's routes with its last address)
    let egress = unique("e");
    ip_in(&node.name, &["link", "add", &egress, "type", "veth", "peer", "name", &format!("{egress}p")]);
    ip_in(&node.name, &["addr", "add", "192.0.2.10/24", "dev", &egress]);
    ip_in(&node.name, &["link", "set", &egress, "up"]);
    let dir = std::env::temp_dir().join(unique("egret-uninstall-snap"));
    example_snapshot(&dir);
    let root = fs.root();
    let (ns, mount) = (node.name.clone(), fs.mount_point().to_path_buf());
    let before = node_state(&node, &mount, &root);

    // egret applies the node
    let agent = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_egret-agent"))
            .args(args)
            .args(["--bpffs", &root.to_string_lossy(), "--netns", &ns])
            .output()
            .expect("run egret-agent")
    };
    let applied = agent(&["--snapshot", &dir.to_string_lossy(), "--node", "worker-1", "--once"]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    // a floating IP this node owned: its address, the guard, the status file
    {
        // (interface names resolve in the node's namespace)
        let _entered = node.enter();
        let st = inspect::status(&root).expect("status");
        assert!(st.running.is_some(), "a generation serves");
        let attached: Vec<&str> = st.attachments.iter().filter_map(|a| a.interface.as_deref()).collect();
        assert!(attached.contains(&veth.as_str()) && attached.contains(&"egret0"), "{attached:?}");
        assert!(announce::add_address(egress.as_str(), FLOATING).expect("add the floating IP"));
        announce::guard(&BTreeSet::from([FLOATING])).expect("the guard table");
    }
    let status = ownership::OwnershipStatus {
        floating: vec![ownership::FloatingStatus {
            ip: FLOATING.to_string(),
            is_owner: true,
            address_added: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let file = ownership::status_file(&root);
    std::fs::create_dir_all(ownership::STATUS_DIR).expect("/run/egret");
    std::fs::write(&file, serde_json::to_string(&status).expect("json")).expect("status file");
    let installed = node_state(&node, &mount, &root);
    for (what, b) in &before {
        let changed = installed.iter().any(|(w, a)| w == what && a != b);
        let expected = ["links", "addresses", "nft", "tcx programs", "pins", "status file"].contains(&what.as_str());
        assert!(!expected || changed, "egret changed nothing in the node's {what}: the comparison would be empty");
    }

    let uninstall = || agent(&["uninstall"]);
    let first = uninstall();
    let said = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "{}{said}", String::from_utf8_lossy(&first.stderr));
    assert!(said.contains("floating IP addresses: 1") && said.contains("tunnel device: removed"), "{said}");
    assert_same(&before, &node_state(&node, &mount, &root), "after uninstall");
    // idempotent
    let second = uninstall();
    let said = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(said.contains("pins (links, generations, state maps): none"), "{said}");
    assert_same(&before, &node_state(&node, &mount, &root), "after a second uninstall");

    std::fs::remove_dir_all(&dir).expect("remove snapshot");
    let names = [node.name.clone(), pod.name.clone()];
    drop(pod);
    drop(node);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
    assert!(!file.exists(), "status file left");
}

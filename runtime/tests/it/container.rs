//! The agent image, built and run as the DaemonSet runs it (privileged):
//! `deploy/image.sh` builds it with `buildah` from the workspace's
//! binaries (no base image, no registry); `podman` runs the DaemonSet's
//! `install-cni` init container, then its `agent` container with the
//! DaemonSet's arguments, each with exactly the security context
//! `deploy/base/daemonset.yaml` gives it, read from that file — the node's
//! network (a node namespace with a pod behind a veth stands in for the
//! host: `hostNetwork`), the node's bpffs (a private bpffs mount stands in
//! for `/sys/fs/bpf`, propagated host-to-container), its other host
//! directories (temporary ones), `--cap-drop all` plus the added
//! capabilities, a read-only root and no privilege escalation, not
//! privileged. The agent (`--kube`) finds the test kit's API server as a
//! pod finds its cluster's — the service-account files (token, CA) and
//! `KUBERNETES_SERVICE_HOST`/`PORT` — on 127.0.0.1 of the node namespace,
//! serving the shipped example cluster; the test passes only if the
//! container applied the node's generation: `/readyz` answers 200 on the
//! node's port 9963 (as the kubelet's probe asks), the loader's pins show a
//! running generation with the pod's veth attached, and `egret-loader
//! status` inside the container agrees. The container's process holds
//! exactly the three capabilities, `no_new_privs` and a read-only root
//! (read from `/proc`); it serves egret-cni's socket in the host's
//! `/run/egret`; SIGTERM (`podman stop`) ends it with status 0. Then the
//! chart's uninstall (`egret-agent uninstall`, same security context) runs
//! in the image and leaves no pin, no `egret0` and no egret-cni. The image
//! store is a fresh directory (vfs driver), removed at the end with
//! everything else the test made.
//!
//! Needs `buildah`, `podman` and `runc` (Debian packages, `.ci/run` installs
//! them; `crun` refuses this machine's hybrid cgroup hierarchy) and the
//! three binaries in one directory (`cargo test --workspace` builds them).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use egret_loader::inspect;
use egret_testkit::apiserver::{self, ApiServer};
use egret_testkit::netns::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};

const NODE: &str = "worker-1";
/// `production/egress-pod` of the example cluster, on worker-1, selected.
const POD: &str = "10.244.1.10";
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): linux/capability.h.
const CAP_MASK: u64 = (1 << 12) | (1 << 38) | (1 << 39);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The DaemonSet's pod spec and one of its containers by name.
fn daemonset_container(name: &str) -> (PodSpec, Container) {
    let text = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).expect("read the DaemonSet");
    let ds: DaemonSet = serde_yaml::from_str(&text).expect("a DaemonSet");
    let spec = ds.spec.and_then(|s| s.template.spec).expect("a pod spec");
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no container {name}"));
    (spec, c)
}

/// `podman run` options giving the container what the pod spec gives it:
/// the node's network, its security context, its volumes at their mount
/// points (`volumes`: the host directory standing in for each `hostPath`).
fn run_options(spec: &PodSpec, c: &Container, node_ns: &str, volumes: &BTreeMap<String, PathBuf>) -> Vec<String> {
    let mut o: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| o.extend(args.iter().map(|a| (*a).to_owned()));
    assert_eq!(spec.host_network, Some(true), "the DaemonSet runs on the host network");
    push(&["--network", &format!("ns:/run/netns/{node_ns}")]);
    // the kubelet's default (no seccompProfile in the spec): unconfined
    assert!(spec.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()).is_none());
    assert!(c.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()).is_none());
    push(&["--security-opt", "seccomp=unconfined"]);
    let sc = c.security_context.as_ref().expect("a security context");
    assert_eq!(sc.privileged, Some(false), "{}: not privileged", c.name);
    assert!(sc.run_as_user.is_none() && sc.run_as_non_root.is_none(), "{}: root in the container", c.name);
    if sc.allow_privilege_escalation == Some(false) {
        push(&["--security-opt", "no-new-privileges"]);
    }
    if sc.read_only_root_filesystem == Some(true) {
        // podman would put a tmpfs on /tmp, /run and /var/tmp; the kubelet does not
        push(&["--read-only", "--read-only-tmpfs=false"]);
    }
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]), "{}: every capability dropped", c.name);
    push(&["--cap-drop", "all"]);
    if let Some(add) = caps.add.as_ref().filter(|a| !a.is_empty()) {
        push(&["--cap-add", &add.join(",")]);
    }
    for m in c.volume_mounts.iter().flatten() {
        let host = volumes.get(&m.name).unwrap_or_else(|| panic!("no stand-in for volume {}", m.name));
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => ":rslave",
            None | Some("None") => "",
            Some(other) => panic!("mount propagation {other}"),
        };
        push(&["-v", &format!("{}:{}{propagation}", host.display(), m.mount_path)]);
    }
    o
}

/// The podman and buildah image store of this test, removed on drop with
/// every container and image in it.
struct Store {
    dir: PathBuf,
}

impl Store {
    fn new() -> Store {
        let dir = std::env::temp_dir().join(unique("egret-ctr-store"));
        std::fs::create_dir_all(&dir).expect("store directory");
        Store { dir }
    }

    /// The global options both tools take for this store.
    fn options(&self) -> Vec<String> {
        let root = self.dir.join("root").display().to_string();
        let runroot = self.dir.join("runroot").display().to_string();
        vec!["--root".into(), root, "--runroot".into(), runroot, "--storage-driver".into(), "vfs".into()]
    }

    /// `podman` with this store, runc, cgroupfs (there is no systemd).
    fn podman(&self, args: &[String]) -> Output {
        Command::new("podman")
            .args(self.options())
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .expect("run podman")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.podman(&["rm".into(), "--all".into(), "--force".into(), "--time".into(), "0".into()]);
        let _ = self.podman(&["rmi".into(), "--all".into(), "--force".into()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory removed on drop (the host directories the volumes stand for).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `out`'s stdout, or a panic with what it said.
fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--ulimit` options within this process's own hard limits: without them
/// podman asks the runtime for its defaults (2^20 open files), which a
/// runtime without CAP_SYS_RESOURCE cannot set (`setrlimit`: EPERM).
fn ulimits() -> Vec<String> {
    let hard = |resource| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes only the struct it is given
        #[expect(unsafe_code, reason = "getrlimit(2) into a local struct")]
        let got = unsafe { libc::getrlimit(resource, &raw mut limit) };
        if got == 0 { limit.rlim_max } else { 1024 }
    };
    let files = hard(libc::RLIMIT_NOFILE).min(16_384);
    let procs = hard(libc::RLIMIT_NPROC).min(8_192);
    vec!["--ulimit".into(), format!("nofile={files}:{files}"), "--ulimit".into(), format!("nproc={procs}:{procs}")]
}

/// `GET path` on the node's port 9963 from inside the node namespace, as
/// the kubelet's probe asks: the status code, 0 if nothing answered.
fn probe(node: &Netns, path: &str) -> u16 {
    let _entered = node.enter();
    let Ok(mut s) = TcpStream::connect_timeout(&"127.0.0.1:9963".parse().expect("addr"), Duration::from_secs(1)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = String::new();
    if write!(s, "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").is_err()
        || s.read_to_string(&mut reply).is_err()
    {
        return 0;
    }
    reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A capability line of `/proc/PID/status`, as a number.
fn proc_field(status: &str, field: &str) -> u64 {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
        .trim();
    u64::from_str_radix(v, if field.starts_with("Cap") { 16 } else { 10 }).expect("a number")
}

#[test]
fn the_image_runs_in_the_daemonsets_security_context_and_applies_the_node() {
    const TEST: &str = "the_image_runs_in_the_daemonsets_security_context_and_applies_the_node";
    if !privileged(TEST) {
        return;
    }
    let missing: Vec<&str> = ["buildah", "podman", "runc"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("EGRET_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "{TEST}: {missing:?} missing (.ci/run installs them)"
        );
        println!("skipped {TEST}: {missing:?} missing (.ci/run installs them)");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_egret-agent")).parent().expect("bin dir").to_path_buf();
    for b in ["egret-loader", "egret-cni"] {
        assert!(
            bin_dir.join(b).is_file(),
            "{TEST}: no {b} beside egret-agent in {} (cargo build --release -p egret-loader -p egret-cni)",
            bin_dir.display()
        );
    }

    let store = Store::new();
    let image = format!("localhost/egret-agent:{}", unique("t"));
    let mut build = Command::new(repo().join("deploy/image.sh"));
    build.args(["--tag", &image, "--bin-dir"]).arg(&bin_dir).args(["--builder", "buildah"]);
    for o in store.options() {
        build.arg("--builder-opt").arg(o);
    }
    ok("deploy/image.sh", &build.output().expect("run deploy/image.sh"));
    let size = ok(
        "podman image inspect",
        &store.podman(&["image".into(), "inspect".into(), "--format".into(), "{{.Size}}".into(), image.clone()]),
    );
    println!("image {image}: {} bytes", size.trim());

    // the node: a namespace, a pod behind a veth, a bpffs, host directories
    let fs = Bpffs::new("ctr");
    let node = Netns::new("ctr");
    let (pod, veth) = pod_behind_veth(&node, POD);
    let host_dir = TempDir(std::env::temp_dir().join(unique("egret-ctr-host")));
    let host = host_dir.0.clone();
    let mut volumes = BTreeMap::from([("bpffs".to_owned(), fs.mount_point().to_path_buf())]);
    for (volume, dir) in [("egret-run", "run/egret"), ("cni-bin", "opt/cni/bin"), ("cni-conf", "etc/cni/net.d")] {
        std::fs::create_dir_all(host.join(dir)).expect("host directory");
        volumes.insert(volume.to_owned(), host.join(dir));
    }
    // the cluster CNI's conflist, for install-cni to chain into
    std::fs::write(
        host.join("etc/cni/net.d/10-cluster.conflist"),
        r#"{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"ptp"}]}"#,
    )
    .expect("conflist");

    // the init container, as the DaemonSet runs it
    let (spec, init) = daemonset_container("install-cni");
    let mut args = vec!["run".to_owned(), "--rm".to_owned()];
    args.extend(ulimits());
    args.extend(run_options(&spec, &init, &node.name, &volumes));
    let command = init.command.clone().expect("install-cni's command");
    args.extend(["--entrypoint".to_owned(), serde_json::to_string(&command).expect("json")]);
    args.push(image.clone());
    args.extend(init.args.clone().unwrap_or_default());
    let said = ok("install-cni", &store.podman(&args));
    assert!(host.join("opt/cni/bin/egret-cni").is_file(), "install-cni installed no plugin: {said}");
    let conflist = std::fs::read_to_string(host.join("etc/cni/net.d/10-cluster.conflist")).expect("conflist");
    assert!(conflist.contains("egret-cni"), "install-cni did not chain the plugin: {conflist}");

    // the API server, on 127.0.0.1 of the node's namespace (the container's
    // host network), HTTPS with a token, serving the example cluster; the
    // agent reaches it as a pod does: the service-account files and
    // KUBERNETES_SERVICE_HOST/PORT
    let entered = node.enter();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let options = apiserver::Options { tls: true, token: Some("egret-agent-token".into()) };
    let server = rt.block_on(ApiServer::start_with(options, None));
    drop(entered);
    for (res, obj) in crate::kube::example_objects() {
        server.apply(res, obj);
    }
    let service_env = server.service_account(&host.join("serviceaccount"), "egret-system");

    // the agent: the DaemonSet's arguments, `$(NODE_NAME)` expanded as the
    // kubelet expands it from the env entry
    let (spec, agent) = daemonset_container("agent");
    let node_name = agent.env.iter().flatten().find(|e| e.name == "NODE_NAME").expect("NODE_NAME in the env");
    assert!(
        node_name
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| f.field_path == "spec.nodeName")
    );
    let agent_args: Vec<String> =
        agent.args.clone().unwrap_or_default().into_iter().map(|a| a.replace("$(NODE_NAME)", NODE)).collect();
    assert!(
        agent_args.windows(2).any(|w| w == ["--bpffs", "/sys/fs/bpf/egret"]),
        "the test's bpffs root is <mount>/egret"
    );
    let name = unique("egret-agent");
    let mut args = vec!["run".to_owned(), "--detach".to_owned(), "--name".to_owned(), name.clone()];
    args.extend(ulimits());
    args.extend(run_options(&spec, &agent, &node.name, &volumes));
    args.extend(["-e".to_owned(), format!("NODE_NAME={NODE}")]);
    for (k, v) in &service_env {
        args.extend(["-e".to_owned(), format!("{k}={v}")]);
    }
    args.extend([
        "-v".to_owned(),
        format!("{}:/var/run/secrets/kubernetes.io/serviceaccount:ro", host.join("serviceaccount").display()),
    ]);
    args.push(image.clone());
    args.extend(agent_args);
    ok("podman run (agent)", &store.podman(&args));
    let logs = || {
        let out = store.podman(&["logs".into(), name.clone()]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    // ready as the kubelet sees it: /readyz on the node's port 9963
    let started = Instant::now();
    let mut ready = probe(&node, "/readyz");
    while ready != 200 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        ready = probe(&node, "/readyz");
    }
    assert_eq!(ready, 200, "the container never became ready:\n{}", logs());
    assert_eq!(probe(&node, "/healthz"), 200, "{}", logs());
    println!("ready after {:.1} s", started.elapsed().as_secs_f64());

    // it talked to the API server: its node's NodeNetwork is published there
    let started = Instant::now();
    while server.get(apiserver::Served::NodeNetworks, NODE).is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.get(apiserver::Served::NodeNetworks, NODE).is_some(), "no NodeNetwork published:\n{}", logs());
    assert_eq!(server.count(apiserver::Req::Unauthorized), 0, "every request carried the token");
    assert!(host.join("run/egret/cni.sock").exists(), "egret-cni's socket in the host's /run/egret");

    // the container's process: exactly the three capabilities, no_new_privs, read-only root
    let pid: u32 = ok(
        "podman inspect",
        &store.podman(&["inspect".into(), "--format".into(), "{{.State.Pid}}".into(), name.clone()]),
    )
    .trim()
    .parse()
    .expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's status");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_field(&status, field), CAP_MASK, "{field} of the agent in the container");
    }
    assert_eq!(proc_field(&status, "CapAmb"), 0);
    assert_eq!(proc_field(&status, "NoNewPrivs"), 1);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mountinfo.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("the root mount");
    assert!(root.split(' ').nth(5).is_some_and(|o| o.split(',').any(|f| f == "ro")), "root mount: {root}");

    // the generation the container applied, read from the host's pins
    let entered = node.enter();
    let applied = inspect::status(&fs.root()).expect("the loader's status");
    drop(entered);
    let running = applied.running.expect("a running generation");
    assert!(
        applied
            .attachments
            .iter()
            .any(|a| a.interface.as_deref() == Some(veth.as_str()) && a.generation == Some(running)),
        "the pod's veth is not attached to generation {running:?}: {applied:?}"
    );
    // and egret-loader in the image says the same from inside the container
    let inside = ok(
        "egret-loader status in the container",
        &store.podman(&[
            "exec".into(),
            name.clone(),
            "/usr/local/bin/egret-loader".into(),
            "--root".into(),
            "/sys/fs/bpf/egret".into(),
            "status".into(),
            "--json".into(),
        ]),
    );
    let inside: serde_json::Value = serde_json::from_str(&inside).expect("status JSON");
    assert_eq!(inside["running"], serde_json::to_value(running).expect("json"), "{inside}");

    // the floating IPs' guard runs nft from the image
    ok(
        "nft in the container",
        &store.podman(&["exec".into(), name.clone(), "/usr/sbin/nft".into(), "--version".into()]),
    );

    // SIGTERM ends it within the DaemonSet's grace period, exit status 0
    let grace = spec.termination_grace_period_seconds.expect("a grace period").to_string();
    let stopping = Instant::now();
    ok("podman stop", &store.podman(&["stop".into(), "--time".into(), grace, name.clone()]));
    println!("stopped by SIGTERM in {:.1} s", stopping.elapsed().as_secs_f64());
    let exit = ok(
        "podman inspect",
        &store.podman(&["inspect".into(), "--format".into(), "{{.State.ExitCode}}".into(), name.clone()]),
    );
    assert_eq!(exit.trim(), "0", "SIGTERM did not end the agent (137: killed after the grace period):\n{}", logs());

    // the chart's uninstall, in the image with the agent's security context
    let mut args = vec!["run".to_owned(), "--rm".to_owned()];
    args.extend(ulimits());
    args.extend(run_options(&spec, &agent, &node.name, &volumes));
    args.push(image.clone());
    args.extend(
        [
            "uninstall",
            "--bpffs",
            "/sys/fs/bpf/egret",
            "--cni-bin-dir",
            "/host/opt/cni/bin",
            "--cni-conf-dir",
            "/host/etc/cni/net.d",
        ]
        .map(str::to_owned),
    );
    let said = ok("egret-agent uninstall in the container", &store.podman(&args));
    println!("uninstall: {}", said.trim());
    assert_eq!(fs.entries(), Vec::<String>::new(), "pins left after uninstall");
    assert!(!ip_in(&node.name, &["-o", "link", "show"]).contains("egret0"), "egret0 left after uninstall");
    assert!(!host.join("opt/cni/bin/egret-cni").exists(), "egret-cni left after uninstall");
    let left: Vec<_> = std::fs::read_dir(host.join("run/egret")).expect("/run/egret").collect();
    assert!(left.is_empty(), "files left in /run/egret: {left:?}");

    // everything the test made goes
    drop(host_dir);
    assert!(!host.exists(), "host directories left");
    let names = [node.name.clone(), pod.name.clone()];
    let mount = fs.mount_point().to_path_buf();
    let store_dir = store.dir.clone();
    drop(server);
    drop(rt);
    drop(store);
    drop(pod);
    drop(node);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
    assert!(!store_dir.exists(), "image store left");
}

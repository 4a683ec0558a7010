//! `egret-agent --kube` on a node (privileged, in network namespaces with a
//! private bpffs mount): one node namespace with one pod behind a veth, and
//! egret-kube's in-process API server (`egret_testkit::apiserver`)
//! listening on 127.0.0.1 *inside* that namespace over HTTPS with a bearer
//! token (a CA made for the run, in the kubeconfig), serving the example
//! cluster and policies (`examples/cluster`, `examples/policies`; the
//! `.egret` policy converted as `egret convert` does). The agent, pointed at
//! it through `KUBECONFIG`, applies worker-1 with the pod attached once its
//! watch has synced; relabelling the pod out of the policy through the API
//! makes it swap to a generation without the pod, and relabelling it back
//! swaps again with the pod attached. The delays from the API write to the
//! swap are printed, and the agent's own figure is checked in `/metrics`.
//! The policy's Event is created if worker-1 is its reporter. An undecodable
//! watch event is a warning on stderr; an API server restart leaves the
//! dataplane alone. Everything
//! is removed at the end.

use egret_testkit::netns as common;

use egret_testkit::agent_process;

use egret_testkit::apiserver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_process::*;
use apiserver::{ApiServer, Res};
use common::*;
use egret_loader::{Loader, LoaderConfig, inspect, tunnel};
use serde_json::Value;

const NODE: &str = "worker-1";
/// `production/egress-pod` of the example cluster: on worker-1, selected by
/// the example policy through its label `use-egress-gateway: "true"`.
const POD: &str = "10.244.1.10";
const POD_KEY: &str = "production/egress-pod";

/// Every object of the example cluster and policies, as the API server
/// holds them.
pub(crate) fn example_objects() -> Vec<(Res, Value)> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples.join("cluster"))
        .expect("examples/cluster")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for path in files {
        // NodeNetwork (the agent reads its own) and workloads are no served kinds
        out.extend(apiserver::yaml_objects(&std::fs::read_to_string(&path).expect("read")));
    }
    let mut sources = egret_lang::source::SourceMap::new();
    let loaded = egret_lang::load::load(&mut sources, &[examples.join("policies")]);
    assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.bundle.policies.len(), 2, "the YAML and the .egret example policies");
    for p in &loaded.bundle.policies {
        let yaml: serde_yaml::Value = serde_yaml::from_str(&egret_lang::emit::policy_to_yaml(p)).expect("yaml");
        out.push((Res::Policies, serde_json::to_value(yaml).expect("json")));
    }
    out
}

/// The trimmed view of `objects` (nodes only: what picks a reporter).
fn example_view(objects: &[(Res, Value)]) -> egret_kube::view::ClusterView {
    let mut v = egret_kube::view::ClusterView::new();
    for (res, o) in objects {
        if *res == Res::Nodes {
            let ready = o["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str())
                .map(str::to_string);
            v.nodes.apply(egret_kube::view::NodeFacts {
                name: o["metadata"]["name"].as_str().expect("name").to_string(),
                ready,
                ..Default::default()
            });
        }
    }
    v
}

/// Waits until `f` returns `Some` (20 s at most), polling every 10 ms.
fn wait_for<T>(what: &str, agent: &mut Child, f: impl FnMut() -> Option<T>) -> T {
    wait_within(what, agent, Duration::from_secs(20), Duration::from_millis(10), f)
}

/// Keys of the running generation's `egret_local_eps` (none when the
/// generation has no such map: a node without local endpoints).
fn local_endpoints(root: &Path) -> Vec<String> {
    let (_, maps) = inspect::maps(root).expect("maps");
    maps.iter()
        .filter(|m| m.name == "egret_local_eps_v4")
        .flat_map(|m| m.entries.iter().map(|e| e.key.clone()))
        .collect()
}

#[test]
fn the_kube_agent_applies_the_node_and_follows_the_api() {
    if !privileged("the_kube_agent_applies_the_node_and_follows_the_api") {
        return;
    }
    let fs = Bpffs::new("kag");
    let node = Netns::new("kag");
    let (pod, veth) = pod_behind_veth(&node, POD);

    // the API server listens on 127.0.0.1 of the node's namespace: bound
    // from this thread once it has entered it
    let entered = node.enter();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    // HTTPS with a CA made for the run, and a bearer token, as a cluster's
    // API server (the kubeconfig carries the CA and the token)
    let options = apiserver::Options { tls: true, token: Some("node-agent-token".into()) };
    let server = rt.block_on(ApiServer::start_with(options, None));
    let objects = example_objects();
    for (res, obj) in &objects {
        server.apply(*res, obj.clone());
    }
    let config = TempFile(std::env::temp_dir().join(unique("egret-kubeconfig")));
    std::fs::write(&config.0, server.kubeconfig()).expect("write kubeconfig");

    let root = fs.root();
    let mut agent = AgentProcess(
        Command::new(env!("CARGO_BIN_EXE_egret-agent"))
            .args(["--kube", "--node", NODE, "--bpffs", &root.to_string_lossy(), "--netns", &node.name])
            .args(["--metrics", "127.0.0.1:0"])
            .env("KUBECONFIG", &config.0)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("EGRET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start egret-agent"),
    );
    let output = capture(agent.0.stdout.take().expect("piped stdout"), Some("agent"));
    let errors = capture(agent.0.stderr.take().expect("piped stderr"), Some("agent stderr"));
    let metrics = wait_for("the metrics address", &mut agent.0, || line_with(&output, "metrics on http://"));
    let metrics = metrics.trim_start_matches("metrics on http://").trim_end_matches("/metrics").to_string();

    // first generation, once the watch has synced: the pod's veth and
    // egret0 attached, the pod a local endpoint
    let started = Instant::now();
    let (first, _) = wait_for("first apply", &mut agent.0, || {
        running(&root).filter(|(_, attached)| attached.contains(&veth) && attached.iter().any(|a| a == "egret0"))
    });
    println!("agent start → first generation serving: {:?}", started.elapsed());
    assert_eq!(local_endpoints(&root), ["0af4010a"], "10.244.1.10");
    wait_for("/readyz answering 200", &mut agent.0, || (get(&metrics, "/readyz").0 == 200).then_some(()));
    let (code, body) = get(&metrics, "/metrics");
    assert_eq!(code, 200);
    let generation = format!("egret_generation {}", first.0);
    assert!(body.lines().any(|l| l == generation), "missing `{generation}` in\n{body}");
    let synced = "egret_kube_synced 1";
    assert!(body.lines().any(|l| l == synced), "missing `{synced}` in\n{body}");
    assert_eq!(server.count(apiserver::Req::Unauthorized), 0, "every request carried the token");

    // the node's facts, published as its NodeNetwork (the snapshot recipe's
    // source): the pod's veth is one of the node's interfaces
    let published =
        wait_for("the node's NodeNetwork", &mut agent.0, || server.get(apiserver::Served::NodeNetworks, NODE));
    let names: Vec<&str> = published["spec"]["interfaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&veth.as_str()), "{published}");

    // Events: worker-1 publishes a policy's only if it is the policy's
    // reporter (rendezvous over the Ready nodes) or one of its gateways
    let view = example_view(&objects);
    let policies: Vec<&str> = objects
        .iter()
        .filter(|(r, _)| *r == Res::Policies)
        .filter_map(|(_, o)| o["metadata"]["name"].as_str())
        .collect();
    let mine: std::collections::BTreeSet<&str> =
        policies.iter().copied().filter(|p| egret_kube::events::reporter(&view, p) == Some(NODE)).collect();
    println!("policies {policies:?}; worker-1 reports {mine:?}");
    let events = wait_for("worker-1's Events", &mut agent.0, || {
        let e = server.events();
        (e.len() >= mine.len()).then_some(e)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.events().len(), mine.len(), "one Event per reported policy: {events:#?}");
    let named: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["regarding"]["name"].as_str()).collect();
    assert_eq!(named, mine);
    for e in &events {
        assert_eq!(e["reportingInstance"], format!("egret.dev/agent-{NODE}"));
        assert_eq!((e["type"].as_str(), e["reason"].as_str()), (Some("Normal"), Some("Compiled")), "{e:#}");
        let line = format!(
            "policy {}: Normal Compiled: {}",
            e["regarding"]["name"].as_str().unwrap_or_default(),
            e["note"].as_str().unwrap_or_default()
        );
        assert!(line_with(&output, &line).is_some(), "the agent prints `{line}`");
    }
    if mine.contains("egress-gateway-policy") {
        let e = events.iter().find(|e| e["regarding"]["name"] == "egress-gateway-policy").expect("event");
        let note = "compiled; selects 2 endpoints; gateway gateway-1 (192.0.2.13)";
        assert!(e["note"].as_str().is_some_and(|n| n.starts_with(note)), "{e:#}");
    }

    // relabel the pod out of the policy: a new generation without it
    let (_, original) =
        objects.iter().find(|(r, o)| *r == Res::Pods && o["metadata"]["name"] == "egress-pod").expect("pod");
    let mut relabelled = original.clone();
    relabelled["metadata"]["labels"] = serde_json::json!({"run": "egress-pod"});
    let written = Instant::now();
    server.apply(Res::Pods, relabelled);
    let (second, _) = wait_for("swap after the relabel", &mut agent.0, || running(&root).filter(|(g, _)| *g != first));
    let swapped = written.elapsed();
    let (_, attached) = wait_for("the pod detached", &mut agent.0, || {
        running(&root).filter(|(g, attached)| *g == second && !attached.contains(&veth))
    });
    println!("API change ({POD_KEY} relabelled out) → swap: {swapped:?}; attached now: {attached:?}");
    let delay = wait_for("the agent's own delay figure", &mut agent.0, || line_with(&output, "event to dataplane "));
    println!("the agent measured: {delay}");
    let (_, body) = get(&metrics, "/metrics");
    let count = "egret_event_to_dataplane_seconds_count ";
    let n: f64 = body.lines().find_map(|l| l.strip_prefix(count)).and_then(|v| v.parse().ok()).expect("count");
    assert!(n >= 1.0, "a swap after a watch event is measured: {body}");
    assert!(local_endpoints(&root).is_empty(), "no local endpoint is selected any more");
    let st = inspect::status(&root).expect("status");
    assert_eq!(st.generations.len(), 1, "the old generation is deleted");
    assert!(st.attachments.iter().all(|a| a.generation == Some(second)), "every link runs the new generation");

    // and back: selected again, attached again
    let written = Instant::now();
    server.apply(Res::Pods, original.clone());
    let (third, _) = wait_for("swap after relabelling back", &mut agent.0, || {
        running(&root).filter(|(g, attached)| *g != second && attached.contains(&veth))
    });
    println!("API change ({POD_KEY} relabelled back) → swap and attach: {:?}", written.elapsed());
    assert_ne!(third, first);
    assert_eq!(local_endpoints(&root), ["0af4010a"]);
    // a relabel is a pod-only change: the agent updates its last resolution
    let (_, body) = get(&metrics, "/metrics");
    let updates = "egret_kube_resolutions_total{kind=\"update\"} ";
    let n: f64 = body.lines().find_map(|l| l.strip_prefix(updates)).and_then(|v| v.parse().ok()).expect("updates");
    assert!(n >= 1.0, "the relabels updated the resolution: {body}");

    // an event that does not decode: a warning on stderr (EGRET_LOG=warn), nothing else
    server.inject(Res::Pods, r#"{"type": "ADDED", "object": "not an object"}"#);
    let warning = wait_for("the watch's warning on stderr", &mut agent.0, || {
        errors.lock().expect("lines").iter().find(|l| l.contains("WARN") && l.contains("watch error")).cloned()
    });
    assert!(warning.contains("kind=\"pods\"") || warning.contains("kind=pods"), "{warning}");
    assert_eq!(running(&root).map(|(g, _)| g), Some(third), "no swap for an undecodable event");

    // the API server restarts (connections cut; its watch cache rebuilt, so
    // a resume from before the restart is 410 Gone and relists): the agent
    // watches again and leaves the dataplane alone
    let requests = || {
        [apiserver::Req::List(Res::Pods), apiserver::Req::Watch(Res::Pods)]
            .map(|r| server.count(r))
            .iter()
            .sum::<usize>()
    };
    let before = requests();
    server.stop();
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(server.start());
    wait_for("pods watched again after the restart", &mut agent.0, || (requests() > before).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&root).map(|(g, _)| g), Some(third), "the same generation after the restart");
    let (code, _) = get(&metrics, "/readyz");
    assert_eq!(code, 200, "still ready");

    drop(agent);
    let (loader, _) = Loader::open(LoaderConfig::new(&root)).expect("open");
    loader.uninstall().expect("uninstall");
    assert!(tunnel::remove("egret0").expect("remove egret0"));
    assert_eq!(fs.pins(), 0);
    drop(server);
    drop(rt);
    drop(entered);
    let kubeconfig_path = config.0.clone();
    drop(config);
    assert!(!kubeconfig_path.exists(), "kubeconfig left");
    let names = [node.name.clone(), pod.name.clone()];
    let mount = fs.mount_point().to_path_buf();
    drop(pod);
    drop(node);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
}

#[test]
fn a_kubeconfig_that_cannot_be_used_fails_before_the_node_is_touched() {
    if !privileged("a_kubeconfig_that_cannot_be_used_fails_before_the_node_is_touched") {
        return;
    }
    let fs = Bpffs::new("kbc");
    let node = Netns::new("kbc");
    let config = TempFile(std::env::temp_dir().join(unique("egret-bad-kubeconfig")));
    std::fs::write(&config.0, "apiVersion: v1\nkind: Config\nclusters: [this is not a kubeconfig\n").expect("write");
    let root = fs.root();
    let out = Command::new(env!("CARGO_BIN_EXE_egret-agent"))
        .args(["--kube", "--node", NODE, "--bpffs", &root.to_string_lossy(), "--netns", &node.name])
        .env("KUBECONFIG", &config.0)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run egret-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad kubeconfig is an error");
    assert!(stderr.contains("cannot find the API server") || stderr.contains("kubeconfig"), "{stderr}");
    let links = ip_in(&node.name, &["-o", "link", "show"]);
    assert!(!links.contains("egret0"), "no tunnel device was created: {links}");
    assert_eq!(fs.pins(), 0, "nothing was pinned");
}

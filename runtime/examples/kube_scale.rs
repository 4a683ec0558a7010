//! The in-cluster agent at scale (issue #8): `egret-agent --kube` watching an
//! API server that holds a large synthetic cluster — its memory, its time to
//! the first generation, and the delay from an API write to the dataplane.
//!
//! ```text
//! cargo build --release -p egret-runtime --bin egret-agent
//! cargo run --release -p egret-runtime --example kube_scale -- \
//!     [--pods 100000] [--policies 1000] [--nodes 5000] [--events 50] [--churn 100] [--json FILE]
//! ```
//!
//! Needs root, bpffs and network namespaces (prints why and exits 0
//! without them: a benchmark, not a test). Two clusters are measured one
//! after the other in the same run, the same way: a SMALL one (100 pods,
//! 10 policies, 10 nodes) and the BIG one of the arguments, whose agent
//! (a worker: it serves no egress slot) watches its own pods; then the BIG
//! one again with `egret-agent --watch-all-pods` (every pod of the cluster,
//! as a gateway's agent watches); ratios are printed at the end. For each:
//!
//! - the cluster (the shape of `egret_compiler::synth`: nodes with
//!   InternalIP, podCIDRs, Ready, gateway labels; namespaces; Running pods
//!   with `app`/`tier` labels, owner references, a container, conditions and
//!   `managedFields` as the API server sends them; `cilium.io/v2`
//!   CiliumEgressGatewayPolicies with 10 destination and 3 excluded CIDRs)
//!   is written into egret-kube's in-process API server
//!   (`egret_testkit::apiserver`), HTTPS with a CA made for the run
//!   and a bearer token, listening on 127.0.0.1 inside a fresh network
//!   namespace (the node);
//! - the real `target/release/egret-agent --kube --node <last node>` runs in
//!   that namespace with a private bpffs; one pod of its node sits behind a
//!   veth (so there is something to attach) and is selected by a policy;
//! - measured: agent start → first generation serving (and the CPU time
//!   the agent and this process — the API server — spent meanwhile); the
//!   agent's VmHWM/VmRSS after the first sync and at the end; then
//!   `--events` relabels of that pod, alternately out of and into the
//!   policy, each timed from `ApiServer::apply` to the pinned running
//!   generation showing the change (polled every ~1 ms); the agent's own
//!   `egret_event_to_dataplane_seconds` and `egret_compile_seconds` over the
//!   same events (deltas of `/metrics`);
//! - churn: the same events again while a thread relabels pods of OTHER
//!   nodes at `--churn` writes per second (flipping their `tier`, which
//!   the broad policies select on), so the debounce runs at its upper
//!   bound (quiet 100 ms, at most 1 s);
//! - in this process, the same reconcile without the agent, on the view
//!   the agent held (its node's pods, or every pod), stage by
//!   stage: `ClusterView::plan` (render + parse + resolve + plan),
//!   `World::new` alone, `planner::plan_node` alone, and
//!   `kube_agent::compile_view` (the agent's whole compile, with code
//!   generation and its checks).
//!
//! Everything it creates (agent process, namespaces, veth, bpffs mount,
//! pins, kubeconfig) is removed at the end, also when it fails.

use egret_testkit::netns as common;

use egret_testkit::agent_process;

use egret_testkit::apiserver;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_process::*;
use apiserver::{ApiServer, Res};
use common::*;
use egret_kube::view::ClusterView;
use egret_kube::wire::{IntoFacts, NamespaceWire, NodeWire, PodWire, PolicyWire};
use egret_loader::{Loader, LoaderConfig, tunnel};
use egret_runtime::kube_agent::ViewCompiler;
use serde_json::{Value, json};

/// A counting global allocator (this process only): live heap bytes and
/// their peak, for the in-process breakdown's peak heap per compile.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

#[expect(unsafe_code, reason = "a counting global allocator; it only forwards to the system allocator")]
// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as isize;
        PEAK.fetch_max(LIVE.fetch_add(size, Ordering::Relaxed) + size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as isize;
        PEAK.fetch_max(LIVE.fetch_add(size, Ordering::Relaxed) + size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let delta = new_size as isize - layout.size() as isize;
        PEAK.fetch_max(LIVE.fetch_add(delta, Ordering::Relaxed) + delta, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `f`'s result and the peak of live heap bytes above the start while it
/// ran, MiB.
fn heap_peak<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, (PEAK.load(Ordering::Relaxed) - base) as f64 / (1024.0 * 1024.0))
}

/// The size of a synthetic cluster (as `egret_compiler::synth::Shape`).
#[derive(Debug, Clone, Copy)]
struct Shape {
    nodes: usize,
    gateways: usize,
    pods: usize,
    namespaces: usize,
    policies: usize,
    apps: usize,
}

impl Shape {
    fn new(pods: usize, policies: usize, nodes: usize) -> Shape {
        Shape {
            nodes,
            gateways: (nodes / 250).clamp(2, 20).min(nodes - 1),
            pods,
            namespaces: (pods / 2000).clamp(5, 50),
            policies,
            apps: (2 * policies).max(4),
        }
    }

    /// The node the agent runs as: the last one (never a gateway).
    fn agent_node(&self) -> usize {
        self.nodes - 1
    }

    fn label(&self) -> String {
        format!("{} pods / {} policies / {} nodes", self.pods, self.policies, self.nodes)
    }
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

fn pod_ip(shape: &Shape, i: usize) -> String {
    let n = i % shape.nodes;
    format!("10.{}.{}.{}", n / 256, n % 256, i / shape.nodes + 2)
}

fn node_json(shape: &Shape, i: usize) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": node_name(i), "zone": format!("z{}", i % 3)});
    if i < shape.gateways {
        labels["egress-gw"] = json!(format!("g{i:02}"));
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(i), "uid": format!("0b7d1f0e-1a11-4c1e-9a51-{i:012}"), "labels": labels},
        "spec": {"podCIDRs": [format!("10.{}.{}.0/24", i / 256, i % 256)]},
        "status": {
            // 198.19.0.0/16: benchmark range (RFC 2544); no traffic is sent
            "addresses": [{"type": "InternalIP", "address": format!("198.19.{}.{}", i / 256, i % 256)},
                          {"type": "Hostname", "address": node_name(i)}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"},
                           {"type": "MemoryPressure", "status": "False"}]
        }
    })
}

fn namespace_json(i: usize) -> Value {
    let name = format!("ns-{i:02}");
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "team": format!("t{}", i % 10)}}})
}

fn pod_json(shape: &Shape, i: usize, labels: Value) -> Value {
    let ns = format!("ns-{:02}", i % shape.namespaces);
    let app = format!("app-{:04}", i % shape.apps);
    let name = format!("{app}-7d9c5b-{i:06}");
    let ip = pod_ip(shape, i);
    let n = i % shape.nodes;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("7c22952d-25a0-409d-952c-{i:012}"),
            "generateName": format!("{app}-7d9c5b-"), "creationTimestamp": "2026-11-26T10:00:00Z",
            "labels": labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9c5b"),
                                 "uid": "1b2c3d4e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-26T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:tier": {}}},
                              "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-26T10:00:05Z",
                 "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:podIPs": {}}}}
            ]
        },
        "spec": {
            "nodeName": node_name(n), "serviceAccountName": "default", "restartPolicy": "Always",
            "containers": [{"name": "app", "image": "registry.invalid/app:1.0",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
        },
        "status": {
            "phase": "Running", "hostIP": format!("198.19.{}.{}", n / 256, n % 256), "podIP": ip, "podIPs": [{"ip": ip}],
            "qosClass": "Burstable", "startTime": "2026-11-26T10:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T10:00:09Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T10:00:00Z"}]
        }
    })
}

fn default_pod_labels(shape: &Shape, i: usize) -> Value {
    json!({"app": format!("app-{:04}", i % shape.apps), "tier": if i.is_multiple_of(2) { "web" } else { "db" },
           "pod-template-hash": "7d9c5b"})
}

/// The measured pod (the first pod of the agent's node) inside or outside
/// `policy-0001` (which selects `app-0002`); `tier: db` keeps it out of the
/// broad policies, so only `app` decides.
fn measured_labels(selected: bool) -> Value {
    json!({"app": if selected { "app-0002" } else { "app-unselected" }, "tier": "db", "pod-template-hash": "7d9c5b"})
}

fn policy_json(shape: &Shape, j: usize) -> Value {
    let broad = j.is_multiple_of(50);
    let selectors: Vec<Value> = if broad {
        vec![json!({"podSelector": {"matchLabels": {"tier": "web"}},
                    "namespaceSelector": {"matchLabels": {"team": format!("t{}", (j / 50) % 10)}}})]
    } else {
        (0..2)
            .map(|k| json!({"podSelector": {"matchLabels": {"app": format!("app-{:04}", (2 * j + k) % shape.apps)}}}))
            .collect()
    };
    let first = |k: usize| 11 + (j * 7 + k * 13) % 150;
    let mut dests: Vec<String> = (0..10).map(|k| format!("{}.{}.{}.0/20", first(k), j % 256, k * 16)).collect();
    if broad {
        dests[0] = "0.0.0.0/0".into();
    }
    let excl: Vec<String> = (1..4).map(|k| format!("{}.{}.{}.0/24", first(k), j % 256, k * 16 + 1)).collect();
    let gw = |g: usize| {
        json!({"nodeSelector": {"matchLabels": {"egress-gw": format!("g{:02}", g % shape.gateways)}},
               "egressIP": format!("198.18.{}.1", g % shape.gateways)})
    };
    let mut spec = json!({"selectors": selectors, "destinationCIDRs": dests, "excludedCIDRs": excl});
    if j.is_multiple_of(5) {
        spec["egressGateways"] = json!([gw(j), gw(j + 1)]);
    } else {
        spec["egressGateway"] = gw(j);
    }
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
           "metadata": {"name": format!("policy-{j:04}"), "uid": format!("5b6c7d8e-9f01-4a2b-8c3d-{j:012}")},
           "spec": spec})
}

/// Every object of the cluster, in the order they are written.
fn cluster(shape: &Shape) -> Vec<(Res, Value)> {
    let mut out = Vec::with_capacity(shape.nodes + shape.namespaces + shape.pods + shape.policies);
    out.extend((0..shape.nodes).map(|i| (Res::Nodes, node_json(shape, i))));
    out.extend((0..shape.namespaces).map(|i| (Res::Namespaces, namespace_json(i))));
    let measured = shape.agent_node();
    out.extend((0..shape.pods).map(|i| {
        let labels = if i == measured { measured_labels(true) } else { default_pod_labels(shape, i) };
        (Res::Pods, pod_json(shape, i, labels))
    }));
    out.extend((0..shape.policies).map(|j| (Res::Policies, policy_json(shape, j))));
    out
}

/// The agent's view of `objects`, decoded as its watch decodes them.
fn view_of(objects: &[(Res, Value)]) -> ClusterView {
    let mut v = ClusterView::new();
    for (res, o) in objects {
        let o = o.clone();
        match res {
            Res::Pods => v.pods.apply(serde_json::from_value::<PodWire>(o).expect("pod").into_facts()),
            Res::Namespaces => {
                v.namespaces.apply(serde_json::from_value::<NamespaceWire>(o).expect("namespace").into_facts())
            }
            Res::Nodes => v.nodes.apply(serde_json::from_value::<NodeWire>(o).expect("node").into_facts()),
            Res::Policies => v.policies.apply(serde_json::from_value::<PolicyWire>(o).expect("policy").into_facts()),
        };
    }
    v
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// User + system CPU time of a process (`/proc/PID/stat`), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command (which may hold spaces): state is field 3
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/PID/stat` times.
#[expect(unsafe_code, reason = "sysconf(3)")]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(v, 50.0)
}

/// What one series of relabel events measured.
#[derive(Debug, Default)]
struct Phase {
    /// API write → swap observed, ms, in event order.
    latencies: Vec<f64>,
    /// The agent's `egret_event_to_dataplane_seconds` over the phase.
    agent_e2d_count: f64,
    agent_e2d_sum: f64,
    /// The agent's `egret_compile_seconds` over the phase.
    compile_count: f64,
    compile_sum: f64,
    /// Background writes to other nodes' pods, and their rate.
    churn_writes: usize,
    churn_rate: f64,
}

impl Phase {
    fn summary(&self) -> Value {
        let mut s = self.latencies.clone();
        s.sort_by(f64::total_cmp);
        json!({
            "events": s.len(), "median_ms": pct(&s, 50.0), "p90_ms": pct(&s, 90.0), "p99_ms": pct(&s, 99.0),
            "max_ms": s.last().copied().unwrap_or(f64::NAN), "min_ms": s.first().copied().unwrap_or(f64::NAN),
            "agent_event_to_dataplane_count": self.agent_e2d_count,
            "agent_event_to_dataplane_mean_ms": 1000.0 * self.agent_e2d_sum / self.agent_e2d_count,
            "agent_compiles": self.compile_count,
            "agent_compile_mean_ms": 1000.0 * self.compile_sum / self.compile_count,
            "churn_writes": self.churn_writes, "churn_rate_per_s": self.churn_rate,
            "latencies_ms": self.latencies,
        })
    }
}

/// Medians of the in-process reconcile stages, ms.
#[derive(Debug, Default)]
struct Breakdown {
    view_compile: f64,
    resolve: f64,
    plan: f64,
    compile_view: f64,
    /// `compile_view` with a warm compiler after one pod of the node was
    /// relabelled into or out of a policy (the update path).
    update: f64,
    /// … after a pod of another node was relabelled (the artifact reused).
    update_elsewhere: f64,
    /// How many of those compiles reused the artifact.
    reused: u64,
    runs: usize,
    /// Peak heap above the start during one `ClusterView::plan` and one
    /// `compile_view` (the last run), MiB.
    view_compile_peak_mib: f64,
    compile_view_peak_mib: f64,
    /// The view itself (heap held by the decoded facts), MiB.
    view_mib: f64,
}

/// The in-process reconcile of `node` from `view`, stage by stage, `runs`
/// times: medians.
fn breakdown(view: &ClusterView, node: &str, runs: usize) -> Breakdown {
    let facts = egret_runtime::facts::discover().expect("the node's interfaces");
    let network = egret_runtime::facts::node_network(node, &facts);
    let options = egret_compiler::resolve::Options::default();
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut view_compile_peak_mib, mut compile_view_peak_mib) = (0.0, 0.0);
    for _ in 0..runs {
        let t = Instant::now();
        let (compilation, peak) = heap_peak(|| view.plan(node, &options, Some(&network)));
        a.push(ms(t.elapsed()));
        view_compile_peak_mib = peak;
        assert!(compilation.plan.is_ok(), "{node} compiles in-process");
        let t = Instant::now();
        let plan = egret_compiler::planner::plan_node(&compilation.world, node).expect("plan");
        b.push(ms(t.elapsed()));
        drop(plan);
        drop(compilation);
        let t = Instant::now();
        let ((_, compiled), peak) =
            heap_peak(|| egret_runtime::kube_agent::compile_view(&mut ViewCompiler::new(), view, node, &facts));
        d.push(ms(t.elapsed()));
        compile_view_peak_mib = peak;
        compiled.expect("compile_view");
    }
    // the update path, with a warm compiler: (e) the node's first pod
    // relabelled into and out of policy-0001 (its plan changes: code
    // generation), (f) a pod of another node flipping `tier` (the node's
    // plan stays: the artifact is reused)
    let mut compiler = ViewCompiler::new();
    let mut changed = view.clone();
    drop(egret_runtime::kube_agent::compile_view(&mut compiler, &changed, node, &facts));
    let on_node = |p: &&egret_kube::view::PodFacts| p.node_name.as_deref() == Some(node);
    let mine = changed.pods.iter().find(on_node).cloned().expect("a pod on the node");
    // (a view of the node's own pods, as a worker's agent holds, has none elsewhere)
    let other = changed.pods.iter().find(|p| !on_node(p)).cloned();
    let (mut e, mut f) = (Vec::new(), Vec::new());
    let updates = runs.max(11);
    for i in 0..updates {
        let ours = if i % 2 == 0 { "app-0002" } else { "app-unselected" };
        let tier = if i % 2 == 0 { "x" } else { "y" };
        let mut changes = vec![(&mine, &mut e, vec![("app", ours), ("tier", "db")])];
        if let Some(other) = &other {
            changes.push((other, &mut f, vec![("tier", tier)]));
        }
        for (pod, times, labels) in changes {
            let mut p = pod.clone();
            p.labels.extend(labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())));
            changed.pods.apply(p);
            let t = Instant::now();
            let (_, compiled) = egret_runtime::kube_agent::compile_view(&mut compiler, &changed, node, &facts);
            times.push(ms(t.elapsed()));
            compiled.expect("compile_view");
        }
    }
    let stats = compiler.stats();
    let changes = (updates * if other.is_some() { 2 } else { 1 }) as u64;
    assert_eq!((stats.resolutions, stats.updates), (1, changes), "every change was an update");
    let reused = compiler.reused();
    drop(changed);
    // resolve alone: `World::new` on the bundle the view renders to (the
    // same loader, fed the view's facts rendered as Kubernetes lists)
    let bundle = bundle_of(view, &network);
    for _ in 0..runs {
        let t = Instant::now();
        let world = egret_compiler::resolve::World::new(&bundle, &options);
        c.push(ms(t.elapsed()));
        drop(world);
    }
    Breakdown {
        view_compile: median(&mut a),
        plan: median(&mut b),
        resolve: median(&mut c),
        compile_view: median(&mut d),
        update: median(&mut e),
        update_elsewhere: if f.is_empty() { f64::NAN } else { median(&mut f) },
        reused,
        runs,
        view_compile_peak_mib,
        compile_view_peak_mib,
        view_mib: 0.0,
    }
}

/// The bundle egret's loader reads from `view` (every object rendered as a
/// Kubernetes list, as `ClusterView::plan` does) plus the node's network.
fn bundle_of(view: &ClusterView, network: &egret_lang::ast::NodeNetwork) -> egret_lang::ast::Bundle {
    let mut sources = egret_lang::source::SourceMap::new();
    let mut bundle = egret_lang::ast::Bundle::default();
    let list = |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let pods = view
        .pods
        .iter()
        .map(|p| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": p.labels},
                   "spec": {"nodeName": p.node_name, "hostNetwork": p.host_network},
                   "status": {"phase": p.phase, "podIPs": p.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}})
        })
        .collect();
    let nodes = view
        .nodes
        .iter()
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name, "uid": n.uid, "labels": n.labels},
                   "spec": {"podCIDRs": n.pod_cidrs},
                   "status": {"addresses": n.internal_ips.iter().map(|a| json!({"type": "InternalIP", "address": a})).collect::<Vec<_>>(),
                              "conditions": n.ready.iter().map(|s| json!({"type": "Ready", "status": s})).collect::<Vec<_>>()}})
        })
        .collect();
    let namespaces = view
        .namespaces
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": n.labels}}))
        .collect();
    let policies = view
        .policies
        .iter()
        .map(|p| {
            json!({"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
                        "metadata": {"name": p.name, "uid": p.uid}, "spec": p.spec})
        })
        .collect();
    for (name, text) in [
        ("policies", list(policies)),
        ("cluster/namespaces", list(namespaces)),
        ("cluster/nodes", list(nodes)),
        ("cluster/pods", list(pods)),
    ] {
        let loaded = egret_lang::load::parse_text(&mut sources, name, text);
        assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "{name}: {:?}", loaded.diagnostics.first());
        bundle.extend(loaded.bundle);
    }
    egret_compiler::driver::add_node_facts(&mut sources, &mut bundle, network.clone());
    bundle
}

/// Everything measured for one cluster.
#[derive(Debug)]
struct Run {
    shape: Shape,
    objects_written_s: f64,
    to_first_generation_s: f64,
    agent_cpu_to_first_s: f64,
    server_cpu_to_first_s: f64,
    after_sync_kib: (u64, u64),
    at_end_kib: (u64, u64),
    quiet: Phase,
    churn: Option<Phase>,
    breakdown: Breakdown,
}

impl Run {
    fn json(&self) -> Value {
        json!({
            "pods": self.shape.pods, "policies": self.shape.policies, "nodes": self.shape.nodes,
            "gateways": self.shape.gateways, "namespaces": self.shape.namespaces,
            "objects_written_s": self.objects_written_s,
            "agent_start_to_first_generation_s": self.to_first_generation_s,
            "agent_cpu_to_first_generation_s": self.agent_cpu_to_first_s,
            "api_server_cpu_to_first_generation_s": self.server_cpu_to_first_s,
            "agent_vmhwm_after_sync_kib": self.after_sync_kib.0, "agent_vmrss_after_sync_kib": self.after_sync_kib.1,
            "agent_vmhwm_end_kib": self.at_end_kib.0, "agent_vmrss_end_kib": self.at_end_kib.1,
            "events_quiet": self.quiet.summary(),
            "events_churn": self.churn.as_ref().map(Phase::summary),
            "in_process_ms": {"runs": self.breakdown.runs, "view_compile": self.breakdown.view_compile,
                              "resolve_world_new": self.breakdown.resolve, "plan_compile_node": self.breakdown.plan,
                              "compile_view": self.breakdown.compile_view, "compile_view_update": self.breakdown.update,
                              "compile_view_update_elsewhere": self.breakdown.update_elsewhere,
                              "updates_reusing_the_artifact": self.breakdown.reused},
            "in_process_heap_mib": {"view": self.breakdown.view_mib,
                                    "peak_during_view_compile": self.breakdown.view_compile_peak_mib,
                                    "peak_during_compile_view": self.breakdown.compile_view_peak_mib},
        })
    }
}

struct Args {
    pods: usize,
    policies: usize,
    nodes: usize,
    events: usize,
    churn: f64,
    json: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args { pods: 100_000, policies: 1_000, nodes: 5_000, events: 50, churn: 100.0, json: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--pods" => a.pods = number(value()?)?,
            "--policies" => a.policies = number(value()?)?,
            "--nodes" => a.nodes = number(value()?)?,
            "--events" => a.events = number(value()?)?,
            "--churn" => a.churn = value()?.parse().map_err(|e| format!("--churn: {e}"))?,
            "--json" => a.json = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.nodes < 3 || a.policies < 2 || a.pods < a.nodes || a.pods > 253 * a.nodes || a.nodes > 65_536 {
        return Err("needs 3 ≤ nodes ≤ 65,536, policies ≥ 2, nodes ≤ pods ≤ 253 × nodes".into());
    }
    Ok(a)
}

/// A tiny deterministic generator for the pauses between events.
fn jitter(state: &mut u64) -> Duration {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    Duration::from_millis(50 + (*state >> 33) % 250)
}

/// Uniform in [0, 1), from the same generator.
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// Relabels the measured pod `events` times (out, in, out, …) and times
/// each write to the swap that shows it; with `churn` > 0 a thread writes
/// other nodes' pods meanwhile.
#[expect(clippy::too_many_arguments, reason = "one call site, all context")]
fn events(
    server: &ApiServer,
    shape: &Shape,
    objects: &[(Res, Value)],
    agent: &mut Child,
    root: &Path,
    veth: &str,
    metrics: &str,
    events: usize,
    churn: f64,
) -> Phase {
    let measured = shape.agent_node();
    let pod_index = shape.nodes + shape.namespaces + measured;
    let pod = &objects[pod_index].1;
    let (_, before) = get(metrics, "/metrics");
    let stop = AtomicBool::new(false);
    let writes = AtomicUsize::new(0);
    let mut phase = Phase::default();
    let mut seed = 0x5eed_u64;
    std::thread::scope(|s| {
        if churn > 0.0 {
            s.spawn(|| {
                // pods of other nodes, flipping `tier` (which broad policies select)
                let first = shape.nodes + shape.namespaces;
                let others: Vec<usize> =
                    (0..shape.pods).filter(|i| i % shape.nodes != measured).step_by(7).take(20_000).collect();
                let interval = Duration::from_secs_f64(1.0 / churn);
                let t0 = Instant::now();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let due = interval * n as u32;
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let i = others[n % others.len()];
                    let flipped = (n / others.len()).is_multiple_of(2);
                    let mut p = objects[first + i].1.clone();
                    let tier = if i.is_multiple_of(2) != flipped { "web" } else { "db" };
                    p["metadata"]["labels"]["tier"] = json!(tier);
                    server.apply(Res::Pods, p);
                    n += 1;
                    writes.store(n, Ordering::Relaxed);
                }
            });
            // let the churn reach its steady state first
            std::thread::sleep(Duration::from_secs(2));
        }
        let phase_start = writes.load(Ordering::Relaxed);
        let t_phase = Instant::now();
        for k in 0..events {
            let selected = k % 2 == 1;
            let (prev, attached) = running(root).expect("a running generation");
            assert_eq!(attached.iter().any(|a| a == veth), !selected, "the pod's state before event {k}");
            let mut p = pod.clone();
            p["metadata"]["labels"] = measured_labels(selected);
            let t = Instant::now();
            server.apply(Res::Pods, p);
            wait_within("the swap after a relabel", agent, Duration::from_secs(120), Duration::from_millis(1), || {
                running(root).filter(|(g, att)| *g != prev && att.iter().any(|a| a == veth) == selected)
            });
            let took = t.elapsed();
            phase.latencies.push(ms(took));
            // under churn the agent cycles (compile, then up to max_delay of
            // collecting): a pause of up to one more such cycle lands the
            // next write anywhere in it, not always just after a swap
            let pause = jitter(&mut seed);
            std::thread::sleep(if churn > 0.0 { pause + took.mul_f64(uniform(&mut seed)) } else { pause });
        }
        let n = writes.load(Ordering::Relaxed) - phase_start;
        phase.churn_writes = n;
        phase.churn_rate = n as f64 / t_phase.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
    });
    // the measured pod ends selected (events even) or not; either way the
    // agent is idle once the last swap is seen; the churn's last writes may
    // still be compiling: wait for the agent's compile count to settle
    std::thread::sleep(Duration::from_millis(1500));
    let (_, after) = get(metrics, "/metrics");
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    phase.agent_e2d_count = d("egret_event_to_dataplane_seconds_count");
    phase.agent_e2d_sum = d("egret_event_to_dataplane_seconds_sum");
    phase.compile_count = d("egret_compile_seconds_count");
    phase.compile_sum = d("egret_compile_seconds_sum");
    phase
}

fn print_phase(name: &str, p: &Phase) {
    let mut s = p.latencies.clone();
    s.sort_by(f64::total_cmp);
    println!(
        "  {name}: {} events, API write → swap observed: median {:.1} ms, p90 {:.1}, p99 {:.1}, max {:.1} (min {:.1})",
        s.len(),
        pct(&s, 50.0),
        pct(&s, 90.0),
        pct(&s, 99.0),
        s.last().copied().unwrap_or(f64::NAN),
        s.first().copied().unwrap_or(f64::NAN)
    );
    println!(
        "    agent's own: {} swaps measured, event→dataplane mean {:.1} ms; {} compiles, mean {:.1} ms each{}",
        p.agent_e2d_count,
        1000.0 * p.agent_e2d_sum / p.agent_e2d_count,
        p.compile_count,
        1000.0 * p.compile_sum / p.compile_count,
        if p.churn_writes > 0 {
            format!("; churn: {} writes to other nodes' pods ({:.0}/s)", p.churn_writes, p.churn_rate)
        } else {
            String::new()
        }
    );
}

/// One cluster, measured end to end. Every guard is dropped in reverse
/// order (agent first), also when a step panics.
fn run(shape: Shape, agent_bin: &Path, events_n: usize, churn: f64, all_pods: bool) -> Run {
    println!(
        "== {} (agent on {}, {} gateways; it watches {})",
        shape.label(),
        node_name(shape.agent_node()),
        shape.gateways,
        if all_pods { "every pod: --watch-all-pods" } else { "its own pods" }
    );
    let fs = Bpffs::new("ksc");
    let node = Netns::new("ksc");
    let measured = shape.agent_node();
    // every pod of the agent's node behind its own veth, as on a real node;
    // the measured one is the first
    let mut pods = Vec::new();
    let mut veth = String::new();
    for i in (measured..shape.pods).step_by(shape.nodes) {
        let (pod, v) = pod_behind_veth(&node, &pod_ip(&shape, i));
        if i == measured {
            veth = v;
        }
        pods.push(pod);
    }
    println!("  {} pods behind veths on {}", pods.len(), node_name(measured));

    let entered = node.enter();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let options = apiserver::Options { tls: true, token: Some("node-agent-token".into()) };
    let server = rt.block_on(ApiServer::start_with(options, None));
    let t = Instant::now();
    let objects = cluster(&shape);
    for (res, obj) in &objects {
        server.apply(*res, obj.clone());
    }
    // the agent lists; the write history is not needed (and is as large as the cluster)
    server.compact();
    let objects_written_s = t.elapsed().as_secs_f64();
    println!("  cluster generated and written to the API server in {objects_written_s:.1} s");
    let config = TempFile(std::env::temp_dir().join(unique("egret-kubeconfig")));
    std::fs::write(&config.0, server.kubeconfig()).expect("write kubeconfig");

    let root = fs.root();
    let node_name = node_name(measured);
    let cpu_self_0 = cpu_seconds("self");
    let started = Instant::now();
    let mut agent = AgentProcess(
        Command::new(agent_bin)
            .args(["--kube", "--node", &node_name, "--bpffs", &root.to_string_lossy(), "--netns", &node.name])
            .args(["--metrics", "127.0.0.1:0"])
            .args(all_pods.then_some("--watch-all-pods"))
            .env("KUBECONFIG", &config.0)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start egret-agent"),
    );
    let pid = agent.0.id();
    let output = capture(agent.0.stdout.take().expect("piped stdout"), None);
    let limit = Duration::from_secs(600);
    let metrics = wait_within("the metrics address", &mut agent.0, limit, Duration::from_millis(10), || {
        line_with(&output, "metrics on http://")
    });
    let metrics = metrics.trim_start_matches("metrics on http://").trim_end_matches("/metrics").to_string();
    wait_within("first generation", &mut agent.0, limit, Duration::from_millis(5), || {
        running(&root).filter(|(_, attached)| attached.contains(&veth) && attached.iter().any(|a| a == "egret0"))
    });
    let to_first_generation_s = started.elapsed().as_secs_f64();
    let agent_cpu_to_first_s = cpu_seconds(&pid.to_string());
    let server_cpu_to_first_s = cpu_seconds("self") - cpu_self_0;
    let after_sync_kib = memory(pid);
    println!(
        "  agent start → first generation serving: {to_first_generation_s:.2} s (CPU: agent {agent_cpu_to_first_s:.2} s, API server process {server_cpu_to_first_s:.2} s)"
    );
    println!(
        "  agent memory after the first sync: VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        after_sync_kib.0 as f64 / 1024.0,
        after_sync_kib.1 as f64 / 1024.0
    );
    wait_within("/readyz answering 200", &mut agent.0, limit, Duration::from_millis(10), || {
        (get(&metrics, "/readyz").0 == 200).then_some(())
    });
    // the first reconcile's Events and any compile still queued settle
    std::thread::sleep(Duration::from_secs(1));

    let quiet = events(&server, &shape, &objects, &mut agent.0, &root, &veth, &metrics, events_n, 0.0);
    print_phase("quiet", &quiet);
    let churn = (churn > 0.0).then(|| {
        // start from the pod selected, as the quiet phase did
        if events_n % 2 == 1 {
            let (prev, _) = running(&root).expect("running");
            let mut p = objects[shape.nodes + shape.namespaces + measured].1.clone();
            p["metadata"]["labels"] = measured_labels(true);
            server.apply(Res::Pods, p);
            wait_within("back to selected", &mut agent.0, limit, Duration::from_millis(5), || {
                running(&root).filter(|(g, att)| *g != prev && att.contains(&veth))
            });
        }
        let p = events(&server, &shape, &objects, &mut agent.0, &root, &veth, &metrics, events_n, churn);
        print_phase("churn", &p);
        p
    });
    let at_end_kib = memory(pid);
    println!(
        "  agent memory at the end: VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        at_end_kib.0 as f64 / 1024.0,
        at_end_kib.1 as f64 / 1024.0
    );
    drop(agent);

    // the same reconcile in this process, stage by stage (the agent is gone)
    let before = LIVE.load(Ordering::Relaxed);
    let mut view = view_of(&objects);
    if !all_pods {
        // the view the agent held: its node's pods (egret_kube::view::PodScope)
        view.narrow(egret_kube::view::PodScope::Node(node_name.clone()));
    }
    let view_mib = (LIVE.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
    let runs = if shape.pods >= 50_000 { 3 } else { 11 };
    let mut breakdown = breakdown(&view, &node_name, runs);
    breakdown.view_mib = view_mib;
    println!(
        "  in-process (the agent's view: {}), median of {runs}: ClusterView::plan {:.1} ms (of which World::new ≈ {:.1} ms, planner::plan_node {:.1} ms); kube_agent::compile_view {:.1} ms in full (a node, namespace or policy change)",
        view.pod_scope, breakdown.view_compile, breakdown.resolve, breakdown.plan, breakdown.compile_view,
    );
    println!(
        "  in-process updates, median of {}: compile_view {:.1} ms after the node's pod was relabelled, {:.1} ms after another node's pod was ({} of {} compiles reused the artifact)",
        runs.max(11),
        breakdown.update,
        breakdown.update_elsewhere,
        breakdown.reused,
        2 * runs.max(11)
    );
    println!(
        "  in-process heap: the view {:.1} MiB; peak above it during ClusterView::plan {:.1} MiB, during compile_view {:.1} MiB",
        breakdown.view_mib, breakdown.view_compile_peak_mib, breakdown.compile_view_peak_mib
    );
    drop(view);

    let (loader, _) = Loader::open(LoaderConfig::new(&root)).expect("open");
    loader.uninstall().expect("uninstall");
    assert!(tunnel::remove("egret0").expect("remove egret0"));
    assert_eq!(fs.pins(), 0, "pins left");
    drop(server);
    drop(rt);
    drop(entered);
    let kubeconfig = config.0.clone();
    drop(config);
    let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    names.push(node.name.clone());
    let mount = fs.mount_point().to_path_buf();
    drop(pods);
    drop(node);
    drop(fs);
    assert!(!kubeconfig.exists(), "kubeconfig left");
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
    Run {
        shape,
        objects_written_s,
        to_first_generation_s,
        agent_cpu_to_first_s,
        server_cpu_to_first_s,
        after_sync_kib,
        at_end_kib,
        quiet,
        churn,
        breakdown,
    }
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kube_scale: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if !privileged("kube_scale") {
        return std::process::ExitCode::SUCCESS;
    }
    let agent_bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("egret-agent")))
        .unwrap_or_default();
    if !agent_bin.is_file() {
        eprintln!(
            "kube_scale: no egret-agent next to this program ({}); build it first: cargo build --release -p egret-runtime --bin egret-agent",
            agent_bin.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    println!("agent binary: {}", agent_bin.display());
    let small = run(Shape::new(100, 10, 10), &agent_bin, args.events, args.churn, false);
    let big = run(Shape::new(args.pods, args.policies, args.nodes), &agent_bin, args.events, args.churn, false);
    let big_all = run(Shape::new(args.pods, args.policies, args.nodes), &agent_bin, args.events, args.churn, true);

    let ratio = |b: f64, s: f64| b / s;
    let med = |p: &Phase| {
        let mut v = p.latencies.clone();
        median(&mut v)
    };
    println!("== big ÷ small");
    println!(
        "  agent VmHWM after sync {:.1}×, VmRSS after sync {:.1}×, VmHWM at end {:.1}×",
        ratio(big.after_sync_kib.0 as f64, small.after_sync_kib.0 as f64),
        ratio(big.after_sync_kib.1 as f64, small.after_sync_kib.1 as f64),
        ratio(big.at_end_kib.0 as f64, small.at_end_kib.0 as f64)
    );
    println!(
        "  start → first generation {:.1}×; event latency median (quiet) {:.1}×",
        ratio(big.to_first_generation_s, small.to_first_generation_s),
        ratio(med(&big.quiet), med(&small.quiet))
    );
    if let (Some(b), Some(s)) = (&big.churn, &small.churn) {
        println!("  event latency median (churn) {:.1}×", ratio(med(b), med(s)));
    }
    println!("  in-process compile_view {:.1}×", ratio(big.breakdown.compile_view, small.breakdown.compile_view));
    println!("== big: the worker's agent watching its own pods ÷ watching every pod (--watch-all-pods)");
    println!(
        "  VmHWM after sync {:.3}× ({} / {} KiB), VmHWM at end {:.3}×",
        ratio(big.after_sync_kib.0 as f64, big_all.after_sync_kib.0 as f64),
        big.after_sync_kib.0,
        big_all.after_sync_kib.0,
        ratio(big.at_end_kib.0 as f64, big_all.at_end_kib.0 as f64)
    );
    println!(
        "  start → first generation {:.2}× ({:.1} / {:.1} s); event latency median (quiet) {:.2}×",
        ratio(big.to_first_generation_s, big_all.to_first_generation_s),
        big.to_first_generation_s,
        big_all.to_first_generation_s,
        ratio(med(&big.quiet), med(&big_all.quiet))
    );
    if let (Some(b), Some(a)) = (&big.churn, &big_all.churn) {
        println!("  event latency median (churn elsewhere) {:.2}×", ratio(med(b), med(a)));
    }
    if let Some(path) = &args.json {
        let out = json!({"small": small.json(), "big": big.json(), "big_all_pods": big_all.json()});
        std::fs::write(path, serde_json::to_string_pretty(&out).expect("json")).expect("write --json");
        println!("wrote {}", path.display());
    }
    std::process::ExitCode::SUCCESS
}

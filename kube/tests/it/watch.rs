//! The cluster watch against an in-process API server speaking the real
//! list/watch protocol (`support/apiserver.rs`): every test starts a
//! [`ClusterWatch`] whose callback compiles node `worker-1` and reports what
//! its plan decides for each local pod towards an external address, and
//! waits (bounded) until the reports show the expected state.

use egret_testkit::apiserver;

use apiserver::{ApiServer, Options as ServerOptions, Req, Res};
use egret_compiler::ir::Effect;
use egret_compiler::resolve::Options;
use egret_kube::crd::{CiliumEgressGatewayPolicy, CiliumEgressGatewayPolicySpec, EgressGateway, EgressRule};
use egret_kube::view::PolicyOutcome;
use egret_kube::watch::{ClusterWatch, Nudge, WatchConfig, WatchStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long any expected state may take to show.
const WAIT: Duration = Duration::from_secs(15);
/// The node the test agent serves.
const NODE: &str = "worker-1";
/// An external destination.
const EXTERNAL: &str = "203.0.113.7";
const GW1: &str = "192.0.2.13";
const GW2: &str = "192.0.2.14";

/// What one callback run saw.
#[derive(Debug, Clone)]
struct Seen {
    /// Per endpoint `namespace/name` on worker-1 (from the world): the
    /// plan's decision towards [`EXTERNAL`] (`via GATEWAY`, `local`,
    /// `drop`, `pass`).
    decisions: BTreeMap<String, String>,
    /// Per policy: (compiled, endpoints selected, error codes, summary).
    policies: BTreeMap<String, (bool, usize, Vec<&'static str>, String)>,
}

impl Seen {
    fn decision(&self, pod: &str) -> Option<&str> {
        self.decisions.get(pod).map(String::as_str)
    }
}

fn observe(view: &egret_kube::view::ClusterView) -> Seen {
    let c = view.plan(NODE, &Options::default(), None);
    let plan = c.plan.as_ref().expect("worker-1 compiles");
    let dst: IpAddr = EXTERNAL.parse().expect("ip");
    let node = c.world.node_by_name(NODE).expect("node").id;
    let decisions = c
        .world
        .endpoints_on(node)
        .map(|e| {
            let d = match plan.lookup(e.ips[0], dst).resolve(c.world.ready_health()) {
                Effect::Pass => "pass".to_string(),
                Effect::Drop(_) => "drop".to_string(),
                Effect::Redirect { gateway, .. } => format!("via {gateway}"),
                Effect::LocalEgress { .. } => "local".to_string(),
            };
            (e.key.clone(), d)
        })
        .collect();
    let policies = c
        .policies
        .values()
        .map(|r| {
            let n = match &r.outcome {
                PolicyOutcome::Compiled { endpoints, .. } => *endpoints,
                PolicyOutcome::Rejected => 0,
            };
            (r.name.clone(), (r.compiled(), n, r.error_codes(), r.summary()))
        })
        .collect();
    Seen { decisions, policies }
}

/// A running watch whose callback reports to `rx`.
struct Agent {
    rx: mpsc::UnboundedReceiver<Seen>,
    status: Arc<WatchStatus>,
    nudge: Nudge,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn config() -> WatchConfig {
    WatchConfig {
        quiet: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        // trailing edge only, so tests count batches exactly (the leading
        // edge has its own test)
        leading: false,
        // small pages, so lists are paginated
        page_size: Some(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        watch_timeout: None,
        all_pods: false,
    }
}

async fn start(server: &ApiServer) -> Agent {
    start_with(server, config()).await
}

async fn start_with(server: &ApiServer, config: WatchConfig) -> Agent {
    let watch = ClusterWatch::new(server.client().await, config);
    let status = watch.status();
    let nudge = watch.nudge();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watch.run(
        async move {
            let _ = stopped.await;
        },
        move |view, _batch| {
            let _ = tx.send(observe(view));
        },
    ));
    Agent { rx, status, nudge, stop: Some(stop), task }
}

impl Agent {
    /// The first report satisfying `pred`, within [`WAIT`].
    async fn until(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(s)) if pred(&s) => return s,
                Ok(Some(s)) => last = Some(s),
                Ok(None) => panic!("the watch ended while waiting for {what}"),
                Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; last report: {last:#?}"),
            }
        }
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, self.task).await.expect("the watch stops").expect("no panic");
    }
}

fn node(name: &str, ip: &str, cidr: &str, labels: Value, ready: &str) -> Value {
    json!({"metadata": {"name": name, "labels": labels},
           "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                      "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}})
}

fn namespace(name: &str, team: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "team": team}}})
}

fn pod(ns: &str, name: &str, ip: &str, app: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
           "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "registry.invalid/app:1"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn selector(kv: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(kv.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()),
        ..LabelSelector::default()
    }
}

/// A policy written with the typed resource: pods `app: web` in namespaces
/// `team: a`, all destinations, through the gateways matching `gateways`.
fn web_policy(name: &str, dests: &[&str], gateways: &[&[(&str, &str)]]) -> Value {
    let gws: Vec<EgressGateway> =
        gateways.iter().map(|g| EgressGateway { node_selector: selector(g), ..EgressGateway::default() }).collect();
    let spec = CiliumEgressGatewayPolicySpec {
        selectors: vec![EgressRule {
            pod_selector: Some(selector(&[("app", "web")])),
            namespace_selector: Some(selector(&[("team", "a")])),
            node_selector: None,
        }],
        destination_cidrs: dests.iter().map(|d| (*d).to_string()).collect(),
        egress_gateway: if gws.len() == 1 { gws.first().cloned() } else { None },
        egress_gateways: if gws.len() > 1 { Some(gws) } else { None },
        ..CiliumEgressGatewayPolicySpec::default()
    };
    serde_json::to_value(CiliumEgressGatewayPolicy::new(name, spec)).expect("json")
}

/// worker-1 with pods prod/web-1 (selected) and prod/db-1 (not); gateways
/// gateway-1 and gateway-2 (both `egress: "true"`, gateway-2 also `zone: b`).
async fn cluster() -> ApiServer {
    let s = ApiServer::start_new().await;
    populate(&s);
    s
}

/// The fixture's objects.
fn populate(s: &ApiServer) {
    s.apply(Res::Nodes, node(NODE, "192.0.2.11", "10.244.1.0/24", json!({}), "True"));
    s.apply(Res::Nodes, node("gateway-1", GW1, "10.244.3.0/24", json!({"egress": "true"}), "True"));
    s.apply(Res::Nodes, node("gateway-2", GW2, "10.244.4.0/24", json!({"egress": "true", "zone": "b"}), "True"));
    s.apply(Res::Namespaces, namespace("prod", "a"));
    s.apply(Res::Namespaces, namespace("dev", "b"));
    s.apply(Res::Pods, pod("prod", "web-1", "10.244.1.10", "web"));
    s.apply(Res::Pods, pod("prod", "db-1", "10.244.1.11", "db"));
    s.apply(Res::Policies, web_policy("web-out", &["0.0.0.0/0"], &[&[("egress", "true")]]));
}

fn via(gw: &str) -> String {
    format!("via {gw}")
}

/// The fixture's steady state.
fn initial(s: &Seen) -> bool {
    s.decision("prod/web-1") == Some(&via(GW1)) && s.decision("prod/db-1") == Some("pass")
}

/// The fixture served, and an agent that has compiled it.
async fn running() -> (ApiServer, Agent) {
    let server = cluster().await;
    let mut agent = start(&server).await;
    agent.until("the initial state", initial).await;
    (server, agent)
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_compile_waits_until_every_kind_has_listed() {
    let server = cluster().await;
    server.fail(Res::Policies, true);
    let mut agent = start(&server).await;
    // the other kinds list; policies cannot: no callback, not synced
    eventually("the other lists", || server.count(Req::List(Res::Pods)) > 0 && server.count(Req::List(Res::Nodes)) > 0)
        .await;
    let early = tokio::time::timeout(Duration::from_millis(700), agent.rx.recv()).await;
    assert!(early.is_err(), "compiled on a half-synced view: {early:?}");
    assert!(!agent.status.synced());
    assert_eq!(agent.status.reconciles(), 0);
    assert!(agent.status.errors() > 0, "the failing policy list is reported");
    let said = agent.status.last_error().expect("the last error");
    assert!(said.starts_with("ciliumegressgatewaypolicies: ") && said.contains("CRD installed"), "{said}");

    server.fail(Res::Policies, false);
    let first = agent.rx.recv().await.expect("a first compile");
    // the very first compile already sees everything
    assert!(initial(&first), "{first:#?}");
    assert_eq!(first.policies["web-out"].1, 1);
    assert!(agent.status.synced());
    assert_eq!(agent.status.reconciles(), 1, "the initial lists are one debounced compile");
    // paginated lists (page size 2, 3 nodes)
    assert!(server.count(Req::List(Res::Nodes)) >= 2);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_relabelled_and_deleted_recompile() {
    let (server, mut agent) = running().await;

    server.apply(Res::Pods, pod("prod", "web-2", "10.244.1.12", "web"));
    let s = agent.until("web-2 redirected", |s| s.decision("prod/web-2") == Some(&via(GW1))).await;
    assert_eq!(s.policies["web-out"].1, 2);

    server.apply(Res::Pods, pod("prod", "web-2", "10.244.1.12", "batch"));
    let s = agent.until("relabelled web-2 passes", |s| s.decision("prod/web-2") == Some("pass")).await;
    assert_eq!(s.policies["web-out"].1, 1);
    assert_eq!(s.decision("prod/web-1"), Some(via(GW1).as_str()));

    server.delete(Res::Pods, "prod/web-2");
    let s = agent.until("web-2 gone", |s| !s.decisions.contains_key("prod/web-2")).await;
    assert!(initial(&s), "{s:#?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_policy_recompiles() {
    let (server, mut agent) = running().await;

    // another gateway
    server.apply(Res::Policies, web_policy("web-out", &["0.0.0.0/0"], &[&[("zone", "b")]]));
    agent.until("web-1 through gateway-2", |s| s.decision("prod/web-1") == Some(&via(GW2))).await;

    // destinations that no longer include the external address
    server.apply(Res::Policies, web_policy("web-out", &["198.51.100.0/24"], &[&[("zone", "b")]]));
    let s = agent.until("web-1 passes", |s| s.decision("prod/web-1") == Some("pass")).await;
    assert!(s.policies["web-out"].0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_namespace_recompiles() {
    let (server, mut agent) = running().await;

    server.apply(Res::Namespaces, namespace("prod", "b"));
    let s = agent.until("prod no longer selected", |s| s.decision("prod/web-1") == Some("pass")).await;
    assert_eq!(s.policies["web-out"].1, 0);
    server.apply(Res::Namespaces, namespace("prod", "a"));
    agent.until("selected again", initial).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_node_not_ready_fails_over() {
    let server = cluster().await;
    // two gateway entries: web-1 is assigned one of them by its uid's hash
    server.apply(Res::Policies, web_policy("web-out", &["0.0.0.0/0"], &[&[("zone", "b")], &[("egress", "true")]]));
    let mut agent = start(&server).await;
    let s = agent
        .until("web-1 through one of two gateways", |s| s.policies["web-out"].3.matches("; gateway ").count() == 2)
        .await;
    let assigned = s.decision("prod/web-1").expect("web-1").to_string();
    let (name, ip, other) = if assigned == via(GW1) { ("gateway-1", GW1, GW2) } else { ("gateway-2", GW2, GW1) };
    assert_eq!(assigned, via(ip));

    let labels = if name == "gateway-1" { json!({"egress": "true"}) } else { json!({"egress": "true", "zone": "b"}) };
    let cidr = if name == "gateway-1" { "10.244.3.0/24" } else { "10.244.4.0/24" };
    server.apply(Res::Nodes, node(name, ip, cidr, labels.clone(), "False"));
    let s = agent.until("failover to the other gateway", |s| s.decision("prod/web-1") == Some(&via(other))).await;
    assert!(s.policies["web-out"].3.contains(" not Ready"), "{}", s.policies["web-out"].3);

    server.apply(Res::Nodes, node(name, ip, cidr, labels, "True"));
    agent.until("back to the assigned gateway", |s| s.decision("prod/web-1") == Some(&assigned)).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resource_version_relists_and_converges() {
    let (server, mut agent) = running().await;
    let lists = server.count(Req::List(Res::Pods));

    // hold new requests off, end the watches, change things while nobody
    // watches, and forget the history: the resumed watches are too old
    for r in [Res::Pods, Res::Namespaces, Res::Nodes, Res::Policies] {
        server.fail(r, true);
    }
    server.end_watches();
    server.apply(Res::Pods, pod("prod", "web-3", "10.244.1.13", "web"));
    server.delete(Res::Pods, "prod/db-1");
    server.compact();
    for r in [Res::Pods, Res::Namespaces, Res::Nodes, Res::Policies] {
        server.fail(r, false);
    }

    let s = agent
        .until("web-3 in, db-1 out", |s| {
            s.decision("prod/web-3") == Some(&via(GW1)) && !s.decisions.contains_key("prod/db-1")
        })
        .await;
    assert_eq!(s.policies["web-out"].1, 2);
    assert!(server.count(Req::Gone(Res::Pods)) >= 1, "the resumed watch was answered 410");
    assert!(server.count(Req::List(Res::Pods)) > lists, "pods were relisted");
    assert!(agent.status.relists() >= 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_connection_resumes_without_a_relist() {
    let (server, mut agent) = running().await;
    let (lists, watches) = (server.count(Req::List(Res::Pods)), server.count(Req::Watch(Res::Pods)));

    server.drop_watches();
    server.apply(Res::Pods, pod("prod", "web-4", "10.244.1.14", "web"));
    agent.until("web-4 redirected", |s| s.decision("prod/web-4") == Some(&via(GW1))).await;
    assert!(server.count(Req::Watch(Res::Pods)) > watches, "the watch was re-established");
    assert_eq!(server.count(Req::List(Res::Pods)), lists, "resumed from its resourceVersion, no relist");
    assert_eq!(server.count(Req::Gone(Res::Pods)), 0);

    // a clean end (the server's timeout) resumes too
    server.end_watches();
    server.delete(Res::Pods, "prod/web-4");
    agent.until("web-4 gone", |s| !s.decisions.contains_key("prod/web-4")).await;
    assert_eq!(server.count(Req::List(Res::Pods)), lists);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_server_resyncs() {
    let (server, mut agent) = running().await;

    server.stop();
    // changes while the API server is down (they are in etcd)
    server.apply(Res::Namespaces, namespace("prod", "b"));
    server.apply(Res::Pods, pod("dev", "web-5", "10.244.1.15", "web"));
    server.apply(Res::Namespaces, namespace("dev", "a"));
    server.start().await;

    let s = agent
        .until("prod deselected, dev selected", |s| {
            s.decision("prod/web-1") == Some("pass") && s.decision("dev/web-5") == Some(&via(GW1))
        })
        .await;
    assert_eq!(s.policies["web-out"].1, 1);
    assert!(agent.status.relists() >= 1, "the watch cache was rebuilt: 410, relist");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_are_reported_and_the_rest_compiles() {
    let (server, mut agent) = running().await;

    // a policy no CRD schema stopped: bad CIDR, selectors not a list
    server.apply(
        Res::Policies,
        json!({"metadata": {"name": "broken"},
               "spec": {"selectors": {"podSelector": {}}, "destinationCIDRs": ["10.0.0.0/33"],
                        "egressGateway": {"nodeSelector": {}}}}),
    );
    let s = agent.until("broken reported", |s| s.policies.contains_key("broken")).await;
    let (compiled, _, codes, summary) = &s.policies["broken"];
    assert!(!compiled);
    assert!(codes.contains(&"E0105") && codes.contains(&"E0103"), "{codes:?}");
    assert!(summary.starts_with("not compiled: error["), "{summary}");
    assert!(s.policies["web-out"].0 && initial(&s), "the other policy still compiles: {s:#?}");

    // a pod event that does not decode at all: an error, the watch goes on
    let errors = agent.status.errors();
    server.inject(Res::Pods, r#"{"type": "ADDED", "object": "not an object"}"#);
    server.apply(Res::Pods, pod("prod", "web-6", "10.244.1.16", "web"));
    agent.until("web-6 after the bad event", |s| s.decision("prod/web-6") == Some(&via(GW1))).await;
    assert!(agent.status.errors() > errors, "the undecodable event is counted");

    // fixing the policy compiles it
    server.apply(Res::Policies, web_policy("broken", &["198.51.100.0/24"], &[&[("zone", "b")]]));
    let s = agent.until("broken fixed", |s| s.policies["broken"].0).await;
    assert!(s.policies["broken"].2.is_empty());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_facts_do_not_recompile() {
    let (server, mut agent) = running().await;
    let before = agent.status.reconciles();
    // what a kubelet heartbeat and a container restart look like: new
    // resourceVersions, nothing egret reads
    let mut n = node(NODE, "192.0.2.11", "10.244.1.0/24", json!({}), "True");
    n["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-11-26T17:00:00Z");
    server.apply(Res::Nodes, n);
    let mut p = pod("prod", "web-1", "10.244.1.10", "web");
    p["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 3}]);
    server.apply(Res::Pods, p);
    // a real change after them, to know they were processed
    server.apply(Res::Pods, pod("prod", "web-7", "10.244.1.17", "web"));
    agent.until("web-7", |s| s.decisions.contains_key("prod/web-7")).await;
    assert_eq!(agent.status.reconciles(), before + 1, "only the real change recompiled");
    let pending: BTreeSet<usize> = std::iter::from_fn(|| agent.rx.try_recv().ok()).map(|s| s.decisions.len()).collect();
    assert!(pending.is_empty(), "no further compiles queued: {pending:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_keep_a_quiet_watch_resumable() {
    let (server, mut agent) = running().await;
    let lists = server.count(Req::List(Res::Pods));

    // the global resourceVersion moves on without any pod event
    for team in ["x", "y", "a"] {
        server.apply(Res::Namespaces, namespace("dev", team));
    }
    server.bookmark();
    // an undecodable line after the bookmark on the same stream: once it is
    // counted, the bookmark before it was processed
    let errors = agent.status.errors();
    server.inject(Res::Pods, r#"{"type": "ADDED", "object": 7}"#);
    eventually("the injected line processed", || agent.status.errors() > errors).await;
    // forget the history and end the watches: a pod watch resuming from its
    // last pod event would be too old; from the bookmark it is not
    server.compact();
    server.end_watches();
    server.apply(Res::Pods, pod("prod", "web-8", "10.244.1.18", "web"));
    agent.until("web-8", |s| s.decision("prod/web-8") == Some(&via(GW1))).await;
    assert_eq!(server.count(Req::Gone(Res::Pods)), 0, "resumed from the bookmark's version");
    assert_eq!(server.count(Req::List(Res::Pods)), lists);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_changes_still_compile_within_the_upper_bound() {
    let server = cluster().await;
    let config = WatchConfig { quiet: Duration::from_millis(200), max_delay: Duration::from_millis(600), ..config() };
    let mut agent = start_with(&server, config).await;
    agent.until("the initial state", initial).await;
    let before = agent.status.reconciles();
    // a change every 10 ms for 2 s: the quiet period never elapses, so only
    // the upper bound makes the callback run during the burst
    let burst = Instant::now();
    let mut changes = 0;
    while burst.elapsed() < Duration::from_secs(2) {
        changes += 1;
        server.apply(Res::Pods, pod("prod", "churn", "10.244.1.20", &format!("v{changes}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = agent.status.reconciles() - before;
    assert!(during >= 2, "{during} compiles during a 2 s burst with a 600 ms bound");
    assert!(during * 5 <= changes, "{during} compiles for {changes} changes: not debounced");
    // and the final state arrives
    server.apply(Res::Pods, pod("prod", "churn", "10.244.1.20", "web"));
    agent.until("the churn pod selected", |s| s.decision("prod/churn") == Some(&via(GW1))).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_finds_the_watch_idle_compiles_at_once() {
    let server = cluster().await;
    // a quiet period long enough to tell the edges apart
    let quiet = Duration::from_millis(600);
    let config = WatchConfig { quiet, max_delay: Duration::from_secs(2), leading: true, ..config() };
    let mut agent = start_with(&server, config).await;
    agent.until("the initial state", initial).await;
    tokio::time::sleep(quiet + Duration::from_millis(100)).await;
    let before = agent.status.reconciles();
    // idle: compiled without waiting for the quiet period
    let written = Instant::now();
    server.apply(Res::Pods, pod("prod", "lead", "10.244.1.21", "other"));
    agent.until("the leading change", |s| s.decisions.contains_key("prod/lead")).await;
    let took = written.elapsed();
    assert!(took < quiet / 2, "a leading change waited {took:?} (quiet period {quiet:?})");
    assert_eq!(agent.status.reconciles(), before + 1);
    // right after it, a burst: debounced into one compile after the quiet period
    let burst = Instant::now();
    for app in ["v0", "v1", "v2", "v3", "web"] {
        server.apply(Res::Pods, pod("prod", "lead", "10.244.1.21", app));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.until("the burst's last state", |s| s.decision("prod/lead") == Some(&via(GW1))).await;
    assert!(burst.elapsed() >= quiet, "the burst waited for the quiet period: {:?}", burst.elapsed());
    assert_eq!(agent.status.reconciles(), before + 2, "one compile for the whole burst");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nudge_recompiles_without_an_object_change() {
    let (_server, mut agent) = running().await;
    let before = agent.status.reconciles();
    agent.nudge.nudge();
    let s = agent.until("a nudged compile", |_| true).await;
    assert!(initial(&s));
    assert_eq!(agent.status.reconciles(), before + 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_syncs_over_tls_with_a_bearer_token_and_refuses_without() {
    let options = ServerOptions { tls: true, token: Some("s3cret-token".into()) };
    let server = ApiServer::start_with(options, None).await;
    populate(&server);
    assert!(server.url().starts_with("https://"));
    let mut agent = start(&server).await;
    agent.until("the initial state over TLS", initial).await;
    assert_eq!(server.count(Req::Unauthorized), 0);
    assert!(server.count(Req::List(Res::Pods)) >= 1);
    agent.shutdown().await;

    // the same kubeconfig without the token: 401 from the server
    let kc = server.kubeconfig().replace("token: s3cret-token", "token: wrong");
    let client = client_from(&kc).await;
    let err = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(client)
        .list(&Default::default())
        .await
        .expect_err("a wrong token is refused");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 401), "{err:?}");
    assert!(server.count(Req::Unauthorized) >= 1);

    // without the CA: the server's certificate is not trusted, nothing is served
    let lists = server.count(Req::List(Res::Pods));
    let kc: String = server
        .kubeconfig()
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    let client = client_from(&kc).await;
    let err = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(client)
        .list(&Default::default())
        .await
        .expect_err("an untrusted server certificate fails the handshake");
    assert!(!matches!(err, kube::Error::Api(_)), "no API answer without trust: {err:?}");
    assert_eq!(server.count(Req::List(Res::Pods)), lists);
}

async fn client_from(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

/// One agent per node of `server`'s cluster, each compiling its node and
/// publishing Events as `egret-agent --kube` does (`egret_kube::events`).
struct Reporters {
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn reporters(server: &ApiServer, nodes: &[&str]) -> Reporters {
    use egret_kube::events::{EventLog, Publisher, events_for};
    let (mut stops, mut tasks) = (Vec::new(), Vec::new());
    for node in nodes {
        let node = (*node).to_string();
        let client = server.client().await;
        let publisher = Publisher::new(client.clone(), &node);
        tasks.push(tokio::spawn(publisher.clone().run()));
        let watch = ClusterWatch::new(client, config());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut log = EventLog::default();
        tasks.push(tokio::spawn(watch.run(
            async move {
                let _ = stopped.await;
            },
            move |view, _batch| {
                let c = view.plan(&node, &Options::default(), None);
                publisher.queue(log.fresh(events_for(view, &c, &node)));
            },
        )));
        stops.push(stop);
    }
    Reporters { stops, tasks }
}

impl Drop for Reporters {
    fn drop(&mut self) {
        self.stops.clear();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `(policy, reporting node, type, reason)` of every Event created so far.
fn events(server: &ApiServer) -> BTreeSet<(String, String, String, String)> {
    server
        .events()
        .iter()
        .map(|e| {
            let instance = e["reportingInstance"].as_str().unwrap_or_default();
            let node = instance.strip_prefix("egret.dev/agent-").unwrap_or(instance);
            (
                e["regarding"]["name"].as_str().unwrap_or_default().to_string(),
                node.to_string(),
                e["type"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The reporter of `policy` among `nodes` (`(name, ready)`).
fn reporter_of(policy: &str, nodes: &[(&str, bool)]) -> String {
    let mut v = egret_kube::view::ClusterView::new();
    for (name, ready) in nodes {
        v.nodes.apply(egret_kube::view::NodeFacts {
            name: (*name).into(),
            ready: Some(if *ready { "True" } else { "False" }.into()),
            ..Default::default()
        });
    }
    egret_kube::events::reporter(&v, policy).expect("a reporter").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_get_events_from_their_reporter_and_gateways_only_when_their_outcome_changes() {
    let server = cluster().await;
    // two gateways (gateway-2 by zone, and one of the egress nodes)
    server.apply(Res::Policies, web_policy("web-out", &["0.0.0.0/0"], &[&[("zone", "b")], &[("egress", "true")]]));
    // a malformed policy
    server.apply(
        Res::Policies,
        json!({"metadata": {"name": "broken"},
               "spec": {"selectors": {"podSelector": {}}, "destinationCIDRs": ["10.0.0.0/33"],
                        "egressGateway": {"nodeSelector": {}}}}),
    );
    let nodes = [NODE, "gateway-1", "gateway-2"];
    let all_ready: Vec<(&str, bool)> = nodes.iter().map(|n| (*n, true)).collect();
    let _agents = reporters(&server, &nodes).await;

    // web-out: Compiled from its reporter and from each of its gateway nodes
    let mut want: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let row = |p: &str, n: &str, t: &str, r: &str| (p.to_string(), n.to_string(), t.to_string(), r.to_string());
    for n in [reporter_of("web-out", &all_ready), "gateway-1".into(), "gateway-2".into()] {
        want.insert(row("web-out", &n, "Normal", "Compiled"));
    }
    // broken: Rejected from its reporter only
    want.insert(row("broken", &reporter_of("broken", &all_ready), "Warning", "Rejected"));
    eventually("the first Events", || events(&server).len() >= want.len()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(events(&server), want);
    let broken = server.events().into_iter().find(|e| e["regarding"]["name"] == "broken").expect("broken's Event");
    let note = broken["note"].as_str().expect("note");
    assert!(note.contains("error[E0105]") && note.contains("error[E0103]"), "{note}");
    assert_eq!(broken["regarding"]["kind"], "CiliumEgressGatewayPolicy");
    assert_eq!(broken["metadata"]["namespace"], "default");
    assert!(broken["regarding"]["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // a change that leaves every outcome as it was creates no Event
    let created = server.count(Req::CreateEvent);
    server.apply(Res::Pods, pod("prod", "db-2", "10.244.1.12", "db"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.count(Req::CreateEvent), created, "{:#?}", server.events());

    // gateway-2 NotReady: web-out's reporter (a Ready node) warns
    server.apply(Res::Nodes, node("gateway-2", GW2, "10.244.4.0/24", json!({"egress": "true", "zone": "b"}), "False"));
    let now = [(NODE, true), ("gateway-1", true), ("gateway-2", false)];
    let warn = row("web-out", &reporter_of("web-out", &now), "Warning", "GatewayNotReady");
    eventually("GatewayNotReady from web-out's reporter", || events(&server).contains(&warn)).await;
    let last = server.events().into_iter().rev().find(|e| e["reason"] == "GatewayNotReady").expect("the warning");
    assert!(last["note"].as_str().is_some_and(|n| n.contains("gateway-2 (192.0.2.14) not Ready")), "{last:#}");

    // fixing the policy: Compiled from its reporter
    server.apply(Res::Policies, web_policy("broken", &["198.51.100.0/24"], &[&[("egress", "true")]]));
    let fixed = row("broken", &reporter_of("broken", &now), "Normal", "Compiled");
    eventually("broken compiled", || events(&server).contains(&fixed)).await;
}

/// `egret_kube::admit` through the real watch: a slow debounce (a minute) so
/// that only an admission can run the callback within [`WAIT`].
#[tokio::test]
async fn an_admitted_pod_is_compiled_at_once_and_keeps_its_sandboxs_addresses_until_released() {
    use egret_kube::admit::{Admission, Admit, Admitted};
    let s = cluster().await;
    let slow = WatchConfig { quiet: Duration::from_secs(60), max_delay: Duration::from_secs(60), ..config() };
    let watch = ClusterWatch::new(s.client().await, slow);
    let status = watch.status();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (admit_tx, admit_rx) = mpsc::unbounded_channel::<Admission>();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watch.run_admitting(
        async move {
            let _ = stopped.await;
        },
        Some(admit_rx),
        move |view, _| {
            let _ = tx.send(observe(view));
        },
    ));
    let ask = |admit: Admit| {
        let (reply, answer) = oneshot::channel();
        admit_tx.send(Admission { admit, reply }).expect("the watch takes admissions");
        async move { tokio::time::timeout(WAIT, answer).await.expect("answered in time").expect("answered") }
    };
    let deadline = Instant::now() + WAIT;
    while !status.synced() {
        assert!(Instant::now() < deadline, "the watch syncs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a new pod the API server has no address for yet (the kubelet writes it later)
    let pending = json!({"metadata": {"name": "web-2", "namespace": "prod", "labels": {"app": "web"}},
                         "spec": {"nodeName": NODE}, "status": {"phase": "Pending"}});
    s.apply(Res::Pods, pending.clone());
    let sandbox =
        |key: &str, ip: &str| Admit::Pod { key: key.into(), container_id: format!("c-{key}"), ips: vec![ip.into()] };
    assert_eq!(ask(sandbox("prod/ghost", "10.244.1.99")).await, Admitted::NotInView);
    // the watch may not have delivered web-2 yet: NotInView until it has
    let answer = loop {
        match ask(sandbox("prod/web-2", "10.244.1.20")).await {
            Admitted::NotInView if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            other => break other,
        }
    };
    assert_eq!(answer, Admitted::Reconciled);
    let seen = rx.recv().await.expect("the admission's callback");
    assert_eq!(seen.decision("prod/web-2"), Some(via(GW1).as_str()), "compiled with the sandbox's address: {seen:?}");
    // the API server updates the pod, still without an address: the view keeps the sandbox's
    let mut relabelled = pending.clone();
    relabelled["metadata"]["annotations"] = json!({"touched": "yes"});
    s.apply(Res::Pods, relabelled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = Admit::Facts {
        container_id: "c-db-2".into(),
        pod: egret_kube::view::PodFacts {
            namespace: "prod".into(),
            name: "db-2".into(),
            labels: [("app".to_owned(), "db".to_owned())].into(),
            node_name: Some(NODE.into()),
            ips: vec!["10.244.1.21".into()],
            ..egret_kube::view::PodFacts::default()
        },
    };
    assert_eq!(ask(db).await, Admitted::Reconciled);
    let seen = rx.recv().await.expect("the second admission's callback");
    assert_eq!(seen.decision("prod/web-2"), Some(via(GW1).as_str()), "{seen:?}");
    assert_eq!(seen.decision("prod/db-2"), Some("pass"), "{seen:?}");
    // DEL of web-2's sandbox: its address leaves the view (seen by the next callback)
    assert_eq!(ask(Admit::Release { container_id: "c-prod/web-2".into() }).await, Admitted::Released(1));
    assert_eq!(ask(Admit::Gc { valid: BTreeSet::from(["c-db-2".to_owned()]) }).await, Admitted::Released(1));
    assert_eq!(ask(sandbox("prod/web-1", "10.244.1.10")).await, Admitted::Reconciled);
    let seen = rx.recv().await.expect("a callback");
    assert_eq!(seen.decision("prod/web-2"), None, "released: no address, no endpoint: {seen:?}");
    assert_eq!(seen.decision("prod/web-1"), Some(via(GW1).as_str()));
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the watch stops").expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_scoped_watch_lists_its_own_pods_and_widens_atomically() {
    use egret_kube::view::PodScope;
    let server = cluster().await;
    // a pod on gateway-1 (the fixture's are on worker-1), selected too
    let mut remote = pod("prod", "web-gw", "10.244.3.10", "web");
    remote["spec"]["nodeName"] = json!("gateway-1");
    server.apply(Res::Pods, remote);
    let watch = ClusterWatch::new(server.client().await, config());
    let scope = watch.pod_scope();
    scope.set(PodScope::Node(NODE.into()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watch.run(
        async move {
            let _ = stopped.await;
        },
        move |view, _batch| {
            let pods: BTreeSet<String> = view.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
            let _ = tx.send((view.pod_scope.clone(), pods, observe(view)));
        },
    ));
    // worker-1's pods only; its plan is what the fixture's full view gives
    let (s, pods, seen) = scoped_next(&mut rx).await;
    assert_eq!(s, PodScope::Node(NODE.into()));
    assert_eq!(pods, BTreeSet::from(["prod/db-1".to_string(), "prod/web-1".to_string()]));
    assert!(initial(&seen), "{seen:#?}");
    assert!(seen.policies["web-out"].3.contains("selects 1 endpoint on node worker-1"), "{:?}", seen.policies);
    // a pod created on another node is not sent to this watch
    let mut other = pod("prod", "web-gw-2", "10.244.3.11", "web");
    other["spec"]["nodeName"] = json!("gateway-1");
    server.apply(Res::Pods, other);
    server.apply(Res::Pods, pod("prod", "web-2", "10.244.1.12", "web"));
    let (_, pods, _) = scoped_next(&mut rx).await;
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.contains("prod/web-2"));
    // widening: one relist, then every pod at once, the scope named
    let relists = server.count(Req::List(Res::Pods));
    scope.set(PodScope::All);
    let (s, pods, seen) = scoped_next(&mut rx).await;
    assert_eq!(s, PodScope::All);
    assert_eq!(pods.len(), 5, "{pods:?}");
    assert!(server.count(Req::List(Res::Pods)) > relists);
    assert!(seen.policies["web-out"].3.contains("selects 4 endpoints;"), "{:?}", seen.policies);
    // and narrowing again
    scope.set(PodScope::Node(NODE.into()));
    let (s, pods, _) = scoped_next(&mut rx).await;
    assert_eq!(s, PodScope::Node(NODE.into()));
    assert_eq!(pods.len(), 3, "{pods:?}");
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the watch stops").expect("no panic");
}

type ScopedSeen = (egret_kube::view::PodScope, BTreeSet<String>, Seen);

async fn scoped_next(rx: &mut mpsc::UnboundedReceiver<ScopedSeen>) -> ScopedSeen {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a callback within the bound").expect("the watch runs")
}

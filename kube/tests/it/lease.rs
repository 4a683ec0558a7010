//! Floating-IP Leases against the in-process API server
//! (`support/apiserver.rs`, over HTTPS with a bearer token): the server's
//! own Lease semantics (create, read, replace with optimistic concurrency,
//! delete, selectors, watch events), then `egret_kube::lease` on top of
//! them: one winner among concurrent acquirers, lost renewals, a preempt
//! that loses to a renewal, expiry, release, the owner table, and an
//! unreachable server. Every wait is bounded.

use egret_testkit::apiserver;

use apiserver::{ApiServer, Options, Req, Served};
use egret_kube::lease::{
    Acquire, Acquisition, FloatingLeases, LeaseConfig, LeaseError, LeaseProblem, Nonsense, OwnerTable, OwnerWatch,
    api_calls, lease_name,
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long any expected state may take to show.
const WAIT: Duration = Duration::from_secs(10);
/// The timeout of each lease call (generous: the tests run side by side).
const CALL: Duration = Duration::from_secs(3);
const NS: &str = "egret-system";
/// Scheduling slack allowed past a call's timeout (two cores, tests side by
/// side, CI building beside them): the point is that the call ends at its
/// timeout, well before the 5 s the test server holds its answer back — not
/// how precisely a loaded machine schedules it (TESTING.md: no duration is
/// asserted as a performance figure).
const SLACK: Duration = Duration::from_millis(1500);

async fn server() -> ApiServer {
    ApiServer::start_with(Options { tls: true, token: Some("lease-token".into()) }, None).await
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn api_status(e: &kube::Error) -> (u16, &str) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.as_str()),
        other => panic!("not an API error: {other}"),
    }
}

fn raw_lease(name: &str, labels: Value, holder: &str) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2}
    }))
    .expect("lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_creates_reads_and_replaces_leases_with_optimistic_concurrency() {
    let server = server().await;
    let client = server.client().await;
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();

    let e = api.get("a").await.expect_err("absent");
    assert_eq!(api_status(&e), (404, "NotFound"));
    let created = api.create(&pp, &raw_lease("a", json!({"app.kubernetes.io/managed-by": "egret"}), "n1")).await;
    let created = created.expect("created");
    let rv1 = created.metadata.resource_version.clone().expect("resourceVersion");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some(), "{created:?}");
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let e = api.create(&pp, &raw_lease("a", json!({}), "n2")).await.expect_err("exists");
    assert_eq!(api_status(&e), (409, "AlreadyExists"));

    // replace with the version read: accepted, a new version, uid kept
    let mut next = created.clone();
    next.spec.as_mut().expect("spec").holder_identity = Some("n2".into());
    let replaced = api.replace("a", &pp, &next).await.expect("replaced");
    let rv2 = replaced.metadata.resource_version.clone().expect("resourceVersion");
    assert!(rv2.parse::<u64>().expect("number") > rv1.parse::<u64>().expect("number"));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(replaced.metadata.creation_timestamp, created.metadata.creation_timestamp);
    // the stale version: 409 Conflict, as the real server answers
    let e = api.replace("a", &pp, &next).await.expect_err("stale");
    assert_eq!(api_status(&e), (409, "Conflict"));
    let kube::Error::Api(status) = &e else { unreachable!() };
    assert!(status.message.contains("the object has been modified"), "{}", status.message);
    assert_eq!(server.count(Req::Conflict), 1);
    assert_eq!(api.get("a").await.expect("a").spec.expect("spec").holder_identity.as_deref(), Some("n2"));
    // no version: an unconditional update
    let mut blind = next.clone();
    blind.metadata.resource_version = None;
    blind.spec.as_mut().expect("spec").holder_identity = Some("n3".into());
    api.replace("a", &pp, &blind).await.expect("unconditional update");
    // missing object, versions on create, invalid specs
    let e = api.replace("b", &pp, &raw_lease("b", json!({}), "n1")).await.expect_err("missing");
    assert_eq!(api_status(&e), (404, "NotFound"));
    let e = api.create(&pp, &next).await.expect_err("a version on create");
    assert_eq!(api_status(&e).0, 500);
    let mut zero = raw_lease("z", json!({}), "n1");
    zero.spec.as_mut().expect("spec").lease_duration_seconds = Some(0);
    assert_eq!(api_status(&api.create(&pp, &zero).await.expect_err("invalid")), (422, "Invalid"));

    // selectors, namespaced and cluster-wide lists
    let other: Api<Lease> = Api::namespaced(client.clone(), "elsewhere");
    let mut elsewhere = raw_lease("c", json!({"app.kubernetes.io/managed-by": "egret"}), "n1");
    elsewhere.metadata.namespace = Some("elsewhere".into());
    other.create(&pp, &elsewhere).await.expect("created elsewhere");
    api.create(&pp, &raw_lease("d", json!({"app": "other"}), "n1")).await.expect("d");
    let names = |l: kube::core::ObjectList<Lease>| -> Vec<String> {
        l.items.into_iter().map(|l| l.metadata.name.unwrap_or_default()).collect()
    };
    let egret = ListParams::default().labels("app.kubernetes.io/managed-by=egret");
    assert_eq!(names(api.list(&egret).await.expect("list")), ["a"]);
    assert_eq!(names(api.list(&ListParams::default()).await.expect("list")), ["a", "d"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app!=other")).await.expect("list")), ["a"]);
    let all: Api<Lease> = Api::all(client.clone());
    assert_eq!(names(all.list(&egret).await.expect("list")), ["a", "c"]);

    // a watch of egret's Leases in the namespace: writes as events; a Lease
    // relabelled out of the selector is DELETED, one relabelled in ADDED
    let watch = api.watch(&WatchParams::default().labels("app.kubernetes.io/managed-by=egret"), "0").await;
    let mut events = watch.expect("watch").boxed();
    let mut next_event = async || -> (String, String) {
        let e = tokio::time::timeout(WAIT, events.next()).await.expect("an event in time").expect("open");
        match e.expect("event") {
            WatchEvent::Added(l) => ("ADDED".into(), l.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(l) => ("MODIFIED".into(), l.metadata.name.unwrap_or_default()),
            WatchEvent::Deleted(l) => ("DELETED".into(), l.metadata.name.unwrap_or_default()),
            other => (format!("{other:?}"), String::new()),
        }
    };
    let mut next_change = async || loop {
        let (kind, name) = next_event().await;
        if !kind.starts_with("Bookmark") {
            return (kind, name);
        }
    };
    assert_eq!(next_change().await, ("ADDED".into(), "a".into()));
    let mut a = api.get("a").await.expect("a");
    a.spec.as_mut().expect("spec").holder_identity = Some("n4".into());
    let a = api.replace("a", &pp, &a).await.expect("replaced");
    assert_eq!(next_change().await, ("MODIFIED".into(), "a".into()));
    let mut d = api.get("d").await.expect("d");
    d.metadata.labels = Some([("app.kubernetes.io/managed-by".to_string(), "egret".to_string())].into());
    api.replace("d", &pp, &d).await.expect("relabelled in");
    assert_eq!(next_change().await, ("ADDED".into(), "d".into()));
    let mut out = a.clone();
    out.metadata.labels = None;
    api.replace("a", &pp, &out).await.expect("relabelled out");
    assert_eq!(next_change().await, ("DELETED".into(), "a".into()));
    api.delete("d", &DeleteParams::default()).await.expect("deleted");
    assert_eq!(next_change().await, ("DELETED".into(), "d".into()));
    assert_eq!(api_status(&api.get("d").await.expect_err("gone")), (404, "NotFound"));
    assert_eq!(api_status(&api.delete("d", &DeleteParams::default()).await.expect_err("gone")), (404, "NotFound"));
    // a delete precondition that fails
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions { resource_version: Some("1".into()), uid: None }),
        ..DeleteParams::default()
    };
    assert_eq!(api_status(&api.delete("a", &stale).await.expect_err("stale")), (409, "Conflict"));
    assert!(server.get(Served::Leases, "egret-system/a").is_some());
}

fn leases(client: &kube::Client) -> FloatingLeases {
    FloatingLeases::new(client.clone(), LeaseConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_eight_concurrent_acquirers_exactly_one_wins_every_time() {
    let server = server().await;
    let mut nodes = Vec::new();
    for i in 0..8 {
        nodes.push((format!("gateway-{i}"), leases(&server.client().await)));
    }
    let nodes = Arc::new(nodes);
    let reused = ip("2001:db8::1");
    let mut transitions_seen = Vec::new();
    for round in 0..30 {
        // the first 15 rounds race to create a new Lease, the last 15 to
        // take the same released one
        let target = if round < 15 { ip(&format!("192.0.2.{}", round + 1)) } else { reused };
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (nodes, barrier) = (Arc::clone(&nodes), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let (name, l) = &nodes[i];
                    barrier.wait().await;
                    (name.clone(), l.acquire(target, name, Acquire::IfFree, CALL).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            let (name, outcome) = t.await.expect("no panic");
            match outcome.unwrap_or_else(|e| panic!("round {round}: {name}: {e}")) {
                Acquisition::Won(s) => winners.push((name, s)),
                Acquisition::Lost { current } => losers.push(current.expect("the winner's lease")),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (winner, state) = &winners[0];
        assert!(state.held_by(winner));
        assert!(losers.iter().all(|s| s.held_by(winner)), "round {round}: every loser learns {winner}: {losers:?}");
        let stored = server.get(Served::Leases, &format!("egret-system/{}", lease_name(target))).expect("stored");
        assert_eq!(stored["spec"]["holderIdentity"], winner.as_str());
        if round >= 15 {
            transitions_seen.push(state.transitions);
            nodes[0].1.release(target, winner, CALL).await.unwrap_or_else(|e| panic!("{e}"));
        } else {
            assert_eq!(state.transitions, 0, "a created Lease has had no transition");
        }
    }
    // created in round 15, then taken after each release: one transition a round
    assert_eq!(transitions_seen, (0..15).collect::<Vec<i32>>());
    let stored = server.get(Served::Leases, "egret-system/egret-floating-2001-db8--1").expect("stored");
    assert_eq!(stored["metadata"]["labels"]["egret.dev/floating-ip"], "2001-db8--1");
    assert_eq!(stored["metadata"]["annotations"]["egret.dev/floating-ip"], "2001:db8::1");
    assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/managed-by"], "egret");
    assert_eq!(stored["spec"]["leaseDurationSeconds"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_by_a_node_that_does_not_hold_the_lease_is_lost() {
    let server = server().await;
    let l = leases(&server.client().await);
    let vip = ip("198.51.100.10");
    let e = l.renew(vip, "gateway-a", CALL).await.expect_err("no lease yet");
    assert!(matches!(&e, LeaseError::Lost { holder: None, .. }), "{e}");
    assert!(matches!(l.acquire(vip, "gateway-a", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    let e = l.renew(vip, "gateway-b", CALL).await.expect_err("not b's");
    assert!(e.is_lost() && !e.is_unreachable(), "{e}");
    assert_eq!(
        e.to_string(),
        "lease egret-system/egret-floating-198-51-100-10 is not held by gateway-b: it is held by gateway-a"
    );
    let e = l.release(vip, "gateway-b", CALL).await.expect_err("not b's");
    assert!(matches!(&e, LeaseError::Lost { holder: Some(h), .. } if h == "gateway-a"), "{e}");
    let before = l.read(vip, CALL).await.expect("read").expect("a lease");
    let renewed = l.renew(vip, "gateway-a", CALL).await.expect("a renews");
    assert!(renewed.renew_time > before.renew_time);
    assert_eq!(renewed.acquire_time, before.acquire_time);
    assert_eq!(renewed.transitions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempt_with_a_stale_version_loses_to_a_concurrent_renewal() {
    let server = server().await;
    let a = leases(&server.client().await);
    let b = leases(&server.client().await);
    let vip = ip("198.51.100.20");
    assert!(matches!(a.acquire(vip, "gateway-a", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    // b's write (after its read) is held back while a renews
    server.delay_lease_writes(1, Duration::from_millis(500));
    let preempt = tokio::spawn(async move { b.acquire(vip, "gateway-b", Acquire::Preempt, CALL).await });
    let deadline = Instant::now() + WAIT;
    while server.count(Req::Delayed) < 1 {
        assert!(Instant::now() < deadline, "b never wrote");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let renewed = a.renew(vip, "gateway-a", CALL).await.expect("a renews meanwhile");
    let outcome = preempt.await.expect("no panic").expect("an answer");
    let Acquisition::Lost { current: Some(current) } = outcome else { panic!("b won over a renewal: {outcome:?}") };
    assert!(current.held_by("gateway-a"), "{current:?}");
    assert_eq!(current.resource_version, renewed.resource_version, "b learns the renewed Lease");
    assert_eq!(server.count(Req::Conflict), 1, "b's write was refused for its stale version");
    // without a renewal in between, the preempt wins: the holder changes
    let b = leases(&server.client().await);
    let Acquisition::Won(taken) = b.acquire(vip, "gateway-b", Acquire::Preempt, CALL).await.expect("answer") else {
        panic!("b preempts")
    };
    assert!(taken.held_by("gateway-b") && !taken.expired());
    assert_eq!(taken.transitions, 1);
    let e = a.renew(vip, "gateway-a", CALL).await.expect_err("a lost it");
    assert!(e.is_lost(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_lease_can_be_taken_only_after_its_duration() {
    let server = server().await;
    let config = LeaseConfig { duration: Duration::from_secs(1), ..LeaseConfig::default() };
    let a = FloatingLeases::new(server.client().await, config.clone());
    let b = FloatingLeases::new(server.client().await, config);
    let vip = ip("198.51.100.30");
    let Acquisition::Won(held) = a.acquire(vip, "gateway-a", Acquire::IfFree, CALL).await.expect("answer") else {
        panic!("a acquires a free lease")
    };
    assert_eq!(held.duration, Duration::from_secs(1));
    let expires = held.expires_at().expect("renewed");
    let deadline = Instant::now() + WAIT;
    let mut refused = 0;
    let taken = loop {
        assert!(Instant::now() < deadline, "b never took the expired lease");
        let asked = SystemTime::now();
        match b.acquire(vip, "gateway-b", Acquire::IfFree, CALL).await.expect("answer") {
            Acquisition::Won(s) => {
                assert!(SystemTime::now() >= expires, "taken before it expired");
                break s;
            }
            Acquisition::Lost { current } => {
                assert!(asked < expires, "refused though expired when asked");
                assert!(current.expect("a's lease").held_by("gateway-a"));
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "b asked while a held it");
    assert!(taken.held_by("gateway-b") && taken.transitions == 1 && taken.acquire_time > held.acquire_time);
    assert!(a.renew(vip, "gateway-a", CALL).await.expect_err("taken").is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_acquired_by_another_at_once() {
    let server = server().await;
    let a = leases(&server.client().await);
    let b = leases(&server.client().await);
    let vip = ip("198.51.100.40");
    assert!(matches!(a.acquire(vip, "gateway-a", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    let lost = b.acquire(vip, "gateway-b", Acquire::IfFree, CALL).await.expect("answer");
    assert!(matches!(&lost, Acquisition::Lost { current: Some(s) } if s.held_by("gateway-a")), "{lost:?}");
    a.release(vip, "gateway-a", CALL).await.expect("released");
    let free = a.read(vip, CALL).await.expect("read").expect("still there");
    assert_eq!(free.holder, None);
    assert!(free.free_at(SystemTime::now()) && !free.expired(), "free though not expired: {free:?}");
    // someone else's label and finalizer on the Lease: kept by the takeover
    let key = format!("{NS}/{}", lease_name(vip));
    let mut marked = server.get(Served::Leases, &key).expect("stored");
    marked["metadata"]["labels"]["team"] = json!("net");
    marked["metadata"]["finalizers"] = json!(["example.com/keep"]);
    server.apply(Served::Leases, marked);
    let Acquisition::Won(s) = b.acquire(vip, "gateway-b", Acquire::IfFree, CALL).await.expect("answer") else {
        panic!("b acquires the released lease")
    };
    assert!(s.held_by("gateway-b"));
    assert_eq!(s.transitions, 1);
    let stored = server.get(Served::Leases, &key).expect("stored");
    assert_eq!(stored["metadata"]["labels"]["team"], "net");
    assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/managed-by"], "egret");
    assert_eq!(stored["metadata"]["finalizers"], json!(["example.com/keep"]));
    let e = a.release(vip, "gateway-a", CALL).await.expect_err("not a's any more");
    assert!(matches!(&e, LeaseError::Lost { holder: Some(h), .. } if h == "gateway-b"), "{e}");
}

/// Waits (bounded) until the table satisfies `pred`.
async fn table_until(
    rx: &mut tokio::sync::watch::Receiver<OwnerTable>,
    what: &str,
    pred: impl Fn(&OwnerTable) -> bool,
) -> OwnerTable {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = rx.borrow_and_update().clone();
        if pred(&t) {
            return t;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the owner watch ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; last table: {t:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_table_follows_transitions_and_reports_hand_edited_leases() {
    let server = server().await;
    let client = server.client().await;
    let l = leases(&client);
    let (one, two) = (ip("203.0.113.1"), ip("2001:db8::2"));
    assert!(matches!(l.acquire(one, "gateway-a", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    // someone else's Lease in the namespace: not egret's, never in the table
    server.apply(Served::Leases, json!({"metadata": {"name": "kube-vip", "namespace": NS}, "spec": {}}));

    let watch = OwnerWatch::new(client.clone(), &LeaseConfig::default());
    let mut rx = watch.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watch.run(async move {
        let _ = stopped.await;
    }));
    let t = table_until(&mut rx, "the first list", |t| t.synced).await;
    assert_eq!(t.holder(one), Some("gateway-a"));
    assert!(t.problems.is_empty() && t.owners.len() == 1, "{t:#?}");

    assert!(matches!(l.acquire(two, "gateway-b", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    table_until(&mut rx, "two held by b", |t| t.holder(two) == Some("gateway-b")).await;
    l.acquire(one, "gateway-c", Acquire::Preempt, CALL).await.expect("preempted");
    let t = table_until(&mut rx, "one taken by c", |t| t.holder(one) == Some("gateway-c")).await;
    assert_eq!(t.owners[&one].transitions, 1);

    // a hand edit: two's duration zero, and a Lease that names no address
    let key = format!("{NS}/{}", lease_name(two));
    let mut edited = server.get(Served::Leases, &key).expect("two's lease");
    edited["spec"]["leaseDurationSeconds"] = json!(0);
    server.apply(Served::Leases, edited);
    server.apply(
        Served::Leases,
        json!({"metadata": {"name": "egret-floating-junk", "namespace": NS,
                            "labels": {"app.kubernetes.io/managed-by": "egret"},
                            "annotations": {"egret.dev/floating-ip": "not-an-ip"}},
               "spec": {"holderIdentity": "gateway-a", "leaseDurationSeconds": 2}}),
    );
    let t = table_until(&mut rx, "two problems", |t| t.problems.len() == 2).await;
    let problem = &t.problems[&lease_name(two)];
    assert_eq!(problem.ip(), Some(two));
    assert!(matches!(problem, LeaseProblem::Nonsense { what: Nonsense::Duration { seconds: 0 }, .. }), "{problem}");
    assert_eq!(
        problem.to_string(),
        "lease egret-system/egret-floating-2001-db8--2 of 2001:db8::2: its leaseDurationSeconds 0 is not positive"
    );
    let junk = &t.problems["egret-floating-junk"];
    assert!(matches!(junk, LeaseProblem::NoAddress { value: Some(v), .. } if v == "not-an-ip"), "{junk}");
    assert_eq!(
        junk.to_string(),
        "lease egret-system/egret-floating-junk: annotation egret.dev/floating-ip \"not-an-ip\" is not an IP address"
    );
    assert_eq!(t.holder(one), Some("gateway-c"), "the other lease is unaffected");
    assert!(!t.owners.contains_key(&two));
    // reading it says what is wrong; acquiring writes it whole again
    let e = l.read(two, CALL).await.expect_err("a problem");
    assert!(matches!(e, LeaseError::Problem(_)), "{e}");
    let Acquisition::Won(repaired) = l.acquire(two, "gateway-a", Acquire::IfFree, CALL).await.expect("answer") else {
        panic!("a hand-edited lease is free")
    };
    assert_eq!((repaired.duration, repaired.transitions), (Duration::from_secs(2), 1), "b to a: one transition");
    let t = table_until(&mut rx, "two repaired", |t| t.holder(two) == Some("gateway-a")).await;
    assert_eq!(t.problems.keys().collect::<Vec<_>>(), ["egret-floating-junk"]);
    // no spec at all, an empty holder: problems too
    server.apply(
        Served::Leases,
        json!({"metadata": {"name": lease_name(one), "namespace": NS,
                            "labels": {"app.kubernetes.io/managed-by": "egret"},
                            "annotations": {"egret.dev/floating-ip": "203.0.113.1"}}}),
    );
    let t = table_until(&mut rx, "one without spec", |t| t.problems.contains_key(&lease_name(one))).await;
    assert!(matches!(t.problems[&lease_name(one)], LeaseProblem::Nonsense { what: Nonsense::NoSpec, .. }));
    let mut empty = server.get(Served::Leases, &format!("{NS}/{}", lease_name(one))).expect("one");
    empty["spec"] = json!({"holderIdentity": "", "leaseDurationSeconds": 2});
    server.apply(Served::Leases, empty);
    table_until(&mut rx, "one with an empty holder", |t| {
        matches!(t.problems.get(&lease_name(one)), Some(LeaseProblem::Nonsense { what: Nonsense::EmptyHolder, .. }))
    })
    .await;
    // deleted: gone from the table
    server.delete(Served::Leases, &format!("{NS}/{}", lease_name(one)));
    server.delete(Served::Leases, &format!("{NS}/egret-floating-junk"));
    let t = table_until(&mut rx, "deletions", |t| t.problems.is_empty()).await;
    assert_eq!(t.owners.keys().copied().collect::<Vec<_>>(), [two]);

    // every Lease call made is one the RBAC grants
    let granted: Vec<&str> = api_calls().iter().map(|c| c.verb).collect();
    for verb in ["list", "watch", "get", "create", "update", "delete"] {
        let n = server.count(Req::Lease(verb));
        assert!(n == 0 || granted.contains(&verb), "{n} Lease {verb} calls, not granted by lease::api_calls()");
    }
    assert!(server.count(Req::Lease("watch")) > 0 && server.count(Req::Lease("update")) > 0);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the watch stops").expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_against_an_unreachable_server_fails_within_its_timeout() {
    let server = server().await;
    let l = leases(&server.client().await);
    let vip = ip("198.51.100.50");
    assert!(matches!(l.acquire(vip, "gateway-a", Acquire::IfFree, CALL).await, Ok(Acquisition::Won(_))));
    let budget = Duration::from_millis(150);
    // a server that does not answer in time
    server.delay_lease_writes(1, Duration::from_secs(5));
    let t0 = Instant::now();
    let e = l.renew(vip, "gateway-a", budget).await.expect_err("no answer in time");
    let took = t0.elapsed();
    assert!(matches!(e, LeaseError::TimedOut { .. }) && e.is_unreachable() && !e.is_lost(), "{e}");
    assert!(took >= budget && took < budget + SLACK, "{took:?}");
    assert_eq!(
        e.to_string(),
        "lease egret-system/egret-floating-198-51-100-50: no answer from the API server within 150 ms"
    );
    // a stopped server: refused at once
    server.stop();
    let t0 = Instant::now();
    let e = l.renew(vip, "gateway-a", budget).await.expect_err("stopped");
    assert!(e.is_unreachable() && !e.is_lost(), "{e}");
    assert!(t0.elapsed() < budget + SLACK, "{:?}", t0.elapsed());
    // back: the holder renews again
    server.start().await;
    let s = l.renew(vip, "gateway-a", CALL).await.expect("renewed after the restart");
    assert!(s.held_by("gateway-a"));
}

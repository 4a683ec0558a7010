//! What the trimmed view costs per pod, against keeping full API objects.
//!
//! `cargo run --release -p egret-kube --example view_memory [PODS]`
//!
//! Generates PODS (default 20,000) realistic Pod objects as the API server
//! sends them (managedFields, two containers with env and probes, status
//! with conditions and container statuses), then measures the live heap
//! (a counting allocator) after decoding all of them three ways and keeping
//! the result: as `k8s_openapi` Pods (what a default reflector holds), as
//! egret's trimmed wire type, and as the view's facts (what the agent keeps).
//! Prints bytes per pod for each; the JSON text itself is allocated before
//! each baseline and is not counted.
//!
//! Measured here (2026-11-26, 20,000 pods of ~3.4 KB JSON each; requested
//! bytes, allocator overhead not included): k8s_openapi Pod 27,588 B/pod,
//! trimmed wire type 1,205 B/pod, view facts 1,094 B/pod (4.0% of full).

#![expect(unsafe_code, reason = "a counting global allocator; it only forwards to the system allocator")]

use egret_kube::view::{PodFacts, Table};
use egret_kube::wire::{IntoFacts, PodWire};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn pod(i: usize) -> String {
    let ns = format!("team-{}", i % 50);
    let name = format!("api-{}-7d9c5b-{:05}", i % 300, i);
    let ip = format!("10.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) % 256, i % 256);
    let node = format!("node-{}", i % 500);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("7c22952d-25a0-409d-952c-{i:012}"),
            "resourceVersion": (1_000_000 + i).to_string(), "generateName": "api-7d9c5b-",
            "creationTimestamp": "2026-11-26T10:00:00Z",
            "labels": {"app": format!("api-{}", i % 300), "pod-template-hash": "7d9c5b", "tier": "backend",
                       "use-egress-gateway": if i.is_multiple_of(3) { "true" } else { "false" }},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T08:00:00Z",
                            "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9c5b",
                                 "uid": "1b2c3d4e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-26T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:tier": {}}},
                              "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-26T10:00:05Z",
                 "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}, "f:podIPs": {}}}}
            ]
        },
        "spec": {
            "nodeName": node, "serviceAccountName": "api", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [
                {"name": "app", "image": "registry.invalid/api:1.42.0", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                 "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_HOST", "value": "db.prod.svc"},
                         {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]},
                {"name": "proxy", "image": "registry.invalid/proxy:2.1", "args": ["--port=15001", "--admin=15000"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}
            ],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running", "hostIP": "192.0.2.10", "podIP": ip, "podIPs": [{"ip": ip}], "qosClass": "Burstable",
            "startTime": "2026-11-26T10:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T10:00:09Z"},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-26T10:00:09Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T10:00:00Z"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "image": "registry.invalid/api:1.42.0",
                 "imageID": "registry.invalid/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                 "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                 "state": {"running": {"startedAt": "2026-11-26T10:00:05Z"}}},
                {"name": "proxy", "ready": true, "restartCount": 0, "image": "registry.invalid/proxy:2.1",
                 "imageID": "registry.invalid/proxy@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
                 "containerID": "containerd://fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
                 "state": {"running": {"startedAt": "2026-11-26T10:00:06Z"}}}
            ]
        }
    })
    .to_string()
}

/// Live bytes held after `keep` decodes every text and keeps the result.
fn held<T>(texts: &[String], keep: impl Fn(&str) -> T) -> (isize, Vec<T>) {
    let before = live();
    let kept: Vec<T> = texts.iter().map(|t| keep(t)).collect();
    (live() - before, kept)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let texts: Vec<String> = (0..n).map(pod).collect();
    let json_bytes: usize = texts.iter().map(String::len).sum();

    let (full, kept) = held(&texts, |t| serde_json::from_str::<k8s_openapi::api::core::v1::Pod>(t).expect("a Pod"));
    drop(kept);
    let (wire, kept) = held(&texts, |t| serde_json::from_str::<PodWire>(t).expect("a Pod"));
    drop(kept);
    let before = live();
    let mut table = Table::<PodFacts>::default();
    for t in &texts {
        table.apply(serde_json::from_str::<PodWire>(t).expect("a Pod").into_facts());
    }
    let facts = live() - before;
    assert_eq!(table.len(), n);

    let per = |b: isize| b as f64 / n as f64;
    println!("{n} pods, {:.0} bytes of JSON each", json_bytes as f64 / n as f64);
    println!("k8s_openapi Pod kept:        {:>8.0} bytes/pod", per(full));
    println!("egret trimmed wire (PodWire): {:>7.0} bytes/pod", per(wire));
    println!("egret view facts (Table):     {:>7.0} bytes/pod", per(facts));
    println!("view / full: {:.1}%", 100.0 * facts as f64 / full as f64);
}

//! README's snapshot recipe, end to end against the in-process API server:
//! the cluster's Nodes, Namespaces and Pods are on the server, each node's
//! agent publishes its `NodeNetwork` (`egret_kube::node_network::publish`,
//! what `egret-agent --kube` runs), then the objects are listed as
//! `kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml` prints them
//! (one `kind: List`, items with `apiVersion` and `kind`) and that snapshot
//! makes `egret lint --cluster` report the wrong egress IP (E0306) that a
//! snapshot without NodeNetworks can only say it could not check (W0315).

use egret_kube::node_network::{Published, publish};
use egret_lang::load;
use egret_lang::source::SourceMap;
use egret_testkit::apiserver::{ApiServer, Req, yaml_objects};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Every object of a kind, as JSON with its `apiVersion` and `kind` (as kubectl prints list items).
async fn all<K>(client: &kube::Client) -> Vec<Value>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = kube::Api::all(client.clone());
    let list = api.list(&Default::default()).await.expect("list");
    list.items.iter().map(|o| serde_json::to_value(o).expect("json")).collect()
}

/// What `kubectl get nodes,namespaces,pods[,nodenetworks] -A -o yaml` prints.
async fn kubectl_get_yaml(client: &kube::Client, with_node_networks: bool) -> String {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
    let mut items = all::<Node>(client).await;
    items.extend(all::<Namespace>(client).await);
    let pods: kube::Api<Pod> = kube::Api::all(client.clone());
    items.extend(
        pods.list(&Default::default())
            .await
            .expect("pods")
            .items
            .iter()
            .map(|p| serde_json::to_value(p).expect("json")),
    );
    if with_node_networks {
        items.extend(all::<egret_kube::node_network::NodeNetwork>(client).await);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
    serde_yaml::to_string(&list).expect("yaml")
}

/// `egret lint --cluster SNAPSHOT POLICY`: the codes it reports.
fn lint(snapshot: &str, policy: &Path) -> Vec<(&'static str, String)> {
    let mut sources = SourceMap::new();
    let mut loaded = load::load(&mut sources, &[policy.to_path_buf()]);
    loaded.extend(load::parse_text(&mut sources, "snapshot.yaml", snapshot.to_string()));
    let mut diags = loaded.diagnostics;
    diags.extend(egret_compiler::lint::lint(
        &loaded.bundle,
        &egret_compiler::lint::Options { snapshot: true, service_cidrs: Vec::new() },
    ));
    diags.into_iter().map(|d| (d.code.id, d.message)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_snapshot_with_published_node_networks_finds_a_wrong_egress_ip() {
    let server = ApiServer::start_new().await;
    let cluster: String = ["nodes.yaml", "namespaces.yaml", "pods.yaml"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(repo("examples/cluster").join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let objects = yaml_objects(&cluster);
    assert!(objects.len() >= 5, "the example cluster's nodes, namespaces and pods");
    for (res, obj) in objects {
        server.apply(res, obj);
    }
    let client = server.client().await;

    // each gateway's agent publishes its node's facts (here: the example's, as read from the node)
    let facts_text = std::fs::read_to_string(repo("examples/cluster/nodenetwork.yaml")).expect("nodenetwork.yaml");
    let (bundle, diags) = egret_lang::k8s::parse_yaml(egret_lang::FileId(0), &facts_text);
    assert!(diags.is_empty(), "{diags:?}");
    let facts = &bundle.cluster.node_networks;
    assert!(!facts.is_empty());
    for f in facts {
        assert_eq!(publish(&client, f).await.expect("publish"), Published::Created);
        assert_eq!(publish(&client, f).await.expect("publish"), Published::Unchanged, "kept, not rewritten");
    }
    assert_eq!(server.count(Req::NodeNetwork("create")), facts.len());
    assert_eq!(server.count(Req::NodeNetwork("update")), 0);

    let policy = repo("compiler/tests/fixtures/article/option1-static-egress-ip.yaml");
    let with = kubectl_get_yaml(&client, true).await;
    assert!(with.starts_with("apiVersion: v1\nitems:") || with.contains("kind: List"), "{with}");
    let found = lint(&with, &policy);
    let e0306: Vec<&String> = found.iter().filter(|(c, _)| *c == "E0306").map(|(_, m)| m).collect();
    assert_eq!(
        e0306,
        [&"egress IP 192.168.1.100 is not on any interface of gateway node `gateway-1`".to_string()],
        "{found:?}"
    );
    assert!(!found.iter().any(|(c, _)| *c == "W0315"), "{found:?}");

    // without the NodeNetworks the check cannot run, and lint says so
    let without = kubectl_get_yaml(&client, false).await;
    let found = lint(&without, &policy);
    assert!(!found.iter().any(|(c, _)| *c == "E0306"), "{found:?}");
    assert!(found.iter().any(|(c, m)| *c == "W0315" && m.contains("`gateway-1`")), "{found:?}");

    // the node's facts change (an address added): the agent's next publish replaces the object
    let mut changed = facts[0].clone();
    changed.interfaces[0].addresses.push("192.168.1.100/32".parse().expect("cidr"));
    assert_eq!(publish(&client, &changed).await.expect("publish"), Published::Updated);
    assert_eq!(server.count(Req::NodeNetwork("update")), 1);
    let found = lint(&kubectl_get_yaml(&client, true).await, &policy);
    assert!(!found.iter().any(|(c, _)| *c == "E0306"), "the egress IP is on gateway-1 now: {found:?}");
}

//! The manifests in `deploy/` against the code: every object deserializes
//! into its k8s-openapi type and serializes back to the same document (so
//! no field is misspelled or misplaced), the CRD file is the CRD the policy
//! type generates, the ClusterRole grants exactly the cluster-wide calls the
//! agent makes and the Role exactly its Lease calls in its namespace,
//! the DaemonSet runs unprivileged with the minimum capabilities, and the
//! kustomization lists every manifest.
//!
//! `EGRET_UPDATE_CRD=1 cargo test -p egret-kube --release --test it manifests`
//! rewrites `deploy/cilium-crd/crd.yaml` and `deploy/base/nodenetwork-crd.yaml`
//! from the types, and the Helm chart's copies (`charts/egret/files/`).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

/// `deploy/FILE` and the chart's `files/CHART_FILE` hold `generated`, as
/// generated from `type_path` (rewritten first with `EGRET_UPDATE_CRD=1`);
/// the file parsed back.
fn generated_crd_file(
    file: &str,
    chart_file: &str,
    type_path: &str,
    generated: &CustomResourceDefinition,
) -> CustomResourceDefinition {
    let path = deploy(file);
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/egret/files").join(chart_file);
    let text = format!(
        "# Generated from {type_path}; do not edit.\n\
         # Regenerate: EGRET_UPDATE_CRD=1 cargo test -p egret-kube --release --test it manifests\n{}",
        serde_yaml::to_string(generated).expect("yaml")
    );
    if std::env::var("EGRET_UPDATE_CRD").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write deploy/{file}: {e}"));
        std::fs::write(&chart, &text).unwrap_or_else(|e| panic!("write {}: {e}", chart.display()));
    }
    let in_chart = std::fs::read_to_string(&chart).unwrap_or_else(|e| panic!("{}: {e}", chart.display()));
    assert_eq!(in_chart, text, "{} differs from the type; regenerate it (see the module doc)", chart.display());
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
    let parsed: CustomResourceDefinition =
        serde_yaml::from_str(&on_disk).unwrap_or_else(|e| panic!("deploy/{file} is not a CRD: {e}"));
    assert_eq!(&parsed, generated, "deploy/{file} differs from the type; regenerate it (see the module doc)");
    assert_eq!(on_disk, text, "deploy/{file} is not formatted as generated; regenerate it");
    parsed
}

#[test]
fn the_crd_file_is_the_generated_crd() {
    let parsed = generated_crd_file(
        "cilium-crd/crd.yaml",
        "cilium-crd.yaml",
        "egret_kube::crd::CiliumEgressGatewayPolicy",
        &egret_kube::crd::crd(),
    );
    assert_eq!(parsed.spec.group, "cilium.io");
    assert_eq!(parsed.spec.scope, "Cluster");
    let v2 = &parsed.spec.versions[0];
    assert_eq!((v2.name.as_str(), v2.served, v2.storage), ("v2", true, true));
    let schema = serde_json::to_value(&v2.schema).expect("schema");
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let mut required: Vec<&str> =
        spec["required"].as_array().expect("required").iter().filter_map(serde_json::Value::as_str).collect();
    required.sort_unstable();
    assert_eq!(required, ["destinationCIDRs", "selectors"]);
    assert_eq!(spec["properties"]["destinationCIDRs"]["items"]["format"], "cidr");
}

#[test]
fn the_node_network_crd_file_is_the_generated_crd() {
    let parsed = generated_crd_file(
        "base/nodenetwork-crd.yaml",
        "nodenetwork-crd.yaml",
        "egret_kube::node_network::NodeNetwork",
        &egret_kube::node_network::crd(),
    );
    assert_eq!(parsed.spec.group, "egret.dev");
    assert_eq!(parsed.spec.scope, "Cluster");
    assert_eq!(parsed.spec.names.plural, "nodenetworks");
    assert_eq!(parsed.spec.versions[0].name, "v1alpha1");
}

/// The documents of a YAML file, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v = serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
            serde_json::to_value(v).expect("json")
        })
        .collect()
}

/// Deserializes a document into `T` and checks it serializes back to the
/// same document: a field k8s-openapi does not know would be lost.
fn typed<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
    let back = serde_json::to_value(&t).expect("serializes");
    assert_eq!(&back, doc, "deploy/{file}: a field does not belong where it is written");
    t
}

/// The one document of a manifest file, typed.
fn manifest<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let docs = documents(file);
    assert_eq!(docs.len(), 1, "deploy/{file} holds one object");
    typed(file, &docs[0])
}

#[test]
fn every_manifest_is_a_valid_typed_object_and_the_kustomization_lists_them() {
    let files: BTreeSet<String> = std::fs::read_dir(deploy("base"))
        .expect("deploy/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    for f in &files {
        for doc in documents(&format!("base/{f}")) {
            match doc["kind"].as_str() {
                Some("Namespace") => drop(typed::<Namespace>(f, &doc)),
                Some("ServiceAccount") => drop(typed::<ServiceAccount>(f, &doc)),
                Some("ClusterRole") => drop(typed::<ClusterRole>(f, &doc)),
                Some("ClusterRoleBinding") => drop(typed::<ClusterRoleBinding>(f, &doc)),
                Some("Role") => drop(typed::<Role>(f, &doc)),
                Some("RoleBinding") => drop(typed::<RoleBinding>(f, &doc)),
                Some("DaemonSet") => drop(typed::<DaemonSet>(f, &doc)),
                Some("CustomResourceDefinition") => drop(typed::<CustomResourceDefinition>(f, &doc)),
                other => panic!("deploy/{f}: unexpected kind {other:?}"),
            }
        }
    }
    let k = &documents("base/kustomization.yaml")[0];
    let listed: BTreeSet<String> =
        k["resources"].as_array().expect("resources").iter().filter_map(Value::as_str).map(str::to_string).collect();
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");
    let ns: Namespace = manifest("base/namespace.yaml");
    assert_eq!(k["namespace"].as_str(), ns.metadata.name.as_deref());
}

/// What rules grant, as (group, resource, verb); none twice, none
/// limited to names or on non-resource URLs.
fn grants(rules: Option<&[PolicyRule]>) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for r in rules.unwrap_or_default() {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none(), "{r:?}");
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                for v in &r.verbs {
                    assert!(granted.insert((g.clone(), res.clone(), v.clone())), "granted twice: {g}/{res} {v}");
                }
            }
        }
    }
    granted
}

fn calls(calls: Vec<egret_kube::watch::ApiCall>) -> BTreeSet<(String, String, String)> {
    calls.into_iter().map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string())).collect()
}

#[test]
fn the_cluster_role_grants_exactly_what_the_agent_calls() {
    let role: ClusterRole = manifest("base/clusterrole.yaml");
    assert_eq!(grants(role.rules.as_deref()), calls(egret_kube::watch::api_calls()));

    let binding: ClusterRoleBinding = manifest("base/clusterrolebinding.yaml");
    let sa: ServiceAccount = manifest("base/serviceaccount.yaml");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!((subjects[0].kind.as_str(), Some(&subjects[0].name)), ("ServiceAccount", sa.metadata.name.as_ref()));
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

#[test]
fn the_daemonset_runs_unprivileged_with_the_minimum_capabilities() {
    let ds: DaemonSet = manifest("base/daemonset.yaml");
    let sa: ServiceAccount = manifest("base/serviceaccount.yaml");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    let [agent] = &pod.containers[..] else { panic!("one container") };
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.as_deref().unwrap_or_default().iter().map(String::as_str).collect();
    assert_eq!(added, BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]));
    // the host's bpffs, where generations are pinned
    let vols = pod.volumes.as_deref().unwrap_or_default();
    let bpffs = vols.iter().find(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/sys/fs/bpf")).expect("bpffs");
    let mounts = agent.volume_mounts.as_deref().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.name == bpffs.name && m.mount_path == "/sys/fs/bpf"));
    // the node name comes from the downward API and reaches --node
    let env = agent.env.as_deref().unwrap_or_default();
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
    let args = agent.args.as_deref().unwrap_or_default();
    assert!(args.windows(2).any(|w| w[0] == "--node" && w[1] == "$(NODE_NAME)"), "{args:?}");
    // probes on the metrics port
    let port = agent.ports.as_deref().unwrap_or_default()[0].container_port;
    for (probe, path) in [(&agent.liveness_probe, "/healthz"), (&agent.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port));
    }
}

#[test]
fn the_daemonset_installs_egret_cni_before_the_agent_and_removes_it_when_the_agent_stops() {
    let ds: DaemonSet = manifest("base/daemonset.yaml");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    let [install] = pod.init_containers.as_deref().unwrap_or_default() else { panic!("one init container") };
    let args = install.args.as_deref().unwrap_or_default();
    assert_eq!(install.command.as_deref(), Some(&["/usr/local/bin/egret-cni".to_string()][..]));
    assert_eq!(args.first().map(String::as_str), Some("install"));
    let sc = install.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.as_ref()), None, "installing needs no capability");
    let [agent] = &pod.containers[..] else { panic!("one container") };
    let agent_args = agent.args.as_deref().unwrap_or_default();
    let value = |args: &[String], flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
    // the plugin is told the socket and the summary the agent serves and writes
    assert_eq!(value(args, "--socket"), value(agent_args, "--cni-socket"));
    assert_eq!(value(args, "--selection-file"), value(agent_args, "--cni-selection-file"));
    assert!(value(agent_args, "--cni-socket").is_some_and(|s| s.starts_with("/run/egret/")));
    let stop = agent.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|h| h.exec.as_ref());
    let stop = stop.and_then(|e| e.command.clone()).unwrap_or_default();
    assert_eq!(stop.get(1).map(String::as_str), Some("uninstall"), "{stop:?}");
    // the directories, from the host, in both containers
    let vols = pod.volumes.as_deref().unwrap_or_default();
    for (host, at) in
        [("/opt/cni/bin", "/host/opt/cni/bin"), ("/etc/cni/net.d", "/host/etc/cni/net.d"), ("/run/egret", "/run/egret")]
    {
        let v = vols.iter().find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host)).expect(host);
        let mounted = |c: &k8s_openapi::api::core::v1::Container| {
            c.volume_mounts.as_deref().unwrap_or_default().iter().any(|m| m.name == v.name && m.mount_path == at)
        };
        assert!(mounted(agent), "{host} in the agent");
        assert!(host == "/run/egret" || mounted(install), "{host} in the installer");
        assert!(args.iter().chain(&stop).any(|a| a == at) || host == "/run/egret", "{at} used");
    }
}

#[test]
fn the_role_grants_exactly_the_lease_calls_in_the_agents_namespace() {
    let role: Role = manifest("base/role.yaml");
    assert_eq!(grants(role.rules.as_deref()), calls(egret_kube::lease::api_calls()));
    // the Leases' namespace by default is the agent's
    let sa: ServiceAccount = manifest("base/serviceaccount.yaml");
    let ns = egret_kube::lease::LeaseConfig::default().namespace;
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));
    // no Lease call is granted cluster-wide
    let cluster: ClusterRole = manifest("base/clusterrole.yaml");
    assert!(grants(cluster.rules.as_deref()).iter().all(|(g, _, _)| g != "coordination.k8s.io"));

    let binding: RoleBinding = manifest("base/rolebinding.yaml");
    assert_eq!(binding.metadata.namespace, role.metadata.namespace);
    assert_eq!((binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)), ("Role", role.metadata.name.as_ref()));
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!((subjects[0].kind.as_str(), Some(&subjects[0].name)), ("ServiceAccount", sa.metadata.name.as_ref()));
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

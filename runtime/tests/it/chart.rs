//! The Helm chart (`charts/egret`) with the real `helm` (v4) and `kubectl`
//! (1.33, kustomize) that `.ci/run` installs into `.ci/kube-tools/`:
//! `helm lint` passes with every option; `helm template` with the defaults
//! renders the objects `kubectl kustomize deploy/` renders, as Kubernetes
//! types, apart from the documented differences (Helm's own labels on each
//! object, `helm.sh/resource-policy: keep` on the CRDs); each value reaches
//! its object; the alerts and the dashboard use only metrics the agent
//! exports; a kustomization overriding the image as README says changes
//! both containers' image. Without the tools the test prints a line and
//! returns, and fails under `EGRET_REQUIRE_PRIVILEGED=1` (CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `.ci/kube-tools/NAME`, or `None` (after saying so) when it is missing.
fn tool(test: &str, name: &str) -> Option<PathBuf> {
    let path = repo().join(".ci/kube-tools").join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("EGRET_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: {} is missing (.ci/run installs it)",
        path.display()
    );
    println!("skipped {test}: no {} (.ci/run installs it)", path.display());
    None
}

/// Runs `program args…`; its stdout (panics with stderr on failure).
fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).current_dir(repo()).output().expect("run the tool");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every object of a multi-document YAML stream, by `Kind/name`.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde_yaml::Value::deserialize(doc)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .expect("a YAML document");
        if v.is_null() {
            continue;
        }
        let key = format!("{}/{}", v["kind"].as_str().unwrap_or("?"), v["metadata"]["name"].as_str().unwrap_or("?"));
        assert!(out.insert(key.clone(), v).is_none(), "{key} twice");
    }
    out
}

/// `v` with every number as a float (`0` and `0.0` are the same number
/// to YAML's readers; Helm writes one, the CRD generator the other).
fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(|| v.clone(), |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect()),
        other => other.clone(),
    }
}

/// The object through its Kubernetes type and back: a field that does
/// not belong where it is written fails here.
fn typed(key: &str, v: &Value) -> Value {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(key: &str, v: &Value) -> Value {
        let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{key}: {e}"));
        let back = serde_json::to_value(&t).expect("serializes");
        assert_eq!(
            numbers_as_floats(&back),
            numbers_as_floats(v),
            "{key}: a field does not belong where it is written"
        );
        back
    }
    match v["kind"].as_str() {
        Some("Namespace") => through::<Namespace>(key, v),
        Some("ServiceAccount") => through::<ServiceAccount>(key, v),
        Some("ClusterRole") => through::<ClusterRole>(key, v),
        Some("ClusterRoleBinding") => through::<ClusterRoleBinding>(key, v),
        Some("Role") => through::<Role>(key, v),
        Some("RoleBinding") => through::<RoleBinding>(key, v),
        Some("DaemonSet") => through::<DaemonSet>(key, v),
        Some("CustomResourceDefinition") => through::<CustomResourceDefinition>(key, v),
        Some("Service") => through::<Service>(key, v),
        Some("ConfigMap") => through::<ConfigMap>(key, v),
        other => panic!("{key}: no Kubernetes type for {other:?}"),
    }
}

/// The labels Helm adds to every object (README "In a cluster": the
/// documented differences from kustomize's objects).
const HELM_LABELS: [&str; 4] =
    ["app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"];

/// `v` without what Helm adds by design.
fn without_helm_additions(mut v: Value) -> Value {
    if v["kind"] != "CustomResourceDefinition" {
        let name = v["metadata"]["name"].clone();
        let labels = v["metadata"].get_mut("labels").and_then(Value::as_object_mut);
        let labels = labels.unwrap_or_else(|| panic!("{name} has labels"));
        for l in HELM_LABELS {
            assert!(labels.remove(l).is_some(), "Helm's label {l} on {name}");
        }
    } else {
        let annotations = v["metadata"].as_object_mut().and_then(|m| m.remove("annotations"));
        assert_eq!(annotations, Some(serde_json::json!({"helm.sh/resource-policy": "keep"})), "CRDs are kept");
    }
    v
}

fn template(helm: &Path, set: &[&str]) -> BTreeMap<String, Value> {
    let mut args = vec!["template", "egret", "charts/egret", "--namespace", "egret-system"];
    for s in set {
        args.extend(["--set", s]);
    }
    objects(&run(helm, &args))
}

#[test]
fn helm_lint_passes_with_every_option() {
    let Some(helm) = tool("helm_lint_passes_with_every_option", "helm") else { return };
    run(&helm, &["lint", "--strict", "charts/egret"]);
    let all = "crds.install=false,metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true";
    run(&helm, &["lint", "--strict", "charts/egret", "--set", all]);
    run(&helm, &["lint", "--strict", "charts/egret", "--set", "uninstall.enabled=true,namespace.create=false"]);
}

#[test]
fn the_chart_renders_what_kustomize_renders() {
    let test = "the_chart_renders_what_kustomize_renders";
    let (Some(helm), Some(kubectl)) = (tool(test, "helm"), tool(test, "kubectl")) else { return };
    // the same image as deploy/kustomization's
    let chart = template(&helm, &["image.tag=dev"]);
    let kustomized = objects(&run(&kubectl, &["kustomize", "deploy"]));
    assert_eq!(chart.keys().collect::<Vec<_>>(), kustomized.keys().collect::<Vec<_>>(), "the same objects");
    for (key, k) in &kustomized {
        let h = without_helm_additions(typed(key, &chart[key]));
        assert_eq!(h, typed(key, k), "{key}: the chart and kustomize differ");
    }
    // where Cilium runs: deploy/base and crds.install=false, the same way
    let chart = template(&helm, &["image.tag=dev", "crds.install=false"]);
    let base = objects(&run(&kubectl, &["kustomize", "deploy/base"]));
    assert_eq!(chart.keys().collect::<Vec<_>>(), base.keys().collect::<Vec<_>>());
    assert!(!base.contains_key("CustomResourceDefinition/ciliumegressgatewaypolicies.cilium.io"));
    assert!(base.contains_key("CustomResourceDefinition/nodenetworks.egret.dev"), "egret's own CRD stays");
}

#[test]
fn the_values_reach_their_objects() {
    let Some(helm) = tool("the_values_reach_their_objects", "helm") else { return };
    let objects = template(
        &helm,
        &[
            "image.repository=registry.example/egret-agent",
            "image.tag=1.2.3",
            "image.pullPolicy=Always",
            "agent.nodeSelector.egress=yes",
            "agent.tolerations=null",
            "agent.priorityClassName=egret-critical",
            "agent.updateStrategy.rollingUpdate.maxUnavailable=10%",
            "agent.resources.limits.memory=1Gi",
            "metrics.port=9999",
            "namespace.create=false",
        ],
    );
    assert!(!objects.contains_key("Namespace/egret-system"));
    let ds: DaemonSet = serde_json::from_value(objects["DaemonSet/egret-agent"].clone()).expect("a DaemonSet");
    let spec = ds.spec.expect("spec");
    let pod = spec.template.spec.expect("pod spec");
    let max = spec.update_strategy.and_then(|u| u.rolling_update).and_then(|r| r.max_unavailable);
    assert_eq!(max, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into())));
    assert_eq!(pod.node_selector.and_then(|n| n.get("egress").cloned()).as_deref(), Some("yes"));
    assert_eq!(pod.tolerations, None);
    assert_eq!(pod.priority_class_name.as_deref(), Some("egret-critical"));
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        assert_eq!(c.image.as_deref(), Some("registry.example/egret-agent:1.2.3"), "{}", c.name);
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    }
    let agent = &pod.containers[0];
    let limits = agent.resources.as_ref().and_then(|r| r.limits.as_ref()).expect("limits");
    assert_eq!(limits["memory"].0, "1Gi");
    assert!(agent.args.iter().flatten().any(|a| a == "0.0.0.0:9999"), "{:?}", agent.args);
    let probe = agent.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness probe");
    assert_eq!(probe.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9999));

    // the uninstall DaemonSet replaces the agent, on the same nodes, with the same rights
    let uninstall = template(&helm, &["uninstall.enabled=true", "agent.nodeSelector.egress=yes"]);
    assert!(!uninstall.contains_key("DaemonSet/egret-agent"), "the agent stops (it holds the loader's lock)");
    let ds: DaemonSet =
        serde_json::from_value(typed("uninstall", &uninstall["DaemonSet/egret-uninstall"])).expect("a DaemonSet");
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(pod.node_selector.and_then(|n| n.get("egress").cloned()).as_deref(), Some("yes"));
    assert!(pod.host_network == Some(true));
    let init = &pod.init_containers.as_ref().expect("init container")[0];
    let args = init.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("uninstall"));
    assert!(args.iter().any(|a| a == "--cni-conf-dir"), "egret-cni goes too: {args:?}");
    let caps = init.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).and_then(|c| c.add.clone());
    assert_eq!(caps, Some(vec!["BPF".into(), "NET_ADMIN".into(), "PERFMON".into()]));
}

/// The metric names (`egret_…`) in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("egret_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alerts_and_dashboard_use_the_agents_metrics() {
    let Some(helm) = tool("alerts_and_dashboard_use_the_agents_metrics", "helm") else { return };
    let objects = template(
        &helm,
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.dashboard.enabled=true",
        ],
    );
    let service = typed("Service/egret-agent-metrics", &objects["Service/egret-agent-metrics"]);
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["selector"]["app.kubernetes.io/component"], "agent");
    let monitor = &objects["ServiceMonitor/egret-agent"];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let rules = &objects["PrometheusRule/egret"];
    let alerts: Vec<&str> = rules["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for a in ["EgretSwapFailed", "EgretAttachFailures", "EgretNatTablePressure", "EgretNoGatewayDrops"] {
        assert!(alerts.contains(&a), "alert {a} in {alerts:?}");
    }
    let dashboard = typed("ConfigMap/egret-dashboard", &objects["ConfigMap/egret-dashboard"]);
    let json: Value = serde_json::from_str(dashboard["data"]["egret.json"].as_str().expect("egret.json"))
        .expect("the dashboard is JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 8));

    // every name the alerts and the dashboard query is one the agent exports:
    // rendered without a node (the recorded and prober figures), or read
    // from the pinned maps (tests/e2e/main.rs finds these on real agents)
    let t = egret_runtime::metrics::Telemetry::new(Path::new("/nonexistent/egret"));
    t.gateways(egret_runtime::ha::probe::StatusHandle::default());
    let exported = metric_names(&t.render(false));
    let from_pins = [
        "egret_classifier_packets_total",
        "egret_gateway_packets_total",
        "egret_policy_packets_total",
        "egret_nat_entries",
        "egret_nat_capacity",
        "egret_generation",
        "egret_gateway_up",
    ];
    let used = metric_names(&(rules.to_string() + &json.to_string()));
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(name) || from_pins.contains(&name.as_str()),
            "`{name}` is not a metric egret-agent exports"
        );
    }
}

#[test]
fn a_kustomization_overrides_the_image_as_readme_says() {
    let Some(kubectl) = tool("a_kustomization_overrides_the_image_as_readme_says", "kubectl") else { return };
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    // README's overlay, verbatim between its markers, in a directory beside deploy/
    let start = readme.find("# my-egret/kustomization.yaml").expect("README shows the overlay");
    let overlay = &readme[start..];
    let overlay = &overlay[..overlay.find("```").expect("the end of the block")];
    let dir = repo().join(format!("target-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("overlay dir");
    std::fs::write(dir.join("kustomization.yaml"), overlay.replace("../egret/deploy", "../deploy")).expect("write");
    let rendered = Command::new(&kubectl).args(["kustomize"]).arg(&dir).output().expect("kubectl kustomize");
    std::fs::remove_dir_all(&dir).expect("remove overlay dir");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let objects = objects(&String::from_utf8_lossy(&rendered.stdout));
    let ds: DaemonSet = serde_json::from_value(objects["DaemonSet/egret-agent"].clone()).expect("a DaemonSet");
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    let images: Vec<String> =
        pod.init_containers.iter().flatten().chain(&pod.containers).filter_map(|c| c.image.clone()).collect();
    assert_eq!(images, ["registry.example/egret-agent:0.1.0", "registry.example/egret-agent:0.1.0"]);
}

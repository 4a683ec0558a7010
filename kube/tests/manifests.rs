//! The manifests in `deploy/` against the code: the CRD file is the CRD the
//! policy type generates.
//!
//! `EGRET_UPDATE_CRD=1 cargo test -p egret-kube --release --test manifests`
//! rewrites `deploy/crd.yaml` from the type.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

const CRD_HEADER: &str = "# Generated from egret_kube::crd::CiliumEgressGatewayPolicy; do not edit.\n\
# Regenerate: EGRET_UPDATE_CRD=1 cargo test -p egret-kube --release --test manifests\n";

#[test]
fn the_crd_file_is_the_generated_crd() {
    let generated = egret_kube::crd::crd();
    let path = deploy("crd.yaml");
    let text = format!("{CRD_HEADER}{}", serde_yaml::to_string(&generated).expect("yaml"));
    if std::env::var("EGRET_UPDATE_CRD").as_deref() == Ok("1") {
        std::fs::write(&path, &text).expect("write deploy/crd.yaml");
    }
    let on_disk = std::fs::read_to_string(&path).expect("deploy/crd.yaml exists");
    let parsed: CustomResourceDefinition = serde_yaml::from_str(&on_disk).expect("deploy/crd.yaml is a CRD");
    assert_eq!(parsed, generated, "deploy/crd.yaml differs from the type; regenerate it (see the module doc)");
    assert_eq!(on_disk, text, "deploy/crd.yaml is not formatted as generated; regenerate it");
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

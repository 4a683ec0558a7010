//! The API objects as the watchers decode them: only the fields egret reads.
//!
//! Each type implements [`kube::Resource`] for its real kind, and its serde
//! decoding skips every other field while reading the watch stream, so a
//! full Pod or Node (managedFields, container specs, images, heartbeats) is
//! never held in memory. Metadata keeps name, namespace, uid, labels and
//! `resourceVersion` (which the watcher resumes from).
//!
//! Policies keep their `spec` as JSON ([`PolicyWire`]): a spec that Cilium's
//! Go types or [`crate::crd::CiliumEgressGatewayPolicySpec`] would refuse
//! must still arrive, so egret's loader can say what is wrong with it.

use crate::view::{NamespaceFacts, NodeFacts, PodFacts, PolicyFacts};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::Resource;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The metadata fields kept.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

fn trimmed_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<MetaWire>::deserialize(d)?;
    Ok(m.map(|m| ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        // only egret's own: others (kubectl's last-applied copy, say) can be large
        annotations: m
            .annotations
            .map(|a| a.into_iter().filter(|(k, _)| k.starts_with(EGRET_ANNOTATIONS)).collect())
            .filter(|a: &BTreeMap<String, String>| !a.is_empty()),
        ..ObjectMeta::default()
    })
    .unwrap_or_default())
}

/// Reads a field, or `None` when it has an unexpected shape: a malformed
/// leaf (buffered alone, so large fields are still skipped unread) must not
/// make the whole object, and with it a list, undecodable.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

macro_rules! resource {
    ($ty:ident, $scope:ty, $group:expr, $version:expr, $kind:expr, $plural:expr) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Pod, trimmed.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct PodWire {
    #[serde(deserialize_with = "trimmed_meta", default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpecWire>,
    #[serde(default)]
    status: Option<PodStatusWire>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpecWire {
    #[serde(default, deserialize_with = "lenient")]
    node_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    host_network: Option<bool>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatusWire {
    #[serde(default, deserialize_with = "lenient")]
    phase: Option<String>,
    #[serde(rename = "podIP")]
    #[serde(default, deserialize_with = "lenient")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    #[serde(default, deserialize_with = "lenient")]
    pod_ips: Option<Vec<PodIpWire>>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct PodIpWire {
    #[serde(default, deserialize_with = "lenient")]
    ip: Option<String>,
}

resource!(PodWire, NamespaceResourceScope, "", "v1", "Pod", "pods");

/// A Namespace, trimmed.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct NamespaceWire {
    #[serde(deserialize_with = "trimmed_meta", default)]
    metadata: ObjectMeta,
}

resource!(NamespaceWire, ClusterResourceScope, "", "v1", "Namespace", "namespaces");

/// A Node, trimmed.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct NodeWire {
    #[serde(deserialize_with = "trimmed_meta", default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<NodeSpecWire>,
    #[serde(default)]
    status: Option<NodeStatusWire>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct NodeSpecWire {
    #[serde(rename = "podCIDR")]
    #[serde(default, deserialize_with = "lenient")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    #[serde(default, deserialize_with = "lenient")]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct NodeStatusWire {
    #[serde(default, deserialize_with = "lenient")]
    addresses: Option<Vec<TypedValueWire>>,
    #[serde(default, deserialize_with = "lenient")]
    conditions: Option<Vec<ConditionWire>>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct TypedValueWire {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    address: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct ConditionWire {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    status: Option<String>,
}

resource!(NodeWire, ClusterResourceScope, "", "v1", "Node", "nodes");

/// A CiliumEgressGatewayPolicy, with its spec as JSON.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct PolicyWire {
    #[serde(deserialize_with = "trimmed_meta", default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<serde_json::Value>,
}

resource!(
    PolicyWire,
    ClusterResourceScope,
    crate::crd::GROUP,
    crate::crd::VERSION,
    crate::crd::KIND,
    crate::crd::PLURAL
);

fn name(m: &ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

/// Trimmed API objects become view facts; a deletion needs only the key.
pub trait IntoFacts {
    /// The fact.
    type Facts;
    /// Converts.
    fn into_facts(self) -> Self::Facts;
    /// The view's key of this object.
    fn view_key(&self) -> String;
}

impl IntoFacts for PodWire {
    type Facts = PodFacts;
    fn into_facts(self) -> PodFacts {
        let m = self.metadata;
        let spec = self.spec.unwrap_or_default();
        let status = self.status.unwrap_or_default();
        let ips = match status.pod_ips {
            Some(v) if !v.is_empty() => v.into_iter().filter_map(|i| i.ip).collect(),
            _ => status.pod_ip.into_iter().collect(),
        };
        PodFacts {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: name(&m),
            uid: m.uid.unwrap_or_default(),
            labels: m.labels.unwrap_or_default(),
            node_name: spec.node_name,
            host_network: spec.host_network.unwrap_or(false),
            phase: status.phase,
            ips,
        }
    }
    fn view_key(&self) -> String {
        format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or("default"), name(&self.metadata))
    }
}

impl IntoFacts for NamespaceWire {
    type Facts = NamespaceFacts;
    fn into_facts(self) -> NamespaceFacts {
        NamespaceFacts { name: name(&self.metadata), labels: self.metadata.labels.unwrap_or_default() }
    }
    fn view_key(&self) -> String {
        name(&self.metadata)
    }
}

impl IntoFacts for NodeWire {
    type Facts = NodeFacts;
    fn into_facts(self) -> NodeFacts {
        let m = self.metadata;
        let spec = self.spec.unwrap_or_default();
        let status = self.status.unwrap_or_default();
        let pod_cidrs = match spec.pod_cidrs {
            Some(v) if !v.is_empty() => v,
            _ => spec.pod_cidr.into_iter().collect(),
        };
        NodeFacts {
            name: name(&m),
            uid: m.uid.unwrap_or_default(),
            labels: m.labels.unwrap_or_default(),
            internal_ips: status
                .addresses
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.kind.as_deref() == Some("InternalIP"))
                .filter_map(|a| a.address)
                .collect(),
            pod_cidrs,
            ready: status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.kind.as_deref() == Some("Ready"))
                .and_then(|c| c.status),
        }
    }
    fn view_key(&self) -> String {
        name(&self.metadata)
    }
}

/// The prefix of the annotations egret reads on a policy (the others are dropped).
pub const EGRET_ANNOTATIONS: &str = "egret.dev/";

impl IntoFacts for PolicyWire {
    type Facts = PolicyFacts;
    fn into_facts(self) -> PolicyFacts {
        let m = self.metadata;
        let annotations = m.annotations.clone().unwrap_or_default();
        PolicyFacts {
            name: name(&m),
            uid: m.uid.unwrap_or_default(),
            namespace: m.namespace,
            spec: self.spec,
            annotations,
        }
    }
    fn view_key(&self) -> String {
        name(&self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn a_full_pod_decodes_to_what_egret_reads() {
        let full = r#"{
          "apiVersion": "v1", "kind": "Pod",
          "metadata": {"name": "web-1", "namespace": "prod", "uid": "u1", "resourceVersion": "42",
                       "labels": {"app": "web"}, "annotations": {"big": "x"},
                       "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]},
          "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
          "status": {"phase": "Running", "podIP": "10.0.0.5",
                     "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                     "conditions": [{"type": "Ready", "status": "True"}]}
        }"#;
        let w: PodWire = serde_json::from_str(full).expect("decodes");
        assert_eq!(w.resource_version().as_deref(), Some("42"));
        assert!(w.meta().annotations.is_none() && w.meta().managed_fields.is_none());
        assert_eq!(w.view_key(), "prod/web-1");
        let f = w.into_facts();
        assert_eq!(f.ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!((f.node_name.as_deref(), f.phase.as_deref(), f.host_network), (Some("n1"), Some("Running"), false));
        assert_eq!(PodWire::url_path(&(), None), "/api/v1/pods");
        assert_eq!(PolicyWire::url_path(&(), None), "/apis/cilium.io/v2/ciliumegressgatewaypolicies");
    }

    #[test]
    fn a_node_keeps_internal_ips_cidrs_and_readiness() {
        let full = r#"{"metadata": {"name": "n1", "uid": "u", "labels": {"gw": "true"}},
          "spec": {"podCIDR": "10.1.0.0/24"},
          "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.0.2.1"}],
                     "conditions": [{"type": "MemoryPressure", "status": "False"},
                                    {"type": "Ready", "status": "False", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}}"#;
        let f = serde_json::from_str::<NodeWire>(full).expect("decodes").into_facts();
        assert_eq!(f.internal_ips, ["192.0.2.1"]);
        assert_eq!(f.pod_cidrs, ["10.1.0.0/24"]);
        assert_eq!(f.ready.as_deref(), Some("False"));
    }

    #[test]
    fn malformed_leaves_are_dropped_not_fatal() {
        let odd = r#"{"metadata": {"name": "p", "namespace": "x"},
          "spec": {"nodeName": 5, "hostNetwork": "yes"},
          "status": {"phase": ["Running"], "podIPs": "10.0.0.1", "podIP": "10.0.0.2"}}"#;
        let f = serde_json::from_str::<PodWire>(odd).expect("decodes").into_facts();
        assert_eq!((f.node_name, f.host_network, f.phase), (None, false, None));
        assert_eq!(f.ips, ["10.0.0.2"]);
        let odd = r#"{"metadata": {"name": "n"}, "status": {"addresses": [{"type": 1, "address": "a"}],
          "conditions": [{"type": "Ready", "status": true}]}}"#;
        let f = serde_json::from_str::<NodeWire>(odd).expect("decodes").into_facts();
        assert!(f.internal_ips.is_empty() && f.ready.is_none());
    }

    #[test]
    fn a_policy_spec_of_any_shape_decodes() {
        for spec in [r#""oops""#, r#"{"selectors": 5}"#, r#"{"destinationCIDRs": [true]}"#] {
            let text = format!(r#"{{"metadata": {{"name": "p"}}, "spec": {spec}}}"#);
            let f = serde_json::from_str::<PolicyWire>(&text).expect("decodes").into_facts();
            assert_eq!(f.spec, Some(serde_json::from_str(spec).expect("json")));
        }
    }
}

//! The `CiliumEgressGatewayPolicy` resource (`cilium.io/v2`, cluster-scoped),
//! as Cilium defines it, and its CustomResourceDefinition.
//!
//! The fields and their JSON names are Cilium's
//! (`pkg/k8s/apis/cilium.io/v2/cegp_types.go`): `selectors[]` of
//! `{podSelector, namespaceSelector, nodeSelector}`, `destinationCIDRs`,
//! `excludedCIDRs`, `egressGateway {nodeSelector, egressIP, interface}` and
//! `egressGateways[]`. The CRD ([`crd`]) is what `deploy/cilium-crd/crd.yaml` holds, for
//! clusters without Cilium; a test checks the file against it.
//!
//! Differences from Cilium's CRD, both deliberate: `egressIP` has no
//! `format: ipv4` (egret accepts IPv6 egress IPs, SEMANTICS.md "Egress IP"),
//! and there is no `status` (neither has one: feedback goes to Events).
//!
//! This typed resource is for writing policies (tests, tools) and for the
//! CRD. The watchers read policies through a lenient type instead
//! ([`crate::view::PolicyObject`]), so that a policy this type would not
//! deserialize (a malformed object written before the CRD was installed, or
//! under Cilium's own CRD) becomes a diagnostic rather than a failed list.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "cilium.io";
/// The API version.
pub const VERSION: &str = "v2";
/// The kind.
pub const KIND: &str = "CiliumEgressGatewayPolicy";
/// The resource's plural name (its URL path segment).
pub const PLURAL: &str = "ciliumegressgatewaypolicies";

/// The spec of a `CiliumEgressGatewayPolicy`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumEgressGatewayPolicy",
    plural = "ciliumegressgatewaypolicies",
    singular = "ciliumegressgatewaypolicy",
    shortname = "cegp",
    category = "cilium",
    category = "ciliumpolicy",
    derive = "PartialEq",
    derive = "Default",
    doc = "CiliumEgressGatewayPolicy: which pods' traffic to which destinations leaves the cluster through which gateway node and source IP"
)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEgressGatewayPolicySpec {
    /// The endpoints the policy applies to: an endpoint is selected if any
    /// item matches it.
    pub selectors: Vec<EgressRule>,
    /// Destination prefixes the policy captures.
    #[serde(rename = "destinationCIDRs")]
    #[schemars(schema_with = "cidr_list")]
    pub destination_cidrs: Vec<String>,
    /// Destination prefixes removed from this policy's destinations.
    #[serde(rename = "excludedCIDRs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_cidr_list")]
    pub excluded_cidrs: Option<Vec<String>>,
    /// The gateway (ignored when `egressGateways` is non-empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gateway: Option<EgressGateway>,
    /// Several gateways; endpoints are spread over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gateways: Option<Vec<EgressGateway>>,
}

/// One selector item of a policy: all present parts must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Selects namespaces by their labels; `{}` selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Selects pods by their labels; `{}` selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Selects pods by the labels of the node they run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// A gateway entry: which node, and which source address it uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressGateway {
    /// Selects the gateway node (the first match by node name).
    pub node_selector: LabelSelector,
    /// The source address traffic is SNATed to.
    #[serde(rename = "egressIP", default, skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<String>,
    /// The interface whose address traffic is SNATed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

fn cidr_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "string", "format": "cidr"}})
}

fn optional_cidr_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "nullable": true, "items": {"type": "string", "format": "cidr"}})
}

/// The CustomResourceDefinition of [`CiliumEgressGatewayPolicy`], as
/// `deploy/cilium-crd/crd.yaml` holds it.
#[must_use]
pub fn crd() -> CustomResourceDefinition {
    CiliumEgressGatewayPolicy::crd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn the_resource_is_ciliums() {
        assert_eq!(CiliumEgressGatewayPolicy::group(&()), GROUP);
        assert_eq!(CiliumEgressGatewayPolicy::version(&()), VERSION);
        assert_eq!(CiliumEgressGatewayPolicy::kind(&()), KIND);
        assert_eq!(CiliumEgressGatewayPolicy::plural(&()), PLURAL);
        let crd = crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["cegp".to_string()][..]));
    }

    #[test]
    fn a_cilium_policy_round_trips() {
        let yaml = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumEgressGatewayPolicy",
  "metadata": {"name": "p"},
  "spec": {
    "selectors": [{"podSelector": {"matchLabels": {"app": "web"}},
                   "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]},
                   "nodeSelector": {}}],
    "destinationCIDRs": ["0.0.0.0/0"],
    "excludedCIDRs": ["10.0.0.0/8"],
    "egressGateway": {"nodeSelector": {"matchLabels": {"gw": "true"}}, "egressIP": "192.0.2.10"},
    "egressGateways": [{"nodeSelector": {}, "interface": "eth1"}]
  }
}"#;
        let p: CiliumEgressGatewayPolicy = serde_json::from_str(yaml).expect("a Cilium policy");
        assert_eq!(p.spec.destination_cidrs, ["0.0.0.0/0"]);
        assert_eq!(p.spec.egress_gateway.as_ref().and_then(|g| g.egress_ip.as_deref()), Some("192.0.2.10"));
        assert_eq!(p.spec.egress_gateways.as_ref().map(Vec::len), Some(1));
        let back = serde_json::to_value(&p).expect("serializes");
        let orig: serde_json::Value = serde_json::from_str(yaml).expect("json");
        assert_eq!(back, orig);
    }
}

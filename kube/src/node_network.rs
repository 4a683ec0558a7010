//! The `NodeNetwork` resource (`egret.dev/v1alpha1`, cluster-scoped, one per
//! node, named after it): a node's interfaces, addresses and default-route
//! interface, the facts the offline checks need (E0306, E0307, E0313) that
//! the Kubernetes API does not carry. Each agent publishes its node's
//! ([`publish`]) and keeps it current, so that
//! `kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml` is a complete
//! snapshot for `egret lint --cluster`.
//!
//! The object is the one `egret_lang::k8s` reads back (field names and
//! layout), from and to egret's AST ([`from_ast`]). `deploy/base/nodenetwork-crd.yaml`
//! is [`crd`] (a test keeps them equal); the agent needs `get`, `create` and
//! `update` on the resource ([`crate::watch::api_calls`]).

use kube::CustomResource;
use kube::api::{Api, PostParams};
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group, version and resource path segment.
pub const GROUP: &str = "egret.dev";
pub const VERSION: &str = "v1alpha1";
pub const PLURAL: &str = "nodenetworks";

/// The spec of a `NodeNetwork`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "egret.dev",
    version = "v1alpha1",
    kind = "NodeNetwork",
    plural = "nodenetworks",
    singular = "nodenetwork",
    derive = "PartialEq",
    derive = "Default",
    doc = "NodeNetwork: a node's interfaces and addresses, published by the node's egret-agent, for offline checks of egress IPs and interfaces"
)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkSpec {
    /// The interface holding the node's default route, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route_interface: Option<String>,
    /// The node's interfaces, in index order.
    #[serde(default)]
    pub interfaces: Vec<InterfaceSpec>,
}

/// One interface of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_names: Vec<String>,
    /// Addresses with prefix lengths (`198.51.100.100/32`), as the node reports them.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The object for a node's facts (egret's AST, as the agent reads them).
pub fn from_ast(facts: &egret_lang::ast::NodeNetwork) -> NodeNetwork {
    let spec = NodeNetworkSpec {
        default_route_interface: facts.default_route_interface.clone(),
        interfaces: facts
            .interfaces
            .iter()
            .map(|i| InterfaceSpec {
                name: i.name.clone(),
                index: i.index,
                alt_names: i.alt_names.clone(),
                addresses: i.addresses.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    };
    NodeNetwork::new(&facts.node.value, spec)
}

/// The CustomResourceDefinition (`deploy/base/nodenetwork-crd.yaml`).
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    NodeNetwork::crd()
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Created,
    Updated,
    /// The stored object already said the same.
    Unchanged,
}

/// Makes the API server's `NodeNetwork` of the node equal to `facts`:
/// create it, or replace its spec when it differs (`get`, then `create` or
/// `update` with the stored `resourceVersion`; a conflict is the caller's
/// to retry on the next change).
pub async fn publish(client: &kube::Client, facts: &egret_lang::ast::NodeNetwork) -> Result<Published, kube::Error> {
    let api: Api<NodeNetwork> = Api::all(client.clone());
    let want = from_ast(facts);
    let name = facts.node.value.as_str();
    match api.get_opt(name).await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
            Ok(Published::Created)
        }
        Some(have) if have.spec == want.spec => Ok(Published::Unchanged),
        Some(mut have) => {
            have.spec = want.spec;
            api.replace(name, &PostParams::default(), &have).await?;
            Ok(Published::Updated)
        }
    }
}

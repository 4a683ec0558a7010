//! What the CNI specification defines that `egret-cni` reads and writes
//! (<https://github.com/containernetworking/cni/blob/main/SPEC.md>, versions
//! 1.0.0 and 1.1.0): the network configuration handed to a plugin on stdin,
//! the `CNI_*` environment, the previous plugin's result, error objects and
//! the well-known error codes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

/// The configuration versions this plugin speaks (`VERSION` reports them).
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// The plugin's `type` (its binary's name in the CNI bin directory).
pub const PLUGIN_TYPE: &str = "egret-cni";

/// The error codes the plugin uses: the specification's well-known codes
/// (0–99) and egret's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network configuration.
    InvalidConfig = 7,
    /// 11: try again later (the agent cannot admit the pod now).
    TryAgainLater = 11,
    /// 50: the plugin is not available (`STATUS`).
    NotAvailable = 50,
    /// 100: the previous plugin's result gives the pod no address.
    NoPodIp = 100,
    /// 101: the agent refused the request.
    Refused = 101,
}

/// An error the plugin reports: printed on stdout as the spec's error
/// object, with a nonzero exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// A short message.
    pub msg: String,
    /// Longer details (may be empty).
    pub details: String,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// With details.
    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object of the spec ("Error" section), for `cni_version`.
    #[must_use]
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code as u32, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// One `cni.dev/valid-attachments` entry of a `GC` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// The sandbox.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface in the sandbox.
    #[serde(default)]
    pub ifname: String,
}

/// The network configuration a runtime gives the plugin on stdin: the
/// spec's fields the plugin needs and its own keys (unknown keys are
/// ignored, as the spec asks).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// `cniVersion`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// `name` of the network.
    #[serde(default)]
    pub name: String,
    /// `type` (`egret-cni`).
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The previous plugin's result (`ADD`, `CHECK`; optional for `DEL`).
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    /// The agent's socket (default [`crate::protocol::DEFAULT_SOCKET`]).
    pub socket: Option<PathBuf>,
    /// The agent's selection summary (default
    /// [`crate::protocol::DEFAULT_SELECTION_FILE`]).
    #[serde(rename = "selectionFile")]
    pub selection_file: Option<PathBuf>,
    /// Admit a pod that might be selected even when the agent cannot be
    /// reached (default `false`: fail closed).
    #[serde(rename = "failOpen", default)]
    pub fail_open: bool,
    /// The bound on one exchange with the agent, in milliseconds (default
    /// [`crate::protocol::DEFAULT_TIMEOUT`]).
    #[serde(rename = "timeoutMs")]
    pub timeout_ms: Option<u64>,
    /// `GC`: the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, split into `KEY=VALUE` pairs.
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Reads the environment through `var` (the process's, or a test's).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Env {
        let args = var("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID").filter(|c| !c.is_empty()),
            ifname: var("CNI_IFNAME").filter(|i| !i.is_empty()),
            args,
        }
    }

    /// The pod's namespace and name (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`).
    #[must_use]
    pub fn pod(&self) -> Option<(String, String)> {
        let ns = self.args.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty())?;
        let name = self.args.get("K8S_POD_NAME").filter(|s| !s.is_empty())?;
        Some((ns.clone(), name.clone()))
    }
}

/// What `egret-cni` reads of the previous plugin's result: the pod's
/// host-side interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrevResult {
    /// The first interface without a `sandbox` (the host side of the pod's veth).
    pub host_interface: Option<String>,
    /// Every `ips[].address`, without its prefix length.
    pub ips: Vec<IpAddr>,
}

impl PrevResult {
    /// Reads `prevResult`.
    ///
    /// # Errors
    /// A result that is not one (code 6), or an address that is not one.
    pub fn parse(v: &Value) -> Result<PrevResult, CniError> {
        #[derive(Deserialize)]
        struct Interface {
            name: String,
            #[serde(default)]
            sandbox: Option<String>,
        }
        #[derive(Deserialize)]
        struct Ip {
            address: String,
        }
        #[derive(Deserialize)]
        struct CniResult {
            #[serde(default)]
            interfaces: Vec<Interface>,
            #[serde(default)]
            ips: Vec<Ip>,
        }
        let r: CniResult = serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(Code::Decode, format!("prevResult is not a CNI result: {e}")))?;
        let host_interface =
            r.interfaces.into_iter().find(|i| i.sandbox.as_deref().is_none_or(str::is_empty)).map(|i| i.name);
        let ips = r
            .ips
            .iter()
            .map(|ip| {
                let addr = ip.address.split('/').next().unwrap_or_default();
                addr.parse().map_err(|_| {
                    CniError::new(Code::Decode, format!("prevResult has an address that is not one: `{}`", ip.address))
                })
            })
            .collect::<Result<Vec<IpAddr>, CniError>>()?;
        Ok(PrevResult { host_interface, ips })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_name_the_pod() {
        let env = Env::read(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_ARGS" => {
                Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc".into())
            }
            _ => None,
        });
        assert_eq!(env.pod(), Some(("prod".into(), "web-0".into())));
        assert_eq!(env.container_id, None);
        assert_eq!(Env::read(|_| None).pod(), None);
    }

    #[test]
    fn prev_result_gives_the_host_side_and_the_addresses() {
        let v = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "cali123", "mac": "aa:bb:cc:dd:ee:ff"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "10.244.1.5/32", "interface": 1}, {"address": "2001:db8::5/128", "interface": 1}]});
        let r = PrevResult::parse(&v).expect("parses");
        assert_eq!(r.host_interface.as_deref(), Some("cali123"));
        assert_eq!(r.ips, ["10.244.1.5".parse::<IpAddr>().expect("ip"), "2001:db8::5".parse().expect("ip")]);
        let bad = PrevResult::parse(&json!({"ips": [{"address": "10.0.0.300/32"}]})).expect_err("bad address");
        assert_eq!(bad.code, Code::Decode);
        assert_eq!(PrevResult::parse(&json!({"ips": "x"})).expect_err("not a result").code, Code::Decode);
    }

    #[test]
    fn the_error_object_has_the_specs_fields() {
        let e = CniError::new(Code::TryAgainLater, "agent down").details("more");
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 11, "msg": "agent down", "details": "more"})
        );
    }
}

//! The plugin's commands: input (environment, stdin) → output (stdout, exit
//! status, a note for stderr), without a process, so tests drive it
//! directly and the binary is a thin shell.
//!
//! Contract, per `CNI_COMMAND`:
//! - **Every command** but `VERSION` first reads the configuration: stdin
//!   that is not JSON is code 6, a `cniVersion` outside
//!   [`SUPPORTED_VERSIONS`] code 1. Errors are the spec's error object on
//!   stdout and exit status 1; nothing is asked of the agent before the
//!   input is known good, so bad input attaches nothing.
//! - **`ADD`**: needs `prevResult` (code 7 without), at least one address in
//!   it (code 100), `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS` and
//!   `CNI_CONTAINERID` (code 4). Asks the agent to admit the pod
//!   ([`Op::Admit`]) within the bound (`timeoutMs`); on
//!   [`Outcome::Admitted`] prints `prevResult` unchanged. When the agent
//!   cannot be reached or does not answer in time: a pod that the agent's
//!   [`Selection`] says no policy could select is admitted (it needs no
//!   decision); otherwise the plugin **fails closed** (code 11, try again
//!   later: the kubelet retries the sandbox), naming the socket — unless the
//!   configuration says `"failOpen": true`, which admits it and leaves the
//!   pod to the agent's watch. A missing or unreadable summary counts as
//!   "could be selected". [`Outcome::Refused`] fails (code 101) unless
//!   `failOpen`.
//! - **`CHECK`**: as `ADD`, with [`Op::Check`]; prints nothing on success.
//! - **`DEL`**: [`Op::Release`], best effort: it succeeds whatever the
//!   agent says or whether it answers (the agent's watch forgets deleted
//!   pods; a `DEL` that fails would only block the runtime's cleanup).
//! - **`GC`**: [`Op::Gc`] with the container IDs of
//!   `cni.dev/valid-attachments`; best effort like `DEL`.
//! - **`STATUS`**: success when the agent answers [`Op::Ping`]; when it does
//!   not, success too if the summary exists (pods no policy could select
//!   can still be added, the others fail closed at `ADD`), code 50 if it
//!   does not (then every `ADD` would fail closed, unless `failOpen`).
//! - **`VERSION`**: the supported versions.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::protocol::{
    self, CallError, DEFAULT_SELECTION_FILE, DEFAULT_SOCKET, DEFAULT_TIMEOUT, Endpoint, Op, Outcome, Request, Selection,
};
use crate::spec::{CniError, Code, Env, NetConf, PrevResult, SUPPORTED_VERSIONS};

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Stdout (a result, an error object, or nothing).
    pub stdout: String,
    /// The exit status (0 or 1).
    pub status: u8,
    /// A line for stderr (fail-open admissions, agent trouble on `DEL`).
    pub note: Option<String>,
}

impl Output {
    fn ok(stdout: String) -> Output {
        Output { stdout, status: 0, note: None }
    }

    fn error(e: &CniError, cni_version: &str) -> Output {
        Output { stdout: e.to_json(cni_version).to_string(), status: 1, note: None }
    }

    fn note(mut self, note: Option<String>) -> Output {
        self.note = note;
        self
    }
}

/// The newest version, for errors before the configuration's is known.
const LATEST: &str = "1.1.0";

/// Runs one invocation: see the module doc.
pub fn run(env: &Env, stdin: &[u8]) -> Output {
    if env.command == "VERSION" {
        return Output::ok(json!({"cniVersion": LATEST, "supportedVersions": SUPPORTED_VERSIONS}).to_string());
    }
    let conf: NetConf = match serde_json::from_slice::<Value>(stdin) {
        Err(e) => return Output::error(&CniError::new(Code::Decode, format!("stdin is not JSON: {e}")), LATEST),
        Ok(v) => {
            let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
                let e = CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "cniVersion `{version}` is not supported; egret-cni supports {}",
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                );
                return Output::error(&e, LATEST);
            }
            match serde_json::from_value(v) {
                Ok(c) => c,
                Err(e) => {
                    let e = CniError::new(Code::InvalidConfig, format!("the network configuration is invalid: {e}"));
                    return Output::error(&e, &version);
                }
            }
        }
    };
    let result = match env.command.as_str() {
        "ADD" => add(env, &conf, Op::Admit),
        "CHECK" => add(env, &conf, Op::Check).map(|o| Output { stdout: String::new(), ..o }),
        "DEL" => Ok(del(env, &conf)),
        "GC" => Ok(gc(&conf)),
        "STATUS" => status(&conf),
        "" => Err(CniError::new(Code::InvalidEnvironment, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            Code::InvalidEnvironment,
            format!("CNI_COMMAND `{other}` is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    };
    result.unwrap_or_else(|e| Output::error(&e, &conf.cni_version))
}

fn socket(conf: &NetConf) -> PathBuf {
    conf.socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn selection_file(conf: &NetConf) -> PathBuf {
    conf.selection_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SELECTION_FILE))
}

fn timeout(conf: &NetConf) -> Duration {
    conf.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// The pod `ADD`/`CHECK` is about, from the environment and `prevResult`.
fn endpoint(env: &Env, conf: &NetConf) -> Result<Endpoint, CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "no prevResult: egret-cni is a chained plugin and runs after the cluster's CNI in a conflist",
        )
    })?;
    let prev = PrevResult::parse(prev)?;
    if prev.ips.is_empty() {
        return Err(CniError::new(
            Code::NoPodIp,
            "prevResult gives the pod no IP address: nothing to put under a policy",
        ));
    }
    let (namespace, name) = env
        .pod()
        .ok_or_else(|| CniError::new(Code::InvalidEnvironment, "CNI_ARGS lacks K8S_POD_NAMESPACE or K8S_POD_NAME"))?;
    let container_id = env
        .container_id
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnvironment, "CNI_CONTAINERID is not set"))?;
    Ok(Endpoint { container_id, namespace, name, host_interface: prev.host_interface, ips: prev.ips })
}

/// `ADD` and `CHECK`.
fn add(env: &Env, conf: &NetConf, op: fn(Endpoint) -> Op) -> Result<Output, CniError> {
    let endpoint = endpoint(env, conf)?;
    let key = endpoint.key();
    let namespace = endpoint.namespace.clone();
    let prev = conf.prev_result.as_ref().map(Value::to_string).unwrap_or_default();
    match protocol::call(&socket(conf), &Request::new(op(endpoint)), timeout(conf)) {
        Ok(r) => match r.outcome {
            Outcome::Admitted { .. } => Ok(Output::ok(prev)),
            Outcome::Refused { message } if conf.fail_open => Ok(Output::ok(prev)
                .note(Some(format!("egret-cni: pod {key} admitted although the agent refused (failOpen): {message}")))),
            Outcome::Refused { message } => {
                Err(CniError::new(Code::Refused, format!("the egret agent cannot admit pod {key}: {message}")))
            }
            other => Err(CniError::new(Code::Refused, format!("the egret agent answered {other:?} to an admission"))),
        },
        Err(e) => unreachable(conf, &key, &namespace, &e).map(|note| Output::ok(prev).note(note)),
    }
}

/// The agent did not answer an admission: admit (with a note for stderr) or fail closed.
fn unreachable(conf: &NetConf, key: &str, namespace: &str, e: &CallError) -> Result<Option<String>, CniError> {
    let file = selection_file(conf);
    let could = Selection::read(&file).map(|s| s.could_select(namespace));
    match could {
        Ok(false) => Ok(None),
        _ if conf.fail_open => {
            Ok(Some(format!("egret-cni: pod {key} admitted without the agent (failOpen; its watch takes over): {e}")))
        }
        could => {
            let why = match could {
                Ok(_) => format!("a policy could select pods in namespace `{namespace}` (per `{}`)", file.display()),
                Err(reason) => format!("its selection cannot be known without the agent ({reason})"),
            };
            Err(CniError::new(Code::TryAgainLater, format!("{e}; pod {key} is not admitted: {why}")).details(
                "fail-closed: a pod an egress policy may select is not started before the egret agent has put it \
                 under its decision; the runtime retries. Set \"failOpen\": true in the egret-cni entry of the \
                 conflist to admit such pods without the agent (their first packets may then leave from the node's \
                 address).",
            ))
        }
    }
}

/// `DEL`: best effort.
fn del(env: &Env, conf: &NetConf) -> Output {
    let Some(container_id) = env.container_id.clone() else {
        return Output::ok(String::new())
            .note(Some("egret-cni: DEL without CNI_CONTAINERID: nothing to release".into()));
    };
    let pod = env.pod().map(|(ns, name)| format!("{ns}/{name}"));
    let r = protocol::call(&socket(conf), &Request::new(Op::Release { container_id, pod }), timeout(conf));
    Output::ok(String::new()).note(r.err().map(|e| format!("egret-cni: DEL: {e} (the agent's watch releases the pod)")))
}

/// `GC`: best effort.
fn gc(conf: &NetConf) -> Output {
    let valid = conf.valid_attachments.iter().flatten().map(|a| a.container_id.clone()).collect();
    let r = protocol::call(&socket(conf), &Request::new(Op::Gc { valid_container_ids: valid }), timeout(conf));
    Output::ok(String::new()).note(r.err().map(|e| format!("egret-cni: GC: {e}")))
}

/// `STATUS`.
fn status(conf: &NetConf) -> Result<Output, CniError> {
    match protocol::call(&socket(conf), &Request::new(Op::Ping), timeout(conf)) {
        Ok(_) => Ok(Output::ok(String::new())),
        Err(e) if conf.fail_open => Ok(Output::ok(String::new()).note(Some(format!("egret-cni: {e} (failOpen)")))),
        Err(e) => match Selection::read(&selection_file(conf)) {
            Ok(_) => Ok(Output::ok(String::new())
                .note(Some(format!("egret-cni: {e}; pods a policy could select fail closed until it is back")))),
            Err(reason) => Err(CniError::new(
                Code::NotAvailable,
                format!("{e}, and no selection summary ({reason}): every ADD would fail closed"),
            )),
        },
    }
}

//! The protocol between `egret-cni` and the node's agent, and the selection
//! summary the agent publishes.
//!
//! **Socket** ([`DEFAULT_SOCKET`], `egret-agent --cni-socket`): a Unix stream
//! socket; one request per connection, one JSON object per line each way:
//! the plugin writes a [`Request`] and a newline, the agent answers with one
//! [`Response`] and a newline, then closes. Both carry [`PROTOCOL`]; an
//! agent answers a request of another version with [`Outcome::Refused`]
//! naming both versions (a plugin and an agent from different releases fail
//! loudly instead of misreading each other). The plugin bounds the whole
//! exchange ([`call`]'s timeout: connect, write, and the read of the answer).
//!
//! **Selection summary** ([`DEFAULT_SELECTION_FILE`], [`Selection`]): after
//! every reconcile the agent writes, atomically (a temporary file renamed
//! over the old one), which namespaces a policy could select pods in. When
//! the agent cannot be reached, the plugin reads it to tell a pod that no
//! policy could select (admitted without the agent: it needs no decision)
//! from one that might be selected (fail-closed by default). The summary
//! errs towards "could be selected" (see [`Selection`]).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The protocol version both sides carry.
pub const PROTOCOL: u32 = 1;

/// Where the agent listens by default (`/run` on the host: the plugin runs in
/// the host's mount namespace, the agent mounts the same directory).
pub const DEFAULT_SOCKET: &str = "/run/egret/cni.sock";

/// Where the agent writes its [`Selection`] summary by default.
pub const DEFAULT_SELECTION_FILE: &str = "/run/egret/cni-selection.json";

/// How long the plugin waits for the agent by default (connect to answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pod an `ADD` or `CHECK` is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `CNI_CONTAINERID`: the sandbox; `DEL` and `GC` name it.
    pub container_id: String,
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// The pod's host-side interface from `prevResult` (the one without a
    /// sandbox), when the previous plugin reported it.
    pub host_interface: Option<String>,
    /// The pod's addresses from `prevResult` (at least one).
    pub ips: Vec<IpAddr>,
}

impl Endpoint {
    /// `namespace/name`, as the agent's view keys pods.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the plugin asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// `ADD`: put the pod under its decision before answering.
    Admit(Endpoint),
    /// `CHECK`: is the pod under its decision now?
    Check(Endpoint),
    /// `DEL`: forget what `ADD` made for this sandbox.
    Release {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// The pod, when `CNI_ARGS` named it.
        pod: Option<String>,
    },
    /// `GC`: forget every sandbox not in this list.
    Gc {
        /// `cni.dev/valid-attachments`' container IDs.
        valid_container_ids: Vec<String>,
    },
    /// `STATUS`: is the agent there and serving?
    Ping,
}

/// One request on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL`].
    pub version: u32,
    /// What is asked.
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A request of this version.
    #[must_use]
    pub fn new(op: Op) -> Request {
        Request { version: PROTOCOL, op }
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// `Admit`/`Check`: the pod's decision is in force. `selected`: some
    /// policy selects it and its veth carries the classifier of a
    /// generation that knows it; otherwise it takes the node's normal path.
    Admitted {
        /// Whether a policy selects the pod.
        selected: bool,
        /// The generation serving when the agent answered.
        generation: Option<u64>,
        /// For people: what the agent did.
        detail: String,
    },
    /// `Release`/`Gc` done (`released`: sandboxes forgotten).
    Released {
        /// How many sandboxes the agent forgot.
        released: usize,
    },
    /// `Ping`: the agent serves, and has compiled from a synced view.
    Pong {
        /// Whether the watch has synced (before it, admissions wait).
        synced: bool,
    },
    /// The agent cannot do what was asked (the plugin fails closed on it).
    Refused {
        /// Why, for people.
        message: String,
    },
}

/// One answer on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// [`PROTOCOL`].
    pub version: u32,
    /// The answer.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Response {
    /// An answer of this version.
    #[must_use]
    pub fn new(outcome: Outcome) -> Response {
        Response { version: PROTOCOL, outcome }
    }
}

/// Why [`call`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens at the socket, or it cannot be opened.
    #[error("cannot connect to the egret agent at `{}`: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The exchange failed or took longer than the bound.
    #[error("no answer from the egret agent at `{}` within {} ms: {source}", socket.display(), timeout.as_millis())]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// The bound.
        timeout: Duration,
        /// The error.
        source: std::io::Error,
    },
    /// The answer is not a [`Response`] of this version.
    #[error("the egret agent at `{}` answered something else: {message}", socket.display())]
    Garbled {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// Sends `request` to the agent at `socket` and reads its answer, all
/// within `timeout`.
///
/// # Errors
/// No agent, an exchange that fails or takes too long, an answer that is not
/// a [`Response`] of [`PROTOCOL`].
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let started = Instant::now();
    let stream = UnixStream::connect(socket).map_err(|source| CallError::Connect { socket: socket.into(), source })?;
    let exchange = |source| CallError::Exchange { socket: socket.into(), timeout, source };
    let left = || {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    stream.set_write_timeout(Some(left().map_err(exchange)?)).map_err(exchange)?;
    let mut line = serde_json::to_string(request).map_err(|e| exchange(std::io::Error::other(e)))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(exchange)?;
    stream.set_read_timeout(Some(left().map_err(exchange)?)).map_err(exchange)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(exchange)?;
    let garbled = |message: String| CallError::Garbled { socket: socket.into(), message };
    if answer.is_empty() {
        return Err(garbled("the connection closed without an answer".into()));
    }
    let response: Response = serde_json::from_str(&answer).map_err(|e| garbled(e.to_string()))?;
    if response.version != PROTOCOL {
        return Err(garbled(format!("protocol version {}, this plugin speaks {PROTOCOL}", response.version)));
    }
    Ok(response)
}

/// Reads one [`Request`] line (the agent's side); `Err` holds the
/// [`Response`] to send back for a request it cannot take.
///
/// # Errors
/// A line that is no request, or one of another protocol version.
pub fn parse_request(line: &str) -> Result<Request, Response> {
    let refused = |message: String| Response::new(Outcome::Refused { message });
    // the version first, so a newer plugin's unknown op is named as a version mismatch
    let version = serde_json::from_str::<serde_json::Value>(line)
        .map_err(|e| refused(format!("not a JSON request: {e}")))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(PROTOCOL)) {
        return Err(refused(format!(
            "protocol version {}; this agent speaks {PROTOCOL} (upgrade egret-cni and egret-agent together)",
            version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    serde_json::from_str(line).map_err(|e| refused(format!("not a request of protocol {PROTOCOL}: {e}")))
}

/// Which pods a policy could select, as the agent last compiled the cluster:
/// what the plugin consults when the agent is down.
///
/// Conservative by construction: a namespace is listed when any selector
/// item of any policy could match it, ignoring the item's pod selector (a
/// new pod's labels are unknown here) and its node selector; `any_namespace`
/// is set when an item has no namespace selector or one that a namespace the
/// agent has not seen could match (anything but a list of names through
/// `kubernetes.io/metadata.name`). The policies are those of the agent's last
/// resolution: a policy the agent rejects selects nothing there and is not
/// counted either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// [`PROTOCOL`].
    pub version: u32,
    /// The node the agent serves.
    pub node: String,
    /// Namespaces in which some policy could select a pod.
    pub namespaces: BTreeSet<String>,
    /// Whether a pod in a namespace not listed could be selected too.
    pub any_namespace: bool,
}

impl Selection {
    /// Whether a pod in `namespace` could be selected by some policy.
    #[must_use]
    pub fn could_select(&self, namespace: &str) -> bool {
        self.any_namespace || self.namespaces.contains(namespace)
    }

    /// Reads the summary at `path`.
    ///
    /// # Errors
    /// A missing or unreadable file, or one that is no summary of this version.
    pub fn read(path: &Path) -> Result<Selection, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let s: Selection =
            serde_json::from_str(&text).map_err(|e| format!("`{}` is not a selection summary: {e}", path.display()))?;
        if s.version != PROTOCOL {
            return Err(format!("`{}` has version {}, expected {PROTOCOL}", path.display(), s.version));
        }
        Ok(s)
    }

    /// Writes the summary to `path` atomically (a temporary file in the same
    /// directory, renamed over it), creating the directory.
    ///
    /// # Errors
    /// File errors.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_tagged_json_lines() {
        let r = Request::new(Op::Admit(Endpoint {
            container_id: "c1".into(),
            namespace: "prod".into(),
            name: "web".into(),
            host_interface: Some("veth1".into()),
            ips: vec!["10.0.0.5".parse().expect("ip")],
        }));
        let line = serde_json::to_string(&r).expect("json");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!((v["version"].as_u64(), v["op"].as_str()), (Some(1), Some("admit")));
        assert_eq!(parse_request(&line), Ok(r));
        let a = Response::new(Outcome::Admitted { selected: true, generation: Some(3), detail: "x".into() });
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(v["outcome"], "admitted");
    }

    #[test]
    fn another_version_or_garbage_is_refused_with_a_reason() {
        for (line, want) in [
            (r#"{"version":2,"op":"ping"}"#, "protocol version 2"),
            (r#"{"op":"ping"}"#, "protocol version missing"),
            ("{", "not a JSON request"),
            (r#"{"version":1,"op":"fly"}"#, "not a request of protocol 1"),
        ] {
            match parse_request(line) {
                Err(Response { outcome: Outcome::Refused { message }, .. }) => {
                    assert!(message.contains(want), "{line}: {message}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_summary_round_trips_and_says_what_could_be_selected() {
        let dir = std::env::temp_dir().join(format!("egret-cni-selection-{}", std::process::id()));
        let path = dir.join("sel.json");
        let s = Selection {
            version: PROTOCOL,
            node: "w1".into(),
            namespaces: ["prod".to_owned()].into(),
            any_namespace: false,
        };
        s.write(&path).expect("write");
        let back = Selection::read(&path).expect("read");
        assert_eq!(back, s);
        assert!(back.could_select("prod") && !back.could_select("dev"));
        assert!(Selection { any_namespace: true, ..s }.could_select("dev"));
        std::fs::write(&path, r#"{"version":9,"node":"w1","namespaces":[],"any_namespace":false}"#).expect("write");
        assert!(Selection::read(&path).is_err_and(|e| e.contains("version 9")));
        assert!(Selection::read(&dir.join("none")).is_err_and(|e| e.contains("cannot read")));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_agent_is_a_connect_error_naming_the_socket() {
        let socket = std::env::temp_dir().join(format!("egret-cni-none-{}.sock", std::process::id()));
        let e = call(&socket, &Request::new(Op::Ping), Duration::from_millis(200)).expect_err("no agent");
        assert!(matches!(e, CallError::Connect { .. }));
        assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
    }

    #[test]
    fn a_silent_agent_is_bounded_by_the_timeout() {
        let socket = std::env::temp_dir().join(format!("egret-cni-silent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        // accepts and never answers
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let e = call(&socket, &Request::new(Op::Ping), Duration::from_millis(200)).expect_err("silence");
        assert!(matches!(e, CallError::Exchange { .. }), "{e}");
        assert!(e.to_string().contains("within 200 ms"), "{e}");
        drop(held.join());
        std::fs::remove_file(&socket).expect("cleanup");
    }
}

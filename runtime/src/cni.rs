//! The agent's side of `egret-cni` (`egret-agent --kube --cni-socket PATH`):
//! admitting a new pod at CNI `ADD`, before its first packet.
//!
//! Contract:
//! - **Socket**: [`serve`] listens on a Unix socket and answers each
//!   connection's one request (`egret_cni::protocol`) on its own task.
//! - **Admit** (`ADD`) and **Check** (`CHECK`): a pod in a namespace that
//!   no policy could select ([`Selection`], as of the last reconcile) is
//!   answered at once (`selected: false`: it needs no decision). Any other
//!   pod is handed to the watch loop with its sandbox's addresses
//!   (`egret_kube::admit`): the loop puts the addresses into its view and
//!   runs the reconcile at once (compile, apply, attach: the same path as a
//!   watch change); a pod the watch has not delivered yet is read from the
//!   API server first (`get` on pods). The answer follows that reconcile:
//!   `selected: true` when the node's plan has one of the pod's addresses
//!   as a local endpoint and every such address is attached (its veth runs
//!   the generation that knows it), `selected: false` when the plan does
//!   not select it; `Refused` when the reconcile failed, an address could
//!   not be attached, the pod does not exist, or the watch has not synced.
//! - **Release** (`DEL`), **Gc** (`GC`): handed to the watch loop, which
//!   drops the sandboxes' addresses and recompiles (debounced).
//! - **Ping** (`STATUS`): answered with the watch's synced flag.
//! - **Selection summary**: after every reconcile the agent writes the
//!   [`Selection`] of its resolution ([`selection`]) to the configured
//!   file, atomically, when it changed; the plugin reads it when the agent
//!   cannot be reached.
//!
//! Everything runs on the `--kube` loop's runtime (one thread): while a
//! reconcile runs, admissions wait for it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use egret_cni::protocol::{self, Endpoint, Op, Outcome, PROTOCOL, Response, Selection};
use egret_compiler::resolve::{NAMESPACE_NAME_LABEL, World};
use egret_kube::admit::{Admission, Admit, Admitted};
use egret_kube::watch::WatchStatus;
use egret_lang::ast::{LabelSelector, Operator};
use egret_loader::PodTarget;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

use crate::{AgentError, Synced};

/// Where the agent serves `egret-cni`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// The socket.
    pub socket: PathBuf,
    /// The selection summary it writes.
    pub selection_file: PathBuf,
}

/// A request line longer than this is refused (a request is a few hundred bytes).
const MAX_REQUEST: usize = 64 * 1024;

/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reconciles tell the admissions.
#[derive(Debug, Default)]
struct Dataplane {
    /// Whether a reconcile has run.
    reconciled: bool,
    /// The generation serving after the last reconcile.
    generation: Option<u64>,
    /// Why the last reconcile failed, if it did.
    error: Option<String>,
    /// The local endpoints' addresses of the last plan (the selected pods).
    endpoints: BTreeSet<IpAddr>,
    /// Those of them the last sync could not attach, and why.
    unattached: BTreeMap<IpAddr, String>,
    /// The last summary (written to the file when it changes).
    selection: Option<Selection>,
}

/// The state the watch callback and the socket's tasks share.
#[derive(Debug)]
pub struct Shared {
    config: CniConfig,
    node: String,
    dataplane: Mutex<Dataplane>,
}

impl Shared {
    /// Nothing reconciled yet.
    #[must_use]
    pub fn new(config: CniConfig, node: &str) -> Arc<Shared> {
        Arc::new(Shared { config, node: node.to_owned(), dataplane: Mutex::default() })
    }

    fn dataplane(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        self.dataplane.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a reconcile: the world it resolved (for the summary), the
    /// endpoints its plan had (`None`: it did not compile) and its result.
    pub fn reconciled(&self, world: &World, endpoints: Option<&[IpAddr]>, result: &Result<Synced, AgentError>) {
        let summary = selection(world, &self.node);
        let mut d = self.dataplane();
        d.reconciled = true;
        match (endpoints, result) {
            (Some(eps), Ok(synced)) => {
                d.error = None;
                d.endpoints = eps.iter().copied().collect();
                d.unattached = synced
                    .pods
                    .unresolved
                    .iter()
                    .filter_map(|(t, e)| match t {
                        PodTarget::Ip(ip) => Some((*ip, e.to_string())),
                        _ => None,
                    })
                    .collect();
                d.generation = Some(match &synced.apply {
                    egret_loader::ApplyReport::Unchanged { generation } => generation.0,
                    egret_loader::ApplyReport::Swapped { to, .. } => to.0,
                });
            }
            (_, Err(e)) => d.error = Some(e.to_string()),
            (None, Ok(_)) => d.error = Some("the node did not compile".into()),
        }
        if d.selection.as_ref() != Some(&summary) {
            match summary.write(&self.config.selection_file) {
                Ok(()) => d.selection = Some(summary),
                Err(e) => {
                    tracing::warn!(path = %self.config.selection_file.display(), error = %e, "cannot write the CNI selection summary")
                }
            }
        }
    }

    /// The answer to an admission whose reconcile has run.
    fn outcome(&self, ep: &Endpoint) -> Outcome {
        let d = self.dataplane();
        if let Some(e) = &d.error {
            return Outcome::Refused { message: format!("the node's last sync failed: {e}") };
        }
        let selected: Vec<IpAddr> = ep.ips.iter().copied().filter(|ip| d.endpoints.contains(ip)).collect();
        if let Some((ip, why)) = selected.iter().find_map(|ip| d.unattached.get(ip).map(|w| (ip, w))) {
            return Outcome::Refused {
                message: format!("pod {} ({ip}) is selected but not attached: {why}", ep.key()),
            };
        }
        let detail = if selected.is_empty() {
            "no policy selects the pod on this node: its traffic takes the node's path".to_owned()
        } else {
            let via = ep.host_interface.as_deref().map(|i| format!(" via {i}")).unwrap_or_default();
            format!("selected: classifier attached{via}, generation {}", d.generation.unwrap_or_default())
        };
        Outcome::Admitted { selected: !selected.is_empty(), generation: d.generation, detail }
    }

    /// Whether a pod in `namespace` could be selected (before any reconcile: yes).
    fn could_select(&self, namespace: &str) -> bool {
        self.dataplane().selection.as_ref().is_none_or(|s| s.could_select(namespace))
    }
}

/// The [`Selection`] summary of a resolution: see its doc for the rules.
#[must_use]
pub fn selection(world: &World, node: &str) -> Selection {
    let mut s = Selection { version: PROTOCOL, node: node.to_owned(), ..Selection::default() };
    for p in world.policies() {
        for item in &p.ast.selectors {
            let Some(sel) = &item.namespace_selector else {
                s.any_namespace = true;
                continue;
            };
            s.namespaces.extend(world.namespaces().filter(|n| sel.matches(&n.labels)).map(|n| n.name.clone()));
            match names_only(sel) {
                Some(names) => s.namespaces.extend(names),
                None => s.any_namespace = true,
            }
        }
    }
    s
}

/// The namespace names a selector can match when it constrains nothing but
/// `kubernetes.io/metadata.name` (`matchLabels` or `In`); `None` when a
/// namespace the agent has not seen might match it.
fn names_only(sel: &LabelSelector) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for (k, v) in &sel.match_labels {
        if k.value != NAMESPACE_NAME_LABEL {
            return None;
        }
        names.push(v.value.clone());
    }
    for r in &sel.match_expressions {
        if r.key.value != NAMESPACE_NAME_LABEL || r.operator.value != Operator::In {
            return None;
        }
        names.extend(r.values.iter().map(|v| v.value.clone()));
    }
    (!names.is_empty()).then_some(names)
}

/// Binds the socket (replacing a stale one, creating its directory).
///
/// # Errors
/// The directory or the socket cannot be made.
pub fn bind(config: &CniConfig) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&config.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&config.socket)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What a connection's task needs.
#[derive(Clone)]
pub struct Server {
    /// The shared state.
    pub shared: Arc<Shared>,
    /// The watch loop's admissions.
    pub admissions: UnboundedSender<Admission>,
    /// For pods the watch has not delivered.
    pub client: kube::Client,
    /// The watch's status (`Ping`).
    pub status: Arc<WatchStatus>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("shared", &self.shared).finish_non_exhaustive()
    }
}

/// Serves the socket until the runtime ends. Never returns.
pub async fn serve(listener: tokio::net::UnixListener, server: Server) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let server = server.clone();
                tokio::spawn(async move { server.connection(stream).await });
            }
            Err(e) => {
                tracing::warn!(socket = %server.shared.config.socket.display(), error = %e, "CNI socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Server {
    async fn connection(&self, stream: tokio::net::UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
        let response = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
            Ok(Ok(_)) if line.ends_with('\n') => match protocol::parse_request(&line) {
                Ok(request) => Response::new(self.answer(request.op).await),
                Err(refused) => refused,
            },
            Ok(Ok(_)) => refused(format!("no request line within {MAX_REQUEST} bytes")),
            Ok(Err(e)) => refused(format!("reading the request: {e}")),
            Err(_) => refused(format!("no request within {} s", READ_TIMEOUT.as_secs())),
        };
        let mut out = serde_json::to_string(&response).unwrap_or_default();
        out.push('\n');
        let _ = write.write_all(out.as_bytes()).await;
    }

    async fn answer(&self, op: Op) -> Outcome {
        match op {
            Op::Ping => Outcome::Pong { synced: self.status.synced() },
            Op::Admit(ep) | Op::Check(ep) => self.admit(ep).await,
            Op::Release { container_id, .. } => self.release(Admit::Release { container_id }).await,
            Op::Gc { valid_container_ids } => {
                self.release(Admit::Gc { valid: valid_container_ids.into_iter().collect() }).await
            }
        }
    }

    /// Hands `admit` to the watch loop and waits for its answer.
    async fn ask(&self, admit: Admit) -> Result<Admitted, Outcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.admissions
            .send(Admission { admit, reply })
            .map_err(|_| Outcome::Refused { message: "the agent's watch has stopped".into() })?;
        answer.await.map_err(|_| Outcome::Refused { message: "the agent's watch dropped the admission".into() })
    }

    async fn admit(&self, ep: Endpoint) -> Outcome {
        if !self.shared.could_select(&ep.namespace) {
            return Outcome::Admitted {
                selected: false,
                generation: self.shared.dataplane().generation,
                detail: format!("no policy could select a pod in namespace `{}`", ep.namespace),
            };
        }
        let ips: Vec<String> = ep.ips.iter().map(IpAddr::to_string).collect();
        let first = Admit::Pod { key: ep.key(), container_id: ep.container_id.clone(), ips: ips.clone() };
        let answer = match self.ask(first).await {
            Ok(Admitted::NotInView) => match egret_kube::admit::get_pod(&self.client, &ep.namespace, &ep.name).await {
                Ok(mut pod) => {
                    pod.ips = ips;
                    pod.node_name.get_or_insert_with(|| self.shared.node.clone());
                    self.ask(Admit::Facts { container_id: ep.container_id.clone(), pod }).await
                }
                Err(e) => {
                    return Outcome::Refused {
                        message: format!(
                            "pod {} is not in the watch and cannot be read from the API server: {e}",
                            ep.key()
                        ),
                    };
                }
            },
            other => other,
        };
        match answer {
            Ok(Admitted::Reconciled) => self.shared.outcome(&ep),
            Ok(Admitted::NotSynced) => Outcome::Refused {
                message: "the agent has not listed the cluster yet (its watch is not synced)".into(),
            },
            Ok(other) => Outcome::Refused { message: format!("unexpected answer of the watch: {other:?}") },
            Err(refused) => refused,
        }
    }

    async fn release(&self, admit: Admit) -> Outcome {
        match self.ask(admit).await {
            Ok(Admitted::Released(released)) => Outcome::Released { released },
            Ok(other) => Outcome::Refused { message: format!("unexpected answer of the watch: {other:?}") },
            Err(refused) => refused,
        }
    }
}

fn refused(message: String) -> Response {
    Response::new(Outcome::Refused { message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_lang::ast::Requirement;
    use egret_lang::source::{Span, Spanned};

    fn s(v: &str) -> Spanned<String> {
        Spanned::new(v.to_owned(), Span::default())
    }

    fn selector(labels: &[(&str, &str)], exprs: Vec<Requirement>) -> LabelSelector {
        LabelSelector {
            span: Span::default(),
            match_labels: labels.iter().map(|(k, v)| (s(k), s(v))).collect(),
            match_expressions: exprs,
        }
    }

    #[test]
    fn only_selectors_on_namespace_names_bound_the_namespaces() {
        let name = NAMESPACE_NAME_LABEL;
        assert_eq!(names_only(&selector(&[(name, "prod")], vec![])), Some(vec!["prod".to_owned()]));
        let r#in = Requirement {
            span: Span::default(),
            key: s(name),
            operator: Spanned::new(Operator::In, Span::default()),
            values: vec![s("a"), s("b")],
        };
        assert_eq!(names_only(&selector(&[], vec![r#in.clone()])), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(names_only(&selector(&[("team", "x")], vec![])), None, "a new namespace may carry the label");
        assert_eq!(names_only(&selector(&[], vec![])), None, "{{}} matches every namespace");
        let not_in = Requirement { operator: Spanned::new(Operator::NotIn, Span::default()), ..r#in };
        assert_eq!(names_only(&selector(&[], vec![not_in])), None);
    }
}

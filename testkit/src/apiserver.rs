//! An in-process Kubernetes API server for tests: the real list/watch
//! protocol over HTTP/1.1 on 127.0.0.1, for pods, namespaces, nodes and
//! ciliumegressgatewaypolicies (cluster-wide paths only, [`Res`]), and
//! `coordination.k8s.io/v1` Leases (namespaced and cluster-wide paths, read
//! and written: see below).
//!
//! What it speaks, as the real API server does:
//! - **list** (`GET /api/v1/pods`): a `*List` with `metadata.resourceVersion`
//!   (the store's current version); `limit` pages the list and `continue`
//!   tokens name a snapshot (an unknown token is `410 Gone`, `Expired`).
//!   Items carry no `apiVersion`/`kind`, as typed lists on the wire.
//! - **watch** (`?watch=true`): a chunked stream of JSON lines
//!   `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}`.
//!   `resourceVersion=N` resumes after N from the event history; N older
//!   than the history holds ([`ApiServer::compact`]) is answered with one
//!   `ERROR` event carrying a `410 Expired` Status, as the watch cache does.
//!   No `resourceVersion` (or `0`) starts with the current objects as ADDED.
//!   `allowWatchBookmarks=true` watches get `BOOKMARK`s with the current
//!   version every [`BOOKMARK_EVERY`] and on [`ApiServer::bookmark`].
//!   `timeoutSeconds` ends the watch cleanly.
//! - **label selectors** (`labelSelector=k=v,k2!=v2,k3,!k4`: equality,
//!   inequality, existence; set-based terms are `400`) filter lists and
//!   watches. As the watch cache does, a watched object that stops matching
//!   is sent as `DELETED` (its previous content at the new version), and
//!   one that starts matching as `ADDED`.
//! - **field selectors** (`fieldSelector=spec.nodeName=worker-1`, also
//!   `metadata.name` and `metadata.namespace`; `=`, `==`, `!=`) filter lists
//!   and watches the same way; another field is `400`, as the real server
//!   answers a field label it does not support.
//! - Every object write bumps one global `resourceVersion`; each object
//!   carries its own in `metadata.resourceVersion`.
//!
//! Test controls: [`ApiServer::apply`] (create or update), [`ApiServer::delete`],
//! [`ApiServer::end_watches`] (clean end), [`ApiServer::drop_watches`]
//! (connections cut mid-stream), [`ApiServer::stop`] / [`ApiServer::start`]
//! (a restart; objects survive, as in etcd), [`ApiServer::compact`], and
//! request counters ([`ApiServer::count`]), [`ApiServer::fail`] (a resource
//! answered with `404`), [`ApiServer::inject`] (a raw watch line).
//!
//! Besides list/watch:
//! - **NodeNetworks** (`egret.dev/v1alpha1`, [`Served::NodeNetworks`],
//!   cluster-scoped): list, watch, `GET`, `POST` (create; `409
//!   AlreadyExists`) and `PUT` (replace; a stale `resourceVersion` is `409
//!   Conflict`) at [`NODE_NETWORKS_PATH`], as each agent publishes its node's.
//! - **Leases** (`coordination.k8s.io/v1`, [`Served::Leases`]): list and
//!   watch at `/apis/coordination.k8s.io/v1/leases` and
//!   `…/namespaces/NS/leases` (only that namespace); at
//!   `…/namespaces/NS/leases/NAME`: `GET` (`404 NotFound` Status when
//!   absent), `PUT` (replace: a body `metadata.resourceVersion` other than
//!   the stored one is `409 Conflict`, reason `Conflict`, as optimistic
//!   concurrency is on the real server; none is an unconditional update; a
//!   missing object is `404`; uid and creationTimestamp are kept),
//!   `DELETE` (`200` Success Status; `DeleteOptions.preconditions` checked,
//!   `409` when they fail); `POST …/namespaces/NS/leases` creates (`201`
//!   with a new uid, `creationTimestamp` and `resourceVersion`; `409
//!   AlreadyExists` when it exists; a body with a `resourceVersion` is
//!   `500`, as etcd's store refuses it). Writes are validated as the real
//!   server validates Leases (`leaseDurationSeconds` > 0 and
//!   `leaseTransitions` ≥ 0 when set, else `422 Invalid`; a body namespace
//!   or name other than the path's is `400`). Every write is a watch event.
//!   [`ApiServer::apply`] / [`ApiServer::delete`] write Leases unvalidated
//!   (a hand edit, as straight into etcd), [`ApiServer::get`] reads one
//!   back; [`Req::Lease`] counts requests by RBAC verb;
//!   [`ApiServer::delay_lease_writes`] holds Lease writes back.
//! - **One pod**: `GET /api/v1/namespaces/NS/pods/NAME` answers the pod
//!   (`404 NotFound` Status when absent), counted as [`Req::GetPod`].
//! - **Events**: `POST /apis/events.k8s.io/v1/namespaces/NS/events` stores
//!   the `events.k8s.io/v1` Event (`201 Created`; a body that is no Event
//!   is `400`); [`ApiServer::events`] returns them in order.
//! - **TLS and a bearer token** ([`ApiServer::start_with`]): a CA made for
//!   the run signs the serving certificate (IP SANs 127.0.0.1 and the
//!   listener's address); with a token, a request without
//!   `Authorization: Bearer TOKEN` is `401 Unauthorized`.
//!   [`ApiServer::kubeconfig`] is the kubeconfig a client needs (server,
//!   CA data, token), and [`ApiServer::client`] a kube client built from it.

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How often bookmark-enabled watches get a bookmark.
pub const BOOKMARK_EVERY: Duration = Duration::from_millis(300);

/// The served resources of the agent's cluster view (read-only, at
/// cluster-wide paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Pods,
    Namespaces,
    Nodes,
    Policies,
}

impl Res {
    const ALL: [Res; 4] = [Res::Pods, Res::Namespaces, Res::Nodes, Res::Policies];

    fn path(self) -> &'static str {
        match self {
            Res::Pods => "/api/v1/pods",
            Res::Namespaces => "/api/v1/namespaces",
            Res::Nodes => "/api/v1/nodes",
            Res::Policies => "/apis/cilium.io/v2/ciliumegressgatewaypolicies",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Policies => "cilium.io/v2",
            _ => "v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Pods => "Pod",
            Res::Namespaces => "Namespace",
            Res::Nodes => "Node",
            Res::Policies => "CiliumEgressGatewayPolicy",
        }
    }

    fn namespaced(self) -> bool {
        self == Res::Pods
    }

    /// The served resource of an object `kind`.
    pub fn of_kind(kind: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.kind() == kind)
    }
}

/// Everything the server stores: the view's resources, and Leases.
/// (Leases are not a [`Res`], so code that matches every `Res` need not
/// know them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Served {
    /// A resource of the cluster view.
    View(Res),
    /// `coordination.k8s.io/v1` Leases (namespaced; read and written).
    Leases,
    /// egret's `egret.dev/v1alpha1` NodeNetworks (cluster-scoped; read,
    /// created and replaced: each agent publishes its node's).
    NodeNetworks,
}

impl From<Res> for Served {
    fn from(r: Res) -> Served {
        Served::View(r)
    }
}

/// The API group and version of Leases, and their paths.
const LEASES_API: &str = "/apis/coordination.k8s.io/v1";

/// The path of NodeNetworks.
pub const NODE_NETWORKS_PATH: &str = "/apis/egret.dev/v1alpha1/nodenetworks";

impl Served {
    fn api_version(self) -> &'static str {
        match self {
            Served::View(r) => r.api_version(),
            Served::Leases => "coordination.k8s.io/v1",
            Served::NodeNetworks => "egret.dev/v1alpha1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Served::View(r) => r.kind(),
            Served::Leases => "Lease",
            Served::NodeNetworks => "NodeNetwork",
        }
    }

    fn namespaced(self) -> bool {
        match self {
            Served::View(r) => r.namespaced(),
            Served::Leases => true,
            Served::NodeNetworks => false,
        }
    }

    /// What [`ApiServer::count`] calls a list, a watch, a watch answered
    /// with `410`.
    fn req(self, verb: &'static str) -> Req {
        match (self, verb) {
            (Served::View(r), "list") => Req::List(r),
            (Served::View(r), "gone") => Req::Gone(r),
            (Served::View(r), _) => Req::Watch(r),
            (Served::Leases, verb) => Req::Lease(verb),
            (Served::NodeNetworks, verb) => Req::NodeNetwork(verb),
        }
    }
}

/// The objects of YAML text (documents, or `kind: List` items) that this
/// server serves, with their resource; other kinds (egret's NodeNetwork,
/// workloads) are left out.
pub fn yaml_objects(text: &str) -> Vec<(Res, Value)> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let doc: Value = serde_json::to_value(serde_yaml::Value::deserialize(doc).expect("yaml")).expect("json");
        let items =
            if doc["kind"] == "List" { doc["items"].as_array().cloned().unwrap_or_default() } else { vec![doc] };
        out.extend(items.into_iter().filter_map(|item| Some((Res::of_kind(item["kind"].as_str()?)?, item))));
    }
    out
}

/// What a request was, for [`ApiServer::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Req {
    List(Res),
    Watch(Res),
    /// A watch answered with `410 Expired`.
    Gone(Res),
    /// An Event created.
    CreateEvent,
    /// A request refused with `401` (no or a wrong bearer token).
    Unauthorized,
    /// A Lease request, by its RBAC verb: `list`, `watch`, `get`, `create`,
    /// `update`, `delete` (and `gone`: a watch answered with `410`).
    Lease(&'static str),
    /// A NodeNetwork request, by its RBAC verb: `list`, `watch`, `get`,
    /// `create`, `update`.
    NodeNetwork(&'static str),
    /// A write refused with `409 Conflict` (a stale `resourceVersion`).
    Conflict,
    /// A Lease write held back by [`ApiServer::delay_lease_writes`].
    Delayed,
    /// `GET` of one pod (`/api/v1/namespaces/NS/pods/NAME`).
    GetPod,
}

/// How [`ApiServer::start_with`] serves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// HTTPS with a CA made for the run (else plain HTTP).
    pub tls: bool,
    /// A bearer token every request must carry.
    pub token: Option<String>,
}

/// The serving side of TLS, and the CA a client must trust.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// A CA and a serving certificate for `ips`, signed by it.
fn make_tls(ips: &[std::net::IpAddr]) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
    use tokio_rustls::rustls;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "egret test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    leaf.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &ca).expect("serving certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_pem: ca.as_ref().pem() }
}

type Body = BoxBody<Bytes, std::io::Error>;
type Chunk = Result<Frame<Bytes>, std::io::Error>;

#[derive(Debug)]
struct Watcher {
    id: u64,
    served: Served,
    /// Which objects it sees.
    scope: Scope,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Chunk>,
}

/// One label selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// Which objects a list or watch covers: a namespace (or all), a label
/// selector and a field selector (every term must hold).
#[derive(Debug, Clone, Default)]
struct Scope {
    namespace: Option<String>,
    terms: Vec<Term>,
    /// (JSON pointer of the field, value, whether it must equal).
    fields: Vec<(&'static str, String, bool)>,
}

/// The field labels this server selects on, and where they are.
const FIELD_LABELS: [(&str, &str); 3] = [
    ("spec.nodeName", "/spec/nodeName"),
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
];

impl Scope {
    /// The scope of a request: `namespace` from its path, the selector from
    /// its query; `Err` with a message for a selector this server does not
    /// speak.
    fn of(namespace: Option<String>, q: &BTreeMap<String, String>) -> Result<Scope, String> {
        let mut terms = Vec::new();
        for t in q.get("labelSelector").map(String::as_str).unwrap_or("").split(',').map(str::trim) {
            if t.is_empty() {
                continue;
            }
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = t.strip_prefix('!') {
                Term::Absent(k.trim().into())
            } else if t.contains([' ', '(', ')']) {
                return Err(format!("set-based selector {t:?} is not served by the test server"));
            } else {
                Term::Exists(t.into())
            };
            terms.push(term);
        }
        let mut fields = Vec::new();
        for t in q.get("fieldSelector").map(String::as_str).unwrap_or("").split(',').map(str::trim) {
            if t.is_empty() {
                continue;
            }
            let (k, v, eq) = if let Some((k, v)) = t.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k, v, true)
            } else {
                return Err(format!("invalid field selector term {t:?}"));
            };
            let Some((_, pointer)) = FIELD_LABELS.iter().find(|(label, _)| *label == k.trim()) else {
                return Err(format!("field label not supported: {}", k.trim()));
            };
            fields.push((*pointer, v.trim().to_owned(), eq));
        }
        Ok(Scope { namespace, terms, fields })
    }

    fn covers(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if self.namespace.as_deref().is_some_and(|ns| meta["namespace"].as_str() != Some(ns)) {
            return false;
        }
        let label = |k: &str| meta["labels"][k].as_str();
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => label(k) == Some(v),
            Term::NotEquals(k, v) => label(k) != Some(v),
            Term::Exists(k) => label(k).is_some(),
            Term::Absent(k) => label(k).is_none(),
        }) && self.fields.iter().all(|(pointer, v, eq)| {
            // an absent field selects as the empty string, as on the real server
            (obj.pointer(pointer).and_then(Value::as_str).unwrap_or("") == v) == *eq
        })
    }

    /// What a watcher of this scope is sent for an event (`kind` on `obj`,
    /// which was `prev` before), as the watch cache filters: an object
    /// that leaves the scope is `DELETED` (its previous content at the new
    /// version), one that enters it `ADDED`.
    fn event(&self, kind: &'static str, obj: &Value, prev: Option<&Value>) -> Option<(&'static str, Value)> {
        let now = self.covers(obj);
        let before = prev.is_some_and(|p| self.covers(p));
        match (kind, now, before) {
            ("MODIFIED", true, true) => Some(("MODIFIED", obj.clone())),
            ("MODIFIED", true, false) => Some(("ADDED", obj.clone())),
            ("MODIFIED", false, true) => {
                let mut p = prev.cloned().unwrap_or_default();
                p["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
                Some(("DELETED", p))
            }
            ("MODIFIED", false, false) => None,
            (kind, true, _) => Some((kind, obj.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Served, String), Value>,
    /// Events with versions after `oldest`, in order: (version, resource,
    /// type, object, the object before a `MODIFIED`).
    history: Vec<(u64, Served, &'static str, Value, Option<Value>)>,
    oldest: u64,
    watchers: Vec<Watcher>,
    next_id: u64,
    /// The rest of a paged list, by `continue` token (moved, not copied, page by page).
    pages: HashMap<String, (u64, VecDeque<Value>)>,
    counts: HashMap<Req, usize>,
    /// Resources whose requests fail with `404`.
    failing: std::collections::HashSet<Served>,
    /// Events created, in order.
    events: Vec<Value>,
    /// The bearer token requests must carry.
    token: Option<String>,
    /// How many of the next Lease writes wait, and how long.
    lease_delay: (usize, Duration),
}

/// `obj` with its resource's `apiVersion` and `kind` (as single objects
/// and watch events carry them; list items do not).
fn typed(res: Served, mut obj: Value) -> Value {
    obj["apiVersion"] = Value::String(res.api_version().into());
    obj["kind"] = Value::String(res.kind().into());
    obj
}

/// `obj` without `apiVersion` and `kind`, as list items are.
fn untyped(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    obj
}

/// Now as an RFC 3339 time in seconds (`metadata.creationTimestamp`).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn line(kind: &str, object: &Value) -> Chunk {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Ok(Frame::data(Bytes::from(s)))
}

impl State {
    fn key(res: Served, obj: &Value) -> String {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if res.namespaced() {
            format!("{}/{name}", obj["metadata"]["namespace"].as_str().unwrap_or("default"))
        } else {
            name.to_string()
        }
    }

    /// Sends an event (objects with `apiVersion` and `kind`) to the
    /// watchers it concerns and keeps it in the history.
    fn publish(&mut self, res: Served, kind: &'static str, obj: Value, prev: Option<Value>) {
        self.watchers.retain(|w| {
            if w.served != res {
                return true;
            }
            match w.scope.event(kind, &obj, prev.as_ref()) {
                Some((kind, o)) => w.tx.send(line(kind, &o)).is_ok(),
                None => true,
            }
        });
        self.history.push((self.rv, res, kind, obj, prev));
    }

    /// Stores `obj` (created or replaced by namespace and name) at a new
    /// version, keeping the stored uid when it has none (a new one for a
    /// new object), and publishes it; the new version and the object as
    /// stored, with `apiVersion` and `kind`.
    fn store(&mut self, res: Served, mut obj: Value) -> (u64, Value) {
        self.rv += 1;
        let key = State::key(res, &obj);
        let old = self.objects.get(&(res, key.clone())).cloned();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        if !meta.contains_key("uid") {
            let uid = old
                .as_ref()
                .and_then(|o| o["metadata"]["uid"].as_str())
                .map_or_else(|| format!("00000000-0000-4000-8000-{:012}", self.rv), str::to_string);
            meta.insert("uid".into(), Value::String(uid));
        }
        meta.insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let event = typed(res, obj);
        self.objects.insert((res, key), untyped(event.clone()));
        self.publish(res, kind, event.clone(), old.map(|o| typed(res, o)));
        (self.rv, event)
    }

    /// Removes an object at a new version and publishes its deletion; the
    /// object, with `apiVersion` and `kind`.
    fn remove(&mut self, res: Served, key: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&(res, key.to_string()))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let obj = typed(res, obj);
        self.publish(res, "DELETED", obj.clone(), None);
        Some(obj)
    }

    fn bookmark(&mut self) {
        let rv = self.rv.to_string();
        self.watchers.retain(|w| {
            let (api_version, kind) = (w.served.api_version(), w.served.kind());
            let bm = json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}});
            !w.bookmarks || w.tx.send(line("BOOKMARK", &bm)).is_ok()
        });
    }
}

/// The server; see the module doc.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    tls: Option<Arc<Tls>>,
    token: Option<String>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApiServer {
    /// Starts on an ephemeral port of 127.0.0.1, plain HTTP, no auth.
    pub async fn start_new() -> ApiServer {
        ApiServer::start_with(Options::default(), None).await
    }

    /// Starts as `options` say, on `listener` (bound by the caller, in any
    /// network namespace) or an ephemeral port of 127.0.0.1.
    pub async fn start_with(options: Options, listener: Option<std::net::TcpListener>) -> ApiServer {
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true).expect("nonblocking listener");
                TcpListener::from_std(l).expect("listener")
            }
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1"),
        };
        let addr = listener.local_addr().expect("addr");
        let tls = options.tls.then(|| {
            let ips = [std::net::IpAddr::from([127, 0, 0, 1]), addr.ip()];
            Arc::new(make_tls(&ips))
        });
        let state = State { token: options.token.clone(), ..State::default() };
        let s =
            ApiServer { addr, state: Arc::new(Mutex::new(state)), tasks: Arc::default(), tls, token: options.token };
        s.serve(listener);
        s
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls.is_some() { "https" } else { "http" }, self.addr)
    }

    /// A kubeconfig for this server: its URL, the CA (TLS) and the token.
    pub fn kubeconfig(&self) -> String {
        use base64::Engine as _;
        let ca = self.tls.as_ref().map_or(String::new(), |t| {
            let data = base64::engine::general_purpose::STANDARD.encode(&t.ca_pem);
            format!("\n    certificate-authority-data: {data}")
        });
        let user = self.token.as_ref().map_or("{}".to_string(), |t| format!("\n    token: {t}"));
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: \"{}\"{ca}\n\
             users:\n- name: test\n  user: {user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.url()
        )
    }

    /// What a pod's in-cluster client reads for this server: writes the
    /// service-account files the kubelet mounts at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` (`token`, `ca.crt`,
    /// `namespace`) into `dir`, and returns the environment it sets
    /// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`).
    ///
    /// # Panics
    /// Without TLS or a token (an in-cluster client needs both), or if the
    /// files cannot be written.
    #[must_use]
    pub fn service_account(&self, dir: &std::path::Path, namespace: &str) -> [(&'static str, String); 2] {
        let (Some(tls), Some(token)) = (self.tls.as_ref(), self.token.as_ref()) else {
            panic!("an in-cluster client needs TLS and a token");
        };
        std::fs::create_dir_all(dir).expect("service-account directory");
        for (file, text) in [("token", token.as_str()), ("ca.crt", tls.ca_pem.as_str()), ("namespace", namespace)] {
            std::fs::write(dir.join(file), text).expect("service-account file");
        }
        [
            ("KUBERNETES_SERVICE_HOST", self.addr.ip().to_string()),
            ("KUBERNETES_SERVICE_PORT", self.addr.port().to_string()),
        ]
    }

    /// A kube client configured from [`ApiServer::kubeconfig`], as the agent
    /// reads a kubeconfig file.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// The Events created so far, in order.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events.clone()
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let tasks = Arc::clone(&self.tasks);
        let tls = self.tls.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&state);
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            // a client that does not trust the CA ends the handshake
                            if let Ok(stream) = tls.acceptor.accept(stream).await {
                                serve_connection(TokioIo::new(stream), state).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(stream), state).await,
                    }
                });
                tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn.abort_handle());
            }
        });
        let state = Arc::clone(&self.state);
        let bookmarks = tokio::spawn(async move {
            loop {
                tokio::time::sleep(BOOKMARK_EVERY).await;
                lock(&state).bookmark();
            }
        });
        let mut t = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        t.push(accept.abort_handle());
        t.push(bookmarks.abort_handle());
    }

    /// Stops serving: the listener closes and every connection is cut.
    /// Objects and versions survive.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            t.abort();
        }
        lock(&self.state).watchers.clear();
    }

    /// Serves again on the same address; the watch cache is rebuilt, so
    /// resuming from a version older than now is `410 Expired`.
    pub async fn start(&self) {
        self.compact();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Creates or replaces an object (by namespace and name); fills in the
    /// uid when missing; returns the new resourceVersion. Nothing is
    /// validated: for Leases, a hand edit straight into the store.
    pub fn apply(&self, res: impl Into<Served>, obj: Value) -> u64 {
        lock(&self.state).store(res.into(), obj).0
    }

    /// Deletes an object by key (`namespace/name` for pods and Leases, else
    /// the name).
    pub fn delete(&self, res: impl Into<Served>, key: &str) {
        let res = res.into();
        let mut s = lock(&self.state);
        let Some(obj) = s.remove(res, key) else { panic!("no {res:?} {key}") };
        drop(obj);
    }

    /// The stored object by key (`namespace/name` for pods and Leases, else
    /// the name), as a `GET` answers it.
    pub fn get(&self, res: impl Into<Served>, key: &str) -> Option<Value> {
        let res = res.into();
        lock(&self.state).objects.get(&(res, key.to_string())).map(|o| typed(res, o.clone()))
    }

    /// Forgets the event history: resuming from any version before now is
    /// `410 Expired`.
    pub fn compact(&self) {
        let mut s = lock(&self.state);
        s.oldest = s.rv;
        s.history.clear();
        s.pages.clear();
    }

    /// Sends a raw line to every watch of `res` (an object that does not
    /// decode, say).
    pub fn inject(&self, res: impl Into<Served>, raw: &str) {
        let res = res.into();
        let data = Bytes::from(format!("{raw}\n"));
        lock(&self.state).watchers.retain(|w| w.served != res || w.tx.send(Ok(Frame::data(data.clone()))).is_ok());
    }

    /// Sends a bookmark to every bookmark-enabled watch now.
    pub fn bookmark(&self) {
        lock(&self.state).bookmark();
    }

    /// Ends every watch cleanly (as `timeoutSeconds` does).
    pub fn end_watches(&self) {
        lock(&self.state).watchers.clear();
    }

    /// Cuts every watch connection mid-stream (no final chunk).
    pub fn drop_watches(&self) {
        for w in lock(&self.state).watchers.drain(..) {
            let _ = w.tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped by the test")));
        }
    }

    /// Makes every list and watch of `res` fail with `404 NotFound` (what a
    /// cluster without the CRD answers), or serve again. (Not `503`: kube's
    /// client retries that one itself.)
    pub fn fail(&self, res: impl Into<Served>, failing: bool) {
        let res = res.into();
        let mut s = lock(&self.state);
        if failing {
            s.failing.insert(res);
        } else {
            s.failing.remove(&res);
        }
    }

    /// Holds the next `n` Lease writes (`POST`, `PUT`, `DELETE`) back for
    /// `delay` each, after their bodies arrive and before they are served
    /// (counted as [`Req::Delayed`] when they start waiting): a slow
    /// server, or a write made to land after another.
    pub fn delay_lease_writes(&self, n: usize, delay: Duration) {
        lock(&self.state).lease_delay = (n, delay);
    }

    /// How many requests of a sort were served.
    pub fn count(&self, r: Req) -> usize {
        lock(&self.state).counts.get(&r).copied().unwrap_or(0)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection's requests.
async fn serve_connection<I>(io: TokioIo<I>, state: Arc<Mutex<State>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(respond(&state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
}

async fn respond(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    if !authorized(state, &req) {
        *lock(state).counts.entry(Req::Unauthorized).or_default() += 1;
        return full(StatusCode::UNAUTHORIZED, &status(401, "Unauthorized", "Unauthorized"));
    }
    if req.uri().path().starts_with(LEASES_API) {
        leases(state, req).await
    } else if req.uri().path().starts_with(NODE_NETWORKS_PATH) {
        node_networks(state, req).await
    } else if req.method() == hyper::Method::POST {
        create(state, req).await
    } else {
        handle(state, &req)
    }
}

/// Whether the request carries the token (always, without one).
fn authorized(state: &Mutex<State>, req: &Request<Incoming>) -> bool {
    let s = lock(state);
    let Some(token) = &s.token else { return true };
    let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    header == Some(format!("Bearer {token}").as_str())
}

/// `POST /apis/events.k8s.io/v1/namespaces/NS/events`.
async fn create(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let ns = path.strip_prefix("/apis/events.k8s.io/v1/namespaces/").and_then(|r| r.strip_suffix("/events"));
    let Some(ns) = ns.filter(|n| !n.is_empty() && !n.contains('/')).map(str::to_string) else {
        return full(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "only Events are created here"));
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    let mut event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    // what the API server validates for events.k8s.io/v1 (a subset)
    let missing: Vec<&str> = ["eventTime", "reportingController", "reportingInstance", "action", "reason", "type"]
        .into_iter()
        .filter(|f| event[*f].as_str().is_none_or(str::is_empty))
        .collect();
    if event["kind"] != "Event" || event["apiVersion"] != "events.k8s.io/v1" || !missing.is_empty() {
        let msg = format!("not a valid events.k8s.io/v1 Event (missing {missing:?})");
        return full(StatusCode::UNPROCESSABLE_ENTITY, &status(422, "Invalid", &msg));
    }
    if event["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
        return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", "the namespace of the body does not match"));
    }
    let mut s = lock(state);
    s.rv += 1;
    event["metadata"]["namespace"] = Value::String(ns);
    event["metadata"]["resourceVersion"] = Value::String(s.rv.to_string());
    if event["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        let prefix = event["metadata"]["generateName"].as_str().unwrap_or("event-").to_string();
        event["metadata"]["name"] = Value::String(format!("{prefix}{:05}", s.rv));
    }
    *s.counts.entry(Req::CreateEvent).or_default() += 1;
    s.events.push(event.clone());
    full(StatusCode::CREATED, &event)
}

/// Decodes `%XX` escapes and `+` of a query component.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(c) = hex {
                    out.push(c);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(kv), String::new()),
        })
        .collect()
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}).boxed())
        .expect("response")
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// A failure Status about one Lease, with its details, as a response.
fn lease_status(code: u16, reason: &str, name: &str, message: &str) -> Response<Body> {
    let mut body = status(code, reason, message);
    body["details"] = json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"});
    full(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &body)
}

fn handle(state: &Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(key) = one_pod(req.uri().path()) {
        return get_pod(state, req, &key);
    }
    let Some(res) = Res::ALL.into_iter().find(|r| r.path() == req.uri().path()) else {
        return full(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    };
    if req.method() != hyper::Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "read-only test server"));
    }
    collection(state, Served::View(res), None, &query(req))
}

/// `namespace/name` of `/api/v1/namespaces/NS/pods/NAME`.
fn one_pod(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    match rest.split('/').collect::<Vec<_>>()[..] {
        [ns, "pods", name] if !ns.is_empty() && !name.is_empty() => Some(format!("{ns}/{name}")),
        _ => None,
    }
}

/// `GET` of one pod (what `egret-cni`'s admissions ask for a pod the watch
/// has not delivered): the object, or a `404 NotFound` Status.
fn get_pod(state: &Mutex<State>, req: &Request<Incoming>, key: &str) -> Response<Body> {
    if req.method() != hyper::Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "read-only test server"));
    }
    let mut s = lock(state);
    *s.counts.entry(Req::GetPod).or_default() += 1;
    match s.objects.get(&(Served::View(Res::Pods), key.to_string())) {
        Some(o) => full(StatusCode::OK, &typed(Served::View(Res::Pods), o.clone())),
        None => {
            let name = key.rsplit('/').next().unwrap_or_default();
            full(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("pods \"{name}\" not found")))
        }
    }
}

/// A list or watch of `res` in `namespace` (or all).
fn collection(
    state: &Arc<Mutex<State>>,
    res: Served,
    namespace: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    if lock(state).failing.contains(&res) {
        return full(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    }
    let scope = match Scope::of(namespace, q) {
        Ok(s) => s,
        Err(msg) => return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &msg)),
    };
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(state, res, scope, q)
    } else {
        list(state, res, &scope, q)
    }
}

fn list(state: &Mutex<State>, res: Served, scope: &Scope, q: &BTreeMap<String, String>) -> Response<Body> {
    let mut s = lock(state);
    *s.counts.entry(res.req("list")).or_default() += 1;
    let (rv, items) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match s.pages.remove(token) {
            Some(p) => p,
            None => {
                return full(StatusCode::GONE, &status(410, "Expired", "the provided continue parameter is too old"));
            }
        },
        None => (
            s.rv,
            s.objects.iter().filter(|((r, _), o)| *r == res && scope.covers(o)).map(|(_, v)| v.clone()).collect(),
        ),
    };
    let mut items: VecDeque<Value> = items;
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.drain(..limit.min(items.len())).collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if !items.is_empty() {
        s.next_id += 1;
        let token = format!("page-{}", s.next_id);
        s.pages.insert(token.clone(), (rv, items));
        meta["continue"] = Value::String(token);
    }
    let body = json!({"apiVersion": res.api_version(), "kind": format!("{}List", res.kind()), "metadata": meta, "items": page});
    full(StatusCode::OK, &body)
}

fn watch(state: &Arc<Mutex<State>>, res: Served, scope: Scope, q: &BTreeMap<String, String>) -> Response<Body> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let mut s = lock(state);
    *s.counts.entry(res.req("watch")).or_default() += 1;
    let from = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
    let mut subscribe = true;
    match from {
        Some(v) if v < s.oldest => {
            *s.counts.entry(res.req("gone")).or_default() += 1;
            let msg = format!("too old resource version: {v} ({})", s.oldest);
            let _ = tx.send(line("ERROR", &status(410, "Expired", &msg)));
            subscribe = false;
        }
        Some(v) => {
            for (_, _, kind, obj, prev) in s.history.iter().filter(|(rv, r, ..)| *r == res && *rv > v) {
                if let Some((kind, o)) = scope.event(kind, obj, prev.as_ref()) {
                    let _ = tx.send(line(kind, &o));
                }
            }
        }
        None => {
            for ((r, _), obj) in &s.objects {
                if *r == res && scope.covers(obj) {
                    let _ = tx.send(line("ADDED", &typed(res, obj.clone())));
                }
            }
        }
    }
    if subscribe {
        s.next_id += 1;
        let id = s.next_id;
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        s.watchers.push(Watcher { id, served: res, scope, bookmarks, tx });
        if let Some(secs) = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
            // the watch ends cleanly after its timeout
            let state = Arc::clone(state);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                lock(&state).watchers.retain(|w| w.id != id);
            });
        }
    }
    drop(s);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

/// Requests under `/apis/coordination.k8s.io/v1`: Leases (see the module doc).
async fn leases(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix(LEASES_API).unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let (namespace, name) = match parts[..] {
        ["leases"] => (None, None),
        ["namespaces", ns, "leases"] if !ns.is_empty() => (Some(ns.to_string()), None),
        ["namespaces", ns, "leases", name] if !ns.is_empty() && !name.is_empty() => {
            (Some(ns.to_string()), Some(name.to_string()))
        }
        _ => {
            return full(
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", "the server could not find the requested resource"),
            );
        }
    };
    let q = query(&req);
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    let delay = {
        let mut s = lock(state);
        let (n, d) = s.lease_delay;
        (n > 0 && method != hyper::Method::GET).then(|| {
            s.lease_delay.0 -= 1;
            *s.counts.entry(Req::Delayed).or_default() += 1;
            d
        })
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let parsed = || -> Result<Value, Refusal> {
        serde_json::from_slice(&body)
            .map_err(|e| Box::new(full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string()))))
    };
    use hyper::Method;
    match (method, namespace, name) {
        (Method::GET, ns, None) => collection(state, Served::Leases, ns, &q),
        (Method::GET, Some(ns), Some(name)) => {
            let mut s = lock(state);
            *s.counts.entry(Req::Lease("get")).or_default() += 1;
            match s.objects.get(&(Served::Leases, format!("{ns}/{name}"))) {
                Some(o) => full(StatusCode::OK, &typed(Served::Leases, o.clone())),
                None => lease_not_found(&name),
            }
        }
        (Method::POST, Some(ns), None) => match parsed() {
            Ok(lease) => create_lease(state, &ns, lease),
            Err(r) => *r,
        },
        (Method::PUT, Some(ns), Some(name)) => match parsed() {
            Ok(lease) => replace_lease(state, &ns, &name, lease),
            Err(r) => *r,
        },
        (Method::DELETE, Some(ns), Some(name)) => {
            let options = if body.is_empty() { Ok(json!({})) } else { parsed() };
            match options {
                Ok(o) => delete_lease(state, &ns, &name, &o),
                Err(r) => *r,
            }
        }
        _ => full(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "not served for Leases")),
    }
}

fn lease_not_found(name: &str) -> Response<Body> {
    lease_status(404, "NotFound", name, &format!("leases.coordination.k8s.io \"{name}\" not found"))
}

fn lease_conflict(state: &mut State, name: &str, why: &str) -> Response<Body> {
    *state.counts.entry(Req::Conflict).or_default() += 1;
    lease_status(
        409,
        "Conflict",
        name,
        &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": {why}"),
    )
}

/// A request refused: its response (boxed, as an `Err` variant).
type Refusal = Box<Response<Body>>;

/// What the real server checks of a Lease body written to `ns` (and, for a
/// replace, `name`): kind, namespace, name, and the spec's validation; the
/// body with its namespace filled in.
fn check_lease(ns: &str, name: Option<&str>, mut lease: Value) -> Result<Value, Refusal> {
    let bad = |msg: &str| Box::new(full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", msg)));
    if lease["kind"].as_str().is_some_and(|k| k != "Lease")
        || lease["apiVersion"].as_str().is_some_and(|v| v != "coordination.k8s.io/v1")
    {
        return Err(bad("the body is not a coordination.k8s.io/v1 Lease"));
    }
    if !lease["metadata"].is_object() {
        lease["metadata"] = json!({});
    }
    match lease["metadata"]["namespace"].as_str() {
        Some(n) if n != ns => {
            return Err(bad("the namespace of the provided object does not match the namespace sent on the request"));
        }
        Some(_) => {}
        None => lease["metadata"]["namespace"] = Value::String(ns.to_string()),
    }
    let body_name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let invalid = |field: &str, msg: String| {
        let message = format!("Lease.coordination.k8s.io \"{body_name}\" is invalid: {field}: {msg}");
        let mut body = status(422, "Invalid", &message);
        body["details"] = json!({"name": body_name, "group": "coordination.k8s.io", "kind": "Lease",
                                 "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field}]});
        Box::new(full(StatusCode::UNPROCESSABLE_ENTITY, &body))
    };
    if body_name.is_empty() {
        return Err(invalid("metadata.name", "Required value: name or generateName is required".into()));
    }
    if let Some(url) = name.filter(|n| *n != body_name) {
        return Err(bad(&format!("the name of the object ({body_name}) does not match the name on the URL ({url})")));
    }
    let spec = &lease["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        return Err(invalid("spec.leaseDurationSeconds", format!("Invalid value: {d}: must be greater than 0")));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        return Err(invalid(
            "spec.leaseTransitions",
            format!("Invalid value: {t}: must be greater than or equal to 0"),
        ));
    }
    Ok(lease)
}

/// `POST …/namespaces/NS/leases`.
fn create_lease(state: &Mutex<State>, ns: &str, lease: Value) -> Response<Body> {
    let mut lease = match check_lease(ns, None, lease) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut s = lock(state);
    *s.counts.entry(Req::Lease("create")).or_default() += 1;
    if lease["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty()) {
        let msg = "resourceVersion should not be set on objects to be created";
        return full(StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError", msg));
    }
    if s.objects.contains_key(&(Served::Leases, format!("{ns}/{name}"))) {
        let msg = format!("leases.coordination.k8s.io \"{name}\" already exists");
        return lease_status(409, "AlreadyExists", &name, &msg);
    }
    let meta = &mut lease["metadata"];
    meta["uid"] = Value::String(format!("00000000-0000-4000-8000-{:012}", s.rv + 1));
    meta["creationTimestamp"] = Value::String(now_rfc3339());
    let (_, stored) = s.store(Served::Leases, lease);
    full(StatusCode::CREATED, &stored)
}

/// `PUT …/namespaces/NS/leases/NAME`.
fn replace_lease(state: &Mutex<State>, ns: &str, name: &str, lease: Value) -> Response<Body> {
    let mut lease = match check_lease(ns, Some(name), lease) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let mut s = lock(state);
    *s.counts.entry(Req::Lease("update")).or_default() += 1;
    let Some(old) = s.objects.get(&(Served::Leases, format!("{ns}/{name}"))).cloned() else {
        return lease_not_found(name);
    };
    let old_meta = &old["metadata"];
    if let Some(rv) = lease["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty())
        && Some(rv) != old_meta["resourceVersion"].as_str()
    {
        let why = "the object has been modified; please apply your changes to the latest version and try again";
        return lease_conflict(&mut s, name, why);
    }
    match lease["metadata"]["uid"].as_str() {
        Some(uid) if !uid.is_empty() && Some(uid) != old_meta["uid"].as_str() => {
            let msg = format!(
                "Lease.coordination.k8s.io \"{name}\" is invalid: metadata.uid: Invalid value: \"{uid}\": field is immutable"
            );
            return full(StatusCode::UNPROCESSABLE_ENTITY, &status(422, "Invalid", &msg));
        }
        _ => lease["metadata"]["uid"] = old_meta["uid"].clone(),
    }
    lease["metadata"]["creationTimestamp"] = old_meta["creationTimestamp"].clone();
    let (_, stored) = s.store(Served::Leases, lease);
    full(StatusCode::OK, &stored)
}

/// `DELETE …/namespaces/NS/leases/NAME` with `DeleteOptions` `options`.
fn delete_lease(state: &Mutex<State>, ns: &str, name: &str, options: &Value) -> Response<Body> {
    let mut s = lock(state);
    *s.counts.entry(Req::Lease("delete")).or_default() += 1;
    let key = format!("{ns}/{name}");
    let Some(old) = s.objects.get(&(Served::Leases, key.clone())) else {
        return lease_not_found(name);
    };
    let pre = &options["preconditions"];
    for (field, what) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
        let (want, have) = (pre[field].as_str(), old["metadata"][field].as_str().unwrap_or_default());
        if let Some(want) = want.filter(|w| *w != have) {
            let why = format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}");
            return lease_conflict(&mut s, name, &why);
        }
    }
    let uid = old["metadata"]["uid"].clone();
    s.remove(Served::Leases, &key);
    let body = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                      "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases", "uid": uid}});
    full(StatusCode::OK, &body)
}

/// Requests under [`NODE_NETWORKS_PATH`]: list, watch, get, create and
/// replace, as the real server serves a cluster-scoped custom resource
/// (`409` for a create of an existing name or a replace with a stale
/// `resourceVersion`, `404` for a missing one).
async fn node_networks(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    use hyper::Method;
    const RES: Served = Served::NodeNetworks;
    let path = req.uri().path().to_string();
    let name = match path.strip_prefix(NODE_NETWORKS_PATH).unwrap_or_default() {
        "" => None,
        n => Some(n.trim_start_matches('/').to_string()).filter(|n| !n.is_empty() && !n.contains('/')),
    };
    let q = query(&req);
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    let not_found = |name: &str| {
        full(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("nodenetworks.egret.dev \"{name}\" not found")))
    };
    let parsed = || -> Result<Value, Refusal> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Box::new(full(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string()))))?;
        if v["kind"] != "NodeNetwork" || v["apiVersion"] != "egret.dev/v1alpha1" || !v["metadata"]["name"].is_string() {
            return Err(Box::new(full(
                StatusCode::BAD_REQUEST,
                &status(400, "BadRequest", "the body is not a named egret.dev/v1alpha1 NodeNetwork"),
            )));
        }
        Ok(v)
    };
    match (method, name) {
        (Method::GET, None) => collection(state, RES, None, &q),
        (Method::GET, Some(name)) => {
            let mut s = lock(state);
            *s.counts.entry(RES.req("get")).or_default() += 1;
            match s.objects.get(&(RES, name.clone())) {
                Some(o) => full(StatusCode::OK, &typed(RES, o.clone())),
                None => not_found(&name),
            }
        }
        (Method::POST, None) => {
            let mut obj = match parsed() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let mut s = lock(state);
            *s.counts.entry(RES.req("create")).or_default() += 1;
            if s.objects.contains_key(&(RES, name.clone())) {
                let msg = format!("nodenetworks.egret.dev \"{name}\" already exists");
                return full(StatusCode::CONFLICT, &status(409, "AlreadyExists", &msg));
            }
            obj["metadata"]["creationTimestamp"] = Value::String(now_rfc3339());
            let (_, stored) = s.store(RES, obj);
            full(StatusCode::CREATED, &stored)
        }
        (Method::PUT, Some(name)) => {
            let mut obj = match parsed() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let mut s = lock(state);
            *s.counts.entry(RES.req("update")).or_default() += 1;
            if obj["metadata"]["name"] != name.as_str() {
                return full(
                    StatusCode::BAD_REQUEST,
                    &status(400, "BadRequest", "the name of the object does not match the name on the URL"),
                );
            }
            let Some(old) = s.objects.get(&(RES, name.clone())).cloned() else { return not_found(&name) };
            if obj["metadata"]["resourceVersion"].as_str() != old["metadata"]["resourceVersion"].as_str() {
                *s.counts.entry(Req::Conflict).or_default() += 1;
                let msg = format!(
                    "Operation cannot be fulfilled on nodenetworks.egret.dev \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                );
                return full(StatusCode::CONFLICT, &status(409, "Conflict", &msg));
            }
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            let (_, stored) = s.store(RES, obj);
            full(StatusCode::OK, &stored)
        }
        _ => full(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "not served for NodeNetworks")),
    }
}

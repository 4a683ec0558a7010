//! An in-process Kubernetes API server for tests: the real list/watch
//! protocol over HTTP/1.1 on 127.0.0.1, for pods, namespaces, nodes and
//! ciliumegressgatewaypolicies (cluster-wide paths only).
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

/// The served resources.
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
    res: Res,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Chunk>,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Res, String), Value>,
    /// Events with versions after `oldest`, in order.
    history: Vec<(u64, Res, &'static str, Value)>,
    oldest: u64,
    watchers: Vec<Watcher>,
    next_id: u64,
    /// The rest of a paged list, by `continue` token (moved, not copied, page by page).
    pages: HashMap<String, (u64, VecDeque<Value>)>,
    counts: HashMap<Req, usize>,
    /// Resources whose requests fail with `404`.
    failing: std::collections::HashSet<Res>,
    /// Events created, in order.
    events: Vec<Value>,
    /// The bearer token requests must carry.
    token: Option<String>,
}

fn line(kind: &str, object: &Value) -> Chunk {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Ok(Frame::data(Bytes::from(s)))
}

impl State {
    fn key(res: Res, obj: &Value) -> String {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if res.namespaced() {
            format!("{}/{name}", obj["metadata"]["namespace"].as_str().unwrap_or("default"))
        } else {
            name.to_string()
        }
    }

    fn publish(&mut self, res: Res, kind: &'static str, obj: Value) {
        self.watchers.retain(|w| w.res != res || w.tx.send(line(kind, &obj)).is_ok());
        self.history.push((self.rv, res, kind, obj));
    }

    fn bookmark(&mut self) {
        let rv = self.rv.to_string();
        self.watchers.retain(|w| {
            let bm =
                json!({"apiVersion": w.res.api_version(), "kind": w.res.kind(), "metadata": {"resourceVersion": rv}});
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
    /// uid when missing; returns the new resourceVersion.
    pub fn apply(&self, res: Res, mut obj: Value) -> u64 {
        let mut s = lock(&self.state);
        s.rv += 1;
        let key = State::key(res, &obj);
        let old = s.objects.get(&(res, key.clone()));
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        if !meta.contains_key("uid") {
            let uid = old
                .and_then(|o| o["metadata"]["uid"].as_str())
                .map_or_else(|| format!("00000000-0000-4000-8000-{:012}", s.rv), str::to_string);
            meta.insert("uid".into(), Value::String(uid));
        }
        meta.insert("resourceVersion".into(), Value::String(s.rv.to_string()));
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let mut stored = obj.clone();
        if let Some(m) = stored.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        s.objects.insert((res, key), stored);
        let mut event = obj;
        event["apiVersion"] = Value::String(res.api_version().into());
        event["kind"] = Value::String(res.kind().into());
        s.publish(res, kind, event);
        s.rv
    }

    /// Deletes an object by key (`namespace/name` for pods, else the name).
    pub fn delete(&self, res: Res, key: &str) {
        let mut s = lock(&self.state);
        let Some(mut obj) = s.objects.remove(&(res, key.to_string())) else { panic!("no {res:?} {key}") };
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(s.rv.to_string());
        obj["apiVersion"] = Value::String(res.api_version().into());
        obj["kind"] = Value::String(res.kind().into());
        s.publish(res, "DELETED", obj);
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
    pub fn inject(&self, res: Res, raw: &str) {
        let data = Bytes::from(format!("{raw}\n"));
        lock(&self.state).watchers.retain(|w| w.res != res || w.tx.send(Ok(Frame::data(data.clone()))).is_ok());
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
    pub fn fail(&self, res: Res, failing: bool) {
        let mut s = lock(&self.state);
        if failing {
            s.failing.insert(res);
        } else {
            s.failing.remove(&res);
        }
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
        async move {
            let response = if req.method() == hyper::Method::POST && authorized(&state, &req) {
                create(&state, req).await
            } else {
                handle(&state, &req)
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
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

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.replace("%3D", "=").replace("%2C", ",")),
            None => (kv.to_string(), String::new()),
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

fn handle(state: &Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Body> {
    if !authorized(state, req) {
        *lock(state).counts.entry(Req::Unauthorized).or_default() += 1;
        return full(StatusCode::UNAUTHORIZED, &status(401, "Unauthorized", "Unauthorized"));
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
    if lock(state).failing.contains(&res) {
        return full(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    }
    let q = query(req);
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(state, res, &q)
    } else {
        list(state, res, &q)
    }
}

fn list(state: &Mutex<State>, res: Res, q: &BTreeMap<String, String>) -> Response<Body> {
    let mut s = lock(state);
    *s.counts.entry(Req::List(res)).or_default() += 1;
    let (rv, items) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match s.pages.remove(token) {
            Some(p) => p,
            None => {
                return full(StatusCode::GONE, &status(410, "Expired", "the provided continue parameter is too old"));
            }
        },
        None => (s.rv, s.objects.iter().filter(|((r, _), _)| *r == res).map(|(_, v)| v.clone()).collect()),
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

fn watch(state: &Arc<Mutex<State>>, res: Res, q: &BTreeMap<String, String>) -> Response<Body> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let mut s = lock(state);
    *s.counts.entry(Req::Watch(res)).or_default() += 1;
    let from = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
    let mut subscribe = true;
    match from {
        Some(v) if v < s.oldest => {
            *s.counts.entry(Req::Gone(res)).or_default() += 1;
            let msg = format!("too old resource version: {v} ({})", s.oldest);
            let _ = tx.send(line("ERROR", &status(410, "Expired", &msg)));
            subscribe = false;
        }
        Some(v) => {
            for (_, _, kind, obj) in s.history.iter().filter(|(rv, r, _, _)| *r == res && *rv > v) {
                let _ = tx.send(line(kind, obj));
            }
        }
        None => {
            for ((r, _), obj) in &s.objects {
                if *r == res {
                    let mut o = obj.clone();
                    o["apiVersion"] = Value::String(res.api_version().into());
                    o["kind"] = Value::String(res.kind().into());
                    let _ = tx.send(line("ADDED", &o));
                }
            }
        }
    }
    if subscribe {
        s.next_id += 1;
        let id = s.next_id;
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        s.watchers.push(Watcher { id, res, bookmarks, tx });
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

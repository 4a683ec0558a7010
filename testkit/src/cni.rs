//! `egret-cni` on the mini-cluster ([`crate::minicluster`] served by
//! [`crate::kubecluster`]): pods created the way a container runtime creates
//! them, the leak trial of issue #17, and what the e2e tests and
//! `egret-bench cni` share.
//!
//! - **A pod's creation** ([`create_pod`]), as kubelet, runtime and CNIs do
//!   it: the Pod object exists in the API server (scheduled, `Pending`, no
//!   address); the cluster's CNI (here a stand-in: a network namespace, a
//!   veth whose host side `lkN` is on the node, a `/32` routed to it, a
//!   default route via `169.254.1.1`, as the mini-cluster's own pods have)
//!   makes the sandbox and its result; then, with the plugin, `egret-cni` is
//!   executed with `CNI_COMMAND=ADD`, `CNI_ARGS` and that result as
//!   `prevResult` on stdin; then the kubelet writes the pod's `podIPs`; then
//!   the container starts and sends its first packet.
//! - **The agent with a CNI socket** ([`CniAgent`]): the node's
//!   `egret-agent --kube` started with `--cni-socket` (in place of the
//!   mini-cluster's own agent for that node, which the caller stops first:
//!   the new one adopts the pinned generation).
//! - **The leak trial** ([`leak_trial`]): `n` selected pods created one
//!   after the other on worker-1, each sending one UDP datagram to the
//!   external server the moment its creation returns; the server's
//!   namespace logs every datagram's source ([`UdpLog`]).
//!
//! Every namespace a trial creates is deleted when its [`Sandboxes`] guard
//! drops; the agent process is killed (by its pid) and its socket directory
//! removed when [`CniAgent`] drops.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::apiserver::{ApiServer, Res};
use crate::minicluster::{
    ClusterError, EGRESS_IP, MiniCluster, POD_GATEWAY, POD_GATEWAY6, SERVER, TUNNEL_PORT, UDP_PORT, in_netns, ip_in,
    node, raw_socket,
};

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// The network namespaces of pods created here; deleted on drop.
#[derive(Debug, Default)]
pub struct Sandboxes(Vec<String>);

impl Sandboxes {
    /// The namespaces that exist (for leak checks).
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        for ns in self.0.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodToCreate {
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its name (also its network namespace's role: `c.ns(name)`).
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its address (inside the node's pod CIDR).
    pub ip: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack cluster (inside the node's IPv6 pod range).
    pub ip6: Option<Ipv6Addr>,
    /// The host side of its veth on the node.
    pub host_veth: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl PodToCreate {
    /// The sandbox's container ID.
    #[must_use]
    pub fn container_id(&self) -> String {
        format!("sandbox-{}-{}", self.namespace, self.name)
    }

    /// The Pod as the API server holds it before the kubelet wrote its status.
    #[must_use]
    pub fn object(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {"nodeName": self.node},
            "status": {"phase": "Pending"}})
    }

    /// The Pod once the kubelet wrote its addresses.
    #[must_use]
    pub fn object_running(&self) -> Value {
        let mut o = self.object();
        let mut ips = vec![json!({"ip": self.ip.to_string()})];
        ips.extend(self.ip6.map(|ip6| json!({"ip": ip6.to_string()})));
        o["status"] = json!({"phase": "Running", "podIP": self.ip.to_string(), "podIPs": ips});
        o
    }

    /// `CNI_ARGS` as the kubelet passes them.
    #[must_use]
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            self.namespace,
            self.name,
            self.container_id()
        )
    }
}

/// The stand-in of the cluster's CNI: makes the pod's sandbox (see the
/// module doc) and returns its result, as the previous plugin of a chain
/// hands it on (`prevResult`).
///
/// # Errors
/// An `ip` command fails.
pub fn sandbox(c: &MiniCluster, sandboxes: &mut Sandboxes, p: &PodToCreate) -> Result<Value, ClusterError> {
    let (pns, nns) = (c.ns(&p.name), c.node_ns(&p.node));
    crate::minicluster::run("ip", &["netns", "add", &pns], None)?;
    sandboxes.0.push(pns.clone());
    let o = p.ip.octets();
    let (pod_mac, host_mac) = (
        format!("02:0a:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
        format!("02:0b:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
    );
    let ip = p.ip.to_string();
    ip_in(&pns, &["link", "set", "lo", "up"])?;
    crate::minicluster::run(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "netns",
            &pns,
            "address",
            &pod_mac,
            "mtu",
            "1450",
            "type",
            "veth",
            "peer",
            "name",
            &p.host_veth,
            "netns",
            &nns,
            "address",
            &host_mac,
            "mtu",
            "1450",
        ],
        None,
    )?;
    ip_in(&pns, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    ip_in(&pns, &["link", "set", "eth0", "up"])?;
    ip_in(&pns, &["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
    ip_in(&pns, &["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
    ip_in(&pns, &["neigh", "replace", POD_GATEWAY, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"])?;
    ip_in(&nns, &["link", "set", &p.host_veth, "up"])?;
    ip_in(&nns, &["route", "add", &format!("{ip}/32"), "dev", &p.host_veth])?;
    ip_in(&nns, &["neigh", "replace", &ip, "lladdr", &pod_mac, "dev", &p.host_veth, "nud", "permanent"])?;
    let mut ips = vec![json!({"address": format!("{ip}/32"), "interface": 1, "gateway": POD_GATEWAY})];
    let mut routes = vec![json!({"dst": "0.0.0.0/0", "gw": POD_GATEWAY})];
    if let Some(ip6) = p.ip6 {
        // as the mini-cluster's own pods: a /128, a link-local default
        // gateway whose neighbour entry is the host side, the node routes the /128
        let ip6 = ip6.to_string();
        ip_in(&pns, &["-6", "addr", "add", &format!("{ip6}/128"), "dev", "eth0", "nodad"])?;
        ip_in(&pns, &["-6", "route", "add", "default", "via", POD_GATEWAY6, "dev", "eth0"])?;
        ip_in(&pns, &["-6", "neigh", "replace", POD_GATEWAY6, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"])?;
        ip_in(&nns, &["-6", "route", "add", &format!("{ip6}/128"), "dev", &p.host_veth])?;
        ip_in(&nns, &["-6", "neigh", "replace", &ip6, "lladdr", &pod_mac, "dev", &p.host_veth, "nud", "permanent"])?;
        ips.push(json!({"address": format!("{ip6}/128"), "interface": 1, "gateway": POD_GATEWAY6}));
        routes.push(json!({"dst": "::/0", "gw": POD_GATEWAY6}));
    }
    Ok(json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": p.host_veth, "mac": host_mac}, {"name": "eth0", "mac": pod_mac, "sandbox": format!("/run/netns/{pns}")}],
        "ips": ips,
        "routes": routes}))
}

/// The network configuration the runtime hands `egret-cni` (`prevResult`
/// added when given).
#[must_use]
pub fn plugin_conf(socket: &Path, selection_file: &Path, prev: Option<&Value>) -> Value {
    let mut conf = json!({"cniVersion": "1.1.0", "name": "mini-cluster", "type": "egret-cni",
        "socket": socket, "selectionFile": selection_file, "timeoutMs": 5000});
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// One execution of the plugin binary.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// Its exit code (`-1` if killed).
    pub code: i32,
    /// Its stdout, as JSON when it is (`Null` when empty or not JSON).
    pub stdout: Value,
    /// Its stdout as text.
    pub stdout_text: String,
    /// Its stderr.
    pub stderr: String,
    /// From spawning it to its exit.
    pub elapsed: Duration,
}

/// Executes the plugin as a runtime does: `CNI_*` from `env`
/// (`CNI_COMMAND` first), the configuration on stdin.
///
/// # Errors
/// The binary cannot be started.
pub fn run_plugin(plugin: &Path, env: &[(&str, String)], stdin: &str) -> Result<PluginRun, ClusterError> {
    let started = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("starting {}", plugin.display())))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes()).map_err(io("writing the plugin's stdin"))?;
    }
    let out = child.wait_with_output().map_err(io("waiting for the plugin"))?;
    let elapsed = started.elapsed();
    let stdout_text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(PluginRun {
        code: out.status.code().unwrap_or(-1),
        stdout: serde_json::from_str(&stdout_text).unwrap_or(Value::Null),
        stdout_text,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    })
}

/// The `CNI_*` environment of a command about pod `p`.
#[must_use]
pub fn plugin_env(c: &MiniCluster, command: &str, p: &PodToCreate) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", p.container_id()),
        ("CNI_NETNS", format!("/run/netns/{}", c.ns(&p.name))),
        ("CNI_IFNAME", "eth0".to_owned()),
        ("CNI_ARGS", p.cni_args()),
    ]
}

/// A node's `egret-agent --kube --cni-socket` process; killed by its pid and
/// its socket directory removed on drop.
#[derive(Debug)]
pub struct CniAgent {
    child: Child,
    dir: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl CniAgent {
    /// Starts the agent of `node_name` (the mini-cluster's own agent of that
    /// node must be stopped first) with a CNI socket in a fresh directory,
    /// and waits until it answers with its watch synced and has written its
    /// selection summary.
    ///
    /// # Errors
    /// It does not start, exits, or does not answer within 20 s.
    pub fn start(agent: &Path, c: &MiniCluster, node_name: &str, kubeconfig: &Path) -> Result<CniAgent, ClusterError> {
        let dir = std::env::temp_dir().join(format!("{}-cni-{node_name}", c.ns("x")));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut child = Command::new(agent)
            .args(["--kube", "--node", node_name, "--bpffs"])
            .arg(c.bpffs_root(node_name))
            .args(["--netns", &c.node_ns(node_name), "--tunnel-port", &TUNNEL_PORT.to_string(), "--cni-socket"])
            .arg(dir.join("cni.sock"))
            .arg("--cni-selection-file")
            .arg(dir.join("selection.json"))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {}", agent.display())))?;
        let stderr = child
            .stderr
            .take()
            .map_or_else(|| Arc::new(Mutex::new(Vec::new())), |e| crate::agent_process::capture(e, None));
        let mut a = CniAgent { child, dir, stderr };
        let started = Instant::now();
        loop {
            let ping = egret_cni::protocol::call(
                &a.socket(),
                &egret_cni::protocol::Request::new(egret_cni::protocol::Op::Ping),
                Duration::from_millis(500),
            );
            let synced = matches!(ping, Ok(r) if r.outcome == egret_cni::protocol::Outcome::Pong { synced: true });
            if synced && a.selection_file().exists() {
                return Ok(a);
            }
            if let Ok(Some(status)) = a.child.try_wait() {
                return Err(ClusterError::AgentExited {
                    node: node_name.to_owned(),
                    status: status.to_string(),
                    stderr: a.stderr(),
                });
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(ClusterError::Timeout { what: format!("{node_name}'s agent to serve its CNI socket") });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cni.sock")
    }

    /// Its selection summary.
    #[must_use]
    pub fn selection_file(&self) -> PathBuf {
        self.dir.join("selection.json")
    }

    /// What it printed on stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.join("\n")).unwrap_or_default()
    }

    /// Kills it (by its pid: a crash) and reaps it; its socket file and
    /// summary stay, as after a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CniAgent {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every UDP datagram to [`UDP_PORT`] that reaches the server's namespace:
/// its source and payload (a raw socket: what arrives, answered or not).
#[derive(Debug)]
pub struct UdpLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
}

impl UdpLog {
    /// Starts logging in the server's namespace of `c`.
    ///
    /// # Errors
    /// The raw socket cannot be opened.
    pub fn start(c: &MiniCluster) -> Result<UdpLog, ClusterError> {
        let fd = in_netns(&c.ns("srv"), || raw_socket(rustix::net::ipproto::UDP, Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, log) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = rustix::io::read(&fd, &mut buf) else { continue };
                let p = &buf[..n];
                let ihl = usize::from(p.first().copied().unwrap_or(0) & 0x0f) * 4;
                if p.len() < ihl + 8 || ihl < 20 || u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]) != UDP_PORT {
                    continue;
                }
                let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
                if let Ok(mut l) = log.lock() {
                    l.push((src, String::from_utf8_lossy(&p[ihl + 8..]).into_owned()));
                }
            }
        });
        Ok(UdpLog { stop, thread: Some(thread), seen })
    }

    /// The sources of datagrams whose payload is `payload`.
    #[must_use]
    pub fn sources(&self, payload: &str) -> Vec<IpAddr> {
        self.seen.lock().map(|l| l.iter().filter(|(_, p)| p == payload).map(|(s, _)| *s).collect()).unwrap_or_default()
    }
}

impl Drop for UdpLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends one UDP datagram from the pod's namespace to the server.
///
/// # Errors
/// The socket cannot be made or the send fails.
pub fn send_udp(c: &MiniCluster, pod: &str, payload: String) -> Result<(), ClusterError> {
    send_udp_to(c, pod, SERVER, payload)
}

/// Sends one UDP datagram from the pod's namespace to `dst`:[`UDP_PORT`].
///
/// # Errors
/// The socket cannot be made or the send fails.
pub fn send_udp_to(c: &MiniCluster, pod: &str, dst: Ipv4Addr, payload: String) -> Result<(), ClusterError> {
    in_netns(&c.ns(pod), move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io("UDP socket"))?;
        s.send_to(payload.as_bytes(), SocketAddr::V4(SocketAddrV4::new(dst, UDP_PORT)))
            .map_err(io("UDP send"))
            .map(|_| ())
    })
}

/// The leak trial's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// Pods created.
    pub pods: usize,
    /// Whether `egret-cni` ran at `ADD`.
    pub plugin: bool,
    /// First datagrams that arrived from the egress IP.
    pub via_egress: usize,
    /// First datagrams that arrived from another address: leaked (pod, source).
    pub leaked: Vec<(String, IpAddr)>,
    /// First datagrams that did not arrive (dropped on the way: never from
    /// another address).
    pub lost: usize,
    /// Each `ADD`'s duration (process spawn to exit), with the plugin.
    pub add: Vec<Duration>,
    /// Datagrams gateway-1 dropped as from a source it does not allow for
    /// the sending node (`SpoofedSource`: its own watch had not seen the pod
    /// yet) during the trial.
    pub dropped_at_gateway: u64,
    /// Second datagrams, sent by every pod after the trial, that arrived from
    /// the egress IP (every pod under its policy by then).
    pub later_via_egress: usize,
    /// With the plugin: worker-1's generation after the last `ADD` (the
    /// one pods were admitted into) and the next one, built by the full
    /// reconcile that takes them into its plan, if it came within
    /// [`CONSOLIDATION_WAIT`].
    pub generations: Option<(Option<u64>, Option<u64>)>,
    /// With the plugin: third datagrams, sent by every pod once that next
    /// generation serves, that arrived from the egress IP (the full
    /// compile decides the pods as their admission did).
    pub consolidated_via_egress: usize,
}

/// How long a trial waits for worker-1's generation after the admissions
/// (the agent's quiet second, its 10 s bound, and a build).
pub const CONSOLIDATION_WAIT: Duration = Duration::from_secs(15);

/// worker-1's running generation.
fn worker1_generation(c: &MiniCluster) -> Result<Option<u64>, ClusterError> {
    let root = c.bpffs_root("worker-1");
    let s = egret_loader::inspect::status(&root).map_err(|e| ClusterError::Command {
        command: format!("status of {}", root.display()),
        stderr: e.to_string(),
    })?;
    Ok(s.running.map(|g| g.0))
}

/// How a trial runs.
#[derive(Debug, Clone, Copy)]
pub struct LeakTrial<'a> {
    /// The mini-cluster.
    pub cluster: &'a MiniCluster,
    /// Its API server.
    pub api: &'a ApiServer,
    /// `egret-cni` and worker-1's agent serving its socket; `None`: the
    /// watch alone.
    pub plugin: Option<(&'a Path, &'a CniAgent)>,
    /// The server's log of datagrams.
    pub log: &'a UdpLog,
    /// How many pods.
    pub pods: usize,
    /// The first pod's address on worker-1 (the others follow).
    pub first_ip: Ipv4Addr,
    /// Names pods and payloads.
    pub tag: &'a str,
}

/// Runs the leak trial (see the module doc); the pods' namespaces join `sandboxes`.
///
/// # Errors
/// A set-up step fails, or (with the plugin) an `ADD` fails.
pub fn leak_trial(t: &LeakTrial<'_>, sandboxes: &mut Sandboxes) -> Result<LeakReport, ClusterError> {
    let worker = node("worker-1");
    let spoofed = || {
        let stat = egret_bpf::templates::Stat::SpoofedSource.index();
        t.cluster.counter("gateway-1", egret_bpf::templates::map::GW_STATS, stat).map(|(packets, _)| packets)
    };
    let spoofed_before = spoofed()?;
    let mut add = Vec::new();
    let mut pods = Vec::new();
    for i in 0..t.pods {
        let ip = Ipv4Addr::from(u32::from(t.first_ip) + i as u32);
        let p = PodToCreate {
            namespace: "production".into(),
            name: format!("{}-{i}", t.tag),
            node: worker.name.into(),
            ip,
            ip6: None,
            host_veth: format!("{}{i}", &t.tag[..t.tag.len().min(6)]),
            labels: [("app", "leak"), ("use-egress-gateway", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        t.api.apply(Res::Pods, p.object());
        let prev = sandbox(t.cluster, sandboxes, &p)?;
        if let Some((plugin, agent)) = t.plugin {
            let conf = plugin_conf(&agent.socket(), &agent.selection_file(), Some(&prev));
            let r = run_plugin(plugin, &plugin_env(t.cluster, "ADD", &p), &conf.to_string())?;
            if r.code != 0 || r.stdout != prev {
                return Err(ClusterError::Command {
                    command: format!("egret-cni ADD {}", p.name),
                    stderr: format!("exit {}; stdout {}; stderr {}", r.code, r.stdout_text, r.stderr),
                });
            }
            add.push(r.elapsed);
        }
        t.api.apply(Res::Pods, p.object_running());
        send_udp(t.cluster, &p.name, format!("{} first", p.name))?;
        pods.push(p.name);
    }
    let admitted_into = if t.plugin.is_some() { Some(worker1_generation(t.cluster)?) } else { None };
    // the last datagrams on their way (a gateway hop, or the node's masquerade)
    std::thread::sleep(Duration::from_millis(1000));
    let dropped_at_gateway = spoofed()?.saturating_sub(spoofed_before);
    for name in &pods {
        send_udp(t.cluster, name, format!("{name} later"))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut report = LeakReport {
        pods: t.pods,
        plugin: t.plugin.is_some(),
        via_egress: 0,
        leaked: Vec::new(),
        lost: 0,
        add,
        dropped_at_gateway,
        later_via_egress: 0,
        generations: None,
        consolidated_via_egress: 0,
    };
    if let Some(admitted_into) = admitted_into {
        let deadline = Instant::now() + CONSOLIDATION_WAIT;
        let mut next = None;
        while Instant::now() < deadline {
            let now = worker1_generation(t.cluster)?;
            if now != admitted_into {
                next = now;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        report.generations = Some((admitted_into, next));
        if next.is_some() {
            for name in &pods {
                send_udp(t.cluster, name, format!("{name} consolidated"))?;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let egress = IpAddr::V4(EGRESS_IP);
    for name in pods {
        match t.log.sources(&format!("{name} first")).first() {
            None => report.lost += 1,
            Some(s) if *s == egress => report.via_egress += 1,
            Some(s) => report.leaked.push((name.clone(), *s)),
        }
        report.later_via_egress += usize::from(t.log.sources(&format!("{name} later")) == [egress]);
        report.consolidated_via_egress += usize::from(t.log.sources(&format!("{name} consolidated")) == [egress]);
    }
    Ok(report)
}

/// The `q`-quantile of `d` (nearest rank; zero when empty).
#[must_use]
pub fn quantile(d: &[Duration], q: f64) -> Duration {
    let mut v = d.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The `egret-cni` binary: `EGRET_CNI_PLUGIN`, else next to the running
/// executable or one directory up (a test binary runs from
/// `target/release/deps`; `cargo test --workspace` builds the plugin, a
/// target of `egret-cni`, before any test runs).
#[must_use]
pub fn plugin_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EGRET_CNI_PLUGIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join("egret-cni"), dir.join("../egret-cni")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("egret-cni"))
}

/// The mini-cluster served by the API server, every node's agent from it,
/// worker-1's agent serving a CNI socket ([`CniAgent`]); dropped in that
/// order: worker-1's agent, the cluster (the other agents, namespaces,
/// pins), the API server.
#[derive(Debug)]
pub struct CniCluster {
    /// worker-1's agent with the socket.
    pub agent: CniAgent,
    /// The cluster.
    pub cluster: MiniCluster,
    /// Its API server.
    pub served: crate::kubecluster::Served,
}

impl CniCluster {
    /// Builds it (`agent`: the `egret-agent` binary).
    ///
    /// # Errors
    /// Any set-up step; what was made so far is removed.
    pub fn start(tag: &str, agent: &Path) -> Result<CniCluster, ClusterError> {
        Self::start_with(tag, agent, crate::minicluster::Stack::V4)
    }

    /// [`CniCluster::start`] on a mini-cluster of `stack`.
    ///
    /// # Errors
    /// As [`CniCluster::start`].
    pub fn start_with(tag: &str, agent: &Path, stack: crate::minicluster::Stack) -> Result<CniCluster, ClusterError> {
        let mut cluster = MiniCluster::prepare_with(tag, stack)?;
        let served = crate::kubecluster::serve(&cluster, tag)?;
        cluster.start_agents(agent, crate::minicluster::Source::Kube { kubeconfig: &served.kubeconfig })?;
        cluster.stop_agent("worker-1")?;
        let agent = CniAgent::start(agent, &cluster, "worker-1", &served.kubeconfig)?;
        Ok(CniCluster { agent, cluster, served })
    }

    /// The two leak trials of `pods` pods each on worker-1, the watch alone
    /// first, then with `plugin` (module doc); the pods' namespaces are
    /// deleted before this returns.
    ///
    /// # Errors
    /// As [`leak_trial`].
    pub fn side_by_side(&self, plugin: &Path, pods: usize) -> Result<(LeakReport, LeakReport), ClusterError> {
        let log = UdpLog::start(&self.cluster)?;
        let mut sandboxes = Sandboxes::default();
        let first = Ipv4Addr::new(10, 244, 1, 12);
        let mut t = LeakTrial {
            cluster: &self.cluster,
            api: &self.served.server,
            plugin: None,
            log: &log,
            pods,
            first_ip: first,
            tag: "wl",
        };
        let without = leak_trial(&t, &mut sandboxes)?;
        t.plugin = Some((plugin, &self.agent));
        t.first_ip = Ipv4Addr::from(u32::from(first) + pods as u32);
        t.tag = "cn";
        let with = leak_trial(&t, &mut sandboxes)?;
        Ok((without, with))
    }
}

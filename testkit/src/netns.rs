//! Shared support for the loader's privileged tests (TESTING.md):
//! - [`privileged`]: prints one line and returns false without root/bpf/tcx,
//!   panics instead under `EGRET_REQUIRE_PRIVILEGED=1`;
//! - RAII guards for a private bpffs mount ([`Bpffs`]), network namespaces
//!   ([`Netns`]) and entering one with `setns` ([`Entered`]; `ip netns exec`
//!   would hide bpffs);
//! - unique names per test, so tests run in parallel.
//!
//! Traffic stays inside namespaces the tests create, on documentation ranges.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use egret_loader::inspect;

use crate::privileged as privileged_gate;

/// Why the loader's tests cannot run here: no BPF privilege (root, bpffs, a
/// probe program loads), or no iproute2 to build namespaces with.
fn missing_privilege() -> Option<String> {
    privileged_gate::missing_bpf_privilege()
        .or_else(|| Command::new("ip").arg("-V").output().is_err().then(|| "`ip` (iproute2) is missing".to_string()))
}

/// True if the test should go on; prints a line (or panics under
/// `EGRET_REQUIRE_PRIVILEGED=1`) otherwise.
pub fn privileged(test: &str) -> bool {
    privileged_gate::gate(test, missing_privilege())
}

/// A short name unique to this process and call: `<tag><pid mod 10^5><n>`.
/// Interface names must stay within 15 bytes, so tags are short.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{tag}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command, panicking with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS…`.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// `ip -n NS ARGS…`.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A private bpffs mount on a fresh directory; the loader root is `<mount>/egret`.
/// Unmounted and removed on drop (unmounting drops every pin still there).
#[derive(Debug)]
pub struct Bpffs {
    dir: PathBuf,
    /// What a fresh bpffs already holds (`maps.debug`, `progs.debug` with bpf_preload).
    baseline: Vec<String>,
}

impl Bpffs {
    pub fn new(tag: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("egret-test-bpffs-{}", unique(tag)));
        std::fs::create_dir(&dir).expect("create mount point");
        let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status().expect("mount runs");
        if !st.success() {
            let _ = std::fs::remove_dir(&dir);
            panic!("mount -t bpf failed: {st}");
        }
        let mut fs = Bpffs { dir, baseline: Vec::new() };
        fs.baseline = fs.all_entries();
        fs
    }

    pub fn mount_point(&self) -> &Path {
        &self.dir
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("egret")
    }

    /// Pins under the loader root.
    pub fn pins(&self) -> usize {
        inspect::count_pins(&self.root()).expect("count pins")
    }

    /// Top-level entries created since the mount.
    pub fn entries(&self) -> Vec<String> {
        self.all_entries().into_iter().filter(|e| !self.baseline.contains(e)).collect()
    }

    fn all_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Bpffs {
    /// Unpins what the test left (the mount goes anyway), unmounts, removes the directory.
    fn drop(&mut self) {
        for e in self.entries() {
            let p = self.dir.join(&e);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether a path is a mount point.
pub fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*dir.to_string_lossy()))
}

/// A network namespace created with `ip netns add`, deleted on drop (which
/// destroys its interfaces, and with them any tcx link on them).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("egret-{}", unique(tag));
        ip(&["netns", "add", &name]);
        ip_in(&name, &["link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> Entered {
        Entered::new(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The calling thread inside a network namespace; back in its original one on drop.
#[derive(Debug)]
pub struct Entered {
    original: File,
}

impl Entered {
    pub fn new(ns: &str) -> Entered {
        let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(Path::new("/run/netns").join(ns)).expect("open target netns");
        rustix::thread::move_into_link_name_space(target.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        Entered { original }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = rustix::thread::move_into_link_name_space(
            self.original.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        );
    }
}

/// A pod namespace behind a veth of `node`: `eth0` with `ip`/24 in the pod,
/// the node-side end (returned) up with a /32 route to the pod, as routed
/// CNIs do.
pub fn pod_behind_veth(node: &Netns, ip: &str) -> (Netns, String) {
    let pod = Netns::new("p");
    let veth = unique("v");
    ip_in(&node.name, &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
    ip_in(&node.name, &["link", "set", &veth, "up"]);
    ip_in(&node.name, &["route", "add", &format!("{ip}/32"), "dev", &veth]);
    ip_in(&pod.name, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ip_in(&pod.name, &["link", "set", "eth0", "up"]);
    (pod, veth)
}

/// A node namespace with pod namespaces behind veth pairs:
/// pod `i` has `eth0` 198.51.100.(10+i)/24 in namespace `pods[i]`, the
/// node-side end is `veths[i]`, with a /32 route to the pod (as routed CNIs do).
/// The node has 203.0.113.1–3 on `lo` (the destinations the demo classifies).
#[derive(Debug)]
pub struct Topology {
    pub node: Netns,
    pub pods: Vec<Netns>,
    pub veths: Vec<String>,
}

pub const POD_NET: [u8; 3] = [198, 51, 100];
pub const NODE_ADDR: &str = "198.51.100.1";
pub const DESTS: [[u8; 4]; 3] = [[203, 0, 113, 1], [203, 0, 113, 2], [203, 0, 113, 3]];

pub fn pod_ip(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(POD_NET[0], POD_NET[1], POD_NET[2], 10 + i as u8)
}

impl Topology {
    pub fn new(tag: &str, pods: usize) -> Topology {
        let node = Netns::new(tag);
        for d in DESTS {
            let a = format!("{}.{}.{}.{}/32", d[0], d[1], d[2], d[3]);
            ip_in(&node.name, &["addr", "add", &a, "dev", "lo"]);
        }
        let mut t = Topology { node, pods: Vec::new(), veths: Vec::new() };
        for _ in 0..pods {
            t.add_pod();
        }
        t
    }

    /// Adds a pod (a veth that appears later); returns its index.
    pub fn add_pod(&mut self) -> usize {
        let i = self.pods.len();
        let pod = Netns::new("p");
        let veth = unique("v");
        let node = &self.node.name;
        ip_in(node, &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
        ip_in(node, &["link", "set", &veth, "up"]);
        let node_addr = format!("{NODE_ADDR}/32");
        ip_in(node, &["addr", "add", &node_addr, "dev", &veth]);
        ip_in(node, &["route", "add", &format!("{}/32", pod_ip(i)), "dev", &veth]);
        ip_in(&pod.name, &["addr", "add", &format!("{}/24", pod_ip(i)), "dev", "eth0"]);
        ip_in(&pod.name, &["link", "set", "eth0", "up"]);
        ip_in(&pod.name, &["route", "add", "203.0.113.0/24", "via", NODE_ADDR, "dev", "eth0"]);
        self.pods.push(pod);
        self.veths.push(veth);
        i
    }

    /// Deletes pod `i`'s veth (the pod went away).
    pub fn remove_pod_veth(&self, i: usize) {
        ip_in(&self.node.name, &["link", "del", &self.veths[i]]);
    }
}

/// UDP port the tests send to.
pub const PORT: u16 = 40_000;

/// A datagram as the receiver saw it: sequence number and the classifier's stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    pub code_tag: u8,
    pub map_tag: u8,
    pub ifindex_byte: u8,
    /// Which of [`DESTS`] the sender addressed (payload byte 7).
    pub dest: u8,
}

impl Seen {
    pub fn parse(buf: &[u8]) -> Option<Seen> {
        (buf.len() >= 8).then(|| Seen {
            seq: u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]),
            code_tag: buf[4],
            map_tag: buf[5],
            ifindex_byte: buf[6],
            dest: buf[7],
        })
    }
}

/// The test payload: sequence number (LE), 3 zero bytes the classifier
/// stamps, then the destination index (which the classifier leaves alone).
pub fn payload_to(seq: u32, dest: u8) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&seq.to_le_bytes());
    p[7] = dest;
    p
}

/// [`payload_to`] for destination 0.
pub fn payload(seq: u32) -> [u8; 8] {
    payload_to(seq, 0)
}

/// A UDP socket bound to `dst:PORT` in the calling thread's namespace.
pub fn receiver(dst: [u8; 4]) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::from(dst), PORT)).expect("bind receiver");
    s.set_read_timeout(Some(std::time::Duration::from_millis(200))).expect("timeout");
    s
}

/// Reads every datagram until the socket is quiet for its timeout.
pub fn drain(s: &std::net::UdpSocket) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = s.recv(&mut buf) {
        out.extend(Seen::parse(&buf[..n]));
    }
    out
}

/// Sends one datagram per sequence number to `dst:PORT` from inside namespace `ns`
/// (a scoped thread enters it; sockets stay in the namespace they were made in).
pub fn send_from(ns: &str, dst: [u8; 4], seqs: std::ops::Range<u32>) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _in = Entered::new(ns);
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind sender");
            for seq in seqs {
                sock.send_to(&payload(seq), (std::net::Ipv4Addr::from(dst), PORT)).expect("send");
            }
        });
    });
}

/// Tag of generation A.
pub const TAG_A: u8 = 0x0a;
/// Tag of generation B.
pub const TAG_B: u8 = 0x0b;

/// Generation A: D0 and D1 pass, D2 drops. Generation B: D0 and D2 pass, D1
/// drops. Every other destination drops in both.
pub fn demo(node: &str, tag: u8) -> egret_bpf::artifact::Artifact {
    use egret_loader::demo::{DemoSpec, Verdict};
    let (d1, d2) = if tag == TAG_A { (Verdict::Pass, Verdict::Drop) } else { (Verdict::Drop, Verdict::Pass) };
    let spec = DemoSpec::new(node, tag)
        .verdict(DESTS[0].into(), Verdict::Pass)
        .verdict(DESTS[1].into(), d1)
        .verdict(DESTS[2].into(), d2);
    egret_loader::demo::demo_artifact(&spec).expect("demo artifact")
}

/// The tunnel device egret attaches `TunnelIngress` programs to: a VXLAN
/// device in collect-metadata mode on egret's own port, in namespace `ns`.
pub fn add_tunnel(ns: &str) {
    ip_in(ns, &["link", "add", "egret0", "type", "vxlan", "external", "dstport", "48472"]);
    ip_in(ns, &["link", "set", "egret0", "up"]);
}

/// `egret_gw_reply` alone at `EgressIngress` with the templates' maps (hole
/// `%tunnel_ifindex` = `lo`), on node `n1`; `fill` writes the map images.
pub fn gw_reply_artifact(fill: impl FnOnce(&mut Vec<egret_bpf::artifact::MapImage>)) -> egret_bpf::artifact::Artifact {
    use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource, HoleSpec, MapImage, ProgramSpec};
    use egret_bpf::templates::{self, Template};
    let reply = Template::GwReply.assemble().expect("assembles");
    let maps = templates::maps();
    let object =
        egret_bpf::elf::verify_and_write(&[reply.program], &maps, egret_bpf::elf::DEFAULT_LICENSE).expect("object");
    let mut images: Vec<MapImage> = maps.iter().map(MapImage::of).collect();
    fill(&mut images);
    Artifact::new(
        "n1",
        object,
        vec![ProgramSpec::attached(Template::GwReply.name(), AttachPoint::EgressIngress)],
        vec![HoleSpec {
            name: templates::HOLE_TUNNEL_IFINDEX.into(),
            source: HoleSource::Ifindex { link: "lo".into() },
        }],
        images,
    )
}

/// The end of a test in one namespace with a private bpffs: uninstalls,
/// checks that no pin is left, leaves and deletes the namespace, unmounts,
/// and checks that neither is left.
pub fn finish(loader: egret_loader::Loader, entered: Entered, ns: Netns, fs: Bpffs) {
    loader.uninstall().expect("uninstall");
    finish_namespace(entered, ns, fs);
}

/// [`finish`] after the test uninstalled by itself.
pub fn finish_namespace(entered: Entered, ns: Netns, fs: Bpffs) {
    assert_eq!(fs.pins(), 0, "pins left after uninstall");
    drop(entered);
    let (name, mount) = (ns.name.clone(), fs.mount_point().to_path_buf());
    drop(ns);
    drop(fs);
    assert!(!netns_exists(&name) && !mounted(&mount), "namespace or mount left");
}

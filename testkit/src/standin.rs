//! Stand-ins for a CNI's own eBPF programs on a pod's host-side veth (issue
//! #17, coexistence): what Cilium or Calico in eBPF mode attach where egret
//! attaches its classifier. Written in egret's assembler, loaded with aya.
//!
//! - **count-pass** (tcx): counts UDP datagrams (IPv4, no options) to
//!   [`SERVER`]:[`UDP_PORT`] (index 0) and to [`EXCLUDED_SERVER`]:[`UDP_PORT`]
//!   (index 1), returns `TCX_NEXT`.
//! - **redirect** (tcx): counts the same way and redirects those to
//!   [`EXCLUDED_SERVER`] into the stand-in's own path (a veth pair `sia` →
//!   `sib` on the node, where they end), as a CNI steers pod traffic;
//!   everything else `TCX_NEXT`.
//! - **legacy** (`cls_bpf` on a `clsact` qdisc, direct action): the
//!   count-pass program through the old tc API.
//!
//! All of them live on one thread inside the node's namespace
//! ([`StandIns`]); they are detached and the path deleted when it drops.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use aya::programs::tc::{NlOptions, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

use crate::minicluster::{ClusterError, EXCLUDED_SERVER, MiniCluster, SERVER, UDP_PORT, enter_netns, ip_in};

/// Packets each stand-in counted: `[to SERVER, to EXCLUDED_SERVER]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// The tcx count-pass program.
    pub count_pass: [u64; 2],
    /// The tcx redirect program (zeros until [`StandIns::add_redirect`]).
    pub redirect: [u64; 2],
    /// The legacy `cls_bpf` program.
    pub legacy: [u64; 2],
    /// Packets received at the end of the redirect's path (`sib`).
    pub path_rx: u64,
}

/// The source of a stand-in: count, then `then` (assembler text) for
/// packets to [`EXCLUDED_SERVER`] (empty: nothing), then `TCX_NEXT`.
fn source(then: &str) -> String {
    // destination addresses as the packet holds them, read as a little-endian u32
    let le = |a: Ipv4Addr| u32::from_le_bytes(a.octets());
    format!(
        "
.map counts, array, key_size=4, value_size=8, max_entries=2
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 42
    if r4 > r3 goto out
    r5 = *(u16 *)(r2 + 12)
    if r5 != 0x8 goto out
    r5 = *(u8 *)(r2 + 14)
    if r5 != 0x45 goto out
    r5 = *(u8 *)(r2 + 23)
    if r5 != 17 goto out
    r5 = *(u16 *)(r2 + 36)
    if r5 != {port:#x} goto out
    w5 = *(u32 *)(r2 + 30)
    r9 = 0
    if w5 == {server:#x} goto count
    r9 = 1
    if w5 == {excluded:#x} goto count
    goto out
count:
    *(u32 *)(r10 - 4) = r9
    r2 = r10
    r2 += -4
    r1 = map[counts] ll
    call map_lookup_elem
    if r0 == 0 goto out
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
    if r9 != 1 goto out
{then}
out:
    r0 = -1
    exit
",
        server = le(SERVER),
        excluded = le(EXCLUDED_SERVER),
        port = u16::from_le_bytes(UDP_PORT.to_be_bytes()),
    )
}

/// A stand-in loaded (not attached).
fn load(name: &str, source: &str) -> Result<aya::Ebpf, String> {
    let a = egret_bpf::asm::assemble(name, source).map_err(|e| format!("{name}: {e}"))?;
    let bytes = egret_bpf::elf::verify_and_write(&[a.program], &a.maps, "GPL").map_err(|e| format!("{name}: {e}"))?;
    let mut bpf = aya::Ebpf::load(&bytes).map_err(|e| format!("{name}: {e}"))?;
    let prog: &mut SchedClassifier = bpf
        .program_mut(name)
        .ok_or_else(|| format!("{name}: no program"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    prog.load().map_err(|e| format!("{name}: {e}"))?;
    Ok(bpf)
}

fn attach(bpf: &mut aya::Ebpf, name: &str, dev: &str, options: TcAttachOptions) -> Result<(), String> {
    let prog: &mut SchedClassifier = bpf
        .program_mut(name)
        .ok_or_else(|| format!("{name}: no program"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    prog.attach_with_options(dev, TcAttachType::Ingress, options).map_err(|e| format!("{name} on {dev}: {e}"))?;
    Ok(())
}

fn counts(bpf: &mut aya::Ebpf) -> Result<[u64; 2], String> {
    let map = bpf.map("counts").ok_or("no map `counts`")?;
    let array = aya::maps::Array::<_, u64>::try_from(map).map_err(|e| e.to_string())?;
    Ok([array.get(&0, 0).map_err(|e| e.to_string())?, array.get(&1, 0).map_err(|e| e.to_string())?])
}

enum Cmd {
    /// With the ifindex of `sia`.
    AddRedirect(u32),
    Read,
}

/// The stand-ins on one veth of a node: see the module doc.
#[derive(Debug)]
pub struct StandIns {
    cmd: Option<mpsc::Sender<Cmd>>,
    reply: mpsc::Receiver<Result<Counts, String>>,
    thread: Option<JoinHandle<()>>,
    node_ns: String,
}

fn failed(what: String) -> ClusterError {
    ClusterError::Command { command: "stand-in CNI programs".into(), stderr: what }
}

impl StandIns {
    /// Makes the redirect's path (`sia` → `sib`) on the node and attaches
    /// count-pass (tcx, after whatever is there) and the legacy program to
    /// `dev`'s ingress.
    ///
    /// # Errors
    /// The path cannot be made, or a program does not load or attach.
    pub fn attach(c: &MiniCluster, node_name: &str, dev: &str) -> Result<StandIns, ClusterError> {
        let node_ns = c.node_ns(node_name);
        ip_in(&node_ns, &["link", "add", "sia", "type", "veth", "peer", "name", "sib"])?;
        ip_in(&node_ns, &["link", "set", "sia", "up"])?;
        ip_in(&node_ns, &["link", "set", "sib", "up"])?;
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (reply_tx, reply) = mpsc::channel();
        let (ns, dev) = (node_ns.clone(), dev.to_owned());
        let thread = std::thread::spawn(move || {
            let setup = || -> Result<(aya::Ebpf, aya::Ebpf), String> {
                enter_netns(&ns).map_err(|e| e.to_string())?;
                let mut count = load("standin_count", &source(""))?;
                attach(&mut count, "standin_count", &dev, TcAttachOptions::TcxOrder(LinkOrder::default()))?;
                let mut legacy = load("standin_legacy", &source(""))?;
                // a clsact qdisc that exists already is fine
                let _ = aya::programs::tc::qdisc_add_clsact(&dev);
                attach(&mut legacy, "standin_legacy", &dev, TcAttachOptions::Netlink(NlOptions::default()))?;
                Ok((count, legacy))
            };
            let (mut count, mut legacy) = match setup() {
                Ok(p) => p,
                Err(e) => {
                    let _ = reply_tx.send(Err(e));
                    return;
                }
            };
            let _ = reply_tx.send(Ok(Counts::default()));
            let mut redirect: Option<aya::Ebpf> = None;
            for cmd in cmd_rx {
                let r = match cmd {
                    Cmd::AddRedirect(sia) => (|| {
                        let then = format!("    r1 = {sia}\n    r2 = 0\n    call redirect\n    exit");
                        let mut r = load("standin_redirect", &source(&then))?;
                        attach(&mut r, "standin_redirect", &dev, TcAttachOptions::TcxOrder(LinkOrder::default()))?;
                        redirect = Some(r);
                        Ok(Counts::default())
                    })(),
                    Cmd::Read => (|| {
                        Ok(Counts {
                            count_pass: counts(&mut count)?,
                            redirect: redirect.as_mut().map_or(Ok([0, 0]), counts)?,
                            legacy: counts(&mut legacy)?,
                            path_rx: 0,
                        })
                    })(),
                };
                let _ = reply_tx.send(r);
            }
            // dropping the objects detaches every program
        });
        let s = StandIns { cmd: Some(cmd_tx), reply, thread: Some(thread), node_ns };
        s.reply.recv().map_err(|e| failed(e.to_string()))?.map_err(failed)?;
        Ok(s)
    }

    fn ask(&self, cmd: Cmd) -> Result<Counts, ClusterError> {
        self.cmd.as_ref().ok_or_else(|| failed("stopped".into()))?.send(cmd).map_err(|e| failed(e.to_string()))?;
        self.reply.recv().map_err(|e| failed(e.to_string()))?.map_err(failed)
    }

    /// Attaches the redirect stand-in (tcx, after the others).
    ///
    /// # Errors
    /// It does not load or attach.
    pub fn add_redirect(&self) -> Result<(), ClusterError> {
        let sia = self.link("sia")?["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok());
        self.ask(Cmd::AddRedirect(sia.ok_or_else(|| failed("no ifindex for sia".into()))?)).map(|_| ())
    }

    /// `ip -j -s link show dev DEV` in the node's namespace.
    fn link(&self, dev: &str) -> Result<serde_json::Value, ClusterError> {
        let out = ip_in(&self.node_ns, &["-j", "-s", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| failed(format!("ip -j: {e}")))?;
        Ok(v[0].clone())
    }

    /// What the stand-ins counted so far.
    ///
    /// # Errors
    /// A map cannot be read.
    pub fn counts(&self) -> Result<Counts, ClusterError> {
        let mut c = self.ask(Cmd::Read)?;
        c.path_rx = self.link("sib")?["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
        Ok(c)
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        self.cmd = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = ip_in(&self.node_ns, &["link", "del", "sia"]);
    }
}

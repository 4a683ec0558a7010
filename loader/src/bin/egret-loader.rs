//! `egret-loader`: drives the loader library by hand (the node agent,
//! `egret-agent`, will embed the library instead).
//!
//! ```text
//! egret-loader [--root DIR] [--netns NAME] status [--json]
//! egret-loader [--root DIR] [--netns NAME] maps [--json] [--raw]
//! egret-loader [--root DIR] [--netns NAME] adopt
//! egret-loader [--root DIR] [--netns NAME] apply --node NODE --artifact DIR… [--pod IFACE|IP…]
//!              [--tunnel IFACE] [--egress IFACE…] [--slot N=IP…] [--repeat N] [--unchecked]
//! egret-loader [--root DIR] [--netns NAME] uninstall
//! egret-loader demo --out DIR --node NODE --tag N [--pass IP…] [--drop IP…]
//! ```
//!
//! `apply` loads an artifact directory only after the check `egret verify`
//! makes (`egret_compiler::codegen::rederive::check_node`: the node's three
//! files, every program, map image, hole, attach point and tail call equal
//! to what egret generates for the stored plan, the static verifier and the
//! equivalence checker), so a tampered directory never reaches the kernel.
//! `--unchecked` skips it (the manifest's own checks still run) for
//! artifacts egret does not generate, such as `egret-loader demo`'s.
//!
//! `--netns NAME` enters `/run/netns/NAME` with `setns` first (not `ip netns
//! exec`, which would hide bpffs). `apply` with several artifacts applies them
//! in turn, `--repeat N` times over (a swap loop, used by the crash tests).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use egret_loader::demo::{DemoSpec, Verdict, demo_artifact};
use egret_loader::{ApplyReport, Loader, LoaderConfig, PodTarget, StateFate, inspect, pins, view};

#[derive(Parser, Debug)]
#[command(name = "egret-loader", version, about = "Load, swap and inspect egret's per-node eBPF generations")]
struct Cli {
    /// Directory on bpffs that holds egret's pins.
    #[arg(long, default_value = pins::DEFAULT_ROOT)]
    root: PathBuf,
    /// Network namespace (under /run/netns) to work in.
    #[arg(long)]
    netns: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generations, attachments and map fill levels.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The live decision table (Cilium's columns), NAT table use, drops by
    /// reason and NAT connections; `--raw`: every map, key → value.
    Maps {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Raw key → value dumps of every map instead.
        #[arg(long)]
        raw: bool,
    },
    /// Open the loader (adopting or cleaning up pinned state) and report what it did.
    Adopt,
    /// Apply artifacts (each `DIR/NODE.o` + `DIR/NODE.artifact.json`).
    Apply {
        /// Node name of the artifacts.
        #[arg(long)]
        node: String,
        /// Artifact directories, applied in turn.
        #[arg(long = "artifact", required = true)]
        artifacts: Vec<PathBuf>,
        /// Pod interfaces (names) or pod IPs (their routes lead to the interface).
        #[arg(long = "pod")]
        pods: Vec<String>,
        /// The tunnel device.
        #[arg(long, default_value = "egret0")]
        tunnel: String,
        /// Egress interfaces.
        #[arg(long = "egress")]
        egress: Vec<String>,
        /// Egress slot addresses, `N=IPv4` or `N=IPv6` (a slot may have one
        /// of each).
        #[arg(long = "slot")]
        slots: Vec<String>,
        /// Apply the list this many times over.
        #[arg(long, default_value_t = 1)]
        repeat: u64,
        /// Skip the check that each artifact is what egret generates for its
        /// NODE.plan.txt (for artifacts egret does not generate, such as
        /// `egret-loader demo`'s); the manifest's own checks still run.
        #[arg(long)]
        unchecked: bool,
    },
    /// Release every link and delete every generation.
    Uninstall,
    /// Write a demo artifact (a sample classifier, not egret's).
    Demo {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Node name.
        #[arg(long)]
        node: String,
        /// Generation tag (1..=255).
        #[arg(long)]
        tag: u8,
        /// Destinations that pass.
        #[arg(long = "pass")]
        pass: Vec<Ipv4Addr>,
        /// Destinations that drop.
        #[arg(long = "drop")]
        drop: Vec<Ipv4Addr>,
    },
}

fn enter_netns(name: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(name);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .with_context(|| format!("setns into {name}"))?;
    Ok(())
}

fn pod_target(s: &str) -> PodTarget {
    match s.parse::<IpAddr>() {
        Ok(ip) => PodTarget::Ip(ip),
        Err(_) => PodTarget::Interface(s.to_owned()),
    }
}

/// `--slot N=IP…`: the IPv4 and the IPv6 address of each slot.
type SlotAddresses = (BTreeMap<u32, Ipv4Addr>, BTreeMap<u32, Ipv6Addr>);

fn parse_slots(slots: &[String]) -> Result<SlotAddresses> {
    let (mut v4, mut v6) = (BTreeMap::new(), BTreeMap::new());
    for s in slots {
        let Some((n, ip)) = s.split_once('=') else { bail!("--slot `{s}`: expected N=IPv4 or N=IPv6") };
        let n: u32 = n.parse().with_context(|| format!("--slot `{s}`"))?;
        match ip.parse().with_context(|| format!("--slot `{s}`"))? {
            IpAddr::V4(ip) => {
                v4.insert(n, ip);
            }
            IpAddr::V6(ip) => {
                v6.insert(n, ip);
            }
        }
    }
    Ok((v4, v6))
}

/// `DIR`'s artifact of `node`: whole-checked as `egret verify` checks it,
/// or with `unchecked` only read (format, digest, images).
fn read_artifact(dir: &Path, node: &str, unchecked: bool) -> Result<egret_bpf::artifact::Artifact> {
    if unchecked {
        return egret_bpf::artifact::read_dir(dir, node).with_context(|| format!("reading {}", dir.display()));
    }
    let options = egret_compiler::codegen::rederive::CheckOptions::default();
    match egret_compiler::codegen::rederive::check_node(dir, node, &options) {
        Ok(checked) => Ok(checked.verified.into_artifact()),
        Err(e) => bail!(
            "refusing the artifact of node `{node}` in `{}`: {}",
            dir.display(),
            egret_lang::diag::error_chain(&e)
        ),
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", egret_lang::diag::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(ns) = &cli.netns {
        enter_netns(ns)?;
    }
    match cli.command {
        Cmd::Status { json } => {
            let st = inspect::status(&cli.root)?;
            let text = if json { st.to_json() } else { st.to_string() };
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Cmd::Maps { json, raw: false } => {
            let report = view::MapsReport::read(&cli.root)?;
            let text = if json { report.to_json() } else { report.to_string() };
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Cmd::Maps { json, raw: true } => {
            let (g, dumps) = inspect::maps(&cli.root)?;
            let text = if json {
                serde_json::to_string_pretty(&serde_json::json!({ "generation": g, "maps": dumps }))? + "\n"
            } else {
                let mut t = match g {
                    Some(g) => format!("generation {g}\n"),
                    None => "no running generation\n".to_owned(),
                };
                for d in dumps {
                    t.push_str(&d.to_string());
                }
                t
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Cmd::Adopt => {
            let (_, r) = Loader::open(LoaderConfig::new(&cli.root))?;
            println!(
                "adopted {:?}, kept {} link(s), rolled forward {}, released {}, deleted generations {:?}",
                r.adopted.map(|g| g.0),
                r.kept_links,
                r.rolled_forward.len(),
                r.released.len(),
                r.deleted.iter().map(|g| g.0).collect::<Vec<_>>()
            );
        }
        Cmd::Apply { node, artifacts, pods, tunnel, egress, slots, repeat, unchecked } => {
            let mut config = LoaderConfig::new(&cli.root);
            config.node = Some(node.clone());
            config.tunnel_device = tunnel;
            config.egress_interfaces = egress;
            (config.slot_ipv4, config.slot_ipv6) = parse_slots(&slots)?;
            let loaded = artifacts.iter().map(|d| read_artifact(d, &node, unchecked)).collect::<Result<Vec<_>>>()?;
            let (mut loader, r) = Loader::open(config)?;
            println!("adopted {:?}", r.adopted.map(|g| g.0));
            for p in &pods {
                loader.attach_pod(&pod_target(p))?;
            }
            for _ in 0..repeat {
                for a in &loaded {
                    match loader.apply(a)? {
                        ApplyReport::Unchanged { generation } => println!("unchanged: generation {generation}"),
                        ApplyReport::Swapped { from, to, replaced, attached, released, leftovers, timings, state } => {
                            println!(
                                "generation {} -> {to}: {replaced} replaced, {attached} attached, {released} \
                                 released, {:.3} ms to swapped",
                                from.map_or_else(|| "none".to_owned(), |g| g.to_string()),
                                timings.to_swapped().as_secs_f64() * 1e3
                            );
                            for s in state {
                                match s.fate {
                                    StateFate::Reused => {}
                                    StateFate::Created => println!("state map {}: created", s.map),
                                    StateFate::Recreated { reason } => {
                                        println!("state map {}: recreated empty ({reason})", s.map);
                                    }
                                }
                            }
                            for l in leftovers {
                                eprintln!("warning: could not remove {} (the next start will)", l.display());
                            }
                        }
                    }
                }
            }
        }
        Cmd::Uninstall => {
            let (loader, _) = Loader::open(LoaderConfig::new(&cli.root))?;
            loader.uninstall()?;
            println!("uninstalled");
        }
        Cmd::Demo { out, node, tag, pass, drop } => {
            let mut spec = DemoSpec::new(&node, tag);
            spec.verdicts =
                pass.iter().map(|ip| (*ip, Verdict::Pass)).chain(drop.iter().map(|ip| (*ip, Verdict::Drop))).collect();
            let a = demo_artifact(&spec)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            egret_bpf::artifact::write_dir(&out, &a)?;
            println!("wrote {} (digest {})", egret_bpf::artifact::object_path(&out, &node).display(), a.digest());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_ips_or_interface_names() {
        assert_eq!(pod_target("10.244.1.7"), PodTarget::Ip(Ipv4Addr::new(10, 244, 1, 7).into()));
        assert_eq!(pod_target("2001:db8::7"), PodTarget::Ip("2001:db8::7".parse().expect("ipv6")));
        assert_eq!(pod_target("cali1234"), PodTarget::Interface("cali1234".into()));
    }

    #[test]
    fn slots_parse() {
        let (v4, v6) = parse_slots(&["0=198.51.100.100".into(), "7=198.51.100.101".into(), "7=2001:db8::7".into()])
            .expect("parses");
        assert_eq!(v4.get(&7), Some(&Ipv4Addr::new(198, 51, 100, 101)));
        assert_eq!(v6.get(&7), Some(&"2001:db8::7".parse().expect("ipv6")));
        assert_eq!((v4.len(), v6.len()), (2, 1));
        assert!(parse_slots(&["7".into()]).is_err());
        assert!(parse_slots(&["x=1.2.3.4".into()]).is_err());
        assert!(parse_slots(&["1=1.2.3".into()]).is_err());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "egret-loader",
            "--netns",
            "n",
            "apply",
            "--node",
            "n1",
            "--artifact",
            "a",
            "--artifact",
            "b",
            "--pod",
            "v0",
            "--repeat",
            "3",
        ])
        .expect("parses");
        assert_eq!(cli.root, PathBuf::from(pins::DEFAULT_ROOT));
        let Cmd::Apply { artifacts, repeat, tunnel, .. } = cli.command else { panic!("apply") };
        assert_eq!((artifacts.len(), repeat, tunnel.as_str()), (2, 3, "egret0"));
        assert!(Cli::try_parse_from(["egret-loader", "apply", "--node", "n1"]).is_err(), "an artifact is required");
    }
}

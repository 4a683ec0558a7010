//! The agent's telemetry: Prometheus metrics, `/healthz` and `/readyz`.
//!
//! Contract:
//! - [`Telemetry`] is shared (`Arc`) between the agent loop, which records
//!   every compile, swap and loop pass, and the HTTP server ([`serve`]).
//! - `/metrics` (text format 0.0.4) renders the recorded figures plus the
//!   dataplane's counters, read from the running generation's pinned maps
//!   at scrape time: the classifier's verdict reasons, per-policy packets and
//!   bytes (summed over the classifier rules the manifest attributes to each
//!   policy), the gateway's datapath counters (`egret_bpf::templates::Stat`)
//!   and NAT table use. Label sets are bounded: reasons and gateway counters
//!   are fixed lists; policies are those that apply on this node.
//! - With a gateway prober ([`Telemetry::gateways`]), its status at scrape
//!   time: per gateway (the plan's gateways, a bounded set)
//!   `egret_gateway_up`, `egret_gateway_transitions_total{to}`,
//!   `egret_gateway_probes_total{result}`,
//!   `egret_gateway_probe_send_errors_total` and the histogram
//!   `egret_gateway_probe_rtt_seconds` ([`crate::ha::probe::RTT_BUCKETS`]);
//!   per liveness map `egret_gateway_probe_map_errors_total{map}`.
//! - `/healthz` is 200 while the agent loop has passed within
//!   [`HEALTHY_WITHIN`]; `/readyz` is 200 once a generation is serving and
//!   the last sync succeeded. Anything else is 404.
//! - The server answers one request per connection (`Connection: close`),
//!   reads at most 8 KiB of request with a 2 s timeout, and never panics on
//!   input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_bpf::artifact::CounterMap;
use egret_bpf::templates::{self, Stat};
use egret_compiler::plan::NodeCounts;
use egret_loader::inspect;
use egret_loader::pins::PinLayout;

use crate::ha::probe::{RTT_BUCKETS, StatusHandle};

/// How recent the last loop pass must be for `/healthz`.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

/// A running total and the last value of a duration.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    count: u64,
    sum: f64,
    last: f64,
    max: f64,
}

impl Timing {
    fn record(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.count += 1;
        self.sum += s;
        self.last = s;
        self.max = self.max.max(s);
    }
}

/// Upper bounds (seconds) of the event-to-dataplane histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What `--kube` adds to the metrics: the watch's counters and the Events
/// published.
#[derive(Debug, Clone)]
pub struct KubeStats {
    /// The cluster watch.
    pub watch: Arc<egret_kube::watch::WatchStatus>,
    /// Events about policies.
    pub events: Arc<egret_kube::events::EventStats>,
}

#[derive(Debug, Default)]
struct State {
    compiles_ok: u64,
    compiles_failed: u64,
    swaps: u64,
    compile: Timing,
    swap: Timing,
    event_to_dataplane: Timing,
    /// Per [`LATENCY_BUCKETS`] bound: observations at most that long.
    event_to_dataplane_buckets: [u64; LATENCY_BUCKETS.len()],
    kube: Option<KubeStats>,
    gateways: Option<StatusHandle>,
    floating: Option<crate::ha::ownership::StatusHandle>,
    resolutions: egret_kube::view::ViewPlannerStats,
    artifacts_reused: u64,
    generation: Option<u64>,
    counts: Option<NodeCounts>,
    counters: Vec<CounterMap>,
    last_loop: Option<Instant>,
    last_sync_ok: bool,
}

/// What the agent records; see the module doc.
#[derive(Debug)]
pub struct Telemetry {
    node: String,
    root: PathBuf,
    state: Mutex<State>,
}

impl Telemetry {
    /// Telemetry of the agent for `node` whose loader root is `root`.
    #[must_use]
    pub fn new(node: &str, root: &Path) -> Arc<Telemetry> {
        Arc::new(Telemetry { node: node.to_owned(), root: root.to_path_buf(), state: Mutex::new(State::default()) })
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// A compile finished (successfully or not) after `took`.
    pub fn compiled(&self, took: Duration, ok: bool) {
        self.with(|s| {
            if ok {
                s.compiles_ok += 1;
                s.compile.record(took);
            } else {
                s.compiles_failed += 1;
                s.last_sync_ok = false;
            }
        });
    }

    /// A sync applied the node: the generation serving, whether it swapped
    /// (and how long building and swapping took), the plan's counts, the
    /// artifact's counter labels.
    pub fn applied(&self, generation: u64, swapped: Option<Duration>, counts: NodeCounts, counters: Vec<CounterMap>) {
        self.with(|s| {
            s.generation = Some(generation);
            if let Some(d) = swapped {
                s.swaps += 1;
                s.swap.record(d);
            }
            s.counts = Some(counts);
            s.counters = counters;
            s.last_sync_ok = true;
        });
    }

    /// A sync failed after compiling (loader or attach errors).
    pub fn failed(&self) {
        self.with(|s| s.last_sync_ok = false);
    }

    /// The time from a change of the input to the dataplane serving it.
    pub fn event_to_dataplane(&self, d: Duration) {
        self.with(|s| {
            s.event_to_dataplane.record(d);
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&mut s.event_to_dataplane_buckets) {
                if d.as_secs_f64() <= *bound {
                    *n += 1;
                }
            }
        });
    }

    /// Adds the kube watch's and the Event publisher's figures.
    pub fn kube(&self, stats: KubeStats) {
        self.with(|s| s.kube = Some(stats));
    }

    /// Adds the gateway prober's status (`crate::ha::probe::Prober::status_handle`).
    pub fn gateways(&self, status: StatusHandle) {
        self.with(|s| s.gateways = Some(status));
    }

    /// The floating IPs' controller, rendered at scrape time.
    pub fn floating(&self, status: crate::ha::ownership::StatusHandle) {
        self.with(|s| s.floating = Some(status));
    }

    /// What the `--kube` loop's compiler did so far.
    pub fn resolved(&self, stats: egret_kube::view::ViewPlannerStats, artifacts_reused: u64) {
        self.with(|s| {
            s.resolutions = stats;
            s.artifacts_reused = artifacts_reused;
        });
    }

    /// The agent loop passed.
    pub fn alive(&self) {
        self.with(|s| s.last_loop = Some(Instant::now()));
    }

    /// `/healthz`.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.last_loop.is_some_and(|t| t.elapsed() < HEALTHY_WITHIN))
    }

    /// `/readyz`.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.generation.is_some() && s.last_sync_ok)
    }

    /// The `/metrics` text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut x = Exposition { out: String::new(), node: escape(&self.node) };
        let Ok(s) = self.state.lock() else { return x.out };
        x.family(
            "egret_compiles_total",
            "counter",
            "Node compilations by result.",
            &[("result=\"ok\"".into(), s.compiles_ok as f64), ("result=\"error\"".into(), s.compiles_failed as f64)],
        );
        for (name, help, t) in [
            ("egret_compile_seconds", "Compile time of the node (plan, code generation, checks).", &s.compile),
            ("egret_swap_seconds", "Artifact in memory to every link swapped.", &s.swap),
        ] {
            x.single(&format!("{name}_sum"), "counter", &format!("{help} Sum."), t.sum);
            x.single(&format!("{name}_count"), "counter", &format!("{help} Count."), t.count as f64);
            x.single(&format!("{name}_last"), "gauge", &format!("{help} Last."), t.last);
            x.single(&format!("{name}_max"), "gauge", &format!("{help} Maximum."), t.max);
        }
        // a histogram: p99 = histogram_quantile(0.99, rate(..._bucket[5m]))
        let name = "egret_event_to_dataplane_seconds";
        let t = &s.event_to_dataplane;
        let node = &x.node;
        let _ = writeln!(
            x.out,
            "# HELP {name} From an input change (an API watch event, a node fact, a snapshot file) to the dataplane serving it.\n# TYPE {name} histogram"
        );
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&s.event_to_dataplane_buckets) {
            let _ = writeln!(x.out, "{name}_bucket{{node=\"{node}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(x.out, "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {}", t.count);
        let _ = writeln!(x.out, "{name}_sum{{node=\"{node}\"}} {}\n{name}_count{{node=\"{node}\"}} {}", t.sum, t.count);
        x.single(&format!("{name}_last"), "gauge", "The last event-to-dataplane delay.", t.last);
        x.single(&format!("{name}_max"), "gauge", "The longest event-to-dataplane delay.", t.max);
        if let Some(k) = &s.kube {
            let w = &k.watch;
            x.single(
                "egret_kube_synced",
                "gauge",
                "1 once every watched kind has listed.",
                f64::from(u8::from(w.synced())),
            );
            for (name, help, v) in [
                ("egret_kube_watch_errors_total", "List and watch errors (retried).", w.errors()),
                ("egret_kube_relists_total", "Lists after a kind's first (410 Gone, failed resumes).", w.relists()),
                (
                    "egret_kube_changes_total",
                    "Watch updates that changed egret's input, and node fact changes.",
                    w.changes(),
                ),
                ("egret_kube_reconciles_total", "Debounced recompilations.", w.reconciles()),
            ] {
                x.single(name, "counter", help, v as f64);
            }
            let r = &s.resolutions;
            x.family(
                "egret_kube_resolutions_total",
                "counter",
                "Compiles by how the cluster was resolved: in full, or by updating the last resolution's pods.",
                &[("kind=\"full\"".into(), r.resolutions as f64), ("kind=\"update\"".into(), r.updates as f64)],
            );
            x.single(
                "egret_kube_pods_updated_total",
                "counter",
                "Pods removed from or added to a resolution by updates.",
                r.pods_updated as f64,
            );
            x.single(
                "egret_kube_artifacts_reused_total",
                "counter",
                "Compiles whose plan was the last one's: its artifact reused, no code generation.",
                s.artifacts_reused as f64,
            );
            let e = &k.events;
            x.family(
                "egret_events_total",
                "counter",
                "Kubernetes Events about policies, by result.",
                &[
                    ("result=\"created\"".into(), e.created() as f64),
                    ("result=\"failed\"".into(), e.failed() as f64),
                    ("result=\"dropped\"".into(), e.dropped() as f64),
                ],
            );
        }
        if let Some(h) = &s.gateways {
            x.gateways(h);
        }
        if let Some(h) = &s.floating {
            x.floating(h);
        }
        x.single("egret_swaps_total", "counter", "Generation swaps.", s.swaps as f64);
        if let Some(g) = s.generation {
            x.single("egret_generation", "gauge", "The generation serving traffic.", g as f64);
        }
        if let Some(c) = &s.counts {
            x.family(
                "egret_plan_entries",
                "gauge",
                "The node plan's sizes.",
                &[
                    ("kind=\"endpoints\"".into(), c.endpoints as f64),
                    ("kind=\"classes\"".into(), c.classes as f64),
                    ("kind=\"class_entries\"".into(), c.class_entries as f64),
                    ("kind=\"internal_entries\"".into(), c.internal_entries as f64),
                    ("kind=\"slots\"".into(), c.slots as f64),
                    ("kind=\"gateway_entries\"".into(), c.gateway_entries as f64),
                ],
            );
        }
        let counters = s.counters.clone();
        drop(s);
        let Exposition { mut out, node } = x;
        self.render_dataplane(&mut out, &node, &counters);
        out
    }

    fn render_dataplane(&self, out: &mut String, node: &str, counters: &[CounterMap]) {
        let Ok(status) = inspect::status(&self.root) else { return };
        let Some(g) = status.running else { return };
        let layout = PinLayout::new(&self.root);
        let read = |map: &str| -> BTreeMap<u32, (u64, u64)> {
            inspect::dump_map(&layout.map(g, map), map).map(|d| d.counters()).unwrap_or_default()
        };
        let mut series = |name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{node=\"{node}\",{labels}}} {v}");
            }
        };
        for c in counters {
            let values = read(&c.map);
            if c.map == egret_compiler::codegen::tables::REASONS {
                for (what, pick) in [("packets", 0usize), ("bytes", 1)] {
                    let rows = c
                        .labels
                        .iter()
                        .map(|l| {
                            let v = values.get(&l.index).copied().unwrap_or_default();
                            (format!("reason=\"{}\"", escape(&l.name)), if pick == 0 { v.0 } else { v.1 })
                        })
                        .collect();
                    series(&format!("egret_classifier_{what}_total"), "Source classifier verdicts by reason.", rows);
                }
            } else {
                // per policy: the rules attributed to it, summed
                let mut by_policy: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
                for l in &c.labels {
                    let v = values.get(&l.index).copied().unwrap_or_default();
                    for p in &l.policies {
                        let e = by_policy.entry(p.as_str()).or_default();
                        e.0 += v.0;
                        e.1 += v.1;
                    }
                }
                for (what, pick) in [("packets", 0usize), ("bytes", 1)] {
                    let rows = by_policy
                        .iter()
                        .map(|(p, v)| (format!("policy=\"{}\"", escape(p)), if pick == 0 { v.0 } else { v.1 }))
                        .collect();
                    series(
                        &format!("egret_policy_{what}_total"),
                        "Packets the source classifier sent through a gateway, by the policy deciding them.",
                        rows,
                    );
                }
            }
        }
        let stats = read(templates::map::GW_STATS);
        if !stats.is_empty() {
            for (what, pick) in [("packets", 0usize), ("bytes", 1)] {
                let rows = Stat::ALL
                    .iter()
                    .map(|s| {
                        let v = stats.get(&s.index()).copied().unwrap_or_default();
                        let kind = if s.is_drop() { "drop" } else { "pass" };
                        (format!("counter=\"{}\",kind=\"{kind}\"", s.name()), if pick == 0 { v.0 } else { v.1 })
                    })
                    .collect();
                series(&format!("egret_gateway_{what}_total"), "Gateway datapath counters.", rows);
            }
        }
        // both families' connection tables (egret_rnat_v4 and egret_rnat_v6), summed
        let rnat: Vec<_> = status
            .maps
            .iter()
            .filter(|m| m.name == templates::map::RNAT_V4 || m.name == templates::map::RNAT_V6)
            .collect();
        if !rnat.is_empty() {
            let entries: usize = rnat.iter().map(|m| m.entries).sum();
            let capacity: u64 = rnat.iter().map(|m| u64::from(m.max_entries)).sum();
            let _ = writeln!(
                out,
                "# HELP egret_nat_entries NAT connections, IPv4 and IPv6 (reverse entries, expired ones included until reused).\n# TYPE egret_nat_entries gauge\negret_nat_entries{{node=\"{node}\"}} {entries}\n# HELP egret_nat_capacity NAT table capacity, IPv4 and IPv6.\n# TYPE egret_nat_capacity gauge\negret_nat_capacity{{node=\"{node}\"}} {capacity}",
            );
        }
    }
}

/// The Prometheus text being written, every sample labelled with the node.
struct Exposition {
    out: String,
    node: String,
}

impl Exposition {
    /// One metric family: `# HELP`, `# TYPE` and a sample per `(labels, value)`.
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let node = &self.node;
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(self.out, "{name}{{node=\"{node}\"{sep}{labels}}} {v}");
        }
    }

    /// The gateway prober's figures (see the module doc).
    fn gateways(&mut self, status: &StatusHandle) {
        let p = status.snapshot();
        let gateways: Vec<(String, &crate::ha::probe::GatewayStatus)> =
            p.gateways.iter().map(|(ip, g)| (format!("gateway=\"{ip}\""), g)).collect();
        let rows = |f: fn(&crate::ha::probe::GatewayStatus) -> f64| -> Vec<(String, f64)> {
            gateways.iter().map(|(l, g)| (l.clone(), f(g))).collect()
        };
        self.family(
            "egret_gateway_up",
            "gauge",
            "1 while this node sends through the gateway (up, or not judged yet), 0 while it is down (probes unanswered, or the node not Ready).",
            &rows(|g| f64::from(u8::from(!g.state.is_down()))),
        );
        let transitions: Vec<(String, f64)> = gateways
            .iter()
            .flat_map(|(l, g)| {
                [(format!("{l},to=\"down\""), g.went_down as f64), (format!("{l},to=\"up\""), g.went_up as f64)]
            })
            .collect();
        self.family(
            "egret_gateway_transitions_total",
            "counter",
            "Gateway liveness changes, by the state entered.",
            &transitions,
        );
        let probes: Vec<(String, f64)> = gateways
            .iter()
            .flat_map(|(l, g)| {
                [
                    (format!("{l},result=\"answered\""), g.answered as f64),
                    (format!("{l},result=\"missed\""), g.missed as f64),
                ]
            })
            .collect();
        self.family(
            "egret_gateway_probes_total",
            "counter",
            "Probes judged, by whether the gateway answered before the next one.",
            &probes,
        );
        self.family(
            "egret_gateway_probe_send_errors_total",
            "counter",
            "Probes that could not be sent (counted as missed).",
            &rows(|g| g.send_errors as f64),
        );
        let name = "egret_gateway_probe_rtt_seconds";
        let node = &self.node;
        let _ = writeln!(
            self.out,
            "# HELP {name} Probe round trips over the underlay, answered by the gateway's datapath.\n# TYPE {name} histogram"
        );
        for (l, g) in &gateways {
            for (bound, n) in RTT_BUCKETS.iter().zip(&g.rtt.buckets) {
                let _ = writeln!(self.out, "{name}_bucket{{node=\"{node}\",{l},le=\"{bound}\"}} {n}");
            }
            let (count, sum) = (g.rtt.count, g.rtt.sum);
            let _ = writeln!(self.out, "{name}_bucket{{node=\"{node}\",{l},le=\"+Inf\"}} {count}");
            let _ = writeln!(
                self.out,
                "{name}_sum{{node=\"{node}\",{l}}} {sum}\n{name}_count{{node=\"{node}\",{l}}} {count}"
            );
        }
        let name = "egret_gateway_decide_to_write_seconds";
        let _ = writeln!(
            self.out,
            "# HELP {name} From a gateway liveness decision to the end of its egret_gw_live write (the whole failover on this node).\n# TYPE {name} histogram"
        );
        let h = &p.decide_to_write;
        for (bound, n) in RTT_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(self.out, "{name}_bucket{{node=\"{node}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            self.out,
            "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {}\n{name}_sum{{node=\"{node}\"}} {}\n{name}_count{{node=\"{node}\"}} {}",
            h.count, h.sum, h.count
        );
        self.family(
            "egret_gateway_probe_map_errors_total",
            "counter",
            "Failed opens, reads and writes of the liveness maps.",
            &[
                (format!("map=\"{}\"", egret_bpf::templates::map::PROBE_RX), p.errors.map_read as f64),
                (format!("map=\"{}\"", egret_bpf::templates::map::GW_LIVE), p.errors.map_write as f64),
            ],
        );
    }

    /// The floating IPs' figures: ownership, Lease calls, NAT replication.
    fn floating(&mut self, status: &crate::ha::ownership::StatusHandle) {
        let f = status.snapshot();
        let by_ip = |v: fn(&crate::ha::ownership::FloatingStatus) -> f64| -> Vec<(String, f64)> {
            f.floating.iter().map(|x| (format!("ip=\"{}\"", x.ip), v(x))).collect()
        };
        self.family(
            "egret_floating_ip_owned",
            "gauge",
            "1 while this node owns the floating IP (holds its Lease and has the address), else 0.",
            &by_ip(|x| f64::from(u8::from(x.is_owner && x.address_added))),
        );
        self.family(
            "egret_floating_ip_owner_changes_total",
            "counter",
            "Changes of the floating IP's owner as this node saw them (Lease transitions).",
            &by_ip(|x| x.owner_changes as f64),
        );
        self.family(
            "egret_floating_lease_calls_total",
            "counter",
            "Lease calls (acquire, renew, release) by outcome.",
            &[
                ("result=\"won\"".into(), f.lease_won as f64),
                ("result=\"lost\"".into(), f.lease_lost as f64),
                ("result=\"unreachable\"".into(), f.lease_unreachable as f64),
            ],
        );
        self.family(
            "egret_floating_errors_total",
            "counter",
            "Failures adding or removing the address, announcing it, or writing egret_float_owner.",
            &[
                ("what=\"address\"".into(), f.address_errors as f64),
                ("what=\"announce\"".into(), f.announce_errors as f64),
                ("what=\"map\"".into(), f.map_errors as f64),
                ("what=\"guard\"".into(), f.guard_errors as f64),
            ],
        );
        self.replication(&f.replication);
    }

    /// The NAT replication's figures: per standby, connection, entries
    /// sent and the lag (scan → acknowledged); per owner, entries installed.
    fn replication(&mut self, r: &crate::ha::replicate::ReplicationStatus) {
        let standby = |f: fn(&crate::ha::replicate::StandbyStatus) -> f64| -> Vec<(String, f64)> {
            r.standbys.iter().map(|(ip, s)| (format!("standby=\"{ip}\""), f(s))).collect()
        };
        self.family(
            "egret_replication_connected",
            "gauge",
            "1 while this owner's NAT replication stream to the standby is connected.",
            &standby(|s| f64::from(u8::from(s.connected))),
        );
        self.family(
            "egret_replication_entries_sent_total",
            "counter",
            "NAT entries sent to the standby (upserts and deletes).",
            &standby(|s| (s.upserts_sent + s.deletes_sent) as f64),
        );
        let name = "egret_replication_lag_seconds";
        let node = &self.node;
        let _ = writeln!(
            self.out,
            "# HELP {name} From a scan of the NAT maps to the standby's acknowledgement of what it found.\n# TYPE {name} histogram"
        );
        for (ip, s) in &r.standbys {
            let l = format!("standby=\"{ip}\"");
            for (bound, n) in crate::ha::replicate::LAG_BUCKETS.iter().zip(&s.lag.buckets) {
                let _ = writeln!(self.out, "{name}_bucket{{node=\"{node}\",{l},le=\"{bound}\"}} {n}");
            }
            let c = s.lag.samples;
            let _ = writeln!(
                self.out,
                "{name}_bucket{{node=\"{node}\",{l},le=\"+Inf\"}} {c}\n{name}_sum{{node=\"{node}\",{l}}} {}\n{name}_count{{node=\"{node}\",{l}}} {c}",
                s.lag.sum_seconds
            );
        }
        let owners: Vec<(String, f64)> =
            r.owners.iter().map(|(ip, o)| (format!("owner=\"{ip}\""), o.installed as f64)).collect();
        self.family(
            "egret_replication_entries_installed_total",
            "counter",
            "NAT entries installed from the owner's stream (this node a standby).",
            &owners,
        );
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, &[(String::new(), value)]);
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The response to a request line (`GET /path HTTP/1.1`): status and body.
#[must_use]
pub fn respond(telemetry: &Telemetry, request_line: &str) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "GET" {
        return (405, "only GET\n".into());
    }
    match path.split('?').next().unwrap_or_default() {
        "/metrics" => (200, telemetry.render()),
        "/healthz" if telemetry.healthy() => (200, "ok\n".into()),
        "/healthz" => (503, "the agent loop is stuck\n".into()),
        "/readyz" if telemetry.ready() => (200, "ok\n".into()),
        "/readyz" => (503, "not serving a generation, or the last sync failed\n".into()),
        _ => (404, "not found\n".into()),
    }
}

fn handle(telemetry: &Telemetry, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (code, body) = respond(telemetry, text.lines().next().unwrap_or_default());
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let content_type = if code == 200 && body.starts_with('#') { "text/plain; version=0.0.4" } else { "text/plain" };
    let _ = write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a thread.
/// Returns the bound address (port 0 picks one) and the thread.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            handle(&telemetry, stream);
        }
    });
    Ok((bound, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_figures_render_and_gate_health_and_readiness() {
        let t = Telemetry::new("worker-\"1\"", Path::new("/nonexistent/egret"));
        assert!(!t.healthy() && !t.ready());
        assert_eq!(respond(&t, "GET /readyz HTTP/1.1").0, 503);
        t.alive();
        t.compiled(Duration::from_millis(20), true);
        t.compiled(Duration::from_millis(5), false);
        assert!(t.healthy());
        let counts = NodeCounts {
            endpoints: 3,
            classes: 2,
            class_entries: 7,
            internal_entries: 4,
            slots: 1,
            gateway_entries: 9,
        };
        t.applied(4, Some(Duration::from_millis(2)), counts, Vec::new());
        t.event_to_dataplane(Duration::from_millis(600));
        assert!(t.ready());
        let (code, body) = respond(&t, "GET /metrics HTTP/1.1");
        assert_eq!(code, 200);
        for line in [
            "egret_compiles_total{node=\"worker-\\\"1\\\"\",result=\"ok\"} 1",
            "egret_compiles_total{node=\"worker-\\\"1\\\"\",result=\"error\"} 1",
            "egret_generation{node=\"worker-\\\"1\\\"\"} 4",
            "egret_swaps_total{node=\"worker-\\\"1\\\"\"} 1",
            "egret_plan_entries{node=\"worker-\\\"1\\\"\",kind=\"gateway_entries\"} 9",
            "egret_event_to_dataplane_seconds_last{node=\"worker-\\\"1\\\"\"} 0.6",
            "egret_compile_seconds_count{node=\"worker-\\\"1\\\"\"} 1",
        ] {
            assert!(body.lines().any(|l| l == line), "missing `{line}` in\n{body}");
        }
        assert_eq!(respond(&t, "GET /healthz HTTP/1.1").0, 200);
        assert_eq!(respond(&t, "GET /nope HTTP/1.1").0, 404);
        assert_eq!(respond(&t, "POST /metrics HTTP/1.1").0, 405);
        assert_eq!(respond(&t, "").0, 405);
        t.failed();
        assert_eq!(respond(&t, "GET /readyz HTTP/1.1").0, 503);
    }

    #[test]
    fn the_gateway_prober_renders_per_gateway_series() {
        use crate::ha::liveness::State;
        use crate::ha::probe::{GatewayStatus, ProberStatus, RttHistogram};
        let t = Telemetry::new("n", Path::new("/nonexistent/egret"));
        let handle = StatusHandle::default();
        t.gateways(handle.clone());
        let rtt = RttHistogram { buckets: [0, 1, 2, 2, 2, 2, 2, 2, 2, 2], count: 2, sum: 0.0005 };
        let g = GatewayStatus {
            state: State::Down,
            probed: State::Down,
            external_down: false,
            last_rtt: None,
            misses: 3,
            went_down: 2,
            went_up: 1,
            since_ns: 0,
            sent: 40,
            send_errors: 4,
            answered: 30,
            missed: 10,
            rtt,
        };
        let mut status = ProberStatus::default();
        status.gateways.insert(std::net::Ipv4Addr::new(192, 0, 2, 13).into(), g.clone());
        status.gateways.insert(std::net::Ipv4Addr::new(192, 0, 2, 14).into(), GatewayStatus { state: State::Up, ..g });
        status.errors.map_write = 7;
        handle.publish(&status);
        let body = t.render();
        for line in [
            "# TYPE egret_gateway_up gauge",
            "egret_gateway_up{node=\"n\",gateway=\"192.0.2.13\"} 0",
            "egret_gateway_up{node=\"n\",gateway=\"192.0.2.14\"} 1",
            "egret_gateway_transitions_total{node=\"n\",gateway=\"192.0.2.13\",to=\"down\"} 2",
            "egret_gateway_transitions_total{node=\"n\",gateway=\"192.0.2.13\",to=\"up\"} 1",
            "egret_gateway_probes_total{node=\"n\",gateway=\"192.0.2.14\",result=\"missed\"} 10",
            "egret_gateway_probe_send_errors_total{node=\"n\",gateway=\"192.0.2.13\"} 4",
            "# TYPE egret_gateway_probe_rtt_seconds histogram",
            "egret_gateway_probe_rtt_seconds_bucket{node=\"n\",gateway=\"192.0.2.13\",le=\"0.00025\"} 1",
            "egret_gateway_probe_rtt_seconds_bucket{node=\"n\",gateway=\"192.0.2.13\",le=\"+Inf\"} 2",
            "egret_gateway_probe_rtt_seconds_count{node=\"n\",gateway=\"192.0.2.14\"} 2",
            "egret_gateway_probe_map_errors_total{node=\"n\",map=\"egret_gw_live\"} 7",
            "egret_gateway_probe_map_errors_total{node=\"n\",map=\"egret_probe_rx\"} 0",
        ] {
            assert!(body.lines().any(|l| l == line), "missing `{line}` in\n{body}");
        }
    }

    #[test]
    fn the_server_answers_over_http() {
        let t = Telemetry::new("n", Path::new("/nonexistent/egret"));
        t.alive();
        let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), t).expect("bind");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"\xff\xfe garbage\r\n\r\n").expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    }
}

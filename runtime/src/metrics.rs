//! The agent's telemetry: Prometheus metrics, `/healthz` and `/readyz`.
//!
//! Contract:
//! - [`Telemetry`] is shared (`Arc`) between the agent loop, which records
//!   every compile, apply, swap and loop pass, and the HTTP server
//!   ([`serve`], module `server`).
//! - Metrics go through `prometheus-client`: what the agent records is held
//!   in its counters and histograms (durations are histograms:
//!   `egret_compile_seconds`, `egret_swap_seconds`,
//!   `egret_event_to_dataplane_seconds`); what is read at scrape time is a
//!   collector: the generation, the plan's sizes, unattached pods and
//!   interfaces, the kube watch, the gateway prober, the floating IPs, and
//!   the dataplane's counters read from the running generation's pinned
//!   maps (the classifier's verdict reasons, per-policy packets and bytes
//!   summed over the classifier rules the manifest attributes to each
//!   policy, the gateway's datapath counters `egret_bpf::templates::Stat`,
//!   NAT table use). `egret_build_info{version}` is always 1.
//! - No sample carries a `node` (or instance, job, pod) label: Prometheus
//!   adds the target's own labels when it scrapes each agent. Label sets are
//!   bounded: reasons and gateway counters are fixed lists; policies,
//!   gateways and floating IPs are those of this node's plan.
//! - `/metrics` is the Prometheus text format 0.0.4, or OpenMetrics when the
//!   request's `Accept` asks for `application/openmetrics-text`.
//! - `/healthz` is 200 while the agent loop has passed within
//!   [`HEALTHY_WITHIN`]; `/readyz` is 200 once a generation is serving, the
//!   last sync succeeded and every pod and egress interface it wanted is
//!   attached (the body says which of these fails). Anything else is 404;
//!   a method other than GET or HEAD is 405.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_bpf::artifact::CounterMap;
use egret_bpf::templates::{self, Stat};
use egret_compiler::plan::NodeCounts;
use egret_loader::inspect;
use egret_loader::pins::PinLayout;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::ha::probe::{RTT_BUCKETS, StatusHandle};

pub mod server;
pub use server::serve;

/// How recent the last loop pass must be for `/healthz`.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of `egret_event_to_dataplane_seconds`.
pub const LATENCY_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of `egret_compile_seconds`.
pub const COMPILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Upper bounds (seconds) of `egret_swap_seconds`.
pub const SWAP_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// What `--kube` adds to the metrics: the watch's counters and the Events
/// published.
#[derive(Debug, Clone)]
pub struct KubeStats {
    /// The cluster watch.
    pub watch: Arc<egret_kube::watch::WatchStatus>,
    /// Events about policies.
    pub events: Arc<egret_kube::events::EventStats>,
}

/// Pods and egress interfaces a sync wanted attached but could not attach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unattached {
    /// Pods (their IP has no route to an interface here, or the attach failed).
    pub pods: usize,
    /// Egress interfaces (no such interface here, or the attach failed).
    pub egress: usize,
}

/// What is read at scrape time (the collector's state).
#[derive(Debug, Default, Clone)]
struct State {
    kube: Option<KubeStats>,
    gateways: Option<StatusHandle>,
    floating: Option<crate::ha::ownership::StatusHandle>,
    resolutions: egret_kube::view::ViewPlannerStats,
    artifacts_reused: u64,
    generation: Option<u64>,
    counts: Option<NodeCounts>,
    counters: Vec<CounterMap>,
    unattached: Unattached,
    last_loop: Option<Instant>,
    last_sync_ok: bool,
}

type Label = (&'static str, &'static str);

/// The figures the agent records as they happen.
#[derive(Debug, Clone)]
struct Recorded {
    compiles: Family<[Label; 1], Counter>,
    compile_seconds: Histogram,
    swaps: Counter,
    swap_seconds: Histogram,
    apply_failures: Counter,
    attach_failures: Family<[Label; 1], Counter>,
    event_to_dataplane: Histogram,
    flows: FlowCounters,
}

/// The flow log's counters (`crate::flows`): records written by event,
/// records lost by reason. Events the datapath could not queue (a full
/// ring) are the gateway counter `flow-event-dropped`, also exported as
/// `egret_flow_events_dropped`.
#[derive(Debug, Clone, Default)]
pub struct FlowCounters {
    written: Family<[Label; 1], Counter>,
    lost: Family<[Label; 1], Counter>,
}

impl FlowCounters {
    /// A record of `kind` was written.
    pub fn written(&self, kind: crate::flows::FlowKind) {
        self.written.get_or_create(&[("event", kind.name())]).inc();
    }

    /// A record or event was lost (`write-error`, `undecodable`).
    pub fn lost(&self, reason: &'static str) {
        self.lost.get_or_create(&[("reason", reason)]).inc();
    }

    /// Records written so far, all events.
    #[must_use]
    pub fn written_total(&self) -> u64 {
        use crate::flows::FlowKind::{Closed, Created, Expired};
        [Created, Closed, Expired].iter().map(|k| self.written.get_or_create(&[("event", k.name())]).get()).sum()
    }
}

/// What the agent records; see the module doc.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    recorded: Recorded,
    state: Arc<Mutex<State>>,
}

impl Telemetry {
    /// Telemetry of the agent whose loader root is `root`.
    #[must_use]
    pub fn new(root: &Path) -> Arc<Telemetry> {
        let recorded = Recorded {
            compiles: Family::default(),
            compile_seconds: Histogram::new(COMPILE_BUCKETS),
            swaps: Counter::default(),
            swap_seconds: Histogram::new(SWAP_BUCKETS),
            apply_failures: Counter::default(),
            attach_failures: Family::default(),
            event_to_dataplane: Histogram::new(LATENCY_BUCKETS),
            flows: FlowCounters::default(),
        };
        // every label value from the start: a rate() over a series that
        // appears with its first increment misses that increment
        for v in ["ok", "error"] {
            drop(recorded.compiles.get_or_create(&[("result", v)]));
        }
        for v in ["pod", "egress"] {
            drop(recorded.attach_failures.get_or_create(&[("kind", v)]));
        }
        for k in [crate::flows::FlowKind::Created, crate::flows::FlowKind::Closed, crate::flows::FlowKind::Expired] {
            drop(recorded.flows.written.get_or_create(&[("event", k.name())]));
        }
        for v in ["write-error", "undecodable"] {
            drop(recorded.flows.lost.get_or_create(&[("reason", v)]));
        }
        let mut registry = Registry::default();
        registry.register(
            "egret_build",
            "The agent's version (always 1)",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let r = &recorded;
        registry.register("egret_compiles", "Node compilations by result", r.compiles.clone());
        registry.register(
            "egret_compile_seconds",
            "Compile time of the node (plan, code generation, checks), successful compiles",
            r.compile_seconds.clone(),
        );
        registry.register("egret_swaps", "Generation swaps", r.swaps.clone());
        registry.register("egret_swap_seconds", "Artifact in memory to every link swapped", r.swap_seconds.clone());
        registry.register(
            "egret_apply_failures",
            "Applies of a compiled node that failed (load, swap, attach or probe errors); the previous generation keeps serving",
            r.apply_failures.clone(),
        );
        registry.register(
            "egret_attach_failures",
            "Pods and egress interfaces a sync wanted attached but could not attach, by kind (counted at every sync)",
            r.attach_failures.clone(),
        );
        registry.register(
            "egret_event_to_dataplane_seconds",
            "From an input change (an API watch event, a node fact, a snapshot file) to the dataplane serving it",
            r.event_to_dataplane.clone(),
        );
        registry.register(
            "egret_flow_records_written",
            "Flow log records written, by event (created, closed, expired)",
            r.flows.written.clone(),
        );
        registry.register(
            "egret_flow_records_lost",
            "Flow events or records the flow log lost, by reason (write-error, undecodable); events the datapath could not queue are egret_flow_events_dropped",
            r.flows.lost.clone(),
        );
        let state = Arc::new(Mutex::new(State::default()));
        registry.register_collector(Box::new(Scrape { state: state.clone(), root: root.to_path_buf() }));
        Arc::new(Telemetry { registry, recorded, state })
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// A compile finished (successfully or not) after `took`.
    pub fn compiled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.recorded.compiles.get_or_create(&[("result", result)]).inc();
        if ok {
            self.recorded.compile_seconds.observe(took.as_secs_f64());
        } else {
            self.with(|s| s.last_sync_ok = false);
        }
    }

    /// A sync applied the node: the generation serving, whether it swapped
    /// (and how long building and swapping took), the plan's counts, the
    /// artifact's counter labels, what could not be attached.
    pub fn applied(
        &self,
        generation: u64,
        swapped: Option<Duration>,
        counts: NodeCounts,
        counters: Vec<CounterMap>,
        unattached: Unattached,
    ) {
        if let Some(d) = swapped {
            self.recorded.swaps.inc();
            self.recorded.swap_seconds.observe(d.as_secs_f64());
        }
        for (kind, n) in [("pod", unattached.pods), ("egress", unattached.egress)] {
            self.recorded.attach_failures.get_or_create(&[("kind", kind)]).inc_by(n as u64);
        }
        self.with(|s| {
            s.generation = Some(generation);
            s.counts = Some(counts);
            s.counters = counters;
            s.unattached = unattached;
            s.last_sync_ok = true;
        });
    }

    /// An apply failed after compiling (loader or attach errors).
    pub fn failed(&self) {
        self.recorded.apply_failures.inc();
        self.with(|s| s.last_sync_ok = false);
    }

    /// The flow log's counters (shared with its reader thread).
    #[must_use]
    pub fn flow_counters(&self) -> FlowCounters {
        self.recorded.flows.clone()
    }

    /// The time from a change of the input to the dataplane serving it.
    pub fn event_to_dataplane(&self, d: Duration) {
        self.recorded.event_to_dataplane.observe(d.as_secs_f64());
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

    /// `/readyz`: `Err` says why not.
    ///
    /// # Errors
    /// No generation serves, the last sync failed, or a pod or egress
    /// interface is not attached.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self.state.lock().map_err(|_| "the telemetry's lock is poisoned".to_owned())?;
        if s.generation.is_none() {
            return Err("no generation serving yet".into());
        }
        if !s.last_sync_ok {
            return Err("the last sync failed (the previous generation keeps serving)".into());
        }
        let u = s.unattached;
        if u != Unattached::default() {
            return Err(format!("not attached: {} pod(s), {} egress interface(s)", u.pods, u.egress));
        }
        Ok(())
    }

    /// The `/metrics` text: Prometheus text format 0.0.4, or OpenMetrics
    /// (with its `# EOF`).
    #[must_use]
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // writing to a String fails only if an encoder refuses a value
        // (a histogram without buckets): what was written is still served
        if encoded.is_err() {
            out.push_str("# egret: encoding stopped early\n");
        }
        out
    }
}

/// The scrape-time part of the metrics (see the module doc).
#[derive(Debug)]
struct Scrape {
    state: Arc<Mutex<State>>,
    root: PathBuf,
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        // a copy: the lock is not held while the pinned maps are read
        let Ok(snap) = self.state.lock().map(|s| s.clone()) else { return Ok(()) };
        let mut out = Out(encoder);
        if let Some(g) = snap.generation {
            out.gauge("egret_generation", "The generation serving traffic.", [(vec![], g)])?;
        }
        if let Some(c) = &snap.counts {
            out.gauge(
                "egret_plan_entries",
                "The node plan's sizes.",
                [
                    ("endpoints", c.endpoints),
                    ("classes", c.classes),
                    ("class_entries", c.class_entries),
                    ("internal_entries", c.internal_entries),
                    ("slots", c.slots),
                    ("gateway_entries", c.gateway_entries),
                ]
                .map(|(k, v)| (vec![("kind", k.to_owned())], v as u64)),
            )?;
        }
        out.gauge(
            "egret_unattached",
            "Pods and egress interfaces the last sync wanted attached but could not attach (non-zero: not ready).",
            [("pod", snap.unattached.pods), ("egress", snap.unattached.egress)]
                .map(|(k, v)| (vec![("kind", k.to_owned())], v as u64)),
        )?;
        if let Some(k) = &snap.kube {
            out.kube(k, &snap.resolutions, snap.artifacts_reused)?;
        }
        if let Some(h) = &snap.gateways {
            out.gateways(h)?;
        }
        if let Some(h) = &snap.floating {
            out.floating(h)?;
        }
        out.dataplane(&self.root, &snap.counters)
    }
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// A histogram read from elsewhere: its bounds and cumulative counts.
struct CumulativeHistogram<'a> {
    bounds: &'a [f64],
    cumulative: &'a [u64],
    count: u64,
    sum: f64,
}

impl CumulativeHistogram<'_> {
    /// `(bound, observations in this bucket alone)`, `+Inf` last, as the
    /// encoder wants them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut prev = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(self.cumulative)
            .map(|(b, c)| {
                let n = c.saturating_sub(prev);
                prev = prev.max(*c);
                (*b, n)
            })
            .collect();
        out.push((f64::INFINITY, self.count.saturating_sub(prev)));
        out
    }
}

/// The collector's encoder, a family at a time.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    /// One family: its descriptor, then a sample per row (an unlabelled
    /// family has the one sample).
    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        rows: impl IntoIterator<Item = (Labels, M)>,
    ) -> fmt::Result {
        let mut m = self.0.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in rows {
            if labels.is_empty() {
                return v.encode(m);
            }
            v.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counter(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) -> fmt::Result {
        self.family(name, help, MetricType::Counter, rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
    }

    fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) -> fmt::Result {
        self.family(name, help, MetricType::Gauge, rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
    }

    fn histogram<'h>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, CumulativeHistogram<'h>)>,
    ) -> fmt::Result {
        let mut m = self.0.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in rows {
            let buckets = h.buckets();
            if labels.is_empty() {
                m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            } else {
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            }
        }
        Ok(())
    }

    /// The `--kube` figures: the watch, the compiler's resolutions, Events.
    fn kube(&mut self, k: &KubeStats, r: &egret_kube::view::ViewPlannerStats, reused: u64) -> fmt::Result {
        let w = &k.watch;
        self.gauge("egret_kube_synced", "1 once every watched kind has listed.", [(vec![], u64::from(w.synced()))])?;
        for (name, help, v) in [
            ("egret_kube_watch_errors", "List and watch errors (retried).", w.errors()),
            ("egret_kube_relists", "Lists after a kind's first (410 Gone, failed resumes).", w.relists()),
            ("egret_kube_changes", "Watch updates that changed egret's input, and node fact changes.", w.changes()),
            ("egret_kube_reconciles", "Debounced recompilations.", w.reconciles()),
            ("egret_kube_pods_updated", "Pods removed from or added to a resolution by updates.", r.pods_updated),
            (
                "egret_kube_artifacts_reused",
                "Compiles whose plan was the last one's: its artifact reused, no code generation.",
                reused,
            ),
        ] {
            self.counter(name, help, [(vec![], v)])?;
        }
        self.counter(
            "egret_kube_resolutions",
            "Compiles by how the cluster was resolved: in full, or by updating the last resolution's pods.",
            [("full", r.resolutions), ("update", r.updates)].map(|(k, v)| (vec![("kind", k.to_owned())], v)),
        )?;
        let e = &k.events;
        self.counter(
            "egret_events",
            "Kubernetes Events about policies, by result.",
            [("created", e.created()), ("failed", e.failed()), ("dropped", e.dropped())]
                .map(|(k, v)| (vec![("result", k.to_owned())], v)),
        )
    }

    /// The gateway prober's figures.
    fn gateways(&mut self, status: &StatusHandle) -> fmt::Result {
        let p = status.snapshot();
        let gw = |ip: &std::net::IpAddr| vec![("gateway", ip.to_string())];
        let with =
            |ip: &std::net::IpAddr, k: &'static str, v: &str| vec![("gateway", ip.to_string()), (k, v.to_owned())];
        self.gauge(
            "egret_gateway_up",
            "1 while this node sends through the gateway (up, or not judged yet), 0 while it is down (probes unanswered, or the node not Ready).",
            p.gateways.iter().map(|(ip, g)| (gw(ip), u64::from(!g.state.is_down()))),
        )?;
        self.counter(
            "egret_gateway_transitions",
            "Gateway liveness changes, by the state entered.",
            p.gateways
                .iter()
                .flat_map(|(ip, g)| [(with(ip, "to", "down"), g.went_down), (with(ip, "to", "up"), g.went_up)]),
        )?;
        self.counter(
            "egret_gateway_probes",
            "Probes judged, by whether the gateway answered before the next one.",
            p.gateways.iter().flat_map(|(ip, g)| {
                [(with(ip, "result", "answered"), g.answered), (with(ip, "result", "missed"), g.missed)]
            }),
        )?;
        self.counter(
            "egret_gateway_probe_send_errors",
            "Probes that could not be sent (counted as missed).",
            p.gateways.iter().map(|(ip, g)| (gw(ip), g.send_errors)),
        )?;
        self.histogram(
            "egret_gateway_probe_rtt_seconds",
            "Probe round trips over the underlay, answered by the gateway's datapath.",
            p.gateways.iter().map(|(ip, g)| {
                let h = CumulativeHistogram {
                    bounds: &RTT_BUCKETS,
                    cumulative: &g.rtt.buckets,
                    count: g.rtt.count,
                    sum: g.rtt.sum,
                };
                (gw(ip), h)
            }),
        )?;
        let h = &p.decide_to_write;
        self.histogram(
            "egret_gateway_decide_to_write_seconds",
            "From a gateway liveness decision to the end of its egret_gw_live write (the whole failover on this node).",
            [(
                vec![],
                CumulativeHistogram { bounds: &RTT_BUCKETS, cumulative: &h.buckets, count: h.count, sum: h.sum },
            )],
        )?;
        self.counter(
            "egret_gateway_probe_map_errors",
            "Failed opens, reads and writes of the liveness maps.",
            [(templates::map::PROBE_RX, p.errors.map_read), (templates::map::GW_LIVE, p.errors.map_write)]
                .map(|(m, v)| (vec![("map", m.to_owned())], v)),
        )
    }

    /// The floating IPs' figures: ownership, Lease calls, NAT replication.
    fn floating(&mut self, status: &crate::ha::ownership::StatusHandle) -> fmt::Result {
        let f = status.snapshot();
        self.gauge(
            "egret_floating_ip_owned",
            "1 while this node owns the floating IP (holds its Lease and has the address), else 0.",
            f.floating.iter().map(|x| (vec![("ip", x.ip.to_string())], u64::from(x.is_owner && x.address_added))),
        )?;
        self.counter(
            "egret_floating_ip_owner_changes",
            "Changes of the floating IP's owner as this node saw them (Lease transitions).",
            f.floating.iter().map(|x| (vec![("ip", x.ip.to_string())], x.owner_changes)),
        )?;
        self.counter(
            "egret_floating_lease_calls",
            "Lease calls (acquire, renew, release) by outcome.",
            [("won", f.lease_won), ("lost", f.lease_lost), ("unreachable", f.lease_unreachable)]
                .map(|(k, v)| (vec![("result", k.to_owned())], v)),
        )?;
        self.counter(
            "egret_floating_errors",
            "Failures adding or removing the address, announcing it, or writing egret_float_owner.",
            [
                ("address", f.address_errors),
                ("announce", f.announce_errors),
                ("map", f.map_errors),
                ("guard", f.guard_errors),
            ]
            .map(|(k, v)| (vec![("what", k.to_owned())], v)),
        )?;
        let r = &f.replication;
        let standby = |ip: &std::net::IpAddr| vec![("standby", ip.to_string())];
        self.gauge(
            "egret_replication_connected",
            "1 while this owner's NAT replication stream to the standby is connected.",
            r.standbys.iter().map(|(ip, s)| (standby(ip), u64::from(s.connected))),
        )?;
        self.counter(
            "egret_replication_entries_sent",
            "NAT entries sent to the standby (upserts and deletes).",
            r.standbys.iter().map(|(ip, s)| (standby(ip), s.upserts_sent + s.deletes_sent)),
        )?;
        self.histogram(
            "egret_replication_lag_seconds",
            "From a scan of the NAT maps to the standby's acknowledgement of what it found.",
            r.standbys.iter().map(|(ip, s)| {
                let h = CumulativeHistogram {
                    bounds: &crate::ha::replicate::LAG_BUCKETS,
                    cumulative: &s.lag.buckets,
                    count: s.lag.samples,
                    sum: s.lag.sum_seconds,
                };
                (standby(ip), h)
            }),
        )?;
        self.counter(
            "egret_replication_entries_installed",
            "NAT entries installed from the owner's stream (this node a standby).",
            r.owners.iter().map(|(ip, o)| (vec![("owner", ip.to_string())], o.installed)),
        )
    }

    /// The running generation's counters, read from its pinned maps.
    fn dataplane(&mut self, root: &Path, counters: &[CounterMap]) -> fmt::Result {
        let Ok(status) = inspect::status(root) else { return Ok(()) };
        let Some(g) = status.running else { return Ok(()) };
        let layout = PinLayout::new(root);
        let read = |map: &str| -> BTreeMap<u32, (u64, u64)> {
            inspect::dump_map(&layout.map(g, map), map).map(|d| d.counters()).unwrap_or_default()
        };
        let pick = |v: (u64, u64), bytes: bool| if bytes { v.1 } else { v.0 };
        for c in counters {
            let values = read(&c.map);
            if c.map == egret_compiler::codegen::tables::REASONS {
                for (what, bytes) in [("packets", false), ("bytes", true)] {
                    self.counter(
                        &format!("egret_classifier_{what}"),
                        "Source classifier verdicts by reason.",
                        c.labels.iter().map(|l| {
                            let v = values.get(&l.index).copied().unwrap_or_default();
                            (vec![("reason", l.name.clone())], pick(v, bytes))
                        }),
                    )?;
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
                for (what, bytes) in [("packets", false), ("bytes", true)] {
                    self.counter(
                        &format!("egret_policy_{what}"),
                        "Packets the source classifier sent through a gateway, by the policy deciding them.",
                        by_policy.iter().map(|(p, v)| (vec![("policy", (*p).to_owned())], pick(*v, bytes))),
                    )?;
                }
            }
        }
        let stats = read(templates::map::GW_STATS);
        if !stats.is_empty() {
            for (what, bytes) in [("packets", false), ("bytes", true)] {
                self.counter(
                    &format!("egret_gateway_{what}"),
                    "Gateway datapath counters.",
                    Stat::ALL.iter().map(|s| {
                        let v = stats.get(&s.index()).copied().unwrap_or_default();
                        let kind = if s.is_drop() { "drop" } else { "pass" };
                        (vec![("counter", s.name().to_owned()), ("kind", kind.to_owned())], pick(v, bytes))
                    }),
                )?;
            }
            let dropped = stats.get(&Stat::FlowEventDropped.index()).copied().unwrap_or_default();
            self.counter(
                "egret_flow_events_dropped",
                "Flow events the gateway datapath could not queue (the ring buffer was full: the flow log's reader is behind); the packets went on.",
                [(vec![], pick(dropped, false))],
            )?;
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
            self.gauge(
                "egret_nat_entries",
                "NAT connections, IPv4 and IPv6 (reverse entries, expired ones included until reused).",
                [(vec![], entries as u64)],
            )?;
            self.gauge("egret_nat_capacity", "NAT table capacity, IPv4 and IPv6.", [(vec![], capacity)])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample `name{labels} value` is in the text `body`.
    fn has(body: &str, line: &str) -> bool {
        body.lines().any(|l| l == line)
    }

    #[test]
    fn recorded_figures_render_and_gate_health_and_readiness() {
        let t = Telemetry::new(Path::new("/nonexistent/egret"));
        assert!(!t.healthy());
        assert!(t.readiness().is_err_and(|e| e.contains("no generation")));
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
        t.applied(4, Some(Duration::from_millis(2)), counts, Vec::new(), Unattached::default());
        t.event_to_dataplane(Duration::from_millis(600));
        assert_eq!(t.readiness(), Ok(()));
        let body = t.render(false);
        for line in [
            "egret_build_info{version=\"0.1.0\"} 1",
            "egret_compiles_total{result=\"ok\"} 1",
            "egret_compiles_total{result=\"error\"} 1",
            "egret_generation 4",
            "egret_swaps_total 1",
            "egret_plan_entries{kind=\"gateway_entries\"} 9",
            "# TYPE egret_event_to_dataplane_seconds histogram",
            "egret_event_to_dataplane_seconds_bucket{le=\"0.5\"} 0",
            "egret_event_to_dataplane_seconds_bucket{le=\"1\"} 1",
            "egret_event_to_dataplane_seconds_count 1",
            "egret_compile_seconds_count 1",
            "egret_attach_failures_total{kind=\"pod\"} 0",
            "egret_unattached{kind=\"egress\"} 0",
        ] {
            assert!(has(&body, line), "missing `{line}` in\n{body}");
        }
        assert!(!body.contains("node="), "no node label: Prometheus adds the target's labels\n{body}");
        assert!(t.render(true).ends_with("# EOF\n"), "OpenMetrics on request");
        // a pod that cannot be attached: counted, and not ready
        t.applied(4, None, counts, Vec::new(), Unattached { pods: 2, egress: 0 });
        assert!(t.readiness().is_err_and(|e| e.contains("2 pod(s)")));
        let body = t.render(false);
        assert!(has(&body, "egret_attach_failures_total{kind=\"pod\"} 2"), "{body}");
        assert!(has(&body, "egret_unattached{kind=\"pod\"} 2"), "{body}");
        t.applied(4, None, counts, Vec::new(), Unattached::default());
        assert_eq!(t.readiness(), Ok(()));
        t.failed();
        assert!(t.readiness().is_err_and(|e| e.contains("last sync failed")));
        assert!(has(&t.render(false), "egret_apply_failures_total 1"));
    }

    #[test]
    fn the_gateway_prober_renders_per_gateway_series() {
        use crate::ha::liveness::State;
        use crate::ha::probe::{GatewayStatus, ProberStatus, RttHistogram};
        let t = Telemetry::new(Path::new("/nonexistent/egret"));
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
        let body = t.render(false);
        for line in [
            "# TYPE egret_gateway_up gauge",
            "egret_gateway_up{gateway=\"192.0.2.13\"} 0",
            "egret_gateway_up{gateway=\"192.0.2.14\"} 1",
            "egret_gateway_transitions_total{gateway=\"192.0.2.13\",to=\"down\"} 2",
            "egret_gateway_transitions_total{gateway=\"192.0.2.13\",to=\"up\"} 1",
            "egret_gateway_probes_total{gateway=\"192.0.2.14\",result=\"missed\"} 10",
            "egret_gateway_probe_send_errors_total{gateway=\"192.0.2.13\"} 4",
            "# TYPE egret_gateway_probe_rtt_seconds histogram",
            "egret_gateway_probe_rtt_seconds_bucket{gateway=\"192.0.2.13\",le=\"0.0001\"} 0",
            "egret_gateway_probe_rtt_seconds_bucket{gateway=\"192.0.2.13\",le=\"0.00025\"} 1",
            "egret_gateway_probe_rtt_seconds_bucket{gateway=\"192.0.2.13\",le=\"0.1\"} 2",
            "egret_gateway_probe_rtt_seconds_bucket{gateway=\"192.0.2.13\",le=\"+Inf\"} 2",
            "egret_gateway_probe_rtt_seconds_count{gateway=\"192.0.2.14\"} 2",
            "egret_gateway_probe_map_errors_total{map=\"egret_gw_live\"} 7",
            "egret_gateway_probe_map_errors_total{map=\"egret_probe_rx\"} 0",
        ] {
            assert!(has(&body, line), "missing `{line}` in\n{body}");
        }
    }

    #[test]
    fn cumulative_histograms_become_per_bucket_counts() {
        let h = CumulativeHistogram { bounds: &[1.0, 2.0, 3.0], cumulative: &[1, 1, 4], count: 6, sum: 9.0 };
        assert_eq!(h.buckets(), vec![(1.0, 1), (2.0, 0), (3.0, 3), (f64::INFINITY, 2)]);
        // a torn read (count behind the buckets) never underflows
        let torn = CumulativeHistogram { bounds: &[1.0, 2.0], cumulative: &[3, 2], count: 1, sum: 0.0 };
        assert_eq!(torn.buckets(), vec![(1.0, 3), (2.0, 0), (f64::INFINITY, 0)]);
    }
}

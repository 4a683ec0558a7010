//! Kubernetes manifests → AST.
//!
//! Reads every document of a YAML file (and `kind: List` / `*List` items) and
//! lowers the kinds egret understands: `CiliumEgressGatewayPolicy`, `v1` Node,
//! Namespace and Pod, `egret.dev/v1alpha1` NodeNetwork, and workloads
//! (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob). Other kinds
//! are counted in [`Bundle::skipped`].
//!
//! Policies are read strictly: unknown fields (with a did-you-mean), wrong
//! types, missing required fields and unparsable values are diagnostics with a
//! span on the exact key or value. Cluster objects come from `kubectl` and are
//! read leniently: only the fields the compiler needs, unknown fields ignored.

use crate::ast::*;
use crate::codes;
use crate::diag::Diagnostic;
use crate::net::Cidr;
use crate::source::{FileId, Span, Spanned};
use crate::yaml::{self, Kind, Node};
use std::net::IpAddr;

pub const POLICY_KIND: &str = "CiliumEgressGatewayPolicy";
/// The one version Cilium's CRD serves the policy kind as.
pub const CILIUM_API_VERSION: &str = "cilium.io/v2";
pub const NODE_NETWORK_KIND: &str = "NodeNetwork";

/// Parses a YAML file into a bundle of policies and cluster objects.
pub fn parse_yaml(file: FileId, text: &str) -> (Bundle, Vec<Diagnostic>) {
    let mut bundle = Bundle::default();
    let mut diags = Vec::new();
    // one document's tree at a time: memory follows the largest document, not the file
    let syntax = yaml::parse_each(file, text, |doc| {
        if matches!(&doc.root.kind, Kind::Scalar { value, plain: true } if value.is_empty()) {
            // an empty document (`---` after `---`, as `helm template` prints,
            // or a trailing `---`): kubectl skips it
            return;
        }
        Cx { diags: &mut diags }.object(&doc.root, &mut bundle, 0);
    });
    diags.extend(syntax);
    (bundle, diags)
}

struct Cx<'d> {
    diags: &'d mut Vec<Diagnostic>,
}

/// The entries of a mapping, with the keys that were read marked, so the rest
/// can be reported as unknown.
struct Fields<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        let v = &self.entries[i].1;
        if v.is_null() { None } else { Some(v) }
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k.span)
    }

    /// Reports every key not read and not in `also_known`.
    fn finish(self, cx: &mut Cx<'_>, what: &str, known: &[&str], hint: impl Fn(&str) -> Option<String>) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let name = k.as_str().unwrap_or("");
            if known.contains(&name) {
                continue;
            }
            let mut d = Diagnostic::new(&codes::UNKNOWN_FIELD, format!("unknown field `{name}` in {what}"))
                .primary(k.span, "unknown field");
            let suggestion = did_you_mean(name, known);
            d = match (hint(name), suggestion) {
                (Some(h), _) => d.help(h),
                (None, Some(s)) => d.help(format!("did you mean `{s}`?")),
                (None, None) => d.help(format!("{what} has the fields: {}", known.join(", "))),
            };
            cx.diags.push(d);
        }
        let _ = self.node;
    }
}

/// The closest known name within a small edit distance.
pub fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1) || k.to_ascii_lowercase().starts_with(&lower) && lower.len() >= 4)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance with adjacent transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

const OBJECT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "labels",
    "annotations",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "generateName",
    "selfLink",
];
const SPEC_FIELDS: &[&str] = &["selectors", "destinationCIDRs", "excludedCIDRs", "egressGateway", "egressGateways"];
const ITEM_FIELDS: &[&str] = &["podSelector", "namespaceSelector", "nodeSelector"];
const SELECTOR_FIELDS: &[&str] = &["matchLabels", "matchExpressions"];
const REQUIREMENT_FIELDS: &[&str] = &["key", "operator", "values"];
const GATEWAY_FIELDS: &[&str] = &["nodeSelector", "egressIP", "interface"];

impl Cx<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str, example: &str) {
        self.push(
            Diagnostic::new(&codes::WRONG_TYPE, format!("`{what}` must be {expected}, found {}", node.describe()))
                .primary(node.span, format!("expected {expected}"))
                .help(format!("write it as {example}")),
        );
    }

    fn fields<'n>(&mut self, node: &'n Node, what: &str) -> Option<Fields<'n>> {
        match &node.kind {
            Kind::Map(entries) => Some(Fields { node, entries, used: vec![false; entries.len()] }),
            _ if node.is_null() => None,
            _ => {
                self.wrong_type(node, what, "a mapping", "`key: value` pairs");
                None
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node, what: &str, example: &str) -> &'n [Node] {
        match &node.kind {
            Kind::Seq(items) => items,
            _ => {
                self.wrong_type(node, what, "a list", example);
                &[]
            }
        }
    }

    /// A string field. A plain scalar YAML reads as a number or boolean is
    /// E0103, as the API server refuses it (`cannot unmarshal number into
    /// … of type string`); its text is still returned, so nothing else is
    /// reported about the field.
    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match &node.kind {
            Kind::Scalar { value, .. } if node.is_non_string_scalar() && !node.is_null() => {
                self.push(
                    Diagnostic::new(&codes::WRONG_TYPE, format!("`{what}` must be a string, found `{value}`"))
                        .primary(node.span, "YAML reads this as a number or boolean")
                        .help(format!("quote it: \"{value}\"")),
                );
                Some(Spanned::new(value.clone(), node.span))
            }
            Kind::Scalar { value, .. } => Some(Spanned::new(value.clone(), node.span)),
            _ => {
                self.wrong_type(node, what, "a string", "a plain value");
                None
            }
        }
    }

    fn object(&mut self, node: &Node, bundle: &mut Bundle, depth: usize) {
        // `apiVersion` and `kind` are strings, and a top-level `apiVersion` is
        // never empty: the API server refuses either
        for field in ["apiVersion", "kind"] {
            if let Some(v) = node.get(field)
                && (v.is_non_string_scalar() || !matches!(v.kind, Kind::Scalar { .. }))
            {
                let expected = if field == "kind" { "`CiliumEgressGatewayPolicy`" } else { "`cilium.io/v2`" };
                self.wrong_type(v, field, "a string", expected);
                return;
            }
        }
        if depth == 0 && node.get("apiVersion").and_then(Node::as_str) == Some("") {
            self.push(
                Diagnostic::new(&codes::NOT_AN_OBJECT, "this document's `apiVersion` is empty")
                    .primary(node.get("apiVersion").map_or(node.span, |v| v.span), "empty")
                    .help(format!("write e.g. `apiVersion: {CILIUM_API_VERSION}` (or `v1` for cluster objects)")),
            );
            return;
        }
        let (Some(api), Some(kind)) =
            (node.get("apiVersion").and_then(Node::as_str), node.get("kind").and_then(Node::as_str))
        else {
            // `kubectl get -o yaml` of a list may omit apiVersion on items; accept kind alone there.
            if depth > 0
                && let Some(kind) = node.get("kind").and_then(Node::as_str)
            {
                self.dispatch(node, "", kind, bundle, depth);
                return;
            }
            self.push(
                Diagnostic::new(&codes::NOT_AN_OBJECT, "this document is not a Kubernetes object")
                    .primary(
                        Span { end: node.span.start.max(node.span.end.min(node.span.start + 1)), ..node.span },
                        "expected `apiVersion` and `kind` here",
                    )
                    .help("every document needs `apiVersion` and `kind`"),
            );
            return;
        };
        self.dispatch(node, api, kind, bundle, depth);
    }

    fn dispatch(&mut self, node: &Node, api: &str, kind: &str, bundle: &mut Bundle, depth: usize) {
        bundle.objects += 1;
        match kind {
            _ if kind == "List" || (kind.ends_with("List") && node.get("items").is_some()) => {
                if depth > 8 {
                    return;
                }
                if let Some(items) = node.get("items") {
                    if items.is_null() {
                        return;
                    }
                    let items = self.seq(items, "items", "a list of objects");
                    for it in items {
                        self.object(it, bundle, depth + 1);
                    }
                }
            }
            POLICY_KIND if api == CILIUM_API_VERSION || api.is_empty() => {
                if let Some(p) = self.policy(node) {
                    bundle.policies.push(p);
                }
            }
            POLICY_KIND => {
                // Cilium's CRD serves `cilium.io/v2` only: the API server rejects any other
                // version (another group, or a bare version such as `v2alpha1`).
                let span = node.get("apiVersion").map_or(node.span, |v| v.span);
                self.push(
                    Diagnostic::new(
                        &codes::UNSERVED_API_VERSION,
                        format!(
                            "Cilium does not serve `{api}`: CiliumEgressGatewayPolicy is `{CILIUM_API_VERSION}` only"
                        ),
                    )
                    .primary(span, "the API server rejects this version")
                    .note("the policy is not read")
                    .help(format!("write `apiVersion: {CILIUM_API_VERSION}`")),
                );
            }
            "Node" if api == "v1" || api.is_empty() => {
                if let Some(n) = self.node_object(node) {
                    bundle.cluster.nodes.push(n);
                }
            }
            "Namespace" if api == "v1" || api.is_empty() => {
                if let Some((name, labels)) = self.meta(node, false) {
                    bundle.cluster.namespaces.push(Namespace { span: node.span, name, labels });
                }
            }
            "Pod" if api == "v1" || api.is_empty() => {
                if let Some(p) = self.pod(node) {
                    bundle.cluster.pods.push(p);
                }
            }
            NODE_NETWORK_KIND if api.starts_with("egret.dev/") => {
                if let Some(n) = self.node_network(node) {
                    bundle.cluster.node_networks.push(n);
                }
            }
            _ => {
                if let Some(wk) = WorkloadKind::parse(kind)
                    && let Some(w) = self.workload(node, wk)
                {
                    bundle.cluster.workloads.push(w);
                    return;
                }
                let key = if api.is_empty() { kind.to_string() } else { format!("{api}/{kind}") };
                *bundle.skipped.entry(key).or_default() += 1;
            }
        }
    }

    // ---- policies ----

    fn policy(&mut self, node: &Node) -> Option<Policy> {
        let mut f = self.fields(node, "the policy")?;
        let meta = f.get("metadata");
        let spec = f.get("spec");
        f.get("apiVersion");
        f.get("kind");
        f.finish(self, "a CiliumEgressGatewayPolicy", OBJECT_FIELDS, |_| None);

        let mut name = None;
        let mut uid = None;
        let mut namespace = None;
        let mut floating = None;
        if let Some(m) = meta
            && let Some(mut mf) = self.fields(m, "metadata")
        {
            name = mf.get("name").and_then(|n| self.string(n, "metadata.name"));
            uid = mf.get("uid").and_then(Node::as_str).map(str::to_string);
            namespace = mf.get("namespace").and_then(|n| self.string(n, "metadata.namespace"));
            if let Some(v) = mf.get("labels") {
                self.fields(v, "labels");
            }
            if let Some(v) = mf.get("annotations")
                && self.fields(v, "annotations").is_some()
            {
                floating = v.get(FLOATING_ANNOTATION).and_then(|v| self.floating_annotation(v));
            }
            mf.finish(self, "metadata", METADATA_FIELDS, |_| None);
        }
        let Some(name) = name else {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, "the policy has no `metadata.name`")
                    .primary(f_key_or(meta, node), "missing `metadata.name`")
                    .help("add `metadata: {name: my-policy}`"),
            );
            return None;
        };

        let mut p = Policy {
            name,
            uid,
            namespace,
            origin: Origin::Crd,
            span: node.span,
            spec_span: spec.map_or(node.span, |s| s.span),
            selectors: Vec::new(),
            destination_cidrs: Vec::new(),
            excluded_cidrs: Vec::new(),
            egress_gateway: None,
            egress_gateways: Vec::new(),
        };
        let Some(spec) = spec else {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, format!("policy `{}` has no `spec`", p.name.value))
                    .primary(p.name.span, "this policy has no spec")
                    .help("add `spec` with `selectors`, `destinationCIDRs` and `egressGateway`"),
            );
            return Some(p);
        };
        let Some(mut sf) = self.fields(spec, "spec") else { return Some(p) };

        let selectors = sf.get("selectors");
        let dests = sf.get("destinationCIDRs");
        let excl = sf.get("excludedCIDRs");
        let gw = sf.get("egressGateway");
        let gws = sf.get("egressGateways");
        let selector_key = sf.key_span("selector");
        // An unknown key that is a near miss of a required field: missing-field labels point at it.
        let near_miss = |field: &str| {
            sf.entries.iter().find_map(|(k, _)| {
                let name = k.as_str()?;
                (name != field && !SPEC_FIELDS.contains(&name) && did_you_mean(name, SPEC_FIELDS) == Some(field))
                    .then_some(k.span)
            })
        };
        let dest_near = near_miss("destinationCIDRs");
        sf.finish(self, "spec", SPEC_FIELDS, |name| match name {
            "selector" => Some(
                "did you mean `selectors`? it is a list of items, each with a `podSelector` and/or `namespaceSelector`:\n  selectors:\n  - podSelector:\n      matchLabels: {...}"
                    .to_string(),
            ),
            "destinationCIDR" | "destinations" => Some("did you mean `destinationCIDRs`? it is a list of CIDRs".to_string()),
            _ => None,
        });

        match selectors {
            Some(s) => {
                for item in self.seq(s, "spec.selectors", "a list of `- podSelector: ...` items") {
                    if let Some(it) = self.selector_item(item) {
                        p.selectors.push(it);
                    }
                }
                if matches!(&s.kind, Kind::Seq(v) if v.is_empty()) {
                    self.push(
                        Diagnostic::new(
                            &codes::EMPTY_LIST_NO_EFFECT,
                            "`spec.selectors` is empty: the policy selects no pod",
                        )
                        .primary(s.span, "no selector items")
                        .note("Cilium accepts the policy and it selects no pod; so does egret")
                        .help("add an item such as `- podSelector: {matchLabels: {app: web}}`, or delete the policy"),
                    );
                }
            }
            None => {
                let mut d = Diagnostic::new(
                    &codes::MISSING_FIELD,
                    format!("policy `{}` has no `spec.selectors`", p.name.value),
                )
                .primary(selector_key.unwrap_or(p.spec_span), "`selectors` is required");
                d = if selector_key.is_some() {
                    d.help("rename `selector` to `selectors` and make it a list of items with `podSelector`")
                } else {
                    d.help("add `selectors: [{podSelector: {matchLabels: {...}}}]`")
                };
                self.push(d);
            }
        }

        match dests {
            Some(d) => {
                p.destination_cidrs = self.cidrs(d, "spec.destinationCIDRs");
                if matches!(&d.kind, Kind::Seq(v) if v.is_empty()) {
                    self.push(
                        Diagnostic::new(
                            &codes::EMPTY_LIST_NO_EFFECT,
                            "`spec.destinationCIDRs` is empty: the policy captures no traffic",
                        )
                        .primary(d.span, "no destinations")
                        .note("Cilium accepts the policy and it captures nothing; so does egret")
                        .help("add the destinations to send through the gateway, e.g. `[\"0.0.0.0/0\"]`, or delete the policy"),
                    );
                }
            }
            None => self.push(
                Diagnostic::new(
                    &codes::MISSING_FIELD,
                    format!("policy `{}` has no `spec.destinationCIDRs`", p.name.value),
                )
                .primary(dest_near.unwrap_or(p.spec_span), "`destinationCIDRs` is required")
                .help("add `destinationCIDRs: [\"0.0.0.0/0\"]` (or the specific ranges)"),
            ),
        }
        if let Some(e) = excl {
            p.excluded_cidrs = self.cidrs(e, "spec.excludedCIDRs");
        }
        if let Some(g) = gw {
            p.egress_gateway = self.gateway(g, "spec.egressGateway");
        }
        if let Some(g) = gws {
            for item in self.seq(g, "spec.egressGateways", "a list of gateways") {
                if let Some(gw) = self.gateway(item, "spec.egressGateways[]") {
                    p.egress_gateways.push(gw);
                }
            }
        }
        // the annotation floats every egressIP of the policy's gateway entries
        for g in p.egress_gateway.iter_mut().chain(&mut p.egress_gateways) {
            g.floating = floating.filter(|_| g.egress_ip.is_some());
        }
        self.cilium_reading(&mut p);
        if gw.is_none() && gws.is_none_or(|g| matches!(&g.kind, Kind::Seq(v) if v.is_empty())) {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, format!("policy `{}` has no gateway", p.name.value))
                    .primary(p.spec_span, "`egressGateway` or `egressGateways` is required")
                    .help("add `egressGateway: {nodeSelector: {matchLabels: {cilium.io/egress-gateway: \"true\"}}}`"),
            );
        }
        Some(p)
    }

    /// What Cilium (the release egret mirrors) accepts but reads in its own
    /// way: each is a warning saying what Cilium does, and the policy is
    /// rewritten to that meaning, so egret compiles what Cilium runs
    /// (`compiler/tests/fixtures/cilium-acceptance/`).
    fn cilium_reading(&mut self, p: &mut Policy) {
        if let Some(ns) = p.namespace.take() {
            self.push(
                Diagnostic::new(
                    &codes::NAMESPACE_DROPPED,
                    format!("CiliumEgressGatewayPolicy is cluster-scoped; `metadata.namespace: {}` is dropped", ns.value),
                )
                .primary(ns.span, "the API server drops this")
                .note("the policy applies to the pods its selectors match in every namespace, in Cilium and in egret")
                .help(format!(
                    "remove it; to select pods in `{}` only, add `namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {}}}}}` to each selector item",
                    ns.value, ns.value
                )),
            );
        }
        for c in p.destination_cidrs.iter_mut().chain(p.excluded_cidrs.iter_mut()) {
            if c.value.has_host_bits() {
                let n = c.value.network();
                self.push(
                    Diagnostic::new(
                        &codes::CIDR_HOST_BITS_MASKED,
                        format!("`{}` has host bits set: Cilium reads this as {n}", c.value),
                    )
                    .primary(c.span, format!("read as {n}"))
                    .note("Cilium's API server accepts it and its agent keys the map by the prefix; egret compiles it the same way")
                    .help(format!(
                        "write `{n}`, or `{}/{}` for the single address",
                        c.value.addr,
                        c.value.family().bits()
                    )),
                );
                c.value = n;
            }
        }
        for item in &mut p.selectors {
            for s in
                [&mut item.pod_selector, &mut item.namespace_selector, &mut item.node_selector].into_iter().flatten()
            {
                self.cilium_selector(s, "pod");
            }
        }
        for g in p.egress_gateway.iter_mut().chain(p.egress_gateways.iter_mut()) {
            self.cilium_selector(&mut g.node_selector, "node");
        }
    }

    /// A selector Cilium's agent cannot build matches nothing: warn, and
    /// make it match nothing here too (a single `In` with no values).
    fn cilium_selector(&mut self, s: &mut LabelSelector, what: &str) {
        let mut why: Option<(Span, String)> = None;
        for k in s.keys() {
            if let Err(e) = crate::validate::check_label_key(&k.value) {
                why = why.or(Some((k.span, format!("`{}` is not a valid label key: {e}", k.value))));
            }
        }
        for r in &s.match_expressions {
            let bad = match r.operator.value {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    Some((r.operator.span, format!("`{}` without values", r.operator.value.as_str())))
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    Some((r.values[0].span, format!("`{}` with values", r.operator.value.as_str())))
                }
                _ => r
                    .values
                    .iter()
                    .find(|v| !crate::validate::is_label_value(&v.value))
                    .map(|v| (v.span, format!("`{}` is not a valid label value", v.value))),
            };
            why = why.or(bad);
        }
        let Some((span, reason)) = why else { return };
        self.push(
            Diagnostic::new(
                &codes::SELECTOR_MATCHES_NOTHING,
                format!("Cilium cannot build this selector ({reason}), so it matches no {what}"),
            )
            .primary(span, format!("the whole selector matches no {what}"))
            .secondary(s.span, "this selector")
            .note("Cilium's API server accepts it; Cilium's agent fails to build the selector and matches nothing; egret compiles it the same way")
            .help("give `In`/`NotIn` at least one value, `Exists`/`DoesNotExist` none, and use valid label keys (`[prefix/]name`)"),
        );
        let key = s.keys().next().cloned().unwrap_or_else(|| Spanned::new(String::new(), span));
        s.match_labels.clear();
        s.match_expressions =
            vec![Requirement { span, key, operator: Spanned::new(Operator::In, span), values: Vec::new() }];
    }

    /// The value of the floating-egress-IP annotation: its span when it is
    /// the string `"true"`, else an E0118 diagnostic and `None` (not floating).
    fn floating_annotation(&mut self, v: &Node) -> Option<Span> {
        let raw = v.as_str().unwrap_or("");
        if raw == "true" && !v.is_non_string_scalar() {
            return Some(v.span);
        }
        let (label, help) = if raw == "true" {
            ("YAML reads this as a boolean; annotation values are strings", "quote it: \"true\"".to_string())
        } else {
            (
                "not \"true\"",
                "write `\"true\"` to make the policy's egress IPs floating, or remove the annotation for fixed ones"
                    .to_string(),
            )
        };
        self.push(
            Diagnostic::new(
                &codes::INVALID_FLOATING_ANNOTATION,
                format!(
                    "annotation `{FLOATING_ANNOTATION}` must be \"true\", found {}",
                    v.as_str().map_or_else(|| v.describe().to_string(), |s| format!("`{s}`"))
                ),
            )
            .primary(v.span, label)
            .note("the egress IPs of this policy are not floating")
            .help(help),
        );
        None
    }

    fn selector_item(&mut self, node: &Node) -> Option<SelectorItem> {
        let mut f = self.fields(node, "a selector item")?;
        let pod = f.get("podSelector").and_then(|n| self.label_selector(n, "podSelector"));
        let ns = f.get("namespaceSelector").and_then(|n| self.label_selector(n, "namespaceSelector"));
        let nodes = f.get("nodeSelector").and_then(|n| self.label_selector(n, "nodeSelector"));
        f.finish(self, "a selector item", ITEM_FIELDS, |name| match name {
            "matchLabels" | "matchExpressions" => {
                Some(format!("`{name}` belongs inside `podSelector` or `namespaceSelector`"))
            }
            _ => None,
        });
        // An explicit `podSelector:` with a null value still counts as absent.
        Some(SelectorItem { span: node.span, pod_selector: pod, namespace_selector: ns, node_selector: nodes })
    }

    fn label_selector(&mut self, node: &Node, what: &str) -> Option<LabelSelector> {
        if node.is_null() {
            return None;
        }
        let mut f = self.fields(node, what)?;
        let mut sel = LabelSelector::empty(node.span);
        if let Some(ml) = f.get("matchLabels")
            && let Some(mut mf) = self.fields(ml, "matchLabels")
        {
            for (k, v) in mf.entries {
                let (Some(key), Some(val)) = (self.string(k, "a label key"), self.label_value(v)) else { continue };
                sel.match_labels.push((key, val));
            }
            mf.used.iter_mut().for_each(|u| *u = true);
            mf.finish(self, "matchLabels", &[], |_| None);
        }
        if let Some(me) = f.get("matchExpressions") {
            for r in self.seq(me, "matchExpressions", "a list of `{key, operator, values}`") {
                if let Some(req) = self.requirement(r) {
                    sel.match_expressions.push(req);
                }
            }
        }
        f.finish(self, what, SELECTOR_FIELDS, |name| match name {
            "namespaceSelector" | "podSelector" | "nodeSelector" => Some(format!(
                "`{name}` is a sibling of `{what}`, not part of it: indent it to the level of `{what}` (a YAML indentation slip)"
            )),
            _ => None,
        });
        Some(sel)
    }

    /// A label value: must be a string scalar (YAML reads unquoted `true` as a boolean).
    fn label_value(&mut self, v: &Node) -> Option<Spanned<String>> {
        if v.is_non_string_scalar() && !v.is_null() {
            let raw = v.as_str().unwrap_or("");
            self.push(
                Diagnostic::new(&codes::INVALID_LABEL_VALUE, format!("label value `{raw}` is not a string in YAML"))
                    .primary(v.span, "YAML reads this as a boolean or number")
                    .help(format!("quote it: \"{raw}\"")),
            );
            return Some(Spanned::new(raw.to_string(), v.span));
        }
        if v.is_null() {
            return Some(Spanned::new(String::new(), v.span));
        }
        self.string(v, "a label value")
    }

    fn requirement(&mut self, node: &Node) -> Option<Requirement> {
        let mut f = self.fields(node, "a matchExpressions requirement")?;
        let key = f.get("key").and_then(|k| self.string(k, "key"));
        let op = f.get("operator");
        let values = f.get("values");
        f.finish(self, "a requirement", REQUIREMENT_FIELDS, |_| None);
        let Some(key) = key else {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, "requirement has no `key`")
                    .primary(node.span, "missing `key`")
                    .help("add `key: LABEL`"),
            );
            return None;
        };
        let Some(op) = op else {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, "requirement has no `operator`")
                    .primary(node.span, "missing `operator`")
                    .help("add `operator: In` (or NotIn, Exists, DoesNotExist)"),
            );
            return None;
        };
        let op_s = self.string(op, "operator")?;
        let Some(operator) = Operator::parse(&op_s.value) else {
            let known = ["In", "NotIn", "Exists", "DoesNotExist"];
            let mut d = Diagnostic::new(&codes::INVALID_OPERATOR, format!("unknown operator `{}`", op_s.value))
                .primary(op_s.span, "not a label-selector operator");
            d = match did_you_mean(&op_s.value, &known) {
                Some(s) => d.help(format!("did you mean `{s}`? operators are In, NotIn, Exists, DoesNotExist")),
                None => d.help("operators are In, NotIn, Exists, DoesNotExist"),
            };
            self.push(d);
            return None;
        };
        let mut vals = Vec::new();
        if let Some(v) = values {
            for item in self.seq(v, "values", "a list of strings") {
                if let Some(s) = self.label_value(item) {
                    vals.push(s);
                }
            }
        }
        Some(Requirement { span: node.span, key, operator: Spanned::new(operator, op_s.span), values: vals })
    }

    fn cidrs(&mut self, node: &Node, what: &str) -> Vec<Spanned<Cidr>> {
        let mut out = Vec::new();
        for item in self.seq(node, what, "a list of CIDRs, e.g. `[\"10.0.0.0/8\"]`") {
            let Some(s) = self.string(item, what) else { continue };
            match s.value.parse::<Cidr>() {
                Ok(c) => out.push(Spanned::new(c, s.span)),
                Err(e) => self.push(
                    Diagnostic::new(&codes::INVALID_CIDR, format!("`{}` is not a valid CIDR: {e}", s.value))
                        .primary(s.span, "invalid CIDR")
                        .help(cidr_help(&s.value)),
                ),
            }
        }
        out
    }

    fn gateway(&mut self, node: &Node, what: &str) -> Option<GatewaySpec> {
        let mut f = self.fields(node, what)?;
        let ns = f.get("nodeSelector");
        let ip = f.get("egressIP");
        let iface = f.get("interface");
        f.finish(self, what, GATEWAY_FIELDS, |name| match name {
            "egressIp" | "egressIPs" | "egress_ip" => Some("did you mean `egressIP`?".to_string()),
            _ => None,
        });
        let node_selector = match ns {
            Some(n) => self.label_selector(n, "nodeSelector"),
            None => {
                self.push(
                    Diagnostic::new(&codes::MISSING_FIELD, format!("`{what}` has no `nodeSelector`"))
                        .primary(node.span, "`nodeSelector` is required")
                        .help("add `nodeSelector: {matchLabels: {cilium.io/egress-gateway: \"true\"}}`"),
                );
                None
            }
        };
        let egress_ip = ip.and_then(|n| self.string(n, "egressIP")).and_then(|s| match s.value.parse::<IpAddr>() {
            Ok(a) => Some(Spanned::new(a, s.span)),
            Err(_) => {
                self.push(
                    Diagnostic::new(&codes::INVALID_IP, format!("`{}` is not a valid IP address", s.value))
                        .primary(s.span, "invalid IP address")
                        .help(if s.value.contains('/') {
                            "write the address without a prefix length, e.g. `192.168.1.100`".to_string()
                        } else {
                            "write an IPv4 or IPv6 address, e.g. `192.168.1.100`".to_string()
                        }),
                );
                None
            }
        });
        let interface = iface.and_then(|n| self.string(n, "interface"));
        Some(GatewaySpec {
            span: node.span,
            node_selector: node_selector.unwrap_or_else(|| LabelSelector::empty(node.span)),
            egress_ip,
            interface,
            floating: None,
        })
    }

    // ---- cluster objects (lenient) ----

    fn meta(&mut self, node: &Node, namespaced: bool) -> Option<(Spanned<String>, Labels)> {
        let m = node.get("metadata");
        let name = m.and_then(|m| m.get("name")).and_then(|n| n.as_str().map(|s| Spanned::new(s.to_string(), n.span)));
        let Some(name) = name else {
            self.push(
                Diagnostic::new(&codes::MISSING_FIELD, "object has no `metadata.name`")
                    .primary(m.map_or(node.span, |m| m.span), "missing `metadata.name`")
                    .help("snapshots come from `kubectl get -o yaml`, which always includes names"),
            );
            return None;
        };
        let _ = namespaced;
        Some((name, labels_of(m.and_then(|m| m.get("labels")))))
    }

    fn namespace_of(node: &Node) -> String {
        node.get("metadata").and_then(|m| m.get("namespace")).and_then(Node::as_str).unwrap_or("default").to_string()
    }

    fn uid_of(node: &Node) -> String {
        node.get("metadata").and_then(|m| m.get("uid")).and_then(Node::as_str).unwrap_or("").to_string()
    }

    fn node_object(&mut self, node: &Node) -> Option<crate::ast::Node> {
        let (name, labels) = self.meta(node, false)?;
        let mut internal_ips = Vec::new();
        if let Some(Kind::Seq(addrs)) = node.get("status").and_then(|s| s.get("addresses")).map(|a| &a.kind) {
            for a in addrs {
                if a.get("type").and_then(Node::as_str) == Some("InternalIP")
                    && let Some(v) = a.get("address")
                {
                    match v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                        Some(ip) => internal_ips.push(ip),
                        None => self.invalid(v, "node InternalIP is not an IP address"),
                    }
                }
            }
        }
        let mut pod_cidrs = Vec::new();
        if let Some(spec) = node.get("spec") {
            let mut raw: Vec<&Node> = Vec::new();
            if let Some(Kind::Seq(v)) = spec.get("podCIDRs").map(|n| &n.kind) {
                raw.extend(v.iter());
            } else if let Some(v) = spec.get("podCIDR") {
                raw.push(v);
            }
            for v in raw {
                match v.as_str().and_then(|s| s.parse::<Cidr>().ok()) {
                    Some(c) => pod_cidrs.push(c.network()),
                    None => self.invalid(v, "node podCIDR is not a CIDR"),
                }
            }
        }
        let ready = match node.get("status").and_then(|s| s.get("conditions")).map(|c| &c.kind) {
            Some(Kind::Seq(conds)) => conds
                .iter()
                .find(|c| c.get("type").and_then(Node::as_str) == Some("Ready"))
                .map(|c| c.get("status").and_then(Node::as_str) == Some("True")),
            _ => None,
        };
        Some(crate::ast::Node {
            span: node.span,
            uid: Self::uid_of(node),
            name,
            labels,
            internal_ips,
            pod_cidrs,
            ready,
        })
    }

    fn pod(&mut self, node: &Node) -> Option<Pod> {
        let (name, labels) = self.meta(node, true)?;
        let spec = node.get("spec");
        let status = node.get("status");
        let mut pod_ips = Vec::new();
        let mut raw: Vec<&Node> = Vec::new();
        if let Some(Kind::Seq(v)) = status.and_then(|s| s.get("podIPs")).map(|n| &n.kind) {
            raw.extend(v.iter().filter_map(|i| i.get("ip")));
        } else if let Some(v) = status.and_then(|s| s.get("podIP")) {
            raw.push(v);
        }
        for v in raw {
            if v.is_null() {
                continue;
            }
            match v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                Some(ip) => {
                    if !pod_ips.contains(&ip) {
                        pod_ips.push(ip)
                    }
                }
                None => self.invalid(v, "pod IP is not an IP address"),
            }
        }
        Some(Pod {
            span: node.span,
            namespace: Self::namespace_of(node),
            uid: Self::uid_of(node),
            name,
            labels,
            node_name: spec.and_then(|s| s.get("nodeName")).and_then(Node::as_str).map(str::to_string),
            host_network: spec.and_then(|s| s.get("hostNetwork")).and_then(Node::as_str) == Some("true"),
            pod_ips,
            phase: status.and_then(|s| s.get("phase")).and_then(Node::as_str).map(str::to_string),
        })
    }

    fn workload(&mut self, node: &Node, kind: WorkloadKind) -> Option<Workload> {
        let (name, _) = self.meta(node, true)?;
        let spec = node.get("spec");
        let template = match kind {
            WorkloadKind::CronJob => {
                spec.and_then(|s| s.get("jobTemplate")).and_then(|j| j.get("spec")).and_then(|s| s.get("template"))
            }
            _ => spec.and_then(|s| s.get("template")),
        };
        let template_labels = labels_of(template.and_then(|t| t.get("metadata")).and_then(|m| m.get("labels")));
        Some(Workload { span: node.span, kind, namespace: Self::namespace_of(node), name, template_labels })
    }

    fn node_network(&mut self, node: &Node) -> Option<NodeNetwork> {
        let (name, _) = self.meta(node, false)?;
        let spec = node.get("spec");
        let mut interfaces = Vec::new();
        if let Some(Kind::Seq(ifs)) = spec.and_then(|s| s.get("interfaces")).map(|n| &n.kind) {
            for i in ifs {
                let Some(iname) = i.get("name").and_then(Node::as_str) else {
                    self.invalid(i, "NodeNetwork interface has no name");
                    continue;
                };
                let index = i.get("index").and_then(Node::as_str).and_then(|s| s.parse().ok());
                let mut addresses = Vec::new();
                if let Some(Kind::Seq(addrs)) = i.get("addresses").map(|n| &n.kind) {
                    for a in addrs {
                        let parsed = a.as_str().and_then(|s| {
                            s.parse::<Cidr>().ok().or_else(|| {
                                s.parse::<IpAddr>().ok().map(|ip| Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }))
                            })
                        });
                        match parsed {
                            Some(c) => addresses.push(c),
                            None => self.invalid(a, "NodeNetwork address is not an IP or CIDR"),
                        }
                    }
                }
                let alt_names = match i.get("altNames").map(|n| &n.kind) {
                    Some(Kind::Seq(v)) => v.iter().filter_map(Node::as_str).map(str::to_string).collect(),
                    _ => Vec::new(),
                };
                interfaces.push(Interface { name: iname.to_string(), index, addresses, alt_names });
            }
        }
        let default_route_interface =
            spec.and_then(|s| s.get("defaultRouteInterface")).and_then(Node::as_str).map(str::to_string);
        Some(NodeNetwork { span: node.span, node: name, interfaces, default_route_interface })
    }

    fn invalid(&mut self, node: &Node, msg: &str) {
        self.push(
            Diagnostic::new(&codes::INVALID_OBJECT, msg.to_string())
                .primary(node.span, "ignored")
                .help("regenerate the snapshot with `kubectl get -o yaml`"),
        );
    }
}

fn f_key_or(meta: Option<&Node>, node: &Node) -> Span {
    meta.map_or(Span { end: node.span.start, ..node.span }, |m| m.span)
}

fn labels_of(node: Option<&Node>) -> Labels {
    let mut out = Labels::new();
    if let Some(Node { kind: Kind::Map(entries), .. }) = node {
        for (k, v) in entries {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

fn cidr_help(raw: &str) -> String {
    if !raw.contains('/')
        && let Ok(ip) = raw.parse::<IpAddr>()
    {
        {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            return format!("add a prefix length: `{raw}/{len}` for this one address");
        }
    }
    "write `ADDRESS/LENGTH`, e.g. `10.0.0.0/8`".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_names() {
        assert_eq!(did_you_mean("selector", SPEC_FIELDS), Some("selectors"));
        assert_eq!(did_you_mean("destinationCIDR", SPEC_FIELDS), Some("destinationCIDRs"));
        assert_eq!(did_you_mean("egressGatway", SPEC_FIELDS), Some("egressGateway"));
        assert_eq!(did_you_mean("zzz", SPEC_FIELDS), None);
    }

    /// A minimal policy with `apiVersion: {api}` and `name: {name}` (as written).
    fn policy_doc(api: &str, name: &str) -> String {
        format!(
            "apiVersion: {api}\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: {name}\nspec:\n  selectors: [{{podSelector: {{}}}}]\n  destinationCIDRs: [\"0.0.0.0/0\"]\n  egressGateway: {{nodeSelector: {{matchLabels: {{gw: \"true\"}}}}}}\n"
        )
    }

    fn read(text: &str) -> (usize, Vec<&'static str>) {
        let (b, d) = parse_yaml(FileId(0), text);
        (b.policies.len(), d.iter().map(|d| d.code.id).collect())
    }

    #[test]
    fn yaml_is_read_as_kubernetes_reads_it() {
        // empty documents, as `helm template` prints them, are skipped
        let ok = policy_doc("cilium.io/v2", "p");
        assert_eq!(read(&format!("---\n---\n{ok}---\n---\n")), (1, vec![]));
        assert_eq!(read(&format!("---\n# only a comment\n---\n{ok}")), (1, vec![]));
        // versions the API server does not serve are refused, never read as v2 nor skipped
        for api in ["cilium.io/v3", "cilium.io/v2alpha1", "v2alpha1", "v2"] {
            assert_eq!(read(&policy_doc(api, "p")), (0, vec!["E0121"]), "{api}");
        }
        assert_eq!(read(&policy_doc("\"\"", "p")), (0, vec!["E0004"]));
        for api in ["2", "true", "[cilium.io/v2]"] {
            assert_eq!(read(&policy_doc(api, "p")), (0, vec!["E0103"]), "{api}");
        }
        // string fields: numbers and booleans are not strings to the API server
        assert_eq!(read(&policy_doc("cilium.io/v2", "12")), (1, vec!["E0103"]));
        assert_eq!(read(&policy_doc("cilium.io/v2", "\"12\"")), (1, vec![]));
    }

    #[test]
    fn reads_a_policy_with_spans() {
        let t = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: p1
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: web
      matchExpressions:
      - {key: tier, operator: In, values: [a, b]}
    namespaceSelector: {}
  destinationCIDRs: ["0.0.0.0/0"]
  excludedCIDRs: ["10.0.0.0/8"]
  egressGateway:
    nodeSelector: {matchLabels: {gw: "true"}}
    egressIP: 192.0.2.10
"#;
        let (b, d) = parse_yaml(FileId(0), t);
        assert!(d.is_empty(), "{d:?}");
        let p = &b.policies[0];
        assert_eq!(p.name.value, "p1");
        assert_eq!(&t[p.destination_cidrs[0].span.range()], "\"0.0.0.0/0\"");
        let ps = p.selectors[0].pod_selector.as_ref().unwrap();
        assert_eq!(&t[ps.match_labels[0].1.span.range()], "web");
        assert_eq!(ps.match_expressions[0].values.len(), 2);
        assert!(p.selectors[0].namespace_selector.as_ref().unwrap().is_empty());
        assert_eq!(&t[p.egress_gateway.as_ref().unwrap().egress_ip.as_ref().unwrap().span.range()], "192.0.2.10");
    }

    #[test]
    fn reads_cluster_objects_and_lists() {
        let t = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: prod, uid: u1, labels: {app: web}}
  spec: {nodeName: n1}
  status: {phase: Running, podIPs: [{ip: 10.1.0.5}, {ip: "fd00::5"}]}
- apiVersion: v1
  kind: Node
  metadata: {name: n1, labels: {gw: "true"}}
  spec: {podCIDRs: [10.1.0.0/24]}
  status:
    addresses: [{type: InternalIP, address: 192.0.2.1}, {type: Hostname, address: n1}]
    conditions: [{type: Ready, status: "False"}]
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d, namespace: prod}
  spec: {template: {metadata: {labels: {app: web}}}}
- apiVersion: v1
  kind: Service
  metadata: {name: s}
"#;
        let (b, d) = parse_yaml(FileId(0), t);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(b.cluster.pods[0].pod_ips.len(), 2);
        assert_eq!(b.cluster.nodes[0].ready, Some(false));
        assert_eq!(b.cluster.nodes[0].internal_ips.len(), 1);
        assert_eq!(b.cluster.workloads[0].template_labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(b.skipped.get("v1/Service"), Some(&1));
    }
}

//! Selection: which endpoints and workloads a policy's selectors select
//! (egret's reading and Cilium's), through the label index, and why a
//! selector does not match.

use super::*;

/// Which reading of `nodeSelector` to apply (SEMANTICS.md, deliberate difference 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Each item's nodeSelector constrains its own item.
    Egret,
    /// All items' nodeSelectors are pooled and ORed, detached from their items.
    Cilium,
}

impl World {
    /// Labels of a node by name (empty for an unknown or missing node).
    fn node_labels(&self, node: Option<NodeId>) -> &Labels {
        static EMPTY: Labels = Labels::new();
        node.map_or(&EMPTY, |n| &self.nodes[n.index()].labels)
    }

    /// Labels of a namespace (`kubernetes.io/metadata.name` only, for one not in the snapshot).
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    fn namespace_matches(&self, sel: &LabelSelector, ns: &str) -> bool {
        match self.namespaces.get(ns) {
            Some(info) => sel.matches(&info.labels),
            None => sel.matches(&self.namespace_labels(ns)),
        }
    }

    /// Whether an item's pod and namespace parts match (`None` when the item
    /// has neither, which is an error and matches nothing).
    fn item_pod_ns(&self, item: &SelectorItem, labels: &Labels, namespace: &str) -> bool {
        if item.pod_selector.is_none() && item.namespace_selector.is_none() {
            return false;
        }
        item.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
            && item.namespace_selector.as_ref().is_none_or(|s| self.namespace_matches(s, namespace))
    }

    /// Whether one selector item selects an endpoint, egret's reading.
    pub fn item_selects(&self, item: &SelectorItem, e: &Endpoint) -> bool {
        self.item_pod_ns(item, &e.labels, &e.namespace)
            && item.node_selector.as_ref().is_none_or(|s| s.matches(self.node_labels(e.node)))
    }

    /// Whether a policy selects an endpoint in the given reading.
    pub fn selects(&self, p: &Policy, e: &Endpoint, reading: Reading) -> bool {
        match reading {
            Reading::Egret => p.selectors.iter().any(|i| self.item_selects(i, e)),
            Reading::Cilium => {
                let podns = p.selectors.iter().any(|i| self.item_pod_ns(i, &e.labels, &e.namespace));
                let node_sels: Vec<&LabelSelector> =
                    p.selectors.iter().filter_map(|i| i.node_selector.as_ref()).collect();
                podns && (node_sels.is_empty() || node_sels.iter().any(|s| s.matches(self.node_labels(e.node))))
            }
        }
    }

    /// The endpoints a policy selects (egret's reading), sorted by `namespace/name`.
    pub fn selected_endpoints(&self, p: &Policy) -> Vec<&Endpoint> {
        self.selected_endpoints_in(p, Reading::Egret)
    }

    /// The endpoints a policy selects in a reading, sorted by `namespace/name`.
    pub fn selected_endpoints_in(&self, p: &Policy, reading: Reading) -> Vec<&Endpoint> {
        let mut v: Vec<&Endpoint> = match self.policy_by_name.get(&p.name.value) {
            Some(id) if self.policies[id.index()].ast == *p => {
                let set = match reading {
                    Reading::Egret => &self.selection[id.index()],
                    Reading::Cilium => &self.cilium_selection[id.index()],
                };
                set.iter().map(|e| &self.endpoints[e.index()]).collect()
            }
            _ => self.endpoints().filter(|e| self.selects(p, e, reading)).collect(),
        };
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The workload templates a policy would select: pod and namespace parts
    /// of an item against the template labels and the workload's namespace.
    /// An item's nodeSelector is not checked (a workload's pods may land on
    /// any node).
    pub fn selected_workloads(&self, p: &Policy) -> Vec<&WorkloadInfo> {
        self.workloads
            .iter()
            .filter(|w| p.selectors.iter().any(|i| self.item_pod_ns(i, &w.labels, &w.namespace)))
            .collect()
    }

    /// Nodes whose labels match a selector, in name order.
    pub fn matching_nodes(&self, sel: &LabelSelector) -> Vec<&NodeInfo> {
        self.nodes.iter().filter(|n| sel.matches(&n.labels)).collect()
    }

    /// Candidate endpoints for an item, from the indexes: the smallest
    /// `matchLabels` (or single-value `In`) posting list, else the namespaces
    /// the namespaceSelector matches, else everything.
    fn candidates(&self, item: &SelectorItem) -> Vec<EndpointId> {
        static NONE: BTreeSet<EndpointId> = BTreeSet::new();
        let mut by_label: Option<&BTreeSet<EndpointId>> = None;
        if let Some(ps) = &item.pod_selector {
            let lists = ps
                .match_labels
                .iter()
                .map(|(k, v)| (k.value.as_str(), v.value.as_str()))
                .chain(ps.match_expressions.iter().filter_map(|r| match (r.operator.value, r.values.as_slice()) {
                    (Operator::In, [v]) => Some((r.key.value.as_str(), v.value.as_str())),
                    _ => None,
                }))
                .map(|(k, v)| self.label_index.get(k).and_then(|m| m.get(v)).unwrap_or(&NONE));
            by_label = lists.min_by_key(|s| s.len());
        }
        if let Some(ns) = &item.namespace_selector
            && !ns.is_empty()
        {
            let sets: Vec<&BTreeSet<EndpointId>> =
                self.by_namespace.iter().filter(|(name, _)| self.namespace_matches(ns, name)).map(|(_, s)| s).collect();
            let n: usize = sets.iter().map(|s| s.len()).sum();
            if by_label.is_none_or(|l| n < l.len()) {
                let mut out: Vec<EndpointId> = sets.into_iter().flatten().copied().collect();
                out.sort_unstable();
                return out;
            }
        }
        match by_label {
            Some(l) => l.iter().copied().collect(),
            None => self.endpoint_by_key.values().copied().collect(),
        }
    }

    pub(super) fn select_indexed(&self, p: PolicyId) -> (BTreeSet<EndpointId>, BTreeSet<EndpointId>) {
        let pol = &self.policies[p.index()].ast;
        let mut egret = BTreeSet::new();
        let mut cilium = BTreeSet::new();
        let has_node_sel = pol.selectors.iter().any(|i| i.node_selector.is_some());
        for item in &pol.selectors {
            for e in self.candidates(item) {
                let ep = &self.endpoints[e.index()];
                if !self.item_pod_ns(item, &ep.labels, &ep.namespace) {
                    continue;
                }
                if item.node_selector.as_ref().is_none_or(|s| s.matches(self.node_labels(ep.node))) {
                    egret.insert(e);
                }
                if !has_node_sel
                    || cilium.contains(&e)
                    || pol
                        .selectors
                        .iter()
                        .filter_map(|i| i.node_selector.as_ref())
                        .any(|s| s.matches(self.node_labels(ep.node)))
                {
                    cilium.insert(e);
                }
            }
        }
        (egret, cilium)
    }
}

/// The first requirement of a selector that labels fail, before it is put
/// in words ([`selector_miss`]); finding it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorMiss<'a> {
    /// A `matchLabels` entry: the label is absent or has another value.
    Label { key: &'a str, want: &'a str, have: Option<&'a str> },
    /// A `matchExpressions` entry; `have` is the label's value, if any.
    Expression { req: &'a Requirement, have: Option<&'a str> },
}

/// The first requirement of `sel` that `labels` fail (`None` when it matches).
pub fn first_selector_miss<'a>(sel: &'a LabelSelector, labels: &'a Labels) -> Option<SelectorMiss<'a>> {
    for (k, v) in &sel.match_labels {
        let have = labels.get(&k.value).map(String::as_str);
        if have != Some(v.value.as_str()) {
            return Some(SelectorMiss::Label { key: &k.value, want: &v.value, have });
        }
    }
    sel.match_expressions
        .iter()
        .find(|r| !r.matches(labels))
        .map(|req| SelectorMiss::Expression { req, have: labels.get(&req.key.value).map(String::as_str) })
}

impl fmt::Display for SelectorMiss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SelectorMiss::Label { key, want, have: Some(have) } => write!(f, "`{key}` is `{have}`, not `{want}`"),
            SelectorMiss::Label { key, want, have: None } => write!(f, "no label `{key}` (wants `{want}`)"),
            SelectorMiss::Expression { req, have } => {
                let vals: Vec<&str> = req.values.iter().map(|v| v.value.as_str()).collect();
                let (key, vals) = (&req.key.value, vals.join(", "));
                match (req.operator.value, have) {
                    (Operator::In, Some(h)) => write!(f, "`{key}` is `{h}`, not in [{vals}]"),
                    (Operator::In, None) => write!(f, "no label `{key}` (wants one of [{vals}])"),
                    (Operator::NotIn, h) => write!(f, "`{key}` is `{}`, which is in [{vals}]", h.unwrap_or("")),
                    (Operator::Exists, _) => write!(f, "no label `{key}`"),
                    (Operator::DoesNotExist, _) => write!(f, "has label `{key}`"),
                }
            }
        }
    }
}

/// Why a selector does not match labels: the first requirement that fails,
/// in words (`None` when it matches).
pub fn selector_miss(sel: &LabelSelector, labels: &Labels) -> Option<String> {
    first_selector_miss(sel, labels).map(|m| m.to_string())
}

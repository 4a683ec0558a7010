//! Label-selector algebra for reasoning about *hypothetical* endpoints.
//!
//! Without a cluster snapshot the linter cannot list the pods two policies
//! select; it asks instead whether *some* pod could be selected by both
//! ([`satisfiable`]) and whether every pod one item selects is selected by
//! another ([`implies`]). Both are exact for matchLabels/In/NotIn/Exists/
//! DoesNotExist over independent keys, with one cross-constraint: the pod
//! pseudo-label `io.kubernetes.pod.namespace` is the namespace's
//! `kubernetes.io/metadata.name`.

use egret_lang::ast::{LabelSelector, Operator, SelectorItem};
use std::collections::{BTreeMap, BTreeSet};

pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What all requirements on one key say together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyConstraint {
    /// `Some(set)`: the value must be in the set (intersection of all In / equalities).
    allowed: Option<BTreeSet<String>>,
    denied: BTreeSet<String>,
    must_exist: bool,
    must_not_exist: bool,
}

impl KeyConstraint {
    fn satisfiable(&self) -> bool {
        if self.must_not_exist {
            // absent: fine unless something requires a value
            return !self.must_exist && self.allowed.is_none();
        }
        match &self.allowed {
            Some(a) => a.iter().any(|v| !self.denied.contains(v)),
            None => true,
        }
    }

    fn add(&mut self, op: Operator, values: &[String]) {
        match op {
            Operator::In => {
                let s: BTreeSet<String> = values.iter().cloned().collect();
                self.allowed = Some(match self.allowed.take() {
                    Some(a) => a.intersection(&s).cloned().collect(),
                    None => s,
                });
            }
            Operator::NotIn => self.denied.extend(values.iter().cloned()),
            Operator::Exists => self.must_exist = true,
            Operator::DoesNotExist => self.must_not_exist = true,
        }
    }
}

/// Constraints on the labels of one object kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    keys: BTreeMap<String, KeyConstraint>,
}

impl Constraints {
    pub fn from_selector(sel: Option<&LabelSelector>) -> Constraints {
        let mut c = Constraints::default();
        if let Some(s) = sel {
            c.add_selector(s);
        }
        c
    }

    fn add_selector(&mut self, s: &LabelSelector) {
        for (k, v) in &s.match_labels {
            self.keys.entry(k.value.clone()).or_default().add(Operator::In, std::slice::from_ref(&v.value));
        }
        for r in &s.match_expressions {
            let vals: Vec<String> = r.values.iter().map(|v| v.value.clone()).collect();
            self.keys.entry(r.key.value.clone()).or_default().add(r.operator.value, &vals);
        }
    }

    fn merge(&mut self, other: &Constraints) {
        for (k, c) in &other.keys {
            let e = self.keys.entry(k.clone()).or_default();
            if let Some(a) = &c.allowed {
                e.add(Operator::In, &a.iter().cloned().collect::<Vec<_>>());
            }
            e.denied.extend(c.denied.iter().cloned());
            e.must_exist |= c.must_exist;
            e.must_not_exist |= c.must_not_exist;
        }
    }

    pub fn satisfiable(&self) -> bool {
        self.keys.values().all(KeyConstraint::satisfiable)
    }

    /// The single value a key is pinned to, if any (used to bucket items).
    pub fn pinned(&self, key: &str) -> Option<&str> {
        let a = self.keys.get(key)?.allowed.as_ref()?;
        if a.len() == 1 { a.iter().next().map(String::as_str) } else { None }
    }

    pub fn pinned_keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.iter().filter_map(|(k, c)| {
            let a = c.allowed.as_ref()?;
            (a.len() == 1).then(|| (k.as_str(), a.iter().next().map_or("", String::as_str)))
        })
    }

    /// Whether every label set satisfying `self` satisfies `weaker`.
    fn implies(&self, weaker: &Constraints) -> bool {
        weaker.keys.iter().all(|(k, w)| {
            let s = self.keys.get(k).cloned().unwrap_or_default();
            // value sets self allows (None = anything)
            let exists = s.must_exist || s.allowed.is_some();
            if w.must_exist && !exists {
                return false;
            }
            if w.must_not_exist && !s.must_not_exist {
                return false;
            }
            if let Some(wa) = &w.allowed {
                match &s.allowed {
                    Some(sa) => {
                        if !sa.iter().filter(|v| !s.denied.contains(*v)).all(|v| wa.contains(v)) {
                            return false;
                        }
                    }
                    None => return false,
                }
            }
            if !w.denied.is_empty() {
                if s.must_not_exist {
                    return true;
                }
                match &s.allowed {
                    Some(sa) => {
                        if sa.iter().filter(|v| !s.denied.contains(*v)).any(|v| w.denied.contains(v)) {
                            return false;
                        }
                    }
                    None => {
                        if !w.denied.iter().all(|v| s.denied.contains(v)) {
                            return false;
                        }
                    }
                }
            }
            true
        })
    }
}

/// The constraints one selector item puts on pods, namespaces and nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemConstraints {
    pub pod: Constraints,
    pub namespace: Constraints,
    pub node: Constraints,
}

impl ItemConstraints {
    /// Reads an item in egret's reading (its own nodeSelector only).
    pub fn of(item: &SelectorItem) -> ItemConstraints {
        let mut pod = Constraints::from_selector(item.pod_selector.as_ref());
        let mut namespace = Constraints::from_selector(item.namespace_selector.as_ref());
        // The pod pseudo-label is a constraint on the namespace's name.
        if let Some(c) = pod.keys.remove(POD_NAMESPACE_LABEL) {
            let mut moved = Constraints::default();
            moved.keys.insert(NAMESPACE_NAME_LABEL.to_string(), c);
            namespace.merge(&moved);
        }
        ItemConstraints { pod, namespace, node: Constraints::from_selector(item.node_selector.as_ref()) }
    }

    pub fn satisfiable(&self) -> bool {
        self.pod.satisfiable() && self.namespace.satisfiable() && self.node.satisfiable()
    }

    /// The conjunction of two items: is there a pod both select?
    pub fn and(&self, other: &ItemConstraints) -> ItemConstraints {
        let mut r = self.clone();
        r.pod.merge(&other.pod);
        r.namespace.merge(&other.namespace);
        r.node.merge(&other.node);
        r
    }

    /// Every pod `self` selects is selected by `weaker`.
    pub fn implies(&self, weaker: &ItemConstraints) -> bool {
        !self.satisfiable()
            || (self.pod.implies(&weaker.pod)
                && self.namespace.implies(&weaker.namespace)
                && self.node.implies(&weaker.node))
    }
}

/// Whether some pod could be selected by both items.
pub fn satisfiable(a: &ItemConstraints, b: &ItemConstraints) -> bool {
    a.and(b).satisfiable()
}

/// Whether every pod `a` selects is selected by `b`.
pub fn implies(a: &ItemConstraints, b: &ItemConstraints) -> bool {
    a.implies(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_lang::ast::Requirement;
    use egret_lang::source::{FileId, Span, Spanned};

    fn s(x: &str) -> Spanned<String> {
        Spanned::new(x.to_string(), Span::default())
    }
    fn sel(labels: &[(&str, &str)], exprs: &[(&str, Operator, &[&str])]) -> LabelSelector {
        LabelSelector {
            span: Span::new(FileId(0), 0, 0),
            match_labels: labels.iter().map(|(k, v)| (s(k), s(v))).collect(),
            match_expressions: exprs
                .iter()
                .map(|(k, op, vs)| Requirement {
                    span: Span::default(),
                    key: s(k),
                    operator: Spanned::new(*op, Span::default()),
                    values: vs.iter().map(|v| s(v)).collect(),
                })
                .collect(),
        }
    }
    fn item(pod: LabelSelector) -> ItemConstraints {
        ItemConstraints::of(&SelectorItem {
            span: Span::default(),
            pod_selector: Some(pod),
            namespace_selector: None,
            node_selector: None,
        })
    }

    #[test]
    fn disjoint_apps_are_unsatisfiable() {
        let a = item(sel(&[("app", "payments")], &[]));
        let b = item(sel(&[("app", "analytics")], &[]));
        assert!(!satisfiable(&a, &b));
        let c = item(sel(&[("use-egress-gateway", "true")], &[]));
        assert!(satisfiable(&a, &c));
    }

    #[test]
    fn operators_combine() {
        let a = item(sel(&[], &[("tier", Operator::In, &["a", "b"])]));
        let b = item(sel(&[], &[("tier", Operator::NotIn, &["a", "b"])]));
        assert!(!satisfiable(&a, &b));
        let c = item(sel(&[], &[("tier", Operator::DoesNotExist, &[])]));
        assert!(!satisfiable(&a, &c));
        let d = item(sel(&[], &[("tier", Operator::NotIn, &["a"])]));
        assert!(satisfiable(&a, &d));
    }

    #[test]
    fn implication() {
        let narrow = item(sel(&[("app", "web"), ("env", "prod")], &[]));
        let wide = item(sel(&[("app", "web")], &[]));
        let all = item(sel(&[], &[]));
        assert!(implies(&narrow, &wide));
        assert!(implies(&narrow, &all));
        assert!(!implies(&wide, &narrow));
        let in_ab = item(sel(&[], &[("tier", Operator::In, &["a", "b"])]));
        let in_abc = item(sel(&[], &[("tier", Operator::In, &["a", "b", "c"])]));
        let exists = item(sel(&[], &[("tier", Operator::Exists, &[])]));
        let not_c = item(sel(&[], &[("tier", Operator::NotIn, &["c"])]));
        assert!(implies(&in_ab, &in_abc));
        assert!(implies(&in_ab, &exists));
        assert!(implies(&in_ab, &not_c));
        assert!(!implies(&in_abc, &not_c));
    }
}

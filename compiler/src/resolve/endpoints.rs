//! Endpoints: pods that send traffic (SEMANTICS.md "Endpoints"), their
//! indexes, and the incremental updates that add and remove them.

use super::*;

/// An endpoint (SEMANTICS.md, "Endpoints").
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub namespace: String,
    pub name: String,
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    /// Hashing identity: the uid, or `namespace/name` when the uid is empty.
    pub identity: String,
    /// Its IPs (without any another endpoint claimed first), in the pod's order.
    pub ips: Vec<IpAddr>,
    pub node: Option<NodeId>,
    /// `spec.nodeName` as written (also when it names no known node).
    pub node_name: Option<String>,
    /// Pod labels plus the pseudo-label `io.kubernetes.pod.namespace`.
    pub labels: Labels,
    pub span: Span,
    /// The workload whose template the pod matches, if any (for grouping in `diff`).
    pub workload: Option<WorkloadId>,
    pub(super) alive: bool,
}

impl Endpoint {
    /// Its first IP of a family.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
    pub fn has_family(&self, family: Family) -> bool {
        self.ip(family).is_some()
    }
}

/// Errors of the incremental updates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    #[error("pod `{key}` is already in the world")]
    DuplicatePod { key: String },
    #[error("IP {ip} of pod `{key}` already belongs to `{owner}`")]
    DuplicateIp { key: String, ip: IpAddr, owner: String },
    #[error("no pod `{key}` in the world")]
    UnknownPod { key: String },
}

/// Why a pod is not an endpoint.
pub(super) fn non_endpoint_reason(p: &Pod) -> Option<&'static str> {
    if p.is_endpoint() {
        None
    } else if p.host_network {
        Some("it uses the host network")
    } else if p.pod_ips.is_empty() {
        Some("it has no IP")
    } else {
        Some("it is not Pending or Running")
    }
}

impl World {
    /// Adds a pod (a pod that is not an endpoint is accepted and only
    /// remembered as such, [`World::non_endpoint_reason`]: `Ok(None)`).
    /// Updates the selection index for it alone.
    pub fn add_pod(&mut self, pod: &Pod) -> Result<Option<EndpointId>, WorldError> {
        if let Some(reason) = non_endpoint_reason(pod) {
            self.non_endpoints.insert(pod.key(), reason);
            return Ok(None);
        }
        let key = pod.key();
        if self.endpoint_by_key.contains_key(&key) {
            return Err(WorldError::DuplicatePod { key });
        }
        for ip in &pod.pod_ips {
            if let Some(owner) = self.endpoint_by_ip.get(ip) {
                return Err(WorldError::DuplicateIp { key, ip: *ip, owner: self.endpoints[owner.index()].key.clone() });
            }
        }
        let id = self.insert_endpoint(pod, pod.pod_ips.clone());
        self.index_endpoint(id);
        let ep = &self.endpoints[id.index()];
        let mut sel = Vec::new();
        let mut csel = Vec::new();
        for p in &self.policies {
            if self.selects(&p.ast, ep, Reading::Egret) {
                sel.push(p.id);
            }
            if self.selects(&p.ast, ep, Reading::Cilium) {
                csel.push(p.id);
            }
        }
        for p in &sel {
            self.selection[p.index()].insert(id);
        }
        for p in csel {
            self.cilium_selection[p.index()].insert(id);
        }
        self.selected_by[id.index()] = sel;
        Ok(Some(id))
    }

    /// Removes a pod by `namespace/name` (an error if it is no endpoint;
    /// either way the world forgets it).
    pub fn remove_pod(&mut self, key: &str) -> Result<EndpointId, WorldError> {
        self.non_endpoints.remove(key);
        let id = self.endpoint_by_key.remove(key).ok_or_else(|| WorldError::UnknownPod { key: key.to_string() })?;
        let ep = &mut self.endpoints[id.index()];
        ep.alive = false;
        let ep = ep.clone();
        for ip in &ep.ips {
            self.endpoint_by_ip.remove(ip);
        }
        match ep.node {
            Some(n) => {
                self.by_node[n.index()].remove(&id);
            }
            None => {
                self.unplaced.remove(&id);
            }
        }
        if let Some(s) = self.by_namespace.get_mut(&ep.namespace) {
            s.remove(&id);
        }
        for (k, v) in &ep.labels {
            if let Some(s) = self.label_index.get_mut(k).and_then(|m| m.get_mut(v)) {
                s.remove(&id);
            }
        }
        for p in std::mem::take(&mut self.selected_by[id.index()]) {
            self.selection[p.index()].remove(&id);
        }
        for s in &mut self.cilium_selection {
            s.remove(&id);
        }
        Ok(id)
    }

    pub(super) fn insert_endpoint(&mut self, pod: &Pod, ips: Vec<IpAddr>) -> EndpointId {
        let id = EndpointId(self.endpoints.len() as u32);
        let mut labels = pod.labels.clone();
        labels.insert(POD_NAMESPACE_LABEL.to_string(), pod.namespace.clone());
        let workload = self
            .workloads
            .iter()
            .find(|w| {
                w.namespace == pod.namespace
                    && w.labels.len() > 1
                    && w.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|w| w.id);
        let node = pod.node_name.as_ref().and_then(|n| self.node_by_name.get(n).copied());
        self.endpoints.push(Endpoint {
            id,
            namespace: pod.namespace.clone(),
            name: pod.name.value.clone(),
            key: pod.key(),
            uid: pod.uid.clone(),
            identity: pod.identity(),
            ips,
            node,
            node_name: pod.node_name.clone(),
            labels,
            span: pod.span,
            workload,
            alive: true,
        });
        self.selected_by.push(Vec::new());
        id
    }

    pub(super) fn index_endpoint(&mut self, id: EndpointId) {
        let ep = &self.endpoints[id.index()];
        self.endpoint_by_key.insert(ep.key.clone(), id);
        for ip in &ep.ips {
            self.endpoint_by_ip.insert(*ip, id);
        }
        match ep.node {
            Some(n) => {
                self.by_node[n.index()].insert(id);
            }
            None => {
                self.unplaced.insert(id);
            }
        }
        self.by_namespace.entry(ep.namespace.clone()).or_default().insert(id);
        for (k, v) in &ep.labels {
            self.label_index.entry(k.clone()).or_default().entry(v.clone()).or_default().insert(id);
        }
    }
}

//! Admissions: pods that `egret-cni` hands the agent at CNI `ADD`, before
//! the API server has their addresses, and their release at `DEL`/`GC`.
//!
//! Contract (of [`crate::watch::ClusterWatch::run_admitting`], which owns the
//! view these act on):
//! - **Admit** ([`Admit::Pod`]): the pod's addresses as the CNI reported them
//!   are kept in an overlay, by pod key, with the sandbox's container ID.
//!   The view's pod gets them (they replace what the API server says: the
//!   sandbox's addresses are the truth at that moment), and so does every
//!   later update of that pod from the watch that carries no address (the
//!   kubelet writes `podIPs` after the sandbox exists: until then the watch
//!   would take the addresses away again). Then the callback runs at once,
//!   not debounced, and the admission is answered [`Admitted::Reconciled`]
//!   after it returns (admissions queued meanwhile are applied together and
//!   share one callback). A pod the view does not have yet is answered
//!   [`Admitted::NotInView`] (the overlay is kept): the caller reads it from
//!   the API server ([`get_pod`]) and admits it with its facts
//!   ([`Admit::Facts`]).
//! - **Release** ([`Admit::Release`], [`Admit::Gc`]): the overlay entries of
//!   the sandbox (or of every sandbox not listed) are dropped; a pod whose
//!   addresses in the view came from such an entry loses them (a recompile
//!   follows, debounced, like a watch change).
//! - Before the watch has synced, admissions are answered
//!   [`Admitted::NotSynced`]: there is nothing to compile yet.
//! - A pod deleted in the API loses its overlay entry.

use std::collections::{BTreeMap, BTreeSet};

use crate::view::PodFacts;
use crate::wire::{IntoFacts, PodWire};

/// What the CNI side asks of the watch loop.
#[derive(Debug)]
pub enum Admit {
    /// A pod by key with the addresses of its new sandbox.
    Pod {
        /// `namespace/name`.
        key: String,
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// Its addresses.
        ips: Vec<String>,
    },
    /// A pod read from the API server ([`get_pod`]), with the addresses of
    /// its new sandbox.
    Facts {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// The pod (its `ips` are the sandbox's).
        pod: PodFacts,
    },
    /// `DEL`: the sandbox is gone.
    Release {
        /// `CNI_CONTAINERID`.
        container_id: String,
    },
    /// `GC`: only these sandboxes remain.
    Gc {
        /// The container IDs still valid.
        valid: BTreeSet<String>,
    },
}

/// The watch loop's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The callback ran with the pod in the view (and returned).
    Reconciled,
    /// The view has no such pod: read it from the API server.
    NotInView,
    /// The watch has not listed every kind yet.
    NotSynced,
    /// Overlay entries dropped.
    Released(usize),
}

/// An admission and where its answer goes.
#[derive(Debug)]
pub struct Admission {
    /// What is asked.
    pub admit: Admit,
    /// The answer.
    pub reply: tokio::sync::oneshot::Sender<Admitted>,
}

/// The addresses the CNI gave pods, by pod key.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    by_pod: BTreeMap<String, (String, Vec<String>)>,
}

impl Overlay {
    /// A watch update of a pod: the overlay's addresses when it carries none.
    pub(crate) fn patch(&self, mut pod: PodFacts) -> PodFacts {
        if pod.ips.is_empty()
            && let Some((_, ips)) = self.by_pod.get(&format!("{}/{}", pod.namespace, pod.name))
        {
            pod.ips = ips.clone();
        }
        pod
    }

    pub(crate) fn insert(&mut self, key: String, container_id: String, ips: Vec<String>) {
        self.by_pod.insert(key, (container_id, ips));
    }

    pub(crate) fn forget_pod(&mut self, key: &str) {
        self.by_pod.remove(key);
    }

    /// Drops the entries `keep` refuses; each dropped pod key with its addresses.
    pub(crate) fn release(&mut self, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
        let gone: Vec<String> = self.by_pod.iter().filter(|(_, (c, _))| !keep(c)).map(|(k, _)| k.clone()).collect();
        gone.into_iter().filter_map(|k| self.by_pod.remove(&k).map(|(_, ips)| (k, ips))).collect()
    }
}

/// Reads one pod from the API server (`get` on pods: granted by
/// `deploy/base/clusterrole.yaml`).
///
/// # Errors
/// The API server's error (`404` for a pod that does not exist).
pub async fn get_pod(client: &kube::Client, namespace: &str, name: &str) -> Result<PodFacts, kube::Error> {
    let api: kube::Api<PodWire> = kube::Api::namespaced(client.clone(), namespace);
    Ok(api.get(name).await?.into_facts())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ips: &[&str]) -> PodFacts {
        PodFacts {
            namespace: "prod".into(),
            name: name.into(),
            ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            ..PodFacts::default()
        }
    }

    #[test]
    fn the_overlay_fills_only_pods_without_addresses_and_releases_by_sandbox() {
        let mut o = Overlay::default();
        o.insert("prod/a".into(), "c-a".into(), vec!["10.0.0.1".into()]);
        o.insert("prod/b".into(), "c-b".into(), vec!["10.0.0.2".into()]);
        assert_eq!(o.patch(pod("a", &[])).ips, ["10.0.0.1"]);
        assert_eq!(o.patch(pod("a", &["10.0.0.9"])).ips, ["10.0.0.9"], "the API's addresses win once it has them");
        assert!(o.patch(pod("c", &[])).ips.is_empty());
        assert_eq!(o.release(|c| c != "c-a"), [("prod/a".to_owned(), vec!["10.0.0.1".to_owned()])]);
        assert!(o.patch(pod("a", &[])).ips.is_empty());
        o.forget_pod("prod/b");
        assert!(o.release(|_| false).is_empty());
    }
}

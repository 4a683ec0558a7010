//! The mini-cluster served by the in-process API server
//! ([`crate::apiserver`]), for the e2e tests and `egret-bench failover`.
//!
//! [`serve`] binds the API server in the server's namespace on
//! [`API_SERVER`] (HTTPS, a bearer token), loads the snapshot directory's
//! objects into it and writes a kubeconfig; [`Served`] removes the
//! kubeconfig when dropped (drop it after the cluster: the agents talk to
//! the server until they are stopped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::minicluster::{self, API_SERVER, ClusterError, MiniCluster};
use serde_json::Value;

use crate::apiserver::{self, ApiServer, Res};

/// The API server serving a mini-cluster, its runtime and the kubeconfig.
#[derive(Debug)]
pub struct Served {
    /// The server.
    pub server: ApiServer,
    /// The objects it was loaded with (the snapshot's).
    pub objects: Vec<(Res, Value)>,
    /// The kubeconfig every agent reads.
    pub kubeconfig: PathBuf,
    // the server's tasks run on it: dropped last
    _rt: tokio::runtime::Runtime,
}

impl Served {
    /// Applies the objects of a YAML text (one or more documents).
    pub fn apply_yaml(&self, text: &str) {
        for (res, obj) in apiserver::yaml_objects(text) {
            self.server.apply(res, obj);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The snapshot directory's objects, as the API server holds them.
pub fn snapshot_objects(dir: &Path) -> Vec<(Res, Value)> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).flat_map(|t| apiserver::yaml_objects(&t)).collect()
}

/// Starts the API server for `c` (see the module doc); `tag` names the
/// kubeconfig file.
///
/// # Errors
/// The listener cannot be bound or the kubeconfig written.
pub fn serve(c: &MiniCluster, tag: &str) -> Result<Served, ClusterError> {
    let listener = minicluster::in_netns(&c.ns("srv"), || {
        TcpListener::bind(API_SERVER)
            .map_err(|source| ClusterError::Io { what: format!("binding {API_SERVER}"), source })
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| ClusterError::Io { what: "the API server's runtime".into(), source })?;
    let options = apiserver::Options { tls: true, token: Some("mini-cluster-token".into()) };
    let server = rt.block_on(ApiServer::start_with(options, Some(listener)));
    let objects = snapshot_objects(c.snapshot_dir());
    for (res, obj) in &objects {
        server.apply(*res, obj.clone());
    }
    let kubeconfig = std::env::temp_dir().join(format!("egret-{tag}-{}-kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, server.kubeconfig())
        .map_err(|source| ClusterError::Io { what: format!("writing {}", kubeconfig.display()), source })?;
    Ok(Served { server, objects, kubeconfig, _rt: rt })
}

//! `egret-cni install` and `egret-cni uninstall`: what the DaemonSet's init
//! container and its `preStop` hook run on each node.
//!
//! Contract:
//! - **Which configuration**: the one the runtime uses, as libcni picks it:
//!   the first file of the configuration directory, by name, ending in
//!   `.conflist`, `.conf` or `.json`. It must be a configuration *list*
//!   (`plugins`): egret chains after the cluster's CNI and never takes a
//!   network's place. No such file, or a single-plugin one, is refused with
//!   a message saying so, and nothing is written.
//! - **Install**: the binary is copied into the bin directory (written
//!   beside it, then renamed: a runtime never executes half a file); the
//!   plugin entry is appended to the list's `plugins` (an `egret-cni` entry
//!   already there is replaced and moved last: installing twice changes
//!   nothing); the list is rewritten through a temporary file renamed over
//!   it. Other keys and plugins are kept as they are (JSON object keys may
//!   come out in another order; their meaning is unchanged).
//! - **Uninstall**: every `egret-cni` entry is removed from every
//!   configuration list in the directory, and the binary from the bin
//!   directory. Uninstalling what is not installed is no error.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::spec::PLUGIN_TYPE;

/// Why install or uninstall did nothing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The directory has no network configuration to chain into.
    #[error(
        "no CNI network configuration list (*.conflist) in `{}` to chain egret-cni into: is the cluster's CNI installed on this node? (egret-cni runs after it and never replaces it)",
        dir.display()
    )]
    NoConflist {
        /// The configuration directory.
        dir: PathBuf,
    },
    /// The configuration the runtime uses is a single plugin.
    #[error(
        "`{}` (the configuration the runtime uses: the first by name) is a single-plugin configuration, not a list with `plugins`: egret-cni can only be chained into a conflist",
        path.display()
    )]
    NotAList {
        /// The file.
        path: PathBuf,
    },
    /// A file that is not JSON.
    #[error("`{}` is not JSON: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A file operation failed.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_path_buf(), source }
}

/// What `install` puts on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The CNI bin directory (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The CNI configuration directory (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The plugin binary to copy (this executable, by default).
    pub binary: PathBuf,
    /// The plugin entry's keys (`socket`, `selectionFile`, `failOpen`, `timeoutMs`).
    pub entry: Map<String, Value>,
}

/// What install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The configuration list egret-cni was chained into.
    pub conflist: PathBuf,
    /// The binary's path in the bin directory.
    pub binary: PathBuf,
    /// Whether an earlier egret-cni entry was replaced.
    pub replaced: bool,
}

/// What uninstall did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uninstalled {
    /// Configuration lists egret-cni was removed from.
    pub conflists: Vec<PathBuf>,
    /// Whether the binary was removed.
    pub binary: bool,
}

/// The network configuration files of `dir`, as libcni lists them (by name).
fn configurations(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "conflist" || x == "conf" || x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_json(path: &Path) -> Result<Value, InstallError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| InstallError::Json { path: path.to_path_buf(), message: e.to_string() })
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (named so that no runtime takes it for a configuration), renamed over it.
fn write_atomically(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), InstallError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.egret-tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

fn is_egret(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// Installs: see the module doc.
///
/// # Errors
/// No configuration list to chain into, or a file error.
pub fn install(i: &Install) -> Result<Installed, InstallError> {
    let conflist = configurations(&i.conf_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConflist { dir: i.conf_dir.clone() })?;
    let mut list = read_json(&conflist)?;
    let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) else {
        return Err(InstallError::NotAList { path: conflist });
    };
    let before = plugins.len();
    plugins.retain(|p| !is_egret(p));
    let replaced = plugins.len() != before;
    let mut entry = i.entry.clone();
    entry.insert("type".into(), json!(PLUGIN_TYPE));
    plugins.push(Value::Object(entry));
    // the binary first: a conflist naming a plugin the runtime cannot find fails every ADD
    std::fs::create_dir_all(&i.bin_dir).map_err(io(&i.bin_dir))?;
    let binary = i.bin_dir.join(PLUGIN_TYPE);
    let same =
        std::fs::canonicalize(&i.binary).ok().zip(std::fs::canonicalize(&binary).ok()).is_some_and(|(a, b)| a == b);
    if !same {
        let bytes = std::fs::read(&i.binary).map_err(io(&i.binary))?;
        write_atomically(&binary, &bytes, Some(0o755))?;
    }
    let mut text = serde_json::to_string_pretty(&list).map_err(|e| io(&conflist)(std::io::Error::other(e)))?;
    text.push('\n');
    write_atomically(&conflist, text.as_bytes(), None)?;
    Ok(Installed { conflist, binary, replaced })
}

/// Uninstalls: see the module doc.
///
/// # Errors
/// A file error (a configuration that is not JSON is left alone).
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<Uninstalled, InstallError> {
    let mut done = Uninstalled::default();
    for path in configurations(conf_dir)? {
        let Ok(mut list) = read_json(&path) else { continue };
        let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) else { continue };
        let before = plugins.len();
        plugins.retain(|p| !is_egret(p));
        if plugins.len() != before {
            let mut text = serde_json::to_string_pretty(&list).map_err(|e| io(&path)(std::io::Error::other(e)))?;
            text.push('\n');
            write_atomically(&path, text.as_bytes(), None)?;
            done.conflists.push(path);
        }
    }
    let binary = bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&binary) {
        Ok(()) => done.binary = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&binary)(e)),
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory with `bin/`, `net.d/` and a fake plugin binary.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("egret-cni-install-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("net.d")).expect("dirs");
            std::fs::write(d.join("egret-cni-src"), b"#!/bin/sh\n").expect("binary");
            Scratch(d)
        }
        fn install(&self, fail_open: bool) -> Install {
            let mut entry = Map::new();
            entry.insert("failOpen".into(), json!(fail_open));
            Install {
                bin_dir: self.0.join("bin"),
                conf_dir: self.0.join("net.d"),
                binary: self.0.join("egret-cni-src"),
                entry,
            }
        }
        fn conf(&self, name: &str) -> PathBuf {
            self.0.join("net.d").join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CILIUM: &str = r#"{"cniVersion": "0.3.1", "name": "cilium", "plugins": [{"type": "cilium-cni", "enable-debug": false}, {"type": "portmap", "capabilities": {"portMappings": true}}]}"#;

    #[test]
    fn install_appends_to_the_first_conflist_and_copies_the_binary_and_uninstall_undoes_it() {
        let s = Scratch::new("roundtrip");
        std::fs::write(s.conf("05-cilium.conflist"), CILIUM).expect("write");
        std::fs::write(s.conf("99-loopback.conf"), r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#)
            .expect("write");
        let done = install(&s.install(false)).expect("installs");
        assert_eq!(done.conflist, s.conf("05-cilium.conflist"));
        assert!(!done.replaced);
        let list = read_json(&done.conflist).expect("json");
        let types: Vec<&str> =
            list["plugins"].as_array().expect("plugins").iter().filter_map(|p| p["type"].as_str()).collect();
        assert_eq!(types, ["cilium-cni", "portmap", "egret-cni"]);
        assert_eq!(list["plugins"][2]["failOpen"], json!(false));
        assert_eq!(list["plugins"][1]["capabilities"], json!({"portMappings": true}), "other plugins kept");
        assert_eq!(std::fs::read(&done.binary).expect("binary"), b"#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&done.binary).expect("meta").permissions().mode() & 0o777, 0o755);
        // twice: one entry, replaced (the new settings), still last
        let again = install(&s.install(true)).expect("installs again");
        assert!(again.replaced);
        let list = read_json(&done.conflist).expect("json");
        assert_eq!(list["plugins"].as_array().expect("plugins").len(), 3);
        assert_eq!(list["plugins"][2]["failOpen"], json!(true));
        // no temporary file left for a runtime to find
        let names: Vec<String> = std::fs::read_dir(s.0.join("net.d"))
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let un = uninstall(&s.0.join("bin"), &s.0.join("net.d")).expect("uninstalls");
        assert_eq!(un.conflists, [s.conf("05-cilium.conflist")]);
        assert!(un.binary && !done.binary.exists());
        let list = read_json(&done.conflist).expect("json");
        assert_eq!(list, serde_json::from_str::<Value>(CILIUM).expect("json"), "the cluster's conflist as it was");
        assert_eq!(uninstall(&s.0.join("bin"), &s.0.join("net.d")).expect("again"), Uninstalled::default());
    }

    #[test]
    fn install_refuses_without_a_conflist_and_writes_nothing() {
        let s = Scratch::new("none");
        let e = install(&s.install(false)).expect_err("no conflist");
        assert!(matches!(e, InstallError::NoConflist { .. }), "{e}");
        assert!(e.to_string().contains("no CNI network configuration list"), "{e}");
        assert!(!s.0.join("bin").exists(), "no binary copied");
        // the first configuration by name is a single plugin: refused, untouched
        let single = r#"{"cniVersion":"1.0.0","name":"bridge","type":"bridge"}"#;
        std::fs::write(s.conf("10-bridge.conf"), single).expect("write");
        std::fs::write(s.conf("20-other.conflist"), CILIUM).expect("write");
        let e = install(&s.install(false)).expect_err("single plugin");
        assert!(matches!(e, InstallError::NotAList { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(s.conf("10-bridge.conf")).expect("read"), single);
        assert_eq!(std::fs::read_to_string(s.conf("20-other.conflist")).expect("read"), CILIUM);
        std::fs::write(s.conf("00-broken.conflist"), "{").expect("write");
        assert!(matches!(install(&s.install(false)), Err(InstallError::Json { .. })));
    }
}

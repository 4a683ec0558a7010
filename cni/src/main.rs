//! `egret-cni`: run by the container runtime as a CNI plugin (no arguments,
//! `CNI_COMMAND` in the environment, the configuration on stdin:
//! `egret_cni::plugin`), or by the DaemonSet as
//! `egret-cni install|uninstall` (`egret_cni::install`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egret_cni::install::{self, Install};
use egret_cni::spec::Env;

#[derive(Debug, Parser)]
#[command(
    name = "egret-cni",
    about = "egret's chained CNI plugin. Without arguments it is a CNI plugin (CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION, configuration on stdin); these subcommands put it on a node and take it off."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy the plugin into the CNI bin directory and append it to the cluster's conflist.
    Install {
        /// The CNI bin directory.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// The CNI configuration directory (its first conflist by name is the one the runtime uses).
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The binary to install (default: this executable).
        #[arg(long)]
        from: Option<PathBuf>,
        /// The agent's socket, as the plugin sees it on the host.
        #[arg(long, default_value = egret_cni::protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The agent's selection summary, as the plugin sees it on the host.
        #[arg(long, default_value = egret_cni::protocol::DEFAULT_SELECTION_FILE)]
        selection_file: PathBuf,
        /// Admit pods a policy may select even when the agent cannot be reached (default: fail closed).
        #[arg(long)]
        fail_open: bool,
        /// The bound on one exchange with the agent, in milliseconds.
        #[arg(long, default_value_t = egret_cni::protocol::DEFAULT_TIMEOUT.as_millis() as u64)]
        timeout_ms: u64,
    },
    /// Remove the plugin from every conflist and from the CNI bin directory.
    Uninstall {
        /// The CNI bin directory.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// The CNI configuration directory.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        return admin(Cli::parse().command);
    }
    let env = Env::read(|k| std::env::var(k).ok());
    // always read it, VERSION too: a runtime writing its configuration must
    // not meet a closed pipe
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("egret-cni: cannot read stdin: {e}");
    }
    let out = egret_cni::plugin::run(&env, &stdin);
    if let Some(note) = &out.note {
        eprintln!("{note}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(out.status)
}

fn admin(command: Command) -> ExitCode {
    let result = match command {
        Command::Install { bin_dir, conf_dir, from, socket, selection_file, fail_open, timeout_ms } => {
            let binary = match from.map_or_else(std::env::current_exe, Ok) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("egret-cni install: cannot find this executable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut entry = serde_json::Map::new();
            entry.insert("socket".into(), socket.to_string_lossy().into());
            entry.insert("selectionFile".into(), selection_file.to_string_lossy().into());
            entry.insert("failOpen".into(), fail_open.into());
            entry.insert("timeoutMs".into(), timeout_ms.into());
            install::install(&Install { bin_dir, conf_dir, binary, entry }).map(|i| {
                let how = if i.replaced { "replaced in" } else { "appended to" };
                println!(
                    "egret-cni: {} installed; {how} the plugin chain of {}",
                    i.binary.display(),
                    i.conflist.display()
                );
            })
        }
        Command::Uninstall { bin_dir, conf_dir } => install::uninstall(&bin_dir, &conf_dir).map(|u| {
            for c in &u.conflists {
                println!("egret-cni: removed from {}", c.display());
            }
            println!("egret-cni: binary {}", if u.binary { "removed" } else { "was not installed" });
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egret-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `egret-demo [--agent PATH]`: the article's "Step 5" on one machine — the
//! dual-stack mini-cluster ([`egret_testkit::minicluster::demo`]: IPv4 rows,
//! then IPv6 rows, a pod on the gateway node among them) with `egret-agent` as
//! every node's agent (by default the `egret-agent` beside this program, as
//! `cargo build --release -p egret-runtime -p egret-testkit` leaves them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Builds the dual-stack mini-cluster in network namespaces (root), runs one
/// `egret-agent` per node, shows what the external server sees from each
/// pod over IPv4 and over IPv6, then removes everything.
#[derive(Debug, Parser)]
#[command(name = "egret-demo", version)]
struct Args {
    /// The `egret-agent` binary (default: the one beside this program).
    #[arg(long)]
    agent: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let agent = match args.agent {
        Some(a) => a,
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name("egret-agent"),
            Err(e) => {
                eprintln!("cannot find this program's path: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !agent.is_file() {
        eprintln!("no agent at {} (cargo build --release -p egret-runtime, or pass --agent PATH)", agent.display());
        return ExitCode::FAILURE;
    }
    if let Some(missing) = egret_testkit::minicluster::missing_tools() {
        eprintln!("egret-demo needs root, bpffs and: {missing}");
        return ExitCode::FAILURE;
    }
    match egret_testkit::minicluster::demo(&agent, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Command-line parsing and the subcommands. Only this edge renders
//! diagnostics and chooses exit codes.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use egret_lang::diag::{self, Diagnostic, Format};
use egret_lang::load::{self, Loaded};
use egret_lang::net::Cidr;
use egret_lang::source::SourceMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// `print!` to stdout; a closed pipe (`egret … | head`) ends the program
/// quietly with success instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*)) };
}

/// `println!` with [`out!`]'s closed-pipe handling.
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// Writes to stdout; exits 0 when the reader has gone away (broken pipe),
/// as `head` and `grep -q` expect of a Unix tool.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

mod compile;
mod convert;
pub mod exit;
mod lint;

#[derive(Debug, Parser)]
#[command(name = "egret", version, about = "Compile Kubernetes egress-gateway policies into verified eBPF", long_about = None, after_help = exit::HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    Human,
    Json,
    /// GitHub Actions annotations.
    Github,
    /// SARIF 2.1.0 (code scanning).
    Sarif,
    /// JUnit XML.
    Junit,
    /// GitLab code-quality JSON.
    Gitlab,
}

impl From<OutFormat> for Format {
    fn from(f: OutFormat) -> Format {
        match f {
            OutFormat::Human => Format::Human,
            OutFormat::Json => Format::Json,
            OutFormat::Github => Format::Github,
            OutFormat::Sarif => Format::Sarif,
            OutFormat::Junit => Format::Junit,
            OutFormat::Gitlab => Format::Gitlab,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Deny {
    Warnings,
}

/// Inputs shared by the commands that read policies and a snapshot.
#[derive(Debug, clap::Args)]
pub struct Inputs {
    /// Cluster snapshot: files or directories of Node, Namespace, Pod, NodeNetwork and workload YAML.
    #[arg(long = "cluster", value_name = "SNAPSHOT")]
    pub cluster: Vec<PathBuf>,
    /// Service CIDR of the cluster (cluster-internal, never sent to a gateway). Repeatable.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    pub service_cidrs: Vec<Cidr>,
    /// Policy files or directories (`*.yaml`, `*.yml`, `*.egret`, read recursively); `-` reads YAML from standard input.
    #[arg(value_name = "POLICY", required = true)]
    pub policies: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policies (and, with --cluster, the policies against a cluster snapshot).
    Lint {
        #[command(flatten)]
        inputs: Inputs,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: OutFormat,
        /// Make warnings fail the run (exit 1).
        #[arg(long, value_enum)]
        deny: Option<Deny>,
        /// Also report documents of kinds egret does not read, and every suppressed diagnostic.
        #[arg(short, long)]
        verbose: bool,
        /// Suppress a diagnostic code (`W0203` or `tie`) everywhere. Repeatable.
        #[arg(long, value_name = "CODE")]
        ignore: Vec<String>,
        /// Suppressions file (default: `.egret.yaml` in the working directory, if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print `.egret` files in canonical form.
    Fmt {
        /// Files, or directories (their `*.egret` files, recursively), to format.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Exit 1 if a file is not in canonical form; print nothing else.
        #[arg(long)]
        check: bool,
        /// Rewrite the files in place.
        #[arg(long, conflicts_with = "check")]
        write: bool,
    },
    /// Convert CiliumEgressGatewayPolicy YAML to `.egret` or back.
    Convert {
        /// Input files or directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Target syntax (default: the other one of each input's).
        #[arg(long, value_enum)]
        to: Option<convert::Syntax>,
    },
    /// Compile policies and a snapshot into per-node plans (and views of them);
    /// with -o, into verified eBPF artifacts.
    Compile {
        #[command(flatten)]
        inputs: Inputs,
        /// The node to compile for.
        #[arg(long, conflicts_with = "all_nodes")]
        node: Option<String>,
        /// Compile for every node of the snapshot.
        #[arg(long)]
        all_nodes: bool,
        /// What to print (default: plan). With -o, also written to DIR as NODE.<view>.
        #[arg(long, value_enum)]
        emit: Option<compile::Emit>,
        /// Output format (json: with --emit cilium).
        #[arg(long, value_enum, default_value = "human")]
        format: compile::DataFormat,
        /// With --emit cilium: the Cilium release to mirror (1.17: the IPv4
        /// map only; 1.20: the IPv4 and IPv6 maps).
        #[arg(long, value_enum, value_name = "VERSION", default_value = "1.20")]
        cilium_version: compile::CiliumVersion,
        /// Classifier layout (auto: by the measured threshold on the plan's size).
        #[arg(long, value_enum, default_value = "auto")]
        layout: compile::LayoutChoice,
        /// With -o: compare at most N packets per node with the reference
        /// evaluator (default: all; every packet is compared with the plan).
        #[arg(long, value_name = "N")]
        reference_limit: Option<usize>,
        /// MTU of the network between nodes: redirected TCP SYNs get their MSS
        /// clamped to MTU - 50 (the tunnel) - 40 (IPv4 + TCP) or - 60 (IPv6 + TCP).
        #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(111..))]
        underlay_mtu: u16,
        /// Write each node's verified artifact into DIR: NODE.o, NODE.artifact.json, NODE.plan.txt.
        #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Re-check every artifact in DIR whole: each node's NODE.o,
    /// NODE.artifact.json and NODE.plan.txt must all be there and name the
    /// node; every program, map image, hole, attach point and tail call must
    /// equal what egret generates for the plan (the NODE.plan.txt beside it,
    /// or with --cluster and policies a fresh plan, which NODE.plan.txt must
    /// equal); then the static verifier and the equivalence checker.
    Verify {
        /// A directory written by `egret compile -o`.
        dir: PathBuf,
        /// Cluster snapshot to compile a fresh plan from (with POLICY).
        #[arg(long = "cluster", value_name = "SNAPSHOT")]
        cluster: Vec<PathBuf>,
        /// Service CIDR of the cluster, as given to `egret compile`. Repeatable.
        #[arg(long = "service-cidr", value_name = "CIDR")]
        service_cidrs: Vec<Cidr>,
        /// Policy files or directories (with --cluster).
        #[arg(value_name = "POLICY")]
        policies: Vec<PathBuf>,
        /// Compare at most N packets per node with the reference evaluator (default: all).
        #[arg(long, value_name = "N")]
        reference_limit: Option<usize>,
        /// The underlay MTU the artifacts were compiled for (`egret compile
        /// --underlay-mtu`); default: any one MTU, as the MSS holes record it.
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(111..))]
        underlay_mtu: Option<u16>,
    },
    /// Disassemble an object with map names, holes, labels and, when
    /// NODE.artifact.json and NODE.plan.txt sit beside it, plan annotations.
    Inspect {
        /// NODE.o
        object: PathBuf,
    },
    /// Explain the decision for one flow: which policy, gateway and egress IP, and why.
    Explain {
        #[command(flatten)]
        inputs: Inputs,
        /// The source: NAMESPACE/POD or an IP address.
        #[arg(long)]
        from: String,
        /// The destination: IP or IP:PORT ([IPv6]:PORT).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value = "human")]
        format: compile::DataFormat,
    },
    /// The change in effective behaviour between two policy sets (exit 1 when behaviour changes).
    Diff {
        /// Cluster snapshot used for both sides.
        #[arg(long = "cluster", value_name = "SNAPSHOT")]
        cluster: Vec<PathBuf>,
        #[arg(long = "service-cidr", value_name = "CIDR")]
        service_cidrs: Vec<Cidr>,
        /// The old policies: a file, a directory, or git:REV:PATH.
        old: String,
        /// The new policies: a file, a directory, or git:REV:PATH.
        new: String,
        #[arg(long, value_enum, default_value = "human")]
        format: compile::DiffFormat,
    },
    /// Explain a diagnostic code (`egret rule E0102`), or list them all.
    Rule {
        /// A code (`E0102`) or name (`unknown-field`); omit to list every code.
        code: Option<String>,
    },
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Lint { inputs, format, deny, verbose, ignore, config } => lint::run(
            &inputs,
            &lint::LintOptions {
                format: format.into(),
                deny_warnings: deny.is_some(),
                verbose,
                ignore: &ignore,
                config: config.as_deref(),
            },
        ),
        Command::Fmt { files, check, write } => convert::fmt(&files, check, write),
        Command::Convert { inputs, to } => convert::convert(&inputs, to),
        Command::Rule { code } => rule(code.as_deref()),
        Command::Compile {
            inputs,
            node,
            all_nodes,
            emit,
            format,
            cilium_version,
            layout,
            reference_limit,
            underlay_mtu,
            out_dir,
        } => {
            let mss_clamp = egret_compiler::codegen::mss::MssClamp::for_underlay_mtu(underlay_mtu)
                .unwrap_or(egret_compiler::codegen::mss::MssClamp::DEFAULT);
            compile::compile(
                &inputs,
                node.as_deref(),
                all_nodes,
                compile::Output {
                    emit,
                    format,
                    cilium_version,
                    layout,
                    reference_limit,
                    mss_clamp,
                    out_dir: out_dir.as_deref(),
                },
            )
        }
        Command::Verify { dir, cluster, service_cidrs, policies, reference_limit, underlay_mtu } => {
            compile::verify(&dir, &cluster, &service_cidrs, &policies, reference_limit, underlay_mtu)
        }
        Command::Inspect { object } => compile::inspect(&object),
        Command::Explain { inputs, from, to, format } => compile::explain(&inputs, &from, &to, format),
        Command::Diff { cluster, service_cidrs, old, new, format } => {
            compile::diff(&cluster, &service_cidrs, &old, &new, format)
        }
    }
}

fn rule(code: Option<&str>) -> Result<ExitCode> {
    match code {
        None => {
            for c in egret_lang::codes::ALL {
                outln!("{}  {:<40} {}", c.id, c.name, c.summary);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(k) => match egret_lang::codes::lookup(k) {
            Some(c) => {
                outln!("{} {} ({})\n\n{}\n\n{}", c.id, c.name, c.severity.as_str(), c.summary, c.doc);
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(exit::usage(format_args!("no diagnostic code `{k}`; `egret rule` lists them"))),
        },
    }
}

/// Reads policies and snapshot into one bundle.
pub struct Read {
    pub sources: SourceMap,
    pub loaded: Loaded,
    /// A snapshot was given and every path of it could be read.
    pub has_snapshot: bool,
    /// Policy files read (0: the POLICY paths held no input file).
    pub policy_files: usize,
    /// Some path could not be read (E0001).
    pub unreadable: bool,
}

pub fn read(inputs: &Inputs) -> Read {
    let mut sources = SourceMap::new();
    let mut loaded = load::load(&mut sources, &inputs.policies);
    let policy_files = loaded.files.len();
    let mut has_snapshot = !inputs.cluster.is_empty();
    if has_snapshot {
        let snapshot = load::load(&mut sources, &inputs.cluster);
        // an unreadable snapshot is one diagnostic, not one per check that lacks its objects
        has_snapshot = !snapshot.diagnostics.iter().any(is_unreadable);
        loaded.extend(snapshot);
    }
    let unreadable = loaded.diagnostics.iter().any(is_unreadable);
    Read { sources, loaded, has_snapshot, policy_files, unreadable }
}

/// A path that could not be read: E0001 (I/O), E0007 (over the size limit)
/// or E0008 (named, but not a regular file or directory).
pub fn is_unreadable(d: &Diagnostic) -> bool {
    use egret_lang::codes::{INPUT_TOO_LARGE, IO, NOT_A_REGULAR_FILE};
    [&IO, &INPUT_TOO_LARGE, &NOT_A_REGULAR_FILE].iter().any(|c| std::ptr::eq(d.code, *c))
}

/// Prints diagnostics to stdout in `format`.
pub fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, format: Format) {
    out!("{}", diag::render::render(diags, sources, format));
}

/// Prints diagnostics for people on stderr: for commands whose stdout is data
/// (a plan, a diff, JSON), so a failure never mixes text into it.
pub fn eprint_diagnostics(diags: &[Diagnostic], sources: &SourceMap) {
    eprint!("{}", diag::render::render(diags, sources, Format::Human));
}

pub fn read_file(p: &PathBuf) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read `{}`", p.display()))
}

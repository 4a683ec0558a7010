//! `egret-bench`: one entry point for egret's benchmarks (see docs/PERFORMANCE.md).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "egret-bench", about = "egret's benchmarks, side by side with their anchors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Cilium-equivalent classifier (assembly, as verified) used as the anchor.
    CiliumProgram,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CiliumProgram => match egret_bench::cilium_dp::program() {
            Ok((p, maps)) => match egret_bpf::verifier::verify(&p, &maps) {
                Ok(_) => {
                    print!("{}", egret_bpf::disasm::to_asm(&p, egret_bpf::disasm::Dialect::Llvm14));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: the anchor program does not verify: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

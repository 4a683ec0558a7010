//! The `egret` command: lint, format, convert, compile, explain and diff
//! egress policies in CI. Exit codes: 0 success (or only warnings), 1 problems
//! found (errors, or a behaviour change for `diff`), 2 usage error.

use clap::Parser;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

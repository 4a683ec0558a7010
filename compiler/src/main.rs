//! The `egret` command: lint, format, convert, compile, explain and diff
//! egress policies in CI. Exit codes: `cli::exit` (0 ok, 1 findings or
//! behaviour change, 2 usage error, 3 invalid or unreadable input).

use clap::Parser;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", egret_lang::diag::error_chain(e.as_ref()));
            cli::exit::Exit::Input.into()
        }
    }
}

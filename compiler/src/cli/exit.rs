//! The exit-code contract of every `egret` subcommand, defined once.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: no problems (warnings allowed), no change in behaviour, artifacts verified |
//! | 1 | the command ran and found something: policy problems (lint errors, or warnings with `--deny warnings`), a behaviour change (`diff`), an artifact that fails verification (`verify`), a file not in canonical form (`fmt --check`) |
//! | 2 | usage error: unknown flag, missing or conflicting arguments (clap's own code for usage errors) |
//! | 3 | invalid or unreadable input: a path that cannot be read, no input files, or inputs with errors that keep the command from doing its job (`compile`, `explain`, `diff`, `convert`, `fmt`) |
//!
//! `egret --help` prints [`HELP`]; README's "Exit codes" repeats the table.

use std::process::ExitCode;

/// The exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success: clean, no change, verified.
    Ok = 0,
    /// Problems found, or behaviour changed.
    Findings = 1,
    /// Usage error.
    Usage = 2,
    /// Invalid or unreadable input.
    Input = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// The exit-code table as `egret --help` prints it.
pub const HELP: &str = "Exit codes (every subcommand):
  0  success: no problems (warnings allowed), no behaviour change, artifacts verified
  1  findings: policy errors (or warnings with --deny warnings), behaviour changed (diff),
     verification failed (verify), not in canonical form (fmt --check)
  2  usage error: unknown flag, missing or conflicting arguments
  3  invalid or unreadable input: unreadable path, no input files, or inputs with errors
     that keep the command from running (compile, explain, diff, convert, fmt)";

/// A usage error detected after argument parsing: printed, exit 2.
pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    Exit::Usage.into()
}

/// An input error detected outside the diagnostics (e.g. no input files): printed, exit 3.
pub fn input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    Exit::Input.into()
}

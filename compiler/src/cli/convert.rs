//! `egret fmt` and `egret convert`.

use super::exit::{self, Exit};
use super::read_file;
use anyhow::Result;
use clap::ValueEnum;
use egret_lang::diag::{self, Format};
use egret_lang::load;
use egret_lang::source::SourceMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Syntax {
    Egret,
    Yaml,
}

/// `egret fmt`: files, or directories (their `*.egret` files, recursively).
pub fn fmt(paths: &[PathBuf], check: bool, write: bool) -> Result<ExitCode> {
    let files: Vec<PathBuf> = match load::expand(paths) {
        Ok(f) => f.into_iter().filter(|f| paths.contains(f) || f.extension().is_some_and(|e| e == "egret")).collect(),
        Err((p, e)) => return Ok(exit::input(format_args!("cannot read `{}`: {e}", p.display()))),
    };
    if files.is_empty() {
        return Ok(exit::input("no `.egret` files in the given paths"));
    }
    let mut invalid = false;
    let mut unformatted = false;
    for f in &files {
        let text = read_file(f)?;
        let mut sources = SourceMap::new();
        let id = sources.add(f.display().to_string(), text.clone());
        let out = match egret_lang::egret::format(id, &text) {
            Ok(out) => out,
            Err(diags) => {
                eprint!("{}", diag::render::render(&diags, &sources, Format::Human));
                invalid = true;
                continue;
            }
        };
        if check {
            if out != text {
                outln!("{} is not in canonical form", f.display());
                unformatted = true;
            }
        } else if write {
            if out != text {
                std::fs::write(f, &out)?;
            }
        } else {
            out!("{out}");
        }
    }
    Ok(if invalid {
        Exit::Input
    } else if unformatted {
        Exit::Findings
    } else {
        Exit::Ok
    }
    .into())
}

pub fn convert(inputs: &[PathBuf], to: Option<Syntax>) -> Result<ExitCode> {
    let files = match load::expand(inputs) {
        Ok(f) => f,
        Err((p, e)) => return Ok(exit::input(format_args!("cannot read `{}`: {e}", p.display()))),
    };
    let mut sources = SourceMap::new();
    let mut out_egret = Vec::new();
    let mut out_yaml = Vec::new();
    let mut diags = Vec::new();
    for f in &files {
        let text = read_file(f)?;
        let name = f.display().to_string();
        let from_egret = name.ends_with(".egret");
        let loaded = load::parse_text(&mut sources, &name, text);
        diags.extend(loaded.diagnostics.into_iter().filter(|d| d.is_error()));
        // what lint would refuse in a single file (label syntax, CIDR host bits,
        // names) is not converted: the output must read back without errors
        diags.extend(egret_lang::validate::bundle(&loaded.bundle).into_iter().filter(|d| d.is_error()));
        let target = to.unwrap_or(if from_egret { Syntax::Yaml } else { Syntax::Egret });
        match target {
            Syntax::Egret => out_egret.extend(loaded.bundle.policies),
            Syntax::Yaml => out_yaml.extend(loaded.bundle.policies),
        }
    }
    if !diags.is_empty() {
        eprint!("{}", diag::render::render(&diags, &sources, Format::Human));
        return Ok(Exit::Input.into());
    }
    if !out_egret.is_empty() {
        match egret_lang::egret::try_print(&out_egret) {
            Ok(text) => out!("{text}"),
            Err(why) => {
                eprintln!("error: cannot write this policy set as .egret: {why}");
                eprintln!("help: `egret lint` reports the problem with a span; fix it first");
                return Ok(Exit::Input.into());
            }
        }
    }
    if !out_yaml.is_empty() {
        out!("{}", egret_lang::emit::policies_to_yaml(&out_yaml));
    }
    Ok(ExitCode::SUCCESS)
}

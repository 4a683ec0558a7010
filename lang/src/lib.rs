//! egret's front end.
//!
//! Owns reading policies and cluster snapshots — Kubernetes YAML
//! ([`yaml`], [`k8s`]) and egret's own `.egret` language ([`egret`]) — into
//! one AST ([`ast`]) whose nodes carry file and byte spans ([`source`]), field
//! validation shared by both syntaxes ([`validate`]), and diagnostics as data
//! ([`diag`], [`codes`]). It has no knowledge of clusters' meaning: selection,
//! gateways and decisions live in `egret-compiler`.

pub mod ast;
pub mod codes;
pub mod diag;
pub mod egret;
pub mod emit;
pub mod k8s;
pub mod load;
pub mod net;
pub mod source;
pub mod suppress;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use source::{FileId, SourceMap, Span, Spanned};

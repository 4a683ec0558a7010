//! The integration tests of `egret-lang`, one test binary (one link step)
//! for the whole crate; each module was a test binary of its own.

mod egret_errors;
mod egret_fmt;
mod egret_fuzz;
mod egret_parse;
mod egret_roundtrip;
mod egret_yaml;
mod floating;

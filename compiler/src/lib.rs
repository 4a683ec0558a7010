//! egret's compiler: from policies and a cluster snapshot to verified per-node
//! datapaths, plus the CI tooling around them (lint, diff, explain).
//!
//! Stages, each a module with typed input and output:
//! `lint` (checks), … (more stages land with the compiler core).

pub mod lint;

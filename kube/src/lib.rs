//! egret-kube
pub mod crd;

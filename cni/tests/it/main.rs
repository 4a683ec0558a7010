//! `egret-cni` as a runtime executes it: the binary, `CNI_*` in its
//! environment, the configuration on stdin; a stand-in agent on a Unix
//! socket in a scratch directory records every request it gets (so a test
//! can say nothing was asked of it).

mod plugin;

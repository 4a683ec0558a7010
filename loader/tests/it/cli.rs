//! `egret-loader`'s command line: its version and help (unprivileged).

use std::process::Command;

#[test]
fn version_and_help() {
    let bin = env!("CARGO_BIN_EXE_egret-loader");
    let v = Command::new(bin).arg("--version").output().expect("run egret-loader");
    assert!(v.status.success());
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("egret-loader {}", env!("CARGO_PKG_VERSION")));
    for sub in ["status", "maps", "adopt", "apply", "uninstall", "demo"] {
        let h = Command::new(bin).args([sub, "--help"]).output().expect("run egret-loader");
        assert!(h.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&h.stdout).contains("Usage: egret-loader"), "{sub} --help");
    }
    let typo = Command::new(bin).arg("uninstal").output().expect("run egret-loader");
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("'uninstall'"), "a suggestion");
}

//! The tunnel device (privileged, in a private network namespace): `egret0`
//! is created as a collect-metadata VXLAN on the configured port, up, with
//! loose rp_filter and IPv6 disabled; it is adopted (same ifindex) on the
//! next call and brought back up if someone downed it; egret's device with
//! another port is replaced; a device of egret's name that egret did not
//! create is neither changed nor deleted.

use egret_testkit::netns as common;

use common::*;
use egret_loader::LoaderError;
use egret_loader::tunnel::{self, DEFAULT_DSTPORT, TunnelConfig, TunnelState};

fn sysctl(ns: &str, path: &str) -> String {
    run("ip", &["netns", "exec", ns, "cat", path]).trim().to_owned()
}

#[test]
fn egret0_is_created_adopted_replaced_and_foreign_devices_are_left_alone() {
    if !privileged("egret0_is_created_adopted_replaced_and_foreign_devices_are_left_alone") {
        return;
    }
    let ns = Netns::new("tun");
    let entered = ns.enter();
    let config = TunnelConfig::default();

    let created = tunnel::ensure(&config).expect("create");
    let TunnelState::Created { ifindex } = created else { panic!("not created: {created:?}") };
    let details = ip_in(&ns.name, &["-d", "link", "show", "egret0"]);
    assert!(details.contains("vxlan external"), "{details}");
    assert!(details.contains(&format!("dstport {DEFAULT_DSTPORT}")), "{details}");
    assert!(details.contains("state UNKNOWN") || details.contains(",UP"), "up: {details}");
    assert!(details.contains(tunnel::OWNER_ALIAS), "alias: {details}");
    assert_eq!(sysctl(&ns.name, "/proc/sys/net/ipv4/conf/egret0/rp_filter"), "2");
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        assert_eq!(sysctl(&ns.name, "/proc/sys/net/ipv6/conf/egret0/disable_ipv6"), "1");
    }

    // adopted as it is; brought back up after someone downed it
    ip_in(&ns.name, &["link", "set", "egret0", "down"]);
    assert_eq!(tunnel::ensure(&config).expect("adopt"), TunnelState::Adopted { ifindex });
    assert!(tunnel::get("egret0").expect("get").expect("exists").flags & 1 == 1, "up again");

    // egret's own device with another port is replaced
    let moved = TunnelConfig { dstport: DEFAULT_DSTPORT + 1, ..config.clone() };
    let replaced = tunnel::ensure(&moved).expect("replace");
    assert!(matches!(replaced, TunnelState::Replaced { .. }), "{replaced:?}");
    let link = tunnel::get("egret0").expect("get").expect("exists");
    assert_eq!(link.vxlan_port, Some(DEFAULT_DSTPORT + 1));

    // a device egret did not create
    ip_in(&ns.name, &["link", "add", "egretx", "type", "veth", "peer", "name", "egrety"]);
    let foreign = TunnelConfig { name: "egretx".into(), ..config.clone() };
    assert!(matches!(tunnel::ensure(&foreign), Err(LoaderError::TunnelForeign { device, .. }) if device == "egretx"));
    assert!(!tunnel::remove("egretx").expect("remove foreign"), "not deleted");
    let still = tunnel::get("egretx").expect("get").expect("still there");
    assert_eq!(still.kind.as_deref(), Some("veth"));

    assert!(tunnel::remove("egret0").expect("remove"));
    assert!(tunnel::get("egret0").expect("get").is_none(), "deleted");
    assert!(!tunnel::remove("egret0").expect("remove again"), "nothing left to delete");

    drop(entered);
    let name = ns.name.clone();
    drop(ns);
    assert!(!netns_exists(&name), "namespace left");
}

/// As in the agent's container (`privileged: false`): `/proc/sys` is
/// read-only, yet `egret0` gets its loose rp_filter (over netlink).
#[test]
#[expect(unsafe_code, reason = "unshare(2) of this test's own thread")]
fn egret0_gets_loose_rp_filter_with_proc_sys_read_only() {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount_bind, mount_change, mount_remount};
    if !privileged("egret0_gets_loose_rp_filter_with_proc_sys_read_only") {
        return;
    }
    let ns = Netns::new("tro");
    let name = ns.name.clone();
    let (write, state, rp_filter) = std::thread::spawn(move || {
        // a mount namespace of this thread only (private: nothing propagates
        // to the host), with /proc/sys bound read-only in it
        // SAFETY: NEWNS (with the FS it implies) unshares no file descriptors
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.expect("unshare");
        mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE).expect("private");
        mount_bind("/proc/sys", "/proc/sys").expect("bind /proc/sys");
        mount_remount("/proc/sys", MountFlags::BIND | MountFlags::RDONLY, "").expect("read-only");
        let _entered = Entered::new(&name);
        // (in the test's namespace: a failed write touches nothing outside it)
        let write = std::fs::write("/proc/sys/net/ipv4/conf/lo/rp_filter", "0");
        let state = tunnel::ensure(&TunnelConfig::default());
        let rp = std::fs::read_to_string("/proc/sys/net/ipv4/conf/egret0/rp_filter");
        (write, state, rp)
    })
    .join()
    .expect("the thread");
    assert!(write.is_err(), "/proc/sys is read-only in that thread");
    assert!(matches!(state, Ok(TunnelState::Created { .. })), "{state:?}");
    assert_eq!(rp_filter.expect("read rp_filter").trim(), "2");
    let details = ip_in(&ns.name, &["-d", "link", "show", "egret0"]);
    assert!(details.contains("vxlan external"), "{details}");
}

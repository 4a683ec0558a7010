//! rtnetlink (privileged, in private network namespaces): the netlink
//! module creates, finds and deletes links, adds, lists and removes
//! addresses, lists the routes of every table (one in a table other than
//! main), looks routes up and is notified of changes; and the tunnel device
//! built on it: `egret0`
//! is created as a collect-metadata VXLAN on the configured port, up, with
//! loose rp_filter and IPv6 disabled; it is adopted (same ifindex) on the
//! next call and brought back up if someone downed it; egret's device with
//! another port is replaced; a device of egret's name that egret did not
//! create is neither changed nor deleted.

use egret_testkit::netns as common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egret_loader::LoaderError;
use egret_loader::netlink::{LinkRef, Netlink, PrefixRoute, RouteType, Subscription};
use egret_loader::tunnel::{self, DEFAULT_DSTPORT, TunnelConfig, TunnelState};

fn sysctl(ns: &str, path: &str) -> String {
    run("ip", &["netns", "exec", ns, "cat", path]).trim().to_owned()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn netlink_manages_links_addresses_and_sees_routes_of_every_table() {
    if !privileged("netlink_manages_links_addresses_and_sees_routes_of_every_table") {
        return;
    }
    let ns = Netns::new("nl");
    let entered = ns.enter();
    let mut nl = Netlink::open().expect("rtnetlink socket");
    let changes = Subscription::open(libc::RTMGRP_IPV4_IFADDR as u32).expect("subscription");
    assert_eq!(changes.drain().expect("drain"), 0, "nothing changed yet");

    // links
    let links = nl.links().expect("links");
    assert!(links.iter().any(|l| l.name == "lo" && l.is_loopback()), "{links:?}");
    nl.create_vxlan("nlvx0", 4800).expect("create vxlan");
    let vx = nl.link(LinkRef::Name("nlvx0")).expect("lookup").expect("created");
    assert_eq!((vx.kind.as_deref(), vx.vxlan_port, vx.collect_metadata), (Some("vxlan"), Some(4800), Some(true)));
    assert!(vx.is_up(), "created up: {vx:?}");
    let details = ip_in(&ns.name, &["-d", "link", "show", "nlvx0"]);
    assert!(details.contains("vxlan external") && details.contains("dstport 4800"), "{details}");
    assert_eq!(nl.create_vxlan("nlvx0", 4800).expect_err("taken").raw_os_error(), Some(libc::EEXIST));
    nl.set_alias(vx.ifindex, "egret:test").expect("alias");
    let by_index = nl.link(LinkRef::Index(vx.ifindex)).expect("lookup").expect("by index");
    assert_eq!((by_index.name.as_str(), by_index.alias.as_deref()), ("nlvx0", Some("egret:test")));
    for missing in [
        LinkRef::Name("nosuch0"),
        LinkRef::Name(""),
        LinkRef::Name("a-name-too-long-for-linux"),
        LinkRef::Index(999_999),
    ] {
        assert_eq!(nl.link(missing).expect("lookup"), None, "{missing:?}");
    }
    nl.delete_link(vx.ifindex).expect("delete");
    assert_eq!(nl.link(LinkRef::Name("nlvx0")).expect("lookup"), None, "deleted");

    // addresses (veth pairs: this kernel has no dummy links)
    ip_in(&ns.name, &["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    let d0 = nl.link(LinkRef::Name("d0")).expect("lookup").expect("d0");
    let peer = nl.link(LinkRef::Name("d0p")).expect("lookup").expect("d0p");
    nl.set_up(peer.ifindex).expect("d0p up");
    nl.set_up(d0.ifindex).expect("up");
    assert!(nl.link(LinkRef::Index(d0.ifindex)).expect("lookup").expect("d0").is_up());
    assert!(nl.add_address(d0.ifindex, v4(192, 0, 2, 10), 24, PrefixRoute::Add).expect("add"));
    assert!(!nl.add_address(d0.ifindex, v4(192, 0, 2, 10), 24, PrefixRoute::Add).expect("again"), "already there");
    let floating = v4(198, 51, 100, 7);
    assert!(nl.add_address(d0.ifindex, floating, 32, PrefixRoute::Omit).expect("add /32"));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));
    assert!(nl.add_address(d0.ifindex, v6, 64, PrefixRoute::Add).expect("add v6"));
    let on_d0: Vec<(IpAddr, u8)> = nl
        .addresses()
        .expect("addresses")
        .into_iter()
        .filter(|a| a.ifindex == d0.ifindex)
        .map(|a| (a.ip, a.prefix_len))
        .collect();
    assert_eq!(on_d0[..2], [(v4(192, 0, 2, 10), 24), (floating, 32)], "IPv4 first, in order: {on_d0:?}");
    assert!(on_d0.contains(&(v6, 64)), "{on_d0:?}");
    let shown = ip_in(&ns.name, &["-4", "-o", "addr", "show", "dev", "d0"]);
    assert!(shown.contains("inet 198.51.100.7/32") && shown.contains("noprefixroute"), "{shown}");
    assert!(changes.drain().expect("drain") > 0, "notified of the new addresses");

    // routes: the main table, the local table, and one of the test's own
    ip_in(&ns.name, &["route", "add", "203.0.113.0/24", "via", "192.0.2.1", "dev", "d0", "table", "1000"]);
    ip_in(&ns.name, &["route", "add", "default", "via", "192.0.2.1", "dev", "d0", "table", "1000", "metric", "7"]);
    let routes = nl.routes().expect("routes");
    let find = |table: u32, dst: IpAddr, len: u8| {
        routes.iter().find(|r| r.table == table && r.destination == dst && r.prefix_len == len)
    };
    let prefix = find(254, v4(192, 0, 2, 0), 24).expect("the prefix route in main");
    assert_eq!((prefix.kind, prefix.oif, prefix.gateway), (RouteType::Unicast, Some(d0.ifindex), None));
    assert!(find(254, floating, 32).is_none(), "no prefix route for the /32");
    assert_eq!(find(255, floating, 32).expect("local route").kind, RouteType::Local);
    let other = find(1000, v4(203, 0, 113, 0), 24).expect("the route in table 1000");
    assert_eq!((other.oif, other.gateway), (Some(d0.ifindex), Some(v4(192, 0, 2, 1))));
    let default = find(1000, v4(0, 0, 0, 0), 0).expect("table 1000's default");
    assert_eq!(default.metric, 7);
    assert!(find(254, v4(0, 0, 0, 0), 0).is_none(), "main has no default");
    let v6_prefix = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
    let v6_route = find(254, v6_prefix, 64).expect("IPv6 routes too");
    assert_eq!((v6_route.oif, v6_route.metric), (Some(d0.ifindex), 256));

    // lookups follow the rules (main, not table 1000)
    let direct = nl.route_get(v4(192, 0, 2, 20)).expect("route get");
    assert_eq!(
        (direct.kind, direct.oif, direct.gateway, direct.table),
        (RouteType::Unicast, Some(d0.ifindex), None, 254)
    );
    assert_eq!(nl.route_get(v4(203, 0, 113, 5)).expect_err("unreachable").raw_os_error(), Some(libc::ENETUNREACH));

    // removing
    assert!(nl.remove_address(d0.ifindex, floating, 32).expect("remove"));
    assert!(!nl.remove_address(d0.ifindex, floating, 32).expect("remove again"), "already gone");
    assert!(!ip_in(&ns.name, &["-4", "addr", "show", "dev", "d0"]).contains("198.51.100.7"));
    nl.set_rp_filter(d0.ifindex, 1).expect("rp_filter");
    assert_eq!(sysctl(&ns.name, "/proc/sys/net/ipv4/conf/d0/rp_filter"), "1");

    drop((nl, changes, entered));
    let name = ns.name.clone();
    drop(ns);
    assert!(!netns_exists(&name), "namespace left");
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

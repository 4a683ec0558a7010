//! The node's facts in a network namespace of the test's own (privileged):
//! netlink reports address and route changes, and `facts::discover` reads
//! the interfaces and the default route of the calling thread's namespace
//! (entered with `setns`, as the agent does), from every routing table.
//! Everything is removed at the end.

use egret_testkit::netns as common;

use std::time::{Duration, Instant};

use common::*;
use egret_runtime::facts::{self, NetlinkChanges};

/// Waits (bounded) until the socket has notifications; how many.
fn notified(changes: &NetlinkChanges, what: &str) -> usize {
    let start = Instant::now();
    loop {
        let n = changes.drain().expect("drain");
        if n > 0 {
            return n;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no netlink notification for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn netlink_reports_address_and_route_changes_and_the_default_route_is_read() {
    if !privileged("netlink_reports_address_and_route_changes_and_the_default_route_is_read") {
        return;
    }
    let ns = Netns::new("fct");
    let entered = ns.enter();
    let changes = NetlinkChanges::open().expect("netlink socket");
    assert_eq!(changes.drain().expect("drain"), 0, "nothing changed yet");
    let empty = facts::discover().expect("discover");
    assert!(empty.interfaces.is_empty() && empty.default_route.is_none(), "a fresh namespace: {empty:?}");

    // (veth pairs: this kernel has no dummy links)
    ip_in(&ns.name, &["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    ip_in(&ns.name, &["addr", "add", "192.0.2.50/24", "dev", "d0"]);
    ip_in(&ns.name, &["link", "set", "d0p", "up"]);
    ip_in(&ns.name, &["link", "set", "d0", "up"]);
    notified(&changes, "a new link and address");
    let f = facts::discover().expect("discover");
    let d0 = f.interfaces.iter().find(|i| i.name == "d0").expect("d0 listed");
    assert!(d0.addresses.contains(&("192.0.2.50".parse().expect("ip"), 24)), "{f:?}");
    assert!(f.interfaces.iter().all(|i| i.name != "lo"), "{f:?}");
    assert_eq!(f.default_route, None);

    ip_in(&ns.name, &["route", "add", "default", "via", "192.0.2.1", "dev", "d0"]);
    notified(&changes, "a default route");
    assert_eq!(facts::discover().expect("discover").default_route.as_deref(), Some("d0"));
    let network = facts::node_network("gateway-1", &facts::discover().expect("discover"));
    assert_eq!(network.default_route_interface.as_deref(), Some("d0"), "{network:?}");

    // an IPv6 default only, on another link
    ip_in(&ns.name, &["route", "del", "default"]);
    notified(&changes, "the IPv4 default removed");
    assert_eq!(facts::discover().expect("discover").default_route, None);
    ip_in(&ns.name, &["link", "add", "d1", "type", "veth", "peer", "name", "d1p"]);
    ip_in(&ns.name, &["link", "set", "d1p", "up"]);
    ip_in(&ns.name, &["link", "set", "d1", "up"]);
    ip_in(&ns.name, &["-6", "addr", "add", "2001:db8::5/64", "dev", "d1", "nodad"]);
    ip_in(&ns.name, &["-6", "route", "add", "default", "via", "2001:db8::1", "dev", "d1"]);
    notified(&changes, "an IPv6 default route");
    assert_eq!(facts::discover().expect("discover").default_route.as_deref(), Some("d1"));

    // routing tables other than main are read too; main comes first
    ip_in(&ns.name, &["route", "add", "default", "via", "192.0.2.1", "dev", "d0", "table", "1000"]);
    notified(&changes, "a default route in table 1000");
    assert_eq!(facts::discover().expect("discover").default_route.as_deref(), Some("d1"), "main's IPv6 default");
    ip_in(&ns.name, &["-6", "route", "del", "default"]);
    notified(&changes, "the IPv6 default removed");
    assert_eq!(facts::discover().expect("discover").default_route.as_deref(), Some("d0"), "table 1000's default");

    drop(changes);
    drop(entered);
    let name = ns.name.clone();
    drop(ns);
    assert!(!netns_exists(&name), "namespace {name} left behind");
}

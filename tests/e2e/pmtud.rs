//! Path MTU Discovery through the gateway (issue #16 item 2), both families:
//! a link with a smaller MTU beyond the gateway — the server's namespace
//! routes [`FAR`] / [`FAR6`] over a veth whose router side has MTU
//! [`FAR_LINK_MTU`] to a namespace of this test — makes the router answer
//! full-size packets with fragmentation needed / packet too big, addressed to
//! the egress IP. egret's `egret_gw_reply` must translate that error back to
//! the pod, through the tunnel: a pod's TCP transfer (its SYN's MSS, 1410 /
//! 1390 after egret's clamp, is above what the far link carries, so only PMTUD
//! can make it fit) completes, and a UDP sender with DF set learns the path
//! MTU and then gets its datagrams through. Without the translation the error
//! dies on the gateway and the transfer stalls: the test fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use egret_bpf::templates::Stat;
use egret_testkit::minicluster::{MiniCluster, Stack, in_netns, pod};
use egret_testkit::netns::{Netns, ip_in};
use rustix::net::sockopt;

use super::{privileged, stat, with_cluster_of};

/// A server behind the small link (inside the range the gateways route to the server).
const FAR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70);
/// Its IPv6 (inside the service range).
const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xcafe, 2, 0, 0, 0, 0x70);
/// The MTU of the router's side of the far link.
const FAR_LINK_MTU: u16 = 1300;
const PORT: u16 = 9090;
/// Bytes the pod sends over TCP.
const TRANSFER: usize = 256 * 1024;

/// The far namespace, wired to the server's namespace by a veth whose
/// server side (the router's egress) has [`FAR_LINK_MTU`]; removed on drop.
struct Far {
    ns: Netns,
}

impl Far {
    fn wire(c: &MiniCluster) -> Far {
        let ns = Netns::new("far");
        let srv = c.ns("srv");
        let link = format!("far{}", std::process::id() % 100_000);
        ip_in(
            &srv,
            &[
                "link",
                "add",
                &link,
                "mtu",
                &FAR_LINK_MTU.to_string(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ],
        );
        ip_in(&srv, &["link", "set", &link, "up"]);
        ip_in(&ns.name, &["link", "set", "eth0", "mtu", "1500", "up"]);
        ip_in(&srv, &["addr", "add", "198.18.0.1/30", "dev", &link]);
        ip_in(&ns.name, &["addr", "add", "198.18.0.2/30", "dev", "eth0"]);
        ip_in(&ns.name, &["addr", "add", &format!("{FAR}/32"), "dev", "lo"]);
        ip_in(&ns.name, &["route", "add", "default", "via", "198.18.0.1"]);
        ip_in(&srv, &["route", "add", &format!("{FAR}/32"), "via", "198.18.0.2", "dev", &link]);
        ip_in(&srv, &["-6", "addr", "add", "2001:db8:f00::1/64", "dev", &link, "nodad"]);
        ip_in(&ns.name, &["-6", "addr", "add", "2001:db8:f00::2/64", "dev", "eth0", "nodad"]);
        ip_in(&ns.name, &["-6", "addr", "add", &format!("{FAR6}/128"), "dev", "lo", "nodad"]);
        ip_in(&ns.name, &["-6", "route", "add", "default", "via", "2001:db8:f00::1"]);
        ip_in(&srv, &["-6", "route", "add", &format!("{FAR6}/128"), "via", "2001:db8:f00::2", "dev", &link]);
        for (key, value) in [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")] {
            egret_testkit::netns::run("ip", &["netns", "exec", &srv, "sysctl", "-qw", &format!("{key}={value}")]);
        }
        Far { ns }
    }

    /// A TCP server that reads `TRANSFER` bytes per connection and answers
    /// with how many it got; a UDP socket that answers each datagram with its
    /// length. Both bound in the far namespace, served by threads.
    fn serve(&self, dst: IpAddr) -> (std::thread::JoinHandle<usize>, UdpSocket) {
        let (listener, udp) = in_netns(&self.ns.name, move || {
            let l = TcpListener::bind(SocketAddr::new(dst, PORT)).expect("far TCP");
            let u = UdpSocket::bind(SocketAddr::new(dst, PORT)).expect("far UDP");
            Ok((l, u))
        })
        .expect("far sockets");
        let tcp = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            let mut got = 0;
            let mut buf = [0u8; 65536];
            while got < TRANSFER {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let _ = s.write_all(format!("{got}\n").as_bytes());
            got
        });
        (tcp, udp)
    }
}

/// The pod's TCP transfer and DF-set UDP to `dst` behind the small link.
fn pmtud_through_the_gateway(c: &MiniCluster, far: &Far, pod_name: &str, dst: IpAddr) {
    let errors_before = stat(c, Stat::IcmpError);
    let (server, far_udp) = far.serve(dst);
    // TCP: full-size segments hit the small link; the translated error shrinks them
    let sent = in_netns(&c.ns(pod(pod_name).name), move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(dst, PORT), Duration::from_secs(3)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.write_all(&vec![b'p'; TRANSFER]).expect("the transfer is written");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        Ok(answer)
    })
    .expect("the pod's transfer");
    let got = server.join().expect("far server");
    assert_eq!(
        (got, sent.trim()),
        (TRANSFER, TRANSFER.to_string().as_str()),
        "{pod_name} -> {dst}: the whole transfer"
    );
    // UDP with DF: the first large datagram is dropped with an error, the pod
    // learns the path MTU, smaller datagrams then arrive
    let v6 = dst.is_ipv6();
    let hdr: usize = if v6 { 48 } else { 28 };
    // the path MTU the kernel holds for the connected socket's destination
    let path_mtu = move |u: &UdpSocket| -> i64 {
        let mtu = if v6 { sockopt::ipv6_mtu(u) } else { sockopt::ip_mtu(u) };
        mtu.map_or(-1, i64::from)
    };
    let learned = in_netns(&c.ns(pod(pod_name).name), move || {
        let bind: SocketAddr = if v6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        let u = UdpSocket::bind(bind).expect("pod UDP");
        u.connect(SocketAddr::new(dst, PORT)).expect("connect");
        // DF set, never fragmented locally
        if v6 {
            sockopt::set_ipv6_mtu_discover(&u, sockopt::Ipv6PathMtuDiscovery::DO).expect("IPV6_MTU_DISCOVER");
        } else {
            sockopt::set_ip_mtu_discover(&u, sockopt::Ipv4PathMtuDiscovery::DO).expect("IP_MTU_DISCOVER");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut mtu = path_mtu(&u);
        while mtu > i64::from(FAR_LINK_MTU) && Instant::now() < deadline {
            let _ = u.send(&vec![b'u'; 1400 - hdr]); // fits the pod's 1450, not the far link
            std::thread::sleep(Duration::from_millis(200));
            mtu = path_mtu(&u);
        }
        u.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let fits = usize::try_from(mtu).unwrap_or(0).saturating_sub(hdr);
        u.send(&vec![b'u'; fits]).expect("a datagram of the learned size");
        Ok((mtu, fits, u))
    })
    .expect("the pod's UDP");
    let (mtu, fits, _pod_udp) = learned;
    assert_eq!(mtu, i64::from(FAR_LINK_MTU), "{pod_name} -> {dst}: the path MTU the translated error told");
    far_udp.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut buf = [0u8; 2048];
    let mut arrived = false;
    while let Ok(n) = far_udp.recv(&mut buf) {
        if n == fits {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "{pod_name} -> {dst}: a datagram of {fits} bytes with DF arrives");
    assert!(stat(c, Stat::IcmpError) > errors_before, "the gateway translated the errors (icmp-error)");
}

#[test]
fn pmtud_works_through_the_gateway_in_both_families() {
    if !privileged("pmtud_works_through_the_gateway_in_both_families") {
        return;
    }
    with_cluster_of("e2epm", Stack::Dual, |c| {
        let far = Far::wire(c);
        pmtud_through_the_gateway(c, &far, "egress-1", FAR.into());
        pmtud_through_the_gateway(c, &far, "egress-2", FAR6.into());
    });
}

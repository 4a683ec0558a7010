//! Flow events: the records the gateway programs write to
//! `egret_flow_events` (a ring buffer, [`crate::layout::flow_event`]) when a
//! translation is created and when a TCP FIN or RST closes it, decoded and
//! encoded here for the agent that drains them and for tests.
//!
//! What the datapath can observe, precisely: **created** — the first packet
//! of a new NAT mapping (a new reverse entry claimed), or a bare SYN that
//! restarts a mapping whose connection was closing (a new connection on the
//! same tuple); **closed** — the first TCP FIN or RST of a connection, in
//! either direction. It cannot see an entry leave the connection table: the
//! kernel's LRU eviction runs no program, and an idle timeout is only a
//! timestamp the next packet compares (`expires_ns`). The agent detects
//! those (the flow log's *expired*).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::layout::{FLOW_CLOSED, FLOW_CREATED, flow_event as ev};

/// What happened to a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowEventKind {
    /// [`FLOW_CREATED`].
    Created,
    /// [`FLOW_CLOSED`].
    Closed,
}

/// One flow event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    /// Created or closed.
    pub kind: FlowEventKind,
    /// IP protocol.
    pub proto: u8,
    /// The connection's `RV_F_*` flags after the packet.
    pub flags: u8,
    /// Egress slot.
    pub slot: u32,
    /// `ktime_get_ns()` (CLOCK_MONOTONIC) of the packet.
    pub time_ns: u64,
    /// The pod.
    pub src: IpAddr,
    /// The pod's port / ICMP identifier.
    pub sport: u16,
    /// The remote end.
    pub dst: IpAddr,
    /// The remote port (0 for ICMP).
    pub dport: u16,
    /// The translated source address.
    pub egress_ip: IpAddr,
    /// The translated source port / identifier.
    pub nat_port: u16,
    /// The pod's node (`0.0.0.0`: the gateway node itself).
    pub node: IpAddr,
}

fn addr(family: u8, b: &[u8], f: crate::layout::Field) -> Option<IpAddr> {
    let a: [u8; 16] = f.bytes(b)?.try_into().ok()?;
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

fn put_addr(b: &mut [u8], f: crate::layout::Field, ip: IpAddr) {
    let o = f.offset;
    match ip {
        IpAddr::V4(a) => b[o..o + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b[o..o + 16].copy_from_slice(&a.octets()),
    }
}

impl FlowEvent {
    /// Record size.
    pub const SIZE: usize = ev::SIZE;

    /// Decodes a record; `None` for a wrong length, an unknown kind or family,
    /// or addresses of mixed families.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<FlowEvent> {
        if !ev::LAYOUT.fits(b) {
            return None;
        }
        let kind = match ev::KIND.get(b)? as u8 {
            FLOW_CREATED => FlowEventKind::Created,
            FLOW_CLOSED => FlowEventKind::Closed,
            _ => return None,
        };
        let family = ev::FAMILY.get(b)? as u8;
        Some(FlowEvent {
            kind,
            proto: ev::PROTO.get(b)? as u8,
            flags: ev::FLAGS.get(b)? as u8,
            slot: ev::SLOT.get_u32(b)?,
            time_ns: ev::TIME.get(b)?,
            src: addr(family, b, ev::SRC)?,
            sport: ev::SPORT.get(b)? as u16,
            dst: addr(family, b, ev::DST)?,
            dport: ev::DPORT.get(b)? as u16,
            egress_ip: addr(family, b, ev::EGRESS_IP)?,
            nat_port: ev::NAT_PORT.get(b)? as u16,
            node: ev::NODE.node(b)?,
        })
    }

    /// The record the programs write for this event (`None` when the
    /// addresses are not all of one family).
    #[must_use]
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let family = match (self.src, self.dst, self.egress_ip) {
            (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) => 4,
            (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)) => 6,
            _ => return None,
        };
        let mut b = ev::LAYOUT.zeroed();
        let kind = match self.kind {
            FlowEventKind::Created => FLOW_CREATED,
            FlowEventKind::Closed => FLOW_CLOSED,
        };
        ev::KIND.put(&mut b, u64::from(kind));
        ev::PROTO.put(&mut b, u64::from(self.proto));
        ev::FAMILY.put(&mut b, family);
        ev::FLAGS.put(&mut b, u64::from(self.flags));
        ev::SLOT.put(&mut b, u64::from(self.slot));
        ev::TIME.put(&mut b, self.time_ns);
        ev::SPORT.put(&mut b, u64::from(self.sport));
        ev::DPORT.put(&mut b, u64::from(self.dport));
        ev::NAT_PORT.put(&mut b, u64::from(self.nat_port));
        put_addr(&mut b, ev::SRC, self.src);
        put_addr(&mut b, ev::DST, self.dst);
        put_addr(&mut b, ev::EGRESS_IP, self.egress_ip);
        ev::NODE.put_node(&mut b, self.node);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        let e = FlowEvent {
            kind: FlowEventKind::Closed,
            proto: 6,
            flags: 6,
            slot: 7,
            time_ns: 123_456_789,
            src: Ipv4Addr::new(10, 1, 0, 5).into(),
            sport: 40000,
            dst: Ipv4Addr::new(203, 0, 113, 20).into(),
            dport: 443,
            egress_ip: Ipv4Addr::new(198, 51, 100, 100).into(),
            nat_port: 61234,
            node: Ipv4Addr::new(192, 0, 2, 1).into(),
        };
        let b = e.to_bytes().expect("one family");
        assert_eq!(b.len(), 88);
        assert_eq!(&b[0..5], &[2, 6, 4, 6, 7], "kind, proto, family, flags, slot");
        assert_eq!(&b[20..22], &61234u16.to_be_bytes(), "NAT port in network order");
        assert_eq!(&b[24..28], &[10, 1, 0, 5]);
        assert_eq!(FlowEvent::from_bytes(&b), Some(e));
        let e6 = FlowEvent {
            kind: FlowEventKind::Created,
            src: "fd00::5".parse().expect("v6"),
            dst: "2001:db8::20".parse().expect("v6"),
            egress_ip: "2001:db8:1::100".parse().expect("v6"),
            node: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ..e
        };
        assert_eq!(FlowEvent::from_bytes(&e6.to_bytes().expect("v6")), Some(e6));
        assert_eq!(FlowEvent { dst: e6.dst, ..e }.to_bytes(), None, "mixed families");
        assert_eq!(FlowEvent::from_bytes(&b[..87]), None);
        let mut bad = b.clone();
        bad[0] = 9;
        assert_eq!(FlowEvent::from_bytes(&bad), None, "unknown kind");
        bad = b;
        bad[2] = 5;
        assert_eq!(FlowEvent::from_bytes(&bad), None, "unknown family");
    }
}

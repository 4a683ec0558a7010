// ===== egret_gw_reply: tcx ingress of an egress interface =========================
// Reverse NAT for replies to connections egret_tunnel_in / egret_gw_local
// translated, both families (`reply_path v`, entries reply4 and reply6). A
// packet is ours only if its reverse key
// {dst (egress IP), src (remote), dport (NAT port), sport (remote port), proto}
// (ICMP/ICMPv6 echo reply: {dst, src, identifier, 0, proto}) has a live
// egret_rnat_v4 / egret_rnat_v6 entry; everything else (other protocols,
// fragments, unknown or expired tuples, the host's own traffic) passes untouched
// with TC_ACT_UNSPEC.
// Ours: refresh the connection state, decrement the TTL / hop limit, restore the
// original destination address and port with checksum fixes, then
//  - pod on another node: tunnel key {tunnel_id = slot, remote = node, ttl 64}
//    and bpf_redirect(%tunnel_ifindex, 0) (egress of egret0: flags must be 0);
//  - pod on this node (RV_F_LOCAL): bpf_redirect_neigh to its veth, the pod
//    as next hop.
// Registers: r6 = ctx, r7 = L4 offset (IPv4 34..74, IPv6 54), r8 = reverse NAT entry.
.equ ORIG_ADDR, FKEY + K_SRC6       // the pod address to restore (4 or 16 B; 8-aligned)
.equ ORIG_PORT, FKEY + K_SPORT      // the pod port / identifier to restore (be16)

// ICMP echo reply: the identifier (r1) is the NAT identifier, no remote port
.macro reply_icmp_keys
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
.endm

.macro reply_path v
reply\v:
    ip_header\v pass, pass, pass
    // reverse key: the reply's tuple, swapped
    addr_copy\v r10 + RKEY + K_SRC\v, r2 + DADDR\v  // the egress IP
    addr_copy\v r10 + RKEY + K_DST\v, r2 + SADDR\v  // the remote end
    ip_proto_ttl\v
    *(u32 *)(r10 + RKEY + K_PROTO) = r1 // protocol + 3 zero pad bytes
    l4_at\v pass                        // fragment: no ports to match
    l4_demux \v, reply_tcp\v, reply_udp\v, reply_icmp\v, pass
reply_tcp\v:
    l4_tcp pass
    goto reply_ports\v
reply_udp\v:
    l4_udp pass
reply_ports\v:
    r1 = *(u16 *)(r4 + L4_SPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1 // the remote port
    r1 = *(u16 *)(r4 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1 // the NAT port
    r1 = r7
    r1 += L4_DPORT
    *(u32 *)(r10 + PORT_OFF) = r1       // rewrite the destination port
    goto reply_lookup\v
reply_icmp\v:
    // echo replies only: ICMP errors are not translated (see README)
    l4_icmp pass, ICMP_ECHO_REPLY\v, pass, reply_icmp_keys

    // --- a live connection of ours?
reply_lookup\v:
    lookup egret_rnat_v\v, RKEY
    if r0 == 0 goto pass
    r8 = r0
    call ktime_get_ns
    *(u64 *)(r10 + NOW) = r0
    r1 = *(u64 *)(r8 + RV_EXPIRES)
    if r1 <= r0 goto pass               // expired: the mapping is gone
    ttl_decrement drop_ttl_exceeded
    addr_copy\v r10 + ORIG_ADDR, r8 + RV_ORIG_SRC\v
    r1 = *(u16 *)(r8 + RV_ORIG_SPORT)
    *(u16 *)(r10 + ORIG_PORT) = r1
    r1 = *(u32 *)(r8 + RV_NODE)
    *(u32 *)(r10 + NODE) = r1
    r1 = *(u32 *)(r8 + RV_SLOT)
    *(u32 *)(r10 + SLOT) = r1
    r1 = *(u8 *)(r8 + RV_FLAGS)
    *(u32 *)(r10 + SRC_FLAGS) = r1
    // a pod of this node: find its veth before touching the packet
    *(u32 *)(r10 + DELIVER_IFINDEX) = 0 // (the verifiers do not correlate the two flag tests)
    r1 &= RV_F_LOCAL
    if r1 == 0 goto reply_state\v
    lookup egret_local_eps_v\v, ORIG_ADDR
    if r0 == 0 goto drop_no_local_endpoint
    r1 = *(u32 *)(r0 + LE_IFINDEX)
    *(u32 *)(r10 + DELIVER_IFINDEX) = r1

    // --- refresh the state: a reply was seen; FIN/RST close
reply_state\v:
    r3 = *(u32 *)(r10 + SRC_FLAGS)
    r3 |= RV_F_SEEN_REPLY
    conn_state r8, u8, RKEY, TCP_ESTABLISHED_TIMEOUT_NS

    // --- rewrite: destination address and port, checksums, TTL
    nat_rewrite\v RKEY + K_PROTO, DADDR\v, RKEY + K_SRC\v, ORIG_ADDR, RKEY + K_SPORT, ORIG_PORT
    r1 = *(u32 *)(r10 + SRC_FLAGS)
    r1 &= RV_F_LOCAL
    if r1 != 0 goto reply_local\v

    // --- pod on another node: back through the tunnel to its node
    tunnel_to_slot r1, "r1 = *(u32 *)(r10 + NODE)", STAT_REPLY_TUNNELLED

    // --- pod on this node: straight to its veth, the pod as next hop
reply_local\v:
    to_pod \v, *(u32 *)(r10 + DELIVER_IFINDEX), STAT_REPLY_LOCAL, "addr_copy\v r10 + NH + 4, r10 + ORIG_ADDR"
.endm

egret_gw_reply:
    r6 = r1                             // r6 = ctx for the whole program
    frame ETH_HLEN, pass
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 == ETH_P_IPV6_LE goto reply6
    goto reply4                         // IPv4, or passed there
    reply_path 4
    reply_path 6

pass:
    r0 = TC_ACT_UNSPEC
    exit

    drop_stub ttl_exceeded, STAT_TTL_EXCEEDED
    drop_stub no_local_endpoint, STAT_NO_LOCAL_ENDPOINT
    drop_stub rewrite_failed, STAT_REWRITE_FAILED

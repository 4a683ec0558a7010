// ===== egret_gw_reply: tcx ingress of an egress interface =========================
// Reverse NAT for replies to connections egret_tunnel_in / egret_gw_local
// translated. A packet is ours only if its reverse key
// {dst (egress IP), src (remote), dport (NAT port), sport (remote port), proto}
// (ICMP echo reply: {dst, src, identifier, 0, 1}) has a live egret_rnat_v4
// entry; everything else (other protocols, fragments, unknown or expired
// tuples, the host's own traffic) passes untouched with TC_ACT_UNSPEC.
// Ours: refresh the connection state, decrement the TTL, restore the original
// destination address and port with checksum fixes, then
//  - pod on another node: tunnel key {tunnel_id = slot, remote = node, ttl 64}
//    and bpf_redirect(%tunnel_ifindex, 0) (egress of egret0: flags must be 0);
//  - pod on this node (RV_F_LOCAL): bpf_redirect_neigh to its veth, the pod
//    as next hop.
// Registers: r6 = ctx, r7 = L4 offset (34..74), r8 = reverse NAT entry.
.equ ORIG_ADDR, FKEY + K_SRC        // the pod address to restore (be32)
.equ ORIG_PORT, FKEY + K_SPORT      // the pod port / identifier to restore (be16)

// ICMP echo reply: the identifier (r1) is the NAT identifier, no remote port
.macro reply_icmp_keys
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
.endm

// the pod as the next hop of bpf_redirect_neigh
.macro pod_nexthop
    r1 = *(u32 *)(r10 + ORIG_ADDR)
    *(u32 *)(r10 + NH + 4) = r1
.endm

egret_gw_reply:
    r6 = r1                             // r6 = ctx for the whole program
    ipv4_header pass, pass, pass
    first_fragment pass                 // non-first fragment: no ports to match
    // reverse key: the reply's tuple, swapped
    r1 = *(u32 *)(r2 + IP_DADDR)
    *(u32 *)(r10 + RKEY + K_SRC) = r1   // the egress IP
    r1 = *(u32 *)(r2 + IP_SADDR)
    *(u32 *)(r10 + RKEY + K_DST) = r1   // the remote end
    r1 = *(u8 *)(r2 + IP_PROTO)
    *(u32 *)(r10 + RKEY + K_PROTO) = r1 // protocol + 3 zero pad bytes
    r5 = *(u16 *)(r2 + IP_TTL)
    *(u16 *)(r10 + TTL_OLD) = r5
    r4 = r2
    r4 += r7                            // the L4 header
    l4_demux reply_tcp, reply_udp, reply_icmp, pass
reply_tcp:
    l4_tcp pass
    goto reply_ports
reply_udp:
    l4_udp pass
reply_ports:
    r1 = *(u16 *)(r4 + L4_SPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1 // the remote port
    r1 = *(u16 *)(r4 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1 // the NAT port
    r1 = r7
    r1 += L4_DPORT
    *(u32 *)(r10 + PORT_OFF) = r1       // rewrite the destination port
    goto reply_lookup
reply_icmp:
    // echo replies only: ICMP errors are not translated (see README)
    l4_icmp pass, ICMP_ECHO_REPLY, pass, reply_icmp_keys

    // --- a live connection of ours?
reply_lookup:
    lookup egret_rnat_v4, RKEY
    if r0 == 0 goto pass
    r8 = r0
    call ktime_get_ns
    *(u64 *)(r10 + NOW) = r0
    r1 = *(u64 *)(r8 + RV_EXPIRES)
    if r1 <= r0 goto pass               // expired: the mapping is gone
    ttl_decrement drop_ttl_exceeded
    r1 = *(u32 *)(r8 + RV_ORIG_SRC)
    *(u32 *)(r10 + ORIG_ADDR) = r1
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
    if r1 == 0 goto reply_state
    lookup egret_local_eps, ORIG_ADDR
    if r0 == 0 goto drop_no_local_endpoint
    r1 = *(u32 *)(r0 + LE_IFINDEX)
    *(u32 *)(r10 + DELIVER_IFINDEX) = r1

    // --- refresh the state: a reply was seen; FIN/RST close
reply_state:
    r3 = *(u32 *)(r10 + SRC_FLAGS)
    r3 |= RV_F_SEEN_REPLY
    conn_state r8, u8, RKEY, TCP_ESTABLISHED_TIMEOUT_NS

    // --- rewrite: destination address and port, checksums, TTL
    nat_rewrite RKEY + K_PROTO, IP_DADDR, RKEY + K_SRC, ORIG_ADDR, RKEY + K_SPORT, ORIG_PORT
    r1 = *(u32 *)(r10 + SRC_FLAGS)
    r1 &= RV_F_LOCAL
    if r1 != 0 goto reply_local

    // --- pod on another node: back through the tunnel to its node
    tunnel_to_slot r1, "r1 = *(u32 *)(r10 + NODE)", STAT_REPLY_TUNNELLED

    // --- pod on this node: straight to its veth
reply_local:
    to_pod *(u32 *)(r10 + DELIVER_IFINDEX), STAT_REPLY_LOCAL, pod_nexthop

pass:
    r0 = TC_ACT_UNSPEC
    exit

    drop_stub ttl_exceeded, STAT_TTL_EXCEEDED
    drop_stub no_local_endpoint, STAT_NO_LOCAL_ENDPOINT
    drop_stub rewrite_failed, STAT_REWRITE_FAILED

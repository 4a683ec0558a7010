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
egret_gw_reply:
    r6 = r1                             // r6 = ctx for the whole program
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += IPV4_END
    if r4 > r3 goto pass
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 != ETH_P_IP_LE goto pass
    r1 = *(u8 *)(r2 + IP_VIHL)
    r5 = r1
    r5 &= 0xf0
    if r5 != 0x40 goto pass
    r1 &= 0x0f
    if r1 < 5 goto pass
    r1 <<= 2
    r1 += ETH_HLEN
    r7 = r1                             // L4 offset: 34..74
    r1 = *(u16 *)(r2 + IP_FRAG)
    r1 = be16 r1
    r1 &= IP_OFFMASK
    if r1 != 0 goto pass                // non-first fragment: no ports to match
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
    if r1 == IPPROTO_TCP goto reply_tcp
    if r1 == IPPROTO_UDP goto reply_udp
    if r1 == IPPROTO_ICMP goto reply_icmp
    goto pass
reply_tcp:
    r5 = r4
    r5 += TCP_HLEN
    if r5 > r3 goto pass
    r1 = *(u8 *)(r4 + TCP_FLAGS_OFF)
    *(u32 *)(r10 + TCP_FLAGS) = r1
    r1 = r7
    r1 += TCP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    *(u32 *)(r10 + L4_FLAGS) = 0
    goto reply_ports
reply_udp:
    r5 = r4
    r5 += UDP_HLEN
    if r5 > r3 goto pass
    *(u32 *)(r10 + TCP_FLAGS) = 0
    r1 = r7
    r1 += UDP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    *(u32 *)(r10 + L4_FLAGS) = BPF_F_MARK_MANGLED_0 // checksum 0 (none) stays 0
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
    r5 = r4
    r5 += ICMP_HLEN
    if r5 > r3 goto pass
    r1 = *(u8 *)(r4 + 0)
    if r1 != ICMP_ECHO_REPLY goto pass  // ICMP errors are not translated (see README)
    r1 = *(u16 *)(r4 + ICMP_ID_OFF)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1 // the NAT identifier
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
    *(u32 *)(r10 + TCP_FLAGS) = 0
    r1 = r7
    r1 += ICMP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    r1 = r7
    r1 += ICMP_ID_OFF
    *(u32 *)(r10 + PORT_OFF) = r1
    *(u32 *)(r10 + L4_FLAGS) = 0

    // --- a live connection of ours?
reply_lookup:
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    if r0 == 0 goto pass
    r8 = r0
    call ktime_get_ns
    *(u64 *)(r10 + NOW) = r0
    r1 = *(u64 *)(r8 + RV_EXPIRES)
    if r1 <= r0 goto pass               // expired: the mapping is gone
    r1 = *(u8 *)(r10 + TTL_OLD)         // low byte: the TTL
    if r1 <= 1 goto drop_ttl_exceeded
    r1 = *(u16 *)(r10 + TTL_OLD)
    r1 += -1
    *(u16 *)(r10 + TTL_NEW) = r1
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
    r2 = r10
    r2 += ORIG_ADDR
    r1 = map[egret_local_eps] ll
    call map_lookup_elem
    if r0 == 0 goto drop_no_local_endpoint
    r1 = *(u32 *)(r0 + LE_IFINDEX)
    *(u32 *)(r10 + DELIVER_IFINDEX) = r1

    // --- refresh the state: a reply was seen; FIN/RST close
reply_state:
    r3 = *(u32 *)(r10 + SRC_FLAGS)
    r3 |= RV_F_SEEN_REPLY
    r1 = *(u32 *)(r10 + TCP_FLAGS)
    r1 &= TH_FIN + TH_RST
    if r1 == 0 goto reply_no_fin
    r3 |= RV_F_CLOSING
reply_no_fin:
    *(u8 *)(r8 + RV_FLAGS) = r3
    r1 = *(u8 *)(r10 + RKEY + K_PROTO)
    r4 = UDP_TIMEOUT_NS ll
    if r1 == IPPROTO_UDP goto reply_timeout
    r4 = ICMP_TIMEOUT_NS ll
    if r1 == IPPROTO_ICMP goto reply_timeout
    r4 = TCP_CLOSING_TIMEOUT_NS ll
    r2 = r3
    r2 &= RV_F_CLOSING
    if r2 != 0 goto reply_timeout
    r4 = TCP_ESTABLISHED_TIMEOUT_NS ll
reply_timeout:
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r8 + RV_LAST_SEEN) = r1
    r1 += r4
    *(u64 *)(r8 + RV_EXPIRES) = r1

    // --- rewrite: destination address and port, checksums, TTL
    r1 = *(u8 *)(r10 + RKEY + K_PROTO)
    if r1 == IPPROTO_ICMP goto reply_xlate_port // ICMP has no pseudo-header
    r1 = r6
    r2 = *(u32 *)(r10 + CSUM_OFF)
    r3 = *(u32 *)(r10 + RKEY + K_SRC)
    r4 = *(u32 *)(r10 + ORIG_ADDR)
    r5 = *(u32 *)(r10 + L4_FLAGS)
    r5 |= BPF_F_PSEUDO_HDR + CSUM_SIZE4
    call l4_csum_replace
    if r0 != 0 goto drop_rewrite_failed
reply_xlate_port:
    r1 = r6
    r2 = *(u32 *)(r10 + CSUM_OFF)
    r3 = *(u16 *)(r10 + RKEY + K_SPORT)
    r4 = *(u16 *)(r10 + ORIG_PORT)
    r5 = *(u32 *)(r10 + L4_FLAGS)
    r5 |= CSUM_SIZE2
    call l4_csum_replace
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = IP_CSUM
    r3 = *(u32 *)(r10 + RKEY + K_SRC)
    r4 = *(u32 *)(r10 + ORIG_ADDR)
    r5 = CSUM_SIZE4
    call l3_csum_replace
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = IP_CSUM
    r3 = *(u16 *)(r10 + TTL_OLD)
    r4 = *(u16 *)(r10 + TTL_NEW)
    r5 = CSUM_SIZE2
    call l3_csum_replace
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = IP_TTL
    r3 = r10
    r3 += TTL_NEW
    r4 = 2
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = IP_DADDR
    r3 = r10
    r3 += ORIG_ADDR
    r4 = 4
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = *(u32 *)(r10 + PORT_OFF)
    r3 = r10
    r3 += ORIG_PORT
    r4 = 2
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    r1 = *(u32 *)(r10 + SRC_FLAGS)
    r1 &= RV_F_LOCAL
    if r1 != 0 goto reply_local

    // --- pod on another node: back through the tunnel to its node
    r1 = 0
    *(u64 *)(r10 + TUNKEY) = r1
    *(u64 *)(r10 + TUNKEY + 8) = r1
    *(u64 *)(r10 + TUNKEY + 16) = r1
    *(u64 *)(r10 + TUNKEY + 24) = r1
    *(u64 *)(r10 + TUNKEY + 32) = r1
    *(u32 *)(r10 + TUNKEY + 40) = r1
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + TUNKEY + TK_ID) = r1
    r1 = *(u32 *)(r10 + NODE)
    *(u32 *)(r10 + TUNKEY + TK_REMOTE) = r1 // host byte order
    *(u8 *)(r10 + TUNKEY + TK_TTL) = TUNNEL_TTL
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_set_tunnel_key
    if r0 != 0 goto drop_rewrite_failed
    *(u32 *)(r10 + STATS_KEY) = STAT_REPLY_TUNNELLED
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto tunnel_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
tunnel_send:
    w1 = %tunnel_ifindex                // egret0
    r2 = 0                              // egress: BPF_F_INGRESS would drop it (OTHERHOST)
    call redirect                       // TC_ACT_REDIRECT
    exit

    // --- pod on this node: straight to its veth
reply_local:
    *(u32 *)(r10 + NH) = AF_INET
    r1 = *(u32 *)(r10 + ORIG_ADDR)
    *(u32 *)(r10 + NH + 4) = r1
    r1 = 0
    *(u64 *)(r10 + NH + 8) = r1         // rest of the ipv6_nh union: zero
    *(u32 *)(r10 + NH + 16) = r1
    *(u32 *)(r10 + STATS_KEY) = STAT_REPLY_LOCAL
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto local_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
local_send:
    r1 = *(u32 *)(r10 + DELIVER_IFINDEX)
    r2 = r10
    r2 += NH
    r3 = REDIR_NEIGH_SIZE
    r4 = 0
    call redirect_neigh                 // TC_ACT_REDIRECT
    exit

pass:
    r0 = TC_ACT_UNSPEC
    exit

drop_ttl_exceeded:
    r7 = STAT_TTL_EXCEEDED
    goto drop
drop_no_local_endpoint:
    r7 = STAT_NO_LOCAL_ENDPOINT
    goto drop
drop_rewrite_failed:
    r7 = STAT_REWRITE_FAILED
    goto drop

// ===== SNAT path, shared by egret_tunnel_in and egret_gw_local ====================
// Entry: r6 = ctx; stack: SLOT, NODE (sender, host order; 0 = this node),
// SRC_FLAGS (RV_F_LOCAL for local pods). Registers for the whole path:
// r6 = ctx, r7 = frame offset of the L4 header (34..74), r8 = forward NAT value
// (the owner's address on the forwarding path), r9 = hash bucket of the flow
// (port allocation).
// Order of checks: headers -> slot (no-egress-ip) -> allowed source
// (spoofed-source) -> floating slot: owner (no-owner; elsewhere: forward) ->
// fragment / protocol (fail closed) -> TTL -> NAT -> rewrite.
snat:
    r1 = *(u32 *)(r10 + NODE)
    *(u32 *)(r10 + REPLY_NODE) = r1     // replies go back to the sender unless the entry names the pod's node
    r1 = 0
    *(u32 *)(r10 + FWD) = r1
    // --- Ethernet + IPv4 header (options allowed: IHL 5..15)
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += IPV4_END
    if r4 > r3 goto drop_malformed
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 != ETH_P_IP_LE goto drop_not_ipv4
    r1 = *(u8 *)(r2 + IP_VIHL)
    r5 = r1
    r5 &= 0xf0
    if r5 != 0x40 goto drop_malformed   // version 4
    r1 &= 0x0f
    if r1 < 5 goto drop_malformed       // IHL below 20 bytes
    r1 <<= 2
    r1 += ETH_HLEN
    r7 = r1                             // L4 offset: 34..74
    r1 = *(u32 *)(r2 + IP_SADDR)
    *(u32 *)(r10 + FKEY + K_SRC) = r1
    r1 = *(u32 *)(r2 + IP_DADDR)
    *(u32 *)(r10 + FKEY + K_DST) = r1
    *(u32 *)(r10 + RKEY + K_DST) = r1   // the remote end: the same in both keys
    r1 = *(u8 *)(r2 + IP_PROTO)
    *(u32 *)(r10 + FKEY + K_PROTO) = r1 // protocol + 3 zero pad bytes
    *(u32 *)(r10 + RKEY + K_PROTO) = r1
    r1 = *(u16 *)(r2 + IP_TTL)
    *(u16 *)(r10 + TTL_OLD) = r1

    // --- the slot must be served here and have an egress IPv4
    r2 = r10
    r2 += SLOT
    r1 = map[egret_gw_slots] ll
    call map_lookup_elem
    if r0 == 0 goto drop_no_egress_ip
    r1 = *(u32 *)(r0 + GS_EGRESS_IP)
    if r1 == 0 goto drop_no_egress_ip
    *(u32 *)(r10 + RKEY + K_SRC) = r1   // translated source = the egress IP
    r1 = *(u32 *)(r0 + GS_IFINDEX)
    *(u32 *)(r10 + EGRESS_IFINDEX) = r1
    r1 = *(u32 *)(r0 + GS_FLAGS)
    *(u32 *)(r10 + SLOT_FLAGS) = r1

    // --- the inner source must be allowed for this slot, from this sender
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + ALLOWK + GA_KEY_SLOT) = r1
    r1 = *(u32 *)(r10 + FKEY + K_SRC)
    *(u32 *)(r10 + ALLOWK + GA_KEY_SRC) = r1
    r2 = r10
    r2 += ALLOWK
    r1 = map[egret_gw_allowed] ll
    call map_lookup_elem
    if r0 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r0 + GA_FLAGS)
    r1 &= GA_F_LOCAL
    r2 = *(u32 *)(r10 + SRC_FLAGS)      // RV_F_LOCAL == GA_F_LOCAL
    if r1 != r2 goto allowed_mismatch   // local pods only locally, remote ones only by tunnel (but below)
    if r1 != 0 goto allowed_local
    r1 = *(u32 *)(r0 + GA_NODE)
    if r1 == 0 goto allowed             // any node may send this pod's traffic
    *(u32 *)(r10 + REPLY_NODE) = r1     // replies go straight to the pod's node
    r2 = *(u32 *)(r10 + NODE)
    if r1 == r2 goto allowed
    // a node cannot send another node's pods, unless it is a candidate of this
    // floating slot forwarding them (egret_gw_peers)
floating_peer:
    r1 = *(u32 *)(r10 + SLOT_FLAGS)
    r1 &= GS_F_FLOATING
    if r1 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + PEERK + GP_KEY_SLOT) = r1
    r1 = *(u32 *)(r10 + NODE)
    *(u32 *)(r10 + PEERK + GP_KEY_PEER) = r1
    r2 = r10
    r2 += PEERK
    r1 = map[egret_gw_peers] ll
    call map_lookup_elem
    if r0 == 0 goto drop_spoofed_source
    r1 = 1
    *(u32 *)(r10 + FWD) = r1            // forwarded by a peer: never forwarded again
    goto allowed
allowed_mismatch:
    // a pod of this node that a peer of this floating slot forwarded back (the
    // pod's first live candidate was that peer, this node owns the slot):
    // allowed as above, and its replies go to its veth like any local pod's
    // (set now: the packet is dropped if the check fails)
    if r1 == 0 goto drop_spoofed_source // a remote pod's address from a local veth
    r1 = RV_F_LOCAL
    *(u32 *)(r10 + SRC_FLAGS) = r1
    r1 = 0
    *(u32 *)(r10 + REPLY_NODE) = r1
    goto floating_peer
allowed_local:
    // a local pod: the packet must come in on that pod's own veth
    r2 = r10
    r2 += FKEY + K_SRC
    r1 = map[egret_local_eps] ll
    call map_lookup_elem
    if r0 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r0 + LE_IFINDEX)
    r2 = *(u32 *)(r6 + SKB_IFINDEX)
    if r1 != r2 goto drop_spoofed_source
allowed:

    // --- a floating slot: only its owner SNATs, the other candidates forward
    r1 = *(u32 *)(r10 + SLOT_FLAGS)
    r1 &= GS_F_FLOATING
    if r1 == 0 goto owned
    r2 = r10
    r2 += SLOT
    r1 = map[egret_float_owner] ll
    call map_lookup_elem
    if r0 == 0 goto drop_no_owner       // no owner known
    r1 = *(u32 *)(r0 + FO_FLAGS)
    r1 &= FO_F_SELF
    if r1 != 0 goto owned
    r8 = *(u32 *)(r0 + FO_OWNER)
    if r8 == 0 goto drop_no_owner
    // a peer forwarded it because it thinks we own the slot: never forward it
    // again (no ping-pong while the candidates disagree). A packet straight
    // from its pod's node is forwarded even when that node is a peer: its pod
    // runs on the owner, whose first live candidate was this node.
    r1 = *(u32 *)(r10 + FWD)
    if r1 != 0 goto drop_no_owner
forward:
    // tunnel key {tunnel_id = slot, remote_ipv4 = owner (host order), ttl 64}
    r1 = 0
    *(u64 *)(r10 + TUNKEY) = r1
    *(u64 *)(r10 + TUNKEY + 8) = r1
    *(u64 *)(r10 + TUNKEY + 16) = r1
    *(u64 *)(r10 + TUNKEY + 24) = r1
    *(u64 *)(r10 + TUNKEY + 32) = r1
    *(u32 *)(r10 + TUNKEY + 40) = r1
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + TUNKEY + TK_ID) = r1
    *(u32 *)(r10 + TUNKEY + TK_REMOTE) = r8
    *(u8 *)(r10 + TUNKEY + TK_TTL) = TUNNEL_TTL
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_set_tunnel_key
    if r0 != 0 goto drop_rewrite_failed
    // count forwarded, then out of egret0 to the owner (unchanged: it SNATs)
    *(u32 *)(r10 + STATS_KEY) = STAT_FORWARDED
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto forward_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
forward_send:
    w1 = %tunnel_ifindex                // egret0
    r2 = 0                              // egress: BPF_F_INGRESS would drop it (OTHERHOST)
    call redirect                       // TC_ACT_REDIRECT
    exit
owned:

    // --- fragments and L4 header (pointers again: the calls clobbered r2-r5)
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += IPV4_END
    if r4 > r3 goto drop_malformed
    r1 = *(u16 *)(r2 + IP_FRAG)
    r1 = be16 r1
    r1 &= IP_OFFMASK
    if r1 != 0 goto drop_fragment       // no L4 header: cannot be translated
    r4 = r2
    r4 += r7                            // the L4 header
    r1 = *(u8 *)(r2 + IP_PROTO)
    if r1 == IPPROTO_TCP goto l4_tcp
    if r1 == IPPROTO_UDP goto l4_udp
    if r1 == IPPROTO_ICMP goto l4_icmp
    goto drop_unsupported_proto
l4_tcp:
    r5 = r4
    r5 += TCP_HLEN
    if r5 > r3 goto drop_malformed
    r1 = *(u32 *)(r4 + L4_SPORT)        // sport and dport, network order
    *(u32 *)(r10 + FKEY + K_SPORT) = r1
    r1 = *(u16 *)(r4 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1
    r1 = *(u8 *)(r4 + TCP_FLAGS_OFF)
    *(u32 *)(r10 + TCP_FLAGS) = r1
    r1 = r7
    r1 += TCP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    *(u32 *)(r10 + PORT_OFF) = r7       // rewrite the source port
    *(u32 *)(r10 + L4_FLAGS) = 0
    goto l4_done
l4_udp:
    r5 = r4
    r5 += UDP_HLEN
    if r5 > r3 goto drop_malformed
    r1 = *(u32 *)(r4 + L4_SPORT)
    *(u32 *)(r10 + FKEY + K_SPORT) = r1
    r1 = *(u16 *)(r4 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1
    *(u32 *)(r10 + TCP_FLAGS) = 0
    r1 = r7
    r1 += UDP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    *(u32 *)(r10 + PORT_OFF) = r7
    *(u32 *)(r10 + L4_FLAGS) = BPF_F_MARK_MANGLED_0 // checksum 0 (none) stays 0
    goto l4_done
l4_icmp:
    r5 = r4
    r5 += ICMP_HLEN
    if r5 > r3 goto drop_malformed
    r1 = *(u8 *)(r4 + 0)                // type: only echo requests go out
    if r1 != ICMP_ECHO goto drop_unsupported_proto
    r1 = *(u16 *)(r4 + ICMP_ID_OFF)     // the identifier plays the source port
    *(u16 *)(r10 + FKEY + K_SPORT) = r1
    *(u16 *)(r10 + FKEY + K_DPORT) = 0
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
    *(u32 *)(r10 + TCP_FLAGS) = 0
    r1 = r7
    r1 += ICMP_CSUM_OFF
    *(u32 *)(r10 + CSUM_OFF) = r1
    r1 = r7
    r1 += ICMP_ID_OFF
    *(u32 *)(r10 + PORT_OFF) = r1
    *(u32 *)(r10 + L4_FLAGS) = 0
l4_done:

    // --- TTL: redirect_neigh does not decrement it, so we do
    r1 = *(u8 *)(r10 + TTL_OLD)         // low byte: the TTL
    if r1 <= 1 goto drop_ttl_exceeded
    r1 = *(u16 *)(r10 + TTL_OLD)
    r1 += -1
    *(u16 *)(r10 + TTL_NEW) = r1

    // --- existing mapping? (forward entry, then its reverse entry = the state)
    call ktime_get_ns
    *(u64 *)(r10 + NOW) = r0
    r2 = r10
    r2 += FKEY
    r1 = map[egret_nat_v4] ll
    call map_lookup_elem
    if r0 == 0 goto nat_new
    r8 = r0
    r1 = *(u32 *)(r8 + FV_EGRESS_IP)
    r2 = *(u32 *)(r10 + RKEY + K_SRC)
    if r1 != r2 goto nat_new            // the slot's egress IP changed: map again
    r1 = *(u16 *)(r8 + FV_NAT_PORT)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    if r0 == 0 goto nat_new             // reverse entry evicted
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_new            // the port went to another flow meanwhile
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_new
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_new            // expired: a new connection
    // refresh the state: a bare SYN restarts it, FIN/RST close it
    r3 = *(u8 *)(r0 + RV_FLAGS)
    r1 = *(u32 *)(r10 + TCP_FLAGS)
    r2 = r1
    r2 &= TH_SYN + TH_ACK
    if r2 != TH_SYN goto fwd_no_syn
    r3 &= RV_F_LOCAL
fwd_no_syn:
    r2 = r1
    r2 &= TH_FIN + TH_RST
    if r2 == 0 goto fwd_no_fin
    r3 |= RV_F_CLOSING
fwd_no_fin:
    *(u8 *)(r0 + RV_FLAGS) = r3
    // timeout by protocol and state -> r4
    r1 = *(u8 *)(r10 + FKEY + K_PROTO)
    r4 = UDP_TIMEOUT_NS ll
    if r1 == IPPROTO_UDP goto fwd_timeout
    r4 = ICMP_TIMEOUT_NS ll
    if r1 == IPPROTO_ICMP goto fwd_timeout
    r4 = TCP_CLOSING_TIMEOUT_NS ll
    r2 = r3
    r2 &= RV_F_CLOSING
    if r2 != 0 goto fwd_timeout
    r4 = TCP_ESTABLISHED_TIMEOUT_NS ll
    r2 = r3
    r2 &= RV_F_SEEN_REPLY
    if r2 != 0 goto fwd_timeout
    r4 = TCP_SYN_TIMEOUT_NS ll
fwd_timeout:
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r0 + RV_LAST_SEEN) = r1
    *(u64 *)(r8 + FV_LAST_SEEN) = r1
    r1 += r4
    *(u64 *)(r0 + RV_EXPIRES) = r1
    goto translate

    // --- new mapping: build the reverse value, then probe NAT_PROBES ports
nat_new:
    r1 = *(u32 *)(r10 + FKEY + K_SRC)
    *(u32 *)(r10 + RVAL + RV_ORIG_SRC) = r1
    r1 = *(u32 *)(r10 + REPLY_NODE)
    *(u32 *)(r10 + RVAL + RV_NODE) = r1
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + RVAL + RV_SLOT) = r1
    r1 = *(u16 *)(r10 + FKEY + K_SPORT)
    *(u16 *)(r10 + RVAL + RV_ORIG_SPORT) = r1
    r3 = *(u32 *)(r10 + SRC_FLAGS)      // RV_F_LOCAL or 0
    r1 = *(u32 *)(r10 + TCP_FLAGS)
    r1 &= TH_FIN + TH_RST
    if r1 == 0 goto new_no_fin
    r3 |= RV_F_CLOSING
new_no_fin:
    *(u16 *)(r10 + RVAL + RV_FLAGS) = r3 // flags + zero pad byte
    r1 = *(u8 *)(r10 + FKEY + K_PROTO)
    r4 = UDP_TIMEOUT_NS ll
    if r1 == IPPROTO_UDP goto new_timeout
    r4 = ICMP_TIMEOUT_NS ll
    if r1 == IPPROTO_ICMP goto new_timeout
    r4 = TCP_CLOSING_TIMEOUT_NS ll
    r2 = r3
    r2 &= RV_F_CLOSING
    if r2 != 0 goto new_timeout
    r4 = TCP_SYN_TIMEOUT_NS ll
new_timeout:
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r10 + RVAL + RV_LAST_SEEN) = r1
    r1 += r4
    *(u64 *)(r10 + RVAL + RV_EXPIRES) = r1

    // bucket = fmix32(((((src * C1) ^ dst) * C2 ^ ports) * C3) ^ proto) % NAT_PORT_COUNT,
    // on the little-endian loads of the forward key's words
    w9 = *(u32 *)(r10 + FKEY + K_SRC)
    w9 *= HASH_C1
    w1 = *(u32 *)(r10 + FKEY + K_DST)
    w9 ^= w1
    w9 *= HASH_C2
    w1 = *(u32 *)(r10 + FKEY + K_SPORT)
    w9 ^= w1
    w9 *= HASH_C3
    w1 = *(u32 *)(r10 + FKEY + K_PROTO)
    w9 ^= w1
    w1 = w9
    w1 >>= 16
    w9 ^= w1
    w9 *= HASH_C2
    w1 = w9
    w1 >>= 13
    w9 ^= w1
    w9 *= HASH_C3
    w1 = w9
    w1 >>= 16
    w9 ^= w1
    w9 %= NAT_PORT_COUNT

    // Candidate i is port NAT_PORT_MIN + (bucket + i) % NAT_PORT_COUNT. It is free
    // if the reverse key {egress ip, remote, port, remote port, proto} has no entry
    // (claimed with BPF_NOEXIST, so two CPUs cannot both take it), an expired one,
    // or one of this very flow (claimed with BPF_ANY). A failed claim tries the
    // next candidate. Unrolled: programs are loop-free.
// @probes-begin (generated: 16 identical blocks but for i; a test checks them)
nat_probe_0:
    w1 = w9
    w1 += 0
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_0
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_0
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_1
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_1
nat_claim_0:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_1:
    w1 = w9
    w1 += 1
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_1
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_1
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_2
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_2
nat_claim_1:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_2:
    w1 = w9
    w1 += 2
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_2
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_2
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_3
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_3
nat_claim_2:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_3:
    w1 = w9
    w1 += 3
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_3
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_3
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_4
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_4
nat_claim_3:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_4:
    w1 = w9
    w1 += 4
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_4
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_4
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_5
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_5
nat_claim_4:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_5:
    w1 = w9
    w1 += 5
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_5
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_5
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_6
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_6
nat_claim_5:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_6:
    w1 = w9
    w1 += 6
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_6
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_6
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_7
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_7
nat_claim_6:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_7:
    w1 = w9
    w1 += 7
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_7
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_7
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_8
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_8
nat_claim_7:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_8:
    w1 = w9
    w1 += 8
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_8
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_8
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_9
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_9
nat_claim_8:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_9:
    w1 = w9
    w1 += 9
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_9
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_9
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_10
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_10
nat_claim_9:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_10:
    w1 = w9
    w1 += 10
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_10
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_10
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_11
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_11
nat_claim_10:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_11:
    w1 = w9
    w1 += 11
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_11
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_11
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_12
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_12
nat_claim_11:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_12:
    w1 = w9
    w1 += 12
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_12
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_12
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_13
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_13
nat_claim_12:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_13:
    w1 = w9
    w1 += 13
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_13
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_13
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_14
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_14
nat_claim_13:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_14:
    w1 = w9
    w1 += 14
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_14
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_14
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_15
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_15
nat_claim_14:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_15:
    w1 = w9
    w1 += 15
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    r2 = r10
    r2 += RKEY
    r1 = map[egret_rnat_v4] ll
    call map_lookup_elem
    r4 = BPF_NOEXIST
    if r0 == 0 goto nat_claim_15
    r4 = BPF_ANY
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto nat_claim_15
    r1 = *(u32 *)(r0 + RV_ORIG_SRC)
    r2 = *(u32 *)(r10 + FKEY + K_SRC)
    if r1 != r2 goto nat_probe_16
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto nat_probe_16
nat_claim_15:
    r1 = map[egret_rnat_v4] ll
    r2 = r10
    r2 += RKEY
    r3 = r10
    r3 += RVAL
    call map_update_elem
    if r0 == 0 goto nat_claimed
nat_probe_16:
// @probes-end
    r7 = STAT_NAT_PORTS_EXHAUSTED
    goto drop

nat_claimed:
    // forward entry -> the port (a failed update only costs a re-probe later)
    r1 = *(u32 *)(r10 + RKEY + K_SRC)
    *(u32 *)(r10 + FVAL + FV_EGRESS_IP) = r1
    r1 = *(u16 *)(r10 + RKEY + K_SPORT)
    *(u32 *)(r10 + FVAL + FV_NAT_PORT) = r1 // port + zero pad
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + FVAL + FV_SLOT) = r1
    *(u32 *)(r10 + FVAL + FV_SLOT + 4) = 0
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r10 + FVAL + FV_CREATED) = r1
    *(u64 *)(r10 + FVAL + FV_LAST_SEEN) = r1
    r1 = map[egret_nat_v4] ll
    r2 = r10
    r2 += FKEY
    r3 = r10
    r3 += FVAL
    r4 = BPF_ANY
    call map_update_elem
    // count nat-created
    *(u32 *)(r10 + STATS_KEY) = STAT_NAT_CREATED
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto translate
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2

    // --- rewrite: source address and port, checksums, TTL (RKEY holds the new ones)
translate:
    r1 = *(u8 *)(r10 + FKEY + K_PROTO)
    if r1 == IPPROTO_ICMP goto xlate_port // ICMP has no pseudo-header
    r1 = r6
    r2 = *(u32 *)(r10 + CSUM_OFF)
    r3 = *(u32 *)(r10 + FKEY + K_SRC)
    r4 = *(u32 *)(r10 + RKEY + K_SRC)
    r5 = *(u32 *)(r10 + L4_FLAGS)
    r5 |= BPF_F_PSEUDO_HDR + CSUM_SIZE4
    call l4_csum_replace
    if r0 != 0 goto drop_rewrite_failed
xlate_port:
    r1 = r6
    r2 = *(u32 *)(r10 + CSUM_OFF)
    r3 = *(u16 *)(r10 + FKEY + K_SPORT)
    r4 = *(u16 *)(r10 + RKEY + K_SPORT)
    r5 = *(u32 *)(r10 + L4_FLAGS)
    r5 |= CSUM_SIZE2
    call l4_csum_replace
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = IP_CSUM
    r3 = *(u32 *)(r10 + FKEY + K_SRC)
    r4 = *(u32 *)(r10 + RKEY + K_SRC)
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
    r2 = IP_SADDR
    r3 = r10
    r3 += RKEY + K_SRC
    r4 = 4
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    r1 = r6
    r2 = *(u32 *)(r10 + PORT_OFF)
    r3 = r10
    r3 += RKEY + K_SPORT
    r4 = 2
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    // count snat, then out of the egress interface (FIB picks the next hop)
    *(u32 *)(r10 + STATS_KEY) = STAT_SNAT
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto snat_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
snat_send:
    r1 = *(u32 *)(r10 + EGRESS_IFINDEX)
    r2 = 0
    r3 = 0
    r4 = 0
    call redirect_neigh                 // TC_ACT_REDIRECT
    exit

// --- drop reasons of the SNAT path (count.s counts them)
drop_malformed:
    r7 = STAT_MALFORMED
    goto drop
drop_not_ipv4:
    r7 = STAT_NOT_IPV4
    goto drop
drop_no_egress_ip:
    r7 = STAT_NO_EGRESS_IP
    goto drop
drop_spoofed_source:
    r7 = STAT_SPOOFED_SOURCE
    goto drop
drop_fragment:
    r7 = STAT_FRAGMENT
    goto drop
drop_unsupported_proto:
    r7 = STAT_UNSUPPORTED_PROTO
    goto drop
drop_ttl_exceeded:
    r7 = STAT_TTL_EXCEEDED
    goto drop
drop_rewrite_failed:
    r7 = STAT_REWRITE_FAILED
    goto drop
drop_no_owner:
    r7 = STAT_NO_OWNER
    goto drop

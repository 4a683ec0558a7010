// ===== SNAT path, shared by egret_tunnel_in and egret_gw_local ====================
// One macro, `snat_path v`, expanded for IPv4 (entry `snat4`) and IPv6 (`snat6`):
// the families differ only in the steps named by \v (macros.s, defs.s).
// Entry: r6 = ctx; stack: SLOT, NODE (the sender's node address, zero = this
// node), SRC_FLAGS (RV_F_LOCAL for local pods). Registers for the whole path:
// r6 = ctx, r7 = frame offset of the L4 header (IPv4 34..74, IPv6 54), r8 = forward NAT value,
// r9 = hash bucket of the flow (port allocation).
// Order of checks: headers -> slot (no-egress-ip) -> allowed source
// (spoofed-source) -> floating slot: owner (no-owner; elsewhere: forward) ->
// fragment / protocol (fail closed) -> TTL -> NAT -> rewrite.

// TCP/UDP at r4: the ports into the keys (the source port in FKEY with the
// destination port after it, network order; the remote port in RKEY)
.macro snat_ports
    r1 = *(u32 *)(r4 + L4_SPORT)
    *(u32 *)(r10 + FKEY + K_SPORT) = r1
    r1 = *(u16 *)(r4 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1
.endm

// TCP/UDP: rewrite the source port
.macro snat_port_off
    *(u32 *)(r10 + PORT_OFF) = r7
.endm

// ICMP echo: the identifier (r1) is the source port, no destination port
.macro snat_icmp_keys
    *(u16 *)(r10 + FKEY + K_SPORT) = r1
    *(u16 *)(r10 + FKEY + K_DPORT) = 0
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
.endm

// NAT port candidate \i of family \v: port NAT_PORT_MIN + (bucket (w9) + \i) %
// NAT_PORT_COUNT, taken -> the next candidate (after this block), claimed ->
// nat_claimed\v
.macro nat_probe v, i
    w1 = w9
    w1 += \i
    w1 %= NAT_PORT_COUNT
    w1 += NAT_PORT_MIN
    r1 = be16 r1
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    lookup egret_rnat_v\v, RKEY
    r4 = BPF_NOEXIST
    if r0 == 0 goto claim\@            // free
    r4 = BPF_ANY
    expired claim\@                    // expired: free for any flow
    other_flow \v, next\@              // a live entry of another flow
claim\@:
    update egret_rnat_v\v, RKEY, RVAL
    if r0 == 0 goto nat_claimed\v
next\@:
.endm

.macro snat_path v
snat\v:
    addr_copy6 r10 + REPLY_NODE, r10 + NODE // replies go back to the sender unless the entry names the pod's node
    r1 = 0
    *(u32 *)(r10 + FWD) = r1
    // --- Ethernet + IPv4 header (options allowed: IHL 5..15)
    ip_header\v drop_malformed, drop_not_ip, drop_malformed
    addr_copy\v r10 + FKEY + K_SRC\v, r2 + SADDR\v
    addr_copy\v r10 + FKEY + K_DST\v, r2 + DADDR\v
    addr_copy\v r10 + RKEY + K_DST\v, r2 + DADDR\v  // the remote end: the same in both keys
    ip_proto_ttl\v
    *(u32 *)(r10 + FKEY + K_PROTO) = r1 // protocol + 3 zero pad bytes
    *(u32 *)(r10 + RKEY + K_PROTO) = r1

    // --- the slot must be served here and have an egress address of the family
    lookup egret_gw_slots, SLOT
    if r0 == 0 goto drop_no_egress_ip
    addr_zero\v r0 + GS_EGRESS_IP\v, drop_no_egress_ip
    addr_copy\v r10 + RKEY + K_SRC\v, r0 + GS_EGRESS_IP\v  // translated source = the egress IP
    r1 = *(u32 *)(r0 + GS_IFINDEX)
    *(u32 *)(r10 + EGRESS_IFINDEX) = r1
    r1 = *(u32 *)(r0 + GS_FLAGS)
    *(u32 *)(r10 + SLOT_FLAGS) = r1

    // --- the inner source must be allowed for this slot, from this sender
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + ALLOWK + GA_KEY_SLOT) = r1
    addr_copy\v r10 + ALLOWK + GA_KEY_SRC\v, r10 + FKEY + K_SRC\v
    lookup egret_gw_allowed_v\v, ALLOWK
    if r0 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r0 + GA_FLAGS)
    r1 &= GA_F_LOCAL
    r2 = *(u32 *)(r10 + SRC_FLAGS)      // RV_F_LOCAL == GA_F_LOCAL
    if r1 != r2 goto allowed_mismatch\v   // local pods only locally, remote ones only by tunnel (but below)
    if r1 != 0 goto allowed_local\v
    addr_zero6 r0 + GA_NODE, allowed\v   // any node may send this pod's traffic
    addr_copy6 r10 + REPLY_NODE, r0 + GA_NODE // replies go straight to the pod's node
    addr_ne6 r0 + GA_NODE, r10 + NODE, floating_peer\v
    goto allowed\v
    // a node cannot send another node's pods, unless it is a candidate of this
    // floating slot forwarding them (egret_gw_peers)
floating_peer\v:
    r1 = *(u32 *)(r10 + SLOT_FLAGS)
    r1 &= GS_F_FLOATING
    if r1 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + PEERK + GP_KEY_SLOT) = r1
    addr_copy6 r10 + PEERK + GP_KEY_PEER, r10 + NODE
    lookup egret_gw_peers, PEERK
    if r0 == 0 goto drop_spoofed_source
    r1 = 1
    *(u32 *)(r10 + FWD) = r1            // forwarded by a peer: never forwarded again
    goto allowed\v
allowed_mismatch\v:
    // a pod of this node that a peer of this floating slot forwarded back (the
    // pod's first live candidate was that peer, this node owns the slot):
    // allowed as above, and its replies go to its veth like any local pod's
    // (set now: the packet is dropped if the check fails)
    if r1 == 0 goto drop_spoofed_source // a remote pod's address from a local veth
    r1 = RV_F_LOCAL
    *(u32 *)(r10 + SRC_FLAGS) = r1
    node_clear REPLY_NODE
    goto floating_peer\v
allowed_local\v:
    // a local pod: the packet must come in on that pod's own veth
    lookup egret_local_eps_v\v, FKEY + K_SRC\v
    if r0 == 0 goto drop_spoofed_source
    r1 = *(u32 *)(r0 + LE_IFINDEX)
    r2 = *(u32 *)(r6 + SKB_IFINDEX)
    if r1 != r2 goto drop_spoofed_source
allowed\v:

    // --- a floating slot: only its owner SNATs, the other candidates forward
    r1 = *(u32 *)(r10 + SLOT_FLAGS)
    r1 &= GS_F_FLOATING
    if r1 == 0 goto owned\v
    lookup egret_float_owner, SLOT
    if r0 == 0 goto drop_no_owner       // no owner known
    r1 = *(u32 *)(r0 + FO_FLAGS)
    r1 &= FO_F_SELF
    if r1 != 0 goto owned\v
    addr_zero6 r0 + FO_OWNER, drop_no_owner
    addr_copy6 r10 + TO_NODE, r0 + FO_OWNER
    // a peer forwarded it because it thinks we own the slot: never forward it
    // again (no ping-pong while the candidates disagree). A packet straight
    // from its pod's node is forwarded even when that node is a peer: its pod
    // runs on the owner, whose first live candidate was this node.
    r1 = *(u32 *)(r10 + FWD)
    if r1 != 0 goto drop_no_owner
forward\v:
    // tunnel key {tunnel_id = slot, remote = owner, ttl 64}, count forwarded,
    // out of egret0 to the owner (unchanged: it SNATs)
    tunnel_to_slot TO_NODE, STAT_FORWARDED
owned\v:

    // --- fragments and L4 header (pointers again: the calls clobbered r2-r5)
    frame L3_END\v, drop_malformed
    l4_at\v drop_fragment                // no L4 header: cannot be translated
    l4_demux \v, l4_tcp\v, l4_udp\v, l4_icmp\v, drop_unsupported_proto
l4_tcp\v:
    l4_tcp drop_malformed, snat_ports, snat_port_off
    goto l4_done\v
l4_udp\v:
    l4_udp drop_malformed, snat_ports, snat_port_off
    goto l4_done\v
l4_icmp\v:
    // only echo requests go out; the identifier plays the source port
    l4_icmp drop_malformed, ICMP_ECHO\v, drop_unsupported_proto, snat_icmp_keys
l4_done\v:

    // --- TTL / hop limit: redirect_neigh does not decrement it, so we do
    ttl_decrement drop_ttl_exceeded

    // --- existing mapping? (forward entry, then its reverse entry = the state)
    call ktime_get_ns
    *(u64 *)(r10 + NOW) = r0
    lookup egret_nat_v\v, FKEY
    if r0 == 0 goto nat_new\v
    r8 = r0
    addr_ne\v r8 + FV_EGRESS_IP\v, r10 + RKEY + K_SRC\v, nat_new\v  // the slot's egress IP changed: map again
    r1 = *(u16 *)(r8 + FV_NAT_PORT)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    lookup egret_rnat_v\v, RKEY
    if r0 == 0 goto nat_new\v             // reverse entry evicted
    other_flow \v, nat_new\v                 // the port went to another flow meanwhile
    expired nat_new\v                     // expired: a new connection
    r9 = r0                             // the reverse entry (r9 is the port bucket only on nat_new)
    // refresh the state: a bare SYN restarts it, FIN/RST close it
    r3 = *(u8 *)(r9 + RV_FLAGS)
    *(u32 *)(r10 + FLAGS_OLD) = r3
    r1 = *(u32 *)(r10 + TCP_FLAGS)
    r2 = r1
    r2 &= TH_SYN + TH_ACK
    if r2 != TH_SYN goto fwd_no_syn\v
    r3 &= RV_F_LOCAL
fwd_no_syn\v:
    fin_rst_closes r2, r1
    *(u8 *)(r9 + RV_FLAGS) = r3
    conn_events \v, REPLY_NODE
    r3 = *(u8 *)(r9 + RV_FLAGS)
    // timeout by protocol and state -> r4
    timeout FKEY, fwd_timeout\v
    timeout_if_flag RV_F_SEEN_REPLY, TCP_ESTABLISHED_TIMEOUT_NS, fwd_timeout\v
    r4 = TCP_SYN_TIMEOUT_NS ll
fwd_timeout\v:
    seen_now r9, "*(u64 *)(r8 + FV_LAST_SEEN) = r1"
    goto translate\v

    // --- new mapping: build the reverse value, then probe NAT_PROBES ports
nat_new\v:
    stack_zero RVAL, 8                  // both values whole, padding zero: RV_SIZE6 / 8 words,
    stack_zero FVAL, 5                  // FV_SIZE6 / 8 (the verifiers check every byte is written)
    addr_copy\v r10 + RVAL + RV_ORIG_SRC\v, r10 + FKEY + K_SRC\v
    addr_copy6 r10 + RVAL + RV_NODE, r10 + REPLY_NODE
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + RVAL + RV_SLOT) = r1
    r1 = *(u16 *)(r10 + FKEY + K_SPORT)
    *(u16 *)(r10 + RVAL + RV_ORIG_SPORT) = r1
    r3 = *(u32 *)(r10 + SRC_FLAGS)      // RV_F_LOCAL or 0
    conn_state r10 + RVAL, u16, FKEY, TCP_SYN_TIMEOUT_NS

    // bucket = fmix32(((((src * C1) ^ dst) * C2 ^ ports) * C3) ^ proto) % NAT_PORT_COUNT,
    // on the little-endian loads of the forward key's words (an IPv6 address
    // folded to one word: the XOR of its four)
    addr_fold\v w9, r10 + FKEY + K_SRC\v
    w9 *= HASH_C1
    addr_fold\v w1, r10 + FKEY + K_DST\v
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
    .set NAT_CANDIDATE, 0
.rept NAT_PROBES
    nat_probe \v, NAT_CANDIDATE
    .set NAT_CANDIDATE, NAT_CANDIDATE + 1
.endr
    r7 = STAT_NAT_PORTS_EXHAUSTED
    goto drop

nat_claimed\v:
    // forward entry -> the port (a failed update only costs a re-probe later)
    addr_copy\v r10 + FVAL + FV_EGRESS_IP\v, r10 + RKEY + K_SRC\v
    r1 = *(u16 *)(r10 + RKEY + K_SPORT)
    *(u32 *)(r10 + FVAL + FV_NAT_PORT) = r1 // port + zero pad
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + FVAL + FV_SLOT) = r1
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r10 + FVAL + FV_CREATED) = r1
    *(u64 *)(r10 + FVAL + FV_LAST_SEEN) = r1
    update egret_nat_v\v, FKEY, FVAL, "r4 = BPF_ANY"
    count STAT_NAT_CREATED
    r3 = *(u8 *)(r10 + RVAL + RV_FLAGS)
    flow_event \v, FLOW_CREATED, REPLY_NODE

    // --- rewrite: source address and port, checksums, TTL (RKEY holds the new ones)
translate\v:
    nat_rewrite\v FKEY + K_PROTO, SADDR\v, FKEY + K_SRC\v, RKEY + K_SRC\v, FKEY + K_SPORT, RKEY + K_SPORT
    // count snat, then out of the egress interface (FIB picks the next hop)
    count STAT_SNAT
    r1 = *(u32 *)(r10 + EGRESS_IFINDEX)
    r2 = 0
    r3 = 0
    r4 = 0
    call redirect_neigh                 // TC_ACT_REDIRECT
    exit
.endm

    snat_path 4
    snat_path 6

// --- drop reasons of the SNAT path (count.s counts them)
    drop_stub malformed, STAT_MALFORMED
    drop_stub not_ip, STAT_NOT_IP
    drop_stub no_egress_ip, STAT_NO_EGRESS_IP
    drop_stub spoofed_source, STAT_SPOOFED_SOURCE
    drop_stub fragment, STAT_FRAGMENT
    drop_stub unsupported_proto, STAT_UNSUPPORTED_PROTO
    drop_stub ttl_exceeded, STAT_TTL_EXCEEDED
    drop_stub rewrite_failed, STAT_REWRITE_FAILED
    drop_stub no_owner, STAT_NO_OWNER

// egret gateway datapath: the steps the programs share, as assembler macros.
//
// Assembled right after defs.s into every template (see README.md); emits no
// instructions of its own. Each step is written once here and expanded where a
// program takes it (`.macro`/`.rept`/`.irp` as in GNU as and llvm-mc; see
// bpf/README.md). Conventions: r6 = ctx everywhere; after `frame`, r2 = data and
// r3 = data_end; r7 = the L4 offset once `ip_header4`/`ip_header6` ran; a failing
// check jumps to the label its caller names (a `drop_<reason>` stub or `pass`).
// A macro whose name ends in 4 or 6 is the step of that family; steps that take
// `v` work for both (defs.s lists what differs by family).

// ----- packet bounds and headers ----------------------------------------------------

// \ptr = \base + \len; past data_end (r3) -> \fail
.macro bounds base, ptr, len, fail
    \ptr = \base
    \ptr += \len
    if \ptr > r3 goto \fail
.endm

// r2 = data, r3 = data_end (again after helper calls); fewer than \len bytes -> \fail
.macro frame len, fail
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    bounds r2, r4, \len, \fail
.endm

// Ethernet + IPv4 header, options allowed (IHL 5..15): r7 = the L4 offset (34..74)
.macro ip_header4 short, not_ip, bad
    frame IPV4_END, \short
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 != ETH_P_IP_LE goto \not_ip
    r1 = *(u8 *)(r2 + IP_VIHL)
    r5 = r1
    r5 &= 0xf0
    if r5 != 0x40 goto \bad             // version 4
    r1 &= 0x0f
    if r1 < 5 goto \bad                 // IHL below 20 bytes
    r1 <<= 2
    r1 += ETH_HLEN
    r7 = r1                             // L4 offset: 34..74
.endm

// Ethernet + IPv6 header: r7 = the L4 offset (54). Extension headers are not
// walked: the next header must be the L4 protocol (else the demux's `other`)
.macro ip_header6 short, not_ip, bad
    frame IPV6_END, \short
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 != ETH_P_IPV6_LE goto \not_ip
    r1 = *(u8 *)(r2 + ETH_HLEN)
    r1 &= 0xf0
    if r1 != 0x60 goto \bad             // version 6
    r7 = IPV6_END
.endm

// TTL_OLD = the TTL (IPv4: with the protocol above it, for the header
// checksum); r1 = the L4 protocol
.macro ip_proto_ttl4
    r1 = *(u16 *)(r2 + IP_TTL)
    *(u16 *)(r10 + TTL_OLD) = r1
    r1 = *(u8 *)(r2 + IP_PROTO)
.endm
.macro ip_proto_ttl6
    r1 = *(u8 *)(r2 + IP6_HOPLIMIT)
    *(u16 *)(r10 + TTL_OLD) = r1
    r1 = *(u8 *)(r2 + IP6_NEXTHDR)
.endm

// r4 = the L4 header, r1 = its protocol; a packet without its L4 header (an
// IPv4 non-first fragment, an IPv6 fragment header) -> \frag: no ports to
// translate or match
.macro l4_at4 frag
    r1 = *(u16 *)(r2 + IP_FRAG)
    r1 = be16 r1
    r1 &= IP_OFFMASK
    if r1 != 0 goto \frag
    r4 = r2
    r4 += r7
    r1 = *(u8 *)(r2 + IP_PROTO)
.endm
.macro l4_at6 frag
    r4 = r2
    r4 += r7
    r1 = *(u8 *)(r2 + IP6_NEXTHDR)
    if r1 == IPPROTO_FRAGMENT goto \frag
.endm

// L4 demux on the protocol in r1 (\v: which ICMP)
.macro l4_demux v, tcp, udp, icmp, other
    if r1 == IPPROTO_TCP goto \tcp
    if r1 == IPPROTO_UDP goto \udp
    if r1 == ICMP_PROTO\v goto \icmp
    goto \other
.endm

// CSUM_OFF = the frame offset of the L4 checksum, \off into the L4 header
.macro csum_at off
    r1 = r7
    r1 += \off
    *(u32 *)(r10 + CSUM_OFF) = r1
.endm

// TCP header at r4 (20 bytes, else \fail): TCP_FLAGS, CSUM_OFF, L4_FLAGS; the
// optional steps \keys (ports into the keys) and \port (PORT_OFF) are the caller's
.macro l4_tcp fail, keys, port
    bounds r4, r5, TCP_HLEN, \fail
    \keys
    r1 = *(u8 *)(r4 + TCP_FLAGS_OFF)
    *(u32 *)(r10 + TCP_FLAGS) = r1
    csum_at TCP_CSUM_OFF
    \port
    *(u32 *)(r10 + L4_FLAGS) = 0
.endm

// UDP header at r4 (8 bytes, else \fail), as l4_tcp; a zero checksum (none) stays zero
.macro l4_udp fail, keys, port
    bounds r4, r5, UDP_HLEN, \fail
    \keys
    *(u32 *)(r10 + TCP_FLAGS) = 0
    csum_at UDP_CSUM_OFF
    \port
    *(u32 *)(r10 + L4_FLAGS) = BPF_F_MARK_MANGLED_0
.endm

// ICMP header at r4 (8 bytes, else \fail) of type \type (else \other); r1 = the
// identifier (it plays the port) for \keys; PORT_OFF = the identifier's offset
.macro l4_icmp fail, type, other, keys
    bounds r4, r5, ICMP_HLEN, \fail
    r1 = *(u8 *)(r4 + 0)                // type
    if r1 != \type goto \other
    r1 = *(u16 *)(r4 + ICMP_ID_OFF)
    \keys
    *(u32 *)(r10 + TCP_FLAGS) = 0
    csum_at ICMP_CSUM_OFF
    r1 = r7
    r1 += ICMP_ID_OFF
    *(u32 *)(r10 + PORT_OFF) = r1
    *(u32 *)(r10 + L4_FLAGS) = 0
.endm

// TTL <= 1 -> \fail; else TTL_NEW = TTL_OLD with the TTL one less (the redirect
// helpers do not decrement it)
.macro ttl_decrement fail
    r1 = *(u8 *)(r10 + TTL_OLD)         // low byte: the TTL
    if r1 <= 1 goto \fail
    r1 = *(u16 *)(r10 + TTL_OLD)
    r1 += -1
    *(u16 *)(r10 + TTL_NEW) = r1
.endm

// ----- addresses (\a, \b: memory operands `reg + offset`) ---------------------------
// copied and compared as 32-bit words (IPv6: four), so every access is aligned
// on the stack, in map values and, NET_IP_ALIGN assumed, in the packet

// the address at \src to \dst (r1 clobbered)
.macro addr_copy4 dst, src
    r1 = *(u32 *)(\src)
    *(u32 *)(\dst) = r1
.endm
.macro addr_copy6 dst, src
.irp w, 0, 4, 8, 12
    addr_copy4 \dst + \w, \src + \w
.endr
.endm

// the addresses at \a and \b differ -> \ne (r1, r2 clobbered)
.macro addr_ne4 a, b, ne
    r1 = *(u32 *)(\a)
    r2 = *(u32 *)(\b)
    if r1 != r2 goto \ne
.endm
.macro addr_ne6 a, b, ne
.irp w, 0, 4, 8, 12
    addr_ne4 \a + \w, \b + \w, \ne
.endr
.endm

// the address at \a is all zero -> \zero (r1, r2 clobbered)
.macro addr_zero4 a, zero
    r1 = *(u32 *)(\a)
    if r1 == 0 goto \zero
.endm
.macro addr_zero6 a, zero
    r1 = *(u32 *)(\a)
.irp w, 4, 8, 12
    r2 = *(u32 *)(\a + \w)
    r1 |= r2
.endr
    if r1 == 0 goto \zero
.endm

// \reg (a 32-bit register) = the address at \a folded to 32 bits, the XOR of
// its words, for the flow hash (w2 clobbered)
.macro addr_fold4 reg, a
    \reg = *(u32 *)(\a)
.endm
.macro addr_fold6 reg, a
    \reg = *(u32 *)(\a)
.irp w, 4, 8, 12
    w2 = *(u32 *)(\a + \w)
    \reg ^= w2
.endr
.endm

// \words u64s of the stack from \base on = 0 (r1 = 0)
.macro stack_zero base, words
    r1 = 0
    .set STACK_ZERO_AT, 0
.rept \words
    *(u64 *)(r10 + \base + STACK_ZERO_AT) = r1
    .set STACK_ZERO_AT, STACK_ZERO_AT + 8
.endr
.endm

// ----- maps -------------------------------------------------------------------------

// r0 = bpf_map_lookup_elem(&\map, r10 + \key)
.macro lookup map, key
    r2 = r10
    r2 += \key
    r1 = map[\map] ll
    call map_lookup_elem
.endm

// bpf_map_update_elem(&\map, r10 + \key, r10 + \value, r4); \flags sets r4 (or
// the caller did)
.macro update map, key, value, flags
    r1 = map[\map] ll
    r2 = r10
    r2 += \key
    r3 = r10
    r3 += \value
    \flags
    call map_update_elem
.endm

// egret_gw_stats[\stat] += {1 packet, skb->len bytes}; \stat: a STAT_* or a
// register. Per-CPU, so plain adds; an index out of range counts nothing.
.macro count stat
    *(u32 *)(r10 + STATS_KEY) = \stat
    lookup egret_gw_stats, STATS_KEY
    if r0 == 0 goto counted\@
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
counted\@:
.endm

// `drop_\reason:` r7 = \stat, then the counted drop (count.s)
.macro drop_stub reason, stat
drop_\reason:
    r7 = \stat
    goto drop
.endm

// ----- connection state -------------------------------------------------------------

// a TCP FIN or RST (in \reg, loaded from \flags) closes: r3 |= RV_F_CLOSING
.macro fin_rst_closes reg, flags
    \reg = \flags
    \reg &= TH_FIN + TH_RST
    if \reg == 0 goto open\@
    r3 |= RV_F_CLOSING
open\@:
.endm

// r4 = \ns, and to \done if the protocol in r1 is \proto
.macro timeout_if_proto proto, ns, done
    r4 = \ns ll
    if r1 == \proto goto \done
.endm

// r4 = \ns, and to \done if the flags in r3 have \flag
.macro timeout_if_flag flag, ns, done
    r4 = \ns ll
    r2 = r3
    r2 &= \flag
    if r2 != 0 goto \done
.endm

// r4 = the timeout for the protocol at \key + K_PROTO and the RV_F_* flags in r3,
// as far as UDP, ICMP and closing TCP decide it (to \done); the caller picks the
// TCP timeouts that remain
.macro timeout key, done
    r1 = *(u8 *)(r10 + \key + K_PROTO)
    timeout_if_proto IPPROTO_UDP, UDP_TIMEOUT_NS, \done
    timeout_if_proto IPPROTO_ICMP, ICMP_TIMEOUT_NS, \done
    timeout_if_proto IPPROTO_ICMPV6, ICMP_TIMEOUT_NS, \done
    timeout_if_flag RV_F_CLOSING, TCP_CLOSING_TIMEOUT_NS, \done
.endm

// the connection (the reverse value at \rv) is seen now and expires r4 ns from
// now; \also: one more store of r1 = now
.macro seen_now rv, also
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(\rv + RV_LAST_SEEN) = r1
    \also
    r1 += r4
    *(u64 *)(\rv + RV_EXPIRES) = r1
.endm

// the connection state (the reverse value at \rv) from the flags in r3, a TCP FIN
// or RST closing it: stored as \size (u16: the flags byte and its zero pad), then
// seen now, expiring after the timeout for the protocol at \key + K_PROTO
// (\tcp: the TCP timeout when not closing)
.macro conn_state rv, size, key, tcp
    fin_rst_closes r1, *(u32 *)(r10 + TCP_FLAGS)
    *(\size *)(\rv + RV_FLAGS) = r3
    timeout \key, timeout\@
    r4 = \tcp ll
timeout\@:
    seen_now \rv
.endm

// the reverse entry at r0 is not of this flow (original source and port) -> \other
.macro other_flow v, other
    addr_ne\v r0 + RV_ORIG_SRC\v, r10 + FKEY + K_SRC\v, \other
    r1 = *(u16 *)(r0 + RV_ORIG_SPORT)
    r2 = *(u16 *)(r10 + FKEY + K_SPORT)
    if r1 != r2 goto \other
.endm

// the reverse entry at r0 has expired -> \done
.macro expired done
    r1 = *(u64 *)(r0 + RV_EXPIRES)
    r2 = *(u64 *)(r10 + NOW)
    if r1 <= r2 goto \done
.endm

// ----- flow events (egret_flow_events: a ring buffer of layout::flow_event) --------

// A flow event of kind \kind (FLOW_*, an immediate or a register other than
// r1) for the connection of family \v: the pod (address, port) at FKEY, the
// remote end, its port, the NAT port, the egress IP and the protocol at RKEY,
// SLOT, NOW, the pod's node at r10 + \node, the RV_F_* flags in r3. A full
// ring buffer costs the event, counted flow-event-dropped, never the packet:
// bpf_ringbuf_output does not wait. r0-r5 clobbered.
.macro flow_event v, kind, node
    stack_zero EVENT, EV_WORDS
    *(u8 *)(r10 + EVENT + EV_KIND) = \kind
    *(u8 *)(r10 + EVENT + EV_FAMILY) = \v
    *(u8 *)(r10 + EVENT + EV_FLAGS) = r3
    r1 = *(u8 *)(r10 + RKEY + K_PROTO)
    *(u8 *)(r10 + EVENT + EV_PROTO) = r1
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + EVENT + EV_SLOT) = r1
    r1 = *(u64 *)(r10 + NOW)
    *(u64 *)(r10 + EVENT + EV_TIME) = r1
    r1 = *(u16 *)(r10 + FKEY + K_SPORT)
    *(u16 *)(r10 + EVENT + EV_SPORT) = r1
    r1 = *(u16 *)(r10 + RKEY + K_DPORT)
    *(u16 *)(r10 + EVENT + EV_DPORT) = r1
    r1 = *(u16 *)(r10 + RKEY + K_SPORT)
    *(u16 *)(r10 + EVENT + EV_NAT_PORT) = r1
    addr_copy\v r10 + EVENT + EV_SRC, r10 + FKEY + K_SRC\v
    addr_copy\v r10 + EVENT + EV_DST, r10 + RKEY + K_DST\v
    addr_copy\v r10 + EVENT + EV_EGRESS_IP, r10 + RKEY + K_SRC\v
    addr_copy6 r10 + EVENT + EV_NODE, r10 + \node
    r1 = map[egret_flow_events] ll
    r2 = r10
    r2 += EVENT
    r3 = EV_SIZE
    r4 = 0                              // adaptive wakeup: the reader is woken only when it has caught up
    call ringbuf_output
    if r0 == 0 goto sent\@
    count STAT_FLOW_EVENT_DROPPED
sent\@:
.endm

// The events of a state change of a live connection, from FLAGS_OLD to the
// flags in r3: closing now -> FLOW_CLOSED; closing before and not now (a bare
// SYN restarted the mapping: a new connection on the same tuple) ->
// FLOW_CREATED; otherwise none. r0-r5 clobbered.
.macro conn_events v, node
    r1 = *(u32 *)(r10 + FLAGS_OLD)
    r1 ^= r3
    r1 &= RV_F_CLOSING
    if r1 == 0 goto same\@             // closing unchanged: no event
    r5 = FLOW_CLOSED
    r1 = r3
    r1 &= RV_F_CLOSING
    if r1 != 0 goto event\@
    r5 = FLOW_CREATED
event\@:
    flow_event \v, r5, \node
same\@:
.endm

// ----- rewriting the packet (any helper failing -> drop_rewrite_failed) ---------------

// the L4 checksum (at CSUM_OFF) for a field changing from \old to \new
.macro l4_csum old, new, flags
    r1 = r6
    r2 = *(u32 *)(r10 + CSUM_OFF)
    r3 = \old
    r4 = \new
    r5 = *(u32 *)(r10 + L4_FLAGS)
    r5 |= \flags
    call l4_csum_replace
    if r0 != 0 goto drop_rewrite_failed
.endm

// the IPv4 header checksum (at \at: the packet's own, or an ICMP error's inner
// header's) for a field changing from \old to \new
.macro l3_csum old, new, size, at=IP_CSUM
    r1 = r6
    r2 = \at
    r3 = \old
    r4 = \new
    r5 = \size
    call l3_csum_replace
    if r0 != 0 goto drop_rewrite_failed
.endm

// \size bytes of the stack at \slot into the frame at offset \field
.macro store field, slot, size
    r1 = r6
    r2 = \field
    r3 = r10
    r3 += \slot
    r4 = \size
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
.endm

// NAT: the address at frame offset \field and the port at PORT_OFF change from
// the stack's \old_addr/\old_port to \new_addr/\new_port (\proto: the stack's
// protocol byte), with their checksums (BPF_F_PSEUDO_HDR for the address, which
// ICMP does not have), and the TTL to TTL_NEW
.macro nat_rewrite4 proto, field, old_addr, new_addr, old_port, new_port
    r1 = *(u8 *)(r10 + \proto)
    if r1 == IPPROTO_ICMP goto port\@  // ICMP has no pseudo-header
    l4_csum *(u32 *)(r10 + \old_addr), *(u32 *)(r10 + \new_addr), BPF_F_PSEUDO_HDR + CSUM_SIZE4
port\@:
    l4_csum *(u16 *)(r10 + \old_port), *(u16 *)(r10 + \new_port), CSUM_SIZE2
    l3_csum *(u32 *)(r10 + \old_addr), *(u32 *)(r10 + \new_addr), CSUM_SIZE4
    l3_csum *(u16 *)(r10 + TTL_OLD), *(u16 *)(r10 + TTL_NEW), CSUM_SIZE2
    store IP_TTL, TTL_NEW, 2
    store \field, \new_addr, 4
    store *(u32 *)(r10 + PORT_OFF), \new_port, 2
.endm

// IPv6 likewise: no header checksum; the address is in the pseudo-header of
// every L4 checksum (ICMPv6 too), changed a 32-bit word at a time; the hop limit
// to TTL_NEW
.macro nat_rewrite6 proto, field, old_addr, new_addr, old_port, new_port
.irp w, 0, 4, 8, 12
    l4_csum *(u32 *)(r10 + \old_addr + \w), *(u32 *)(r10 + \new_addr + \w), BPF_F_PSEUDO_HDR + CSUM_SIZE4
.endr
    l4_csum *(u16 *)(r10 + \old_port), *(u16 *)(r10 + \new_port), CSUM_SIZE2
    store IP6_HOPLIMIT, TTL_NEW, 1
    store \field, \new_addr, 16
    store *(u32 *)(r10 + PORT_OFF), \new_port, 2
.endm

// ----- sending ------------------------------------------------------------------------

// r0 = \helper(skb, TUNKEY, 44, \flags): bpf_skb_get_tunnel_key / bpf_skb_set_tunnel_key
.macro tunnel_key_call helper, flags
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = \flags
    call \helper
.endm

// TUNKEY = the received packet's tunnel key, of either underlay family;
// TK_FLAGS = BPF_F_TUNINFO_IPV6 for IPv6, else 0 (the helper refuses the
// wrong family with -EPROTO). No tunnel metadata -> \fail
.macro tunnel_key_get fail
    tunnel_key_call skb_get_tunnel_key, 0
    r1 = 0
    if r0 == 0 goto got\@
    tunnel_key_call skb_get_tunnel_key, BPF_F_TUNINFO_IPV6
    if r0 != 0 goto \fail
    r1 = BPF_F_TUNINFO_IPV6
got\@:
    *(u32 *)(r10 + TK_FLAGS) = r1
.endm

// TUNKEY = all zero (44 bytes)
.macro tunnel_key_clear
    r1 = 0
.irp off, 0, 8, 16, 24, 32
    *(u64 *)(r10 + TUNKEY + \off) = r1
.endr
    *(u32 *)(r10 + TUNKEY + 40) = r1
.endm

// ----- node addresses (layout::NODE_ADDR: 16 bytes, IPv4 as ::ffff:a.b.c.d) ---------

// the node address at r10 + \dst (8-aligned) = TUNKEY's \field (TK_REMOTE or
// TK_LOCAL) in the family TK_FLAGS names (IPv4: host order in the key)
.macro node_from_key dst, field
    r1 = *(u32 *)(r10 + TK_FLAGS)
    if r1 != 0 goto v6\@
    r1 = 0
    *(u64 *)(r10 + \dst) = r1
    *(u32 *)(r10 + \dst + 8) = NODE_V4_PREFIX_LE
    r1 = *(u32 *)(r10 + TUNKEY + \field)
    r1 = be32 r1                        // network order
    *(u32 *)(r10 + \dst + 12) = r1
    goto done\@
v6\@:
    addr_copy6 r10 + \dst, r10 + TUNKEY + \field
done\@:
.endm

// TUNKEY's remote = the node address at r10 + \src (8-aligned); TK_FLAGS = its family's
.macro key_from_node src
    r1 = *(u32 *)(r10 + \src + 8)
    if w1 != NODE_V4_PREFIX_LE goto v6\@
    r1 = *(u64 *)(r10 + \src)
    if r1 != 0 goto v6\@
    r1 = *(u32 *)(r10 + \src + 12)
    r1 = be32 r1                        // host order
    *(u32 *)(r10 + TUNKEY + TK_REMOTE) = r1
    *(u32 *)(r10 + TK_FLAGS) = 0
    goto done\@
v6\@:
    addr_copy6 r10 + TUNKEY + TK_REMOTE, r10 + \src
    *(u32 *)(r10 + TK_FLAGS) = BPF_F_TUNINFO_IPV6
done\@:
.endm

// the node address at r10 + \at (8-aligned) = zero: this node
.macro node_clear at
    stack_zero \at, 2
.endm

// through the tunnel to the node address at r10 + \node with the slot's VNI,
// counted \stat: out of egret0 (egress: BPF_F_INGRESS would drop it as
// OTHERHOST); the packet is not changed here
.macro tunnel_to_slot node, stat
    tunnel_key_clear
    r1 = *(u32 *)(r10 + SLOT)
    *(u32 *)(r10 + TUNKEY + TK_ID) = r1
    key_from_node \node
    *(u8 *)(r10 + TUNKEY + TK_TTL) = TUNNEL_TTL
    tunnel_key_call skb_set_tunnel_key, "*(u32 *)(r10 + TK_FLAGS)"
    if r0 != 0 goto drop_rewrite_failed
    count \stat
    w1 = %tunnel_ifindex                // egret0
    r2 = 0
    call redirect                       // TC_ACT_REDIRECT
    exit
.endm

// to a pod of this node, counted \stat: bpf_redirect_neigh(\ifindex, NH, 20, 0)
// with the pod (family \v) as next hop (\nexthop stores it at NH + 4, or the
// caller did), so the frame gets the veth's source MAC and the pod's MAC
.macro to_pod v, ifindex, stat, nexthop
    *(u32 *)(r10 + NH) = AF\v           // bpf_redir_neigh.nh_family
    \nexthop
    nh_rest\v
    count \stat
    r1 = \ifindex
    r2 = r10
    r2 += NH
    r3 = REDIR_NEIGH_SIZE
    r4 = 0
    call redirect_neigh                 // TC_ACT_REDIRECT
    exit
.endm

// the rest of bpf_redir_neigh's address union after an IPv4 next hop: zero
.macro nh_rest4
    r1 = 0
    *(u64 *)(r10 + NH + 8) = r1
    *(u32 *)(r10 + NH + 16) = r1
.endm
.macro nh_rest6
.endm

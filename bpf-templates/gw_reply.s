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
// ICMP errors (IPv4: destination unreachable, time exceeded; IPv6: destination
// unreachable, packet too big, time exceeded) about a translated connection are
// ours too: the datagram they carry is the translated packet, so its tuple is the
// reverse key as it stands. They are translated back — outer destination and
// inner source to the pod, inner port / echo identifier to the pod's, with the
// checksums that cover them — and delivered like a reply (the connection's
// state is not refreshed), so Path MTU Discovery works through the gateway.
// Registers: r6 = ctx, r7 = L4 offset (IPv4 34..74, IPv6 54), r8 = reverse NAT entry.
.equ ORIG_ADDR, FKEY + K_SRC6       // the pod address to restore (4 or 16 B; 8-aligned)
.equ ORIG_PORT, FKEY + K_SPORT      // the pod port / identifier to restore (be16)

// ICMP echo reply: the identifier (r1) is the NAT identifier, no remote port
.macro reply_icmp_keys
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
.endm

// An ICMP error's embedded datagram, at r5 (its header checked by the caller;
// \hlen = its header length, \echo = the echo request type, \off = its frame
// offset): the reverse key from its tuple as it stands, PORT_OFF and
// ERR_ADDR_OFF; anything but TCP, UDP or an echo request -> pass
.macro icmp_error_inner v, hlen, echo, off
    addr_copy\v r10 + RKEY + K_SRC\v, r5 + SADDR\v - ETH_HLEN   // the egress IP
    addr_copy\v r10 + RKEY + K_DST\v, r5 + DADDR\v - ETH_HLEN   // the remote end
    r1 = r7
    r1 += ICMP_HLEN + SADDR\v - ETH_HLEN
    *(u32 *)(r10 + ERR_ADDR_OFF) = r1
    r1 = *(u8 *)(r5 + \off)
    *(u32 *)(r10 + RKEY + K_PROTO) = r1 // protocol + 3 zero pad bytes
    r5 += \hlen                         // its L4 header (8 bytes checked)
    if r1 == IPPROTO_TCP goto ports\@
    if r1 == IPPROTO_UDP goto ports\@
    if r1 != ICMP_PROTO\v goto pass
    r1 = *(u8 *)(r5 + 0)
    if r1 != \echo goto pass            // an echo request: the identifier is the port
    r1 = *(u16 *)(r5 + ICMP_ID_OFF)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1
    *(u16 *)(r10 + RKEY + K_DPORT) = 0
    r1 = r7
    r1 += ICMP_HLEN + \hlen + ICMP_ID_OFF
    goto port\@
ports\@:
    r1 = *(u16 *)(r5 + L4_SPORT)
    *(u16 *)(r10 + RKEY + K_SPORT) = r1 // the NAT port
    r1 = *(u16 *)(r5 + L4_DPORT)
    *(u16 *)(r10 + RKEY + K_DPORT) = r1 // the remote port
    r1 = r7
    r1 += ICMP_HLEN + \hlen + L4_SPORT
port\@:
    *(u32 *)(r10 + PORT_OFF) = r1
    csum_at ICMP_CSUM_OFF               // the outer ICMP checksum
    *(u32 *)(r10 + L4_FLAGS) = 0
    *(u32 *)(r10 + TCP_FLAGS) = 0
    // addressed to the address the datagram came from (the checksums rely on it)
    r0 = r2
    addr_ne\v r0 + DADDR\v, r10 + RKEY + K_SRC\v, pass
    *(u32 *)(r10 + ERR) = 1
.endm

// IPv4: the ICMP error of type r1 at r4 (8 bytes checked) -> reverse key, or pass
.macro icmp_error4
    if r1 == ICMP_DEST_UNREACH goto error\@
    if r1 != ICMP_TIME_EXCEEDED goto pass
error\@:
    r5 = r4
    r5 += ICMP_HLEN                     // the embedded IPv4 header
    bounds r5, r0, IPV4_HLEN + 8, pass // + the 8 bytes of L4 every error carries
    r1 = *(u8 *)(r5 + 0)
    if r1 != 0x45 goto pass             // version 4 without options
    r1 = *(u16 *)(r5 + IP_FRAG - ETH_HLEN)
    r1 = be16 r1
    r1 &= IP_OFFMASK
    if r1 != 0 goto pass                // a non-first fragment: no ports
    r1 = r7
    r1 += ICMP_HLEN + IP_CSUM - ETH_HLEN
    *(u32 *)(r10 + ERR_IPCSUM_OFF) = r1
    icmp_error_inner 4, IPV4_HLEN, ICMP_ECHO, IP_PROTO - ETH_HLEN
.endm

// IPv6 likewise (packet too big included)
.macro icmp_error6
    if r1 == ICMP6_DEST_UNREACH goto error\@
    if r1 == ICMP6_PACKET_TOO_BIG goto error\@
    if r1 != ICMP6_TIME_EXCEEDED goto pass
error\@:
    r5 = r4
    r5 += ICMP_HLEN                     // the embedded IPv6 header
    bounds r5, r0, IPV6_HLEN + 8, pass
    r1 = *(u8 *)(r5 + 0)
    r1 &= 0xf0
    if r1 != 0x60 goto pass
    icmp_error_inner 6, IPV6_HLEN, ICMP6_ECHO, IP6_NEXTHDR - ETH_HLEN
.endm

// The rewrite of an ICMP error (RKEY: the translated tuple; ORIG_ADDR,
// ORIG_PORT: the pod's): the outer destination and the inner source become the
// pod, the inner port / identifier the pod's, the TTL / hop limit one less.
// IPv4: the outer header checksum (destination, TTL) and the inner header's
// (source); the ICMP checksum covers the inner header, whose sum does not change
// with its checksum fixed, and the inner port; it has no pseudo-header.
.macro icmp_error_rewrite4
    l3_csum *(u32 *)(r10 + RKEY + K_SRC4), *(u32 *)(r10 + ORIG_ADDR), CSUM_SIZE4
    l3_csum *(u16 *)(r10 + TTL_OLD), *(u16 *)(r10 + TTL_NEW), CSUM_SIZE2
    l3_csum *(u32 *)(r10 + RKEY + K_SRC4), *(u32 *)(r10 + ORIG_ADDR), CSUM_SIZE4, *(u32 *)(r10 + ERR_IPCSUM_OFF)
    l4_csum *(u16 *)(r10 + RKEY + K_SPORT), *(u16 *)(r10 + ORIG_PORT), CSUM_SIZE2
    store IP_TTL, TTL_NEW, 2
    store DADDR4, ORIG_ADDR, 4
    store *(u32 *)(r10 + ERR_ADDR_OFF), ORIG_ADDR, 4
    store *(u32 *)(r10 + PORT_OFF), ORIG_PORT, 2
.endm
// IPv6: the ICMPv6 checksum covers the outer destination (pseudo-header), the
// inner source and the inner port
.macro icmp_error_rewrite6
.irp w, 0, 4, 8, 12
    l4_csum *(u32 *)(r10 + RKEY + K_SRC6 + \w), *(u32 *)(r10 + ORIG_ADDR + \w), BPF_F_PSEUDO_HDR + CSUM_SIZE4
    l4_csum *(u32 *)(r10 + RKEY + K_SRC6 + \w), *(u32 *)(r10 + ORIG_ADDR + \w), CSUM_SIZE4
.endr
    l4_csum *(u16 *)(r10 + RKEY + K_SPORT), *(u16 *)(r10 + ORIG_PORT), CSUM_SIZE2
    store IP6_HOPLIMIT, TTL_NEW, 1
    store DADDR6, ORIG_ADDR, 16
    store *(u32 *)(r10 + ERR_ADDR_OFF), ORIG_ADDR, 16
    store *(u32 *)(r10 + PORT_OFF), ORIG_PORT, 2
.endm

.macro reply_path v
reply\v:
    r1 = 0
    *(u32 *)(r10 + ERR) = r1            // a reply, unless an ICMP error below
    *(u32 *)(r10 + ERR_ADDR_OFF) = r1
    *(u32 *)(r10 + ERR_IPCSUM_OFF) = r1
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
    // an echo reply, or an error about a connection (then r1 = its type)
    l4_icmp pass, ICMP_ECHO_REPLY\v, reply_error\v, reply_icmp_keys
    goto reply_lookup\v
reply_error\v:
    icmp_error\v

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
    addr_copy6 r10 + NODE, r8 + RV_NODE
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

    // --- refresh the state: a reply was seen; FIN/RST close (not for an error)
reply_state\v:
    r1 = *(u32 *)(r10 + ERR)
    if r1 != 0 goto reply_error_rewrite\v
    r3 = *(u32 *)(r10 + SRC_FLAGS)
    *(u32 *)(r10 + FLAGS_OLD) = r3
    r3 |= RV_F_SEEN_REPLY
    conn_state r8, u8, RKEY, TCP_ESTABLISHED_TIMEOUT_NS
    conn_events \v, NODE                 // a FIN or RST from the remote end closes it

    // --- rewrite: destination address and port, checksums, TTL
    nat_rewrite\v RKEY + K_PROTO, DADDR\v, RKEY + K_SRC\v, ORIG_ADDR, RKEY + K_SPORT, ORIG_PORT
    goto reply_deliver\v
reply_error_rewrite\v:
    icmp_error_rewrite\v
    count STAT_ICMP_ERROR
reply_deliver\v:
    r1 = *(u32 *)(r10 + SRC_FLAGS)
    r1 &= RV_F_LOCAL
    if r1 != 0 goto reply_local\v

    // --- pod on another node: back through the tunnel to its node
    tunnel_to_slot NODE, STAT_REPLY_TUNNELLED

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

// ===== egret_tunnel_in: tcx ingress of egret0 (VXLAN, collect-metadata) ===========
// Every packet on egret0 is egret's own: a reply the gateway tunnelled back to a
// pod of this node, or a pod's packet another node sent to this gateway.
// 1. inner destination is a local endpoint (egret_local_eps) -> reply delivery:
//    bpf_redirect_neigh to the pod's host veth with the pod as next hop, so the
//    frame gets the veth's source MAC and the pod's MAC (the tunnelled frame
//    still carries the external router's MACs).
// 2. otherwise -> egress: slot = tunnel_id, source node = tunnel remote; then
//    the shared SNAT path (snat_v4.s).
// 0. first of all, a gateway probe (inner ethertype 0x88b5, templates::probe):
//    a request is answered from here, a reply recorded in egret_probe_rx.
// Not IPv4 -> drop not-ipv4 (nothing else travels in egret's tunnel).
egret_tunnel_in:
    r6 = r1                             // r6 = ctx for the whole program
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += ETH_HLEN
    if r4 > r3 goto drop_malformed
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 == PROBE_ETH_P_LE goto probe
    r4 = r2
    r4 += IPV4_END
    if r4 > r3 goto drop_malformed
    if r1 != ETH_P_IP_LE goto drop_not_ipv4

    // --- reply for a pod of this node? (key: inner destination, be32)
    r1 = *(u32 *)(r2 + IP_DADDR)
    *(u32 *)(r10 + NH + 4) = r1         // bpf_redir_neigh.ipv4_nh = the pod
    r2 = r10
    r2 += NH + 4
    r1 = map[egret_local_eps] ll
    call map_lookup_elem
    if r0 == 0 goto tunnel_egress
    r7 = *(u32 *)(r0 + LE_IFINDEX)      // the pod's host-side veth
    *(u32 *)(r10 + NH) = AF_INET        // bpf_redir_neigh.nh_family
    r1 = 0
    *(u64 *)(r10 + NH + 8) = r1         // rest of the ipv6_nh union: zero
    *(u32 *)(r10 + NH + 16) = r1
    // count reply-delivered
    *(u32 *)(r10 + STATS_KEY) = STAT_REPLY_DELIVERED
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto deliver_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
deliver_send:
    r1 = r7
    r2 = r10
    r2 += NH
    r3 = REDIR_NEIGH_SIZE
    r4 = 0
    call redirect_neigh                 // TC_ACT_REDIRECT
    exit

    // --- egress through this gateway: the tunnel key names slot and sender
tunnel_egress:
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_get_tunnel_key
    if r0 != 0 goto drop_no_tunnel_key
    r1 = *(u32 *)(r10 + TUNKEY + TK_ID)
    r1 &= SLOT_MASK
    *(u32 *)(r10 + SLOT) = r1
    r1 = *(u32 *)(r10 + TUNKEY + TK_REMOTE)
    *(u32 *)(r10 + NODE) = r1           // the sending node, host byte order
    *(u32 *)(r10 + SRC_FLAGS) = 0
    goto snat

    // --- a gateway probe: answered by this program, not by a process, so a node
    // whose datapath is gone stops answering even while its agent runs
probe:
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_get_tunnel_key
    if r0 != 0 goto drop_no_tunnel_key
    r1 = *(u32 *)(r10 + TUNKEY + TK_ID)
    if w1 != PROBE_VNI goto drop_malformed
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += PROBE_END
    if r4 > r3 goto drop_malformed
    r1 = *(u32 *)(r2 + PROBE_MAGIC)
    if w1 != PROBE_MAGIC_LE goto drop_malformed
    r1 = *(u8 *)(r2 + PROBE_VER)
    if r1 != PROBE_VERSION goto drop_malformed
    r1 = *(u8 *)(r2 + PROBE_KIND)
    if r1 == PROBE_KIND_REPLY goto probe_reply
    if r1 != PROBE_KIND_REQUEST goto drop_malformed

    // request: the same frame goes back as the reply (seq, sender and sent_ns
    // are the requester's), kind byte rewritten
    *(u8 *)(r10 + PROBE_NEW_KIND) = PROBE_KIND_REPLY
    r1 = r6
    r2 = PROBE_KIND
    r3 = r10
    r3 += PROBE_NEW_KIND
    r4 = 1
    r5 = 0
    call skb_store_bytes
    if r0 != 0 goto drop_rewrite_failed
    // tunnel key {id 0, remote = the requester, local = the address it probed
    // (so the reply comes from the address the requester keys it by), ttl 64}
    r8 = *(u32 *)(r10 + TUNKEY + TK_REMOTE)
    r9 = *(u32 *)(r10 + TUNKEY + TK_LOCAL)
    r1 = 0
    *(u64 *)(r10 + TUNKEY) = r1
    *(u64 *)(r10 + TUNKEY + 8) = r1
    *(u64 *)(r10 + TUNKEY + 16) = r1
    *(u64 *)(r10 + TUNKEY + 24) = r1
    *(u64 *)(r10 + TUNKEY + 32) = r1
    *(u32 *)(r10 + TUNKEY + 40) = r1
    *(u32 *)(r10 + TUNKEY + TK_ID) = PROBE_VNI
    *(u32 *)(r10 + TUNKEY + TK_REMOTE) = r8 // host byte order
    *(u32 *)(r10 + TUNKEY + TK_LOCAL) = r9
    *(u8 *)(r10 + TUNKEY + TK_TTL) = TUNNEL_TTL
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_set_tunnel_key
    if r0 != 0 goto drop_rewrite_failed
    // count probe-answered
    *(u32 *)(r10 + STATS_KEY) = STAT_PROBE_ANSWERED
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto probe_send
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
probe_send:
    r1 = *(u32 *)(r6 + SKB_IFINDEX)     // egret0, where the request came in
    r2 = 0                              // egress: encapsulated back to the requester
    call redirect                       // TC_ACT_REDIRECT
    exit

    // reply: egret_probe_rx[tunnel remote] = {seq, sent_ns, now}; nobody else sees it
probe_reply:
    r1 = *(u32 *)(r2 + PROBE_SEQ)
    *(u32 *)(r10 + PROBE_RX_VAL + PR_SEQ) = r1
    *(u32 *)(r10 + PROBE_RX_VAL + 4) = 0
    r1 = *(u64 *)(r2 + PROBE_SENT_NS)
    *(u64 *)(r10 + PROBE_RX_VAL + PR_SENT_NS) = r1
    call ktime_get_ns
    *(u64 *)(r10 + PROBE_RX_VAL + PR_RECV_NS) = r0
    r1 = map[egret_probe_rx] ll
    r2 = r10
    r2 += TUNKEY + TK_REMOTE            // key: the answering node, host byte order
    r3 = r10
    r3 += PROBE_RX_VAL
    r4 = BPF_ANY
    call map_update_elem                // a full map loses the sample, nothing else
    r7 = STAT_PROBE_REPLY
    goto drop

drop_no_tunnel_key:
    r7 = STAT_NO_TUNNEL_KEY
    goto drop

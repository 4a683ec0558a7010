// ===== egret_tunnel_in: tcx ingress of egret0 (VXLAN, collect-metadata) ===========
// Every packet on egret0 is egret's own: a reply the gateway tunnelled back to a
// pod of this node, or a pod's packet another node sent to this gateway.
// 1. inner destination is a local endpoint (egret_local_eps) -> reply delivery:
//    bpf_redirect_neigh to the pod's host veth with the pod as next hop, so the
//    frame gets the veth's source MAC and the pod's MAC (the tunnelled frame
//    still carries the external router's MACs).
// 2. otherwise -> egress: slot = tunnel_id, source node = tunnel remote; then
//    the shared SNAT path (snat_v4.s).
// Not IPv4 -> drop not-ipv4 (nothing else travels in egret's tunnel).
egret_tunnel_in:
    r6 = r1                             // r6 = ctx for the whole program
    r2 = *(u32 *)(r6 + SKB_DATA)
    r3 = *(u32 *)(r6 + SKB_DATA_END)
    r4 = r2
    r4 += IPV4_END
    if r4 > r3 goto drop_malformed
    r1 = *(u16 *)(r2 + ETH_PROTO)
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

drop_no_tunnel_key:
    r7 = STAT_NO_TUNNEL_KEY
    goto drop

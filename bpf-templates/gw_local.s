// ===== egret_gw_local: local egress on the gateway node ===========================
// Tail-called by the source classifier (PROG_ARRAY index 0) at tcx ingress of a
// local pod's host veth, with the egress slot in skb->cb[0]. Runs the same SNAT
// path as egret_tunnel_in, of the packet's family; the source must be a local
// pod allowed for the slot (GA_F_LOCAL) and arrive on that pod's own veth
// (egret_local_eps_v4/v6).
egret_gw_local:
    r6 = r1                             // r6 = ctx for the whole program
    r1 = *(u32 *)(r6 + SKB_CB0)
    r1 &= SLOT_MASK
    *(u32 *)(r10 + SLOT) = r1
    node_clear NODE                     // source node: this one
    *(u32 *)(r10 + SRC_FLAGS) = RV_F_LOCAL
    frame ETH_HLEN, drop_malformed
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 == ETH_P_IPV6_LE goto snat6
    goto snat4                          // IPv4, or dropped there (not-ip)

// ===== egret_tunnel_in: tcx ingress of egret0 (VXLAN, collect-metadata) ===========
// Every packet on egret0 is egret's own: a reply the gateway tunnelled back to a
// pod of this node, or a pod's packet another node sent to this gateway.
// 1. inner destination is a local endpoint (egret_local_eps_v4/v6) -> reply delivery:
//    bpf_redirect_neigh to the pod's host veth with the pod as next hop, so the
//    frame gets the veth's source MAC and the pod's MAC (the tunnelled frame
//    still carries the external router's MACs).
// 2. otherwise -> egress: slot = tunnel_id, source node = tunnel remote; then
//    the shared SNAT path of the family (snat.s).
// 0. first of all, a gateway probe (inner ethertype 0x88b5, templates::probe):
//    a request is answered from here, a reply recorded in egret_probe_rx.
// Neither IPv4 nor IPv6 -> drop not-ip (nothing else travels in egret's tunnel).

// steps 1 and 2 for the family \v
.macro tunnel_in_path v
tunnel_in\v:
    bounds r2, r4, L3_END\v, drop_malformed
    // --- reply for a pod of this node? (key: inner destination)
    addr_copy\v r10 + NH + 4, r2 + DADDR\v // bpf_redir_neigh's address = the pod
    lookup egret_local_eps_v\v, NH + 4
    if r0 == 0 goto tunnel_egress\v
    r7 = *(u32 *)(r0 + LE_IFINDEX)      // the pod's host-side veth
    to_pod \v, r7, STAT_REPLY_DELIVERED

    // --- egress through this gateway: the tunnel key names slot and sender
tunnel_egress\v:
    tunnel_key_get drop_no_tunnel_key
    r1 = *(u32 *)(r10 + TUNKEY + TK_ID)
    r1 &= SLOT_MASK
    *(u32 *)(r10 + SLOT) = r1
    node_from_key NODE, TK_REMOTE       // the sending node, of either underlay family
    *(u32 *)(r10 + SRC_FLAGS) = 0
    goto snat\v
.endm

egret_tunnel_in:
    r6 = r1                             // r6 = ctx for the whole program
    frame ETH_HLEN, drop_malformed
    r1 = *(u16 *)(r2 + ETH_PROTO)
    if r1 == PROBE_ETH_P_LE goto probe
    if r1 == ETH_P_IP_LE goto tunnel_in4
    if r1 == ETH_P_IPV6_LE goto tunnel_in6
    goto drop_not_ip
    tunnel_in_path 4
    tunnel_in_path 6

    // --- a gateway probe: answered by this program, not by a process, so a node
    // whose datapath is gone stops answering even while its agent runs
probe:
    tunnel_key_get drop_no_tunnel_key
    r1 = *(u32 *)(r10 + TUNKEY + TK_ID)
    if w1 != PROBE_VNI goto drop_malformed
    frame PROBE_END, drop_malformed
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
    store PROBE_KIND, PROBE_NEW_KIND, 1
    // tunnel key {id 0 (as received), remote = the requester, local = the
    // address it probed (so the reply comes from the address the requester
    // keys it by), both as received in the request's family, ttl 64; tos,
    // ext and label zero}
    *(u32 *)(r10 + TUNKEY + TK_TOS) = 0
    *(u32 *)(r10 + TUNKEY + TK_LABEL) = 0
    *(u8 *)(r10 + TUNKEY + TK_TTL) = TUNNEL_TTL
    tunnel_key_call skb_set_tunnel_key, "*(u32 *)(r10 + TK_FLAGS)"
    if r0 != 0 goto drop_rewrite_failed
    count STAT_PROBE_ANSWERED
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
    // key: the answering node's address; a full map loses the sample, nothing else
    node_from_key PROBE_NODE, TK_REMOTE
    update egret_probe_rx, PROBE_NODE, PROBE_RX_VAL, "r4 = BPF_ANY"
    r7 = STAT_PROBE_REPLY
    goto drop

    drop_stub no_tunnel_key, STAT_NO_TUNNEL_KEY

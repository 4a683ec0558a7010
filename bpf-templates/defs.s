// egret gateway datapath: shared definitions (the stack frame).
//
// Every gateway template is assembled as a generated prelude + `defs.s` +
// `macros.s` + its entry file [+ `snat.s`] + `count.s` (see bpf/src/templates/mod.rs and
// README.md in this folder). The prelude comes from bpf/src/layout.rs, the one
// definition of every byte contract: kernel constants (TC_ACT_*, SKB_* for
// struct __sk_buff, ETH_*/IP_*/TCP_*/UDP_*/ICMP_* header offsets, helper
// flags, TK_* for struct bpf_tunnel_key), each map's key and value field
// offsets and sizes (K_*, FV_*, RV_*, GS_*, GA_*, LE_*, FO_*, GP_*, ST_*, PR_*,
// PROBE_*), the counter indexes (STAT_*), the map sizes (*_MAX) and the `.map`
// declarations; `egret_bpf::templates::prelude()` returns its text.
//
// This file emits no instructions.

// ----- stack frame (offsets from r10; every program uses this one layout) ----------
// Keys and values are sized for IPv6 (the larger family); IPv4 uses their start.
// Every field is aligned to its size (the verifiers require it on the stack).
.equ FKEY, -40                      // forward 5-tuple (16 B IPv4, 40 B IPv6)
.equ RKEY, -80                      // reverse 5-tuple (16 / 40 B)
.equ RVAL, -144                     // reverse value being built (48 / 64 B)
.equ FVAL, -184                     // forward value being built (32 / 40 B)
.equ NOW, -192                      // u64 ktime_get_ns()
.equ SLOT, -196                     // u32 egress slot
.equ EGRESS_IFINDEX, -200           // u32
.equ NODE, -216                     // source node address (16 B, layout::NODE_ADDR; zero: this node)
.equ SRC_FLAGS, -220                // u32 RV_F_LOCAL for egret_gw_local, else 0
.equ ALLOWK, -240                   // egret_gw_allowed_v* key (8 / 20 B)
.equ CSUM_OFF, -244                 // u32 frame offset of the L4 checksum field
.equ PORT_OFF, -248                 // u32 frame offset of the port/identifier rewritten
.equ L4_FLAGS, -252                 // u32 BPF_F_MARK_MANGLED_0 for UDP, else 0
.equ TTL_OLD, -254                  // u16 IPv4: TTL | protocol << 8; IPv6: the hop limit
.equ TTL_NEW, -256                  // u16 the same with TTL / hop limit - 1
.equ TCP_FLAGS, -260                // u32 TCP flags byte (0 for UDP/ICMP)
.equ STATS_KEY, -264                // u32 egret_gw_stats index
.equ DELIVER_IFINDEX, -268          // u32 veth of a local pod (egret_gw_reply)
.equ SLOT_FLAGS, -272               // u32 GS_F_* of the slot
.equ FWD, -276                      // u32 1: a peer forwarded this packet (floating slot), else 0
.equ NH, -296                       // struct bpf_redir_neigh (20 B): family @0, address @4
.equ ERR, -300                      // u32 egret_gw_reply: 1 for an ICMP error, 0 for a reply
.equ TUNKEY, -344                   // struct bpf_tunnel_key (44 B)
.equ ERR_ADDR_OFF, -348             // u32 frame offset of an ICMP error's inner source address
.equ PEERK, -368                    // egret_gw_peers key (20 B)
.equ REPLY_NODE, -384               // node address replies are tunnelled to (16 B; zero: this node)
.equ ERR_IPCSUM_OFF, -388           // u32 frame offset of its inner IPv4 header checksum
.equ TK_FLAGS, -392                 // u32 tunnel key flags of TUNKEY's family (BPF_F_TUNINFO_IPV6 or 0)
.equ TO_NODE, -408                  // node address a packet is tunnelled to (16 B)
.equ FLAGS_OLD, -420                // u32 the connection's RV_F_* flags before this packet
.equ EVENT, -512                    // flow event being built (layout::flow_event, 88 B)
// The probe path (egret_tunnel_in) never reaches the SNAT path, so it reuses RVAL and NODE:
.equ PROBE_RX_VAL, RVAL             // egret_probe_rx value being built (24 B)
.equ PROBE_NODE, NODE               // egret_probe_rx key: the answering node (16 B)
.equ PROBE_NEW_KIND, RVAL           // u8 kind byte written into a request

// ----- the address families: what differs, by family number \v (4 or 6) -----------
// Macros take the family as `v` and name these (and the field offsets the
// prelude gives per family: K_SRC\v, K_DST\v, RV_ORIG_SRC\v, FV_EGRESS_IP\v,
// GS_EGRESS_IP\v, GA_KEY_SRC\v) and the maps egret_*_v\v by it.
.equ L3_END4, IPV4_END              // end of the (option-less) network header
.equ L3_END6, IPV6_END
.equ SADDR4, IP_SADDR               // source address
.equ SADDR6, IP6_SADDR
.equ DADDR4, IP_DADDR               // destination address
.equ DADDR6, IP6_DADDR
.equ ICMP_PROTO4, IPPROTO_ICMP      // the ICMP of the family
.equ ICMP_PROTO6, IPPROTO_ICMPV6
.equ ICMP_ECHO4, ICMP_ECHO          // echo request
.equ ICMP_ECHO6, ICMP6_ECHO
.equ ICMP_ECHO_REPLY4, ICMP_ECHO_REPLY
.equ ICMP_ECHO_REPLY6, ICMP6_ECHO_REPLY
.equ AF4, AF_INET                   // struct bpf_redir_neigh family
.equ AF6, AF_INET6

// egret gateway datapath: shared definitions (the stack frame).
//
// Every gateway template is assembled as a generated prelude + `defs.s` +
// `macros.s` + its entry file [+ `snat_v4.s`] + `count.s` (see bpf/src/templates.rs and
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
.equ FKEY, -16                      // forward 5-tuple (16 B)
.equ RKEY, -32                      // reverse 5-tuple (16 B)
.equ RVAL, -64                      // reverse value being built (32 B)
.equ FVAL, -96                      // forward value being built (32 B)
.equ NOW, -104                      // u64 ktime_get_ns()
.equ SLOT, -108                     // u32 egress slot
.equ NODE, -112                     // u32 source node IPv4, host order (0: this node)
.equ ALLOWK, -120                   // egret_gw_allowed key (8 B)
.equ EGRESS_IFINDEX, -124           // u32
.equ SRC_FLAGS, -128                // u32 RV_F_LOCAL for egret_gw_local, else 0
.equ CSUM_OFF, -132                 // u32 frame offset of the L4 checksum field
.equ PORT_OFF, -136                 // u32 frame offset of the port/identifier rewritten
.equ L4_FLAGS, -140                 // u32 BPF_F_MARK_MANGLED_0 for UDP, else 0
.equ TTL_OLD, -142                  // u16 TTL | protocol << 8, as received
.equ TTL_NEW, -144                  // u16 the same with TTL - 1
.equ TCP_FLAGS, -148                // u32 TCP flags byte (0 for UDP/ICMP)
.equ STATS_KEY, -152                // u32 egret_gw_stats index
.equ DELIVER_IFINDEX, -156          // u32 veth of a local pod (egret_gw_reply)
.equ NH, -176                       // struct bpf_redir_neigh (20 B): family @0, ipv4_nh @4
.equ TUNKEY, -224                   // struct bpf_tunnel_key (44 B)
.equ PEERK, -232                    // egret_gw_peers key (8 B)
.equ SLOT_FLAGS, -236               // u32 GS_F_* of the slot
.equ REPLY_NODE, -240               // u32 where replies are tunnelled, host order (0: this node)
.equ FWD, -244                      // u32 1: a peer forwarded this packet (floating slot), else 0
// The probe path (egret_tunnel_in) never reaches the SNAT path, so it reuses RVAL:
.equ PROBE_RX_VAL, RVAL             // egret_probe_rx value being built (24 B)
.equ PROBE_NEW_KIND, RVAL           // u8 kind byte written into a request

// egret gateway datapath: shared definitions (constants, maps, stack frame).
//
// Every gateway template is assembled as `defs.s` + its entry file
// [+ `snat_v4.s`] + `count.s` (see bpf/src/templates.rs and README.md in this
// folder). This file emits no instructions: constants and map declarations
// only. The byte layouts below are the contract with the loader and the code
// generator; bpf/src/templates.rs mirrors every value and a test checks that
// the two agree.

// ----- tc verdicts ----------------------------------------------------------------
.equ TC_ACT_UNSPEC, -1              // let the stack handle it (not ours)
.equ TC_ACT_SHOT, 2

// ----- struct __sk_buff offsets ---------------------------------------------------
.equ SKB_LEN, 0
.equ SKB_IFINDEX, 40                // the device the packet arrived on (tc ingress)
.equ SKB_CB0, 48                    // cb[0]: egress slot handed to egret_gw_local
.equ SKB_DATA, 76
.equ SKB_DATA_END, 80

// ----- Ethernet / IPv4 / L4 (offsets from the start of the frame) -----------------
.equ ETH_HLEN, 14
.equ ETH_PROTO, 12
.equ ETH_P_IP_LE, 0x0008            // ethertype 0x0800 as a little-endian u16 load reads it
.equ IP_VIHL, 14                    // version (high nibble) and IHL (low nibble)
.equ IP_FRAG, 20                    // flags + fragment offset, network order
.equ IP_OFFMASK, 0x1fff
.equ IP_TTL, 22                     // TTL; a u16 load here gives TTL (low) | protocol << 8
.equ IP_PROTO, 23
.equ IP_CSUM, 24
.equ IP_SADDR, 26
.equ IP_DADDR, 30
.equ IPV4_END, 34                   // ETH_HLEN + 20: Ethernet + option-less IPv4 header
.equ IPPROTO_ICMP, 1
.equ IPPROTO_TCP, 6
.equ IPPROTO_UDP, 17
.equ L4_SPORT, 0
.equ L4_DPORT, 2
.equ TCP_HLEN, 20
.equ TCP_FLAGS_OFF, 13
.equ TCP_CSUM_OFF, 16
.equ UDP_HLEN, 8
.equ UDP_CSUM_OFF, 6
.equ ICMP_HLEN, 8
.equ ICMP_CSUM_OFF, 2
.equ ICMP_ID_OFF, 4
.equ ICMP_ECHO_REPLY, 0
.equ ICMP_ECHO, 8
.equ TH_FIN, 0x01
.equ TH_SYN, 0x02
.equ TH_RST, 0x04
.equ TH_ACK, 0x10

// ----- helper arguments -----------------------------------------------------------
.equ BPF_ANY, 0
.equ BPF_NOEXIST, 1
.equ CSUM_SIZE2, 2                  // l3/l4_csum_replace: the field is 2 bytes
.equ CSUM_SIZE4, 4                  // ... 4 bytes
.equ BPF_F_PSEUDO_HDR, 0x10         // the field is part of the L4 pseudo-header
.equ BPF_F_MARK_MANGLED_0, 0x20     // UDP: checksum 0 means "none" and stays 0
.equ AF_INET, 2
.equ REDIR_NEIGH_SIZE, 20           // struct bpf_redir_neigh
.equ TUNNEL_KEY_SIZE, 44            // struct bpf_tunnel_key
.equ TK_ID, 0                       // tunnel_id (u32)
.equ TK_REMOTE, 4                   // remote_ipv4 (u32, host byte order)
.equ TK_TTL, 21                     // tunnel_ttl (u8)
.equ TK_LOCAL, 28                   // local_ipv4 (u32, host byte order)
.equ TUNNEL_TTL, 64
.equ SLOT_MASK, 0xffffff            // egress slots are 24-bit VXLAN VNIs

// ----- 5-tuple keys: egret_nat_v4 and egret_rnat_v4 (16 bytes) ---------------------
// src be32 @0, dst be32 @4, sport be16 @8, dport be16 @10, proto u8 @12, 3 zero bytes.
// ICMP echo: sport = identifier, dport = 0.
.equ K_SRC, 0
.equ K_DST, 4
.equ K_SPORT, 8
.equ K_DPORT, 10
.equ K_PROTO, 12
.equ NAT_KEY_SIZE, 16

// ----- egret_nat_v4 value (forward, 32 bytes) --------------------------------------
.equ FV_EGRESS_IP, 0                // be32 egress IPv4 the flow was translated to
.equ FV_NAT_PORT, 4                 // be16 NAT port / ICMP identifier
.equ FV_SLOT, 8                     // u32 egress slot
.equ FV_CREATED, 16                 // u64 ktime_get_ns() when the mapping was made
.equ FV_LAST_SEEN, 24               // u64 ktime_get_ns() of the last forward packet
.equ FV_SIZE, 32

// ----- egret_rnat_v4 value (reverse, 32 bytes): the connection's state -------------
.equ RV_ORIG_SRC, 0                 // be32 original source (the pod)
.equ RV_NODE, 4                     // u32 source node IPv4, host byte order (0: local)
.equ RV_SLOT, 8                     // u32 egress slot (the VNI for the way back)
.equ RV_ORIG_SPORT, 12              // be16 original source port / ICMP identifier
.equ RV_FLAGS, 14                   // u8 RV_F_*
.equ RV_LAST_SEEN, 16               // u64 ktime_get_ns() of the last packet, either way
.equ RV_EXPIRES, 24                 // u64 ktime_get_ns() after which the entry is free
.equ RV_SIZE, 32
.equ RV_F_LOCAL, 1                  // the pod runs on this gateway node
.equ RV_F_SEEN_REPLY, 2             // a reply went through (TCP: established)
.equ RV_F_CLOSING, 4                // TCP FIN or RST seen

// ----- egret_gw_slots: u32 slot -> 12 bytes ----------------------------------------
.equ GS_EGRESS_IP, 0                // be32 egress IPv4 (0: none resolved -> no-egress-ip)
.equ GS_IFINDEX, 4                  // u32 egress interface ifindex
.equ GS_FLAGS, 8                    // u32 GS_F_*
.equ GS_F_FLOATING, 1               // floating slot: only the owner SNATs, the others forward
.equ GS_SIZE, 12

// ----- egret_float_owner: u32 slot -> 8 bytes (the agent writes it; state map) -----
.equ FO_OWNER, 0                    // u32 owner's underlay IPv4, host byte order
.equ FO_FLAGS, 4                    // u32 FO_F_*
.equ FO_F_SELF, 1                   // this node owns the slot
.equ FO_SIZE, 8

// ----- egret_gw_peers: {u32 slot, u32 peer IPv4 (host order)} -> u32 0 --------------
.equ GP_KEY_SLOT, 0
.equ GP_KEY_PEER, 4
.equ GP_KEY_SIZE, 8
.equ GP_SIZE, 4

// ----- egret_gw_allowed: {u32 slot, be32 src} -> 8 bytes ---------------------------
.equ GA_KEY_SLOT, 0
.equ GA_KEY_SRC, 4
.equ GA_NODE, 0                     // u32 IPv4 of the pod's node, host byte order; 0: any node
.equ GA_FLAGS, 4                    // u32 GA_F_*
.equ GA_F_LOCAL, 1                  // the pod runs on this gateway (egret_gw_local only)
.equ GA_SIZE, 8

// ----- egret_local_eps: be32 pod IPv4 -> 8 bytes -----------------------------------
.equ LE_IFINDEX, 0                  // u32 ifindex of the pod's host-side veth
.equ LE_FLAGS, 4                    // u32 reserved, 0
.equ LE_SIZE, 8

// ----- egret_gw_stats: u32 index -> per-CPU {u64 packets, u64 bytes} ---------------
.equ ST_PACKETS, 0
.equ ST_BYTES, 8
.equ ST_SIZE, 16
.equ STAT_NO_GATEWAY, 0             // reserved for the source classifier
.equ STAT_NO_EGRESS_IP, 1
.equ STAT_SPOOFED_SOURCE, 2
.equ STAT_NAT_PORTS_EXHAUSTED, 3
.equ STAT_TTL_EXCEEDED, 4
.equ STAT_UNSUPPORTED_PROTO, 5
.equ STAT_NOT_IPV4, 6
.equ STAT_MALFORMED, 7
.equ STAT_FRAGMENT, 8
.equ STAT_NO_TUNNEL_KEY, 9
.equ STAT_NO_LOCAL_ENDPOINT, 10
.equ STAT_REWRITE_FAILED, 11
.equ STAT_SNAT, 12                  // packets SNATed out of an egress interface
.equ STAT_NAT_CREATED, 13           // NAT entries created (packets = entries)
.equ STAT_REPLY_TUNNELLED, 14       // replies sent back through the tunnel
.equ STAT_REPLY_LOCAL, 15           // replies handed to a pod on the gateway node
.equ STAT_REPLY_DELIVERED, 16       // tunnelled replies delivered to a pod (source node)
.equ STAT_PROBE_ANSWERED, 17        // probe requests answered (egret_tunnel_in)
.equ STAT_PROBE_REPLY, 18           // probe replies recorded in egret_probe_rx, then dropped
.equ STAT_NO_OWNER, 19              // floating slot: no owner known, or a peer's packet not ours
.equ STAT_FORWARDED, 20             // floating slot: forwarded to the owner through the tunnel

// ----- gateway probes (templates::probe): VNI 0, inner ethertype 0x88b5 -----------
// Frame: dst MAC 02:65:67:72:65:01, src MAC 02:65:67:72:65:02, ethertype 0x88b5,
// magic "EGRP" @14, u8 kind @18, u8 version @19, u16 0 @20, host u32 seq @22,
// be32 sender IPv4 @26, host u64 sent_ns @30, zero padding to 60 bytes. The 4- and
// 8-byte fields are at 2 mod 4 / 2 mod 8: aligned for the kernel (NET_IP_ALIGN).
.equ PROBE_VNI, 0
.equ PROBE_ETH_P_LE, 0xb588         // ethertype 0x88b5 as a little-endian u16 load reads it
.equ PROBE_MAGIC_LE, 0x50524745     // "EGRP" as a little-endian u32 load reads it
.equ PROBE_VERSION, 1
.equ PROBE_KIND_REQUEST, 1
.equ PROBE_KIND_REPLY, 2
.equ PROBE_MAGIC, 14                // frame offsets
.equ PROBE_KIND, 18
.equ PROBE_VER, 19
.equ PROBE_SEQ, 22
.equ PROBE_SENDER, 26
.equ PROBE_SENT_NS, 30
.equ PROBE_END, 38                  // shortest probe frame accepted

// ----- egret_probe_rx: u32 host IPv4 of the answering node -> 24 bytes -------------
.equ PR_SEQ, 0                      // host u32 seq of the reply
.equ PR_SENT_NS, 8                  // host u64 sent_ns copied from the reply
.equ PR_RECV_NS, 16                 // host u64 ktime_get_ns() when it arrived
.equ PROBE_RX_SIZE, 24

// ----- port allocation -------------------------------------------------------------
// NAT ports 61000..=65535: disjoint from Linux's default ip_local_port_range
// (32768-60999), so the host's own connections from the egress IP do not collide.
.equ NAT_PORT_MIN, 61000
.equ NAT_PORT_COUNT, 4536
.equ NAT_PROBES, 16
.equ HASH_C1, 0x9e3779b1
.equ HASH_C2, 0x85ebca6b
.equ HASH_C3, 0xc2b2ae35

// ----- connection timeouts (ns) ----------------------------------------------------
.equ TCP_SYN_TIMEOUT_NS, 60_000_000_000             // 60 s until a reply is seen
.equ TCP_ESTABLISHED_TIMEOUT_NS, 21_600_000_000_000 // 6 h idle once established
.equ TCP_CLOSING_TIMEOUT_NS, 10_000_000_000         // 10 s after FIN or RST
.equ UDP_TIMEOUT_NS, 60_000_000_000                 // 60 s idle
.equ ICMP_TIMEOUT_NS, 30_000_000_000                // 30 s idle

// ----- maps ------------------------------------------------------------------------
.equ LOCAL_EPS_MAX, 1024
.equ GW_SLOTS_MAX, 256
.equ GW_ALLOWED_MAX, 65536
.equ NAT_MAX, 65536
.equ STATS_MAX, 32
.equ PROBE_RX_MAX, 1024
.equ FLOAT_OWNER_MAX, 256
.equ GW_PEERS_MAX, 1024
.map egret_local_eps, hash, key_size=4, value_size=LE_SIZE, max_entries=LOCAL_EPS_MAX
.map egret_gw_slots, hash, key_size=4, value_size=GS_SIZE, max_entries=GW_SLOTS_MAX
.map egret_gw_allowed, hash, key_size=8, value_size=GA_SIZE, max_entries=GW_ALLOWED_MAX
.map egret_nat_v4, lru_hash, key_size=NAT_KEY_SIZE, value_size=FV_SIZE, max_entries=NAT_MAX
.map egret_rnat_v4, lru_hash, key_size=NAT_KEY_SIZE, value_size=RV_SIZE, max_entries=NAT_MAX
.map egret_gw_stats, percpu_array, key_size=4, value_size=ST_SIZE, max_entries=STATS_MAX
.map egret_probe_rx, hash, key_size=4, value_size=PROBE_RX_SIZE, max_entries=PROBE_RX_MAX
.map egret_float_owner, hash, key_size=4, value_size=FO_SIZE, max_entries=FLOAT_OWNER_MAX
.map egret_gw_peers, hash, key_size=GP_KEY_SIZE, value_size=GP_SIZE, max_entries=GW_PEERS_MAX

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

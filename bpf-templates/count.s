// ----- drop: count the packet under reason r7, then TC_ACT_SHOT --------------------
// Every `drop_<reason>` stub sets r7 = STAT_<REASON> and jumps here. The counter is
// per-CPU, so plain (non-atomic) adds are enough.
drop:
    *(u32 *)(r10 + STATS_KEY) = r7
    r2 = r10
    r2 += STATS_KEY
    r1 = map[egret_gw_stats] ll
    call map_lookup_elem
    if r0 == 0 goto drop_exit           // index out of range: still drop
    r1 = *(u64 *)(r0 + ST_PACKETS)
    r1 += 1
    *(u64 *)(r0 + ST_PACKETS) = r1
    r1 = *(u32 *)(r6 + SKB_LEN)
    r2 = *(u64 *)(r0 + ST_BYTES)
    r2 += r1
    *(u64 *)(r0 + ST_BYTES) = r2
drop_exit:
    r0 = TC_ACT_SHOT
    exit

// ----- drop: count the packet under reason r7, then TC_ACT_SHOT --------------------
// Every `drop_<reason>` stub sets r7 = STAT_<REASON> and jumps here. The counter is
// per-CPU, so plain (non-atomic) adds are enough.
drop:
    count r7                            // index out of range: still drop
    r0 = TC_ACT_SHOT
    exit

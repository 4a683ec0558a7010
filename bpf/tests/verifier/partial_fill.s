; A spilled pointer may only be read back whole.
; expect: rejected
    *(u64 *)(r10 - 8) = r1
    r0 = *(u32 *)(r10 - 8)        ; error: BadSpill
    exit

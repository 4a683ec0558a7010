; A pointer may only be spilled as an aligned 8-byte store.
; expect: rejected
    *(u32 *)(r10 - 8) = r1        ; error: BadSpill
    r0 = 0
    exit

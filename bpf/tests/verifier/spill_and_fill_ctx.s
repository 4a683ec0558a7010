; The context pointer spilled as an aligned 8-byte store and read back whole
; is the context pointer again.
; expect: accepted
    *(u64 *)(r10 - 8) = r1
    r1 = 0
    r1 = *(u64 *)(r10 - 8)
    r0 = *(u32 *)(r1 + 0)
    exit

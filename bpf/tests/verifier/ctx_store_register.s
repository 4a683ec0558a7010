; A register store to a writable field (mark) and a narrow read of another.
; expect: accepted
    r2 = 7
    *(u32 *)(r1 + 8) = r2
    r0 = *(u16 *)(r1 + 16)
    exit

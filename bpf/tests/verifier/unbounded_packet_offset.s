; An unbounded variable offset into the packet.
; expect: rejected
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 0)
    r2 += r3                      ; error: PointerArithmetic
    r0 = 0
    exit

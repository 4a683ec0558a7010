; The context pointer cannot be moved.
; expect: rejected
    r1 += 4                       ; error: PointerArithmetic
    r0 = *(u32 *)(r1 + 0)
    exit

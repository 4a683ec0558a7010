; expect: rejected
    r2 = *(u32 *)(r1 + 76)
    w2 += 1                       ; error: PointerArithmetic
    r0 = 0
    exit

; expect: rejected
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 80)
    if w2 > w3 goto +0            ; error: PointerComparison
    r0 = 0
    exit

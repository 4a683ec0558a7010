; expect: rejected
    *(u32 *)(r10 - 6) = 0         ; error: StackMisaligned off=-6 size=4
    r0 = 0
    exit

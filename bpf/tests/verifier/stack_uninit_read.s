; expect: rejected
    r0 = *(u64 *)(r10 - 8)        ; error: StackUninitRead off=-8 size=8
    exit

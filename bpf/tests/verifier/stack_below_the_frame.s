; The stack is [-512, 0).
; expect: rejected
    *(u64 *)(r10 - 520) = 0       ; error: StackOutOfBounds off=-520
    r0 = 0
    exit

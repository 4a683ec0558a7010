; The stack is [-512, 0): fp+0 is outside.
; expect: rejected
    *(u64 *)(r10 + 0) = 0         ; error: StackOutOfBounds off=0
    r0 = 0
    exit

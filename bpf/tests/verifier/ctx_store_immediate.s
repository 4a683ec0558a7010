; No BPF_ST into the context, even to a writable field (mark, offset 8).
; expect: rejected
    *(u32 *)(r1 + 8) = 1          ; error: CtxAccess off=8
    r0 = 0
    exit

; expect: rejected
    r0 = 1
    *(u32 *)(r1 + 0) = r0         ; error: CtxAccess off=0 reason="field is read-only"
    exit

; `data` (offset 76) is a pointer: only a whole 4-byte load.
; expect: rejected
    r0 = *(u16 *)(r1 + 76)        ; error: CtxAccess off=76
    exit

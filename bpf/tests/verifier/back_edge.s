; Programs must be loop-free.
; expect: rejected
l:  r0 = 0
    goto l                        ; error: BackEdge target=0

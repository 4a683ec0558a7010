; R0 must hold a scalar at exit, not a pointer.
; expect: rejected
    r0 = r1
    exit                          ; error: BadReturn found="ctx"

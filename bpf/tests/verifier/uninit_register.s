; r7 is never written.
; expect: rejected
    r0 = 0
    r0 += r7                      ; error: UninitRegister reg=r7
    exit

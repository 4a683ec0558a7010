; R1..R5 are unreadable after every call.
; expect: rejected
    r6 = r1
    call ktime_get_ns
    r0 = r1                       ; error: UninitRegister reg=r1
    exit

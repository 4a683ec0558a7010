; expect: rejected
    r0 = 0
    exit
    r0 = 1                        ; error: Unreachable
    exit

; expect: rejected
    r0 = 0                        ; error: FallsOffEnd

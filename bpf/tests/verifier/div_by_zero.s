; expect: rejected
    r0 = 1
    r0 /= 0                       ; error: DivByZero
    exit

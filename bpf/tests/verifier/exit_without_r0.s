; expect: rejected
    r1 = 0
    exit                          ; error: BadReturn

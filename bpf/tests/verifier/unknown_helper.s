; expect: rejected
    r0 = 0
    call 9999                     ; error: UnknownHelper id=9999
    exit

; expect: rejected
    r0 = 0
    goto +5                       ; error: JumpOutOfRange target=7
    exit

; expect: rejected
    .insn 0xff, 0, 0, 0, 0        ; error: Decode
    r0 = 0
    exit

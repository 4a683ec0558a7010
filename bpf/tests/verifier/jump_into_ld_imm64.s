; A jump to the second slot of an ld_imm64.
; expect: rejected
    r0 = 0
    goto +1                       ; error: JumpIntoLdImm64 target=3
    r1 = 5 ll
    exit

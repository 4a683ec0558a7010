; An ld_imm64 with a raw map fd (pseudo source 1) and no relocation.
; expect: rejected
    ld_pseudo r1, 1, 3            ; error: UnsupportedPseudo pseudo=1
    r0 = 0
    exit

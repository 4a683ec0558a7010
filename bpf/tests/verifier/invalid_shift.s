; A 32-bit shift by 32.
; expect: rejected
    r0 = 1
    w0 <<= 32                     ; error: InvalidShift amount=32
    exit

; gotol forward and a near conditional jump to a gotol trampoline, as the
; builder lays out far jumps: both paths reach exit with r0 set.
; expect: accepted
    r0 = 0
    r2 = *(u32 *)(r1 + 0)
    if r2 <= 100 goto +1
    gotol big
    gotol small
big:
    r0 = 2
    exit
small:
    r0 = 1
    exit

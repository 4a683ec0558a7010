; Helpers that move packet data invalidate every packet pointer.
; expect: rejected
    r6 = r1
    r7 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r7
    r4 += 14
    if r4 > r3 goto out
    r1 = r6
    r2 = 24
    r3 = 0
    r4 = 0
    r5 = 2
    call l3_csum_replace
    r0 = *(u8 *)(r7 + 0)          ; error: PacketPointerInvalidated reg=r7 call=11
    exit
out:
    r0 = 0
    exit

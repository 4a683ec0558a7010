; Checks 14 bytes, then reads the IPv4 destination at 30..34.
; expect: rejected
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 14
    if r4 > r3 goto pass
    r5 = *(u16 *)(r2 + 12)
    if r5 != 0x8 goto pass
    r5 = *(u32 *)(r2 + 30)        ; error: PacketOutOfRange off=30 end=34 range=14
    r0 = 2
    exit
pass:
    r0 = 0
    exit

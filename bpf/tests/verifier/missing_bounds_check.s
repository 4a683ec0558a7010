; The Ethernet header is read with no comparison against data_end: the
; verified packet range is 0 bytes.
; expect: rejected
    r6 = r1
    r2 = *(u32 *)(r6 + 76)
    r3 = *(u32 *)(r6 + 80)
    r4 = r2
    r4 += 34
    r4 = r4                       ; where `if r4 > r3 goto pass` stood
    r5 = *(u16 *)(r2 + 12)        ; error: PacketOutOfRange off=12 end=14 range=0
    r0 = 0
    exit

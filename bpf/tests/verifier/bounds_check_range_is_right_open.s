; `pkt + 34 < end` gives 35 bytes on the taken branch (the kernel's
; right-open range): byte 34 is readable there; the fall-through still is not.
; expect: rejected
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 80)
    r4 = r2
    r4 += 34
    if r4 < r3 goto ok
    r0 = *(u8 *)(r2 + 0)          ; error: PacketOutOfRange
    exit
ok:
    r0 = *(u8 *)(r2 + 34)
    exit

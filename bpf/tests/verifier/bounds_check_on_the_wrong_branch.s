; `pkt + 34 < end` taken: the jump target has the range, the fall-through
; does not, and reading there fails.
; expect: rejected
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 80)
    r4 = r2
    r4 += 34
    if r4 < r3 goto ok
    r0 = *(u8 *)(r2 + 0)          ; error: PacketOutOfRange
    exit
ok:
    r0 = *(u8 *)(r2 + 33)
    exit

; A ring buffer record must be initialized bytes (8 of the 16 are not).
; expect: rejected
.map events, ringbuf, key_size=0, value_size=0, max_entries=4096
    r1 = 0
    *(u64 *)(r10 - 16) = r1
    r1 = map[events] ll
    r2 = r10
    r2 += -16
    r3 = 16
    r4 = 0
    call ringbuf_output           ; error: HelperArg reg=r2 found~"uninitialized"
    r0 = 0
    exit

; bpf_ringbuf_output of 16 initialized stack bytes into a ring buffer: accepted.
; expect: accepted
.map events, ringbuf, key_size=0, value_size=0, max_entries=4096
    r1 = 0
    *(u64 *)(r10 - 16) = r1
    *(u64 *)(r10 - 8) = r1
    r1 = map[events] ll
    r2 = r10
    r2 += -16
    r3 = 16
    r4 = 0
    call ringbuf_output
    r0 = 0
    exit

; bpf_ringbuf_output takes a ring buffer and nothing else.
; expect: rejected
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
    r1 = 0
    *(u64 *)(r10 - 8) = r1
    r1 = map[src_class] ll
    r2 = r10
    r2 += -8
    r3 = 8
    r4 = 0
    call ringbuf_output           ; error: HelperArg reg=r1 expected="a ringbuf map"
    r0 = 0
    exit

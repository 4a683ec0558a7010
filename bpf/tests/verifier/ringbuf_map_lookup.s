; A ring buffer has no elements: only bpf_ringbuf_output may take it.
; expect: rejected
.map events, ringbuf, key_size=0, value_size=0, max_entries=4096
    r1 = 0
    *(u64 *)(r10 - 8) = r1
    r2 = r10
    r2 += -8
    r1 = map[events] ll
    call map_lookup_elem          ; error: HelperArg reg=r1 expected~"ringbuf_output"
    r0 = 0
    exit

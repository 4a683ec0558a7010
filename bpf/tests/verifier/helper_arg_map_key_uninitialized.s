; A map key must be key_size initialized bytes.
; expect: rejected
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
    r2 = r10
    r2 += -4
    r1 = map[src_class] ll
    call map_lookup_elem          ; error: HelperArg reg=r2
    r0 = 0
    exit

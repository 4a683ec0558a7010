; expect: rejected
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r2 = r10
    r2 += -4
    r1 = map[src_class] ll
    call map_lookup_elem
    r0 = *(u32 *)(r0 + 0)         ; error: NullableDeref reg=r0
    exit

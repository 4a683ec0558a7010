; A 4-byte read at offset 2 of a 4-byte value.
; expect: rejected
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r2 = r10
    r2 += -4
    r1 = map[src_class] ll
    call map_lookup_elem
    r6 = r0
    if r0 == 0 goto out
    r0 = *(u32 *)(r6 + 2)         ; error: MapValueOutOfBounds map="src_class" off=2 end=6 value_size=4
out:
    exit

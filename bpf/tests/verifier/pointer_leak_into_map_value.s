; A pointer stored into a map value leaks.
; expect: rejected
.map counters, percpu_array, key_size=4, value_size=8, max_entries=4
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r2 = r10
    r2 += -4
    r1 = map[counters] ll
    call map_lookup_elem
    if r0 == 0 goto out
    *(u64 *)(r0 + 0) = r10        ; error: PointerLeak
out:
    r0 = 0
    exit

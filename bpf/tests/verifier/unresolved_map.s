; A map reference to a map the object does not define.
; expect: rejected
.map src_class, hash, key_size=4, value_size=4, max_entries=1024
    r1 = map[nope] ll             ; error: UnresolvedMap map="nope"
    r0 = 0
    exit

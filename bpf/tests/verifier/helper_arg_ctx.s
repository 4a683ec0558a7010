; skb_store_bytes needs the context in r1.
; expect: rejected
    r1 = 0
    r2 = 0
    r3 = r10
    r4 = 4
    r5 = 0
    call skb_store_bytes          ; error: HelperArg reg=r1 expected="ctx"
    r0 = 0
    exit

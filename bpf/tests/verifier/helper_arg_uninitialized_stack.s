; A memory argument from uninitialized stack.
; expect: rejected
    r2 = 0
    r3 = r10
    r3 += -4
    r4 = 4
    r5 = 0
    call skb_store_bytes          ; error: HelperArg reg=r3 found~"uninitialized"
    r0 = 0
    exit

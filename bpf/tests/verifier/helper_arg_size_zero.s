; A size argument must be a positive constant.
; expect: rejected
    r2 = r10
    r2 += -8
    r3 = 0
    r4 = 0
    call skb_get_tunnel_key       ; error: HelperArg reg=r3
    r0 = 0
    exit

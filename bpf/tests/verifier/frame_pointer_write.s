; expect: rejected
    r0 = 0
    r10 = 5                       ; error: FramePointerWrite
    exit

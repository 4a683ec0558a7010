; BPF-to-BPF calls are refused.
; expect: rejected
    r0 = 0
    call pc+0                     ; error: UnsupportedCall what="BPF-to-BPF call"; error: UnsupportedCall what="non-helper call"
    exit

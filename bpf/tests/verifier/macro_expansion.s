; A violation inside a `.rept`'s or a macro's expansion is reported on the line
; that invokes it: the first round of the `.rept` reads an uninitialized stack
; slot (the verifier stops the path there); in the other branch the second
; `load_ctx` reads r1 after a call made it unreadable.
; expect: rejected
.macro load_ctx dst, off
    \dst = *(u32 *)(r1 + \off)
.endm
    load_ctx r2, 0                ; (fine: r1 is the context)
    if r2 == 0 goto other
.rept 2                           ; error: StackUninitRead off=-16 size=8
    r4 = *(u64 *)(r10 - 16)
.endr
other:
    call ktime_get_ns
    load_ctx r3, 0                ; error: UninitRegister reg=r1
    r0 = 0
    exit

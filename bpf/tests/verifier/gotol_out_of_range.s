; A long jump (gotol, 32-bit offset in imm) beyond the end and before the start.
; expect: rejected
    r0 = 0
    if r0 == 1 goto back
    gotol +70000                  ; error: JumpOutOfRange target=70003
back:
    gotol -5                      ; error: JumpOutOfRange target=-1
    exit

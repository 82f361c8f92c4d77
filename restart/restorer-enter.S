/* rst_enter(entry, plan, stack_top): switch to the restorer's stack and jump
 * into the blob; the restart tool's own stack is about to be unmapped. */
        .text
        .globl rst_enter
        .hidden rst_enter
        .type rst_enter, @function
rst_enter:
        movq %rdx, %rsp
        movq %rdi, %rax
        movq %rsi, %rdi
        xorl %ebp, %ebp
        jmpq *%rax
        .size rst_enter, .-rst_enter
        .section .note.GNU-stack,"",@progbits

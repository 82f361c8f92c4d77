/* rt_ctx_save(struct rt_ctx *ctx): save callee-saved registers, the caller's
 * stack pointer and return address; return 0. The restorer resumes a context
 * by loading them and jumping to rip with eax = 1 (restart/restorer-entry.S),
 * so rt_ctx_save then "returns" 1 in the restored process. Layout matches
 * struct rt_ctx in common/rst-abi.h. */
        .text
        .globl rt_ctx_save
        .hidden rt_ctx_save
        .type rt_ctx_save, @function
rt_ctx_save:
        .cfi_startproc
        movq %rbx, 0(%rdi)
        movq %rbp, 8(%rdi)
        movq %r12, 16(%rdi)
        movq %r13, 24(%rdi)
        movq %r14, 32(%rdi)
        movq %r15, 40(%rdi)
        leaq 8(%rsp), %rdx
        movq %rdx, 48(%rdi)
        movq (%rsp), %rdx
        movq %rdx, 56(%rdi)
        xorl %eax, %eax
        ret
        .cfi_endproc
        .size rt_ctx_save, .-rt_ctx_save
        .section .note.GNU-stack,"",@progbits

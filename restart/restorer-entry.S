/* Entry points of the restorer blob (see restorer.c). Position independent,
 * no relocations. */
        .section .text.entry, "ax"
        .globl rst_entry
        .hidden rst_entry
        .type rst_entry, @function
/* rst_entry(struct plan *plan): the loader has switched to the blob's stack. */
rst_entry:
        xorl %ebp, %ebp
        andq $-16, %rsp
        call rst_main
        hlt
        .size rst_entry, .-rst_entry

        .text
        .globl rst_clone3_thread
        .hidden rst_clone3_thread
        .type rst_clone3_thread, @function
/* long rst_clone3_thread(struct clone_args *a, size_t size,
 *                        struct plan_thread *t, struct plan *p)
 * The child starts on its own stack and runs rst_thread_main(t, p). */
rst_clone3_thread:
        pushq %r12
        pushq %r13
        movq %rdx, %r12
        movq %rcx, %r13
        movl $435, %eax                 /* SYS_clone3 */
        syscall
        testq %rax, %rax
        jz 1f
        popq %r13
        popq %r12
        ret
1:      xorl %ebp, %ebp
        andq $-16, %rsp
        movq %r12, %rdi
        movq %r13, %rsi
        call rst_thread_main
        hlt
        .size rst_clone3_thread, .-rst_clone3_thread

        .globl rst_jump_ctx
        .hidden rst_jump_ctx
        .type rst_jump_ctx, @function
/* rst_jump_ctx(struct rt_ctx *ctx): resume a thread where rt_ctx_save
 * (preload/ctx.S) left it, making that call return 1. */
rst_jump_ctx:
        movq 0(%rdi), %rbx
        movq 8(%rdi), %rbp
        movq 16(%rdi), %r12
        movq 24(%rdi), %r13
        movq 32(%rdi), %r14
        movq 40(%rdi), %r15
        movq 48(%rdi), %rsp
        movl $1, %eax
        jmpq *56(%rdi)
        .size rst_jump_ctx, .-rst_jump_ctx
        .section .note.GNU-stack,"",@progbits

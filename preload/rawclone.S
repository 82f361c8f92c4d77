/* long rt_raw_clone(unsigned long flags, void *stack_top, int *ptid,
 *                   int *ctid, void (*fn)(void *), void *arg)
 * clone(2) without libc: the child runs fn(arg) on stack_top and exits the
 * thread with SYS_exit. Used for the image writer's worker threads, which
 * must exist where pthread_create cannot be called (other threads frozen in
 * arbitrary libc state, or a raw snapshot child). Returns the child's tid or
 * -errno in the parent. */
        .text
        .globl rt_raw_clone
        .hidden rt_raw_clone
        .type rt_raw_clone, @function
rt_raw_clone:
        .cfi_startproc
        andq $-16, %rsi
        subq $16, %rsi
        movq %r8, 0(%rsi)
        movq %r9, 8(%rsi)
        movq %rcx, %r10
        xorl %r8d, %r8d
        movl $56, %eax          /* SYS_clone */
        syscall
        testq %rax, %rax
        jnz 1f
        .cfi_undefined rip
        xorl %ebp, %ebp
        popq %rax
        popq %rdi
        call *%rax
        movl $60, %eax          /* SYS_exit: this thread only */
        xorl %edi, %edi
        syscall
        hlt
1:      ret
        .cfi_endproc
        .size rt_raw_clone, .-rt_raw_clone
        .section .note.GNU-stack,"",@progbits

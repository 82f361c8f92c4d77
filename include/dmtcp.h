/* dmtcp.h — the application interface of dmtcp.
 *
 * A program may include this header to cooperate with checkpointing; it
 * needs no library to link. The functions are inline wrappers around weak
 * references to symbols of the runtime (libdmtcp.so): run under
 * dmtcp_launch, they reach the runtime; run alone, they report that dmtcp is
 * not present and do nothing.
 *
 *   if (dmtcp_is_enabled()) ...
 *   int r = dmtcp_checkpoint();        // blocks until the checkpoint is committed
 *   if (r == DMTCP_AFTER_RESTART) ...  // this is the restarted process
 *
 *   dmtcp_disable_ckpt();              // a checkpoint waits until ...
 *   ... talk to a license server ...
 *   dmtcp_enable_ckpt();               // ... here
 *
 * The weak references need a position-independent executable or a shared
 * library (the default of Debian's compilers); see man dmtcp_launch(1). */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#define DMTCP_NOT_PRESENT      0   /* not running under dmtcp */
#define DMTCP_AFTER_CHECKPOINT 1   /* the checkpoint was committed; this process goes on */
#define DMTCP_AFTER_RESTART    2   /* this is the process restarted from that checkpoint */

/* Symbols of libdmtcp.so; use the functions below. */
extern int __dmtcp_api_checkpoint(void) __attribute__((weak));
extern int __dmtcp_api_disable_ckpt(void) __attribute__((weak));
extern int __dmtcp_api_enable_ckpt(void) __attribute__((weak));
extern int __dmtcp_api_enabled(void) __attribute__((weak));

/* 1 when this process runs under dmtcp (and is connected to it), else 0. */
static inline int dmtcp_is_enabled(void) {
        return __dmtcp_api_enabled ? __dmtcp_api_enabled() : 0;
}

/* Checkpoint the whole computation now and wait until the checkpoint is
 * committed (durable, `latest` switched). Returns DMTCP_AFTER_CHECKPOINT in
 * the running process, DMTCP_AFTER_RESTART when the call returns in a
 * process restarted from this very checkpoint, DMTCP_NOT_PRESENT without
 * dmtcp, or a negative errno value: -EDEADLK when called between
 * dmtcp_disable_ckpt and dmtcp_enable_ckpt, -ENOTCONN when no coordinator
 * can be reached, -EIO (or the coordinator's reason) when the checkpoint
 * failed; the previous checkpoint then stays the newest. */
static inline int dmtcp_checkpoint(void) {
        return __dmtcp_api_checkpoint ? __dmtcp_api_checkpoint() : DMTCP_NOT_PRESENT;
}

/* Delay checkpoints: a checkpoint requested after this call waits until
 * the matching dmtcp_enable_ckpt (calls nest, per thread). If a checkpoint
 * is under way, waits until it is over. Keep such sections short: the
 * whole computation's checkpoint waits for them. Returns 1, or
 * DMTCP_NOT_PRESENT. */
static inline int dmtcp_disable_ckpt(void) {
        return __dmtcp_api_disable_ckpt ? __dmtcp_api_disable_ckpt() : DMTCP_NOT_PRESENT;
}

/* End the section begun by dmtcp_disable_ckpt in this thread. Returns 1,
 * DMTCP_NOT_PRESENT, or -EINVAL without a matching dmtcp_disable_ckpt. */
static inline int dmtcp_enable_ckpt(void) {
        return __dmtcp_api_enable_ckpt ? __dmtcp_api_enable_ckpt() : DMTCP_NOT_PRESENT;
}

#ifdef __cplusplus
}
#endif

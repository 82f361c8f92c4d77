#include "rst-caps.h"

#include <sys/capability.h>
#include <sys/prctl.h>

#include "macro.h"

#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif

int rst_caps_keep_only_restore(void) {
        if (getuid() == 0 || geteuid() == 0)
                return 0;       /* root keeps root's powers; nothing to narrow */
        cap_t cur = cap_get_proc();
        if (!cur)
                return -errno;
        cap_flag_value_t have = CAP_CLEAR;
        (void) cap_get_flag(cur, CAP_CHECKPOINT_RESTORE, CAP_PERMITTED, &have);
        cap_t want = cap_init();
        int r = 0;
        if (!want)
                r = -errno;
        if (r == 0 && have == CAP_SET) {
                cap_value_t v[] = { CAP_CHECKPOINT_RESTORE };
                if (cap_set_flag(want, CAP_PERMITTED, 1, v, CAP_SET) < 0 ||
                    cap_set_flag(want, CAP_EFFECTIVE, 1, v, CAP_SET) < 0)
                        r = -errno;
        }
        if (r == 0 && cap_compare(cur, want) != 0 && cap_set_proc(want) < 0)
                r = -errno;
        if (r == 0)
                (void) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        cap_free(want);
        cap_free(cur);
        return r;
}

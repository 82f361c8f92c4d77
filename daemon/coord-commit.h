/* The checkpoint directory: generation numbers, temporary generation
 * directories, the commit (MANIFEST, rename, latest, restart script) and
 * pruning. docs/checkpoint-dir.md describes the layout. Every function
 * returns 0 or -errno and, where it says so, a one-line reason in err. */
#pragma once

#include "coord-state.h"

#define COORD_GEN_PREFIX     "gen-"
#define COORD_LATEST         "latest"
#define COORD_RESTART_SCRIPT "dmtcp_restart_script.sh"
#define COORD_SECRET_FILE    ".dmtcp-secret"

/* Is name exactly "gen-" followed by six digits? Sets *gen. */
bool coord_gen_name_parse(const char *name, uint64_t *gen);

/* The highest generation number among CKPTDIR/gen-NNNNNN directories (0
 * when there is none or CKPTDIR does not exist). */
int coord_newest_generation(const char *ckptdir, uint64_t *ret);

/* Create CKPTDIR (0700) if missing, remove stale .gen-NNNNNN.tmp
 * directories, and create CKPTDIR/.gen-NNNNNN.tmp (0700) for gen. */
int coord_prepare_generation(const char *ckptdir, uint64_t gen, char *tmpdir, size_t size,
                             char *err, size_t errsize);

/* Commit c: verify the images, write MANIFEST, rename into place, switch
 * latest and the restart script. restart_bin: what the script runs by
 * default. Pruning older generations is the caller's next step
 * (coord_prune_generations), once the news of the commit is out. */
int coord_commit_generation(const struct coord_commit *c, const char *restart_bin, char *err, size_t errsize);

/* Remove complete generations beyond keep, oldest first, never newest. */
int coord_prune_generations(const char *ckptdir, uint64_t newest, int keep);

/* The text of dmtcp_restart_script.sh (allocated). */
int coord_restart_script(const struct coord_commit *c, const char *restart_bin, char **ret);

/* A set of busy address ranges, to find room for the restorer's bootstrap
 * area and staging memory that collides neither with the restart tool's own
 * mappings nor with any region of the image. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "plan.h"

struct addr_map {
        struct plan_range *r;
        size_t n, cap;
        uint64_t next_hint;
};

int addr_add(struct addr_map *m, uint64_t start, uint64_t end);
int addr_add_self(struct addr_map *m);          /* everything in /proc/self/maps */
/* Map size bytes (RW, private anonymous, extra flags) where nothing is; the
 * address is congruent to want modulo 2 MiB when want is not 0 (so huge pages
 * survive a later mremap). Returns the address or 0. */
uint64_t addr_map_free(struct addr_map *m, uint64_t size, uint64_t want, int flags);
void addr_free(struct addr_map *m);

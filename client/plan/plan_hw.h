/* SPDX-License-Identifier: MIT */
/*
 * Hardware for `tierctl plan`: the paper's DGX H100 with NVLink 4 or NVLink 5
 * offload links, a hardware file (INI, read with inih), or this machine's own
 * bandwidths measured here.
 */
#ifndef TIERD_PLAN_HW_H
#define TIERD_PLAN_HW_H

#include <stddef.h>

#include "plan.h"

/* "dgx-h100-nvl5" (alias "dgx-h100"), "dgx-h100-nvl4".  -ENOENT if unknown. */
int plan_hw_builtin(const char *name, struct plan_hw *hw, char *err, size_t errlen);
/*
 * Reads an INI file over p: [hardware], [energy] and [model] sections with the
 * keys of plan_set() (and "name" in [hardware]).  Errors name file:line and key.
 */
int plan_hw_load_file(struct plan_params *p, const char *path, char *err, size_t errlen);

/*
 * Sequential read bandwidth of a file through the fetch engine (io_uring,
 * O_DIRECT, queue depth 8, 1 MiB requests), reading at most max_bytes.  GB/s in *gbps.
 */
int plan_hw_measure_read(const char *path, size_t max_bytes, double *gbps, char *err, size_t errlen);
/* DDR copy bandwidth of a memcpy loop over two 64 MiB buffers, bytes copied per second. */
int plan_hw_measure_copy(double *gbps, char *err, size_t errlen);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Small text files read whole (config.json, model.safetensors.index.json,
 * a model config for the planner): bounded in size, regular files only, and
 * without NUL bytes, so that the text can go to a parser as a C string.
 */
#ifndef TIERD_SMALLFILE_H
#define TIERD_SMALLFILE_H

#include <stddef.h>

/*
 * Reads the regular file at path, of at most max bytes, into a new
 * NUL-terminated buffer (*out, to free; its length in *len).  On failure
 * returns a negative errno (-ENOENT when the file does not exist) and writes
 * "PATH: reason" into err.
 */
int smallfile_read(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen);

#endif

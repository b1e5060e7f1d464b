/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the safetensors header parser on arbitrary bytes.  The
 * input is the start of a file; the file is taken to be exactly that long, so
 * data_offsets are checked against it too.  Any crash, sanitizer report or
 * leak is a finding; a refused header must come with a message.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st_header *h = NULL;
	char err[512];
	int r;

	err[0] = '\0';
	r = st_header_parse(&h, "fuzz.safetensors", data, size, size, err, sizeof(err));
	if (r < 0 && (h || !err[0]))
		abort();
	if (r == 0) {
		if (!h)
			abort();
		/* What the catalog relies on: every range inside the file, names sorted and findable. */
		for (size_t i = 0; i < h->ntensors; i++) {
			const struct st_tensor *t = &h->tensors[i];

			if (t->begin > t->end || h->data_start + t->end > size ||
			    st_header_find(h, t->name) != t)
				abort();
		}
		st_header_free(h);
	}
	return 0;
}

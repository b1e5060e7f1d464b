/* SPDX-License-Identifier: MIT */
/* Shared by the test FUSE file system and its tests: the bytes it serves. */
#ifndef TESTS_FUSE_EIO_H
#define TESTS_FUSE_EIO_H

#include <stdint.h>

static inline uint8_t fuse_eio_byte(uint64_t off)
{
	return (uint8_t)((off * 40503u) >> 7 ^ off >> 13 ^ 0xc3);
}

#endif

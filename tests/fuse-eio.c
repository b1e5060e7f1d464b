/* SPDX-License-Identifier: MIT */
/*
 * A tiny FUSE file system for I/O error tests: one read-only file, /data,
 * whose bytes are fuse_eio_byte(offset).  Reads that cover an offset listed
 * in FUSE_EIO_FAIL fail with EIO; a read that starts at an offset listed in
 * FUSE_EIO_SHORT returns half of what was asked (a short read).  The file is
 * opened with direct_io so O_DIRECT reads reach us unchanged.
 *
 *   FUSE_EIO_SIZE=BYTES FUSE_EIO_FAIL=OFF,OFF FUSE_EIO_SHORT=OFF fuse-eio MOUNTPOINT
 */
#define FUSE_USE_VERSION 31
#include "config.h"

#include <errno.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuse-eio.h"

#define MAX_OFFSETS 16

struct fs {
	uint64_t size;
	uint64_t fail[MAX_OFFSETS], shortr[MAX_OFFSETS];
	int nfail, nshort;
};

static struct fs fs;

static int parse_list(const char *s, uint64_t *out)
{
	int n = 0;

	while (s && *s && n < MAX_OFFSETS) {
		char *end;

		out[n++] = strtoull(s, &end, 0);
		s = *end == ',' ? end + 1 : NULL;
	}
	return n;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	memset(st, 0, sizeof(*st));
	if (!strcmp(path, "/")) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	}
	if (!strcmp(path, "/data")) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)fs.size;
		return 0;
	}
	return -ENOENT;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	if (strcmp(path, "/"))
		return -ENOENT;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	fill(buf, "data", NULL, 0, 0);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	if (strcmp(path, "/data"))
		return -ENOENT;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EACCES;
	/* O_DIRECT reads come straight here, with their offsets and sizes. */
	fi->direct_io = 1;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	uint64_t o = (uint64_t)off, n = size;

	if (o >= fs.size)
		return 0;
	if (n > fs.size - o)
		n = fs.size - o;
	for (int i = 0; i < fs.nfail; i++)
		if (fs.fail[i] >= o && fs.fail[i] < o + n)
			return -EIO;
	for (int i = 0; i < fs.nshort; i++)
		if (fs.shortr[i] == o && n > 8192)
			n = (n / 2) & ~(uint64_t)4095;
	for (uint64_t i = 0; i < n; i++)
		buf[i] = (char)fuse_eio_byte(o + i);
	return (int)n;
}

static const struct fuse_operations ops = {
	.getattr = fs_getattr,
	.readdir = fs_readdir,
	.open = fs_open,
	.read = fs_read,
};

int main(int argc, char **argv)
{
	char *args[] = { argv[0], "-f", "-s", argc > 1 ? argv[1] : NULL, NULL };

	if (argc != 2) {
		fprintf(stderr, "usage: FUSE_EIO_SIZE=N [FUSE_EIO_FAIL=OFF,...] [FUSE_EIO_SHORT=OFF,...] %s MOUNTPOINT\n",
			argv[0]);
		return 2;
	}
	fs.size = getenv("FUSE_EIO_SIZE") ? strtoull(getenv("FUSE_EIO_SIZE"), NULL, 0) : 1 << 20;
	fs.nfail = parse_list(getenv("FUSE_EIO_FAIL"), fs.fail);
	fs.nshort = parse_list(getenv("FUSE_EIO_SHORT"), fs.shortr);
	return fuse_main(4, args, &ops, NULL);
}

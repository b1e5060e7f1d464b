/* SPDX-License-Identifier: MIT */
/*
 * ckwatch: inotify on checkpoint directories and files, for the engine to
 * learn that a served checkpoint changed on disk.
 *
 * A watch is a path (a directory or a file) with the id of whoever asked (the
 * engine: a model index).  Several ids may watch one inode: each hears every
 * event of it.  ckwatch_fd() is a non-blocking inotify descriptor for the
 * caller's event loop; ckwatch_process() reads what is queued and calls the
 * callback once per event and id.
 *
 * inotify sees changes made through this kernel's VFS only: a file rewritten
 * from another machine (NFS) or under an overlay's lower layer is not seen;
 * the engine's identity checks (fstat/stat) are the fallback.
 */
#ifndef TIERD_CKWATCH_H
#define TIERD_CKWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/inotify.h>

/* What a watch asks for: contents, metadata and names changing. */
#define CKWATCH_MASK	(IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | \
			 IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)

/* The id of an event that concerns every watch: the kernel's queue
 * overflowed (IN_Q_OVERFLOW) and events were lost. */
#define CKWATCH_ALL	UINT32_MAX

struct ckwatch;

/*
 * path: the watched path as given to ckwatch_add (NULL with CKWATCH_ALL);
 * name: the entry of a watched directory the event is about, NULL when it is
 * about path itself; mask: the IN_* bits of the event.  The callback must not
 * add or remove watches.
 */
typedef void (*ckwatch_fn)(void *arg, uint32_t id, const char *path, const char *name, uint32_t mask);

int ckwatch_create(struct ckwatch **out, ckwatch_fn fn, void *arg);
void ckwatch_destroy(struct ckwatch *w);
int ckwatch_fd(const struct ckwatch *w);

/* Watches path (CKWATCH_MASK; a symlink is followed).  -ENOSPC when the
 * user's inotify watch limit (fs.inotify.max_user_watches) is reached. */
int ckwatch_add(struct ckwatch *w, const char *path, uint32_t id);
/* Drops every watch of id; events of them still queued are not reported. */
void ckwatch_remove_id(struct ckwatch *w, uint32_t id);

/* Reads and reports every queued event.  0, or a negative errno. */
int ckwatch_process(struct ckwatch *w);

#endif

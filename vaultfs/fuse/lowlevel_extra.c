/*
 * lowlevel_extra.c - FUSE low-level operations that pyfuse3 does not implement (fallocate), and
 * the getxattr requests that never need Python (names outside user.*).
 *
 * Why this exists: pyfuse3 fills libfuse's `struct fuse_lowlevel_ops` in its own Cython
 * code and hands it to fuse_session_new(), which copies it.  An operation left NULL there
 * is answered ENOSYS by libfuse, and the kernel then gives up on it for the whole mount
 * (fallocate(2) becomes EOPNOTSUPP).  No Python API can add a slot to that table.
 *
 * How: this library defines fuse_session_new itself, under libfuse's own symbol version
 * (FUSE_3.0, see lowlevel_extra.map), and vaultfs/fuse/extra_ops.py loads it with
 * RTLD_GLOBAL before pyfuse3 is imported.  pyfuse3's extension binds its libfuse symbols
 * when it is loaded, and the global scope is searched before its own dependencies, so its
 * call lands here.  The wrapper copies the table, fills the slots that vaultfs implements
 * and pyfuse3 left empty, and calls libfuse's real fuse_session_new (the next definition
 * in the search order: dlvsym(RTLD_NEXT)).  Nothing else of pyfuse3 or libfuse changes.
 *
 * Each added operation is a trampoline that calls a Python function (a ctypes callback
 * that extra_ops.py sets; ctypes takes the GIL itself) and sends the reply.  It runs
 * synchronously inside pyfuse3's request processing, on its event-loop thread, which
 * holds the GIL there: the Python side must finish quickly and never raise.
 *
 * Adding another operation (say lseek): a callback type, a static pointer and an exported
 * setter like the fallocate ones; a trampoline that replies with a call that the
 * operation's documentation in fuse_lowlevel.h allows (fuse_reply_lseek or
 * fuse_reply_err); one ADD_OP line in fuse_session_new; the Python side in extra_ops.py.
 *
 * getxattr is the one operation pyfuse3 does implement that is wrapped here.  The kernel asks
 * for security.capability before every write(2) to a FUSE file (file_remove_privs: FUSE
 * does not set SB_NOSEC, so the answer is never remembered); vaultfs keeps user.* only, so
 * the answer is always ENODATA.  Through pyfuse3 each such request costs a trio task and a
 * Python handler; measured, a third of all requests of a cp -r plus SQLite workload.  The
 * wrapper answers names outside user.* itself and passes user.* to pyfuse3's handler.
 */

#define _GNU_SOURCE
#define FUSE_USE_VERSION 32 /* as pyfuse3 is built; the ops table's layout is the same in every 3.x */

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fuse_lowlevel.h>

#define EXPORT __attribute__((visibility("default")))

typedef struct fuse_session *(*session_new_fn)(struct fuse_args *args, const struct fuse_lowlevel_ops *op,
                                                size_t op_size, void *userdata);

/* How many operations the last fuse_session_new() added: extra_ops.py logs it, tests check it. */
static int ops_added = -1;

EXPORT int vaultfs_extra_ops_added(void) { return ops_added; }

/* An errno from Python goes to the kernel as is; anything out of range would be a bug: EIO. */
static int checked_errno(int err) { return err >= 0 && err < 4096 ? err : EIO; }

/* ---------------------------------------------------------------- fallocate */

/* Returns 0 or a positive errno; the Python side catches every exception itself. */
typedef int (*fallocate_cb)(uint64_t ino, uint64_t fh, int mode, int64_t offset, int64_t length);
static fallocate_cb py_fallocate;

EXPORT void vaultfs_extra_set_fallocate(fallocate_cb cb) { py_fallocate = cb; }

static void extra_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                            struct fuse_file_info *fi)
{
    fallocate_cb cb = py_fallocate;
    /* The slot is only filled while a callback is set; ENOSYS would make the kernel stop asking. */
    fuse_reply_err(req, cb ? checked_errno(cb(ino, fi->fh, mode, offset, length)) : EOPNOTSUPP);
}

/* ---------------------------------------------------------------- getxattr outside user.* */

typedef void (*getxattr_fn)(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
static getxattr_fn pyfuse3_getxattr; /* pyfuse3's own handler, for user.* names */
static int filter_getxattr;          /* set from Python before the session is created */
static unsigned long long getxattr_answered;

EXPORT void vaultfs_extra_set_getxattr_filter(int on) { filter_getxattr = on; }
/* How many getxattr requests were answered here: the daemon adds them to its request counts. */
EXPORT unsigned long long vaultfs_extra_getxattr_answered(void)
{
    return __atomic_load_n(&getxattr_answered, __ATOMIC_RELAXED);
}

static void extra_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    if (strncmp(name, "user.", 5) == 0) {
        pyfuse3_getxattr(req, ino, name, size);
        return;
    }
    __atomic_fetch_add(&getxattr_answered, 1, __ATOMIC_RELAXED);
    fuse_reply_err(req, ENODATA); /* what ops_xattrs.getxattr answers for these names */
}

/* ---------------------------------------------------------------- the interposed entry point */

/* Fill `field` if the caller's table has room for it, left it empty, and Python set a callback. */
#define ADD_OP(field, trampoline, callback)                                                        \
    do {                                                                                           \
        if ((callback) && op_size >= offsetof(struct fuse_lowlevel_ops, field) + sizeof(table->field) \
            && table->field == NULL) {                                                             \
            table->field = (trampoline);                                                           \
            ops_added++;                                                                           \
        }                                                                                          \
    } while (0)

EXPORT struct fuse_session *fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op,
                                             size_t op_size, void *userdata)
{
    session_new_fn real = (session_new_fn)dlvsym(RTLD_NEXT, "fuse_session_new", "FUSE_3.0");
    if (real == NULL) {
        fprintf(stderr, "vaultfs: libfuse's fuse_session_new@FUSE_3.0 not found: %s\n", dlerror());
        return NULL;
    }
    ops_added = 0;
    if (op == NULL)
        return real(args, op, op_size, userdata);
    /* A copy as large as the caller's table (a newer header's may be larger than ours): the
     * fields up to ours sit at the same offsets in every libfuse 3.x.  libfuse copies the
     * table into the session, so the copy is freed again right away. */
    struct fuse_lowlevel_ops *table = malloc(op_size > sizeof(*table) ? op_size : sizeof(*table));
    if (table == NULL)
        return real(args, op, op_size, userdata);
    memset(table, 0, sizeof(*table));
    memcpy(table, op, op_size);

    ADD_OP(fallocate, extra_fallocate, py_fallocate);
    if (filter_getxattr && op_size >= offsetof(struct fuse_lowlevel_ops, getxattr) + sizeof(table->getxattr)
        && table->getxattr != NULL) {
        pyfuse3_getxattr = table->getxattr;
        table->getxattr = extra_getxattr;
    }

    struct fuse_session *session = real(args, table, op_size, userdata);
    free(table);
    return session;
}

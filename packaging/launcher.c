/*
 * ecr-credential-provider launcher: unpack once, verify, then exec through the bundled loader.
 *
 * The release binary is this program, linked statically (it needs nothing from the node, not even
 * a C library), with a zlib-compressed PyInstaller one-dir bundle appended. The bundle carries
 * its own glibc: its dynamic loader, libc and every library any bundled ELF file needs
 * (packaging/make-bundle.py checks the closure), so the bundle runs on any Linux kernel >= 3.2,
 * whatever C library the node has. Layout of the file (packaging/make-bundle.py writes it):
 *
 *   [launcher ELF][payload: one zlib stream of records][trailer, TRAILER_SIZE bytes]
 *
 * Trailer (little-endian): u64 payload offset, u64 payload length, 64 ASCII hex digits of the
 * payload's sha256 (the bundle id), then three NUL-padded 64-byte relative paths: the bundled
 * executable, the bundled dynamic loader, the bundled library directory; then the 16-byte magic
 * "ECRKUBELET-BNDL2". Payload records: u8 type ('D' directory, 'F' file, 'L' symlink, 'E' end),
 * u32 mode, u32 path length, u64 size, the path, then `size` bytes (file data or symlink target).
 *
 * Runtime base: $ECR_KUBELET_RUNTIME_DIR (absolute; empty or relative is a usage error, exit 2),
 * else /var/cache/ecr-credential-provider/runtime for root, else
 * ${XDG_CACHE_HOME:-$HOME/.cache}/ecr-credential-provider/runtime. The base is used only when no
 * one but root and us can change it or any directory or symlink on the way to it (the rule, written
 * once: src/ecr_kubelet/trust.py; trusted_dir() below is its C copy).
 *
 * Hit: take a shared flock on <base>/<id>.use (held through exec, for the life of the process, so
 * that a newer version never prunes a bundle in use), check <base>/<id> against the record
 * <base>/<id>/.ecr-bundle-complete written at unpack time (type, mode, size, inode and mtime of
 * every file and directory: a truncated, edited or deleted file is noticed), then execv() the
 * bundled loader with the bundled executable. Nothing is written; no second process (unless an
 * earlier prune left the marker PRUNE_MARK: then this run prunes first).
 * Miss or damage: exclusive flock on <base>/<id>.lock (every blocking wait bounded: LOCK_WAIT),
 * re-check, refuse a noexec base, move a damaged tree aside, prune the directories of other bundle
 * ids that no process holds (keeping the newest other one: KEEP_OTHERS), inflate into
 * <base>/<id>.tmp.<pid>/ while hashing the payload (a payload whose sha256 is not the bundle id is
 * never executed; out of space: prune all others and retry once), fsync, write the record, rename
 * to <base>/<id>, exec.
 * Fallback (no trusted persistent base, read-only or noexec file system, a refused exec, no space,
 * a lock held too long): in $TMPDIR, then /tmp (same trust rules, not noexec), first the shared
 * tree <tmp>/ecr-credential-provider-<uid>, run as a base like the persistent one; else inflate
 * into a fresh mkdtemp() directory, start a watchdog process that removes it once the program has
 * exited (even when the launcher or the program is SIGKILLed), and exec. At -v (or --v=2 and up)
 * the reason for the fallback is printed as one warning line (one more per location passed over).
 *
 * The node's LD_PRELOAD is moved to ECR_KUBELET_LD_PRELOAD for the program (packaging/entry.py
 * restores it for the programs it starts); the carried loader ignores /etc/ld.so.preload
 * (packaging/carry_libc.py). ECR_KUBELET_PRUNE_ALL=1 (the installers) keeps no other version.
 * The name we were invoked as (argv[0]) is passed to the program in ECR_KUBELET_ARGV0, since the
 * program's own argv[0] is the bundled executable's path.
 *
 * Errors: one line "ecr-credential-provider: error: ..." on stderr, exit code 1 (2 for a bad
 * ECR_KUBELET_RUNTIME_DIR). Never writes to stdout (the kubelet reads the response from it).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sha2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#define PROG "ecr-credential-provider"
#define MAGIC "ECRKUBELET-BNDL2"
#define MAGIC_LEN 16
#define ID_LEN 64
#define NAME_LEN 64
#define TRAILER_SIZE (8 + 8 + ID_LEN + 3 * NAME_LEN + MAGIC_LEN)
#define RECORD ".ecr-bundle-complete"
#define RECORD_MAGIC "ECRKUBELET-RT2"
#define RECORD_MAX (4 << 20)
#define DEFAULT_ROOT_BASE "/var/cache/ecr-credential-provider/runtime"
#define CHUNK 65536
#define LOCK_WAIT 10          /* seconds to wait for another process's unpack before falling back */
#define KEEP_OTHERS 1         /* complete trees of other versions a prune keeps (newest first) */
#define PRUNE_MARK ".ecr-prune-pending"

struct bundle {
    int fd;                     /* our own executable */
    uint64_t offset, length;    /* payload */
    char id[ID_LEN + 1];
    char entry[NAME_LEN + 1], loader[NAME_LEN + 1], libdir[NAME_LEN + 1];
};

static int verbose;
/* ECR_KUBELET_PRUNE_ALL=1 (the installers' first run of a new version): keep no other version. */
static int prune_all;

static void die_code(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_code(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": error: %s\n", msg);
    _exit(code);
}
#define die(...) die_code(1, __VA_ARGS__)

/* Why the persistent location was not used; printed (at -v) only when we fall back. */
static char soft_err[768];
/* Set when an unpack failed for want of space (ENOSPC, EDQUOT): a prune can make room. */
static int no_space;

static void note_space(int err)
{
    if (err == ENOSPC || err == EDQUOT)
        no_space = 1;
}

static void soft(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void soft(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(soft_err, sizeof soft_err, fmt, ap);
    va_end(ap);
}

/* snprintf into a path buffer; -1 (soft_err set) when it does not fit. */
static int fmtpath(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmtpath(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        soft("path too long");
        return -1;
    }
    return 0;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int valid_id(const char *id)
{
    for (int i = 0; i < ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    return id[ID_LEN] == '\0';
}

/* A relative path of plain components: no leading '/', no "", "." or ".." component, no newline. */
static int valid_relpath(const char *p)
{
    if (*p == '\0' || *p == '/' || strchr(p, '\n'))
        return 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!slash)
            break;
        p = slash + 1;
        if (*p == '\0')
            return 0;
    }
    return 1;
}

static void copy_name(char *dst, const unsigned char *src)
{
    memcpy(dst, src, NAME_LEN);
    dst[NAME_LEN] = '\0';
}

static void read_trailer(struct bundle *b)
{
    unsigned char t[TRAILER_SIZE];
    struct stat st;
    b->fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (b->fd < 0)
        die("cannot open /proc/self/exe: %s", strerror(errno));
    if (fstat(b->fd, &st) != 0)
        die("cannot stat /proc/self/exe: %s", strerror(errno));
    if (st.st_size < TRAILER_SIZE ||
        pread(b->fd, t, TRAILER_SIZE, st.st_size - TRAILER_SIZE) != TRAILER_SIZE ||
        memcmp(t + TRAILER_SIZE - MAGIC_LEN, MAGIC, MAGIC_LEN) != 0)
        die("no bundle appended to this executable (corrupt or truncated file?)");
    b->offset = le64(t);
    b->length = le64(t + 8);
    memcpy(b->id, t + 16, ID_LEN);
    b->id[ID_LEN] = '\0';
    copy_name(b->entry, t + 16 + ID_LEN);
    copy_name(b->loader, t + 16 + ID_LEN + NAME_LEN);
    copy_name(b->libdir, t + 16 + ID_LEN + 2 * NAME_LEN);
    if (b->offset > (uint64_t)st.st_size || b->length > (uint64_t)st.st_size - TRAILER_SIZE - b->offset ||
        !valid_id(b->id) || !valid_relpath(b->entry) || !valid_relpath(b->loader) || !valid_relpath(b->libdir))
        die("corrupt bundle trailer");
}

/* ---- trusted directories ------------------------------------------------------------------- */

/*
 * Which directories we may unpack into and run from: the rule is written once, in the docstring of
 * src/ecr_kubelet/trust.py (the copy the token cache and the metrics file use). This copy must agree
 * with it: tests/test_trust.py runs one table of layouts (tests/trust_cases.py) against both.
 */

#define MAX_LINKS 40 /* as Linux's MAXSYMLINKS */

/* Owned by root or by us: the only owners whose directories no one else can change. */
static int owner_ok(const struct stat *st)
{
    return st->st_uid == 0 || st->st_uid == geteuid();
}

/* Rule 2a: a directory owned by root or us. */
static int dir_ok(const char *path, const struct stat *st)
{
    if (!S_ISDIR(st->st_mode)) {
        soft("%s is not a directory", path);
        return 0;
    }
    if (!owner_ok(st)) {
        soft("%s is owned by uid %u, not root or %u", path, (unsigned)st->st_uid, (unsigned)geteuid());
        return 0;
    }
    return 1;
}

/* lstat() and rule 2a. */
static int lstat_dir(const char *path, struct stat *st)
{
    if (lstat(path, st) != 0) {
        soft("%s: %s", path, strerror(errno));
        return 0;
    }
    return dir_ok(path, st);
}

/* Rules 2b and 3: the directory `path` may hold `child` (NULL: it is the directory we want, or,
 * with ours_next, the one we create our own entry in). */
static int may_hold(const char *path, const struct stat *st, const struct stat *child, int ours_next)
{
    if (!(st->st_mode & (S_IWGRP | S_IWOTH)))
        return 1;
    int sticky = (st->st_mode & S_ISVTX) != 0;
    if (sticky && (child ? owner_ok(child) : ours_next))
        return 1;
    soft("%s is writable by group or others (mode %04o)%s", path, (unsigned)(st->st_mode & 07777),
         sticky && child ? " and its entry on our path is not root's or ours" : "");
    return 0;
}

/* 1 when a component of `p` is '.' or '..'. */
static int has_dot_component(const char *p)
{
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 1;
        p += len;
    }
    return 0;
}

/*
 * Resolve `path` one component at a time, checking everything met (trust.py's rule), into `real`
 * (PATH_MAX bytes): 0, or -1 with soft_err saying why. `create`: make missing components (0700);
 * `ours_next`: the directory may be sticky, as we only create our own entry in it (mkdtemp()).
 */
static int trusted_dir(const char *path, char *real, int create, int ours_next)
{
    char rest[PATH_MAX], next[PATH_MAX], target[PATH_MAX];
    struct stat st, child;
    int links = 0;
    if (path[0] != '/') {
        soft("%s is not an absolute path", path);
        return -1;
    }
    if (fmtpath(rest, sizeof rest, "%s", path) != 0)
        return -1;
    strcpy(real, "/");
    if (!lstat_dir(real, &st))
        return -1;
    for (;;) {
        char *name = rest;
        while (*name == '/')
            name++;
        if (*name == '\0')
            break;
        size_t len = strcspn(name, "/");
        int is_root = real[1] == '\0';
        if (len == 1 && name[0] == '.') {
            memmove(rest, name + len, strlen(name + len) + 1);
            continue;
        }
        if (len == 2 && name[0] == '.' && name[1] == '.') {
            memmove(rest, name + len, strlen(name + len) + 1);
            char *slash = strrchr(real, '/');
            slash[slash == real ? 1 : 0] = '\0';
            if (!lstat_dir(real, &st))
                return -1;
            continue;
        }
        if (fmtpath(next, sizeof next, "%s%s%.*s", real, is_root ? "" : "/", (int)len, name) != 0)
            return -1;
        memmove(rest, name + len, strlen(name + len) + 1); /* what is left after this component */
        if (lstat(next, &child) != 0) {
            if (errno != ENOENT) {
                soft("%s: %s", next, strerror(errno));
                return -1;
            }
            if (!create) {
                soft("%s does not exist", next);
                return -1;
            }
            if (has_dot_component(rest)) {
                soft("%s: '.' or '..' in a path to create", path);
                return -1;
            }
            if (!may_hold(real, &st, NULL, 1))
                return -1;
            if (mkdir(next, 0700) != 0 && errno != EEXIST) { /* EEXIST: someone else's, checked like ours */
                soft("cannot create %s: %s", next, strerror(errno));
                return -1;
            }
            if (lstat(next, &child) != 0) {
                soft("%s: %s", next, strerror(errno));
                return -1;
            }
        }
        if (!may_hold(real, &st, &child, 0))
            return -1;
        if (S_ISLNK(child.st_mode)) {
            if (++links > MAX_LINKS) {
                soft("%s: too many levels of symbolic links", path);
                return -1;
            }
            ssize_t n = readlink(next, target, sizeof target - 1);
            if (n < 0) {
                soft("%s: %s", next, strerror(errno));
                return -1;
            }
            target[n] = '\0';
            /* The target's components come next, then the rest. */
            if (fmtpath(next, sizeof next, "%s/%s", target, rest) != 0)
                return -1;
            memcpy(rest, next, strlen(next) + 1);
            if (target[0] == '/') {
                strcpy(real, "/");
                if (!lstat_dir(real, &st))
                    return -1;
            }
            continue;
        }
        if (!dir_ok(next, &child))
            return -1;
        memcpy(real, next, strlen(next) + 1);
        st = child;
    }
    return may_hold(real, &st, NULL, ours_next) ? 0 : -1;
}

/* The persistent base directory as configured, or NULL when none can be determined. */
static const char *runtime_base(char *buf, size_t size)
{
    const char *env = getenv("ECR_KUBELET_RUNTIME_DIR");
    if (env) {
        if (env[0] != '/')
            die_code(2, "ECR_KUBELET_RUNTIME_DIR must be an absolute path, not '%s'", env);
        if (fmtpath(buf, size, "%s", env) != 0)
            return NULL;
    } else if (geteuid() == 0) {
        if (fmtpath(buf, size, "%s", DEFAULT_ROOT_BASE) != 0)
            return NULL;
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        int rc;
        if (xdg && xdg[0] == '/')
            rc = fmtpath(buf, size, "%s/" PROG "/runtime", xdg);
        else if (home && home[0] == '/')
            rc = fmtpath(buf, size, "%s/.cache/" PROG "/runtime", home);
        else {
            soft("neither XDG_CACHE_HOME nor HOME is an absolute path");
            return NULL;
        }
        if (rc != 0)
            return NULL;
    }
    return buf;
}

/* ---- removing a tree ----------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

/* Physical walk: symlinks are removed, never followed. */
static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Move a tree out of the way (atomically) before removing it, so no one sees it half-removed. */
static void discard_tree(const char *path, const char *base, const char *id, const char *why)
{
    char aside[PATH_MAX];
    if (fmtpath(aside, sizeof aside, "%s/%s.tmp.%s-%ld", base, id, why, (long)getpid()) == 0 &&
        rename(path, aside) == 0)
        rm_tree(aside);
    else
        rm_tree(path);
}

/* Remove <base>/<id>.tmp.* left by unpacks that died; called with <id>.lock held. */
static void rm_stale_tmp(const char *base, const char *id)
{
    char prefix[ID_LEN + 8], path[PATH_MAX];
    size_t plen = (size_t)snprintf(prefix, sizeof prefix, "%s.tmp.", id);
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, plen) == 0 && fmtpath(path, sizeof path, "%s/%s", base, e->d_name) == 0)
            rm_tree(path);
    closedir(d);
}

/* ---- inflating the payload ----------------------------------------------------------------- */

struct inflater {
    const struct bundle *b;
    z_stream zs;
    SHA2_CTX sha;               /* over the compressed payload, as read */
    uint64_t pos;               /* next payload byte to read */
    unsigned char in[CHUNK];
    int done;
};

static int inf_init(struct inflater *f, const struct bundle *b)
{
    memset(&f->zs, 0, sizeof f->zs);
    f->b = b;
    f->pos = 0;
    f->done = 0;
    SHA256Init(&f->sha);
    return inflateInit(&f->zs) == Z_OK ? 0 : -1;
}

/* Read exactly n inflated bytes into out; -1 on a corrupt or short payload. */
static int inf_read(struct inflater *f, void *out, size_t n)
{
    f->zs.next_out = out;
    f->zs.avail_out = (uInt)n;
    while (f->zs.avail_out > 0) {
        if (f->done)
            return -1;
        if (f->zs.avail_in == 0) {
            uint64_t left = f->b->length - f->pos;
            size_t want = left < CHUNK ? (size_t)left : CHUNK;
            if (want == 0)
                return -1;
            ssize_t got = pread(f->b->fd, f->in, want, (off_t)(f->b->offset + f->pos));
            if (got <= 0)
                return -1;
            SHA256Update(&f->sha, f->in, (size_t)got);
            f->pos += (uint64_t)got;
            f->zs.next_in = f->in;
            f->zs.avail_in = (uInt)got;
        }
        int rc = inflate(&f->zs, Z_NO_FLUSH);
        if (rc == Z_STREAM_END)
            f->done = 1;
        else if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -1;
    }
    return 0;
}

/* After the end record: the whole payload was read and its sha256 is the bundle id. */
static int inf_verified(struct inflater *f)
{
    char hex[SHA256_DIGEST_STRING_LENGTH];
    while (f->pos < f->b->length) { /* hash what follows the zlib stream's end, if anything */
        size_t want = f->b->length - f->pos < CHUNK ? (size_t)(f->b->length - f->pos) : CHUNK;
        ssize_t got = pread(f->b->fd, f->in, want, (off_t)(f->b->offset + f->pos));
        if (got <= 0)
            return 0;
        SHA256Update(&f->sha, f->in, (size_t)got);
        f->pos += (uint64_t)got;
    }
    SHA256End(&f->sha, hex);
    return f->done && strcmp(hex, f->b->id) == 0;
}

struct pending_link {
    char *path, *target;
};

/* A symlink target must stay inside the tree, judged from the link's own directory. */
static int link_target_ok(const char *path, const char *target)
{
    if (target[0] == '\0' || target[0] == '/' || strchr(target, '\n'))
        return 0;
    int depth = 0;
    for (const char *p = path; *p; p++)
        if (*p == '/')
            depth++;
    const char *p = target;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return 0;
        } else if (!(n == 0 || (n == 1 && p[0] == '.'))) {
            depth++;
        }
        if (!slash)
            break;
        p = slash + 1;
    }
    return 1;
}

/* No component of rel's parent under root is a symlink (links are created last). */
static int parents_are_dirs(int rootfd, const char *rel)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", rel);
    for (char *p = buf; (p = strchr(p, '/')) != NULL; p++) {
        struct stat st;
        *p = '\0';
        int ok = fstatat(rootfd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        *p = '/';
        if (!ok)
            return 0;
    }
    return 1;
}

/* The unpack record: one line per entry, what lstat() must keep showing on every run. */
struct record {
    char *text;
    size_t len, cap;
};

static int rec_add(struct record *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rec_add(struct record *r, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(r->text ? r->text + r->len : NULL, r->text ? r->cap - r->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if (r->text && r->len + (size_t)n < r->cap) {
            r->len += (size_t)n;
            return 0;
        }
        size_t cap = r->cap ? r->cap * 2 : 16384;
        while (cap < r->len + (size_t)n + 1)
            cap *= 2;
        if (cap > RECORD_MAX)
            return -1;
        char *grown = realloc(r->text, cap);
        if (!grown)
            return -1;
        r->text = grown;
        r->cap = cap;
    }
}

static char kind_of(mode_t mode)
{
    return S_ISDIR(mode) ? 'D' : S_ISREG(mode) ? 'F' : S_ISLNK(mode) ? 'L' : '?';
}

static int rec_stat(struct record *r, int rootfd, const char *rel)
{
    struct stat st;
    if (fstatat(rootfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return -1;
    return rec_add(r, "%c %o %llu %llu %lld.%09ld %s\n", kind_of(st.st_mode), (unsigned)(st.st_mode & 07777),
                   (unsigned long long)st.st_size, (unsigned long long)st.st_ino, (long long)st.st_mtim.tv_sec,
                   st.st_mtim.tv_nsec, rel);
}

/* nftw has no user argument: the walk's state, for record_tree() only. */
static struct record *walk_rec;
static size_t walk_prefix;
static int walk_rootfd;

static int rec_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level == 0)
        return 0;
    const char *rel = path + walk_prefix + 1;
    if (strcmp(rel, RECORD) == 0)
        return 0;
    return rec_stat(walk_rec, walk_rootfd, rel) == 0 ? 0 : 1;
}

/* Every entry under dest (not dest itself) as lstat() shows it now, after the last write. */
static int record_tree(struct record *r, int rootfd, const char *dest)
{
    walk_rec = r;
    walk_prefix = strlen(dest);
    walk_rootfd = rootfd;
    if (nftw(dest, rec_entry, 16, FTW_PHYS) != 0) {
        soft("cannot record the unpacked tree %s", dest);
        return -1;
    }
    return 0;
}

/* The record, with a trailing "end <crc32>" line so that a truncated record is noticed. */
static int write_record(struct record *r, int rootfd, int durable)
{
    uLong crc = crc32(0L, (const Bytef *)r->text, (uInt)r->len);
    if (rec_add(r, "end %08lx\n", crc) != 0) {
        soft("out of memory");
        return -1;
    }
    int fd = openat(rootfd, RECORD, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        note_space(errno);
        soft("cannot create the unpack record: %s", strerror(errno));
        return -1;
    }
    int ok = write(fd, r->text, r->len) == (ssize_t)r->len && (!durable || fsync(fd) == 0);
    ok = close(fd) == 0 && ok;
    if (!ok || (durable && fsync(rootfd) != 0)) {
        note_space(errno);
        soft("cannot write the unpack record: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * Inflate the payload into the existing, empty directory `dest` and write its record. Returns 0,
 * or -1 with soft_err set; 1 when the payload itself is corrupt (no other location will help).
 */
static int extract(const struct bundle *b, const char *dest, int durable)
{
    struct inflater *f = malloc(sizeof *f);
    unsigned char *data = malloc(CHUNK);
    struct pending_link *links = NULL;
    struct record rec = {0};
    size_t nlinks = 0;
    int rc = -1, rootfd = -1;
    char path[PATH_MAX];

    if (!f || !data || inf_init(f, b) != 0) {
        soft("out of memory");
        free(f);
        free(data);
        return -1;
    }
    rootfd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) {
        soft("cannot open %s: %s", dest, strerror(errno));
        goto out;
    }
    if (rec_add(&rec, RECORD_MAGIC " %s\n", b->id) != 0)
        goto oom;
    for (;;) {
        unsigned char h[17];
        if (inf_read(f, h, sizeof h) != 0)
            goto corrupt;
        char type = (char)h[0];
        uint32_t mode = le32(h + 1) & 0755; /* no setuid/setgid/sticky, no group/world write */
        uint32_t plen = le32(h + 5);
        uint64_t size = le64(h + 9);
        if (type == 'E')
            break;
        if (plen == 0 || plen >= sizeof path || inf_read(f, path, plen) != 0)
            goto corrupt;
        path[plen] = '\0';
        if (memchr(path, '\0', plen) || !valid_relpath(path) || strcmp(path, RECORD) == 0) {
            soft("bundle payload holds an unsafe path");
            rc = 1;
            goto out;
        }
        if (type == 'D') {
            if (mkdirat(rootfd, path, 0700) != 0 && errno != EEXIST) {
                note_space(errno);
                soft("cannot create %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
            if (fchmodat(rootfd, path, mode | 0700, 0) != 0) {
                soft("cannot chmod %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
        } else if (type == 'F') {
            if (!parents_are_dirs(rootfd, path)) {
                soft("bundle payload: parent of %s is not a directory", path);
                rc = 1;
                goto out;
            }
            int fd = openat(rootfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0) {
                note_space(errno);
                soft("cannot create %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
            uint64_t left = size;
            while (left > 0) {
                size_t n = left < CHUNK ? (size_t)left : CHUNK;
                if (inf_read(f, data, n) != 0) {
                    close(fd);
                    goto corrupt;
                }
                for (size_t off = 0; off < n;) {
                    ssize_t w = write(fd, data + off, n - off);
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0) {
                        note_space(errno);
                        soft("cannot write %s/%s: %s", dest, path, strerror(errno));
                        close(fd);
                        goto out;
                    }
                    off += (size_t)w;
                }
                left -= n;
            }
            if (fchmod(fd, mode) != 0 || close(fd) != 0) {
                note_space(errno);
                soft("cannot finish %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
        } else if (type == 'L') {
            if (size == 0 || size >= PATH_MAX)
                goto corrupt;
            char *target = malloc((size_t)size + 1);
            struct pending_link *grown = realloc(links, (nlinks + 1) * sizeof *links);
            if (grown)
                links = grown;
            if (!target || !grown) {
                free(target);
                goto oom;
            }
            if (inf_read(f, target, (size_t)size) != 0) {
                free(target);
                goto corrupt;
            }
            target[size] = '\0';
            if (memchr(target, '\0', (size_t)size) || !link_target_ok(path, target)) {
                free(target);
                soft("bundle payload holds an unsafe symlink");
                rc = 1;
                goto out;
            }
            links[nlinks].path = strdup(path);
            links[nlinks].target = target;
            if (!links[nlinks].path) {
                free(target);
                goto oom;
            }
            nlinks++;
        } else {
            goto corrupt;
        }
    }
    if (!inf_verified(f)) {
        soft("the bundle's payload does not match its digest %.12s", b->id);
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < nlinks; i++) {
        if (!parents_are_dirs(rootfd, links[i].path) || symlinkat(links[i].target, rootfd, links[i].path) != 0) {
            note_space(errno);
            soft("cannot create symlink %s/%s", dest, links[i].path);
            goto out;
        }
    }
    rc = 0;
    goto out;
corrupt:
    soft("corrupt bundle payload");
    rc = 1;
    goto out;
oom:
    soft("out of memory");
    rc = -1;
out:
    for (size_t i = 0; i < nlinks; i++) {
        free(links[i].path);
        free(links[i].target);
    }
    free(links);
    if (rc == 0) {
        /* One syncfs() for the whole tree (not an fsync per file: ~90 of them cost a second). */
        rc = -1;
        if (durable && syncfs(rootfd) != 0) {
            note_space(errno);
            soft("cannot sync %s: %s", dest, strerror(errno));
        } else if (record_tree(&rec, rootfd, dest) == 0 && write_record(&rec, rootfd, durable) == 0)
            rc = 0;
    }
    free(rec.text);
    if (rootfd >= 0)
        close(rootfd);
    inflateEnd(&f->zs);
    free(f);
    free(data);
    return rc;
}

/* ---- checking an unpacked tree ------------------------------------------------------------- */

/*
 * 1 when <dir> is ours, holds a well-formed record for this bundle id, and every recorded entry
 * still has the recorded type, mode, size, inode and mtime. A file that was truncated, rewritten
 * or deleted, or a directory whose entries changed, fails the check (and the tree is repaired).
 */
static int tree_intact(const char *dir, const char *id)
{
    char *text = NULL;
    int ok = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        soft("%s: %s", dir, strerror(errno));
        return 0;
    }
    struct stat st;
    if (fstat(dfd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        soft("%s is not a private directory of uid %u", dir, (unsigned)geteuid());
        goto out;
    }
    int rfd = openat(dfd, RECORD, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (rfd < 0) {
        soft("%s/%s: %s", dir, RECORD, strerror(errno));
        goto out;
    }
    if (fstat(rfd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > RECORD_MAX ||
        !(text = malloc((size_t)st.st_size + 1)) || pread(rfd, text, (size_t)st.st_size, 0) != st.st_size) {
        close(rfd);
        soft("%s/%s is not a readable record", dir, RECORD);
        goto out;
    }
    close(rfd);
    size_t len = (size_t)st.st_size;
    text[len] = '\0';
    /* "end <crc>\n" closes the record; the crc covers everything before that line. */
    char *end = len >= 14 ? text + len - 13 : NULL;
    unsigned long want;
    if (!end || strncmp(end, "end ", 4) != 0 || text[len - 1] != '\n' || sscanf(end + 4, "%8lx", &want) != 1 ||
        crc32(0L, (const Bytef *)text, (uInt)(end - text)) != want) {
        soft("%s/%s is damaged", dir, RECORD);
        goto out;
    }
    *end = '\0';
    char head[sizeof RECORD_MAGIC + ID_LEN + 2];
    snprintf(head, sizeof head, RECORD_MAGIC " %s\n", id);
    if (strncmp(text, head, strlen(head)) != 0) {
        soft("%s/%s is not this bundle's", dir, RECORD);
        goto out;
    }
    size_t entries = 0;
    for (char *line = text + strlen(head); *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            goto damaged;
        *nl = '\0';
        char kind;
        unsigned mode;
        unsigned long long size, ino;
        long long sec;
        long nsec;
        int off = 0;
        if (sscanf(line, "%c %o %llu %llu %lld.%ld %n", &kind, &mode, &size, &ino, &sec, &nsec, &off) != 6 ||
            off == 0 || !valid_relpath(line + off))
            goto damaged;
        if (fstatat(dfd, line + off, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            soft("%s/%s: %s", dir, line + off, strerror(errno));
            goto out;
        }
        if (kind_of(st.st_mode) != kind || (st.st_mode & 07777) != mode || (unsigned long long)st.st_size != size ||
            (unsigned long long)st.st_ino != ino || (long long)st.st_mtim.tv_sec != sec || st.st_mtim.tv_nsec != nsec) {
            soft("%s/%s changed since it was unpacked", dir, line + off);
            goto out;
        }
        entries++;
        line = nl + 1;
    }
    if (entries == 0)
        goto damaged;
    ok = 1;
    goto out;
damaged:
    soft("%s/%s is damaged", dir, RECORD);
out:
    free(text);
    close(dfd);
    return ok;
}

/* ---- running ------------------------------------------------------------------------------- */

struct target {
    char dir[PATH_MAX], exe[PATH_MAX], loader[PATH_MAX], libdir[PATH_MAX];
};

static int set_target(struct target *t, const struct bundle *b, const char *dir)
{
    return fmtpath(t->dir, sizeof t->dir, "%s", dir) || fmtpath(t->exe, sizeof t->exe, "%s/%s", dir, b->entry) ||
           fmtpath(t->loader, sizeof t->loader, "%s/%s", dir, b->loader) ||
           fmtpath(t->libdir, sizeof t->libdir, "%s/%s", dir, b->libdir);
}

/*
 * What PyInstaller's bootloader would set up and then restart itself for (a second exec of the
 * loader and the bootloader on every call: it can only change its library search path through
 * LD_LIBRARY_PATH, which takes effect at exec). Set here, before the one exec, the bootloader finds
 * itself already restarted and goes straight on: its archive (the executable's real path) in
 * _PYI_ARCHIVE_FILE, its level before a restart (-1, PYI_PROCESS_LEVEL_PARENT_NEEDS_RESTART) in
 * _PYI_PARENT_PROCESS_LEVEL, and the library path it would set: the bundle's library directory,
 * then the node's LD_LIBRARY_PATH, which it keeps in LD_LIBRARY_PATH_ORIG for packaging/entry.py
 * to restore for the programs the plugin starts. The same path goes to the loader's --library-path.
 * Checked against PyInstaller 6.22.3's bootloader (pyi_main.c, pyi_utils_posix.c); the spec stops
 * the build on any other version. Anything the bootloader does not recognise (another archive
 * path) makes it reset these and restart as before. Returns the library path.
 */
static const char *node_library_path; /* the node's LD_LIBRARY_PATH, NULL if unset or empty */

static const char *bootloader_environment(const struct target *t)
{
    static char *libpath;
    char archive[PATH_MAX];
    size_t size = strlen(t->libdir) + (node_library_path ? strlen(node_library_path) + 1 : 0) + 1;
    free(libpath);
    if (!(libpath = malloc(size)))
        die("out of memory");
    strcpy(libpath, t->libdir);
    if (node_library_path) {
        strcat(libpath, ":");
        strcat(libpath, node_library_path);
    }
    if (setenv("LD_LIBRARY_PATH", libpath, 1) != 0 ||
        (node_library_path && setenv("LD_LIBRARY_PATH_ORIG", node_library_path, 1) != 0))
        die("cannot set LD_LIBRARY_PATH: %s", strerror(errno));
    if (realpath(t->exe, archive) && setenv("_PYI_ARCHIVE_FILE", archive, 1) == 0)
        setenv("_PYI_PARENT_PROCESS_LEVEL", "-1", 1);
    return libpath;
}

/*
 * exec the bundled loader on the bundled executable: the bundle's glibc, never the node's. Open
 * descriptors without FD_CLOEXEC (the .use lock, the watchdog pipe) stay with the program.
 * Returns only when the kernel or a security module refuses to execute from the directory
 * (EACCES, EPERM: a noexec mount, an SELinux or AppArmor denial): soft_err says so and the caller
 * treats the directory as unusable. Any other failure is an error.
 */
static void exec_bundle(const struct target *t, int argc, char **argv)
{
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args)
        die("out of memory");
    const char *libpath = bootloader_environment(t);
    args[0] = (char *)t->loader;
    args[1] = "--library-path";
    args[2] = (char *)libpath;
    args[3] = (char *)t->exe;
    for (int i = 1; i < argc; i++)
        args[i + 3] = argv[i];
    args[argc + 3] = NULL;
    execv(t->loader, args);
    int err = errno;
    free(args);
    if (err != EACCES && err != EPERM)
        die("cannot execute %s: %s", t->loader, strerror(err));
    soft("cannot execute %s: %s", t->loader, strerror(err));
}

/* 1 when `dir` is on a file system mounted noexec: no point unpacking there. */
static int on_noexec(const char *dir)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC)) {
        soft("%s is on a file system mounted noexec", dir);
        return 1;
    }
    return 0;
}

/* Open <path> as a lock file of ours: no symlinks, no FIFOs, a regular file owned by us. */
static int open_lock(const char *path, int cloexec)
{
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | (cloexec ? O_CLOEXEC : 0), 0600);
    if (fd < 0 && errno == EROFS)
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | (cloexec ? O_CLOEXEC : 0));
    if (fd < 0) {
        soft("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        soft("%s is not a regular file of uid %u", path, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    return fd;
}

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
    (void)sig;
    alarmed = 1;
}

/*
 * flock `path`; the returned fd is locked and still names `path` (not a file unlinked meanwhile).
 * A blocking wait is bounded by LOCK_WAIT seconds: an unpacker or pruner that is stopped or stuck
 * in I/O must not hang every run until the kubelet kills it.
 */
static int lock_file(const char *path, int how, int cloexec)
{
    int bounded = !(how & LOCK_NB);
    struct sigaction quiet = {0}, old;
    if (bounded) {
        quiet.sa_handler = on_alarm; /* no SA_RESTART: flock() returns EINTR when it fires */
        sigemptyset(&quiet.sa_mask);
        alarmed = 0;
        sigaction(SIGALRM, &quiet, &old);
        alarm(LOCK_WAIT);
    }
    int result = -1;
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open_lock(path, cloexec);
        if (fd < 0)
            goto out;
        int rc;
        while ((rc = flock(fd, how)) != 0 && errno == EINTR && !alarmed)
            ;
        if (rc != 0) {
            if (alarmed)
                soft("waited %d s for %s: another process holds it and does not finish", LOCK_WAIT, path);
            else if (errno != EWOULDBLOCK)
                soft("cannot lock %s: %s", path, strerror(errno));
            close(fd);
            goto out;
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && lstat(path, &now) == 0 && held.st_ino == now.st_ino && held.st_dev == now.st_dev) {
            result = fd;
            goto out;
        }
        close(fd); /* a pruner removed it while we waited: take the new one */
    }
    soft("cannot lock %s: it keeps being replaced", path);
out:
    if (bounded) {
        alarm(0); /* a pending alarm would survive exec */
        sigaction(SIGALRM, &old, NULL);
    }
    return result;
}

/* 1 when `name` is <64 hex> optionally followed by ".lock", ".use" or ".tmp.<anything>". */
static int bundle_entry(const char *name, char *id)
{
    size_t i;
    for (i = 0; i < ID_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    const char *rest = name + ID_LEN;
    if (!(*rest == '\0' || strcmp(rest, ".lock") == 0 || strcmp(rest, ".use") == 0 || strncmp(rest, ".tmp.", 5) == 0))
        return 0;
    memcpy(id, name, ID_LEN);
    id[ID_LEN] = '\0';
    return 1;
}

struct other {
    char id[ID_LEN + 1];
    int complete;               /* the tree holds its unpack record */
    struct timespec unpacked;   /* the tree directory's mtime: when its record was written */
};

/* Complete trees first, newest first. */
static int newer_first(const void *pa, const void *pb)
{
    const struct other *a = pa, *b = pb;
    if (a->complete != b->complete)
        return b->complete - a->complete;
    if (a->unpacked.tv_sec != b->unpacked.tv_sec)
        return a->unpacked.tv_sec < b->unpacked.tv_sec ? 1 : -1;
    if (a->unpacked.tv_nsec != b->unpacked.tv_nsec)
        return a->unpacked.tv_nsec < b->unpacked.tv_nsec ? 1 : -1;
    return strcmp(a->id, b->id);
}

/*
 * Remove the runtime directories of other bundle ids (older or newer versions) that no process
 * uses: a running program holds a shared lock on <id>.use, an unpack holds <id>.lock. Both are
 * tried without waiting. The `keep` most recently unpacked complete trees of other versions are
 * kept, so that two versions run from one runtime directory (a rollback, a second installer)
 * do not remove each other on every call. A tree that was in use is left, and the marker
 * <base>/PRUNE_MARK tells a later run (a hit checks for it) to try again.
 */
static void prune_others(const char *base, const char *own, int keep)
{
    char mark[PATH_MAX];
    if (fmtpath(mark, sizeof mark, "%s/" PRUNE_MARK, base))
        return;
    DIR *d = opendir(base);
    if (!d)
        return;
    static struct other others[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64) {
        char id[ID_LEN + 1];
        if (!bundle_entry(e->d_name, id) || strcmp(id, own) == 0)
            continue;
        size_t j;
        for (j = 0; j < n && strcmp(others[j].id, id) != 0; j++)
            ;
        if (j < n)
            continue;
        struct other *o = &others[n++];
        memset(o, 0, sizeof *o);
        memcpy(o->id, id, ID_LEN + 1);
        char path[PATH_MAX];
        struct stat st;
        if (fmtpath(path, sizeof path, "%s/%s/" RECORD, base, id) == 0 && lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            fmtpath(path, sizeof path, "%s/%s", base, id) == 0 && lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            o->complete = 1;
            o->unpacked = st.st_mtim;
        }
    }
    closedir(d);
    qsort(others, n, sizeof *others, newer_first);
    int pending = 0;
    for (size_t i = 0; i < n; i++) {
        if (others[i].complete && keep > 0) {
            keep--;
            continue;
        }
        const char *id = others[i].id;
        char use[PATH_MAX], lockp[PATH_MAX], dir[PATH_MAX];
        if (fmtpath(use, sizeof use, "%s/%s.use", base, id) || fmtpath(lockp, sizeof lockp, "%s/%s.lock", base, id) ||
            fmtpath(dir, sizeof dir, "%s/%s", base, id))
            continue;
        int ufd = lock_file(use, LOCK_EX | LOCK_NB, 1);
        if (ufd < 0) {
            pending = 1;
            continue;
        }
        int lfd = lock_file(lockp, LOCK_EX | LOCK_NB, 1);
        if (lfd < 0) {
            close(ufd);
            pending = 1;
            continue;
        }
        struct stat st;
        if (lstat(dir, &st) == 0) {
            if (S_ISDIR(st.st_mode) && st.st_uid == geteuid())
                discard_tree(dir, base, id, "prune");
            else
                unlink(dir); /* a stray file or symlink with a bundle's name: ours to remove */
        }
        rm_stale_tmp(base, id);
        unlink(lockp);
        unlink(use);
        close(lfd);
        close(ufd);
    }
    if (pending) {
        int fd = open(mark, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    } else {
        unlink(mark);
    }
}

/*
 * A runtime base (the persistent one, or the shared one in the temporary directory): exec the
 * bundle (never returns) when it is present and intact or could be (re)created; returns when the
 * location is unusable (soft_err says why). The unpacked tree is synced in both: a /tmp on disk
 * outlives a crash too, and it costs once per version.
 */
static void run_base(const struct bundle *b, const char *conf, int argc, char **argv)
{
    char base[PATH_MAX], dir[PATH_MAX], lockpath[PATH_MAX], usepath[PATH_MAX], tmp[PATH_MAX], mark[PATH_MAX];
    struct target t;

    /* Fast path: the base exists and is trusted, the tree is intact. */
    int created = trusted_dir(conf, base, 0, 0) != 0;
    if (created && trusted_dir(conf, base, 1, 0) != 0)
        return;
    if (fmtpath(dir, sizeof dir, "%s/%s", base, b->id) || fmtpath(lockpath, sizeof lockpath, "%s/%s.lock", base, b->id) ||
        fmtpath(usepath, sizeof usepath, "%s/%s.use", base, b->id) || fmtpath(mark, sizeof mark, "%s/" PRUNE_MARK, base) ||
        fmtpath(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid()) || set_target(&t, b, dir))
        return;
    /* Held (shared) for the life of the program: no prune removes a bundle that is running. */
    int use = lock_file(usepath, LOCK_SH, 0);
    if (use < 0)
        return;
    if (!created && tree_intact(dir, b->id)) {
        /* One lstat: an earlier prune found a tree in use and left it for a later run. */
        struct stat st;
        if (prune_all || lstat(mark, &st) == 0)
            prune_others(base, b->id, prune_all ? 0 : KEEP_OTHERS);
        exec_bundle(&t, argc, argv);
        close(use);
        return;
    }

    int lock = lock_file(lockpath, LOCK_EX, 1);
    if (lock < 0) {
        close(use);
        return;
    }
    if (tree_intact(dir, b->id)) {
        close(lock);
        exec_bundle(&t, argc, argv);
        close(use);
        return;
    }
    if (on_noexec(base))
        goto fail_locked;
    struct stat st;
    if (lstat(dir, &st) == 0) {
        /* Damaged, partly deleted or left by an older layout: move it aside and unpack again. */
        if (S_ISDIR(st.st_mode) && st.st_uid != geteuid()) {
            soft("%s is owned by uid %u, not %u", dir, (unsigned)st.st_uid, (unsigned)geteuid());
            goto fail_locked;
        }
        if (S_ISDIR(st.st_mode))
            discard_tree(dir, base, b->id, "damaged");
        else
            unlink(dir);
    }
    rm_stale_tmp(base, b->id); /* we hold the lock: any <id>.tmp.* is left by a dead unpack */
    /* Before unpacking, not after: on a full disk the stale trees are what makes room. */
    prune_others(base, b->id, prune_all ? 0 : KEEP_OTHERS);
    for (int attempt = 0;; attempt++) {
        if (mkdir(tmp, 0700) != 0) {
            soft("cannot create %s: %s", tmp, strerror(errno));
            goto fail_locked;
        }
        no_space = 0;
        int rc = extract(b, tmp, 1);
        if (rc == 1) {
            rm_tree(tmp);
            die("%s", soft_err); /* the payload itself is bad: no other location can help */
        }
        if (rc == 0 && rename(tmp, dir) == 0)
            break;
        if (rc == 0)
            soft("cannot rename %s: %s", tmp, strerror(errno));
        rm_tree(tmp);
        if (!no_space || attempt > 0)
            goto fail_locked;
        prune_others(base, b->id, 0); /* out of space: the kept older version goes too */
    }
    {
        int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (bfd >= 0) {
            fsync(bfd);
            close(bfd);
        }
    }
    if (verbose)
        fprintf(stderr, PROG ": unpacked the bundle into %s\n", dir);
    close(lock);
    exec_bundle(&t, argc, argv);
    close(use);
    return;
fail_locked:
    close(lock);
    close(use);
}

/*
 * The watchdog of a temporary unpack: a detached process (own session, stdio on /dev/null, so the
 * kubelet's pipes never wait for it) that blocks on a pipe whose write end only the program holds,
 * and removes the directory when the program is gone, however it ended.
 */
static int start_watchdog(const char *tmp)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    struct stat want;
    fstat(dfd, &want);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        close(dfd);
        return -1;
    }
    if (pid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        for (int fd = 3; fd < 1024; fd++)
            if (fd != p[0] && fd != dfd)
                close(fd);
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        /* Only end of file (every write end closed: the program is gone) ends the wait; a byte
         * someone wrote into the pipe through /proc/PID/fd is read and ignored. */
        char c[64];
        for (;;) {
            ssize_t n = read(p[0], c, sizeof c);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
        struct stat now;
        if (lstat(tmp, &now) == 0 && now.st_ino == want.st_ino && now.st_dev == want.st_dev)
            rm_tree(tmp);
        _exit(0);
    }
    close(p[0]);
    close(dfd);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return p[1]; /* inherited by the program through exec: the pipe closes when it exits */
}

/* The last resort in `parent`: a fresh private directory, removed by a watchdog; returns when
 * exec is refused there (soft_err says why). */
static void run_private(const struct bundle *b, const char *parent, int argc, char **argv)
{
    char tmp[PATH_MAX];
    struct target t;
    if (fmtpath(tmp, sizeof tmp, "%s/" PROG "-XXXXXX", parent) != 0 || !mkdtemp(tmp))
        die("cannot create a temporary directory in %s: %s", parent, strerror(errno));
    int rc = extract(b, tmp, 0);
    if (rc != 0) {
        rm_tree(tmp);
        die("cannot unpack into %s: %s", tmp, soft_err);
    }
    if (set_target(&t, b, tmp) != 0) {
        rm_tree(tmp);
        die("cannot unpack into %s: %s", tmp, soft_err);
    }
    int pipe_end = start_watchdog(tmp);
    if (pipe_end < 0) {
        rm_tree(tmp);
        die("cannot start the clean-up of %s: %s", tmp, strerror(errno));
    }
    exec_bundle(&t, argc, argv);
    close(pipe_end); /* the watchdog removes the tree */
}

/*
 * Fallback, in $TMPDIR or else /tmp (each must pass the trust check and allow exec): first the
 * shared tree <tmp>/ecr-credential-provider-<uid>, run like the persistent base (unpacked once per
 * version, not once per run: a storm of fallback runs costs one tree, not one each); then a fresh
 * private directory with a watchdog.
 */
static void run_temporary(const struct bundle *b, int argc, char **argv) __attribute__((noreturn));
static void run_temporary(const struct bundle *b, int argc, char **argv)
{
    char why[sizeof soft_err], real[PATH_MAX], shared[PATH_MAX];
    const char *env = getenv("TMPDIR");
    const char *dirs[2] = {env && env[0] == '/' ? env : NULL, "/tmp"};
    memcpy(why, soft_err, sizeof why);
    if (verbose)
        fprintf(stderr, PROG ": warning: not using the persistent runtime directory (%s); unpacking into a "
                "temporary directory\n", why[0] ? why : "unknown reason");
    soft("no trusted temporary directory");
    for (size_t i = 0; i < 2; i++) {
        if (!dirs[i] || (i == 1 && dirs[0] && strcmp(dirs[0], dirs[1]) == 0))
            continue;
        if (trusted_dir(dirs[i], real, 0, 1) != 0 || on_noexec(real)) {
            if (verbose)
                fprintf(stderr, PROG ": warning: not using the temporary directory %s (%s)\n", dirs[i], soft_err);
            continue;
        }
        if (fmtpath(shared, sizeof shared, "%s/" PROG "-%u", real, (unsigned)geteuid()) == 0)
            run_base(b, shared, argc, argv);
        if (verbose)
            fprintf(stderr, PROG ": warning: not using the shared temporary tree %s (%s)\n", shared, soft_err);
        run_private(b, real, argc, argv);
        if (verbose)
            fprintf(stderr, PROG ": warning: not using the temporary directory %s (%s)\n", real, soft_err);
    }
    die("cannot unpack: no usable runtime directory (%s) and no usable temporary directory (%s)",
        why[0] ? why : "?", soft_err);
}

/* The plugin's own verbosity flags (cli.py): -v, -vv..., --verbose, klog's --v=N / --v N with N >= 2. */
static int want_verbose(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0 || strncmp(a, "-vv", 3) == 0)
            return 1;
        if (strncmp(a, "--v=", 4) == 0 && atoi(a + 4) >= 2)
            return 1;
        if (strcmp(a, "--v") == 0 && i + 1 < argc && atoi(argv[i + 1]) >= 2)
            return 1;
    }
    return 0;
}

/*
 * The node's preloads are not the bundle's: a library in LD_PRELOAD built for a newer glibc than
 * the carried one would stop the carried loader ("version GLIBC_2.xx not found"). The value is
 * moved to ECR_KUBELET_LD_PRELOAD for the program (packaging/entry.py puts it back for the
 * programs it starts). /etc/ld.so.preload is ignored by the carried loader itself
 * (packaging/carry_libc.py renames the path in it).
 */
static void set_environment(int argc, char **argv)
{
    const char *libpath = getenv("LD_LIBRARY_PATH");
    if (libpath && libpath[0] && !(node_library_path = strdup(libpath)))
        die("out of memory");
    if (argc > 0 && argv[0] && setenv("ECR_KUBELET_ARGV0", argv[0], 1) != 0)
        die("cannot set ECR_KUBELET_ARGV0: %s", strerror(errno));
    const char *preload = getenv("LD_PRELOAD");
    if (preload) {
        if (setenv("ECR_KUBELET_LD_PRELOAD", preload, 1) != 0)
            die("cannot set ECR_KUBELET_LD_PRELOAD: %s", strerror(errno));
        unsetenv("LD_PRELOAD");
    }
}

int main(int argc, char **argv)
{
    struct bundle b;
    char conf[PATH_MAX];
    struct stat in;
    /* CPython refuses to start with stdin a directory, in several lines of fatal error: say it in one. */
    if (fstat(0, &in) == 0 && S_ISDIR(in.st_mode))
        die_code(2, "stdin is a directory, not a request");
    verbose = want_verbose(argc, argv);
    const char *all = getenv("ECR_KUBELET_PRUNE_ALL");
    prune_all = all && strcmp(all, "1") == 0;
    read_trailer(&b);
    set_environment(argc, argv);
    if (runtime_base(conf, sizeof conf))
        run_base(&b, conf, argc, argv);
    run_temporary(&b, argc, argv);
}

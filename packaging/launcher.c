/*
 * ecr-credential-provider launcher: unpack once, then exec.
 *
 * The release binary is this small program with a zlib-compressed PyInstaller one-dir bundle
 * appended (packaging/make-bundle.py writes it). Layout of the file:
 *
 *   [launcher ELF][payload: one zlib stream of records][trailer, TRAILER_SIZE bytes]
 *
 * Trailer (little-endian): u64 payload offset, u64 payload length, 64 ASCII hex digits of the
 * payload's sha256 (the bundle id), 64 bytes NUL-padded relative path of the bundled executable,
 * 16 bytes magic "ECRKUBELET-BNDL1".
 * Payload records: u8 type ('D' directory, 'F' file, 'L' symlink, 'E' end), u32 mode,
 * u32 path length, u64 size, the path, then `size` bytes (file data or symlink target).
 *
 * Run: the runtime base is $ECR_KUBELET_RUNTIME_DIR, else /var/cache/ecr-credential-provider/runtime
 * for root, else ${XDG_CACHE_HOME:-$HOME/.cache}/ecr-credential-provider/runtime. When
 * <base>/<id>/ holds the completion marker, the launcher execv()s the bundled executable in it
 * (same argv and environment; no second process, nothing written). Otherwise it takes an flock on
 * <base>/<id>.lock, re-checks, inflates into <base>/<id>.tmp.<pid>/, fsyncs, writes the marker,
 * renames the directory to <base>/<id> and execs. <base> and <base>/<id> are trusted only when
 * lstat() shows a real directory owned by the effective uid and not group/world-writable.
 * When no persistent location is usable the bundle is inflated into a fresh mkdtemp() directory
 * under $TMPDIR (or /tmp), run as a child, and the directory is removed when the child exits; the
 * launcher then exits with the child's status (or re-raises its signal).
 *
 * Errors: one line "ecr-credential-provider: error: ..." on stderr, exit code 1. Never writes to
 * stdout (the kubelet reads the CredentialProviderResponse from it).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#define PROG "ecr-credential-provider"
#define MAGIC "ECRKUBELET-BNDL1"
#define MAGIC_LEN 16
#define ID_LEN 64
#define ENTRY_LEN 64
#define TRAILER_SIZE (8 + 8 + ID_LEN + ENTRY_LEN + MAGIC_LEN)
#define MARKER ".ecr-bundle-complete"
#define DEFAULT_ROOT_BASE "/var/cache/ecr-credential-provider/runtime"
#define CHUNK 65536

struct bundle {
    int fd;                     /* our own executable */
    uint64_t offset, length;    /* payload */
    char id[ID_LEN + 1];
    char entry[ENTRY_LEN + 1];
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": error: %s\n", msg);
    _exit(1);
}

/* Error text for the "soft" failures that make us fall back; set, never printed on success. */
static char soft_err[512];

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
    return 1;
}

/* A relative path of plain components: no leading '/', no "", "." or ".." component. */
static int valid_relpath(const char *p)
{
    if (*p == '\0' || *p == '/')
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
    memcpy(b->entry, t + 16 + ID_LEN, ENTRY_LEN);
    b->entry[ENTRY_LEN] = '\0';
    if (b->offset > (uint64_t)st.st_size || b->length > (uint64_t)st.st_size - TRAILER_SIZE - b->offset ||
        !valid_id(b->id) || !valid_relpath(b->entry))
        die("corrupt bundle trailer");
}

/* ---- trusted directories ------------------------------------------------------------------- */

/* 1 when path is a real directory (not a symlink) owned by euid and not group/world-writable. */
static int trusted_dir(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        soft("%s: %s", path, strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        soft("%s is not a directory (or is a symlink)", path);
        return 0;
    }
    if (st.st_uid != geteuid()) {
        soft("%s is owned by uid %u, not %u", path, (unsigned)st.st_uid, (unsigned)geteuid());
        return 0;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        soft("%s is group- or world-writable (mode %o)", path, (unsigned)(st.st_mode & 07777));
        return 0;
    }
    return 1;
}

/* mkdir -p with mode 0700 for the components we create. */
static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                soft("cannot create %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

/* The persistent base directory, or NULL when none can be determined. */
static const char *runtime_base(char *buf, size_t size)
{
    const char *env = getenv("ECR_KUBELET_RUNTIME_DIR");
    if (env && *env) {
        if (env[0] != '/') {
            soft("ECR_KUBELET_RUNTIME_DIR=%s is not an absolute path", env);
            return NULL;
        }
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
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
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

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Remove <base>/<id>.tmp.* left by extractions that died; only called with the lock held. */
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

struct pending_link {
    char *path, *target;
};

/* A symlink target must stay inside the tree, judged from the link's own directory. */
static int link_target_ok(const char *path, const char *target)
{
    if (target[0] == '\0' || target[0] == '/')
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

/*
 * Inflate the payload into the existing, empty directory `dest`. Returns 0, or -1 with soft_err
 * set. Symlinks are created after every file and directory, so nothing is written through one.
 */
static int extract(const struct bundle *b, const char *dest)
{
    struct inflater *f = malloc(sizeof *f);
    unsigned char *data = malloc(CHUNK);
    struct pending_link *links = NULL;
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
    for (;;) {
        unsigned char h[17];
        if (inf_read(f, h, sizeof h) != 0) {
            soft("corrupt bundle payload");
            goto out;
        }
        char type = (char)h[0];
        uint32_t mode = le32(h + 1) & 0755; /* no setuid/setgid/sticky, no group/world write */
        uint32_t plen = le32(h + 5);
        uint64_t size = le64(h + 9);
        if (type == 'E')
            break;
        if (plen == 0 || plen >= sizeof path || inf_read(f, path, plen) != 0) {
            soft("corrupt bundle payload");
            goto out;
        }
        path[plen] = '\0';
        if (memchr(path, '\0', plen) || !valid_relpath(path)) {
            soft("bundle payload holds an unsafe path");
            goto out;
        }
        if (type == 'D') {
            if (mkdirat(rootfd, path, 0700) != 0 && errno != EEXIST) {
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
                goto out;
            }
            int fd = openat(rootfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0) {
                soft("cannot create %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
            uint64_t left = size;
            while (left > 0) {
                size_t n = left < CHUNK ? (size_t)left : CHUNK;
                if (inf_read(f, data, n) != 0) {
                    close(fd);
                    soft("corrupt bundle payload");
                    goto out;
                }
                for (size_t off = 0; off < n;) {
                    ssize_t w = write(fd, data + off, n - off);
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0) {
                        soft("cannot write %s/%s: %s", dest, path, strerror(errno));
                        close(fd);
                        goto out;
                    }
                    off += (size_t)w;
                }
                left -= n;
            }
            if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
                soft("cannot finish %s/%s: %s", dest, path, strerror(errno));
                goto out;
            }
        } else if (type == 'L') {
            if (size == 0 || size >= PATH_MAX) {
                soft("corrupt bundle payload");
                goto out;
            }
            char *target = malloc((size_t)size + 1);
            struct pending_link *grown = realloc(links, (nlinks + 1) * sizeof *links);
            if (!target || !grown) {
                free(target);
                soft("out of memory");
                goto out;
            }
            links = grown;
            if (inf_read(f, target, (size_t)size) != 0) {
                free(target);
                soft("corrupt bundle payload");
                goto out;
            }
            target[size] = '\0';
            if (memchr(target, '\0', (size_t)size) || !link_target_ok(path, target)) {
                free(target);
                soft("bundle payload holds an unsafe symlink");
                goto out;
            }
            links[nlinks].path = strdup(path);
            links[nlinks].target = target;
            if (!links[nlinks].path) {
                free(target);
                soft("out of memory");
                goto out;
            }
            nlinks++;
        } else {
            soft("corrupt bundle payload (record type %d)", type);
            goto out;
        }
    }
    for (size_t i = 0; i < nlinks; i++) {
        if (!parents_are_dirs(rootfd, links[i].path) || symlinkat(links[i].target, rootfd, links[i].path) != 0) {
            soft("cannot create symlink %s/%s", dest, links[i].path);
            goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; i < nlinks; i++) {
        free(links[i].path);
        free(links[i].target);
    }
    free(links);
    if (rootfd >= 0)
        close(rootfd);
    inflateEnd(&f->zs);
    free(f);
    free(data);
    return rc;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* ---- running ------------------------------------------------------------------------------- */

/* 1 when <dir> is trusted and carries the completion marker. */
static int complete_bundle(const char *dir, const char *marker)
{
    struct stat st;
    if (!trusted_dir(dir))
        return 0;
    if (lstat(marker, &st) != 0 || !S_ISREG(st.st_mode)) {
        soft("%s is missing", marker);
        return 0;
    }
    return 1;
}

static void exec_bundle(const char *exe, char **argv) __attribute__((noreturn));
static void exec_bundle(const char *exe, char **argv)
{
    execv(exe, argv);
    die("cannot execute %s: %s", exe, strerror(errno));
}

/*
 * Persistent location: exec the bundle (never returns) when it is present or could be created;
 * returns when the location is unusable (soft_err says why).
 */
static void run_persistent(const struct bundle *b, char **argv)
{
    char basebuf[PATH_MAX], dir[PATH_MAX], marker[PATH_MAX], exe[PATH_MAX];
    char lockpath[PATH_MAX], tmp[PATH_MAX], tmarker[PATH_MAX];
    const char *base = runtime_base(basebuf, sizeof basebuf);
    if (!base)
        return;
    if (fmtpath(dir, sizeof dir, "%s/%s", base, b->id) != 0 ||
        fmtpath(marker, sizeof marker, "%s/%s", dir, MARKER) != 0 ||
        fmtpath(exe, sizeof exe, "%s/%s", dir, b->entry) != 0 ||
        fmtpath(lockpath, sizeof lockpath, "%s/%s.lock", base, b->id) != 0 ||
        fmtpath(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid()) != 0 ||
        fmtpath(tmarker, sizeof tmarker, "%s/%s", tmp, MARKER) != 0)
        return;

    /* Fast path: already unpacked. */
    if (trusted_dir(base) && complete_bundle(dir, marker))
        exec_bundle(exe, argv);

    if (mkdirs(base) != 0 || !trusted_dir(base))
        return;
    int lock = open(lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock < 0) {
        soft("cannot open %s: %s", lockpath, strerror(errno));
        return;
    }
    while (flock(lock, LOCK_EX) != 0) {
        if (errno != EINTR) {
            soft("cannot lock %s: %s", lockpath, strerror(errno));
            close(lock);
            return;
        }
    }
    if (complete_bundle(dir, marker)) {
        close(lock);
        exec_bundle(exe, argv);
    }
    struct stat st;
    if (lstat(dir, &st) == 0) {
        /* Left over without a marker (interrupted before the rename cannot happen; be safe). */
        if (!trusted_dir(dir)) {
            close(lock);
            return;
        }
        rm_tree(dir);
    }
    rm_stale_tmp(base, b->id); /* we hold the lock: any <id>.tmp.* is left by a dead extraction */
    if (mkdir(tmp, 0700) != 0) {
        soft("cannot create %s: %s", tmp, strerror(errno));
        close(lock);
        return;
    }
    if (extract(b, tmp) != 0)
        goto fail;
    int mfd = open(tmarker, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (mfd < 0) {
        soft("cannot create %s: %s", tmarker, strerror(errno));
        goto fail;
    }
    char line[ID_LEN + 2];
    snprintf(line, sizeof line, "%s\n", b->id);
    int ok = write(mfd, line, strlen(line)) == (ssize_t)strlen(line) && fsync(mfd) == 0;
    ok = (close(mfd) == 0) && ok;
    if (!ok || fsync_path(tmp) != 0) {
        soft("cannot write %s: %s", tmarker, strerror(errno));
        goto fail;
    }
    if (rename(tmp, dir) != 0) {
        soft("cannot rename %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fsync_path(base);
    close(lock);
    exec_bundle(exe, argv);
fail:
    rm_tree(tmp);
    close(lock);
}

static volatile sig_atomic_t child_pid;

static void forward(int sig)
{
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

/* Fallback: unpack into a fresh temporary directory, run the bundle as a child, clean up. */
static void run_temporary(const struct bundle *b, char **argv) __attribute__((noreturn));
static void run_temporary(const struct bundle *b, char **argv)
{
    char persistent_err[sizeof soft_err];
    char tmp[PATH_MAX], exe[PATH_MAX];
    const char *tmpdir = getenv("TMPDIR");
    memcpy(persistent_err, soft_err, sizeof soft_err);
    if (!tmpdir || tmpdir[0] != '/')
        tmpdir = "/tmp";
    if (fmtpath(tmp, sizeof tmp, "%s/" PROG "-XXXXXX", tmpdir) != 0 || !mkdtemp(tmp))
        die("cannot unpack: no usable runtime directory (%s) and cannot create a temporary directory in %s: %s",
            persistent_err[0] ? persistent_err : "?", tmpdir, strerror(errno));
    if (extract(b, tmp) != 0) {
        rm_tree(tmp);
        die("cannot unpack into %s: %s", tmp, soft_err);
    }
    if (fmtpath(exe, sizeof exe, "%s/%s", tmp, b->entry) != 0) {
        rm_tree(tmp);
        die("cannot unpack into %s: %s", tmp, soft_err);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rm_tree(tmp);
        die("cannot fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* The kubelet kills only its direct child (us): take the child down with us. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execv(exe, argv);
        die("cannot execute %s: %s", exe, strerror(errno));
    }
    child_pid = pid;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            rm_tree(tmp);
            die("waitpid: %s", strerror(errno));
        }
    }
    rm_tree(tmp);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        sigset_t set;
        signal(sig, SIG_DFL);
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

int main(int argc, char **argv)
{
    struct bundle b;
    (void)argc;
    read_trailer(&b);
    run_persistent(&b, argv);
    run_temporary(&b, argv);
}

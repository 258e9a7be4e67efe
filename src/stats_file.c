/* stats_file.c: the library's live stats file (stats_file.h): made at the first connect,
 * written with relaxed atomics, handed to a private copy in a forked child, removed at exit. */
#define _GNU_SOURCE
#include "stats_file.h"
#include "clock.h"
#include "key.h"
#include "log.h"
#include "settings.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct stats_region {
    struct stats_file_header header;
};

struct stats_region *stats_region;
static struct pqdedup_stats stats_before_region;
struct pqdedup_stats *stats_now = &stats_before_region;

static char file_path[PATH_MAX]; /* the file this process made ("" when none) */
static pid_t file_pid;           /* the process that made it: only that one removes it */
static bool region_is_file;      /* the region is the file's shared mapping */
static _Atomic bool child_wants_file;

static struct stats_file_header *header(void)
{
    return &stats_region->header;
}

static struct stats_file_key *keys(void)
{
    return (struct stats_file_key *) ((char *) stats_region + STATS_FILE_KEYS_AT);
}

static struct stats_file_site *sites(void)
{
    return (struct stats_file_site *) ((char *) stats_region + STATS_FILE_SITES_AT);
}

static struct stats_file_handle *handles(void)
{
    return (struct stats_file_handle *) ((char *) stats_region + STATS_FILE_HANDLES_AT);
}

/* ---- making the file ---------------------------------------------------------------- */

/* Makes dir (mode 0700) unless it exists, and checks it is a directory of this user that no
 * one else may write to. Returns NULL when fit, else why not (a static sentence). */
static const char *prepare_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return strerror(errno);
    struct stat st;
    if (lstat(dir, &st) != 0)
        return strerror(errno);
    if (!S_ISDIR(st.st_mode))
        return "it is not a directory";
    if (st.st_uid != geteuid())
        return "it belongs to another user";
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return "others may write to it";
    return NULL;
}

/* Reads a small /proc file into buf (NUL-terminated). Returns the bytes read, -1 on error. */
static ssize_t read_proc(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

/* The process's start in clock ticks since boot (/proc/self/stat field 22), 0 if unknown. */
static uint64_t start_ticks(void)
{
    char stat[1024];
    if (read_proc("/proc/self/stat", stat, sizeof stat) <= 0)
        return 0;
    const char *p = strrchr(stat, ')');
    if (p == NULL)
        return 0;
    unsigned long long ticks = 0;
    /* after ") ": state (3), then fields 4..21, then starttime (22) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &ticks) != 1)
        return 0;
    return ticks;
}

/* Fills the header's description of this process (pid, uid, start, command, settings). */
static void describe_process(struct stats_file_header *h)
{
    h->pid = (int32_t) getpid();
    h->uid = (uint32_t) geteuid();
    h->start_ticks = start_ticks();
    struct timespec real, boot;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    long hz = sysconf(_SC_CLK_TCK);
    int64_t since_start_ns = (int64_t) boot.tv_sec * NS_PER_SEC + boot.tv_nsec -
                             (hz > 0 ? (int64_t) (h->start_ticks * (uint64_t) (NS_PER_SEC / hz)) : 0);
    h->start_unix_ns = (int64_t) real.tv_sec * NS_PER_SEC + real.tv_nsec - (since_start_ns > 0 ? since_start_ns : 0);

    char cmdline[sizeof h->command];
    ssize_t n = read_proc("/proc/self/cmdline", cmdline, sizeof cmdline);
    for (ssize_t i = 0; i + 1 < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    if (n <= 0)
        read_proc("/proc/self/comm", cmdline, sizeof cmdline);
    cmdline[strcspn(cmdline, "\n")] = '\0';
    snprintf(h->command, sizeof h->command, "%s", cmdline);
    size_t first = strcspn(cmdline, " ");
    cmdline[first] = '\0';
    const char *slash = strrchr(cmdline, '/');
    snprintf(h->program, sizeof h->program, "%.63s", slash != NULL ? slash + 1 : cmdline);
    snprintf(h->settings, sizeof h->settings,
             "keep_per_key=%d max_per_key=%d unbind_after=%lldms max_wait=%lldms reset=%s reset_query=%s",
             settings.keep_per_key, settings.max_per_key, (long long) (settings.unbind_after_ns / NS_PER_MS),
             (long long) (settings.max_wait_ns / NS_PER_MS), settings.reset_only_dirty ? "dirty" : "always",
             settings.reset_query[0] != '\0' ? settings.reset_query : "(none)");
}

/* The header fields that describe the layout. */
static void describe_layout(struct stats_file_header *h)
{
    h->version = STATS_FILE_VERSION;
    h->header_bytes = sizeof(struct stats_file_header);
    h->counters_bytes = sizeof(struct pqdedup_stats);
    h->key_bytes = sizeof(struct stats_file_key);
    h->site_bytes = sizeof(struct stats_file_site);
    h->handle_bytes = sizeof(struct stats_file_handle);
    h->keys = STATS_FILE_KEYS;
    h->sites = STATS_FILE_SITES;
    h->handles = STATS_FILE_HANDLES;
    h->file_bytes = STATS_FILE_BYTES;
}

/* Bytes of the region worth copying: everything up to the last handle record used. */
static size_t used_bytes(void)
{
    uint32_t used = atomic_load_explicit(&header()->handles_used, memory_order_relaxed);
    if (used > STATS_FILE_HANDLES)
        used = STATS_FILE_HANDLES;
    return STATS_FILE_HANDLES_AT + (size_t) used * sizeof(struct stats_file_handle);
}

/* Says once why this process has no stats file. */
static void no_file(const char *fmt, const char *a, const char *b)
{
    static _Atomic bool said;
    if (!atomic_exchange(&said, true))
        log_setting_warning(fmt, a, b);
}

/* Removes this process's file (atexit). The region stays mapped: the exit report and other
 * threads still use it. */
static void remove_file(void)
{
    if (file_path[0] != '\0' && file_pid == getpid()) {
        unlink(file_path);
        file_path[0] = '\0';
    }
}

/* Creates this process's file, sized, mode 0600; a file of the same name is left by an
 * earlier program of this PID (this process before an exec, or a dead one) and replaced.
 * Returns the descriptor, or -1 (after the warning). */
static int create_file(void)
{
    char dir[PATH_MAX - 64];
    stats_file_dir(settings.stats_dir, dir, sizeof dir);
    const char *why = prepare_dir(dir);
    if (why != NULL) {
        no_file("no live stats file: cannot use the directory %s (%s); `pqdedup --stat` will not show "
                "this process (PQDEDUP_STATS_DIR sets another)", dir, why);
        return -1;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" STATS_FILE_PREFIX "%ld" STATS_FILE_SUFFIX, dir, (long) getpid());
    unlink(path);
    mode_t old_mask = umask(077);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    umask(old_mask);
    if (fd < 0) {
        int err = errno;
        no_file("no live stats file: cannot create %s (%s)", path, strerror(err));
        return -1;
    }
    if (ftruncate(fd, (off_t) STATS_FILE_BYTES) != 0) {
        int err = errno;
        no_file("no live stats file: cannot size %s (%s)", path, strerror(err));
        close(fd);
        unlink(path);
        return -1;
    }
    snprintf(file_path, sizeof file_path, "%s", path);
    file_pid = getpid();
    return fd;
}

/* Marks the file complete: the magic is written last, so a reader never takes a file being
 * made for a finished one. */
static void publish_magic(void)
{
    atomic_thread_fence(memory_order_release);
    memcpy(header()->magic, STATS_FILE_MAGIC, sizeof header()->magic);
}

void stats_file_start(void)
{
    int saved_errno = errno;
    int fd = settings.live_stats ? create_file() : -1;
    void *region = MAP_FAILED;
    if (fd >= 0) {
        region = mmap(NULL, STATS_FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (region == MAP_FAILED) {
            no_file("no live stats file: cannot map %s (%s)", file_path, strerror(errno));
            unlink(file_path);
            file_path[0] = '\0';
        }
    }
    if (region == MAP_FAILED)
        region = mmap(NULL, STATS_FILE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (region != MAP_FAILED) {
        stats_region = region;
        describe_layout(header());
        describe_process(header());
        strcpy(keys()[0].name, "(other keys)");
        atomic_store_explicit(&header()->keys_used, 1, memory_order_relaxed);
        strcpy(sites()[0].module, "(unknown)");
        atomic_store_explicit(&sites()[0].ready, 1, memory_order_relaxed);
        /* Nothing was counted before the first connect but this process's own ping. */
        struct pqdedup_stats *counters = (struct pqdedup_stats *) ((char *) region + STATS_FILE_COUNTERS_AT);
#define COPY_COUNTER(name, scope, unit, metric, help) \
        atomic_store(&counters->name, atomic_load(&stats_before_region.name));
        STATS_COUNTERS(COPY_COUNTER)
#undef COPY_COUNTER
        stats_now = counters;
        if (file_path[0] != '\0') {
            region_is_file = true;
            publish_magic();
            atexit(remove_file);
        }
    }
    errno = saved_errno;
}

/* ---- fork ------------------------------------------------------------------------------ */

void stats_file_after_fork_child(void)
{
    if (stats_region == NULL)
        return;
    if (region_is_file) {
        /* The parent's file: from now on a private copy at the same address. */
        size_t used = used_bytes();
        void *copy = mmap(NULL, used, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (copy != MAP_FAILED)
            memcpy(copy, stats_region, used);
        void *fresh = mmap(stats_region, STATS_FILE_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
        if (fresh == MAP_FAILED) {
            /* Cannot happen short of the kernel refusing memory; then stop counting here,
             * rather than ever write into the parent's file. */
            munmap(stats_region, STATS_FILE_BYTES);
            stats_region = NULL;
            stats_now = &stats_before_region;
            if (copy != MAP_FAILED)
                munmap(copy, used);
            return;
        }
        if (copy != MAP_FAILED) {
            memcpy(stats_region, copy, used);
            munmap(copy, used);
        }
        file_path[0] = '\0';
        file_pid = 0;
        region_is_file = false;
        memset(header()->magic, 0, sizeof header()->magic);
    }
    /* Its own file at its first connect (also when the parent had none: a child that
     * changed user may have a directory its parent could not use). */
    atomic_store(&child_wants_file, settings.live_stats);
    /* The child counts from zero; the handles it inherited stay its own. */
    memset(stats_now, 0, sizeof *stats_now);
    uint32_t nkeys = atomic_load(&header()->keys_used);
    for (uint32_t i = 0; i < nkeys && i < STATS_FILE_KEYS; i++) {
        memset(&keys()[i].counters, 0, sizeof keys()[i].counters);
        atomic_store(&keys()[i].server_free, 0);
    }
    memset(&stats_before_region, 0, sizeof stats_before_region);
}

void stats_file_connect_hook(void)
{
    if (!atomic_load_explicit(&child_wants_file, memory_order_relaxed) ||
        !atomic_exchange(&child_wants_file, false))
        return;
    int saved_errno = errno;
    int fd = create_file();
    if (fd >= 0) {
        describe_process(header());
        /* The private copy goes into the file, which then replaces it at the same address
         * (a count made by another thread in between is lost). */
        size_t used = used_bytes();
        bool written = pwrite(fd, stats_region, used, 0) == (ssize_t) used;
        void *mapped = written ? mmap(stats_region, STATS_FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                                      fd, 0)
                               : MAP_FAILED;
        close(fd);
        if (mapped == MAP_FAILED) {
            /* The private copy stays in place: counting goes on, unseen. */
            unlink(file_path);
            file_path[0] = '\0';
        } else {
            region_is_file = true;
            publish_magic();
            atexit(remove_file);
        }
    }
    errno = saved_errno;
}

/* ---- keys ------------------------------------------------------------------------------ */

/* FNV-1a over the key's name='value' pairs, leaving out every parameter whose name contains
 * "password" (password, sslpassword): two keys that differ only there share a record. */
static uint64_t key_id(const char *key)
{
    uint64_t hash = 14695981039346656037ULL;
    const char *p = key;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        const char *name = p;
        while (*p != '\0' && *p != '=')
            p++;
        size_t name_len = (size_t) (p - name);
        if (*p == '=')
            p++;
        if (*p == '\'') {
            for (p++; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p != '\0' && *p != ' ')
                p++;
        }
        if (memmem(name, name_len, "password", 8) != NULL)
            continue;
        for (const char *c = name; c < p; c++) {
            hash ^= (unsigned char) *c;
            hash *= 1099511628211ULL;
        }
        hash ^= ' ';
        hash *= 1099511628211ULL;
    }
    return hash != 0 ? hash : 1;
}

struct stats_file_key *stats_file_key(const char *key)
{
    if (stats_region == NULL)
        return NULL;
    uint64_t id = key_id(key);
    uint32_t used = atomic_load_explicit(&header()->keys_used, memory_order_relaxed);
    for (uint32_t i = 1; i < used; i++)
        if (atomic_load_explicit(&keys()[i].id, memory_order_relaxed) == id)
            return &keys()[i];
    if (used >= STATS_FILE_KEYS)
        return &keys()[0];
    struct stats_file_key *k = &keys()[used];
    key_describe(key, k->name, sizeof k->name);
    atomic_store_explicit(&k->id, id, memory_order_relaxed);
    atomic_store_explicit(&header()->keys_used, used + 1, memory_order_release);
    return k;
}

uint16_t stats_file_key_index(const struct stats_file_key *k)
{
    return k != NULL && stats_region != NULL ? (uint16_t) (k - keys()) : 0;
}

/* ---- sites ------------------------------------------------------------------------------ */

/* Fills a site's module and function from dladdr. */
static void resolve_site(struct stats_file_site *s, const void *caller)
{
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (dladdr(caller, &info) == 0 || info.dli_fname == NULL) {
        snprintf(s->module, sizeof s->module, "(unknown)");
        snprintf(s->function, sizeof s->function, "%p", caller);
        return;
    }
    const char *slash = strrchr(info.dli_fname, '/');
    const char *module = slash != NULL ? slash + 1 : info.dli_fname;
    if (module[0] == '\0') {
        /* The main program: its name as the kernel has it. */
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        slash = strrchr(exe, '/');
        snprintf(s->module, sizeof s->module, "%s", slash != NULL ? slash + 1 : "(program)");
    } else {
        snprintf(s->module, sizeof s->module, "%s", module);
    }
    if (info.dli_sname != NULL)
        snprintf(s->function, sizeof s->function, "%s", info.dli_sname);
    else
        snprintf(s->function, sizeof s->function, "+0x%lx",
                 (unsigned long) ((uintptr_t) caller - (uintptr_t) info.dli_fbase));
}

uint16_t stats_file_site(const void *caller)
{
    if (stats_region == NULL || caller == NULL)
        return 0;
    uint64_t address = (uint64_t) (uintptr_t) caller;
    uint64_t start = (address >> 4) * 0x9E3779B97F4A7C15ULL >> 57; /* 0..127 */
    for (uint32_t probe = 0; probe < STATS_FILE_SITES; probe++) {
        uint32_t i = (uint32_t) ((start + probe) % STATS_FILE_SITES);
        if (i == 0)
            continue;
        struct stats_file_site *s = &sites()[i];
        uint64_t seen = atomic_load_explicit(&s->address, memory_order_acquire);
        if (seen == 0) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong(&s->address, &expected, address)) {
                resolve_site(s, caller);
                atomic_store_explicit(&s->ready, 1, memory_order_release);
                return (uint16_t) i;
            }
            seen = expected;
        }
        if (seen == address)
            return (uint16_t) i;
    }
    return 0;
}

/* ---- handle records ------------------------------------------------------------------------ */

void stats_file_handle_opened(struct stats_file_handle *rec, int64_t opened_ns)
{
    if (rec == NULL)
        return;
    uint32_t index = (uint32_t) (rec - handles());
    uint32_t used = atomic_load_explicit(&header()->handles_used, memory_order_relaxed);
    while (used <= index &&
           !atomic_compare_exchange_weak_explicit(&header()->handles_used, &used, index + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    atomic_store_explicit(&rec->key, 0, memory_order_relaxed);
    atomic_store_explicit(&rec->site, 0, memory_order_relaxed);
    atomic_store_explicit(&rec->wait_since_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&rec->last_call_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&rec->opened_ns, opened_ns, memory_order_relaxed);
    atomic_store_explicit(&rec->state, HANDLE_FREE, memory_order_relaxed);
}

void stats_file_wait_begins(struct stats_file_handle *rec, int64_t now)
{
    if (rec != NULL && atomic_load_explicit(&rec->wait_since_ns, memory_order_relaxed) == 0)
        atomic_store_explicit(&rec->wait_since_ns, now > 0 ? now : 1, memory_order_relaxed);
}

void stats_file_wait_ends(struct stats_file_handle *rec)
{
    if (rec == NULL)
        return;
    int64_t since = atomic_load_explicit(&rec->wait_since_ns, memory_order_relaxed);
    if (since == 0)
        return;
    atomic_store_explicit(&rec->wait_since_ns, 0, memory_order_relaxed);
    int64_t waited = monotonic_ns() - since;
    uint16_t key = atomic_load_explicit(&rec->key, memory_order_relaxed);
    struct stats_file_key *k = key != 0 && key < STATS_FILE_KEYS ? &keys()[key] : NULL;
    stats_add_n_key(stats_key_counters(k), wait_ns, (uint64_t) (waited > 0 ? waited : 0));
}

void stats_file_handle_state(struct stats_file_handle *rec, enum handle_state state)
{
    if (rec == NULL)
        return;
    atomic_store_explicit(&rec->state, (uint32_t) state, memory_order_relaxed);
    if (state == HANDLE_WAITING || state == HANDLE_QUEUED)
        stats_file_wait_begins(rec, monotonic_ns());
    else
        stats_file_wait_ends(rec);
}

void stats_file_handle_key(struct stats_file_handle *rec, const struct stats_file_key *k)
{
    if (rec != NULL)
        atomic_store_explicit(&rec->key, stats_file_key_index(k), memory_order_relaxed);
}

void stats_file_handle_site(struct stats_file_handle *rec, uint16_t site)
{
    if (rec != NULL)
        atomic_store_explicit(&rec->site, site, memory_order_relaxed);
}

/* ---- the exit report ------------------------------------------------------------------------ */

void stats_file_for_each_unfinished(void (*fn)(const char *key, const char *module, const char *function,
                                               unsigned count, int64_t oldest_ns, void *arg),
                                    void *arg)
{
    if (stats_region == NULL)
        return;
    enum { GROUPS = 64 };
    struct { uint16_t key, site; unsigned count; int64_t oldest; } groups[GROUPS];
    int ngroups = 0;
    unsigned other = 0;
    int64_t other_oldest = 0, now = monotonic_ns();
    uint32_t used = atomic_load_explicit(&header()->handles_used, memory_order_relaxed);
    for (uint32_t i = 0; i < used && i < STATS_FILE_HANDLES; i++) {
        struct stats_file_handle *rec = &handles()[i];
        if (atomic_load_explicit(&rec->state, memory_order_relaxed) == HANDLE_FREE)
            continue;
        uint16_t key = atomic_load_explicit(&rec->key, memory_order_relaxed);
        uint16_t site = atomic_load_explicit(&rec->site, memory_order_relaxed);
        int64_t age = now - atomic_load_explicit(&rec->opened_ns, memory_order_relaxed);
        int g = 0;
        while (g < ngroups && (groups[g].key != key || groups[g].site != site))
            g++;
        if (g == ngroups && ngroups < GROUPS)
            groups[ngroups++] = (typeof(groups[0])) { key, site, 0, 0 };
        if (g < ngroups) {
            groups[g].count++;
            if (age > groups[g].oldest)
                groups[g].oldest = age;
        } else {
            other++;
            if (age > other_oldest)
                other_oldest = age;
        }
    }
    for (int g = 0; g < ngroups; g++) {
        const struct stats_file_site *s =
            groups[g].site < STATS_FILE_SITES ? &sites()[groups[g].site] : &sites()[0];
        bool ready = atomic_load_explicit(&s->ready, memory_order_acquire) != 0;
        fn(groups[g].key < STATS_FILE_KEYS ? keys()[groups[g].key].name : "?", ready ? s->module : "(unknown)",
           ready ? s->function : "", groups[g].count, groups[g].oldest, arg);
    }
    if (other > 0)
        fn("(other keys)", "(other sites)", "", other, other_oldest, arg);
}

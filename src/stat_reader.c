/* stat_reader.c: `pqdedup --stat`: finds this user's live stats files, checks each one (owner,
 * layout, size, whether its process still lives), and turns them into a snapshot to print. */
#define _GNU_SOURCE
#include "stat_reader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000.0

/* ---- notes -------------------------------------------------------------------------- */

/* Appends a sentence about a file that is not shown. */
static void note(struct stat_snapshot *snap, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct stat_snapshot *snap, const char *fmt, ...)
{
    char *text = NULL;
    va_list args;
    va_start(args, fmt);
    int n = vasprintf(&text, fmt, args);
    va_end(args);
    char **grown = n >= 0 ? realloc(snap->notes, (snap->nnotes + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(text);
        return;
    }
    snap->notes = grown;
    snap->notes[snap->nnotes++] = text;
}

/* ---- the process behind a file ---------------------------------------------------------- */

enum liveness { ALIVE, GONE, REUSED, EXECED };

/* Reads a /proc file into a malloc'd, NUL-terminated buffer; NULL (errno set) on error. */
static char *read_whole(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t size = 0, cap = 8192;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL)
            break;
        if (size + 1 >= cap) {
            char *grown = realloc(buf, cap *= 2);
            if (grown == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
        }
        ssize_t n = read(fd, buf + size, cap - size - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size += (size_t) n;
    }
    int saved = errno;
    close(fd);
    if (buf != NULL)
        buf[size] = '\0';
    errno = saved;
    return buf;
}

/* The start time of process pid in clock ticks since boot; 0 when it does not exist or has
 * ended (a zombie not yet reaped by its parent). */
static uint64_t process_start_ticks(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    char *stat = read_whole(path);
    if (stat == NULL)
        return 0;
    unsigned long long ticks = 0;
    char state = '?';
    const char *p = strrchr(stat, ')');
    if (p == NULL || sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                            &state, &ticks) != 2 || state == 'Z' || state == 'X')
        ticks = 0;
    free(stat);
    return ticks;
}

/* True unless /proc/<pid>/maps can be read and maps neither `real_path` nor inode `st`. */
static bool process_maps_file(long pid, const char *real_path, const struct stat *st)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/maps", pid);
    char *maps = read_whole(path);
    if (maps == NULL)
        return true; /* cannot tell: take it as alive */
    bool found = false;
    for (char *line = maps; line != NULL && *line != '\0' && !found;) {
        char *end = strchr(line, '\n');
        if (end != NULL)
            *end = '\0';
        unsigned major = 0, minor = 0;
        unsigned long long inode = 0;
        int offset = 0;
        if (sscanf(line, "%*s %*s %*s %x:%x %llu %n", &major, &minor, &inode, &offset) >= 3) {
            const char *file = line + offset;
            found = (inode == (unsigned long long) st->st_ino && makedev(major, minor) == st->st_dev) ||
                    (real_path[0] != '\0' && strncmp(file, real_path, strlen(real_path)) == 0 &&
                     (file[strlen(real_path)] == '\0' || file[strlen(real_path)] == ' '));
        }
        line = end != NULL ? end + 1 : NULL;
    }
    free(maps);
    return found;
}

/* Whether the process that wrote a file with this pid and start time is still there and
 * still has the file mapped. */
static enum liveness process_liveness(long pid, uint64_t ticks, const char *real_path, const struct stat *st,
                                      uint64_t *now_ticks)
{
    *now_ticks = process_start_ticks(pid);
    if (*now_ticks == 0)
        return GONE;
    if (ticks != 0 && *now_ticks != ticks)
        return REUSED;
    if (!process_maps_file(pid, real_path, st))
        return EXECED;
    return ALIVE;
}

/* Seconds since boot of a tick count, for messages. */
static double ticks_s(uint64_t ticks)
{
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double) ticks / (double) hz : 0;
}

/* Removes `path` if it is still the file `st` describes. Returns true when removed. */
static bool remove_if_same(const char *path, const struct stat *st)
{
    struct stat now;
    if (lstat(path, &now) != 0 || now.st_ino != st->st_ino || now.st_dev != st->st_dev)
        return false;
    return unlink(path) == 0;
}

/* ---- reading a file ---------------------------------------------------------------------- */

/* A SIGBUS while the mapping is read (the file shrank under us) jumps back here. */
static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_bus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Copies a header string (at most size bytes, maybe not terminated) into out. */
static void copy_text(char *out, size_t out_size, const char *in, size_t in_size)
{
    size_t n = strnlen(in, in_size < out_size ? in_size : out_size - 1);
    memcpy(out, in, n);
    out[n] = '\0';
}

/* Loads the counters of a mapped struct pqdedup_stats into an array. */
static void load_counters(uint64_t *out, const struct pqdedup_stats *in)
{
#define STAT_LOAD(name, scope, unit, metric, help) \
    out[STAT_##name] = atomic_load_explicit(&in->name, memory_order_relaxed);
    STATS_COUNTERS(STAT_LOAD)
#undef STAT_LOAD
}

/* The index of the group of (key, site) in p, added if new; -1 when out of memory. */
static int group_of(struct stat_process *p, unsigned key, unsigned site)
{
    for (unsigned g = 0; g < p->ngroups; g++)
        if (p->groups[g].key == key && p->groups[g].site == site)
            return (int) g;
    struct stat_group *grown = realloc(p->groups, (p->ngroups + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    p->groups = grown;
    memset(&p->groups[p->ngroups], 0, sizeof p->groups[0]);
    p->groups[p->ngroups].key = key;
    p->groups[p->ngroups].site = site;
    p->groups[p->ngroups].min_idle_s = -1;
    return (int) p->ngroups++;
}

static int64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Fills p from a mapped, checked file. Returns false when out of memory. */
static bool load_process(struct stat_process *p, const char *map)
{
    const struct stats_file_header *h = (const void *) map;
    p->pid = h->pid;
    p->uid = h->uid;
    copy_text(p->program, sizeof p->program, h->program, sizeof h->program);
    copy_text(p->command, sizeof p->command, h->command, sizeof h->command);
    copy_text(p->settings, sizeof p->settings, h->settings, sizeof h->settings);
    p->start_unix_s = (double) h->start_unix_ns / NS_PER_SEC;
    p->uptime_s = (double) (clock_ns(CLOCK_REALTIME) - h->start_unix_ns) / NS_PER_SEC;
    if (p->uptime_s < 0)
        p->uptime_s = 0;
    load_counters(p->counters, (const void *) (map + STATS_FILE_COUNTERS_AT));

    const struct stats_file_key *keys = (const void *) (map + STATS_FILE_KEYS_AT);
    uint32_t nkeys = atomic_load_explicit(&((struct stats_file_header *) h)->keys_used, memory_order_acquire);
    if (nkeys > STATS_FILE_KEYS)
        nkeys = STATS_FILE_KEYS;
    p->keys = calloc(nkeys > 0 ? nkeys : 1, sizeof *p->keys);
    const struct stats_file_site *sites = (const void *) (map + STATS_FILE_SITES_AT);
    p->sites = calloc(STATS_FILE_SITES, sizeof *p->sites);
    if (p->keys == NULL || p->sites == NULL)
        return false;
    p->nkeys = nkeys;
    p->nsites = STATS_FILE_SITES;
    for (unsigned i = 0; i < nkeys; i++) {
        struct stat_key *k = &p->keys[i];
        k->id = atomic_load_explicit(&keys[i].id, memory_order_relaxed);
        copy_text(k->name, sizeof k->name, keys[i].name, sizeof keys[i].name);
        load_counters(k->counters, &keys[i].counters);
        k->server_free = atomic_load_explicit(&keys[i].server_free, memory_order_relaxed);
    }
    for (unsigned i = 0; i < STATS_FILE_SITES; i++) {
        if (atomic_load_explicit(&sites[i].ready, memory_order_acquire)) {
            copy_text(p->sites[i].module, sizeof p->sites[i].module, sites[i].module, sizeof sites[i].module);
            copy_text(p->sites[i].function, sizeof p->sites[i].function, sites[i].function, sizeof sites[i].function);
        } else {
            strcpy(p->sites[i].module, "(being resolved)");
        }
    }

    /* Two call sites in one function read the same: the leak report shows them as one. */
    unsigned same_site[STATS_FILE_SITES];
    for (unsigned i = 0; i < STATS_FILE_SITES; i++) {
        same_site[i] = i;
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(p->sites[i].module, p->sites[j].module) == 0 &&
                strcmp(p->sites[i].function, p->sites[j].function) == 0) {
                same_site[i] = j;
                break;
            }
        }
    }

    const struct stats_file_handle *handles = (const void *) (map + STATS_FILE_HANDLES_AT);
    uint32_t used = atomic_load_explicit(&((struct stats_file_header *) h)->handles_used, memory_order_relaxed);
    if (used > STATS_FILE_HANDLES)
        used = STATS_FILE_HANDLES;
    int64_t now = clock_ns(CLOCK_MONOTONIC), now_coarse = clock_ns(CLOCK_MONOTONIC_COARSE);
    for (uint32_t i = 0; i < used; i++) {
        const struct stats_file_handle *rec = &handles[i];
        uint32_t state = atomic_load_explicit(&rec->state, memory_order_relaxed);
        int64_t wait_since = atomic_load_explicit(&rec->wait_since_ns, memory_order_relaxed);
        if (state == HANDLE_FREE && wait_since == 0)
            continue;
        unsigned key = atomic_load_explicit(&rec->key, memory_order_relaxed);
        unsigned site = atomic_load_explicit(&rec->site, memory_order_relaxed);
        if (key >= nkeys)
            key = 0;
        site = site < STATS_FILE_SITES ? same_site[site] : 0;
        if (state >= HANDLE_STATE_COUNT)
            state = HANDLE_FREE;
        struct stat_key *k = &p->keys[key];
        if (wait_since != 0) {
            k->waiting++;
            double waited = (double) (now - wait_since) / NS_PER_SEC;
            if (waited > k->longest_wait_s)
                k->longest_wait_s = waited;
        }
        if (state == HANDLE_FREE)
            continue; /* a connect under way: not yet open */
        k->handles[state]++;
        k->handles_open++;
        if (HANDLE_STATE_HOLDS_SERVER(state))
            k->handles_bound++;
        int g = group_of(p, key, site);
        if (g < 0)
            return false;
        struct stat_group *grp = &p->groups[g];
        grp->count++;
        grp->handles[state]++;
        double age = (double) (now - atomic_load_explicit(&rec->opened_ns, memory_order_relaxed)) / NS_PER_SEC;
        int64_t last = atomic_load_explicit(&rec->last_call_ns, memory_order_relaxed);
        double idle = last == 0 ? 0 : (double) (now_coarse - last) / NS_PER_SEC;
        if (last == 0)
            grp->in_call++;
        if (idle < 0)
            idle = 0;
        if (age < 0)
            age = 0;
        if (grp->count == 1 || age > grp->oldest_s)
            grp->oldest_s = age;
        if (grp->count == 1 || age < grp->newest_s)
            grp->newest_s = age;
        if (idle > grp->max_idle_s)
            grp->max_idle_s = idle;
        if (grp->min_idle_s < 0 || idle < grp->min_idle_s)
            grp->min_idle_s = idle;
    }
    for (unsigned i = 0; i < nkeys; i++) {
        struct stat_key *k = &p->keys[i];
        k->server_open = (long) (k->counters[STAT_opened] - k->counters[STAT_closed]);
        k->server_bound = k->handles_bound;
        k->server_busy = k->server_open - k->server_free - k->server_bound;
        if (k->server_busy < 0)
            k->server_busy = 0;
        snprintf(k->label, sizeof k->label, "%s", k->name);
        for (unsigned j = 0; j < nkeys; j++)
            if (j != i && strcmp(p->keys[j].name, k->name) == 0)
                snprintf(k->label, sizeof k->label, "%s#%06llx", k->name, (unsigned long long) (k->id >> 40));
    }
    for (unsigned g = 0; g < p->ngroups; g++)
        if (p->groups[g].min_idle_s < 0)
            p->groups[g].min_idle_s = 0;
    return true;
}

static void free_process(struct stat_process *p)
{
    free(p->keys);
    free(p->sites);
    free(p->groups);
}

/* Checks the header of a mapped file of `size` bytes. Returns NULL when it is fit to read,
 * else why not (a sentence written into why). */
static const char *check_header(const char *map, size_t size, long pid, char *why, size_t why_size)
{
    const struct stats_file_header *h = (const void *) map;
    static const char zeros[8];
    if (size < sizeof *h) {
        snprintf(why, why_size, "truncated (%zu bytes; a stats file is %llu): not a complete pqdedup stats file",
                 size, (unsigned long long) STATS_FILE_BYTES);
        return why;
    }
    if (memcmp(h->magic, zeros, sizeof zeros) == 0 && h->version == 0) {
        snprintf(why, why_size, "not a pqdedup stats file, or one still being made (it starts with zeros)");
        return why;
    }
    if (memcmp(h->magic, STATS_FILE_MAGIC, sizeof h->magic) != 0) {
        snprintf(why, why_size, "not a pqdedup stats file (it does not start with %s)", STATS_FILE_MAGIC);
        return why;
    }
    if (h->version != STATS_FILE_VERSION || h->header_bytes != sizeof(struct stats_file_header) ||
        h->counters_bytes != sizeof(struct pqdedup_stats) || h->key_bytes != sizeof(struct stats_file_key) ||
        h->site_bytes != sizeof(struct stats_file_site) || h->handle_bytes != sizeof(struct stats_file_handle) ||
        h->keys != STATS_FILE_KEYS || h->sites != STATS_FILE_SITES || h->handles != STATS_FILE_HANDLES ||
        h->file_bytes != STATS_FILE_BYTES) {
        snprintf(why, why_size, "written by another version of pqdedup (layout %u; this pqdedup reads layout %u)",
                 h->version, STATS_FILE_VERSION);
        return why;
    }
    if (size < h->file_bytes) {
        snprintf(why, why_size, "truncated (%zu of its %llu bytes)", size, (unsigned long long) h->file_bytes);
        return why;
    }
    if (h->pid != pid) {
        snprintf(why, why_size, "its header names PID %ld, not the %ld of its name", (long) h->pid, pid);
        return why;
    }
    return NULL;
}

/* True for "pqdedup-<digits>.stats", with the pid in *pid. */
static bool stats_file_name(const char *name, long *pid)
{
    size_t prefix = strlen(STATS_FILE_PREFIX), suffix = strlen(STATS_FILE_SUFFIX), len = strlen(name);
    if (len <= prefix + suffix || strncmp(name, STATS_FILE_PREFIX, prefix) != 0 ||
        strcmp(name + len - suffix, STATS_FILE_SUFFIX) != 0)
        return false;
    char *end;
    errno = 0;
    long value = strtol(name + prefix, &end, 10);
    if (errno != 0 || end != name + len - suffix || value <= 0 || name[prefix] == '+' || name[prefix] == '-')
        return false;
    *pid = value;
    return true;
}

/* Reads one file into the snapshot, or notes why not; removes it when its process is gone. */
static void read_one(struct stat_snapshot *snap, const char *dir, const char *name, long pid)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == EACCES || err == EPERM)
            note(snap, "%s: cannot read it (%s): another user's file; skipped", path, strerror(err));
        else if (err == ELOOP)
            note(snap, "%s: a symbolic link, not a stats file; skipped", path);
        else if (err != ENOENT)
            note(snap, "%s: cannot open it (%s); skipped", path, strerror(err));
        else
            note(snap, "%s: gone while being read", path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        note(snap, "%s: not a regular file; skipped", path);
        close(fd);
        return;
    }
    if (st.st_uid != geteuid()) {
        note(snap, "%s: owned by uid %u, not by you (uid %u): another user's file; skipped (each user reads "
                   "only their own processes' files)", path, (unsigned) st.st_uid, (unsigned) geteuid());
        close(fd);
        return;
    }
    size_t size = (size_t) st.st_size;
    const char *map = size > 0 ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    char real_path[PATH_MAX];
    if (realpath(path, real_path) == NULL)
        real_path[0] = '\0';
    char why[512];
    const char *problem = map == MAP_FAILED ? (size == 0 ? "empty (0 bytes): not a pqdedup stats file" : strerror(errno))
                                            : NULL;

    struct sigaction bus = { .sa_handler = on_bus }, old_bus;
    sigemptyset(&bus.sa_mask);
    sigaction(SIGBUS, &bus, &old_bus);
    struct stat_process p;
    memset(&p, 0, sizeof p);
    bool loaded = false;
    uint64_t file_ticks = 0;
    if (sigsetjmp(bus_jump, 1) == 0) {
        bus_armed = 1;
        if (problem == NULL)
            problem = check_header(map, size, pid, why, sizeof why);
        if (problem == NULL) {
            file_ticks = ((const struct stats_file_header *) (const void *) map)->start_ticks;
            loaded = load_process(&p, map);
            if (!loaded)
                problem = "out of memory reading it";
        }
    } else {
        problem = "it shrank while being read";
        loaded = false;
    }
    bus_armed = 0;
    sigaction(SIGBUS, &old_bus, NULL);
    if (map != MAP_FAILED)
        munmap((void *) map, size);

    uint64_t now_ticks = 0;
    enum liveness live = process_liveness(pid, file_ticks, real_path, &st, &now_ticks);
    if (problem != NULL) {
        /* A file that cannot be read is removed only when its PID is certainly gone. */
        if (live == GONE && remove_if_same(path, &st))
            note(snap, "%s: %s; process %ld is gone: removed", path, problem, pid);
        else
            note(snap, "%s: %s; skipped", path, problem);
        free_process(&p);
        return;
    }
    if (live != ALIVE) {
        const char *removed = remove_if_same(path, &st) ? "removed" : "could not remove it";
        if (live == GONE)
            note(snap, "%s: process %ld (%s) is gone; it ended without removing its stats file (killed?): %s", path,
                 pid, p.program, removed);
        else if (live == REUSED)
            note(snap, "%s: PID %ld now belongs to another process (started %.2fs after boot; the file's %s started "
                       "%.2fs after boot): a stale file; %s",
                 path, pid, ticks_s(now_ticks), p.program, ticks_s(file_ticks), removed);
        else
            note(snap, "%s: process %ld no longer maps it (it ran another program): a stale file; %s", path, pid,
                 removed);
        free_process(&p);
        return;
    }
    struct stat_process *grown = realloc(snap->processes, (snap->nprocesses + 1) * sizeof *grown);
    if (grown == NULL) {
        free_process(&p);
        return;
    }
    snprintf(p.path, sizeof p.path, "%s", path);
    snap->processes = grown;
    snap->processes[snap->nprocesses++] = p;
}

static int by_pid(const void *a, const void *b)
{
    long x = ((const struct stat_process *) a)->pid, y = ((const struct stat_process *) b)->pid;
    return (x > y) - (x < y);
}

void stat_snapshot_read(struct stat_snapshot *snap, const char *dir, const long *pids, unsigned npids)
{
    memset(snap, 0, sizeof *snap);
    snprintf(snap->dir, sizeof snap->dir, "%s", dir);
    if (npids > 0) {
        for (unsigned i = 0; i < npids; i++) {
            char name[64];
            snprintf(name, sizeof name, STATS_FILE_PREFIX "%ld" STATS_FILE_SUFFIX, pids[i]);
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", dir, name);
            struct stat st;
            if (lstat(path, &st) != 0) {
                note(snap, "PID %ld: no live stats file (%s): not under pqdedup, no libpq connect yet, "
                           "PQDEDUP_LIVE_STATS=0, another PQDEDUP_STATS_DIR, or another user's process",
                     pids[i], path);
                snap->missing_pid = true;
                continue;
            }
            unsigned before = snap->nprocesses;
            read_one(snap, dir, name, pids[i]);
            if (snap->nprocesses == before)
                snap->missing_pid = true;
        }
    } else {
        DIR *d = opendir(dir);
        if (d == NULL) {
            if (errno != ENOENT)
                note(snap, "%s: cannot list it (%s)", dir, strerror(errno));
            return;
        }
        struct stat dst;
        if (fstat(dirfd(d), &dst) == 0 && (dst.st_uid != geteuid() || (dst.st_mode & (S_IWGRP | S_IWOTH)) != 0))
            note(snap, "%s: %s; pqdedup writes no file there", dir,
                 dst.st_uid != geteuid() ? "the directory belongs to another user" : "others may write to the directory");
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            long pid;
            if (stats_file_name(e->d_name, &pid))
                read_one(snap, dir, e->d_name, pid);
        }
        closedir(d);
    }
    if (snap->nprocesses > 1)
        qsort(snap->processes, snap->nprocesses, sizeof snap->processes[0], by_pid);
}

void stat_snapshot_free(struct stat_snapshot *snap)
{
    for (unsigned i = 0; i < snap->nprocesses; i++)
        free_process(&snap->processes[i]);
    free(snap->processes);
    for (unsigned i = 0; i < snap->nnotes; i++)
        free(snap->notes[i]);
    free(snap->notes);
    memset(snap, 0, sizeof *snap);
}

int stat_main(const long *pids, unsigned npids, enum stat_output output, bool watch, int64_t interval_ns)
{
    char dir[PATH_MAX];
    stats_file_dir(getenv("PQDEDUP_STATS_DIR"), dir, sizeof dir);
    for (;;) {
        struct stat_snapshot snap;
        stat_snapshot_read(&snap, dir, pids, npids);
        if (watch)
            fputs("\033[H\033[J", stdout); /* home, clear: redrawn in place, as top */
        switch (output) {
        case STAT_TEXT:
            stat_print_text(stdout, &snap);
            break;
        case STAT_JSON:
            stat_print_json(stdout, &snap);
            break;
        case STAT_PROMETHEUS:
            stat_print_prometheus(stdout, &snap);
            break;
        }
        FILE *notes = watch ? stdout : stderr;
        for (unsigned i = 0; i < snap.nnotes; i++)
            fprintf(notes, "pqdedup: %s\n", snap.notes[i]);
        fflush(stdout);
        int status = snap.missing_pid ? 1 : 0;
        stat_snapshot_free(&snap);
        if (!watch)
            return status;
        struct timespec pause = { .tv_sec = interval_ns / 1000000000, .tv_nsec = interval_ns % 1000000000 };
        while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
            ;
    }
}

/* test_stats_fork.c: a forked child never writes into its parent's live stats file: it counts from zero in a private copy, makes its own file at its first connect, and removes only that one at exit.
 *
 * Runs under LD_PRELOAD=libpqdedup.so against the harness's server, with PQDEDUP_STATS_DIR
 * set by tests/stats.cmake. Reads the files directly through the layout in src/stats_file.h. */
#define _GNU_SOURCE
#include "stats_file.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* What a test reads from one process's file. */
struct snapshot {
    int ok;                       /* the file exists and is complete */
    long pid;
    struct {
        unsigned long long connects, opened, reused, moved, resets, closed;
    } c;
    unsigned open_handles;        /* handle records not FREE */
};

static const char *stats_dir(void)
{
    const char *dir = getenv("PQDEDUP_STATS_DIR");
    REQUIRE(dir != NULL && dir[0] != '\0', "PQDEDUP_STATS_DIR is set by tests/stats.cmake");
    return dir;
}

static void file_of(long pid, char *path, size_t size)
{
    snprintf(path, size, "%s/" STATS_FILE_PREFIX "%ld" STATS_FILE_SUFFIX, stats_dir(), pid);
}

/* Reads pid's file; ok = 0 when there is none (or it is not complete). */
static struct snapshot read_stats(long pid)
{
    struct snapshot s;
    memset(&s, 0, sizeof s);
    char path[4096];
    file_of(pid, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return s;
    struct stat st;
    const char *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (uint64_t) st.st_size == STATS_FILE_BYTES)
        map = mmap(NULL, STATS_FILE_BYTES, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return s;
    const struct stats_file_header *h = (const void *) map;
    if (memcmp(h->magic, STATS_FILE_MAGIC, 8) == 0 && h->version == STATS_FILE_VERSION) {
        const struct pqdedup_stats *c = (const void *) (map + STATS_FILE_COUNTERS_AT);
        s.ok = 1;
        s.pid = h->pid;
        s.c.connects = atomic_load(&c->connects);
        s.c.opened = atomic_load(&c->opened);
        s.c.reused = atomic_load(&c->reused);
        s.c.moved = atomic_load(&c->moved);
        s.c.resets = atomic_load(&c->resets);
        s.c.closed = atomic_load(&c->closed);
        const struct stats_file_handle *recs = (const void *) (map + STATS_FILE_HANDLES_AT);
        uint32_t used = atomic_load(&((struct stats_file_header *) (void *) h)->handles_used);
        for (uint32_t i = 0; i < used && i < STATS_FILE_HANDLES; i++)
            if (atomic_load(&recs[i].state) != HANDLE_FREE)
                s.open_handles++;
    }
    munmap((void *) map, STATS_FILE_BYTES);
    return s;
}

static int same_counts(const struct snapshot *a, const struct snapshot *b)
{
    return memcmp(&a->c, &b->c, sizeof a->c) == 0 && a->open_handles == b->open_handles;
}

static int file_exists(long pid)
{
    char path[4096];
    file_of(pid, path, sizeof path);
    return access(path, F_OK) == 0;
}

/* Runs `child` in a forked child and returns its exit status (child's checks: exit 0 when all
 * passed, else the number failed). */
static int in_child(int (*child)(PGconn *held), PGconn *held, long *child_pid)
{
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(child(held));
    *child_pid = pid;
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* A child that connects: it gets its own file, which counts only its own connects, and removes
 * it at exit(). */
static int child_connects(PGconn *held)
{
    (void) held;
    int bad = 0;
    long me = getpid();
    if (file_exists(me)) {
        fprintf(stderr, "child: a file of its own before any connect\n");
        bad++;
    }
    for (int i = 0; i < 5; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));
        if (PQstatus(c) != CONNECTION_OK || !tu_exec_ok(c, "SELECT 1"))
            bad++;
        PQfinish(c);
    }
    struct snapshot mine = read_stats(me);
    if (!mine.ok || mine.pid != me) {
        fprintf(stderr, "child: no complete file of its own after its connects\n");
        bad++;
    } else if (mine.c.connects != 5) {
        fprintf(stderr, "child: its file counts %llu connects, not its own 5\n", mine.c.connects);
        bad++;
    }
    exit(bad); /* exit(), not _exit(): the child's atexit removes its own file */
}

/* A child that never touches libpq: no file, and it must not remove its parent's. */
static int child_quiet(PGconn *held)
{
    (void) held;
    return file_exists(getpid()) ? 1 : 0;
}

/* A child that uses the handle it inherited (a new server connection of its own), without any
 * connect: it counts privately, no file yet; then it connects and has one, with that handle. */
static int child_uses_inherited(PGconn *held)
{
    int bad = 0;
    if (!tu_exec_ok(held, "SELECT 1")) {
        fprintf(stderr, "child: the inherited handle does not work: %s", PQerrorMessage(held));
        bad++;
    }
    if (file_exists(getpid())) {
        fprintf(stderr, "child: a file before its first connect\n");
        bad++;
    }
    PGconn *c = PQconnectdb(tu_conninfo(""));
    struct snapshot mine = read_stats(getpid());
    if (!mine.ok || mine.c.connects != 1 || mine.open_handles < 2) {
        fprintf(stderr, "child: after its connect: file %d, connects %llu (want 1), open handles %u (want >= 2)\n",
                mine.ok, mine.c.connects, mine.open_handles);
        bad++;
    }
    PQfinish(c);
    _exit(bad); /* _exit(): its file stays, as a killed process's would */
}

int main(void)
{
    long me = getpid();
    REQUIRE(!file_exists(me), "no stats file before the first connect");
    PGconn *held = tu_connect_ok();
    REQUIRE(tu_exec_ok(held, "SELECT 1"), "the held connection works");
    struct snapshot before = read_stats(me);
    REQUIRE(before.ok, "the parent's file is there after its first connect");
    CHECK(before.pid == me && before.c.connects == 1 && before.open_handles == 1,
          "the parent's file: its pid, 1 connect, 1 open handle (pid %ld, %llu, %u)", before.pid,
          before.c.connects, before.open_handles);

    long child;
    CHECK(in_child(child_connects, held, &child) == 0, "a child that connects 5 times has its own file with 5");
    CHECK(!file_exists(child), "the child's file is gone after its exit()");
    struct snapshot after = read_stats(me);
    CHECK(after.ok && same_counts(&before, &after),
          "the parent's file is unchanged by that child (connects %llu -> %llu, opened %llu -> %llu, "
          "open handles %u -> %u)", before.c.connects, after.c.connects, before.c.opened, after.c.opened,
          before.open_handles, after.open_handles);

    CHECK(in_child(child_quiet, held, &child) == 0, "a child that never uses libpq makes no file");
    after = read_stats(me);
    CHECK(after.ok && same_counts(&before, &after), "the parent's file is still there and unchanged");

    CHECK(in_child(child_uses_inherited, held, &child) == 0,
          "a child using its inherited handle counts privately, then makes its own file at its connect");
    after = read_stats(me);
    CHECK(after.ok && same_counts(&before, &after),
          "the parent's file is unchanged by the inherited handle's rebind (opened %llu -> %llu, reused %llu -> "
          "%llu, moved %llu -> %llu)", before.c.opened, after.c.opened, before.c.reused, after.c.reused,
          before.c.moved, after.c.moved);
    CHECK(file_exists(child), "that child's file stays after _exit() (the reader removes it)");
    char path[4096];
    file_of(child, path, sizeof path);
    unlink(path);

    /* The parent goes on counting in its own file. */
    PGconn *c = tu_connect_ok();
    PQfinish(c);
    after = read_stats(me);
    CHECK(after.ok && after.c.connects == before.c.connects + 1, "the parent's own connect is counted (%llu)",
          after.c.connects);
    PQfinish(held);
    return tu_finish();
}

/* soak.c: 16 threads and 4 processes churn and leak connections for a set time; asserts no errors, bounded backends, and memory and file descriptors bounded by what the leak costs. */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: soak [--seconds N] [--threads N] [--procs N]
 *   --seconds N  how long to run (default 25); not scaled by PQD_TEST_SCALE
 *   --threads N  threads in this process, half churning, half leaking (default 16)
 *   --procs N    child processes, each with one churning and one leaking thread (default 4)
 * Run under the preload with PQDEDUP_UNBIND_AFTER=0: each leaking thread's next connect then
 * takes the server connection of one of its key's idle leaked handles, so a process's leak
 * needs at most one backend per leaking thread. With the default 10ms, each leaking thread
 * (a connect every 2 ms) holds about 5 connections before the first can move: the parent's 8
 * can fill max_connections=40 on their own, and pqdedup moves connections only between
 * handles of one process, so the children's connects could be refused.
 * Churning: connect, check the session's application_name (its key; two keys here, one in
 * each child), a query, every 8th a SET, every 16th a temp table, every 32nd an open
 * transaction, finish. Leaking: connect, query, never finish. The parent samples every 250 ms:
 * this run's backends in pg_stat_activity, and each process's RSS (/proc/PID/status), open fds
 * (/proc/PID/fd) and handles leaked so far. Checks: zero errors (plain libpq would fail here
 * only because the leaking threads exhaust max_connections), backends never above the bound
 * the settings imply, the last third's largest RSS at most max(2 MB, 5%) plus
 * LEAK_BUDGET_BYTES per handle leaked meanwhile above the first third's (a leaked handle
 * legitimately costs its 384-byte slot and a small share; not checked in sanitizer builds,
 * whose allocators keep freed memory in quarantine), and fds at most 2 above. A process keeps
 * at most MAX_LEAKS_PER_PROC handles alive (a long run paces its leaking threads to stay under
 * it), so a run of hours stays well inside what one process can leak.
 */

#define LEAK_BUDGET_BYTES 512
#define MAX_LEAKS_PER_PROC 150000L

static long seconds = 25, nthreads = 16, nprocs = 4;
static long deadline_ms, leak_pause_ms = 2;
/* Handles leaked so far by this process ([0]) and by each child ([1 + p]), in memory shared
 * with the children, so the parent can sample them beside RSS. */
static _Atomic long *leaked;
static int my_slot;
static char prefix[40]; /* application_name prefix of this run */
static atomic_long connects, errors;

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Counts an error; prints the first few. */
static void error(const char *what, PGconn *c)
{
    long n = atomic_fetch_add(&errors, 1);

    if (n < 5)
        fprintf(stderr, "soak[%ld]: ERROR: %s: %s", (long)getpid(), what, c ? PQerrorMessage(c) : "(NULL)\n");
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);

    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

struct worker {
    char app[64]; /* the key: one per worker group */
    long cycles;
};

static void *churn(void *arg)
{
    struct worker *w = arg;
    char ci[128];

    snprintf(ci, sizeof ci, "application_name=%s", w->app);
    for (long i = 0; now_ms() < deadline_ms; i++) {
        PGconn *c = PQconnectdb(ci);

        atomic_fetch_add(&connects, 1);
        if (PQstatus(c) != CONNECTION_OK) {
            error("churn connect", c);
            PQfinish(c);
            sleep_ms(50);
            continue;
        }
        PGresult *r = PQexec(c, "SELECT current_setting('application_name')");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            error("churn query", c);
        else if (strcmp(PQgetvalue(r, 0, 0), w->app) != 0) {
            atomic_fetch_add(&errors, 1);
            fprintf(stderr, "soak: ERROR: asked for application_name %s, the session is %s\n", w->app,
                    PQgetvalue(r, 0, 0));
        }
        PQclear(r);
        if (i % 8 == 3 && !exec_ok(c, "SET work_mem = '8MB'"))
            error("churn SET", c);
        if (i % 16 == 5 && !exec_ok(c, "CREATE TEMP TABLE soak_t(x int); INSERT INTO soak_t VALUES (1)"))
            error("churn temp table (left by an earlier holder?)", c);
        if (i % 32 == 7 && !exec_ok(c, "BEGIN; SELECT 1"))
            error("churn BEGIN", c);
        PQfinish(c);
        w->cycles++;
    }
    return NULL;
}

static void *leak(void *arg)
{
    struct worker *w = arg;
    char ci[128];

    snprintf(ci, sizeof ci, "application_name=%s", w->app);
    while (now_ms() < deadline_ms) {
        PGconn *c = PQconnectdb(ci); /* never finished */

        atomic_fetch_add(&connects, 1);
        if (PQstatus(c) != CONNECTION_OK) {
            error("leak connect", c);
            PQfinish(c);
            sleep_ms(50);
            continue;
        }
        if (!exec_ok(c, "SELECT 1"))
            error("leak query", c);
        atomic_fetch_add(&leaked[my_slot], 1);
        w->cycles++;
        sleep_ms(leak_pause_ms);
    }
    return NULL;
}

/* Runs nchurn + nleak threads until the deadline. Returns the cycles done. */
static long run_workers(int nchurn, int nleak, const char *tag)
{
    int n = nchurn + nleak;
    pthread_t *t = calloc((size_t)n, sizeof *t);
    struct worker *w = calloc((size_t)n, sizeof *w);
    long cycles = 0;

    if (!t || !w)
        abort();
    for (int i = 0; i < n; i++) {
        if (i < nchurn)
            snprintf(w[i].app, sizeof w[i].app, "%s_%sc%d", prefix, tag, i % 2);
        else
            snprintf(w[i].app, sizeof w[i].app, "%s_%sl", prefix, tag);
        if (pthread_create(&t[i], NULL, i < nchurn ? churn : leak, &w[i]) != 0)
            abort();
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        cycles += w[i].cycles;
    }
    free(t);
    free(w);
    return cycles;
}

/* ---- sampling ---------------------------------------------------------------------- */

#define MAX_SAMPLES 20000
struct series {
    pid_t pid;
    int slot; /* its counter in leaked[] */
    long rss_kb[MAX_SAMPLES], fds[MAX_SAMPLES], leaked[MAX_SAMPLES];
    int n;
};

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static long fd_count(pid_t pid)
{
    char path[64];
    struct dirent *e;
    long n = 0;
    DIR *d;

    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    if (!(d = opendir(path)))
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void sample(struct series *s)
{
    long r = rss_kb(s->pid), f = fd_count(s->pid);

    if (r > 0 && f > 0 && s->n < MAX_SAMPLES) {
        s->rss_kb[s->n] = r;
        s->fds[s->n] = f;
        s->leaked[s->n] = atomic_load(&leaked[s->slot]);
        s->n++;
    }
}

static long max_of(const long *v, int from, int to)
{
    long m = 0;

    for (int i = from; i < to; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* Bounded memory and fds: the last third against the first third. RSS may grow by what the
 * handles leaked in between legitimately cost (LEAK_BUDGET_BYTES each) plus max(2 MB, 5%). */
static void check_bounded(const struct series *s, const char *who, int check_rss)
{
    int third = s->n / 3;
    long rss_first, rss_last, fd_first, fd_last, tolerance, leaks;

    if (!CHECK(third >= 3, "%s: only %d samples", who, s->n))
        return;
    rss_first = max_of(s->rss_kb, 0, third);
    rss_last = max_of(s->rss_kb, s->n - third, s->n);
    fd_first = max_of(s->fds, 0, third);
    fd_last = max_of(s->fds, s->n - third, s->n);
    leaks = s->leaked[s->n - 1] - s->leaked[third - 1]; /* from the end of the first third */
    tolerance = (rss_first / 20 > 2048 ? rss_first / 20 : 2048) + leaks * LEAK_BUDGET_BYTES / 1024;
    printf("soak: %-8s RSS max %6ld kB (first third) -> %6ld kB (last third), %ld handles leaked "
           "meanwhile, %.0f bytes per leaked handle (budget %d); fds %3ld -> %3ld; %d samples\n",
           who, rss_first, rss_last, leaks,
           leaks > 0 ? (double)(rss_last - rss_first) * 1024 / (double)leaks : 0.0,
           LEAK_BUDGET_BYTES, fd_first, fd_last, s->n);
    if (check_rss)
        CHECK(rss_last <= rss_first + tolerance, "%s: RSS grew from %ld kB to %ld kB (tolerance "
              "%ld kB for %ld leaked handles)", who, rss_first, rss_last, tolerance, leaks);
    CHECK(fd_last <= fd_first + 2, "%s: open fds grew from %ld to %ld", who, fd_first, fd_last);
}

static int parent_churn, parent_leak;
static long parent_cycles;

static void *parent_workers(void *arg)
{
    (void)arg;
    parent_cycles = run_workers(parent_churn, parent_leak, "m");
    return NULL;
}

static long parse_num(const char *opt, const char *s)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;

    if (!s || *end || v < 1) {
        fprintf(stderr, "soak: %s needs a positive number\n", opt);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static struct series parent_series, child_series[64];
    pid_t children[64];
    long bound, max_backends = 0, cycles, child_failures = 0, start;
    const char *rt = getenv("PQD_TEST_SANITIZER_RUNTIME");
    int sanitized = rt && *rt;
    const char *unbind = getenv("PQDEDUP_UNBIND_AFTER");

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = parse_num(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--threads"))
            nthreads = parse_num(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--procs"))
            nprocs = parse_num(argv[i], argv[i + 1]), i++;
        else {
            fprintf(stderr, "usage: soak [--seconds N] [--threads N] [--procs N]\n");
            return 2;
        }
    }
    if (nprocs > 64)
        nprocs = 64;
    if (!unbind || strcmp(unbind, "0") != 0) {
        fprintf(stderr, "soak: run with PQDEDUP_UNBIND_AFTER=0 (the leaking threads need it to stay bounded)\n");
        return 2;
    }
    leaked = mmap(NULL, sizeof *leaked * 65, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (leaked == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    snprintf(prefix, sizeof prefix, "pqds_%ld", (long)getpid());
    start = now_ms();
    deadline_ms = start + seconds * 1000;
    int nchurn = (int)(nthreads + 1) / 2, nleak = (int)nthreads / 2;
    /* At most a leak every 2 ms per thread, and MAX_LEAKS_PER_PROC per process in the run. */
    if (nleak > 0 && seconds * 1000 * nleak / MAX_LEAKS_PER_PROC > leak_pause_ms)
        leak_pause_ms = seconds * 1000 * nleak / MAX_LEAKS_PER_PROC;
    /* Per key, a process opens at most one connection per thread using the key plus two (a
     * spare while the last finished one resets, and one more while that is checked); each
     * leaking thread holds one. Churning threads use two keys here (a thread keeps to one:
     * idle kept connections of one key would otherwise hold slots another key needs), one in
     * each child. */
    bound = (nchurn + 2 * 2) + nleak + nprocs * ((1 + 2) + 1);
    printf("soak: %ld s, %ld threads here (%d churning, %d leaking), %ld processes (1 churning + 1 leaking "
           "each); backend bound %ld\n", seconds, nthreads, nchurn, nleak, nprocs, bound);
    fflush(stdout);

    /* Children first, before this process has touched libpq. */
    for (long p = 0; p < nprocs; p++) {
        children[p] = fork();
        if (children[p] < 0) {
            perror("fork");
            return 1;
        }
        if (children[p] == 0) {
            char tag[16];

            snprintf(tag, sizeof tag, "p%ld", p);
            my_slot = (int)p + 1;
            cycles = run_workers(1, 1, tag);
            printf("soak: child %ld: %ld cycles, %ld errors\n", p, cycles, atomic_load(&errors));
            fflush(stdout);
            _exit(atomic_load(&errors) == 0 && cycles > 0 ? 0 : 1);
        }
        child_series[p].pid = children[p];
        child_series[p].slot = (int)p + 1;
    }
    parent_series.pid = getpid();

    /* This process's workers run in a thread of their own; main samples. */
    pthread_t runner;
    parent_churn = nchurn, parent_leak = nleak;
    if (pthread_create(&runner, NULL, parent_workers, NULL) != 0)
        return 1;
    tu_observer();
    while (now_ms() < deadline_ms) {
        char sql[160];
        char *v;
        long n;

        snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%s\\_%%'",
                 prefix);
        v = tu_query_value(tu_observer(), sql);
        n = v ? strtol(v, NULL, 10) : -1;
        free(v);
        CHECK(n >= 0, "pg_stat_activity: %s", PQerrorMessage(tu_observer()));
        if (n > max_backends)
            max_backends = n;
        sample(&parent_series);
        for (long p = 0; p < nprocs; p++)
            sample(&child_series[p]);
        sleep_ms(250);
    }
    pthread_join(runner, NULL);
    for (long p = 0; p < nprocs; p++) {
        int status;

        while (waitpid(children[p], &status, 0) < 0 && errno == EINTR)
            ;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            child_failures++;
    }

    printf("soak: %ld connects in %.1f s (%.0f/s), %ld errors here, %ld failed children, at most %ld backends "
           "(bound %ld)\n", atomic_load(&connects), (now_ms() - start) / 1000.0,
           atomic_load(&connects) * 1000.0 / (double)(now_ms() - start), atomic_load(&errors), child_failures,
           max_backends, bound);
    CHECK(atomic_load(&errors) == 0, "%ld errors in this process", atomic_load(&errors));
    CHECK(child_failures == 0, "%ld child processes had errors or did nothing", child_failures);
    CHECK(parent_cycles > 0, "this process's workers did nothing");
    CHECK(max_backends <= bound, "%ld backends at once, bound %ld", max_backends, bound);
    if (sanitized)
        printf("soak: sanitizer build: RSS is reported, not checked\n");
    check_bounded(&parent_series, "parent", !sanitized);
    for (long p = 0; p < nprocs; p++) {
        char who[32];

        snprintf(who, sizeof who, "child %ld", p);
        check_bounded(&child_series[p], who, !sanitized);
    }
    return tu_finish();
}

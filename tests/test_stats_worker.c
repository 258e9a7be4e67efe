/* test_stats_worker.c: a program that keeps working for the live stats tests (test_stats.sh): from a few threads it connects and finishes (churn) and connects and never finishes (leaks), and reports what it did.
 *
 * Usage: test_stats_worker CONNINFO REPORT GO THREADS LEAKS CHURNS
 *   Phase 1: each of THREADS threads leaks LEAKS/THREADS connections (leak_one) and makes
 *   CHURNS/THREADS connect+query+finish cycles (churn_one), every connection running
 *   SELECT 1. Then REPORT gets "phase=1 connects=N leaked=N churned=N failed=N" (written to
 *   a temporary file and renamed) and every thread waits, idle, until the file GO exists.
 *   Phase 2: the threads churn, and leak one connection in 50 cycles, until the process is
 *   killed; REPORT is rewritten ("phase=2 ...") every 20 cycles of thread 0. With GO "-" there
 *   is no phase 2: the program returns from main (exit status 0) after phase 1.
 * leak_one and churn_one are exported (the build links with -rdynamic), so that the leak
 * report can name them. Exit status 1 when the arguments are bad. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *conninfo, *report_path, *go_path;
static int threads, leaks, churns;
static _Atomic long connects, leaked, churned, failed;
static _Atomic int phase = 1;
static pthread_barrier_t phase1_done;

/* Runs SELECT 1 on c; counts a failure. */
static void query(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        atomic_fetch_add(&failed, 1);
    PQclear(r);
}

/* Connects, queries and never finishes the connection: the leak the report must find here. */
__attribute__((noinline)) void leak_one(void);
__attribute__((noinline)) void leak_one(void)
{
    PGconn *c = PQconnectdb(conninfo);
    atomic_fetch_add(&connects, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        atomic_fetch_add(&failed, 1);
        PQfinish(c);
        return;
    }
    query(c);
    atomic_fetch_add(&leaked, 1);
}

/* Connects, queries, finishes. */
__attribute__((noinline)) void churn_one(void);
__attribute__((noinline)) void churn_one(void)
{
    PGconn *c = PQconnectdb(conninfo);
    atomic_fetch_add(&connects, 1);
    if (PQstatus(c) == CONNECTION_OK)
        query(c);
    else
        atomic_fetch_add(&failed, 1);
    PQfinish(c);
    atomic_fetch_add(&churned, 1);
}

/* Writes the report atomically (temporary file, rename). */
static void write_report(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", report_path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f, "phase=%d connects=%ld leaked=%ld churned=%ld failed=%ld\n", atomic_load(&phase),
            atomic_load(&connects), atomic_load(&leaked), atomic_load(&churned), atomic_load(&failed));
    fclose(f);
    rename(tmp, report_path);
}

static void *work(void *arg)
{
    long id = (long) arg;
    for (int i = 0; i < leaks / threads + (id < leaks % threads); i++)
        leak_one();
    for (int i = 0; i < churns / threads + (id < churns % threads); i++)
        churn_one();
    if (pthread_barrier_wait(&phase1_done) == PTHREAD_BARRIER_SERIAL_THREAD)
        write_report();
    if (strcmp(go_path, "-") == 0)
        return NULL;
    while (access(go_path, F_OK) != 0) {
        struct timespec pause = { 0, 10 * 1000000 };
        nanosleep(&pause, NULL);
    }
    atomic_store(&phase, 2);
    for (long n = 1;; n++) {
        churn_one();
        if (n % 50 == 0)
            leak_one();
        if (id == 0 && n % 20 == 0)
            write_report();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s CONNINFO REPORT GO THREADS LEAKS CHURNS\n", argv[0]);
        return 1;
    }
    conninfo = argv[1];
    report_path = argv[2];
    go_path = argv[3];
    threads = atoi(argv[4]);
    leaks = atoi(argv[5]);
    churns = atoi(argv[6]);
    if (threads < 1 || leaks < 0 || churns < 0)
        return 1;
    pthread_barrier_init(&phase1_done, NULL, (unsigned) threads);
    pthread_t *t = calloc((size_t) threads, sizeof *t);
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, work, (void *) i);
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* test_dead.c: kept connections whose backend died (terminated, server restarted) are replaced silently; a held one fails as with plain libpq. */
#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Usage: test_dead terminate-kept | terminate-held | restart immediate|fast
 * restart runs tests/harness/pg-ctl.sh restart -m MODE (register it SERIAL).
 */

#define NKEPT 3

/* A notice processor that counts the notices it gets in *(int *)arg. */
static void counting_processor(void *arg, const char *message)
{
    (void)message;
    ++*(int *)arg;
}

/* True while a backend with this pid is in pg_stat_activity. */
static int backend_alive(int pid)
{
    char sql[128], *v;
    int alive;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    v = tu_query_value(tu_observer(), sql);
    alive = !v || strcmp(v, "0") != 0;
    free(v);
    return alive;
}

/* Terminates backend `pid` from the observer and waits (up to 10 s) until it is gone. */
static void terminate_backend(int pid)
{
    char sql[128], *v;

    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    v = tu_query_value(tu_observer(), sql);
    REQUIRE(v && !strcmp(v, "t"), "pg_terminate_backend(%d) returned %s: %s", pid, v ? v : "NULL",
            PQerrorMessage(tu_observer()));
    free(v);
    for (int i = 0; i < 500 && backend_alive(pid); i++)
        usleep(20 * 1000);
    REQUIRE(!backend_alive(pid), "backend %d still there 10 s after pg_terminate_backend", pid);
}

/* Opens NKEPT connections at once, gives each a counting notice processor, and finishes them
 * all, so pqdedup keeps NKEPT connections. Their pids go to pids[]. */
static void make_kept(int pids[NKEPT], int counts[NKEPT])
{
    PGconn *c[NKEPT];

    for (int i = 0; i < NKEPT; i++) {
        c[i] = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(c[i]) == CONNECTION_OK, "connect %d: %s", i, PQerrorMessage(c[i]));
        pids[i] = tu_backend_pid(c[i]);
        REQUIRE(pids[i] > 0, "pg_backend_pid: %s", PQerrorMessage(c[i]));
        counts[i] = 0;
        PQsetNoticeProcessor(c[i], counting_processor, &counts[i]);
    }
    for (int i = 0; i < NKEPT; i++)
        for (int j = 0; j < i; j++)
            REQUIRE(pids[i] != pids[j], "connections %d and %d share backend %d (registered with "
                    "PQDEDUP_UNBIND_AFTER=1h, an idle one must not lend it)", j, i, pids[i]);
    for (int i = 0; i < NKEPT; i++)
        PQfinish(c[i]);
    /* The finish resets them; wait for each reset to settle so the kill finds them kept and idle. */
    for (int i = 0; i < NKEPT; i++)
        REQUIRE(tu_wait_reset(pids[i]), "the reset of backend %d never completed", pids[i]);
}

/* After the kept backends died: the next connect works on a new backend, silently (nothing on
 * stderr, where libpq's default notice processor would print the server's FATAL message, and
 * nothing through the app's old notice processors); then the pool works normally again. */
static void check_replaced(const int old_pids[NKEPT], const int old_counts[NKEPT], const char *what)
{
    int pid, pid2, notices = 0;
    PGconn *c;
    PGresult *res;
    char *err;

    tu_capture_stderr();
    c = PQconnectdb(tu_conninfo(""));
    pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    PQsetNoticeProcessor(c, counting_processor, &notices);
    res = PQexec(c, "DO $$BEGIN RAISE NOTICE 'pqdt notice'; END$$");
    err = tu_release_stderr();

    CHECK(pid > 0, "after %s, connect + SELECT pg_backend_pid() failed: %s", what,
          PQerrorMessage(c));
    for (int i = 0; i < NKEPT; i++) {
        CHECK(pid != old_pids[i], "after %s, the connect got the dead backend %d", what, pid);
        CHECK(old_counts[i] == 0, "after %s, the app's notice processor of a finished connection "
                                  "was called %d times", what, old_counts[i]);
    }
    CHECK(PQresultStatus(res) == PGRES_COMMAND_OK && notices == 1,
          "after %s, a query raising one notice: %s, %d notices", what,
          PQresStatus(PQresultStatus(res)), notices);
    PQclear(res);
    CHECK(err[0] == '\0', "after %s, the program's stderr got: %s", what, err);
    free(err);
    printf("%s: old backends %d %d %d, new backend %d\n", what, old_pids[0], old_pids[1],
           old_pids[2], pid);

    /* The pool goes on normally: finish and connect again. */
    PQfinish(c);
    c = PQconnectdb(tu_conninfo(""));
    pid2 = tu_backend_pid(c);
    CHECK(pid2 > 0, "after %s, a second connect failed: %s", what, PQerrorMessage(c));
    PQfinish(c);
}

/* Kept connections whose backends were killed by pg_terminate_backend are replaced silently:
 * every dead one is skipped, the app sees a working new backend and no error or notice. */
static void test_terminate_kept(void)
{
    int pids[NKEPT], counts[NKEPT];

    make_kept(pids, counts);
    for (int i = 0; i < NKEPT; i++)
        terminate_backend(pids[i]);
    check_replaced(pids, counts, "pg_terminate_backend of the kept backends");
}

/* Runs tests/harness/pg-ctl.sh restart -m mode -w, outside the preload: neither the
 * library nor a sanitizer runtime may end up inside pg_ctl or the server. */
static void restart_server(const char *mode)
{
    const char *harness = getenv("PQD_TEST_HARNESS");
    char script[4096];
    pid_t pid;
    int status;

    REQUIRE(harness && getenv("PQD_TEST_PGDATA"),
            "PQD_TEST_HARNESS and PQD_TEST_PGDATA must be set (source the harness's env.sh)");
    snprintf(script, sizeof script, "%s/pg-ctl.sh", harness);
    fflush(NULL);
    pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("TSAN_OPTIONS");
        unsetenv("LSAN_OPTIONS");
        unsetenv("UBSAN_OPTIONS");
        dup2(1, 2);
        execl("/bin/bash", "bash", script, "restart", "-m", mode, "-w", "-t", "60", (char *)NULL);
        _exit(127);
    }
    REQUIRE(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "pg-ctl.sh restart -m %s failed (status %d)", mode, status);
}

/* Kept connections of a server that restarted (-m immediate or fast) are replaced silently by
 * a new backend of the new server. */
static void test_restart(const char *mode)
{
    int pids[NKEPT], counts[NKEPT];
    char what[64];

    make_kept(pids, counts);
    restart_server(mode);
    snprintf(what, sizeof what, "a server restart -m %s", mode);
    check_replaced(pids, counts, what);
}

/* A connection the app still holds when its backend is terminated: the app sees the error on
 * its next query, as with plain libpq; its PQfinish does not keep it: the next connect gets a
 * new live backend, and only that one is open. */
static void test_terminate_held(void)
{
    PGconn *c = PQconnectdb(tu_conninfo(""));
    int pid, pid2;
    PGresult *res;

    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    pid = tu_backend_pid(c);
    REQUIRE(pid > 0, "pg_backend_pid: %s", PQerrorMessage(c));
    terminate_backend(pid);

    res = PQexec(c, "SELECT 1");
    CHECK(PQresultStatus(res) != PGRES_TUPLES_OK,
          "a query on a held connection whose backend was terminated succeeded");
    CHECK(PQerrorMessage(c)[0] != '\0', "the failed query left no error message");
    printf("terminate-held: the app's query got %s: %s", PQresStatus(PQresultStatus(res)),
           PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);

    c = PQconnectdb(tu_conninfo(""));
    pid2 = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(pid2 > 0 && pid2 != pid, "the next connect got backend %d (the dead one was %d): %s",
          pid2, pid, PQerrorMessage(c));
    CHECK(tu_count_backends(tu_app_name()) == 1, "expected exactly 1 backend of ours");
    PQfinish(c);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";

    tu_observer(); /* fails now if the server is not there */
    printf("test_dead %s as %s\n", which, tu_app_name());
    if (!strcmp(which, "terminate-kept"))
        test_terminate_kept();
    else if (!strcmp(which, "terminate-held"))
        test_terminate_held();
    else if (!strcmp(which, "restart") && argc > 2 &&
             (!strcmp(argv[2], "immediate") || !strcmp(argv[2], "fast")))
        test_restart(argv[2]);
    else {
        fprintf(stderr, "usage: test_dead terminate-kept | terminate-held | restart immediate|fast\n");
        return 1;
    }
    return tu_finish();
}

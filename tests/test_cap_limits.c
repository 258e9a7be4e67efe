/* test_cap_limits.c: PQDEDUP_KEEP_PER_KEY, PQDEDUP_IDLE_TIMEOUT and PQDEDUP_MAX_LIFETIME bound what is kept. */
#include "test_leak_common.h"

/*
 * Usage: test_cap_limits MODE
 *   keep2      (PQDEDUP_KEEP_PER_KEY=2) 5 connections finished at once: 2 stay, 3 are closed
 *   keep0      (PQDEDUP_KEEP_PER_KEY=0) nothing is kept: every cycle gets a new backend
 *   idle       (PQDEDUP_IDLE_TIMEOUT=1s) a kept connection idle > 1s is not reused and goes
 *   lifetime   (PQDEDUP_MAX_LIFETIME=1s) a connection older than 1s is not kept or reused
 *   burst      (PQDEDUP_IDLE_TIMEOUT=1s) after a burst of 5, a churning loop reuses the most
 *              recently kept ones, so the burst's extra backends age out
 */

#define FIVE 5

static PGconn *connect_ok(const char *conninfo, const char *what)
{
    PGconn *c = PQconnectdb(conninfo);

    REQUIRE(PQstatus(c) == CONNECTION_OK, "%s: connect failed: %s", what, PQerrorMessage(c));
    return c;
}

static int in_set(int pid, const int *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return 1;
    return 0;
}

/* Connects and BEGINs (a handle in a transaction needs a backend of its own); its backend. */
static PGconn *connect_busy(const char *what, int *pid)
{
    PGconn *c = connect_ok(tu_conninfo(""), what);

    CHECK(tu_exec_ok(c, "BEGIN"), "%s: BEGIN: %s", what, PQerrorMessage(c));
    *pid = tu_backend_pid(c);
    return c;
}

/* PQDEDUP_KEEP_PER_KEY=2: of 5 connections in transactions finished at once, 2 are kept and
 * 3 really closed; the next 5 (in transactions) reuse exactly those 2. */
static void keep2(void)
{
    PGconn *c[FIVE];
    int first[FIVE], second[FIVE], reused = 0;
    long n;

    for (int i = 0; i < FIVE; i++)
        c[i] = connect_busy("first five", &first[i]);
    CHECK(pqt_distinct(first, FIVE) == FIVE, "5 live connections in transactions got %ld "
          "backends", pqt_distinct(first, FIVE));
    /* Out of the transactions first, so that finishing sends the reset (tu_wait_reset). */
    for (int i = 0; i < FIVE; i++)
        CHECK(tu_exec_ok(c[i], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(c[i]));
    for (int i = 0; i < FIVE; i++)
        PQfinish(c[i]);
    n = tu_wait_backends(tu_app_name(), 2, 5000);
    CHECK(n == 2, "%ld backends after finishing 5 with PQDEDUP_KEEP_PER_KEY=2, expected 2", n);
    for (int i = 0; i < FIVE; i++)
        if (pqt_pid_alive(first[i]) == 1)
            tu_wait_reset(first[i]);

    for (int i = 0; i < FIVE; i++) {
        c[i] = connect_busy("second five", &second[i]);
        reused += in_set(second[i], first, FIVE);
    }
    CHECK(reused == 2, "%d of the second 5 connects reused a first-round backend, expected the "
          "2 kept", reused);
    for (int i = 0; i < FIVE; i++)
        PQfinish(c[i]); /* in transactions: rolled back, then kept */
    n = tu_wait_backends(tu_app_name(), 2, 5000);
    CHECK(n == 2, "%ld backends after finishing the second 5, expected 2", n);
}

/* PQDEDUP_KEEP_PER_KEY=0: nothing is kept; every connect/finish cycle is a new backend and
 * none stays open. */
static void keep0(void)
{
    long cycles = tu_scaled(20) < 5 ? 5 : tu_scaled(20), n;
    int *pids = calloc((size_t)cycles, sizeof *pids);

    REQUIRE(pids, "out of memory");
    for (long i = 0; i < cycles; i++) {
        PGconn *c = connect_ok(tu_conninfo(""), "cycle");

        pids[i] = tu_backend_pid(c);
        PQfinish(c);
    }
    CHECK(pqt_distinct(pids, cycles) == cycles, "%ld distinct backends for %ld cycles with "
          "PQDEDUP_KEEP_PER_KEY=0", pqt_distinct(pids, cycles), cycles);
    n = tu_wait_backends(tu_app_name(), 0, 5000);
    CHECK(n == 0, "%ld backends left with PQDEDUP_KEEP_PER_KEY=0", n);
    free(pids);
}

/* PQDEDUP_IDLE_TIMEOUT=1s: reused while fresh; idle longer than that, it is not reused, and
 * its backend goes at the next pqdedup call, even a connect for another key. */
static void idle(void)
{
    PGconn *c;
    int p, q, r;

    c = connect_ok(tu_conninfo(""), "first");
    p = tu_backend_pid(c);
    PQfinish(c);
    tu_wait_reset(p);
    c = connect_ok(tu_conninfo(""), "soon after");
    CHECK(tu_backend_pid(c) == p, "a connection kept for well under 1s was not reused");
    PQfinish(c);
    tu_wait_reset(p);

    tu_sleep_ms(1300);
    c = connect_ok(tu_conninfo(""), "after 1.3s idle");
    q = tu_backend_pid(c);
    CHECK(q != p, "a connection idle for 1.3s was reused with PQDEDUP_IDLE_TIMEOUT=1s");
    CHECK(pqt_wait_pid_gone(p, 3000) == 0, "the expired backend %d is still there", p);
    PQfinish(c);
    tu_wait_reset(q);

    /* Expired while kept; the next call is a connect for another key. */
    tu_sleep_ms(1300);
    CHECK(pqt_pid_alive(q) == 1, "backend %d went away before any pqdedup call", q);
    c = connect_ok(tu_conninfo("connect_timeout=11"), "another key");
    r = tu_backend_pid(c);
    CHECK(r != q, "another key got the expired backend");
    CHECK(pqt_wait_pid_gone(q, 3000) == 0, "backend %d idle past PQDEDUP_IDLE_TIMEOUT is still "
          "there after the next connect", q);
    PQfinish(c);
}

/* PQDEDUP_MAX_LIFETIME=1s: a connection older than that is closed at finish instead of kept,
 * and a kept one that grew older is not reused. */
static void lifetime(void)
{
    PGconn *c;
    int p, q, r;
    long n;

    c = connect_ok(tu_conninfo(""), "first");
    p = tu_backend_pid(c);
    PQfinish(c);
    tu_wait_reset(p);
    c = connect_ok(tu_conninfo(""), "soon after");
    CHECK(tu_backend_pid(c) == p, "a connection younger than 1s was not reused");
    tu_sleep_ms(1200);
    CHECK(tu_backend_pid(c) == p, "the held connection stopped working past its lifetime");
    PQfinish(c); /* older than 1s: closed */
    CHECK(pqt_wait_pid_gone(p, 3000) == 0, "backend %d, older than PQDEDUP_MAX_LIFETIME, was "
          "kept at finish", p);
    n = tu_wait_backends(tu_app_name(), 0, 3000);
    CHECK(n == 0, "%ld backends after finishing an expired connection", n);

    c = connect_ok(tu_conninfo(""), "new");
    q = tu_backend_pid(c);
    CHECK(q != p, "got the closed backend");
    PQfinish(c);
    tu_wait_reset(q);
    tu_sleep_ms(1200);
    c = connect_ok(tu_conninfo(""), "after 1.2s");
    r = tu_backend_pid(c);
    CHECK(r != q, "a kept connection older than PQDEDUP_MAX_LIFETIME=1s was reused");
    CHECK(pqt_wait_pid_gone(q, 3000) == 0, "the expired kept backend %d is still there", q);
    PQfinish(c);
}

/* The last time (tu_now_ms) each backend served the churn, by pid. */
struct last_use {
    int pid[64];
    long at[64];
    int n;
};

static void note_use(struct last_use *u, int pid, long at)
{
    int i = 0;

    while (i < u->n && u->pid[i] != pid)
        i++;
    if (i == u->n && u->n < 64)
        u->pid[u->n++] = pid;
    if (i < 64)
        u->at[i] = at;
}

/* PQDEDUP_IDLE_TIMEOUT=1s: 5 connections in transactions at once, finished, leave 5 kept. A
 * loop that then connects, queries and finishes for 3.5s, each time until the server has run
 * its reset, takes the most recently kept ready connection: the burst's others stay unused
 * and expire. Checked per backend: every one the churn has not used for longer than the idle
 * timeout plus the once-a-second sweep is gone, and some of the burst's are. A pick that
 * rotated through every kept connection would keep all 5 alive forever. */
static void burst(void)
{
    PGconn *c[FIVE];
    int pids[FIVE];
    struct last_use used = {.n = 0};
    long n, t_burst, until, cycles = 0, gone = 0, end;

    for (int i = 0; i < FIVE; i++)
        c[i] = connect_busy("burst", &pids[i]);
    for (int i = 0; i < FIVE; i++)
        PQfinish(c[i]);
    t_burst = tu_now_ms();
    for (int i = 0; i < FIVE; i++)
        note_use(&used, pids[i], t_burst);
    n = tu_count_backends(tu_app_name());
    CHECK(n == FIVE, "%ld backends kept after the burst, expected %d", n, FIVE);

    until = tu_now_ms() + 3500;
    while (tu_now_ms() < until) {
        PGconn *one = connect_ok(tu_conninfo(""), "churn");
        int pid = tu_backend_pid(one);

        CHECK(pid > 0, "the churn's query failed: %s", PQerrorMessage(one));
        PQfinish(one);
        note_use(&used, pid, tu_now_ms());
        tu_wait_reset(pid);
        cycles++;
    }
    end = tu_now_ms();
    for (int i = 0; i < used.n; i++) {
        long unused_ms = end - used.at[i];
        long alive = unused_ms > 2200 ? pqt_wait_pid_gone(used.pid[i], 3000)
                                      : pqt_pid_alive(used.pid[i]);

        gone += alive == 0;
        CHECK(alive == 0 || unused_ms <= 2200, "backend %d unused for %ld ms is still there "
              "(PQDEDUP_IDLE_TIMEOUT=1s, swept once a second)", used.pid[i], unused_ms);
    }
    printf("test_cap_limits: %ld churn cycles used %d backends; %ld of them gone\n", cycles,
           used.n, gone);
    CHECK(gone >= 1, "none of the burst's %d kept backends expired during %ld churn cycles: the "
          "churn keeps them all in use", FIVE, cycles);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    tu_observer();
    if (!strcmp(mode, "keep2"))
        keep2();
    else if (!strcmp(mode, "keep0"))
        keep0();
    else if (!strcmp(mode, "idle"))
        idle();
    else if (!strcmp(mode, "lifetime"))
        lifetime();
    else if (!strcmp(mode, "burst"))
        burst();
    else {
        fprintf(stderr, "usage: test_cap_limits keep2|keep0|idle|lifetime|burst\n");
        return 2;
    }
    return tu_finish();
}

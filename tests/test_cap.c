/* test_cap.c: PQDEDUP_SHARE_AFTER and PQDEDUP_MAX_PER_KEY bound a program's backends, and say so in words. */
#include "test_leak_common.h"

#include <poll.h>
#include <pthread.h>

/*
 * Usage: test_cap MODE N   (N: the PQDEDUP_SHARE_AFTER or PQDEDUP_MAX_PER_KEY of the run)
 *   share-after N   leaking loops stay at exactly N backends per thread, never shared across
 *                   threads                                  (PQDEDUP_SHARE_AFTER=N)
 *   share-after-busy N  only idle, blocking held connections are shared (PQDEDUP_SHARE_AFTER=N)
 *   async-leak N    a leaking loop of PQconnectStart + poll connects stays at exactly N
 *                   backends (PQDEDUP_SHARE_AFTER=N or PQDEDUP_MAX_PER_KEY=N)
 *   max-leak N      a single thread's leaking loop stays at exactly N backends
 *                                                            (PQDEDUP_MAX_PER_KEY=N)
 *   max-busy N      N connections held in transactions by this thread: one more connect
 *                   waits PQDEDUP_MAX_WAIT, then fails in words (PQDEDUP_MAX_PER_KEY=N,
 *                   PQDEDUP_MAX_WAIT=300ms)
 *   max-threads N   N connections held by other threads: this thread's connect (blocking
 *                   and async) waits, then fails in words (same settings as max-busy)
 *   max-handoff N   N connections held by other threads, one of which finishes during the
 *                   wait: the waiting connect gets that backend (PQDEDUP_MAX_PER_KEY=N,
 *                   PQDEDUP_MAX_WAIT long enough)
 */

static long setting_n;

/* ---- share-after -------------------------------------------------------------------- */

struct leaker {
    long cycles;
    int *pids;
    PGconn **handles;
    long failures;
};

/* Connects `cycles` times without finishing, recording each handle's backend pid. */
static void *leak_thread(void *arg)
{
    struct leaker *l = arg;

    for (long i = 0; i < l->cycles; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));

        l->handles[i] = c;
        l->pids[i] = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
        if (!CHECK(l->pids[i] > 0, "leak cycle %ld: %s", i, PQerrorMessage(c)))
            l->failures++;
    }
    return NULL;
}

static void leaker_init(struct leaker *l, long cycles)
{
    l->cycles = cycles;
    l->failures = 0;
    l->pids = calloc((size_t)cycles, sizeof *l->pids);
    l->handles = calloc((size_t)cycles, sizeof *l->handles);
    REQUIRE(l->pids && l->handles, "out of memory");
}

static void leaker_finish(struct leaker *l)
{
    for (long i = 0; i < l->cycles; i++)
        PQfinish(l->handles[i]);
    free(l->pids);
    free(l->handles);
}

/* PQDEDUP_SHARE_AFTER=N: a leaking loop of 100 runs every query on exactly N backends; two
 * threads leaking at once get N each, never one of the other thread's. */
static void share_after(void)
{
    long cycles = tu_scaled(100) < 3 * setting_n ? 3 * setting_n : tu_scaled(100);
    struct leaker one, a, b;
    pthread_t ta, tb;
    long n;

    leaker_init(&one, cycles);
    leak_thread(&one);
    CHECK(one.failures == 0, "%ld of %ld leaked connects failed", one.failures, cycles);
    CHECK(pqt_distinct(one.pids, cycles) == setting_n, "%ld distinct backends for %ld leaked "
          "connects, expected PQDEDUP_SHARE_AFTER=%ld", pqt_distinct(one.pids, cycles), cycles,
          setting_n);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends open, expected %ld", n, setting_n);
    {
        int kept[64];
        long nkept = 0;

        for (long i = 0; i < cycles && nkept < 64; i++) {
            long j = 0;

            while (j < nkept && kept[j] != one.pids[i])
                j++;
            if (one.pids[i] > 0 && j == nkept)
                kept[nkept++] = one.pids[i];
        }
        leaker_finish(&one);
        /* Finished: all N are kept (KEEP_PER_KEY 16 >= N). Let their resets finish so the
         * threads below take them rather than open spares. */
        for (long i = 0; i < nkept; i++)
            tu_wait_reset(kept[i]);
    }
    n = tu_wait_backends(tu_app_name(), setting_n, 3000);
    CHECK(n == setting_n, "%ld backends after finishing all handles, expected %ld kept", n,
          setting_n);

    /* Two threads at once. */
    leaker_init(&a, cycles);
    leaker_init(&b, cycles);
    REQUIRE(pthread_create(&ta, NULL, leak_thread, &a) == 0, "pthread_create");
    REQUIRE(pthread_create(&tb, NULL, leak_thread, &b) == 0, "pthread_create");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.failures == 0 && b.failures == 0, "leaked connects failed in threads: %ld + %ld",
          a.failures, b.failures);
    CHECK(pqt_distinct(a.pids, cycles) == setting_n && pqt_distinct(b.pids, cycles) == setting_n,
          "threads used %ld and %ld distinct backends, expected %ld each",
          pqt_distinct(a.pids, cycles), pqt_distinct(b.pids, cycles), setting_n);
    for (long i = 0; i < cycles; i++)
        for (long j = 0; j < cycles; j++)
            if (a.pids[i] > 0 && a.pids[i] == b.pids[j]) {
                CHECK(0, "backend %d handed to two threads (cycles %ld and %ld)", a.pids[i], i,
                      j);
                i = j = cycles;
            }
    n = tu_count_backends(tu_app_name());
    CHECK(n == 2 * setting_n, "%ld backends while two threads leak, expected %ld", n,
          2 * setting_n);
    leaker_finish(&a);
    leaker_finish(&b);
}

/* PQDEDUP_SHARE_AFTER=N: only an idle, blocking connection is shared. With the N held ones
 * all inside transactions, the next connect opens a new backend; one idle but nonblocking is
 * not shared either; back in blocking mode, it is (the least recently handed out). */
static void share_after_busy(void)
{
    PGconn *held[16], *extra[2], *c;
    int pids[17], p;

    REQUIRE(setting_n < 16, "N too large");
    for (long i = 0; i < setting_n; i++) {
        held[i] = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(held[i]) == CONNECTION_OK, "connect: %s", PQerrorMessage(held[i]));
        pids[i] = tu_backend_pid(held[i]);
        CHECK(tu_exec_ok(held[i], "BEGIN"), "BEGIN: %s", PQerrorMessage(held[i]));
    }
    CHECK(pqt_distinct(pids, setting_n) == setting_n, "%ld held connections share backends",
          setting_n);
    extra[0] = PQconnectdb(tu_conninfo(""));
    p = PQstatus(extra[0]) == CONNECTION_OK ? tu_backend_pid(extra[0]) : -1;
    pids[setting_n] = p;
    CHECK(p > 0 && pqt_distinct(pids, setting_n + 1) == setting_n + 1,
          "with all %ld held connections in transactions, the next connect got backend %d, "
          "one of theirs", setting_n, p);
    CHECK(PQtransactionStatus(extra[0]) == PQTRANS_IDLE, "the new connect is in a transaction");
    for (long i = 0; i < setting_n; i++)
        CHECK(PQtransactionStatus(held[i]) == PQTRANS_INTRANS, "held %ld left its transaction", i);
    /* extra[0] is in a transaction too, so only held[0] below can be shared. */
    CHECK(tu_exec_ok(extra[0], "BEGIN"), "BEGIN: %s", PQerrorMessage(extra[0]));

    CHECK(tu_exec_ok(held[0], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(held[0]));
    CHECK(PQsetnonblocking(held[0], 1) == 0, "PQsetnonblocking");
    extra[1] = PQconnectdb(tu_conninfo(""));
    p = PQstatus(extra[1]) == CONNECTION_OK ? tu_backend_pid(extra[1]) : -1;
    CHECK(p > 0 && p != pids[0], "an idle but nonblocking held connection was shared (backend "
          "%d)", p);
    CHECK(tu_exec_ok(extra[1], "BEGIN"), "BEGIN: %s", PQerrorMessage(extra[1]));

    CHECK(PQsetnonblocking(held[0], 0) == 0, "PQsetnonblocking");
    c = PQconnectdb(tu_conninfo(""));
    p = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(p == pids[0], "with one idle blocking held connection (%d), the connect got %d",
          pids[0], p);
    PQfinish(c);
    for (long i = 0; i < setting_n; i++)
        PQfinish(held[i]);
    PQfinish(extra[0]);
    PQfinish(extra[1]);
}

/* Drives PQconnectStart to the end with PQconnectPoll and poll(); 1 when connected. */
static int async_connect_done(PGconn *c)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long t0 = tu_now_ms();

    if (!c || PQstatus(c) == CONNECTION_BAD)
        return 0;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 20000) {
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

        poll(&pfd, 1, 1000);
        st = PQconnectPoll(c);
    }
    return st == PGRES_POLLING_OK;
}

/* A leaking loop of async connects (PQconnectStart + poll loop, as Ruby's pg connects) under
 * PQDEDUP_SHARE_AFTER=N or PQDEDUP_MAX_PER_KEY=N: exactly N backends, every query works. */
static void async_leak(void)
{
    long cycles = tu_scaled(60) < 3 * setting_n ? 3 * setting_n : tu_scaled(60), n;
    PGconn **handles = calloc((size_t)cycles, sizeof *handles);
    int *pids = calloc((size_t)cycles, sizeof *pids);

    REQUIRE(handles && pids, "out of memory");
    for (long i = 0; i < cycles; i++) {
        handles[i] = PQconnectStart(tu_conninfo(""));
        pids[i] = async_connect_done(handles[i]) ? tu_backend_pid(handles[i]) : -1;
        CHECK(pids[i] > 0, "async leak cycle %ld: %s", i, PQerrorMessage(handles[i]));
    }
    CHECK(pqt_distinct(pids, cycles) == setting_n, "%ld distinct backends for %ld leaked async "
          "connects, expected %ld", pqt_distinct(pids, cycles), cycles, setting_n);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends open, expected %ld", n, setting_n);
    for (long i = 0; i < cycles; i++)
        PQfinish(handles[i]);
    free(handles);
    free(pids);
}

/* ---- max-per-key ---------------------------------------------------------------------- */

/* PQDEDUP_MAX_PER_KEY=N, one thread leaking: at the cap it shares a connection it holds
 * instead of opening more, so every query works on exactly N backends. */
static void max_leak(void)
{
    long cycles = tu_scaled(50) < 3 * setting_n ? 3 * setting_n : tu_scaled(50);
    struct leaker one;
    long n;

    leaker_init(&one, cycles);
    leak_thread(&one);
    CHECK(one.failures == 0, "%ld of %ld leaked connects failed", one.failures, cycles);
    CHECK(pqt_distinct(one.pids, cycles) == setting_n, "%ld distinct backends, expected "
          "PQDEDUP_MAX_PER_KEY=%ld", pqt_distinct(one.pids, cycles), setting_n);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends open, expected %ld", n, setting_n);
    leaker_finish(&one);
}

/* Checks a connect refused at the cap: a failed PGconn, after about PQDEDUP_MAX_WAIT (300ms),
 * whose message names the setting. */
static void check_refused(PGconn *c, long waited_ms, const char *what)
{
    const char *msg = PQerrorMessage(c);
    char setting[64];

    snprintf(setting, sizeof setting, "PQDEDUP_MAX_PER_KEY=%ld", setting_n);
    CHECK(c != NULL && PQstatus(c) == CONNECTION_BAD, "%s at the cap: status %d, expected "
          "CONNECTION_BAD", what, c ? (int)PQstatus(c) : -1);
    CHECK(msg && strstr(msg, setting) && strstr(msg, "raise"), "%s at the cap: message does "
          "not name %s and how to raise it: %s", what, setting, msg ? msg : "(null)");
    CHECK(waited_ms >= 250, "%s at the cap failed after %ld ms, before PQDEDUP_MAX_WAIT=300ms",
          what, waited_ms);
    CHECK(waited_ms < 10000, "%s at the cap took %ld ms, PQDEDUP_MAX_WAIT is 300ms", what,
          waited_ms);
}

/* N connections held in open transactions by this thread cannot be shared: one more connect
 * waits PQDEDUP_MAX_WAIT and fails in words; the N backends are untouched. Once one of them
 * is idle again, a connect shares it. */
static void max_busy(void)
{
    PGconn **held = calloc((size_t)setting_n, sizeof *held);
    int *pids = calloc((size_t)setting_n, sizeof *pids);
    PGconn *c;
    long t0, n;

    REQUIRE(held && pids, "out of memory");
    for (long i = 0; i < setting_n; i++) {
        held[i] = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(held[i]) == CONNECTION_OK, "connect %ld: %s", i,
                PQerrorMessage(held[i]));
        pids[i] = tu_backend_pid(held[i]);
        CHECK(tu_exec_ok(held[i], "BEGIN"), "BEGIN: %s", PQerrorMessage(held[i]));
    }
    CHECK(pqt_distinct(pids, setting_n) == setting_n, "%ld distinct backends for %ld connects "
          "under the cap", pqt_distinct(pids, setting_n), setting_n);

    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    check_refused(c, tu_now_ms() - t0, "blocking connect");
    PQfinish(c);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends after a refused connect, expected %ld", n, setting_n);
    for (long i = 0; i < setting_n; i++)
        CHECK(PQtransactionStatus(held[i]) == PQTRANS_INTRANS && tu_backend_pid(held[i]) == pids[i],
              "held connection %ld disturbed by the refused connect", i);

    /* The last one goes idle: the next connect shares it at once. */
    CHECK(tu_exec_ok(held[setting_n - 1], "ROLLBACK"), "ROLLBACK");
    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    CHECK(PQstatus(c) == CONNECTION_OK && tu_backend_pid(c) == pids[setting_n - 1],
          "connect at the cap with an idle held connection: expected to share backend %d: %s",
          pids[setting_n - 1], PQerrorMessage(c));
    CHECK(tu_now_ms() - t0 < 250, "sharing at the cap waited %ld ms", tu_now_ms() - t0);
    PQfinish(c);
    CHECK(tu_backend_pid(held[setting_n - 1]) == pids[setting_n - 1],
          "the shared connection broke when the other handle finished");
    for (long i = 0; i < setting_n; i++)
        PQfinish(held[i]);
    free(held);
    free(pids);
}

/* A thread that connects, reports, then holds its connection until told (or finishes after
 * finish_after_ms when that is > 0). */
struct holder {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int *ready;
    int *release;
    long finish_after_ms;
    int pid;
    long finished_at;
};

static void *holder_thread(void *arg)
{
    struct holder *h = arg;
    PGconn *c = PQconnectdb(tu_conninfo(""));

    h->pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(h->pid > 0, "holder thread connect: %s", PQerrorMessage(c));
    pthread_mutex_lock(h->lock);
    (*h->ready)++;
    pthread_cond_broadcast(h->cond);
    pthread_mutex_unlock(h->lock);
    if (h->finish_after_ms > 0) {
        tu_sleep_ms(h->finish_after_ms);
    } else {
        pthread_mutex_lock(h->lock);
        while (!*h->release)
            pthread_cond_wait(h->cond, h->lock);
        pthread_mutex_unlock(h->lock);
    }
    h->finished_at = tu_now_ms();
    PQfinish(c);
    return NULL;
}

/* Starts N holder threads, the first finishing after first_finish_ms (0: held until
 * released), and waits until all are connected. */
static void start_holders(struct holder *h, pthread_t *t, long first_finish_ms,
                          pthread_mutex_t *lock, pthread_cond_t *cond, int *ready, int *release)
{
    for (long i = 0; i < setting_n; i++) {
        h[i] = (struct holder){lock, cond, ready, release, i == 0 ? first_finish_ms : 0, -1, 0};
        REQUIRE(pthread_create(&t[i], NULL, holder_thread, &h[i]) == 0, "pthread_create");
    }
    pthread_mutex_lock(lock);
    while (*ready < setting_n)
        pthread_cond_wait(cond, lock);
    pthread_mutex_unlock(lock);
}

static void stop_holders(pthread_t *t, pthread_mutex_t *lock, pthread_cond_t *cond, int *release)
{
    pthread_mutex_lock(lock);
    *release = 1;
    pthread_cond_broadcast(cond);
    pthread_mutex_unlock(lock);
    for (long i = 0; i < setting_n; i++)
        pthread_join(t[i], NULL);
}

/* N connections idle but held by other threads are never shared with this thread: its
 * connect (blocking, then async) waits PQDEDUP_MAX_WAIT and fails in words. */
static void max_threads(void)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int ready = 0, release = 0;
    struct holder *h = calloc((size_t)setting_n, sizeof *h);
    pthread_t *t = calloc((size_t)setting_n, sizeof *t);
    PGconn *c;
    long t0, n;

    REQUIRE(h && t, "out of memory");
    start_holders(h, t, 0, &lock, &cond, &ready, &release);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends with %ld holder threads", n, setting_n);

    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    check_refused(c, tu_now_ms() - t0, "blocking connect");
    PQfinish(c);

    t0 = tu_now_ms();
    c = PQconnectStart(tu_conninfo(""));
    if (c && PQstatus(c) != CONNECTION_BAD) {
        /* Not refused up front: it must not get a connection either. */
        PostgresPollingStatusType st;

        do
            st = PQconnectPoll(c);
        while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED &&
               tu_now_ms() - t0 < 10000);
        CHECK(0, "async connect at the cap was not refused (poll status %d, pid %d)", (int)st,
              st == PGRES_POLLING_OK ? tu_backend_pid(c) : -1);
    } else {
        check_refused(c, tu_now_ms() - t0, "async connect");
    }
    PQfinish(c);

    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends after refused connects, expected %ld", n, setting_n);
    stop_holders(t, &lock, &cond, &release);
    free(h);
    free(t);
}

/* N connections held by other threads, the first of which finishes during this thread's
 * wait at the cap: the waiting connect succeeds with that very backend. */
static void max_handoff(void)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int ready = 0, release = 0, pid;
    struct holder *h = calloc((size_t)setting_n, sizeof *h);
    pthread_t *t = calloc((size_t)setting_n, sizeof *t);
    PGconn *c;
    long t0, took, n;

    REQUIRE(h && t, "out of memory");
    start_holders(h, t, 300, &lock, &cond, &ready, &release);

    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    took = tu_now_ms() - t0;
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect while another thread finishes within "
            "PQDEDUP_MAX_WAIT failed: %s", PQerrorMessage(c));
    pid = tu_backend_pid(c);
    CHECK(pid == h[0].pid, "the waiting connect got backend %d, expected %d which the other "
          "thread finished", pid, h[0].pid);
    /* It waited for that finish (unless this thread was so late that the finish came first). */
    CHECK(h[0].finished_at > 0 && (h[0].finished_at <= t0 || t0 + took >= h[0].finished_at),
          "the connect returned after %ld ms, before the other thread finished (it should have "
          "waited)", took);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends, expected the cap %ld", n, setting_n);
    CHECK(tu_exec_ok(c, "SELECT 1"), "query on the handed-over connection: %s",
          PQerrorMessage(c));
    PQfinish(c);
    stop_holders(t, &lock, &cond, &release);
    free(h);
    free(t);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    setting_n = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    if (setting_n <= 0) {
        fprintf(stderr, "usage: test_cap share-after|share-after-busy|async-leak|max-leak|max-busy|max-threads|"
                "max-handoff N\n");
        return 2;
    }
    tu_observer();
    if (!strcmp(mode, "share-after"))
        share_after();
    else if (!strcmp(mode, "share-after-busy"))
        share_after_busy();
    else if (!strcmp(mode, "async-leak"))
        async_leak();
    else if (!strcmp(mode, "max-leak"))
        max_leak();
    else if (!strcmp(mode, "max-busy"))
        max_busy();
    else if (!strcmp(mode, "max-threads"))
        max_threads();
    else if (!strcmp(mode, "max-handoff"))
        max_handoff();
    else {
        fprintf(stderr, "test_cap: unknown mode %s\n", mode);
        return 2;
    }
    return tu_finish();
}

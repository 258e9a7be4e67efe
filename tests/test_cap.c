/* test_cap.c: PQDEDUP_UNBIND_AFTER and PQDEDUP_MAX_PER_KEY bound a program's backends, and say so in words. */
#include "test_leak_common.h"

#include <poll.h>
#include <pthread.h>

/*
 * Usage: test_cap MODE N
 *   unbind0 N        (PQDEDUP_UNBIND_AFTER=0) a leaking loop runs on exactly 1 backend; N
 *                    threads leaking at once on at most N
 *   unbind-default N (default settings) a leaking loop that pauses past 100ms between its
 *                    requests stays on 1 backend; a handle idle for less is not moved (checked
 *                    when the machine is fast enough to tell); N connects in transactions get
 *                    N backends
 *   unbind-active N  (default settings) N handles that run a query every 10 ms are never idle
 *                    for 100 ms: a new connect does not take their connections
 *   unbind-large N   (PQDEDUP_UNBIND_AFTER=1h, PQDEDUP_MAX_PER_KEY=2N) N idle handles keep
 *                    their connections while N more connects open new ones; at the cap the
 *                    longest idle handle's connection moves at once
 *   async-leak N     a leaking loop of PQconnectStart + poll connects runs on exactly N backends
 *                    (PQDEDUP_MAX_PER_KEY=N with PQDEDUP_UNBIND_AFTER=1h, or
 *                    PQDEDUP_UNBIND_AFTER=0 with N=1)
 *   max-leak N       (PQDEDUP_MAX_PER_KEY=N, PQDEDUP_UNBIND_AFTER=1h) a leaking loop runs on
 *                    exactly N backends and never waits
 *   max-busy N       (PQDEDUP_MAX_PER_KEY=N, PQDEDUP_MAX_WAIT=2s) N handles of this thread in
 *                    transactions: one more connect waits PQDEDUP_MAX_WAIT, then fails in words;
 *                    once one is idle, a connect takes its connection at once
 *   max-threads N    (same settings) N handles in transactions in other threads: this
 *                    thread's connect (blocking and async) waits, then fails in words; once one
 *                    of them is idle, a connect takes its connection at once
 *   max-handoff N    (PQDEDUP_MAX_PER_KEY=N, long PQDEDUP_MAX_WAIT) N handles in transactions in
 *                    other threads, one of which finishes during the wait: the waiting connect
 *                    gets that backend
 */

static long setting_n;

/* Every leaked handle answers its own query; `who` names the leak in failures. */
static PGconn *leak_one(long i, const char *who)
{
    PGconn *c = PQconnectdb(tu_conninfo(""));

    CHECK(PQstatus(c) == CONNECTION_OK && tu_echo_ok(c, i), "%s, cycle %ld: %s", who, i,
          PQerrorMessage(c));
    return c;
}

/* A connect that must not have waited for PQDEDUP_MAX_WAIT: it took less than half of it. */
static void check_at_once(long took_ms, const char *what)
{
    CHECK(took_ms < pqt_max_wait_ms() / 2, "%s took %ld ms (PQDEDUP_MAX_WAIT=%ldms): it waited "
          "instead of taking an idle handle's connection at once", what, took_ms,
          pqt_max_wait_ms());
}

/* ---- PQDEDUP_UNBIND_AFTER ----------------------------------------------------------- */

struct leaker {
    long cycles;
    PGconn **handles;
    int *pids;
    long most;   /* most backends of this app seen during the leak */
    long slowest_ms;
};

/* Connects `cycles` times without finishing; records each handle's backend, the most
 * backends seen, and the slowest connect. */
static void *leak_thread(void *arg)
{
    struct leaker *l = arg;

    for (long i = 0; i < l->cycles; i++) {
        long t0 = tu_now_ms(), took;

        l->handles[i] = leak_one(i, "leak");
        took = tu_now_ms() - t0;
        l->slowest_ms = took > l->slowest_ms ? took : l->slowest_ms;
        l->pids[i] = PQbackendPID(l->handles[i]);
        if (i % 8 == 7) {
            long n = tu_count_backends(tu_app_name());

            l->most = n > l->most ? n : l->most;
        }
    }
    return NULL;
}

static void leaker_init(struct leaker *l, long cycles)
{
    *l = (struct leaker){.cycles = cycles};
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

/* PQDEDUP_UNBIND_AFTER=0: each connect of a leaking loop takes the previous handle's
 * connection, so one thread runs on exactly 1 backend; N threads leaking at once never need
 * more than N (each has at most one handle busy at a time). */
static void unbind0(void)
{
    long cycles = tu_scaled(100) < 10 ? 10 : tu_scaled(100), n;
    struct leaker one, *many = calloc((size_t)setting_n, sizeof *many);
    pthread_t *t = calloc((size_t)setting_n, sizeof *t);

    REQUIRE(many && t, "out of memory");
    leaker_init(&one, cycles);
    leak_thread(&one);
    n = tu_count_backends(tu_app_name());
    CHECK(pqt_distinct(one.pids, cycles) == 1 && n == 1, "one leaking thread: %ld distinct "
          "backends, %ld open, expected 1 with PQDEDUP_UNBIND_AFTER=0",
          pqt_distinct(one.pids, cycles), n);
    leaker_finish(&one);

    for (long i = 0; i < setting_n; i++) {
        leaker_init(&many[i], cycles);
        REQUIRE(pthread_create(&t[i], NULL, leak_thread, &many[i]) == 0, "pthread_create");
    }
    for (long i = 0; i < setting_n; i++)
        pthread_join(t[i], NULL);
    n = tu_count_backends(tu_app_name());
    for (long i = 0; i < setting_n; i++) {
        CHECK(many[i].most <= setting_n, "thread %ld saw %ld backends while %ld threads leaked",
              i, many[i].most, setting_n);
        leaker_finish(&many[i]);
    }
    CHECK(n >= 1 && n <= setting_n, "%ld backends after %ld threads leaked %ld each, expected at "
          "most %ld", n, setting_n, cycles, setting_n);
    free(many);
    free(t);
}

/* Default PQDEDUP_UNBIND_AFTER (100ms): a leaking loop whose requests come more than 100ms
 * apart runs on 1 backend; a handle idle for less is not moved; N handles in transactions
 * each have a backend of their own. */
static void unbind_default(void)
{
    long cycles = tu_scaled(8) < 3 ? 3 : tu_scaled(8), n, t0, gap;
    PGconn **handles = calloc((size_t)cycles, sizeof *handles);
    int *pids = calloc((size_t)cycles, sizeof *pids);
    PGconn **busy = calloc((size_t)setting_n, sizeof *busy);
    int *busy_pids = calloc((size_t)setting_n, sizeof *busy_pids);

    REQUIRE(handles && pids && busy && busy_pids, "out of memory");
    for (long i = 0; i < cycles; i++) {
        if (i > 0)
            tu_sleep_ms(150); /* the previous handle is now idle past PQDEDUP_UNBIND_AFTER */
        handles[i] = leak_one(i, "paced leak");
        pids[i] = PQbackendPID(handles[i]);
    }
    n = tu_count_backends(tu_app_name());
    CHECK(pqt_distinct(pids, cycles) == 1 && n == 1, "a leak pausing 150ms between requests: "
          "%ld distinct backends, %ld open, expected 1", pqt_distinct(pids, cycles), n);
    for (long i = 0; i < cycles; i++)
        PQfinish(handles[i]);
    n = tu_wait_backends(tu_app_name(), 1, 5000);
    CHECK(n == 1, "%ld backends kept after finishing, expected 1", n);

    /* Two connects close together: the first handle is idle for less than 100ms when the
     * second connects, so (the kept one taken by the first) the second opens its own. */
    t0 = tu_now_ms();
    handles[0] = leak_one(0, "first of two");
    handles[1] = leak_one(1, "second of two");
    gap = tu_now_ms() - t0;
    if (gap < 80) {
        CHECK(PQbackendPID(handles[0]) != PQbackendPID(handles[1]),
              "a handle idle for less than %ld ms lost its connection to the next connect", gap);
    } else {
        printf("test_cap: two connects took %ld ms: too slow here to check that a handle idle for "
               "less than 100ms keeps its connection\n", gap);
    }
    PQfinish(handles[0]);
    PQfinish(handles[1]);

    /* N handles in transactions: N backends. */
    for (long i = 0; i < setting_n; i++) {
        busy[i] = PQconnectdb(tu_conninfo(""));
        busy_pids[i] = PQstatus(busy[i]) == CONNECTION_OK && tu_exec_ok(busy[i], "BEGIN")
                           ? tu_backend_pid(busy[i]) : -1;
    }
    CHECK(pqt_distinct(busy_pids, setting_n) == setting_n, "%ld handles in transactions got %ld "
          "backends", setting_n, pqt_distinct(busy_pids, setting_n));
    for (long i = 0; i < setting_n; i++)
        PQfinish(busy[i]);
    free(handles);
    free(pids);
    free(busy);
    free(busy_pids);
}

/* Default settings: N handles in use (a query every 10 ms for 300 ms) were never idle for
 * PQDEDUP_UNBIND_AFTER (100ms), though they are idle between their queries: a new connect
 * opens a backend of its own instead of taking one of theirs, and they stay where they are. */
static void unbind_active(void)
{
    PGconn **active = calloc((size_t)setting_n, sizeof *active), *c;
    int *pids = calloc((size_t)setting_n, sizeof *pids), pid;
    long until;

    REQUIRE(active && pids, "out of memory");
    for (long i = 0; i < setting_n; i++) {
        active[i] = leak_one(i, "active handle");
        pids[i] = PQbackendPID(active[i]);
    }
    until = tu_now_ms() + 300;
    while (tu_now_ms() < until) {
        for (long i = 0; i < setting_n; i++)
            CHECK(tu_echo_ok(active[i], i), "active handle %ld: %s", i,
                  PQerrorMessage(active[i]));
        tu_sleep_ms(10);
    }
    c = leak_one(99, "connect beside active handles");
    pid = PQbackendPID(c);
    for (long i = 0; i < setting_n; i++) {
        CHECK(pid != pids[i], "a new connect took the connection of handle %ld, which ran a query "
              "a moment ago (idle far less than PQDEDUP_UNBIND_AFTER=100ms)", i);
        CHECK(tu_backend_pid(active[i]) == pids[i], "active handle %ld moved from backend %d to "
              "%d", i, pids[i], tu_backend_pid(active[i]));
    }
    PQfinish(c);
    for (long i = 0; i < setting_n; i++)
        PQfinish(active[i]);
    free(active);
    free(pids);
}

/* PQDEDUP_UNBIND_AFTER=1h, PQDEDUP_MAX_PER_KEY=2N: N idle handles keep their connections
 * while N more connects, past the default 100ms, open new ones; the next connect is at the
 * cap, and takes the longest idle handle's connection at once, and that handle, used again,
 * takes another idle one's: the key never has more than 2N backends. */
static void unbind_large(void)
{
    long n2 = 2 * setting_n, n, t0, took;
    PGconn **h = calloc((size_t)n2, sizeof *h), *c;
    int *pids = calloc((size_t)n2, sizeof *pids), pid;

    REQUIRE(h && pids, "out of memory");
    for (long i = 0; i < setting_n; i++) {
        h[i] = leak_one(i, "first idle handles");
        pids[i] = PQbackendPID(h[i]);
    }
    tu_sleep_ms(200); /* idle past the default PQDEDUP_UNBIND_AFTER */
    for (long i = setting_n; i < n2; i++) {
        h[i] = leak_one(i, "connects below the cap");
        pids[i] = PQbackendPID(h[i]);
    }
    n = tu_count_backends(tu_app_name());
    CHECK(pqt_distinct(pids, n2) == n2 && n == n2, "%ld connects below the cap got %ld distinct "
          "backends (%ld open): idle handles lost their connections without pressure", n2,
          pqt_distinct(pids, n2), n);
    for (long i = 0; i < n2; i++)
        CHECK(PQbackendPID(h[i]) == pids[i], "idle handle %ld moved from %d to %d", i, pids[i],
              PQbackendPID(h[i]));

    t0 = tu_now_ms();
    c = leak_one(n2, "connect at the cap");
    took = tu_now_ms() - t0;
    pid = PQbackendPID(c);
    CHECK(pid == pids[0], "the connect at the cap got backend %d, expected the longest idle "
          "handle's, %d", pid, pids[0]);
    check_at_once(took, "the connect at the cap");
    CHECK(PQstatus(h[0]) == CONNECTION_OK && PQtransactionStatus(h[0]) == PQTRANS_IDLE &&
          PQbackendPID(h[0]) == pids[0], "the handle that lost its connection: status %d, "
          "transaction status %d, backend %d (expected OK, idle, its last backend %d)",
          (int)PQstatus(h[0]), (int)PQtransactionStatus(h[0]), PQbackendPID(h[0]), pids[0]);
    CHECK(tu_echo_ok(h[0], 0), "the handle that lost its connection, used again: %s",
          PQerrorMessage(h[0]));
    pid = PQbackendPID(h[0]);
    CHECK(pid != pids[0], "it is back on backend %d, still serving the new handle", pid);
    n = tu_count_backends(tu_app_name());
    CHECK(n == n2, "%ld backends, expected the cap %ld", n, n2);
    PQfinish(c);
    for (long i = 0; i < n2; i++)
        PQfinish(h[i]);
    free(h);
    free(pids);
}

/* A leaking loop of async connects (PQconnectStart + poll loop, as Ruby's pg connects) under
 * PQDEDUP_MAX_PER_KEY=N or PQDEDUP_UNBIND_AFTER=0 (N=1): exactly N backends, every query
 * answered. */
static void async_leak(void)
{
    long cycles = tu_scaled(60) < 3 * setting_n ? 3 * setting_n : tu_scaled(60), n;
    PGconn **handles = calloc((size_t)cycles, sizeof *handles);
    int *pids = calloc((size_t)cycles, sizeof *pids);

    REQUIRE(handles && pids, "out of memory");
    for (long i = 0; i < cycles; i++) {
        handles[i] = tu_connect_async(tu_conninfo(""));
        pids[i] = -1;
        if (CHECK(PQstatus(handles[i]) == CONNECTION_OK && tu_echo_ok(handles[i], i),
                  "async leak cycle %ld: %s", i, PQerrorMessage(handles[i])))
            pids[i] = PQbackendPID(handles[i]);
    }
    n = tu_count_backends(tu_app_name());
    CHECK(pqt_distinct(pids, cycles) == setting_n && n == setting_n, "%ld distinct backends for "
          "%ld leaked async connects, %ld open, expected %ld", pqt_distinct(pids, cycles), cycles,
          n, setting_n);
    for (long i = 0; i < cycles; i++)
        PQfinish(handles[i]);
    free(handles);
    free(pids);
}

/* ---- PQDEDUP_MAX_PER_KEY ---------------------------------------------------------------- */

/* PQDEDUP_MAX_PER_KEY=N, one thread leaking: at the cap each connect takes an idle handle's
 * connection at once (no wait), so every query is answered on exactly N backends. */
static void max_leak(void)
{
    long cycles = tu_scaled(50) < 3 * setting_n ? 3 * setting_n : tu_scaled(50), n;
    struct leaker one;

    leaker_init(&one, cycles);
    leak_thread(&one);
    n = tu_count_backends(tu_app_name());
    CHECK(pqt_distinct(one.pids, cycles) == setting_n && n == setting_n, "%ld distinct backends "
          "(%ld open) for %ld leaked connects, expected PQDEDUP_MAX_PER_KEY=%ld",
          pqt_distinct(one.pids, cycles), n, cycles, setting_n);
    CHECK(one.most <= setting_n, "%ld backends seen during the leak", one.most);
    check_at_once(one.slowest_ms, "the slowest connect of the leak");
    leaker_finish(&one);
}

/* Checks a connect refused at the cap: a failed PGconn, after PQDEDUP_MAX_WAIT, whose message
 * names the setting. */
static void check_refused(PGconn *c, long waited_ms, const char *what)
{
    const char *msg = PQerrorMessage(c);
    char setting[64];

    snprintf(setting, sizeof setting, "PQDEDUP_MAX_PER_KEY=%ld", setting_n);
    CHECK(c != NULL && PQstatus(c) == CONNECTION_BAD, "%s at the cap: status %d, expected "
          "CONNECTION_BAD", what, c ? (int)PQstatus(c) : -1);
    CHECK(msg && strstr(msg, setting) && strstr(msg, "raise"), "%s at the cap: message does "
          "not name %s and how to raise it: %s", what, setting, msg ? msg : "(null)");
    /* The reason itself, not libpq's words for an unknown connection option. */
    CHECK(msg && strncmp(msg, "pqdedup: ", 9) == 0 && !strstr(msg, "connection option"),
          "%s at the cap: the message is not the reason alone: %s", what, msg ? msg : "(null)");
    CHECK(waited_ms >= pqt_max_wait_ms() - 50, "%s at the cap failed after %ld ms, before "
          "PQDEDUP_MAX_WAIT=%ldms", what, waited_ms, pqt_max_wait_ms());
    CHECK(waited_ms < pqt_max_wait_ms() + 10000, "%s at the cap took %ld ms, PQDEDUP_MAX_WAIT "
          "is %ldms", what, waited_ms, pqt_max_wait_ms());
}

/* Connects and BEGINs; the backend pid into *pid (-1 on failure). */
static PGconn *connect_busy(int *pid)
{
    PGconn *c = PQconnectdb(tu_conninfo(""));

    *pid = PQstatus(c) == CONNECTION_OK && tu_exec_ok(c, "BEGIN") ? tu_backend_pid(c) : -1;
    CHECK(*pid > 0, "connect and BEGIN: %s", PQerrorMessage(c));
    return c;
}

/* N handles in open transactions, this thread's: they keep their connections, so one more
 * connect waits PQDEDUP_MAX_WAIT and fails in words; the N backends are untouched. Once one
 * of them is idle again, PQreset of the refused connection (libpq's way to try a failed
 * connect again) and a new connect each take an idle one's connection at once. */
static void max_busy(void)
{
    PGconn **held = calloc((size_t)setting_n, sizeof *held);
    int *pids = calloc((size_t)setting_n, sizeof *pids);
    PGconn *c;
    long t0, took, n, last = setting_n - 1;

    REQUIRE(held && pids, "out of memory");
    for (long i = 0; i < setting_n; i++)
        held[i] = connect_busy(&pids[i]);
    CHECK(pqt_distinct(pids, setting_n) == setting_n, "%ld distinct backends for %ld handles "
          "in transactions under the cap", pqt_distinct(pids, setting_n), setting_n);

    t0 = tu_now_ms();
    PGconn *refused = PQconnectdb(tu_conninfo(""));
    check_refused(refused, tu_now_ms() - t0, "blocking connect");
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends after a refused connect, expected %ld", n, setting_n);
    for (long i = 0; i < setting_n; i++)
        CHECK(PQtransactionStatus(held[i]) == PQTRANS_INTRANS && tu_backend_pid(held[i]) == pids[i],
              "handle %ld in a transaction disturbed by the refused connect", i);

    /* The last one goes idle: PQreset of the refused connection takes its connection at once,
     * and so does the next connect (from the reset one, idle in its turn). */
    CHECK(tu_exec_ok(held[last], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(held[last]));
    t0 = tu_now_ms();
    PQreset(refused);
    took = tu_now_ms() - t0;
    CHECK(PQstatus(refused) == CONNECTION_OK && tu_backend_pid(refused) == pids[last],
          "PQreset of the refused connect with an idle handle at the cap: expected its backend %d: %s",
          pids[last], PQerrorMessage(refused));
    check_at_once(took, "PQreset of the refused connect with an idle handle");
    PQfinish(refused);
    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    took = tu_now_ms() - t0;
    CHECK(PQstatus(c) == CONNECTION_OK && tu_backend_pid(c) == pids[last],
          "connect at the cap with an idle handle: expected its backend %d: %s", pids[last],
          PQerrorMessage(c));
    check_at_once(took, "the connect at the cap with an idle handle");
    /* The idle handle, used again, takes the now idle new one's connection back. */
    CHECK(tu_echo_ok(held[last], 5), "the handle that lost its connection, used again: %s",
          PQerrorMessage(held[last]));
    PQfinish(c);
    for (long i = 0; i < setting_n; i++)
        PQfinish(held[i]);
    free(held);
    free(pids);
}

/* A thread that connects and BEGINs, reports, then does what it is told: go idle
 * (ROLLBACK), or finish `finish_delay_ms` after being told to. */
enum holder_cmd { HOLD, GO_IDLE, FINISH };

struct holders {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ready;
};

struct holder {
    struct holders *all;
    enum holder_cmd cmd;
    long finish_delay_ms;
    int pid;
    long finished_at;
};

static void *holder_thread(void *arg)
{
    struct holder *h = arg;
    PGconn *c = connect_busy(&h->pid);
    enum holder_cmd done = HOLD;

    pthread_mutex_lock(&h->all->lock);
    h->all->ready++;
    pthread_cond_broadcast(&h->all->cond);
    while (h->cmd != FINISH) {
        if (h->cmd == GO_IDLE && done == HOLD) {
            pthread_mutex_unlock(&h->all->lock);
            CHECK(tu_exec_ok(c, "ROLLBACK"), "holder ROLLBACK: %s", PQerrorMessage(c));
            pthread_mutex_lock(&h->all->lock);
            done = GO_IDLE;
            h->all->ready++;
            pthread_cond_broadcast(&h->all->cond);
            continue;
        }
        pthread_cond_wait(&h->all->cond, &h->all->lock);
    }
    pthread_mutex_unlock(&h->all->lock);
    if (h->finish_delay_ms > 0)
        tu_sleep_ms(h->finish_delay_ms);
    h->finished_at = tu_now_ms();
    PQfinish(c);
    return NULL;
}

/* Tells holder h to do cmd. */
static void tell(struct holders *all, struct holder *h, enum holder_cmd cmd)
{
    pthread_mutex_lock(&all->lock);
    h->cmd = cmd;
    pthread_cond_broadcast(&all->cond);
    pthread_mutex_unlock(&all->lock);
}

/* Waits until `ready` reaches want. */
static void wait_ready(struct holders *all, int want)
{
    pthread_mutex_lock(&all->lock);
    while (all->ready < want)
        pthread_cond_wait(&all->cond, &all->lock);
    pthread_mutex_unlock(&all->lock);
}

/* Starts N holder threads and waits until each is connected and in its transaction. */
static void start_holders(struct holders *all, struct holder *h, pthread_t *t)
{
    pthread_mutex_init(&all->lock, NULL);
    pthread_cond_init(&all->cond, NULL);
    all->ready = 0;
    for (long i = 0; i < setting_n; i++) {
        h[i] = (struct holder){.all = all, .cmd = HOLD, .pid = -1};
        REQUIRE(pthread_create(&t[i], NULL, holder_thread, &h[i]) == 0, "pthread_create");
    }
    wait_ready(all, (int)setting_n);
}

/* Tells holders [from, N) to finish, joins them, and tears down what start_holders made. */
static void stop_holders(struct holders *all, struct holder *h, pthread_t *t, long from)
{
    pthread_mutex_lock(&all->lock);
    for (long i = from; i < setting_n; i++)
        h[i].cmd = FINISH;
    pthread_cond_broadcast(&all->cond);
    pthread_mutex_unlock(&all->lock);
    for (long i = from; i < setting_n; i++)
        pthread_join(t[i], NULL);
    pthread_cond_destroy(&all->cond);
    pthread_mutex_destroy(&all->lock);
}

/* N handles in transactions in other threads: this thread's connect (blocking, then async)
 * waits PQDEDUP_MAX_WAIT and fails in words. One of them goes idle: a connect takes its
 * connection at once. */
static void max_threads(void)
{
    struct holders all;
    struct holder *h = calloc((size_t)setting_n, sizeof *h);
    pthread_t *t = calloc((size_t)setting_n, sizeof *t);
    PGconn *c;
    long t0, took, n;
    int pid;

    REQUIRE(h && t, "out of memory");
    start_holders(&all, h, t);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends with %ld holder threads", n, setting_n);

    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    check_refused(c, tu_now_ms() - t0, "blocking connect");
    PQfinish(c);

    /* An asynchronous connect waits without blocking (issue 10): its poll loop waits on
     * PQsocket until PQDEDUP_MAX_WAIT has passed, then the connect fails in words. */
    t0 = tu_now_ms();
    c = PQconnectStart(tu_conninfo(""));
    if (c && PQstatus(c) != CONNECTION_BAD) {
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        int polls = 0;

        while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 10000) {
            struct pollfd p = { .fd = PQsocket(c), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT };

            poll(&p, 1, 1000);
            st = PQconnectPoll(c);
            polls++;
        }
        CHECK(st == PGRES_POLLING_FAILED, "async connect at the cap: poll ended with %d, expected "
              "PGRES_POLLING_FAILED", (int)st);
        CHECK(polls < 100, "async connect at the cap: %d polls in %ld ms (the wait must not spin)",
              polls, tu_now_ms() - t0);
    }
    check_refused(c, tu_now_ms() - t0, "async connect");
    PQfinish(c);
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends after refused connects, expected %ld", n, setting_n);

    /* Holder 0 goes idle: its connection moves to this thread's connect, at once. */
    tell(&all, &h[0], GO_IDLE);
    wait_ready(&all, (int)setting_n + 1);
    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    took = tu_now_ms() - t0;
    pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(pid == h[0].pid, "connect at the cap with another thread's handle idle: backend %d, "
          "expected that handle's %d: %s", pid, h[0].pid, PQerrorMessage(c));
    check_at_once(took, "the connect at the cap with another thread's handle idle");
    PQfinish(c);
    stop_holders(&all, h, t, 0);
    free(h);
    free(t);
}

/* N handles in transactions in other threads; the first finishes 300ms after this thread
 * says it is about to connect: the waiting connect gets that backend. */
static void max_handoff(void)
{
    struct holders all;
    struct holder *h = calloc((size_t)setting_n, sizeof *h);
    pthread_t *t = calloc((size_t)setting_n, sizeof *t);
    PGconn *c;
    long t0, took, n;
    int pid;

    REQUIRE(h && t, "out of memory");
    start_holders(&all, h, t);
    h[0].finish_delay_ms = 300;
    tell(&all, &h[0], FINISH);
    t0 = tu_now_ms();
    c = PQconnectdb(tu_conninfo(""));
    took = tu_now_ms() - t0;
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect while another thread finishes within "
            "PQDEDUP_MAX_WAIT failed: %s", PQerrorMessage(c));
    pid = tu_backend_pid(c);
    CHECK(pid == h[0].pid, "the waiting connect got backend %d, expected %d which the other "
          "thread finished", pid, h[0].pid);
    pthread_join(t[0], NULL);
    /* It waited for that finish, unless this thread was so slow that the finish came first. */
    if (h[0].finished_at > t0)
        CHECK(t0 + took >= h[0].finished_at, "the connect returned after %ld ms, before the "
              "other thread finished (it should have waited)", took);
    else
        printf("test_cap: the other thread finished before this connect began; no wait seen\n");
    n = tu_count_backends(tu_app_name());
    CHECK(n == setting_n, "%ld backends, expected the cap %ld", n, setting_n);
    CHECK(tu_echo_ok(c, 3), "query on the handed-over connection: %s", PQerrorMessage(c));
    PQfinish(c);
    stop_holders(&all, h, t, 1);
    free(h);
    free(t);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
    } modes[] = {
        {"unbind0", unbind0},         {"unbind-default", unbind_default},
        {"unbind-active", unbind_active}, {"unbind-large", unbind_large},
        {"async-leak", async_leak},   {"max-leak", max_leak},
        {"max-busy", max_busy},       {"max-threads", max_threads},
        {"max-handoff", max_handoff},
    };
    const char *mode = argc > 1 ? argv[1] : "";

    setting_n = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    for (size_t i = 0; setting_n > 0 && i < sizeof modes / sizeof modes[0]; i++) {
        if (!strcmp(mode, modes[i].name)) {
            tu_observer();
            modes[i].run();
            return tu_finish();
        }
    }
    fprintf(stderr, "usage: test_cap unbind0|unbind-default|unbind-active|unbind-large|"
            "async-leak|max-leak|max-busy|max-threads|max-handoff N\n");
    return 2;
}

/* test_fault_concurrency.c: fork storms (pre-fork server shape), threads finishing connections other threads opened, and signals arriving during connect and finish. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Usage: test_fault_concurrency CASE [ARGS]
 *   prefork           a single-threaded parent (holding two connections, one in a transaction,
 *                     and keeping another of the same key) forks 8 workers, 3 rounds; each
 *                     worker connects, writes and
 *                     finishes 25 times (scaled), then leaves: even workers by exit(), odd ones
 *                     by _exit()
 *   prefork-threaded  the same while a parent thread churns on the same key; workers _exit()
 *                     (glibc: a child of a multithreaded parent must not run exit handlers
 *                     that may need locks other threads held at the fork)
 *   handoff           4 threads connect, BEGIN and write; 4 other threads COMMIT (2 of 3) or
 *                     leave the transaction open, then PQfinish
 *   signals [EXTRA [USER]]  SIGALRM every 1 ms (a no-op handler installed without SA_RESTART)
 *                     while the program churns connect/write/finish; EXTRA is added to the
 *                     conninfo (e.g. "host=127.0.0.1 sslmode=require user=pqd_alice ..."), USER
 *                     is the user it connects as (default $PGUSER)
 * Each runs itself again with PQDEDUP_DISABLE=1 and compares what the app saw.
 */

static struct fu_ledger *ledger;
static const char *app, *user, *key;

/* ---- prefork --------------------------------------------------------------------------- */

#define WORKERS 8
#define ROUNDS 3
#define MAX_PIDS 64

/* What one worker did, in memory shared with the parent. */
struct worker_report {
    int ok, connect_failed, write_failed, wrong_session;
    int npids;
    int pids[MAX_PIDS];   /* distinct backend pids it was given */
};

struct shared {
    struct worker_report report[ROUNDS][WORKERS];
    signed char state[]; /* per ledger id: enum fu_state */
};

static struct shared *shm;
static int cycles;
static atomic_int stop_churn;
static atomic_int churn_ok, churn_failed;

/* A parent thread that churns on the same key while the workers are forked. */
static void *parent_churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        PGconn *c = PQconnectdb(key);
        PGresult *r = PQexec(c, "SELECT 1");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            atomic_fetch_add(&churn_ok, 1);
        else
            atomic_fetch_add(&churn_failed, 1);
        PQclear(r);
        PQfinish(c);
    }
    return NULL;
}

/* A worker: its own connections only (never the parent's), every write once, in its own
 * session. Uses only libpq and the shared memory: no testutil (its locks and observer belong
 * to the parent). */
static void worker(int round, int w, const char *table)
{
    struct worker_report *rep = &shm->report[round][w];
    char sql[200];

    for (int i = 0; i < cycles; i++) {
        int id = (round * WORKERS + w) * cycles + i;
        PGconn *c = PQconnectdb(key);
        if (PQstatus(c) != CONNECTION_OK) {
            rep->connect_failed++;
            PQfinish(c);
            continue;
        }
        int pid = PQbackendPID(c);
        bool known = false;
        for (int k = 0; k < rep->npids; k++)
            known |= rep->pids[k] == pid;
        if (!known && rep->npids < MAX_PIDS)
            rep->pids[rep->npids++] = pid;
        snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (%d) RETURNING usr, app, pid, "
                 "(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')",
                 table, id);
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            shm->state[id] = FU_OK;
            rep->ok++;
            if (strcmp(PQgetvalue(r, 0, 0), user) || strcmp(PQgetvalue(r, 0, 1), app) ||
                atoi(PQgetvalue(r, 0, 2)) != pid || strcmp(PQgetvalue(r, 0, 3), "0"))
                rep->wrong_session++;
        } else {
            shm->state[id] = PQstatus(c) == CONNECTION_OK && PQresultErrorField(r, PG_DIAG_SQLSTATE)
                                 ? FU_FAILED : FU_AMBIGUOUS;
            rep->write_failed++;
        }
        PQclear(r);
        /* Leave some session state behind: the next holder must not see it. */
        snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d)", id);
        PQclear(PQexec(c, sql));
        PQfinish(c);
    }
}

/* Waits for a worker; returns its exit status, 128+signal, or -1 after 120 s. */
static int wait_worker(pid_t pid)
{
    for (int i = 0; i < 12000; i++) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 && errno != EINTR)
            return -1;
        tu_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Pre-fork server: rounds of 8 workers that connect, write, finish, and exit (exit() or
 * _exit()) while the parent holds two connections (one inside a transaction, one idle) and
 * keeps another of the same key (its reset in flight at the fork): every worker exits 0,
 * every write is there once and in the worker's own session, concurrent workers never share
 * a backend, none gets the parent's backends, the parent's connections keep working (the one
 * in a transaction on its backend; the idle one may have lent its server connection to
 * another connect of the parent's and answer from another of the parent's backends), and the
 * workers' backends all go away. */
static void test_prefork(bool threaded)
{
    size_t ids = (size_t)ROUNDS * WORKERS * (size_t)cycles;
    PGconn *held, *held_idle, *kept;
    pthread_t churner;
    int held_pid, held_idle_pid, kept_pid = -1;

    shm = mmap(NULL, sizeof *shm + ids, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(shm != MAP_FAILED, "mmap: %s", strerror(errno));
    ledger = fu_ledger_create((int)ids);
    held = PQconnectdb(key);
    REQUIRE(PQstatus(held) == CONNECTION_OK, "connect: %s", PQerrorMessage(held));
    REQUIRE(tu_exec_ok(held, "BEGIN"), "BEGIN: %s", PQerrorMessage(held));
    held_pid = tu_backend_pid(held);
    held_idle = PQconnectdb(key);
    REQUIRE(PQstatus(held_idle) == CONNECTION_OK, "connect: %s", PQerrorMessage(held_idle));
    held_idle_pid = tu_backend_pid(held_idle);
    /* A kept one from the start: the parent's own connects always find a free server
     * connection, so without the churn thread held_idle never lends its own. */
    kept = PQconnectdb(key);
    REQUIRE(PQstatus(kept) == CONNECTION_OK, "connect: %s", PQerrorMessage(kept));
    PQfinish(kept);
    if (threaded)
        REQUIRE(pthread_create(&churner, NULL, parent_churn, NULL) == 0, "pthread_create");

    for (int round = 0; round < ROUNDS; round++) {
        pid_t pids[WORKERS];
        int bad_exits = 0;

        /* A kept connection whose reset is still in flight at the fork. */
        kept = PQconnectdb(key);
        REQUIRE(PQstatus(kept) == CONNECTION_OK, "connect: %s", PQerrorMessage(kept));
        kept_pid = PQbackendPID(kept);
        PQfinish(kept);
        fflush(NULL);
        for (int w = 0; w < WORKERS; w++) {
            pids[w] = fork();
            REQUIRE(pids[w] >= 0, "fork: %s", strerror(errno));
            if (pids[w] == 0) {
                worker(round, w, fu_ledger_table(ledger));
                if (!threaded && w % 2 == 0)
                    exit(0);
                _exit(0);
            }
        }
        for (int w = 0; w < WORKERS; w++) {
            int st = wait_worker(pids[w]);
            if (!CHECK(st == 0, "round %d: worker %d (pid %ld) ended with status %d", round, w,
                       (long)pids[w], st))
                bad_exits++;
        }
        /* No backend in two workers of the round, nor the parent's. */
        int shared_pids = 0, parents = 0, ok = 0, failed = 0, wrong = 0;
        for (int w = 0; w < WORKERS; w++) {
            struct worker_report *a = &shm->report[round][w];
            ok += a->ok;
            failed += a->connect_failed + a->write_failed;
            wrong += a->wrong_session;
            for (int k = 0; k < a->npids; k++) {
                parents += a->pids[k] == held_pid || a->pids[k] == kept_pid || a->pids[k] == held_idle_pid;
                for (int v = w + 1; v < WORKERS; v++)
                    for (int m = 0; m < shm->report[round][v].npids; m++)
                        shared_pids += a->pids[k] == shm->report[round][v].pids[m];
            }
        }
        CHECK(shared_pids == 0, "round %d: %d backends were given to two workers", round, shared_pids);
        CHECK(parents == 0, "round %d: a worker got one of the parent's backends", round);
        CHECK(failed == 0, "round %d: %d connects or writes of the workers failed", round, failed);
        CHECK(wrong == 0, "round %d: %d writes were made in a session that was not the worker's own "
                          "(user, application_name, pid) or that still held an earlier holder's lock",
              round, wrong);
        fu_note("prefork round %d: workers exited %s, writes %s, sessions %s", round,
                bad_exits ? "BADLY" : "0", failed ? "FAILED" : "ok",
                wrong || shared_pids || parents ? "CROSSED" : "own");
        /* The parent's own connections survive whatever the workers did. */
        char *v = tu_query_value(held, "SELECT pg_backend_pid()");
        fu_note("prefork round %d: parent's held connection (in a transaction): %s", round,
                v && atoi(v) == held_pid ? "same backend, works" : "BROKEN");
        free(v);
        int pid_now = tu_backend_pid(held_idle);
        bool workers = false;
        for (int w = 0; w < WORKERS; w++)
            for (int k = 0; k < shm->report[round][w].npids; k++)
                workers = workers || shm->report[round][w].pids[k] == pid_now;
        fu_note("prefork round %d: parent's held idle connection: %s", round,
                pid_now > 0 && !workers ? "works" : "BROKEN");
        CHECK(pid_now > 0 && !workers, "round %d: the parent's held idle connection answers as "
              "backend %d (a worker's: %s)", round, pid_now, workers ? "yes" : "no");
        held_idle_pid = pid_now;
    }
    if (threaded) {
        atomic_store(&stop_churn, 1);
        pthread_join(churner, NULL);
        printf("parent churn thread: %d ok, %d failed\n", churn_ok, churn_failed);
        CHECK(churn_failed == 0 && churn_ok > 0, "the parent's churn thread: %d ok, %d failed",
              churn_ok, churn_failed);
    }
    kept = PQconnectdb(key);
    if (!fu_is_reference() && !threaded)
        CHECK(PQbackendPID(kept) == kept_pid, "the parent's kept connection was not reused after the forks");
    fu_note("after the forks: parent's connect: %s", fu_conn_outcome(kept));
    PQfinish(kept);
    fu_note("after the forks: parent's held connection: COMMIT %s", fu_exec(held, "COMMIT"));
    PQfinish(held);
    PQfinish(held_idle);
    /* Every worker's backend went away with its worker: only the parent's kept ones stay
     * (held, held idle, the kept one and a spare opened while its reset was in flight, and
     * the churn thread's two). */
    int most = fu_is_reference() ? 0 : threaded ? 6 : 4;
    long left = -1;
    for (int i = 0; i < 500; i++) {
        left = tu_count_backends(app);
        if (left >= 0 && left <= most)
            break;
        tu_sleep_ms(20);
    }
    CHECK(left >= 0 && left <= most, "%ld backends of ours still open after the workers exited, "
                                     "expected at most %d", left, most);

    for (int id = 0; id < (int)ids; id++)
        if (shm->state[id] != FU_UNTRIED)
            fu_record(ledger, id, (enum fu_state)shm->state[id], 0, user, app);
    fu_ledger_verify(ledger, 0, threaded ? "prefork-threaded" : "prefork");
    fu_ledger_drop(ledger);
    munmap(shm, sizeof *shm + ids);
}

/* ---- handoff ------------------------------------------------------------------------------- */

#define PRODUCERS 4
#define CONSUMERS 4
#define QUEUE_SIZE 4

struct job {
    PGconn *c;
    int id, pid;
    bool commit;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct job q[QUEUE_SIZE];
    int head, len, producers_left;
    int in_use[PRODUCERS + QUEUE_SIZE + CONSUMERS]; /* backend pids handed out and not finished */
    int crossed, not_idle, failed, committed, left_open, commit_failed;
} hq = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER };

static int per_producer;

static void in_use_add(int pid)
{
    for (size_t i = 0; i < sizeof hq.in_use / sizeof hq.in_use[0]; i++)
        if (hq.in_use[i] == pid)
            hq.crossed++;
    for (size_t i = 0; i < sizeof hq.in_use / sizeof hq.in_use[0]; i++)
        if (hq.in_use[i] == 0) {
            hq.in_use[i] = pid;
            return;
        }
    hq.crossed++; /* more handed out at once than can exist */
}

static void in_use_remove(int pid)
{
    for (size_t i = 0; i < sizeof hq.in_use / sizeof hq.in_use[0]; i++)
        if (hq.in_use[i] == pid) {
            hq.in_use[i] = 0;
            return;
        }
}

static void *producer(void *arg)
{
    int p = (int)(long)arg;

    for (int i = 0; i < per_producer; i++) {
        struct job j = { .id = p * per_producer + i, .commit = (p * per_producer + i) % 3 != 0 };
        j.c = PQconnectdb(key);
        if (PQstatus(j.c) != CONNECTION_OK) {
            pthread_mutex_lock(&hq.lock);
            hq.failed++;
            pthread_mutex_unlock(&hq.lock);
            PQfinish(j.c);
            continue;
        }
        pthread_mutex_lock(&hq.lock);
        hq.not_idle += PQtransactionStatus(j.c) != PQTRANS_IDLE;
        pthread_mutex_unlock(&hq.lock);
        bool ok = !strcmp(fu_exec(j.c, "BEGIN"), "ok") &&
                  !strcmp(fu_write_in_txn(ledger, j.c, j.id, user, app), "ok");
        /* Inside its transaction it keeps its backend until it is finished (idle, before the
         * BEGIN, another connect could have taken its server connection). */
        j.pid = PQbackendPID(j.c);
        pthread_mutex_lock(&hq.lock);
        in_use_add(j.pid);
        hq.failed += !ok;
        while (hq.len == QUEUE_SIZE)
            pthread_cond_wait(&hq.changed, &hq.lock);
        hq.q[(hq.head + hq.len++) % QUEUE_SIZE] = j;
        pthread_cond_broadcast(&hq.changed);
        pthread_mutex_unlock(&hq.lock);
    }
    pthread_mutex_lock(&hq.lock);
    hq.producers_left--;
    pthread_cond_broadcast(&hq.changed);
    pthread_mutex_unlock(&hq.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&hq.lock);
        while (hq.len == 0 && hq.producers_left > 0)
            pthread_cond_wait(&hq.changed, &hq.lock);
        if (hq.len == 0) {
            pthread_mutex_unlock(&hq.lock);
            return NULL;
        }
        struct job j = hq.q[hq.head];
        hq.head = (hq.head + 1) % QUEUE_SIZE;
        hq.len--;
        pthread_cond_broadcast(&hq.changed);
        pthread_mutex_unlock(&hq.lock);

        bool same = PQbackendPID(j.c) == j.pid;
        const char *out = j.commit ? fu_commit(ledger, j.c, &j.id, 1) : "left open";
        pthread_mutex_lock(&hq.lock);
        hq.crossed += !same;
        if (j.commit && !strcmp(out, "ok"))
            hq.committed++;
        else if (j.commit)
            hq.commit_failed++;
        else
            hq.left_open++;
        in_use_remove(j.pid);
        pthread_mutex_unlock(&hq.lock);
        PQfinish(j.c); /* another thread opened it */
    }
}

/* Connections opened by 4 threads (each in a transaction with one write) are finished by 4
 * other threads, which commit 2 of 3 and leave the rest open: every committed write is there
 * once, no write of a transaction left open is (its rollback runs in the background), every
 * new holder starts outside a transaction, and no backend is in two threads' hands at once. */
static void test_handoff(void)
{
    pthread_t prod[PRODUCERS], cons[CONSUMERS];

    per_producer = (int)tu_scaled(150);
    ledger = fu_ledger_create(PRODUCERS * per_producer);
    hq.producers_left = PRODUCERS;
    for (long i = 0; i < CONSUMERS; i++)
        REQUIRE(pthread_create(&cons[i], NULL, consumer, NULL) == 0, "pthread_create");
    for (long i = 0; i < PRODUCERS; i++)
        REQUIRE(pthread_create(&prod[i], NULL, producer, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(prod[i], NULL);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(cons[i], NULL);
    printf("handoff: %d committed, %d left open, %d commits failed, %d failed, %d crossed, %d not idle\n",
           hq.committed, hq.left_open, hq.commit_failed, hq.failed, hq.crossed, hq.not_idle);
    fu_note("handoff: %d committed, %d left open, %d commits failed, %d failed", hq.committed,
            hq.left_open, hq.commit_failed, hq.failed);
    CHECK(hq.failed == 0 && hq.commit_failed == 0, "handoff: %d connects/writes and %d commits failed",
          hq.failed, hq.commit_failed);
    CHECK(hq.crossed == 0, "handoff: %d times a backend was in two threads' hands", hq.crossed);
    CHECK(hq.not_idle == 0, "handoff: %d connects started inside a transaction", hq.not_idle);
    fu_ledger_verify(ledger, 0, "handoff");
    fu_ledger_drop(ledger);
}

/* ---- signals ------------------------------------------------------------------------------- */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* SIGALRM every 1 ms, handler installed without SA_RESTART, while the app churns
 * connect/write/finish for 1.5 s (every 4th cycle finishing inside a transaction): no connect or write
 * fails where plain libpq's do not, and the ledger is exact. */
static void test_signals(void)
{
    struct sigaction sa = { .sa_handler = on_alarm };
    struct itimerval it = { { 0, 1000 }, { 0, 1000 } }, off = { { 0, 0 }, { 0, 0 } };
    int n = 0, max = 20000, connect_failed = 0, write_failed = 0;
    double until = fu_now() + 1.5; /* plain libpq's slow connects (SSL) get as much time */

    ledger = fu_ledger_create(max);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
    REQUIRE(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
    REQUIRE(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer: %s", strerror(errno));
    for (int i = 0; i < max && (i < 20 || fu_now() < until); i++, n++) {
        PGconn *c = PQconnectdb(key);
        if (PQstatus(c) != CONNECTION_OK) {
            connect_failed++;
            fprintf(stderr, "cycle %d: connect: %s", i, PQerrorMessage(c));
        } else if (i % 4 == 3) {
            if (strcmp(fu_exec(c, "BEGIN"), "ok") ||
                strcmp(fu_write_in_txn(ledger, c, i, user, app), "ok"))
                write_failed++;
        } else if (fu_write(ledger, c, i, user, app) != FU_OK) {
            write_failed++;
            fprintf(stderr, "cycle %d: write: %s", i, PQerrorMessage(c));
        }
        PQfinish(c);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    printf("signals: %d cycles, %d alarms, %d connects and %d writes failed\n", n, (int)alarms,
           connect_failed, write_failed);
    fu_note("signals: %d connects failed, %d writes failed", connect_failed, write_failed);
    /* valgrind delivers the timer's signals less often */
    CHECK(alarms > (tu_scale() < 1 ? 100 : 500), "only %d alarms arrived", (int)alarms);
    CHECK(connect_failed == 0 && write_failed == 0, "with SIGALRM every 1 ms: %d connects and %d "
          "writes failed", connect_failed, write_failed);
    fu_ledger_verify(ledger, 0, "signals");
    fu_ledger_drop(ledger);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";
    char extra[256];

    fu_init(argc, argv);
    tu_observer();
    app = tu_app_name();
    user = argc > 3 ? argv[3] : getenv("PGUSER") ? getenv("PGUSER") : "postgres";
    snprintf(extra, sizeof extra, "%s %s", FU_SYNC_COMMIT, argc > 2 ? argv[2] : "");
    key = tu_conninfo(extra);
    cycles = (int)tu_scaled(25);
    printf("test_fault_concurrency %s as %s\n", which, app);
    if (!strcmp(which, "prefork"))
        test_prefork(false);
    else if (!strcmp(which, "prefork-threaded")) {
        /* Not under a sanitizer: there a worker forked while the parent's other thread is
         * inside malloc can hang in the sanitizer runtime's allocator lock (gcc 12's ASan and
         * TSan do not take it across fork; seen in about one run in three, workers stuck in
         * __sanitizer::SizeClassAllocator64::GetFromAllocator under libpq's own malloc, with
         * pqdedup and with plain libpq alike), which says nothing about pqdedup. */
        if (getenv("PQD_TEST_SANITIZER") != NULL) {
            printf("test_fault_concurrency: prefork-threaded skipped under a sanitizer (its allocator "
                   "is not fork-safe beside a busy thread)\n");
            return 77;
        }
        test_prefork(true);
    }
    else if (!strcmp(which, "handoff"))
        test_handoff();
    else if (!strcmp(which, "signals"))
        test_signals();
    else {
        fprintf(stderr, "usage: test_fault_concurrency prefork | prefork-threaded | handoff | signals [EXTRA [USER]]\n");
        return 1;
    }
    return fu_finish(false);
}

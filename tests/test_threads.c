/* test_threads.c: many threads connect, query and finish with one key at once; no session is ever handed to two of them. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_threads churn [--threads N] [--cycles N]
 *        test_threads handoff [--producers N] [--consumers N] [--cycles N]
 *
 * Both modes keep a table of the backends and PGconn handles currently "in use" by the
 * program: a connection enters it right after connect (as soon as its backend pid is known)
 * and leaves it just before PQfinish. Finding a pid or a handle already in the table means
 * pqdedup handed one session to two users at once: a failure. Registered with
 * PQDEDUP_UNBIND_AFTER=1h: a handle is idle while it is in the table (between its queries, in
 * the hand-off queue), and an idle handle's server connection may rightly move to another
 * connect once it has been idle PQDEDUP_UNBIND_AFTER (10ms by default).
 */

#define MAX_IN_USE 256  /* handles in flight at once: threads + queue */
#define MAX_SEEN 4096   /* distinct backends remembered */

/* The in-use table and the set of every backend pid seen, under one mutex. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static int in_use_pid[MAX_IN_USE];
static PGconn *in_use_conn[MAX_IN_USE];
static int seen_pid[MAX_SEEN];
static int nseen;
static long overlaps; /* times a pid or handle was found in use by someone else */

/* Marks (pid, conn) in use. Returns 0, or -1 (and counts an overlap) when either is
 * already in use. */
static int mark_in_use(int pid, PGconn *conn)
{
    int free_slot = -1, clash = 0, i;

    pthread_mutex_lock(&table_lock);
    for (i = 0; i < MAX_IN_USE; i++) {
        if (in_use_pid[i] == 0) {
            if (free_slot < 0)
                free_slot = i;
            continue;
        }
        if (in_use_pid[i] == pid || in_use_conn[i] == conn)
            clash = 1;
    }
    for (i = 0; i < nseen && seen_pid[i] != pid; i++)
        ;
    if (i == nseen && nseen < MAX_SEEN)
        seen_pid[nseen++] = pid;
    if (clash)
        overlaps++;
    else if (free_slot >= 0) {
        in_use_pid[free_slot] = pid;
        in_use_conn[free_slot] = conn;
    }
    pthread_mutex_unlock(&table_lock);
    CHECK(!clash, "backend %d (handle %p) handed out while another user still had it", pid,
          (void *)conn);
    CHECK(clash || free_slot >= 0, "in-use table full");
    return clash ? -1 : 0;
}

/* Removes (pid, conn) from the in-use table (no-op if absent). */
static void mark_free(int pid, PGconn *conn)
{
    pthread_mutex_lock(&table_lock);
    for (int i = 0; i < MAX_IN_USE; i++)
        if (in_use_pid[i] == pid && in_use_conn[i] == conn) {
            in_use_pid[i] = 0;
            in_use_conn[i] = NULL;
            break;
        }
    pthread_mutex_unlock(&table_lock);
}

static long cycles_per_thread = 2000;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long ok_cycles, failed_cycles;

/* Counts one cycle; returns the number of failed cycles so far. */
static long count_cycle(int ok)
{
    long failed;

    pthread_mutex_lock(&count_lock);
    if (ok)
        ok_cycles++;
    else
        failed_cycles++;
    failed = failed_cycles;
    pthread_mutex_unlock(&count_lock);
    return failed;
}

/* Connects with the test's key and returns the handle and its backend pid (-1 on error). */
static PGconn *connect_one(int *pid, const char *who, long cycle)
{
    PGconn *c = PQconnectdb(tu_conninfo(""));

    *pid = -1;
    if (!CHECK(PQstatus(c) == CONNECTION_OK, "%s cycle %ld: connect: %s", who, cycle,
               PQerrorMessage(c)))
        return c;
    *pid = tu_backend_pid(c);
    CHECK(*pid > 0, "%s cycle %ld: SELECT pg_backend_pid(): %s", who, cycle, PQerrorMessage(c));
    return c;
}

/* One churn thread: connect / pg_backend_pid() / finish, many times. While it holds the
 * connection it asks for the pid a second time: another thread using the same session
 * meanwhile would show up in the in-use table (and could break the protocol). */
static void *churn_thread(void *arg)
{
    char who[32];

    snprintf(who, sizeof who, "thread %d", (int)(long)arg);
    for (long i = 0; i < cycles_per_thread; i++) {
        int pid, again, ok = 0;
        PGconn *c = connect_one(&pid, who, i);

        if (pid > 0 && mark_in_use(pid, c) == 0) {
            again = tu_backend_pid(c);
            ok = CHECK(again == pid, "%s cycle %ld: backend pid changed from %d to %d while held",
                       who, i, pid, again);
            mark_free(pid, c);
        }
        PQfinish(c);
        if (count_cycle(ok) > 20)
            break; /* the checks above said why; do not flood the log */
    }
    return NULL;
}

/* PQDEDUP_KEEP_PER_KEY as the library reads it (default 16): how many idle spares may exist. */
static long keep_per_key(void)
{
    const char *s = getenv("PQDEDUP_KEEP_PER_KEY");

    return s && *s ? strtol(s, NULL, 10) : 16;
}

/* Threads connect, query and finish the same key at once: no errors, no session used by two
 * threads at once, and the backends are reused: at most one per thread plus the kept spares
 * ever exist (a connect opens a new one only when no kept one is free), far below the number
 * of connects (16000 without pqdedup). */
static void test_churn(int nthreads)
{
    pthread_t th[64];
    long left, bound = nthreads + keep_per_key();

    printf("churn: %d threads x %ld cycles as %s\n", nthreads, cycles_per_thread, tu_app_name());
    for (long t = 0; t < nthreads; t++)
        REQUIRE(pthread_create(&th[t], NULL, churn_thread, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);

    printf("churn: %ld cycles worked, %ld failed, %d distinct backends, %ld overlaps\n", ok_cycles,
           failed_cycles, nseen, overlaps);
    CHECK(failed_cycles == 0 && ok_cycles == nthreads * cycles_per_thread,
          "%ld of %ld cycles failed", nthreads * cycles_per_thread - ok_cycles,
          nthreads * cycles_per_thread);
    CHECK(overlaps == 0, "%ld times a backend was handed to a second thread while in use", overlaps);
    CHECK(nseen >= 1 && nseen <= bound, "%d distinct backends served %d threads, expected at most %ld",
          nseen, nthreads, bound);
    left = tu_count_backends(tu_app_name());
    CHECK(left >= 1 && left <= bound, "%ld backends left open, expected 1..%ld (the kept ones)",
          left, bound);
}

/* ---- hand-off: finished by a thread that did not open it ---------------------------------- */

#define QUEUE_CAP 8

struct item {
    PGconn *conn;
    int pid;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct item items[QUEUE_CAP];
    int head, len, producers_left;
} queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
           {{0, 0}}, 0, 0, 0};

static void queue_put(struct item it)
{
    pthread_mutex_lock(&queue.lock);
    while (queue.len == QUEUE_CAP)
        pthread_cond_wait(&queue.not_full, &queue.lock);
    queue.items[(queue.head + queue.len) % QUEUE_CAP] = it;
    queue.len++;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
}

/* Returns 0 with an item, or -1 when every producer is done and the queue is empty. */
static int queue_get(struct item *it)
{
    pthread_mutex_lock(&queue.lock);
    while (queue.len == 0 && queue.producers_left > 0)
        pthread_cond_wait(&queue.not_empty, &queue.lock);
    if (queue.len == 0) {
        pthread_mutex_unlock(&queue.lock);
        return -1;
    }
    *it = queue.items[queue.head];
    queue.head = (queue.head + 1) % QUEUE_CAP;
    queue.len--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return 0;
}

/* Producer: connects, checks, marks in use and hands the connection to the queue. */
static void *producer_thread(void *arg)
{
    char who[32];

    snprintf(who, sizeof who, "producer %d", (int)(long)arg);
    for (long i = 0; i < cycles_per_thread; i++) {
        int pid;
        PGconn *c = connect_one(&pid, who, i);

        if (pid > 0 && mark_in_use(pid, c) == 0) {
            queue_put((struct item){c, pid});
        } else {
            count_cycle(0);
            PQfinish(c);
        }
    }
    pthread_mutex_lock(&queue.lock);
    queue.producers_left--;
    pthread_cond_broadcast(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
    return NULL;
}

/* Consumer: uses a connection another thread opened (same backend), then finishes it. */
static void *consumer_thread(void *arg)
{
    struct item it;
    int n = (int)(long)arg;

    while (queue_get(&it) == 0) {
        int pid = tu_backend_pid(it.conn);
        int ok = CHECK(pid == it.pid, "consumer %d: the handed-over connection answers as backend "
                                      "%d, opened as %d: %s", n, pid, it.pid,
                       PQerrorMessage(it.conn));
        mark_free(it.pid, it.conn);
        PQfinish(it.conn);
        count_cycle(ok);
    }
    return NULL;
}

/* Connections opened by one set of threads and finished by another (through a queue) work
 * in the finishing thread, are never in two hands at once, and are reused: the number of
 * backends stays within what can be in flight (producers + queue + consumers) plus the kept
 * spares, far below the number of connects. */
static void test_handoff(int nproducers, int nconsumers)
{
    pthread_t th[128];
    long total = nproducers * cycles_per_thread;
    long bound = nproducers + QUEUE_CAP + nconsumers + keep_per_key();
    long left;
    int n = 0;

    printf("handoff: %d producers x %ld connects, %d consumers, as %s\n", nproducers,
           cycles_per_thread, nconsumers, tu_app_name());
    queue.producers_left = nproducers;
    for (long t = 0; t < nproducers; t++)
        REQUIRE(pthread_create(&th[n++], NULL, producer_thread, (void *)t) == 0, "pthread_create");
    for (long t = 0; t < nconsumers; t++)
        REQUIRE(pthread_create(&th[n++], NULL, consumer_thread, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < n; t++)
        pthread_join(th[t], NULL);

    printf("handoff: %ld cycles worked, %ld failed, %d distinct backends, %ld overlaps\n",
           ok_cycles, failed_cycles, nseen, overlaps);
    CHECK(failed_cycles == 0 && ok_cycles == total, "%ld of %ld hand-offs failed",
          total - ok_cycles, total);
    CHECK(overlaps == 0, "%ld times a backend was handed out while in use", overlaps);
    CHECK(nseen >= 1 && nseen <= bound, "%d distinct backends for %ld connects, expected at most %ld",
          nseen, total, bound);
    left = tu_count_backends(tu_app_name());
    CHECK(left >= 1 && left <= bound, "%ld backends left open, expected 1..%ld", left, bound);
}

/* Parses a count in [1, max]; exits 1 on a bad one. */
static long parse_count(const char *opt, const char *s, long max)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;

    if (!s || *end || v <= 0 || v > max) {
        fprintf(stderr, "test_threads: %s needs a number from 1 to %ld\n", opt, max);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv)
{
    long threads = 8, producers = 4, consumers = 4;

    if (argc < 2 || (strcmp(argv[1], "churn") && strcmp(argv[1], "handoff"))) {
        fprintf(stderr, "usage: test_threads churn|handoff [options]\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(argv[i], "--threads"))
            threads = parse_count(argv[i], v, 64);
        else if (!strcmp(argv[i], "--producers"))
            producers = parse_count(argv[i], v, 32);
        else if (!strcmp(argv[i], "--consumers"))
            consumers = parse_count(argv[i], v, 32);
        else if (!strcmp(argv[i], "--cycles"))
            cycles_per_thread = parse_count(argv[i], v, 1000000);
        else {
            fprintf(stderr, "test_threads: unknown argument %s\n", argv[i]);
            return 1;
        }
        i++;
    }
    cycles_per_thread = tu_scaled(cycles_per_thread);
    tu_observer(); /* fails now if the server is not there */
    if (!strcmp(argv[1], "churn"))
        test_churn((int)threads);
    else
        test_handoff((int)producers, (int)consumers);
    return tu_finish();
}

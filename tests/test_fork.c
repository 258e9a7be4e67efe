/* test_fork.c: a forked child never gets its parent's backends, and the parent's held and kept connections survive whatever the child does. */
#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: test_fork CASE [--conninfo EXTRA]
 *   inherit    the child connects, finishes its own and the inherited held connection, exit(0)
 *   no-finish  the child connects and _exit()s without finishing anything
 *   prefork    4 workers each churn 200 cycles (scaled) and exit
 *   prefork-tight  4 workers churn as a role limited to 4 connections, the last one started
 *              late: every connect works, each worker on one backend
 *   threaded   fork while other threads churn: the child's connect must not deadlock
 * EXTRA is appended to every conninfo (e.g. "host=127.0.0.1 sslmode=require").
 *
 * The child must not use testutil's observer or tu_finish (the observer is the parent's
 * connection): it checks with CCHECK and reports through its exit status.
 */

static const char *extra = "";
/* tu_conninfo(extra), made once before any fork or thread: a child must not call into
 * testutil's locks, which another thread of the parent may have held at the fork. */
static const char *conninfo;

/* Failures seen in this (child) process. */
static int child_failures;

/* CHECK for a child process: prints "child <pid>: FAIL ..." and counts. */
#define CCHECK(cond, ...) child_check(!!(cond), #cond, __LINE__, __VA_ARGS__)

__attribute__((format(printf, 4, 5))) static int child_check(int ok, const char *expr, int line,
                                                             const char *fmt, ...)
{
    va_list ap;

    if (ok)
        return 1;
    child_failures++;
    fprintf(stderr, "test_fork.c:%d: child %ld: FAIL: (%s) ", line, (long)getpid(), expr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

/* Connects with the test's key and returns the backend pid through *pid (-1 on error). */
static PGconn *connect_pid(int *pid)
{
    PGconn *c = PQconnectdb(conninfo);

    *pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    return c;
}

/* Waits for child `pid`; returns its exit status, or 128+signal, or -1 on error. Gives up
 * (killing it) after timeout_s seconds. */
static int wait_child(pid_t pid, int timeout_s)
{
    int status;
    struct timespec pause = {0, 20 * 1000 * 1000};

    for (long waited_ms = 0;; waited_ms += 20) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (waited_ms >= timeout_s * 1000L) {
            fprintf(stderr, "test_fork: child %ld still running after %d s; killing it\n",
                    (long)pid, timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        nanosleep(&pause, NULL);
    }
}

/* The parent's setup: one held connection and one kept one (opened, queried, finished). */
static PGconn *parent_setup(int *held_pid, int *kept_pid)
{
    PGconn *held, *k;

    held = connect_pid(held_pid);
    REQUIRE(*held_pid > 0, "parent: connect: %s", PQerrorMessage(held));
    k = connect_pid(kept_pid);
    REQUIRE(*kept_pid > 0, "parent: second connect: %s", PQerrorMessage(k));
    REQUIRE(*kept_pid != *held_pid, "two held connections share backend %d", *held_pid);
    PQfinish(k); /* now kept by pqdedup */
    return held;
}

/* After the child is gone: the parent's held connection still answers as the same backend,
 * and its kept one is handed back (same backend as before the fork) and works. */
static void parent_check_survival(PGconn *held, int held_pid, int kept_pid, const char *after)
{
    int pid = tu_backend_pid(held), again;
    PGconn *c;

    CHECK(pid == held_pid, "after %s, the parent's held connection answers as %d, expected "
                           "backend %d: %s", after, pid, held_pid, PQerrorMessage(held));
    CHECK(PQstatus(held) == CONNECTION_OK, "after %s, the parent's held connection is broken",
          after);
    c = connect_pid(&again);
    CHECK(again == kept_pid, "after %s, the parent's next connect got backend %d, expected its "
                             "kept backend %d: %s", after, again, kept_pid, PQerrorMessage(c));
    CHECK(tu_backend_pid(c) == kept_pid, "the parent's kept connection does not work after %s: %s",
          after, PQerrorMessage(c));
    PQfinish(c);
}

/* Case inherit: the child connects 6 times with the parent's key (its own backends, never one
 * of the parent's; reused: at most 2, one and another if a reset did not answer in time), finishes its connections AND the
 * inherited held one (which with plain libpq would send Terminate on the parent's socket),
 * then exit(0) runs the atexit handlers (pqdedup closes what the child kept). The parent's
 * held and kept connections survive all of it. */
static void test_inherit(void)
{
    int held_pid, kept_pid, rc;
    PGconn *held = parent_setup(&held_pid, &kept_pid);
    pid_t child;

    fflush(NULL);
    child = fork();
    REQUIRE(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        int p1, p2, spare = -1;
        PGconn *c1, *c2;

        alarm(60);
        c1 = connect_pid(&p1);
        if (CCHECK(p1 > 0, "connect: %s", PQerrorMessage(c1))) {
            CCHECK(p1 != held_pid && p1 != kept_pid,
                   "the child got backend %d; the parent's are held %d, kept %d", p1, held_pid,
                   kept_pid);
        }
        PQfinish(c1);
        for (int i = 0; i < 5; i++) {
            c2 = connect_pid(&p2);
            CCHECK(p2 > 0 && p2 != held_pid && p2 != kept_pid,
                   "the child's connect %d got backend %d (parent's: %d, %d): %s", i + 2, p2,
                   held_pid, kept_pid, PQerrorMessage(c2));
            if (p2 != p1)
                spare = spare < 0 ? p2 : spare;
            CCHECK(p2 == p1 || p2 == spare, "the child's connect %d got a third backend %d (its "
                   "own: %d, %d)", i + 2, p2, p1, spare);
            PQfinish(c2);
        }
        PQfinish(held); /* inherited from the parent */
        exit(child_failures ? 3 : 0);
    }
    rc = wait_child(child, 60);
    CHECK(rc == 0, "the child exited with %d (see its FAIL lines above)", rc);
    parent_check_survival(held, held_pid, kept_pid, "a child that finished everything");
    PQfinish(held);
}

/* Case no-finish: the child connects and leaves with _exit() without finishing anything
 * (no atexit handler runs): the parent's connections are unharmed. */
static void test_no_finish(void)
{
    int held_pid, kept_pid, rc;
    PGconn *held = parent_setup(&held_pid, &kept_pid);
    pid_t child;

    fflush(NULL);
    child = fork();
    REQUIRE(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        int p1;
        PGconn *c1;

        alarm(60);
        c1 = connect_pid(&p1);
        CCHECK(p1 > 0 && p1 != held_pid && p1 != kept_pid,
               "the child got backend %d (parent's: held %d, kept %d): %s", p1, held_pid, kept_pid,
               PQerrorMessage(c1));
        _exit(child_failures ? 3 : 0);
    }
    rc = wait_child(child, 60);
    CHECK(rc == 0, "the child exited with %d (see its FAIL lines above)", rc);
    parent_check_survival(held, held_pid, kept_pid, "a child that _exit()ed");
    PQfinish(held);
}

/* Results of one prefork worker, in memory shared with the parent. */
#define WORKER_PIDS 8
struct worker_result {
    long ok_cycles;
    int ndistinct;
    int pids[WORKER_PIDS];
};

/* Case prefork: the parent (holding one connection and keeping another) forks 4 workers that
 * each churn connect/query/finish and exit(0). Each worker succeeds on every cycle with its own
 * backend(s): never one of the parent's or another worker's, reused across its cycles. The
 * parent's connections survive. */
static void test_prefork(void)
{
    enum { NWORKERS = 4 };
    int held_pid, kept_pid;
    long cycles = tu_scaled(200);
    PGconn *held = parent_setup(&held_pid, &kept_pid);
    struct worker_result *res;
    pid_t kids[NWORKERS];

    res = mmap(NULL, sizeof *res * NWORKERS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
               -1, 0);
    REQUIRE(res != MAP_FAILED, "mmap: %s", strerror(errno));
    memset(res, 0, sizeof *res * NWORKERS);
    fflush(NULL);
    for (int w = 0; w < NWORKERS; w++) {
        kids[w] = fork();
        REQUIRE(kids[w] >= 0, "fork: %s", strerror(errno));
        if (kids[w] == 0) {
            struct worker_result *r = &res[w];

            alarm(120);
            for (long i = 0; i < cycles; i++) {
                int pid, k;
                PGconn *c = connect_pid(&pid);

                if (CCHECK(pid > 0, "worker %d cycle %ld: %s", w, i, PQerrorMessage(c))) {
                    r->ok_cycles++;
                    for (k = 0; k < r->ndistinct && r->pids[k] != pid; k++)
                        ;
                    if (k == r->ndistinct && k < WORKER_PIDS)
                        r->pids[r->ndistinct++] = pid;
                }
                PQfinish(c);
            }
            exit(child_failures ? 3 : 0);
        }
    }
    for (int w = 0; w < NWORKERS; w++) {
        int rc = wait_child(kids[w], 120);

        CHECK(rc == 0, "worker %d exited with %d", w, rc);
        CHECK(res[w].ok_cycles == cycles, "worker %d: %ld of %ld cycles worked", w,
              res[w].ok_cycles, cycles);
        CHECK(res[w].ndistinct >= 1 && res[w].ndistinct <= 2,
              "worker %d used %d backends for %ld sequential cycles, expected 1 (2 if a reset stalled)",
              w, res[w].ndistinct, cycles);
        for (int k = 0; k < res[w].ndistinct; k++) {
            int p = res[w].pids[k];

            CHECK(p != held_pid && p != kept_pid, "worker %d got the parent's backend %d", w, p);
            for (int o = 0; o < w; o++)
                for (int j = 0; j < res[o].ndistinct; j++)
                    CHECK(res[o].pids[j] != p, "workers %d and %d both used backend %d", o, w, p);
        }
    }
    printf("prefork: %d workers x %ld cycles; parent held %d kept %d; workers' first backends "
           "%d %d %d %d\n", NWORKERS, cycles, held_pid, kept_pid, res[0].pids[0], res[1].pids[0],
           res[2].pids[0], res[3].pids[0]);
    munmap(res, sizeof *res * NWORKERS);
    parent_check_survival(held, held_pid, kept_pid, "4 worker processes");
    PQfinish(held);
}

/* Shared by the workers of case prefork-tight and their parent. */
struct tight_board {
    atomic_long cycles[WORKER_PIDS]; /* each worker's successful cycles so far */
    atomic_int stop;                 /* set by the parent: the early workers stop churning */
    struct worker_result res[WORKER_PIDS];
};

/* One prefork-tight worker: connect as the limited role, ask the backend's pid, finish, as
 * fast as it can, until it has done `cycles` (cycles > 0) or the board says stop. Exits 0
 * when every connect worked. */
static void tight_worker(struct tight_board *board, int w, const char *role_conninfo, long cycles)
{
    struct worker_result *r = &board->res[w];

    /* Gone with the parent (ctest's timeout, a REQUIRE), and within ctest's limit anyway. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        exit(4);
    alarm(100);
    for (long i = 0; cycles > 0 ? i < cycles : !atomic_load(&board->stop); i++) {
        PGconn *c = PQconnectdb(role_conninfo);
        int pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;

        if (CCHECK(pid > 0, "worker %d cycle %ld: %s", w, i, PQerrorMessage(c))) {
            int k;

            r->ok_cycles++;
            atomic_fetch_add(&board->cycles[w], 1);
            for (k = 0; k < r->ndistinct && r->pids[k] != pid; k++)
                ;
            if (k == r->ndistinct && k < WORKER_PIDS)
                r->pids[r->ndistinct++] = pid;
        }
        PQfinish(c);
        if (child_failures > 0)
            break;
    }
    exit(child_failures ? 3 : 0);
}

/* Case prefork-tight: as many single-threaded workers as the role has connection slots, each
 * churning connect/query/finish with no pause, the last one started only once the others have
 * churned a while. Plain libpq serves every connect (no worker ever holds two connections);
 * so must pqdedup: a worker keeps one server connection, and never opens a second one while
 * its own kept one's reset is in flight, which would take the late worker's slot for good. */
static void test_prefork_tight(void)
{
    enum { NWORKERS = 4 };
    long warmup = tu_scaled(300), late_cycles = tu_scaled(200);
    char role_extra[256];
    const char *role_conninfo;
    pid_t kids[NWORKERS];
    PGconn *admin = PQconnectdb(conninfo);

    REQUIRE(PQstatus(admin) == CONNECTION_OK, "connect: %s", PQerrorMessage(admin));
    REQUIRE(tu_exec_ok(admin, "DROP ROLE IF EXISTS pqd_tight"), "DROP ROLE: %s", PQerrorMessage(admin));
    REQUIRE(tu_exec_ok(admin, "CREATE ROLE pqd_tight LOGIN PASSWORD 'tight_pw' CONNECTION LIMIT 4"),
            "CREATE ROLE: %s", PQerrorMessage(admin));
    snprintf(role_extra, sizeof role_extra, "host=%s user=pqd_tight password=tight_pw dbname=postgres",
             tu_tcp_host());
    role_conninfo = tu_conninfo(role_extra);

    struct tight_board *board = mmap(NULL, sizeof *board, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(board != MAP_FAILED, "mmap: %s", strerror(errno));
    memset(board, 0, sizeof *board);
    fflush(NULL);
    for (int w = 0; w < NWORKERS - 1; w++) {
        kids[w] = fork();
        REQUIRE(kids[w] >= 0, "fork: %s", strerror(errno));
        if (kids[w] == 0)
            tight_worker(board, w, role_conninfo, 0);
    }
    /* The early workers have settled: each has churned `warmup` cycles (or one has ended:
     * looked at without reaping it, so wait_child still gets its status). */
    for (;;) {
        int settled = 0, gone = 0;

        for (int w = 0; w < NWORKERS - 1; w++) {
            siginfo_t info = {0};

            settled += atomic_load(&board->cycles[w]) >= warmup;
            gone += waitid(P_PID, (id_t)kids[w], &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
                    info.si_pid != 0;
        }
        if (settled == NWORKERS - 1 || gone > 0)
            break;
        tu_sleep_ms(10);
    }
    kids[NWORKERS - 1] = fork();
    REQUIRE(kids[NWORKERS - 1] >= 0, "fork: %s", strerror(errno));
    if (kids[NWORKERS - 1] == 0)
        tight_worker(board, NWORKERS - 1, role_conninfo, late_cycles);
    int late_rc = wait_child(kids[NWORKERS - 1], 90);
    atomic_store(&board->stop, 1);
    CHECK(late_rc == 0, "the late worker exited with %d: its connects failed while the role's %d "
          "slots were enough for one connection per worker", late_rc, NWORKERS);
    for (int w = 0; w < NWORKERS - 1; w++) {
        int rc = wait_child(kids[w], 30);

        CHECK(rc == 0, "worker %d exited with %d", w, rc);
    }
    for (int w = 0; w < NWORKERS; w++)
        CHECK(board->res[w].ndistinct == 1,
              "worker %d used %d backends for %ld sequential cycles, expected 1", w,
              board->res[w].ndistinct, board->res[w].ok_cycles);
    printf("prefork-tight: %d workers on a role limited to %d connections; cycles %ld %ld %ld, "
           "then the late one %ld\n", NWORKERS, NWORKERS, board->res[0].ok_cycles,
           board->res[1].ok_cycles, board->res[2].ok_cycles, board->res[3].ok_cycles);
    munmap(board, sizeof *board);
    tu_exec_ok(admin, "DROP ROLE IF EXISTS pqd_tight");
    PQfinish(admin);
}

static atomic_int stop_churn;
static atomic_long churn_cycles, churn_failures;

/* A parent thread that connects, queries and finishes until told to stop. */
static void *churn_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        int pid;
        PGconn *c = connect_pid(&pid);

        if (pid > 0)
            atomic_fetch_add(&churn_cycles, 1);
        else if (atomic_fetch_add(&churn_failures, 1) < 5)
            CHECK(0, "churn thread: %s", PQerrorMessage(c));
        PQfinish(c);
    }
    return NULL;
}

/* A parent thread whose connects libpq rejects without any network traffic (an unknown
 * keyword): pqdedup still works out a key for each, so this thread is inside pqdedup's key code
 * a good part of its time, which makes a fork land there often. libpq's error must come back. */
static void *bad_connect_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        PGconn *c = PQconnectdb("pqdt_no_such_keyword=1");

        if (PQstatus(c) != CONNECTION_BAD || !strstr(PQerrorMessage(c), "pqdt_no_such_keyword")) {
            if (atomic_fetch_add(&churn_failures, 1) < 5)
                CHECK(0, "a connect with an unknown keyword did not fail as libpq says: %s",
                      PQerrorMessage(c));
        }
        PQfinish(c);
    }
    return NULL;
}

/* Case threaded: while other threads of the parent connect with the same key and with a bad
 * conninfo (taking pqdedup's locks all the time), the main thread forks many children; each
 * child connects, queries, finishes and _exit()s 0. A lock held across fork would leave the
 * child stuck in its connect: alarm() kills it and the parent sees SIGALRM. The other threads
 * never fail. */
static void test_threaded(void)
{
    enum { NTHREADS = 3 };
    long forks = tu_scaled(300), bad = 0;
    pthread_t th[NTHREADS];

    for (int t = 0; t < NTHREADS; t++)
        REQUIRE(pthread_create(&th[t], NULL, t < 2 ? bad_connect_thread : churn_thread, NULL) == 0,
                "pthread_create");
    for (long f = 0; f < forks; f++) {
        pid_t child;
        int rc;

        fflush(NULL);
        child = fork();
        REQUIRE(child >= 0, "fork: %s", strerror(errno));
        if (child == 0) {
            int p;
            PGconn *c;

            alarm(10);
            c = connect_pid(&p);
            CCHECK(p > 0, "child connect/query: %s", PQerrorMessage(c));
            PQfinish(c);
            /* _exit: memory that the parent's other threads were using at the fork is
             * unreachable here, and the leak checkers (LSan, valgrind) run by exit() would
             * report it. exit() in a child is covered by the inherit case. */
            _exit(child_failures ? 3 : 0);
        }
        rc = wait_child(child, 40);
        if (!CHECK(rc == 0, "fork %ld: the child exited with %d%s", f, rc,
                   rc == 128 + SIGALRM ? " (SIGALRM: stuck for 10 s, a lock held across fork?)"
                                       : "") &&
            ++bad >= 3)
            break;
    }
    atomic_store(&stop_churn, 1);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    printf("threaded: %ld forks, %ld churn cycles meanwhile, %ld churn failures\n", forks,
           atomic_load(&churn_cycles), atomic_load(&churn_failures));
    CHECK(atomic_load(&churn_failures) == 0, "%ld churn cycles failed",
          atomic_load(&churn_failures));
    CHECK(atomic_load(&churn_cycles) > 0, "the churn threads never completed a cycle");
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";

    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--conninfo") && i + 1 < argc)
            extra = argv[++i];
        else {
            fprintf(stderr, "test_fork: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    tu_observer(); /* fails now if the server is not there */
    conninfo = tu_conninfo(extra);
    printf("test_fork %s as %s, conninfo extra \"%s\"\n", which, tu_app_name(), extra);
    if (!strcmp(which, "inherit"))
        test_inherit();
    else if (!strcmp(which, "no-finish"))
        test_no_finish();
    else if (!strcmp(which, "prefork"))
        test_prefork();
    else if (!strcmp(which, "prefork-tight"))
        test_prefork_tight();
    else if (!strcmp(which, "threaded"))
        test_threaded();
    else {
        fprintf(stderr, "usage: test_fork inherit|no-finish|prefork|prefork-tight|threaded [--conninfo EXTRA]\n");
        return 1;
    }
    return tu_finish();
}

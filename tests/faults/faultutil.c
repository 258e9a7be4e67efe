/* faultutil.c: helpers of the fault tests: a write ledger, a plain-libpq reference run, server control, a freezable TCP proxy. */
#define _GNU_SOURCE
#include "faultutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char **fu_argv;
static const char *fu_reference_out; /* set in the reference run */

/* ---- transcript ------------------------------------------------------------------------ */

static pthread_mutex_t fu_lock = PTHREAD_MUTEX_INITIALIZER;
static char **transcript;
static bool *transcript_idle_held; /* the line may say "ok" where plain libpq's says "lost" */
static int transcript_len, transcript_cap;

void fu_init(int argc, char **argv)
{
    (void)argc;
    fu_argv = argv;
    fu_reference_out = getenv("PQD_FAULT_REFERENCE_OUT");
    if (fu_reference_out && !*fu_reference_out)
        fu_reference_out = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
}

bool fu_is_reference(void)
{
    return fu_reference_out != NULL;
}

static void note_line(const char *line, bool idle_held)
{
    pthread_mutex_lock(&fu_lock);
    if (transcript_len == transcript_cap) {
        transcript_cap = transcript_cap ? 2 * transcript_cap : 64;
        transcript = realloc(transcript, (size_t)transcript_cap * sizeof *transcript);
        transcript_idle_held = realloc(transcript_idle_held, (size_t)transcript_cap * sizeof *transcript_idle_held);
        REQUIRE(transcript != NULL && transcript_idle_held != NULL, "out of memory");
    }
    transcript[transcript_len] = strdup(line);
    REQUIRE(transcript[transcript_len] != NULL, "out of memory");
    transcript_idle_held[transcript_len] = idle_held;
    transcript_len++;
    pthread_mutex_unlock(&fu_lock);
    printf("%s  | %s\n", fu_is_reference() ? "plain  " : "pqdedup", line);
}

void fu_note(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    note_line(line, false);
}

void fu_note_idle_held(const char *what, const char *outcome)
{
    char line[1024];

    snprintf(line, sizeof line, "%s: %s", what, outcome);
    note_line(line, true);
}

/* True when plain's line and ours differ only as fu_note_idle_held allows: "<what>: lost"
 * under plain libpq, "<what>: ok" under pqdedup. */
static bool idle_held_continued(const char *plain, const char *ours)
{
    size_t n = strlen(ours);

    if (n < 4 || strcmp(ours + n - 4, ": ok"))
        return false;
    return strlen(plain) == n + 2 && !strncmp(plain, ours, n - 2) && !strcmp(plain + n - 2, "lost");
}

/* The first line of msg with every run of digits replaced by '#'. */
static void normalize(const char *msg, char *out, size_t size)
{
    size_t o = 0;

    for (const char *p = msg; *p && *p != '\n' && o + 1 < size; p++) {
        if (isdigit((unsigned char)*p)) {
            if (o == 0 || out[o - 1] != '#')
                out[o++] = '#';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

const char *fu_conn_outcome(PGconn *c)
{
    static __thread char buf[600];
    char msg[512];

    if (c == NULL)
        return "failed: out of memory";
    if (PQstatus(c) == CONNECTION_OK)
        return "ok";
    normalize(PQerrorMessage(c), msg, sizeof msg);
    snprintf(buf, sizeof buf, "failed: %s", msg);
    return buf;
}

static __thread const char *last_outcome = "";

const char *fu_last_outcome(void)
{
    return last_outcome;
}

/* Describes a result the app got on c (see fu_exec). */
static const char *res_outcome(PGconn *c, PGresult *res)
{
    static __thread char buf[64];
    ExecStatusType st = PQresultStatus(res);
    const char *state;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        return "ok";
    /* The connection is gone: libpq says so (CONNECTION_BAD), or made the error itself (no
     * SQLSTATE: "server closed the connection unexpectedly" leaves PQstatus at
     * CONNECTION_OK until the next call), or the server said FATAL/PANIC. */
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    if (PQstatus(c) != CONNECTION_OK || state == NULL ||
        (severity && (!strcmp(severity, "FATAL") || !strcmp(severity, "PANIC"))))
        return "lost";
    snprintf(buf, sizeof buf, "error %s", state);
    return buf;
}

const char *fu_exec(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    const char *out = res_outcome(c, res);

    PQclear(res);
    last_outcome = out;
    return out;
}

int fu_check_connect(PGconn *c, const char *user, const char *app, const char *what)
{
    char *who;
    bool right;
    int pid;

    fu_note("%s: connect: %s", what, fu_conn_outcome(c));
    if (PQstatus(c) != CONNECTION_OK)
        return -1;
    fu_note("%s: transaction status %s", what,
            PQtransactionStatus(c) == PQTRANS_IDLE ? "idle" : "NOT IDLE");
    CHECK(PQtransactionStatus(c) == PQTRANS_IDLE, "%s: a new connection is inside a transaction", what);
    who = tu_query_value(c, "SELECT current_user || '/' || current_setting('application_name') || '/' "
                            "|| pg_backend_pid()");
    pid = who ? atoi(strrchr(who, '/') + 1) : -1;
    if (who)
        *strrchr(who, '/') = '\0';
    right = who && !strncmp(who, user, strlen(user)) && who[strlen(user)] == '/' &&
            !strcmp(who + strlen(user) + 1, app);
    fu_note("%s: session %s", what, right ? "as asked" : "WRONG");
    CHECK(right, "%s: connected as %s/%s, the session is %s", what, user, app, who ? who : "(error)");
    CHECK(pid == PQbackendPID(c), "%s: the handle says backend %d, the server says %d", what,
          PQbackendPID(c), pid);
    free(who);
    return pid;
}

/* The environment without the preload and the sanitizer settings, for helper programs that
 * must run as they are (pg_ctl, python3); extra (may be NULL) is added. Built before forking. */
static char **plain_environ(const char *extra1, const char *extra2)
{
    int n = 0, k = 0;
    char **env;

    while (environ[n])
        n++;
    env = calloc((size_t)n + 3, sizeof *env);
    REQUIRE(env != NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *e = environ[i];
        if (!strncmp(e, "LD_PRELOAD=", 11) || !strncmp(e, "ASAN_OPTIONS=", 13) ||
            !strncmp(e, "TSAN_OPTIONS=", 13) || !strncmp(e, "LSAN_OPTIONS=", 13) ||
            !strncmp(e, "UBSAN_OPTIONS=", 14))
            continue;
        env[k++] = (char *)e;
    }
    if (extra1)
        env[k++] = (char *)extra1;
    if (extra2)
        env[k++] = (char *)extra2;
    env[k] = NULL;
    return env;
}

/* waitpid that ignores EINTR; returns the raw status, or -1. */
static int wait_status(pid_t pid)
{
    int status;
    pid_t r;

    do
        r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    return r == pid ? status : -1;
}

/* Runs this program again with PQDEDUP_DISABLE=1 and compares its transcript with ours. */
static void run_reference(void)
{
    char out[] = "/tmp/pqdt-fault-ref-XXXXXX";
    char envout[64], **env, *line = NULL;
    size_t cap = 0;
    int fd, status, n = 0;
    pid_t pid;
    FILE *f;

    fd = mkstemp(out);
    REQUIRE(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    snprintf(envout, sizeof envout, "PQD_FAULT_REFERENCE_OUT=%s", out);
    /* Keep the preload (and a sanitizer runtime first in it): the library must pass
     * everything through with PQDEDUP_DISABLE=1, as a user would run it. */
    {
        int m = 0, k = 0;
        while (environ[m])
            m++;
        env = calloc((size_t)m + 3, sizeof *env);
        REQUIRE(env != NULL, "out of memory");
        for (int i = 0; i < m; i++)
            if (strncmp(environ[i], "PQDEDUP_", 8) && strncmp(environ[i], "PQD_FAULT_", 10))
                env[k++] = environ[i];
        env[k++] = "PQDEDUP_DISABLE=1";
        env[k++] = envout;
        env[k] = NULL;
    }
    /* The program's own path: under valgrind, /proc/self/exe itself is valgrind's tool,
     * while readlink() on it tells the program (valgrind does not follow the exec). */
    char exe[4096];
    ssize_t exelen = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(exelen > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[exelen] = '\0';
    printf("---- reference run: the same program with PQDEDUP_DISABLE=1 (plain libpq) ----\n");
    fflush(NULL);
    REQUIRE(posix_spawn(&pid, exe, NULL, NULL, fu_argv, env) == 0,
            "posix_spawn of the reference run: %s", strerror(errno));
    free(env);
    status = wait_status(pid);
    printf("---- reference run ended (status %d) ----\n", status);
    CHECK(status == 0, "the reference run (plain libpq) failed its own checks (status %d): the "
                       "test expects something plain libpq does not do", status);

    f = fopen(out, "r");
    REQUIRE(f != NULL, "reading the reference transcript %s: %s", out, strerror(errno));
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (n < transcript_len && transcript_idle_held[n] && idle_held_continued(line, transcript[n]))
            printf("transcript line %d: plain libpq saw \"%s\", under pqdedup \"%s\": accepted (a clean, "
                   "idle held connection continued on a new server connection)\n", n + 1, line, transcript[n]);
        else if (n < transcript_len)
            CHECK(!strcmp(line, transcript[n]),
                  "transcript line %d: plain libpq saw \"%s\", under pqdedup the app saw \"%s\"",
                  n + 1, line, transcript[n]);
        else
            CHECK(0, "transcript line %d: plain libpq saw \"%s\", pqdedup's run had no such step",
                  n + 1, line);
        n++;
    }
    free(line);
    fclose(f);
    unlink(out);
    for (int i = n; i < transcript_len; i++)
        CHECK(0, "transcript line %d: under pqdedup \"%s\", the plain libpq run had no such step",
              i + 1, transcript[i]);
    CHECK(n > 0, "the reference run wrote no transcript");
    printf("transcripts compared: %d lines (plain) vs %d lines (pqdedup)\n", n, transcript_len);
}

int fu_finish(bool skip_reference)
{
    if (fu_is_reference()) {
        FILE *f = fopen(fu_reference_out, "w");
        REQUIRE(f != NULL, "writing %s: %s", fu_reference_out, strerror(errno));
        for (int i = 0; i < transcript_len; i++)
            fprintf(f, "%s\n", transcript[i]);
        fclose(f);
    } else if (!skip_reference) {
        run_reference();
    }
    for (int i = 0; i < transcript_len; i++)
        free(transcript[i]);
    free(transcript);
    free(transcript_idle_held);
    transcript = NULL;
    transcript_idle_held = NULL;
    transcript_len = transcript_cap = 0;
    return tu_finish();
}

/* ---- time ------------------------------------------------------------------------------ */

double fu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the server -------------------------------------------------------------------------- */

int fu_pg_ctl(const char *arg, ...)
{
    const char *harness = getenv("PQD_TEST_HARNESS");
    char script[4096];
    const char *argv[32];
    char **env;
    int argc = 0, status;
    va_list ap;
    pid_t pid;

    REQUIRE(harness && getenv("PQD_TEST_PGDATA"),
            "PQD_TEST_HARNESS and PQD_TEST_PGDATA must be set (source the harness's env.sh)");
    snprintf(script, sizeof script, "%s/pg-ctl.sh", harness);
    argv[argc++] = "bash";
    argv[argc++] = script;
    va_start(ap, arg);
    for (const char *a = arg; a && argc < 30; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    env = plain_environ(NULL, NULL);
    fflush(NULL);
    pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(1, 2);
        execve("/bin/bash", (char *const *)argv, env);
        _exit(127);
    }
    free(env);
    status = wait_status(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

void fu_restart(const char *mode)
{
    int rc = fu_pg_ctl("restart", "-m", mode, "-w", "-t", "60", NULL);

    REQUIRE(rc == 0, "pg-ctl.sh restart -m %s failed (status %d)", mode, rc);
}

/* Runs sql on the observer; a dead observer (server restart) is replaced once. */
static PGresult *observer_exec(const char *sql)
{
    PGresult *res = NULL;

    /* After a restart, libpq reports the first failure with PQstatus still CONNECTION_OK;
     * the next call makes it CONNECTION_BAD, and then tu_observer() opens a new one. */
    for (int attempt = 0; attempt < 4; attempt++) {
        PGconn *obs = tu_observer();
        PQclear(res);
        res = PQexec(obs, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || strcmp(res_outcome(obs, res), "lost"))
            break;
    }
    return res;
}

void fu_sql(const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    PGresult *res;
    ExecStatusType st;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    res = observer_exec(sql);
    st = PQresultStatus(res);
    REQUIRE(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "observer: %s: %s", sql,
            PQerrorMessage(tu_observer()));
    PQclear(res);
}

char *fu_sql_value(const char *fmt, ...)
{
    char sql[2048], *v = NULL;
    va_list ap;
    PGresult *res;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    res = observer_exec(sql);
    REQUIRE(PQresultStatus(res) == PGRES_TUPLES_OK, "observer: %s: %s", sql,
            PQerrorMessage(tu_observer()));
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

void fu_terminate(int pid)
{
    char *v = fu_sql_value("SELECT pg_terminate_backend(%d)", pid);

    REQUIRE(v && !strcmp(v, "t"), "pg_terminate_backend(%d) returned %s", pid, v ? v : "NULL");
    free(v);
    for (int i = 0; i < 500; i++) {
        v = fu_sql_value("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
        bool gone = v && !strcmp(v, "0");
        free(v);
        if (gone)
            return;
        tu_sleep_ms(20);
    }
    REQUIRE(0, "backend %d still there 10 s after pg_terminate_backend", pid);
}

/* ---- the ledger -------------------------------------------------------------------------- */

struct fu_entry {
    enum fu_state state;
    int pid;
    char user[64];
    char app[64];
};

struct fu_ledger {
    char table[64];
    int n;
    struct fu_entry *e;
    pthread_mutex_t lock;
};

struct fu_ledger *fu_ledger_create(int n)
{
    struct fu_ledger *l = calloc(1, sizeof *l);

    REQUIRE(l != NULL && (l->e = calloc((size_t)n, sizeof *l->e)) != NULL, "out of memory");
    l->n = n;
    pthread_mutex_init(&l->lock, NULL);
    snprintf(l->table, sizeof l->table, "pqdt_w_%ld", (long)getpid());
    /* Durable before any immediate shutdown: the harness runs with synchronous_commit=off. */
    fu_sql("SET synchronous_commit = on");
    fu_sql("DROP TABLE IF EXISTS %s", l->table);
    fu_sql("CREATE TABLE %s (id int PRIMARY KEY, usr text NOT NULL DEFAULT current_user, "
           "pid int NOT NULL DEFAULT pg_backend_pid(), "
           "app text NOT NULL DEFAULT current_setting('application_name'))", l->table);
    fu_sql("GRANT ALL ON %s TO PUBLIC", l->table);
    return l;
}

const char *fu_ledger_table(const struct fu_ledger *l)
{
    return l->table;
}

static void record(struct fu_ledger *l, int id, enum fu_state st, PGconn *c, const char *user,
                   const char *app)
{
    REQUIRE(id >= 0 && id < l->n, "ledger id %d out of range (0..%d)", id, l->n - 1);
    pthread_mutex_lock(&l->lock);
    struct fu_entry *e = &l->e[id];
    REQUIRE(e->state == FU_UNTRIED, "ledger id %d written twice by the test", id);
    e->state = st;
    e->pid = c ? PQbackendPID(c) : 0;
    snprintf(e->user, sizeof e->user, "%s", user);
    snprintf(e->app, sizeof e->app, "%s", app);
    pthread_mutex_unlock(&l->lock);
}

void fu_record(struct fu_ledger *l, int id, enum fu_state state, int pid, const char *user, const char *app)
{
    record(l, id, state, NULL, user, app);
    pthread_mutex_lock(&l->lock);
    l->e[id].pid = pid;
    pthread_mutex_unlock(&l->lock);
}

enum fu_state fu_write(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app)
{
    char sql[160];
    const char *out;
    enum fu_state st;

    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (%d)", l->table, id);
    out = fu_exec(c, sql);
    st = !strcmp(out, "ok") ? FU_OK : !strcmp(out, "lost") ? FU_AMBIGUOUS : FU_FAILED;
    record(l, id, st, c, user, app);
    return st;
}

enum fu_state fu_write_idle_held(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app,
                                 const char *what, const int *dead, int ndead)
{
    int before = PQbackendPID(c), after;
    bool was_dead = false, now_dead = false;
    enum fu_state st = fu_write(l, c, id, user, app);

    after = PQbackendPID(c);
    for (int i = 0; i < ndead; i++) {
        was_dead = was_dead || before == dead[i];
        now_dead = now_dead || after == dead[i];
    }
    fu_note_idle_held(what, st == FU_OK ? "ok" : st == FU_AMBIGUOUS ? "lost" : "error");
    CHECK(was_dead, "%s: the connection's backend %d is not one the test ended", what, before);
    if (fu_is_reference())
        CHECK(st != FU_OK, "%s: plain libpq: a write on a connection whose backend is gone succeeded", what);
    if (st == FU_OK)
        CHECK(!now_dead, "%s: a write succeeded on backend %d, which is gone", what, after);
    else
        fu_mark(l, id, FU_FAILED); /* sent to a dead backend, or never sent: the ledger checks it */
    return st;
}

const char *fu_write_in_txn(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app)
{
    char sql[160];

    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (%d)", l->table, id);
    record(l, id, FU_FAILED, c, user, app);
    return fu_exec(c, sql);
}

const char *fu_commit(struct fu_ledger *l, PGconn *c, const int *ids, int n)
{
    PGresult *res = PQexec(c, "COMMIT");
    enum fu_state st;
    const char *out;

    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        bool committed = !strcmp(PQcmdStatus(res), "COMMIT");
        st = committed ? FU_OK : FU_FAILED;
        out = committed ? "ok" : "rolled back";
    } else {
        out = res_outcome(c, res);
        st = !strcmp(out, "lost") ? FU_AMBIGUOUS : FU_FAILED;
    }
    PQclear(res);
    for (int i = 0; i < n; i++)
        fu_mark(l, ids[i], st);
    last_outcome = out;
    return out;
}

void fu_mark(struct fu_ledger *l, int id, enum fu_state state)
{
    REQUIRE(id >= 0 && id < l->n, "ledger id %d out of range", id);
    pthread_mutex_lock(&l->lock);
    l->e[id].state = state;
    pthread_mutex_unlock(&l->lock);
}

enum fu_state fu_state_of(struct fu_ledger *l, int id)
{
    enum fu_state st;

    pthread_mutex_lock(&l->lock);
    st = l->e[id].state;
    pthread_mutex_unlock(&l->lock);
    return st;
}

long fu_ledger_verify(struct fu_ledger *l, int max_ambiguous, const char *what)
{
    char sql[160];
    PGresult *res;
    long rows, nok = 0, nfailed = 0, namb = 0, amb_present = 0;
    char *seen = calloc((size_t)l->n, 1);

    REQUIRE(seen != NULL, "out of memory");
    snprintf(sql, sizeof sql, "SELECT id, usr, pid, app FROM %s ORDER BY id", l->table);
    res = observer_exec(sql);
    REQUIRE(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: reading the ledger table: %s", what,
            PQerrorMessage(tu_observer()));
    rows = PQntuples(res);
    pthread_mutex_lock(&l->lock);
    for (long r = 0; r < rows; r++) {
        int id = atoi(PQgetvalue(res, (int)r, 0));
        const char *usr = PQgetvalue(res, (int)r, 1), *app = PQgetvalue(res, (int)r, 3);
        int pid = atoi(PQgetvalue(res, (int)r, 2));
        if (!CHECK(id >= 0 && id < l->n, "%s: row with id %d the test never wrote", what, id))
            continue;
        struct fu_entry *e = &l->e[id];
        seen[id]++;
        CHECK(e->state == FU_OK || e->state == FU_AMBIGUOUS,
              "%s: write %d is in the table, but the app saw it %s", what, id,
              e->state == FU_FAILED ? "fail (or never committed)" : "never attempted");
        amb_present += e->state == FU_AMBIGUOUS;
        if (e->state != FU_UNTRIED) {
            CHECK(!strcmp(usr, e->user), "%s: write %d was made by user %s, the app connected as %s",
                  what, id, usr, e->user);
            CHECK(!strcmp(app, e->app),
                  "%s: write %d was made by application_name %s, the app connected as %s", what, id,
                  app, e->app);
            CHECK(e->pid <= 0 || pid == e->pid,
                  "%s: write %d was made by backend %d, the app's handle was backend %d", what, id,
                  pid, e->pid);
        }
    }
    for (int id = 0; id < l->n; id++) {
        switch (l->e[id].state) {
        case FU_OK:
            nok++;
            CHECK(seen[id] == 1, "%s: write %d reported success but is %s", what, id,
                  seen[id] ? "there twice" : "missing");
            break;
        case FU_FAILED:
            nfailed++;
            break;
        case FU_AMBIGUOUS:
            namb++;
            break;
        case FU_UNTRIED:
            break;
        }
    }
    pthread_mutex_unlock(&l->lock);
    CHECK(namb <= max_ambiguous, "%s: %ld writes were in flight when their connection broke, "
                                 "expected at most %d", what, namb, max_ambiguous);
    printf("%s: ledger: %ld ok, %ld failed, %ld ambiguous (%ld of them committed); %ld rows\n",
           what, nok, nfailed, namb, amb_present, rows);
    PQclear(res);
    free(seen);
    return rows;
}

void fu_ledger_drop(struct fu_ledger *l)
{
    fu_sql("DROP TABLE IF EXISTS %s", l->table);
    pthread_mutex_destroy(&l->lock);
    free(l->e);
    free(l);
}

/* ---- the proxy ----------------------------------------------------------------------------- */

static pid_t proxy_pid;

void fu_proxy_stop(void)
{
    if (proxy_pid > 0) {
        kill(proxy_pid, SIGKILL);
        wait_status(proxy_pid);
        proxy_pid = 0;
    }
}

int fu_proxy_start(const char *host, const char *port)
{
    const char *src = getenv("PQD_TEST_SOURCE_DIR");
    char script[4096], buf[32];
    static bool atexit_done;
    char **env;
    int fds[2], len = 0, p;
    pid_t parent = getpid();

    REQUIRE(src != NULL, "PQD_TEST_SOURCE_DIR is not set");
    REQUIRE(proxy_pid == 0, "one proxy at a time");
    snprintf(script, sizeof script, "%s/faults/freeze_proxy.py", src);
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    env = plain_environ(NULL, NULL);
    fflush(NULL);
    proxy_pid = fork();
    REQUIRE(proxy_pid >= 0, "fork: %s", strerror(errno));
    if (proxy_pid == 0) {
        /* Dies with the test even while stopped (SIGKILL works on a stopped process). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(fds[1], 1);
        char *const argv[] = { "python3", script, (char *)host, (char *)port, NULL };
        execve("/usr/bin/python3", argv, env);
        _exit(127);
    }
    free(env);
    close(fds[1]);
    if (!atexit_done) {
        atexit(fu_proxy_stop);
        atexit_done = true;
    }
    /* The proxy prints its port on one line. */
    while (len < (int)sizeof buf - 1) {
        struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
        int r = poll(&pfd, 1, 10000);
        if (r < 0 && errno == EINTR)
            continue;
        REQUIRE(r > 0, "the proxy (/usr/bin/python3 %s) did not print its port in 10 s", script);
        ssize_t got = read(fds[0], buf + len, 1);
        if (got < 0 && errno == EINTR)
            continue;
        REQUIRE(got == 1, "the proxy exited before printing its port");
        if (buf[len] == '\n')
            break;
        len++;
    }
    buf[len] = '\0';
    close(fds[0]);
    p = atoi(buf);
    REQUIRE(p > 0 && p < 65536, "the proxy printed \"%s\", not a port", buf);
    return p;
}

void fu_proxy_freeze(void)
{
    REQUIRE(proxy_pid > 0 && kill(proxy_pid, SIGSTOP) == 0, "SIGSTOP to the proxy: %s", strerror(errno));
    /* SIGSTOP is asynchronous: wait until the process is really stopped. */
    for (int i = 0; i < 500; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)proxy_pid);
        FILE *f = fopen(path, "r");
        bool stopped = false;
        if (f && fgets(line, sizeof line, f)) {
            char *paren = strrchr(line, ')');
            stopped = paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
        }
        if (f)
            fclose(f);
        if (stopped)
            return;
        tu_sleep_ms(2);
    }
    REQUIRE(0, "the proxy did not stop within 1 s of SIGSTOP");
}

void fu_proxy_thaw(void)
{
    REQUIRE(proxy_pid > 0 && kill(proxy_pid, SIGCONT) == 0, "SIGCONT to the proxy: %s", strerror(errno));
}

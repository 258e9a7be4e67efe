/* testutil.c: checks, an observer connection and small libpq helpers shared by the C tests. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern const char *program_invocation_short_name; /* glibc */
extern char **environ;

static pthread_mutex_t tu_lock = PTHREAD_MUTEX_INITIALIZER;
static long tu_passed;
static long tu_failed;
static pthread_mutex_t tu_obs_lock = PTHREAD_MUTEX_INITIALIZER;
static PGconn *tu_obs; /* guarded by tu_obs_lock */
static double tu_scale_value = 1;
static pthread_once_t tu_scale_once = PTHREAD_ONCE_INIT;

/* Strings handed out by tu_conninfo, freed by tu_finish. */
struct tu_string {
    struct tu_string *next;
    char text[];
};
static struct tu_string *tu_strings;

static char tu_name[64];
static pthread_once_t tu_name_once = PTHREAD_ONCE_INIT;

int tu_check(int ok, const char *expr, const char *file, int line, const char *fmt, ...)
{
    pthread_mutex_lock(&tu_lock);
    if (ok) {
        tu_passed++;
    } else {
        va_list ap;
        tu_failed++;
        fprintf(stderr, "%s:%d: FAIL: (%s) ", file, line, expr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        fflush(stderr);
    }
    pthread_mutex_unlock(&tu_lock);
    return ok;
}

/* Print "<prog>: N passed, N failed" on stdout. */
static void tu_summary(void)
{
    pthread_mutex_lock(&tu_lock);
    fflush(stderr);
    printf("%s: %ld passed, %ld failed\n", program_invocation_short_name, tu_passed, tu_failed);
    fflush(stdout);
    pthread_mutex_unlock(&tu_lock);
}

void tu_abort(void)
{
    tu_summary();
    exit(1);
}

int tu_finish(void)
{
    struct tu_string *s;

    pthread_mutex_lock(&tu_obs_lock);
    if (tu_obs) {
        PQfinish(tu_obs);
        tu_obs = NULL;
    }
    pthread_mutex_unlock(&tu_obs_lock);
    pthread_mutex_lock(&tu_lock);
    while ((s = tu_strings) != NULL) {
        tu_strings = s->next;
        free(s);
    }
    if (tu_passed + tu_failed == 0) {
        fprintf(stderr, "%s: FAIL: no checks ran\n", program_invocation_short_name);
        tu_failed++;
    }
    pthread_mutex_unlock(&tu_lock);
    tu_summary();
    return tu_failed ? 1 : 0;
}

/* Fill tu_name with "pqdt_<program>_<pid>", the program cut so the whole fits 63 bytes
 * (NAMEDATALEN - 1, where the server would truncate it). */
static void tu_name_init(void)
{
    char pid[24];
    int room;

    snprintf(pid, sizeof pid, "_%ld", (long)getpid());
    room = (int)(sizeof tu_name - 1) - 5 - (int)strlen(pid);
    snprintf(tu_name, sizeof tu_name, "pqdt_%.*s%s", room, program_invocation_short_name, pid);
}

const char *tu_app_name(void)
{
    pthread_once(&tu_name_once, tu_name_init);
    return tu_name;
}

const char *tu_conninfo(const char *extra)
{
    const char *app = tu_app_name();
    size_t len;
    struct tu_string *s;

    if (!extra)
        extra = "";
    len = strlen("application_name= ") + strlen(app) + strlen(extra) + 1;
    s = malloc(sizeof *s + len);
    if (!s) {
        fprintf(stderr, "%s: out of memory\n", program_invocation_short_name);
        tu_abort();
    }
    snprintf(s->text, len, "application_name=%s %s", app, extra);
    pthread_mutex_lock(&tu_lock);
    s->next = tu_strings;
    tu_strings = s;
    pthread_mutex_unlock(&tu_lock);
    return s->text;
}

/* tu_observer with tu_obs_lock held. */
static PGconn *tu_observer_locked(void)
{
    PGconn *c;

    if (tu_obs && PQstatus(tu_obs) == CONNECTION_OK)
        return tu_obs;
    if (tu_obs)
        PQfinish(tu_obs); /* broken, e.g. by a server restart: open a new one */
    c = PQconnectdb("application_name=pqd_observer");
    REQUIRE(c && PQstatus(c) == CONNECTION_OK,
            "the observer cannot reach the test server (PGHOST=%s PGPORT=%s; source the env.sh "
            "from tests/harness/pg-up.sh): %s",
            getenv("PGHOST") ? getenv("PGHOST") : "(unset)",
            getenv("PGPORT") ? getenv("PGPORT") : "(unset)",
            c ? PQerrorMessage(c) : "out of memory");
    tu_obs = c;
    return c;
}

PGconn *tu_observer(void)
{
    PGconn *c;

    pthread_mutex_lock(&tu_obs_lock);
    c = tu_observer_locked();
    pthread_mutex_unlock(&tu_obs_lock);
    return c;
}

long tu_count_backends(const char *application_name)
{
    const char *sql = "SELECT count(*) FROM pg_stat_activity "
                      "WHERE application_name = $1 AND pid <> pg_backend_pid()";
    PGconn *obs;
    PGresult *res;
    long n = -1;

    pthread_mutex_lock(&tu_obs_lock);
    obs = tu_observer_locked();
    res = PQexecParams(obs, sql, 1, NULL, &application_name, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQstatus(obs) != CONNECTION_OK) {
        PQclear(res); /* the observer's backend is gone: ask once more on a new one */
        obs = tu_observer_locked();
        res = PQexecParams(obs, sql, 1, NULL, &application_name, NULL, NULL, 0);
    }
    if (CHECK(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1,
              "counting backends: %s", PQerrorMessage(obs)))
        n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    pthread_mutex_unlock(&tu_obs_lock);
    return n;
}

long tu_wait_backends(const char *application_name, long want, int timeout_ms)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    long n;
    int waited = 0;

    for (;;) {
        n = tu_count_backends(application_name);
        if (n == want || n < 0 || waited >= timeout_ms)
            return n;
        nanosleep(&pause, NULL);
        waited += 20;
    }
}

int tu_backend_pid(PGconn *conn)
{
    char *v = tu_query_value(conn, "SELECT pg_backend_pid()");
    int pid = v ? atoi(v) : -1;

    free(v);
    return pid > 0 ? pid : -1;
}

char *tu_query_value(PGconn *conn, const char *sql)
{
    PGresult *res;
    char *v = NULL;

    if (!conn)
        return NULL;
    res = PQexec(conn, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0 &&
        !PQgetisnull(res, 0, 0))
        v = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/* Read PQD_TEST_SCALE into tu_scale_value; a bad value warns and leaves 1. */
static void tu_scale_init(void)
{
    const char *s = getenv("PQD_TEST_SCALE");
    char *end;
    double v;

    if (!s || !*s)
        return;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v > 0) || v > 1000)
        fprintf(stderr, "%s: ignoring bad PQD_TEST_SCALE=%s\n", program_invocation_short_name, s);
    else
        tu_scale_value = v;
}

double tu_scale(void)
{
    pthread_once(&tu_scale_once, tu_scale_init);
    return tu_scale_value;
}

long tu_scaled(long n)
{
    long v = lround((double)n * tu_scale());

    return (n > 0 && v < 1) ? 1 : v;
}

PGconn *tu_connect_ok(void)
{
    PGconn *c = PQconnectdb(tu_conninfo(""));

    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

PGconn *tu_first_holder(int *pid)
{
    PGconn *c = tu_connect_ok();

    *pid = tu_backend_pid(c);
    REQUIRE(*pid > 0, "pg_backend_pid: %s", PQerrorMessage(c));
    return c;
}

PGconn *tu_next_holder(const char *scenario, int pid, char **connect_msg)
{
    PGconn *extra[8];
    int nextra = 0, pid2, i;
    PGconn *c;
    char *msg;

    for (;;) {
        c = tu_connect_ok();
        msg = strdup(PQerrorMessage(c));
        REQUIRE(msg != NULL, "out of memory");
        REQUIRE(PQtransactionStatus(c) == PQTRANS_IDLE, "%s: a new holder's transaction status "
                "is %d, expected PQTRANS_IDLE (%d)", scenario, (int) PQtransactionStatus(c),
                PQTRANS_IDLE);
        pid2 = tu_backend_pid(c);
        REQUIRE(pid2 > 0, "%s: pg_backend_pid: %s", scenario, PQerrorMessage(c));
        if (pid2 == pid)
            break;
        free(msg);
        REQUIRE(nextra < (int) (sizeof extra / sizeof extra[0]), "%s: %d connects got other "
                "backends (last %d), never the reused backend %d (without reuse this test "
                "proves nothing)", scenario, nextra + 1, pid2, pid);
        extra[nextra] = c;
        tu_sleep_ms(10 << nextra++);
    }
    for (i = 0; i < nextra; i++)
        PQfinish(extra[i]);
    if (connect_msg)
        *connect_msg = msg;
    else
        free(msg);
    return c;
}

long tu_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int tu_exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);

    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

int tu_exec_check_at(PGconn *conn, const char *sql, const char *file, int line)
{
    return tu_check(tu_exec_ok(conn, sql), "ok", file, line, "%s: %s", sql,
                    PQerrorMessage(conn));
}

int tu_echo_ok(PGconn *conn, long n)
{
    char sql[48], want[24], *v;
    int ok;

    snprintf(sql, sizeof sql, "SELECT %ld::bigint", n);
    snprintf(want, sizeof want, "%ld", n);
    v = tu_query_value(conn, sql);
    ok = v && !strcmp(v, want);
    free(v);
    return ok;
}

PGconn *tu_connect_async(const char *conninfo)
{
    PGconn *c = PQconnectStart(conninfo);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long t0 = tu_now_ms();

    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 20000) {
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

        poll(&pfd, 1, 1000);
        st = PQconnectPoll(c);
    }
    return c;
}

const char *tu_tcp_host(void)
{
    const char *h = getenv("PQD_TEST_TCP_HOST");

    return h && *h ? h : "127.0.0.1";
}

int tu_wait_reset(int pid)
{
    const char *sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int "
                      "AND state = 'idle' AND query = 'DISCARD ALL'";
    char param[24];
    const char *values[1] = {param};
    long start = tu_now_ms(), n;

    snprintf(param, sizeof param, "%d", pid);
    for (;;) {
        PGconn *obs;
        PGresult *res;

        pthread_mutex_lock(&tu_obs_lock);
        obs = tu_observer_locked();
        res = PQexecParams(obs, sql, 1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        else {
            n = -1;
            fprintf(stderr, "observer query failed: %s: %s", sql, PQerrorMessage(obs));
        }
        PQclear(res);
        pthread_mutex_unlock(&tu_obs_lock);
        if (n != 0 || tu_now_ms() - start >= 5000)
            break;
        tu_sleep_ms(10);
    }
    tu_sleep_ms(30);
    return n == 1;
}

/* stderr goes to tu_captured between tu_capture_stderr() and tu_release_stderr(). */
static int tu_saved_stderr = -1;
static FILE *tu_captured;

void tu_capture_stderr(void)
{
    fflush(stderr);
    tu_captured = tmpfile();
    REQUIRE(tu_captured != NULL, "tmpfile: %s", strerror(errno));
    tu_saved_stderr = dup(2);
    REQUIRE(tu_saved_stderr >= 0 && dup2(fileno(tu_captured), 2) == 2, "redirecting stderr: %s",
            strerror(errno));
}

char *tu_release_stderr(void)
{
    char *text;
    long len;

    fflush(stderr);
    dup2(tu_saved_stderr, 2);
    close(tu_saved_stderr);
    len = (long)lseek(fileno(tu_captured), 0, SEEK_END);
    text = calloc(1, (size_t)(len > 0 ? len : 0) + 1);
    REQUIRE(text != NULL, "out of memory");
    if (len > 0)
        REQUIRE(pread(fileno(tu_captured), text, (size_t)len, 0) == len,
                "reading captured stderr");
    fclose(tu_captured);
    tu_captured = NULL;
    return text;
}

char **tu_environ_with(const char *const *extra_env)
{
    size_t nenv = 0, nextra = 0, k = 0;
    char **envp;

    while (environ[nenv])
        nenv++;
    while (extra_env && extra_env[nextra])
        nextra++;
    envp = calloc(nenv + nextra + 1, sizeof *envp);
    REQUIRE(envp != NULL, "out of memory");
    for (size_t i = 0; i < nenv; i++) {
        int overridden = 0;

        for (size_t j = 0; j < nextra; j++) {
            size_t len = strcspn(extra_env[j], "=");

            if (strncmp(environ[i], extra_env[j], len) == 0 && environ[i][len] == '=')
                overridden = 1;
        }
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++)
        if (strchr(extra_env[j], '='))
            envp[k++] = (char *)extra_env[j];
    envp[k] = NULL;
    return envp;
}

/* The first value of sql with its parameters on the observer, malloc'd (NULL on an error,
 * printed, or on no rows or an SQL NULL). */
static char *tu_observer_value(const char *sql, int nparams, const char *const *params)
{
    PGconn *obs;
    PGresult *res;
    char *v = NULL;

    pthread_mutex_lock(&tu_obs_lock);
    obs = tu_observer_locked();
    res = PQexecParams(obs, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
            v = strdup(PQgetvalue(res, 0, 0));
    } else {
        fprintf(stderr, "observer query failed: %s: %s", sql, PQerrorMessage(obs));
    }
    PQclear(res);
    pthread_mutex_unlock(&tu_obs_lock);
    return v;
}

/* Polls sql with params on the observer until its first value is want, for timeout_ms. */
static int tu_wait_value_params(const char *sql, int nparams, const char *const *params,
                                const char *want, int timeout_ms)
{
    long start = tu_now_ms();

    for (;;) {
        char *v = tu_observer_value(sql, nparams, params);
        int seen = v != NULL && strcmp(v, want) == 0;

        free(v);
        if (seen)
            return 1;
        if (tu_now_ms() - start >= timeout_ms)
            return 0;
        tu_sleep_ms(10);
    }
}

int tu_wait_value(const char *sql, const char *want, int timeout_ms)
{
    return tu_wait_value_params(sql, 0, NULL, want, timeout_ms);
}

int tu_wait_active(int pid, const char *fragment, int timeout_ms)
{
    char param[24];
    const char *params[2] = {param, fragment};

    snprintf(param, sizeof param, "%d", pid);
    return tu_wait_value_params("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int "
                                "AND state = 'active' AND strpos(query, $2) > 0",
                                2, params, "1", timeout_ms);
}

const char *tu_sqlstate(const PGresult *res)
{
    const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return s != NULL ? s : "";
}

PGconn *tu_connect_taking(int pid, const char *scenario)
{
    PGconn *c = tu_connect_ok();
    int got = tu_backend_pid(c);

    REQUIRE(got == pid, "%s: a new connection runs on backend %d, expected the idle handle's "
            "backend %d to move to it (PQDEDUP_UNBIND_AFTER=0, no free connection)", scenario,
            got, pid);
    return c;
}

void tu_connect_pair(PGconn **a, PGconn **b, int *pid, const char *scenario)
{
    *a = tu_connect_ok();
    *pid = tu_backend_pid(*a);
    REQUIRE(*pid > 0, "%s: pg_backend_pid: %s", scenario, PQerrorMessage(*a));
    *b = tu_connect_taking(*pid, scenario);
}

char *tu_result_value(PGconn *c)
{
    PGresult *r, *first = NULL;
    char *v = NULL;

    while ((r = PQgetResult(c)) != NULL) {
        if (first == NULL)
            first = r;
        else
            PQclear(r);
    }
    if (PQresultStatus(first) == PGRES_TUPLES_OK && PQntuples(first) > 0 && !PQgetisnull(first, 0, 0))
        v = strdup(PQgetvalue(first, 0, 0));
    PQclear(first);
    return v;
}

static void tu_drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

void tu_quiet_notices(PGconn *c)
{
    PQsetNoticeProcessor(c, tu_drop_notice, NULL);
}

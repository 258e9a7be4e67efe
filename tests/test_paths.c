/* test_paths.c: every way libpq opens a connection works under pqdedup and reuses equivalent ones. */
#include "test_leak_common.h"

#include <poll.h>

/*
 * Usage: test_paths MODE
 *   forms      key=value, URI, PQconnectdbParams (expand_dbname 0/1), PQsetdbLogin, PQsetdb
 *   async      PQconnectStart / PQconnectStartParams + PQconnectPoll/PQsocket/poll() loops
 *   ping       PQping / PQpingParams answer and leave the pool alone
 *   reset      PQreset and PQresetStart/PQresetPoll on a pooled connection
 *   malformed  unparsable input gives libpq's own errors; PQfinish(NULL) is harmless
 */

static PGconn *connect_ok(const char *conninfo, const char *what)
{
    PGconn *c = PQconnectdb(conninfo);

    REQUIRE(PQstatus(c) == CONNECTION_OK, "%s: connect failed: %s", what, PQerrorMessage(c));
    return c;
}

/* Checks that c works, runs as application_name app, and has backend want_pid (0: any);
 * then finishes it and waits for its reset. Returns its pid. */
static int check_finish(PGconn *c, const char *app, int want_pid, const char *what)
{
    int pid;
    char *v;

    if (!CHECK(c && PQstatus(c) == CONNECTION_OK, "%s: connect failed: %s", what,
               c ? PQerrorMessage(c) : "NULL")) {
        PQfinish(c);
        return -1;
    }
    pid = tu_backend_pid(c);
    CHECK(pid > 0, "%s: query failed: %s", what, PQerrorMessage(c));
    v = tu_query_value(c, "SELECT current_setting('application_name')");
    CHECK(v && !strcmp(v, app), "%s: application_name is %s, expected %s", what,
          v ? v : "(error)", app);
    free(v);
    if (want_pid)
        CHECK(pid == want_pid, "%s: backend %d, expected the kept %d (an equivalent connect)",
              what, pid, want_pid);
    PQfinish(c);
    tu_wait_reset(pid);
    return pid;
}

/* Percent-encodes s for a URI component. */
static void uri_encode(char *out, size_t size, const char *s)
{
    size_t o = 0;

    for (; *s && o + 4 < size; s++) {
        unsigned char ch = (unsigned char)*s;

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

/* Equivalent connects through every blocking entry point and spelling share one kept
 * backend; a connect that differs in one parameter does not get it. */
static void forms(void)
{
    const char *app = tu_app_name();
    const char *host = getenv("PGHOST"), *port = getenv("PGPORT");
    char buf[1024], ehost[512], db_conninfo[256];
    int p;

    REQUIRE(host && port, "PGHOST and PGPORT must be set (source the harness env.sh)");
    p = check_finish(connect_ok(tu_conninfo(""), "key=value"), app, 0, "key=value");

    snprintf(buf, sizeof buf, "  dbname = 'postgres'   application_name=%s  port=%s", app, port);
    check_finish(PQconnectdb(buf), app, p, "key=value reordered, quoted, spaced");

    snprintf(buf, sizeof buf, "postgresql:///postgres?application_name=%s", app);
    check_finish(PQconnectdb(buf), app, p, "URI without host");

    uri_encode(ehost, sizeof ehost, host);
    snprintf(buf, sizeof buf, "postgres://%s:%s/postgres?application_name=%s", ehost, port, app);
    check_finish(PQconnectdb(buf), app, p, "URI with a percent-encoded socket host");

    {
        const char *kw[] = {"application_name", NULL};
        const char *val[] = {app, NULL};

        check_finish(PQconnectdbParams(kw, val, 0), app, p, "PQconnectdbParams expand_dbname=0");
    }
    {
        const char *kw[] = {"host", "dbname", "application_name", "port", NULL};
        const char *val[] = {"", "postgres", app, NULL, NULL}; /* empty and NULL: unset */

        check_finish(PQconnectdbParams(kw, val, 0), app, p,
                     "PQconnectdbParams with empty and NULL values");
    }
    snprintf(db_conninfo, sizeof db_conninfo, "dbname=postgres application_name=%s", app);
    {
        const char *kw[] = {"dbname", NULL};
        const char *val[] = {db_conninfo, NULL};

        check_finish(PQconnectdbParams(kw, val, 1), app, p,
                     "PQconnectdbParams expand_dbname=1 with a conninfo");
    }
    {
        const char *kw[] = {"dbname", "port", NULL};
        const char *val[] = {buf /* the URI above */, port, NULL};

        snprintf(buf, sizeof buf, "postgresql:///postgres?application_name=%s", app);
        check_finish(PQconnectdbParams(kw, val, 1), app, p,
                     "PQconnectdbParams expand_dbname=1 with a URI");
    }
    check_finish(PQsetdbLogin(host, port, NULL, NULL, db_conninfo, "postgres", NULL), app, p,
                 "PQsetdbLogin");
    check_finish(PQsetdb(NULL, NULL, NULL, NULL, db_conninfo), app, p, "PQsetdb");

    /* One parameter more: another key, another backend. */
    {
        PGconn *c = PQconnectdb(tu_conninfo("connect_timeout=13"));
        int q = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;

        CHECK(q > 0 && q != p, "connect_timeout=13 got backend %d (kept one: %d): %s", q, p,
              PQerrorMessage(c));
        PQfinish(c);
    }
    /* dbname as a plain name in PQsetdbLogin is not a conninfo: no application_name, so it
     * must not get our kept backend either. */
    {
        PGconn *c = PQsetdbLogin(host, port, NULL, NULL, "postgres", NULL, NULL);
        int q = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;

        CHECK(q > 0 && q != p, "PQsetdbLogin without application_name got backend %d (kept "
              "one: %d): %s", q, p, PQerrorMessage(c));
        PQfinish(c);
    }
}

/* Drives an async connect the way libpq documents it: start as if PQconnectPoll had said
 * WRITING, wait on PQsocket with poll(), call PQconnectPoll. poll_first: call PQconnectPoll
 * before any wait (psycopg2's order). Returns the final status. */
static PostgresPollingStatusType drive_async(PGconn *c, int poll_first)
{
    PostgresPollingStatusType st = poll_first ? PQconnectPoll(c) : PGRES_POLLING_WRITING;
    long t0 = tu_now_ms();

    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

        if (!CHECK(pfd.fd >= 0, "PQsocket is %d during an async connect", pfd.fd))
            return PGRES_POLLING_FAILED;
        if (!CHECK(tu_now_ms() - t0 < 20000, "async connect takes more than 20s"))
            return PGRES_POLLING_FAILED;
        if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
            return PGRES_POLLING_FAILED;
        st = PQconnectPoll(c);
    }
    return st;
}

/* Async connects: a fresh one completes through the poll loop and is kept at finish; the
 * next async connect (either loop order, PQconnectStart or PQconnectStartParams) gets the
 * kept connection and it works; a blocking connect gets it too. */
static void async(void)
{
    const char *ci = tu_conninfo("");
    const char *kw[] = {"application_name", NULL};
    const char *val[] = {tu_app_name(), NULL};
    PGconn *c;
    int p;
    long n;

    c = PQconnectStart(ci);
    REQUIRE(c != NULL && PQstatus(c) != CONNECTION_BAD, "PQconnectStart: %s",
            c ? PQerrorMessage(c) : "NULL");
    CHECK(drive_async(c, 0) == PGRES_POLLING_OK, "fresh async connect failed: %s",
          PQerrorMessage(c));
    p = check_finish(c, tu_app_name(), 0, "fresh async connect");
    n = tu_count_backends(tu_app_name());
    CHECK(n == 1, "%ld backends after finishing the async connect, expected it kept", n);

    c = PQconnectStart(ci);
    CHECK(drive_async(c, 0) == PGRES_POLLING_OK, "async connect (wait first): %s",
          PQerrorMessage(c));
    check_finish(c, tu_app_name(), p, "PQconnectStart, wait-first loop");

    c = PQconnectStart(ci);
    CHECK(drive_async(c, 1) == PGRES_POLLING_OK, "async connect (poll first): %s",
          PQerrorMessage(c));
    check_finish(c, tu_app_name(), p, "PQconnectStart, poll-first loop");

    c = PQconnectStartParams(kw, val, 0);
    CHECK(drive_async(c, 0) == PGRES_POLLING_OK, "PQconnectStartParams: %s", PQerrorMessage(c));
    check_finish(c, tu_app_name(), p, "PQconnectStartParams");

    check_finish(PQconnectdb(ci), tu_app_name(), p, "blocking connect after async ones");

    /* A fresh PQconnectStartParams (another key) is kept too. */
    {
        const char *kw2[] = {"application_name", "connect_timeout", NULL};
        const char *val2[] = {tu_app_name(), "12", NULL};
        int q;

        c = PQconnectStartParams(kw2, val2, 0);
        CHECK(drive_async(c, 1) == PGRES_POLLING_OK, "fresh PQconnectStartParams: %s",
              PQerrorMessage(c));
        q = check_finish(c, tu_app_name(), 0, "fresh PQconnectStartParams");
        CHECK(q != p, "another key got the kept backend");
        c = PQconnectStartParams(kw2, val2, 0);
        CHECK(drive_async(c, 0) == PGRES_POLLING_OK, "PQconnectStartParams again: %s",
              PQerrorMessage(c));
        check_finish(c, tu_app_name(), q, "PQconnectStartParams again");
    }
    n = tu_count_backends(tu_app_name());
    CHECK(n == 2, "%ld backends at the end, expected the 2 kept", n);
}

/* PQping/PQpingParams answer PQPING_OK, open nothing that stays (the backend count is
 * unchanged), and a kept or held connection is untouched by them. */
static void ping(void)
{
    const char *ci = tu_conninfo("");
    const char *kw[] = {"application_name", NULL};
    const char *val[] = {tu_app_name(), NULL};
    PGconn *c;
    int p;
    long n;

    p = check_finish(connect_ok(ci, "first"), tu_app_name(), 0, "first");
    CHECK(PQping(ci) == PQPING_OK, "PQping did not answer PQPING_OK");
    CHECK(PQpingParams(kw, val, 0) == PQPING_OK, "PQpingParams did not answer PQPING_OK");
    n = tu_wait_backends(tu_app_name(), 1, 3000);
    CHECK(n == 1, "%ld backends after pings with one kept, expected 1", n);
    CHECK(pqt_pid_alive(p) == 1, "the kept backend went away during the pings");
    c = connect_ok(ci, "after pings");
    CHECK(tu_backend_pid(c) == p, "the kept connection was not reused after the pings");

    /* While it is held. */
    CHECK(PQping(ci) == PQPING_OK, "PQping with the connection held");
    CHECK(tu_backend_pid(c) == p && PQstatus(c) == CONNECTION_OK,
          "the held connection broke after PQping: %s", PQerrorMessage(c));
    n = tu_wait_backends(tu_app_name(), 1, 3000);
    CHECK(n == 1, "%ld backends after a ping with one held, expected 1", n);
    PQfinish(c);
    tu_wait_reset(p);

    /* Not answering: the same as libpq. */
    CHECK(PQping("host=127.0.0.1 port=1 connect_timeout=5") == PQPING_NO_RESPONSE,
          "PQping of a closed port did not answer PQPING_NO_RESPONSE");
    CHECK(PQping("host='unterminated") == PQPING_NO_ATTEMPT,
          "PQping of a malformed conninfo did not answer PQPING_NO_ATTEMPT");
    c = connect_ok(ci, "after all pings");
    CHECK(tu_backend_pid(c) == p, "the kept connection was not reused after all pings");
    PQfinish(c);
}

/* PQreset and PQresetStart/PQresetPoll on a pooled connection: a new backend, working, and
 * the connection is still kept at finish (the next connect gets the post-reset backend). */
static void reset(void)
{
    const char *ci = tu_conninfo("");
    PGconn *c;
    int p, r, r2;
    long n;

    c = connect_ok(ci, "first");
    p = tu_backend_pid(c);
    PQreset(c);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "PQreset: %s", PQerrorMessage(c));
    r = tu_backend_pid(c);
    CHECK(r > 0 && r != p, "after PQreset: backend %d, before %d", r, p);
    CHECK(pqt_wait_pid_gone(p, 3000) == 0, "the pre-reset backend %d is still there", p);
    check_finish(c, tu_app_name(), 0, "after PQreset");
    n = tu_count_backends(tu_app_name());
    CHECK(n == 1, "%ld backends after finishing a reset connection, expected 1 kept", n);

    c = connect_ok(ci, "after finishing the reset one");
    CHECK(tu_backend_pid(c) == r, "the next connect got backend %d, expected the post-reset "
          "%d", tu_backend_pid(c), r);

    /* Async reset. */
    REQUIRE(PQresetStart(c) == 1, "PQresetStart: %s", PQerrorMessage(c));
    {
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        long t0 = tu_now_ms();

        while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 20000) {
            struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

            poll(&pfd, 1, 1000);
            st = PQresetPoll(c);
        }
        CHECK(st == PGRES_POLLING_OK, "PQresetPoll ended with %d: %s", (int)st,
              PQerrorMessage(c));
    }
    r2 = tu_backend_pid(c);
    CHECK(r2 > 0 && r2 != r, "after PQresetStart/Poll: backend %d, before %d", r2, r);
    check_finish(c, tu_app_name(), 0, "after PQresetPoll");
    c = connect_ok(ci, "after finishing the async-reset one");
    CHECK(tu_backend_pid(c) == r2, "the next connect got backend %d, expected the post-reset "
          "%d", tu_backend_pid(c), r2);
    PQfinish(c);
    n = tu_wait_backends(tu_app_name(), 1, 3000);
    CHECK(n == 1, "%ld backends at the end, expected 1 kept", n);
}

/* Checks a connect that libpq itself rejects: CONNECTION_BAD with libpq's exact message. */
static void check_rejected(PGconn *c, const char *want, const char *what)
{
    CHECK(c != NULL, "%s returned NULL", what);
    if (!c)
        return;
    CHECK(PQstatus(c) == CONNECTION_BAD && !strcmp(PQerrorMessage(c), want),
          "%s: status %d, message \"%s\", expected libpq's \"%s\"", what, (int)PQstatus(c),
          PQerrorMessage(c), want);
    PQfinish(c);
}

/* Malformed conninfo through every entry point gives libpq's own status and message (as
 * plain libpq on Debian 12's libpq 15 prints them); PQfinish(NULL) does nothing; nothing is
 * left open. (PQconnectdb(NULL) crashes inside plain libpq, so it is not tried.) */
static void malformed(void)
{
    REQUIRE(getenv("PGHOST") && getenv("PGPORT"), "PGHOST and PGPORT must be set");
    const char *unterminated = "unterminated quoted string in connection info string\n";
    const char *nonsense = "missing \"=\" after \"nonsense\" in connection info string\n";
    const char *kw[] = {"bogus_option", NULL};
    const char *val[] = {"1", NULL};
    const char *kw_db[] = {"dbname", NULL};
    const char *val_db[] = {"host='unterminated", NULL};

    check_rejected(PQconnectdb("host='unterminated"), unterminated, "PQconnectdb unterminated");
    check_rejected(PQconnectdb("nonsense"), nonsense, "PQconnectdb nonsense");
    check_rejected(PQconnectStart("host='unterminated"), unterminated,
                   "PQconnectStart unterminated");
    check_rejected(PQconnectStart("nonsense"), nonsense, "PQconnectStart nonsense");
    check_rejected(PQconnectdb("postgresql://[::1"),
                   "end of string reached when looking for matching \"]\" in IPv6 host address "
                   "in URI: \"postgresql://[::1\"\n",
                   "PQconnectdb bad URI");
    check_rejected(PQconnectdbParams(kw, val, 0), "invalid connection option \"bogus_option\"\n",
                   "PQconnectdbParams unknown keyword");
    check_rejected(PQconnectStartParams(kw, val, 0),
                   "invalid connection option \"bogus_option\"\n",
                   "PQconnectStartParams unknown keyword");
    check_rejected(PQconnectdbParams(kw_db, val_db, 1), unterminated,
                   "PQconnectdbParams expand_dbname=1 unterminated");
    check_rejected(PQsetdbLogin(NULL, NULL, NULL, NULL, "host='unterminated", NULL, NULL),
                   unterminated, "PQsetdbLogin unterminated");
    {
        char want[600];

        snprintf(want, sizeof want, "connection to server on socket \"%s/.s.PGSQL.%s\" failed: "
                 "invalid integer value \"abc\" for connection option \"connect_timeout\"\n",
                 getenv("PGHOST"), getenv("PGPORT"));
        check_rejected(PQconnectdb(tu_conninfo("connect_timeout=abc")), want,
                       "PQconnectdb bad connect_timeout");
    }

    /* A well-formed conninfo the server cannot be reached at: libpq's failure. */
    {
        PGconn *c = PQconnectdb(tu_conninfo("host=127.0.0.1 port=1"));

        CHECK(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "port 1 failed"),
              "closed port: status %d, message %s", (int)PQstatus(c), PQerrorMessage(c));
        PQfinish(c);
    }
    PQfinish(NULL);
    PQfinish(NULL);

    /* The pool still works afterwards. */
    {
        PGconn *c = connect_ok(tu_conninfo(""), "after malformed connects");

        CHECK(tu_exec_ok(c, "SELECT 1"), "query: %s", PQerrorMessage(c));
        PQfinish(c);
    }
    CHECK(tu_wait_backends(tu_app_name(), 1, 3000) == 1, "expected exactly the 1 kept backend");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    tu_observer();
    if (!strcmp(mode, "forms"))
        forms();
    else if (!strcmp(mode, "async"))
        async();
    else if (!strcmp(mode, "ping"))
        ping();
    else if (!strcmp(mode, "reset"))
        reset();
    else if (!strcmp(mode, "malformed"))
        malformed();
    else {
        fprintf(stderr, "usage: test_paths forms|async|ping|reset|malformed\n");
        return 2;
    }
    return tu_finish();
}

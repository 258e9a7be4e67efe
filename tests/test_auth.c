/* test_auth.c: credentials are part of the key: wrong passwords fail, users, databases and SSL modes never share. */
#include "test_leak_common.h"

/*
 * Run with default settings, with PQDEDUP_UNBIND_AFTER=0 (an idle handle lends its server
 * connection to any connect of its key that needs one) and with PQDEDUP_MAX_PER_KEY=1: neither
 * a kept connection nor an idle held handle's may ever answer a connect with other
 * credentials.
 */

static char port[16];

/* conninfo for the test server over TCP with the given user/password ("" leaves it out). */
static const char *tcp_conninfo(const char *user, const char *password, const char *extra)
{
    char buf[512];

    snprintf(buf, sizeof buf, "host=%s port=%s dbname=postgres%s%s%s%s %s", tu_tcp_host(), port,
             *user ? " user=" : "", user, *password ? " password=" : "", password,
             extra ? extra : "");
    return tu_conninfo(buf);
}

/* Connects and requires success; returns the connection. */
static PGconn *connect_ok(const char *conninfo, const char *what)
{
    PGconn *c = PQconnectdb(conninfo);

    REQUIRE(PQstatus(c) == CONNECTION_OK, "%s: connect failed: %s", what, PQerrorMessage(c));
    return c;
}

/* Checks that current_user on c is want. */
static void check_user(PGconn *c, const char *want, const char *what)
{
    char *v = tu_query_value(c, "SELECT current_user");

    CHECK(v && !strcmp(v, want), "%s: current_user is %s, expected %s", what, v ? v : "(error)",
          want);
    free(v);
}

/* Checks a connect that must fail authentication for user. */
static void check_auth_fails(PGconn *c, const char *user, const char *what)
{
    char want[128];

    snprintf(want, sizeof want, "password authentication failed for user \"%s\"", user);
    CHECK(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), want),
          "%s: expected the server's \"%s\", got status %d: %s", what, want, (int)PQstatus(c),
          PQstatus(c) == CONNECTION_OK ? "(connected!)" : PQerrorMessage(c));
    if (PQstatus(c) == CONNECTION_OK)
        check_user(c, "(nobody: the connect should have failed)", what);
}

/* A wrong password fails even though a good connection with the same other parameters is
 * kept (finished) or held; the good one is still reused by the next correct connect. */
static void wrong_password_explicit(void)
{
    const char *good = tcp_conninfo("pqd_alice", "alice_pw", NULL);
    const char *bad = tcp_conninfo("pqd_alice", "wrong_pw", NULL);
    PGconn *c = connect_ok(good, "good password");
    int pid = tu_backend_pid(c), pid2;
    char uri[512];

    check_user(c, "pqd_alice", "good password");
    PQfinish(c); /* kept */
    CHECK(tu_wait_reset(pid), "the good connection's reset never finished");

    c = PQconnectdb(bad);
    check_auth_fails(c, "pqd_alice", "wrong password with the good connection kept");
    PQfinish(c);

    c = connect_ok(good, "good password again");
    pid2 = tu_backend_pid(c);
    CHECK(pid2 == pid, "the kept good connection was not reused after a failed wrong-password "
          "connect: pid %d, expected %d", pid2, pid);

    /* Held (not finished) this time. */
    {
        PGconn *w = PQconnectdb(bad);

        check_auth_fails(w, "pqd_alice", "wrong password with the good connection held");
        PQfinish(w);
    }
    CHECK(tu_backend_pid(c) == pid, "the held good connection broke: %s", PQerrorMessage(c));

    /* The same with a URI and with keyword arrays. */
    snprintf(uri, sizeof uri, "postgresql://pqd_alice:wrong_pw@%s:%s/postgres?application_name=%s",
             tu_tcp_host(), port, tu_app_name());
    {
        PGconn *w = PQconnectdb(uri);

        check_auth_fails(w, "pqd_alice", "wrong password in a URI");
        PQfinish(w);
    }
    {
        const char *kw[] = {"host", "port", "dbname", "user", "password", "application_name",
                            NULL};
        const char *val[] = {tu_tcp_host(), port, "postgres", "pqd_alice", "wrong_pw",
                             tu_app_name(), NULL};
        PGconn *w = PQconnectdbParams(kw, val, 0);

        check_auth_fails(w, "pqd_alice", "wrong password in PQconnectdbParams");
        PQfinish(w);
    }
    PQfinish(c); /* kept */
    CHECK(tu_wait_reset(pid), "the good connection's reset never finished");

    /* An async connect with the wrong password fails through the poll loop. */
    {
        PGconn *w = PQconnectStart(bad);
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        long t0 = tu_now_ms();

        REQUIRE(w != NULL, "PQconnectStart returned NULL");
        while (PQstatus(w) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
               st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 20000)
            st = PQconnectPoll(w);
        CHECK(st == PGRES_POLLING_FAILED || PQstatus(w) == CONNECTION_BAD,
              "async wrong password: poll ended with %d", (int)st);
        check_auth_fails(w, "pqd_alice", "async wrong password");
        PQfinish(w);
    }
    c = connect_ok(good, "good password after the failures");
    pid2 = tu_backend_pid(c);
    CHECK(pid2 == pid, "after wrong-password connects the kept connection was not reused: pid "
          "%d, expected %d", pid2, pid);
    PQfinish(c);
}

/* PGPASSWORD is read at each connect: a wrong one fails even with a good connection kept. */
static void wrong_password_env(void)
{
    const char *ci = tcp_conninfo("pqd_alice", "", "connect_timeout=17");
    PGconn *c;
    int pid, pid2;

    setenv("PGPASSWORD", "alice_pw", 1);
    c = connect_ok(ci, "PGPASSWORD good");
    pid = tu_backend_pid(c);
    check_user(c, "pqd_alice", "PGPASSWORD good");
    PQfinish(c); /* kept */
    CHECK(tu_wait_reset(pid), "the good connection's reset never finished");

    setenv("PGPASSWORD", "wrong_pw", 1);
    c = PQconnectdb(ci);
    check_auth_fails(c, "pqd_alice", "PGPASSWORD changed to a wrong one");
    PQfinish(c);

    unsetenv("PGPASSWORD");
    c = PQconnectdb(ci);
    CHECK(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "no password supplied"),
          "PGPASSWORD unset (no passfile): expected \"no password supplied\", got %s",
          PQstatus(c) == CONNECTION_OK ? "a connection" : PQerrorMessage(c));
    PQfinish(c);

    setenv("PGPASSWORD", "alice_pw", 1);
    c = connect_ok(ci, "PGPASSWORD good again");
    pid2 = tu_backend_pid(c);
    CHECK(pid2 == pid, "PGPASSWORD good again: pid %d, expected the kept %d", pid2, pid);
    PQfinish(c);
    unsetenv("PGPASSWORD");
}

/* pqd_alice and pqd_bob never share a session, kept or held, by conninfo or by PGUSER. */
static void users_never_share(void)
{
    PGconn *a, *b, *x;
    int pa, pb;

    a = connect_ok(tcp_conninfo("pqd_alice", "alice_pw", NULL), "alice");
    pa = tu_backend_pid(a);
    check_user(a, "pqd_alice", "alice");
    b = connect_ok(tcp_conninfo("pqd_bob", "bob_pw", NULL), "bob while alice is held");
    pb = tu_backend_pid(b);
    check_user(b, "pqd_bob", "bob while alice is held");
    CHECK(pa != pb, "alice and bob got the same backend %d", pa);
    PQfinish(b);
    PQfinish(a); /* both kept */
    CHECK(tu_wait_reset(pa) && tu_wait_reset(pb), "the kept connections' resets never finished");

    b = connect_ok(tcp_conninfo("pqd_bob", "bob_pw", NULL), "bob with both kept");
    check_user(b, "pqd_bob", "bob with both kept");
    CHECK(tu_backend_pid(b) == pb, "bob did not get his kept backend %d (got %d)", pb,
          tu_backend_pid(b));
    /* Bob with alice's password: fails although alice's session is kept. */
    x = PQconnectdb(tcp_conninfo("pqd_bob", "alice_pw", NULL));
    check_auth_fails(x, "pqd_bob", "bob with alice's password");
    PQfinish(x);
    PQfinish(b);

    /* By PGUSER/PGPASSWORD. */
    setenv("PGUSER", "pqd_alice", 1);
    setenv("PGPASSWORD", "alice_pw", 1);
    a = connect_ok(tcp_conninfo("", "", NULL), "PGUSER=pqd_alice");
    check_user(a, "pqd_alice", "PGUSER=pqd_alice");
    setenv("PGUSER", "pqd_bob", 1);
    setenv("PGPASSWORD", "bob_pw", 1);
    b = connect_ok(tcp_conninfo("", "", NULL), "PGUSER=pqd_bob");
    check_user(b, "pqd_bob", "PGUSER=pqd_bob");
    CHECK(tu_backend_pid(a) != tu_backend_pid(b), "PGUSER alice and bob share a backend");
    PQfinish(a);
    PQfinish(b);
    b = connect_ok(tcp_conninfo("", "", NULL), "PGUSER=pqd_bob with alice kept");
    check_user(b, "pqd_bob", "PGUSER=pqd_bob with alice kept");
    PQfinish(b);
    setenv("PGUSER", "postgres", 1);
    unsetenv("PGPASSWORD");
}

/* CHECKs that current_database() on c is want; what names the connection. */
static void check_db(PGconn *c, const char *want, const char *what)
{
    char *v = tu_query_value(c, "SELECT current_database()");

    CHECK(v && !strcmp(v, want), "%s: current_database() is %s", what, v ? v : "(error)");
    free(v);
}

/* Databases postgres and pqd_other never share, by conninfo or by PGDATABASE. */
static void databases_never_share(void)
{
    PGconn *p, *o;

    p = connect_ok(tu_conninfo("dbname=postgres"), "dbname=postgres");
    PQfinish(p); /* kept */
    o = connect_ok(tu_conninfo("dbname=pqd_other"), "dbname=pqd_other with postgres kept");
    check_db(o, "pqd_other", "dbname=pqd_other");
    /* Held now: a connect to postgres does not get it. */
    p = connect_ok(tu_conninfo("dbname=postgres"), "dbname=postgres with pqd_other held");
    check_db(p, "postgres", "dbname=postgres");
    CHECK(tu_backend_pid(p) != tu_backend_pid(o), "postgres and pqd_other share a backend");
    PQfinish(p);
    PQfinish(o);

    setenv("PGDATABASE", "pqd_other", 1);
    o = connect_ok(tu_conninfo(""), "PGDATABASE=pqd_other");
    check_db(o, "pqd_other", "PGDATABASE=pqd_other");
    PQfinish(o);
    setenv("PGDATABASE", "postgres", 1);
    p = connect_ok(tu_conninfo(""), "PGDATABASE=postgres");
    check_db(p, "postgres", "PGDATABASE=postgres");
    PQfinish(p);
}

/* sslmode=require and sslmode=disable never share: the session's SSL state is what was
 * asked for. */
static void sslmodes_never_share(void)
{
    const char *sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    PGconn *r, *d;
    char *v;

    r = connect_ok(tcp_conninfo("postgres", "", "sslmode=require"), "sslmode=require");
    PQfinish(r); /* kept */
    d = connect_ok(tcp_conninfo("postgres", "", "sslmode=disable"), "sslmode=disable");
    v = tu_query_value(d, sql);
    CHECK(v && !strcmp(v, "f") && !PQsslInUse(d), "sslmode=disable got an SSL session (%s)",
          v ? v : "(error)");
    free(v);
    PQfinish(d); /* kept */
    r = connect_ok(tcp_conninfo("postgres", "", "sslmode=require"), "sslmode=require again");
    v = tu_query_value(r, sql);
    CHECK(v && !strcmp(v, "t") && PQsslInUse(r), "sslmode=require got a session without SSL "
          "(%s)", v ? v : "(error)");
    free(v);
    PQfinish(r);
}

int main(void)
{
    const char *p = getenv("PGPORT");

    snprintf(port, sizeof port, "%s", p && *p ? p : "5432");
    /* No password file may answer for a missing password. */
    setenv("PGPASSFILE", "/nonexistent/pqdedup-test-pgpass", 1);
    unsetenv("PGPASSWORD");
    tu_observer();
    wrong_password_explicit();
    wrong_password_env();
    users_never_share();
    databases_never_share();
    sslmodes_never_share();
    return tu_finish();
}

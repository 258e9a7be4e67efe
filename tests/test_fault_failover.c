/* test_fault_failover.c: the server turns read-only (default_transaction_read_only by ALTER SYSTEM + reload) and back while connections are kept, with and without target_session_attrs. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_fault_failover   (register SERIAL: it makes the whole server read-only for a
 * moment). Three keys of this process, each with its own application_name:
 *   rw   target_session_attrs=read-write
 *   any  no target_session_attrs
 *   ro   target_session_attrs=read-only
 * Runs itself again with PQDEDUP_DISABLE=1 and compares what the app saw.
 */

static struct fu_ledger *ledger;
static const char *user;
static int next_id;
static char app_rw[64], app_any[64], app_ro[64];
static const char *key_rw, *key_any, *key_ro;
static bool read_only_now;

/* ALTER SYSTEM + pg_reload_conf, then waits until a session sees the new value. */
static void set_read_only(bool on)
{
    if (on)
        fu_sql("ALTER SYSTEM SET default_transaction_read_only = on");
    else
        fu_sql("ALTER SYSTEM RESET default_transaction_read_only");
    fu_sql("SELECT pg_reload_conf()");
    read_only_now = on;
    for (int i = 0; i < 250; i++) {
        char *v = fu_sql_value("SHOW default_transaction_read_only");
        bool seen = v && !strcmp(v, on ? "on" : "off");
        free(v);
        if (seen)
            return;
        tu_sleep_ms(20);
    }
    REQUIRE(0, "the server did not apply default_transaction_read_only=%s within 5 s", on ? "on" : "off");
}

/* Never leave the server read-only for the other tests. */
static void restore_read_write(void)
{
    if (read_only_now)
        set_read_only(false);
}

/* Connects with key (application_name app), notes the outcome and, when connected, a write. */
static PGconn *connect_and_write(const char *key, const char *app, const char *what, int *pid)
{
    PGconn *c = PQconnectdb(key);

    *pid = fu_check_connect(c, user, app, what);
    if (*pid > 0) {
        fu_write(ledger, c, next_id++, user, app);
        fu_note("%s: write: %s", what, fu_last_outcome());
    }
    return c;
}

/* Connects where libpq must refuse the server (target_session_attrs): the same failure as
 * plain libpq, with libpq's words, and no backend of that key is left open (a kept one that
 * no longer matches was closed). */
static void connect_refused(const char *key, const char *app, const char *words, const char *what)
{
    PGconn *c = PQconnectdb(key);

    fu_note("%s: connect: %s", what, fu_conn_outcome(c));
    CHECK(PQstatus(c) != CONNECTION_OK && strstr(PQerrorMessage(c), words),
          "%s: expected libpq's \"%s\", got: %s", what, words,
          PQstatus(c) == CONNECTION_OK ? "a connection" : PQerrorMessage(c));
    PQfinish(c);
    long n = tu_wait_backends(app, 0, 3000);
    CHECK(n == 0, "%s: %ld backends of %s still open", what, n, app);
}

/* Before, during and after a read-only period: read-write clients fail to connect exactly as
 * plain libpq ("session is read-only") while it lasts and work after it; a client without
 * target_session_attrs gets its kept connection and its write fails with the server's
 * read-only error (25006), as an open plain connection's would; read-only clients connect
 * only while the server is read-only (a kept one is dropped when it is no longer). */
static void test_failover(void)
{
    PGconn *c;
    int pid, pid_any;

    ledger = fu_ledger_create(100);

    fu_note("-- read-write server");
    c = connect_and_write(key_rw, app_rw, "read-write client", &pid);
    PQfinish(c);
    c = connect_and_write(key_any, app_any, "plain client", &pid_any);
    PQfinish(c);
    connect_refused(key_ro, app_ro, "session is not read-only", "read-only client");
    if (!fu_is_reference()) {
        /* the kept connections' resets are answered */
        CHECK(tu_wait_reset(pid) && tu_wait_reset(pid_any), "the kept connections' resets did not complete");
        CHECK(tu_count_backends(app_rw) == 1 && tu_count_backends(app_any) == 1,
              "pqdedup keeps one connection of the read-write and of the plain client");
    }

    fu_note("-- server turned read-only");
    set_read_only(true);
    connect_refused(key_rw, app_rw, "session is read-only", "read-write client");
    c = connect_and_write(key_any, app_any, "plain client", &pid);
    CHECK(!strcmp(fu_last_outcome(), "error 25006"),
          "a write on a read-only server: expected error 25006, got %s", fu_last_outcome());
    if (!fu_is_reference())
        CHECK(pid == pid_any, "the plain client did not get its kept connection (%d, kept %d)", pid, pid_any);
    PQfinish(c);
    c = connect_and_write(key_ro, app_ro, "read-only client", &pid);
    PQfinish(c);
    if (!fu_is_reference()) /* the kept connections' resets are answered */
        CHECK(tu_wait_reset(pid) && tu_wait_reset(pid_any), "the kept connections' resets did not complete");

    fu_note("-- server read-write again");
    set_read_only(false);
    c = connect_and_write(key_rw, app_rw, "read-write client", &pid);
    CHECK(!strcmp(fu_last_outcome(), "ok"), "read-write client after the switch back: write %s",
          fu_last_outcome());
    PQfinish(c);
    c = connect_and_write(key_any, app_any, "plain client", &pid);
    CHECK(!strcmp(fu_last_outcome(), "ok"), "plain client after the switch back: write %s",
          fu_last_outcome());
    if (!fu_is_reference())
        CHECK(pid == pid_any, "the plain client did not get its kept connection (%d, kept %d)", pid, pid_any);
    PQfinish(c);
    connect_refused(key_ro, app_ro, "session is not read-only", "read-only client");

    fu_ledger_verify(ledger, 0, "failover");
    fu_ledger_drop(ledger);
}

int main(int argc, char **argv)
{
    char extra[256];
    const char *app;

    fu_init(argc, argv);
    tu_observer();
    app = tu_app_name();
    user = getenv("PGUSER") ? getenv("PGUSER") : "postgres";
    snprintf(app_rw, sizeof app_rw, "%.55s_rw", app);
    snprintf(app_any, sizeof app_any, "%.55s_any", app);
    snprintf(app_ro, sizeof app_ro, "%.55s_ro", app);
    snprintf(extra, sizeof extra, "application_name=%s target_session_attrs=read-write %s", app_rw, FU_SYNC_COMMIT);
    key_rw = tu_conninfo(extra);
    snprintf(extra, sizeof extra, "application_name=%s %s", app_any, FU_SYNC_COMMIT);
    key_any = tu_conninfo(extra);
    snprintf(extra, sizeof extra, "application_name=%s target_session_attrs=read-only %s", app_ro, FU_SYNC_COMMIT);
    key_ro = tu_conninfo(extra);
    printf("test_fault_failover as %s\n", app);

    atexit(restore_read_write);
    read_only_now = true; /* a run that died may have left it so */
    restore_read_write();
    test_failover();
    return fu_finish(false);
}

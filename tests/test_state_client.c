/* test_state_client.c: client-side PGconn state (notice hooks, nonblocking, verbosity, context, trace, error text) never reaches the next holder. */
#define _GNU_SOURCE
#include "testutil.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: test_state_client (no arguments). Registered with the default reset query and
 * with PQDEDUP_RESET_QUERY="": client-side state goes back to libpq's defaults either way.
 * Each scenario: a first holder changes client-side state of its PGconn and finishes it; a
 * connect with the same parameters gets the same backend (REQUIREd, so the same PGconn's
 * state is what is looked at); the state must be libpq's default, as on a fresh connection.
 */

#define CANARY_MAGIC 0x5ca1ab1eu

/* An app object a notice hook points at; freed and poisoned after PQfinish. */
struct canary {
    unsigned magic;
    long calls;
};

static long app_hook_calls;    /* calls of any app notice hook, whatever its canary */
static long dead_canary_calls; /* calls whose canary was no longer alive */
static PGconn *fresh;          /* a connection nobody held before: libpq's defaults */

static struct canary *new_canary(void)
{
    struct canary *k = malloc(sizeof *k);

    REQUIRE(k != NULL, "out of memory");
    k->magic = CANARY_MAGIC;
    k->calls = 0;
    return k;
}

/* What the app does after PQfinish: poison and free its object. */
static void kill_canary(struct canary *k)
{
    memset(k, 0xdd, sizeof *k);
    free(k);
}

static void note_call(struct canary *k)
{
    app_hook_calls++;
    if (k->magic != CANARY_MAGIC)
        dead_canary_calls++;
    else
        k->calls++;
}

static void app_processor(void *arg, const char *message)
{
    (void) message;
    note_call(arg);
}

static void app_receiver(void *arg, const PGresult *res)
{
    (void) res;
    note_call(arg);
}

/* ---- stderr capture: fd 2 goes to a file in the working directory for a while ---- */

static int saved_stderr = -1;
static char capture_path[96];

static void capture_begin(void)
{
    int fd;

    snprintf(capture_path, sizeof capture_path, "test_state_client.%ld.stderr", (long) getpid());
    fflush(stderr);
    fd = open(capture_path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0, "cannot create %s", capture_path);
    saved_stderr = dup(2);
    REQUIRE(saved_stderr >= 0 && dup2(fd, 2) == 2, "cannot redirect stderr");
    close(fd);
}

/* Ends the capture; returns what was written to fd 2 meanwhile (malloc'd), after echoing
 * it to the real stderr with a prefix so nothing (e.g. a valgrind report) is hidden. */
static char *capture_end(void)
{
    FILE *f;
    char *text;
    long len;

    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    f = fopen(capture_path, "r");
    REQUIRE(f != NULL, "cannot read %s", capture_path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    text = calloc(1, (size_t) len + 1);
    REQUIRE(text != NULL, "out of memory");
    len = (long) fread(text, 1, (size_t) len, f);
    text[len] = '\0';
    fclose(f);
    unlink(capture_path);
    if (len > 0)
        fprintf(stderr, "[captured stderr] %s%s", text, text[len - 1] == '\n' ? "" : "\n");
    return text;
}

/* ---- libpq helpers ---- */

/* Runs sql, which must fail; returns PQerrorMessage's text after it (malloc'd). */
static char *error_text(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    char *msg;

    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR, "%s was expected to fail", sql);
    PQclear(res);
    msg = strdup(PQerrorMessage(conn));
    REQUIRE(msg != NULL, "out of memory");
    return msg;
}

/* Has the server send conn a NOTICE whose text ends with `tag`. */
static void raise_notice(PGconn *conn, const char *tag)
{
    char sql[200];

    snprintf(sql, sizeof sql, "DO $$BEGIN RAISE NOTICE 'pqd-state-notice %s'; END$$", tag);
    tu_exec_check(conn, sql);
}

/* ---- scenarios ---- */

/* A notice processor installed with a pointer to an app object is not called during
 * PQfinish (not even by the cleanup's own messages: client_min_messages=debug5 makes the
 * server talk during ROLLBACK/DISCARD ALL) nor ever after the object is freed; after reuse
 * a notice goes to libpq's default processor (stderr), and PQfinish prints nothing. */
static void test_notice_hook(bool receiver)
{
    const char *what = receiver ? "notice receiver" : "notice processor";
    int pid;
    PGconn *c = tu_first_holder(&pid);
    struct canary *k = new_canary();
    long before;
    char *out;

    if (receiver)
        PQsetNoticeReceiver(c, app_receiver, k);
    else
        PQsetNoticeProcessor(c, app_processor, k);
    raise_notice(c, "to the app");
    REQUIRE(k->calls == 1, "the app's %s got the first holder's notice (%ld calls)", what,
            k->calls);
    tu_exec_check(c, "SET client_min_messages = debug5");
    tu_exec_check(c, "BEGIN"); /* so the finish also rolls back */
    before = app_hook_calls;

    capture_begin();
    PQfinish(c);
    out = capture_end();
    CHECK(app_hook_calls == before, "the app's %s was called %ld times during PQfinish", what,
          app_hook_calls - before);
    CHECK(out[0] == '\0', "PQfinish printed on stderr: %s", out);
    free(out);
    kill_canary(k);

    c = tu_next_holder(what, pid, NULL);
    capture_begin();
    raise_notice(c, "after reuse");
    out = capture_end();
    CHECK(app_hook_calls == before && dead_canary_calls == 0,
          "the finished holder's %s was called %ld more times (%ld with a freed object)",
          what, app_hook_calls - before, dead_canary_calls);
    CHECK(strstr(out, "NOTICE:  pqd-state-notice after reuse\n") != NULL,
          "after reuse a notice goes to libpq's default processor on stderr; got: %s", out);
    free(out);
    tu_exec_check(c, "RESET client_min_messages");
    PQfinish(c);
}

/* A kept connection whose backend is terminated (pg_terminate_backend) while kept: the
 * next connect gets another backend, and the server's FATAL message reaches neither the
 * finished holder's freed notice processor nor stderr. */
static void test_hook_after_kill(void)
{
    char sql[96];
    int pid, pid2, waited;
    PGconn *c = tu_first_holder(&pid);
    struct canary *k = new_canary();
    long before;
    char *out, *v;

    PQsetNoticeProcessor(c, app_processor, k);
    before = app_hook_calls;
    PQfinish(c);
    kill_canary(k);
    tu_sleep_ms(50); /* the reset completes */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    v = tu_query_value(tu_observer(), sql);
    REQUIRE(v && strcmp(v, "t") == 0, "observer terminates backend %d: %s", pid,
            v ? v : PQerrorMessage(tu_observer()));
    free(v);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    for (waited = 0; waited < 5000; waited += 20) {
        v = tu_query_value(tu_observer(), sql);
        if (v && strcmp(v, "0") == 0)
            waited = 5000;
        free(v);
        if (waited < 5000)
            tu_sleep_ms(20);
    }

    capture_begin();
    c = PQconnectdb(tu_conninfo(""));
    out = capture_end();
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect after the kill: %s", PQerrorMessage(c));
    pid2 = tu_backend_pid(c);
    CHECK(pid2 > 0 && pid2 != pid, "after its backend was terminated, got backend %d (was %d)",
          pid2, pid);
    CHECK(app_hook_calls == before, "the finished holder's freed notice processor was called "
          "%ld times for the terminated backend", app_hook_calls - before);
    CHECK(out[0] == '\0', "the connect printed on stderr: %s", out);
    free(out);
    PQfinish(c);
}

/* PQsetnonblocking(1) does not survive: the next holder's PQisnonblocking is 0. */
static void test_nonblocking(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);

    REQUIRE(PQsetnonblocking(c, 1) == 0 && PQisnonblocking(c) == 1, "PQsetnonblocking(1)");
    PQfinish(c);

    c = tu_next_holder("nonblocking", pid, NULL);
    CHECK(PQisnonblocking(c) == 0, "nonblocking mode survived to the next holder");
    CHECK(PQisnonblocking(c) == PQisnonblocking(fresh), "differs from a fresh connection");
    PQfinish(c);
}

/* PQsetErrorVerbosity(VERBOSE) does not survive: the next holder's error text is the
 * default one, as on a fresh connection (no SQLSTATE, no LOCATION). */
static void test_verbosity(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *msg, *ref;

    PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
    msg = error_text(c, "SELECT 1/0");
    REQUIRE(strstr(msg, "22012") != NULL, "VERBOSE shows the SQLSTATE: %s", msg);
    free(msg);
    PQfinish(c);

    c = tu_next_holder("error verbosity", pid, NULL);
    msg = error_text(c, "SELECT 1/0");
    ref = error_text(fresh, "SELECT 1/0");
    CHECK(strstr(msg, "22012") == NULL && strstr(msg, "LOCATION") == NULL,
          "VERBOSE error verbosity survived: %s", msg);
    CHECK(strcmp(msg, ref) == 0, "next holder's error text \"%s\" differs from a fresh "
          "connection's \"%s\"", msg, ref);
    free(msg), free(ref);
    PQfinish(c);
}

/* PQsetErrorContextVisibility(NEVER) does not survive: the next holder's PL/pgSQL error
 * shows its CONTEXT line again, as on a fresh connection. */
static void test_context_visibility(void)
{
    const char *sql = "DO $$BEGIN RAISE EXCEPTION 'pqd-state-boom'; END$$";
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *msg, *ref;

    PQsetErrorContextVisibility(c, PQSHOW_CONTEXT_NEVER);
    msg = error_text(c, sql);
    REQUIRE(strstr(msg, "CONTEXT") == NULL, "NEVER hides the context: %s", msg);
    free(msg);
    PQfinish(c);

    c = tu_next_holder("context visibility", pid, NULL);
    msg = error_text(c, sql);
    ref = error_text(fresh, sql);
    CHECK(strstr(msg, "CONTEXT:") != NULL, "context visibility NEVER survived: %s", msg);
    CHECK(strcmp(msg, ref) == 0, "next holder's error text \"%s\" differs from a fresh "
          "connection's \"%s\"", msg, ref);
    free(msg), free(ref);
    PQfinish(c);
}

static long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long) st.st_size : -1;
}

/* PQtrace stops at PQfinish: the trace file does not grow during the finish (the
 * cleanup is not traced) nor while the next holder works; the app's FILE is still open
 * meanwhile, so a forgotten PQuntrace would show. */
static void test_trace(void)
{
    char path[96];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    FILE *f;
    long s1, s2, s3;

    snprintf(path, sizeof path, "test_state_client.%ld.trace", (long) getpid());
    f = fopen(path, "w");
    REQUIRE(f != NULL, "cannot create %s", path);
    PQtrace(c, f);
    tu_exec_check(c, "SELECT 1");
    fflush(f);
    s1 = file_size(path);
    REQUIRE(s1 > 0, "PQtrace wrote the first holder's query (%ld bytes)", s1);
    tu_exec_check(c, "BEGIN"); /* so the finish also rolls back */
    fflush(f);
    s1 = file_size(path);
    PQfinish(c);
    fflush(f);
    s2 = file_size(path);
    CHECK(s2 == s1, "the trace file grew by %ld bytes during PQfinish", s2 - s1);

    c = tu_next_holder("trace", pid, NULL);
    tu_exec_check(c, "SELECT 2");
    tu_exec_check(c, "SELECT 3");
    fflush(f);
    s3 = file_size(path);
    CHECK(s3 == s2, "the trace file grew by %ld bytes while the next holder worked", s3 - s2);
    PQfinish(c);
    fclose(f);
    unlink(path);
}

/* The previous holder's last error text does not show in the next holder's
 * PQerrorMessage right after its connect: it reads like a fresh connection's. */
static void test_error_message(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *msg, *fresh_msg;
    PGconn *f;

    free(error_text(c, "SELECT 1/0"));
    REQUIRE(PQerrorMessage(c)[0] != '\0', "the error is in PQerrorMessage");
    PQfinish(c);

    c = tu_next_holder("error message", pid, &msg);
    f = PQconnectdb(tu_conninfo("application_name=pqd_state_fresh2"));
    REQUIRE(PQstatus(f) == CONNECTION_OK, "fresh connect: %s", PQerrorMessage(f));
    fresh_msg = PQerrorMessage(f);
    CHECK(strstr(msg, "division by zero") == NULL && strcmp(msg, fresh_msg) == 0,
          "next holder's PQerrorMessage after connect is \"%s\", a fresh connection's is "
          "\"%s\"", msg, fresh_msg);
    free(msg);
    PQfinish(f);
    PQfinish(c);
}

int main(void)
{
    printf("test_state_client: as %s\n", tu_app_name());
    tu_observer();
    fresh = PQconnectdb(tu_conninfo("application_name=pqd_state_fresh"));
    REQUIRE(PQstatus(fresh) == CONNECTION_OK, "fresh connect: %s", PQerrorMessage(fresh));

    test_notice_hook(false);
    test_notice_hook(true);
    test_hook_after_kill();
    test_nonblocking();
    test_verbosity();
    test_context_visibility();
    test_trace();
    test_error_message();

    PQfinish(fresh);
    return tu_finish();
}

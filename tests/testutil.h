/* testutil.h: checks, an observer connection and small libpq helpers shared by the C tests. */
#ifndef PQDEDUP_TESTUTIL_H
#define PQDEDUP_TESTUTIL_H

#include <libpq-fe.h>

/*
 * Tests are plain libpq programs run under LD_PRELOAD=libpqdedup.so against the server that
 * tests/harness/pg-up.sh starts; connection parameters come from its PG* variables. A test
 * that cannot reach the server fails (exit 1); it never skips.
 *
 * Typical shape:
 *     int main(void) {
 *         PGconn *c = PQconnectdb(tu_conninfo(""));
 *         REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
 *         CHECK(tu_count_backends(tu_app_name()) == 1, "one backend");
 *         PQfinish(c);
 *         return tu_finish();
 *     }
 */

/* CHECK: on failure print file:line and the message, count a failure, and go on.
 * Evaluates to 1 if cond held, else 0. */
#define CHECK(cond, ...) tu_check(!!(cond), #cond, __FILE__, __LINE__, __VA_ARGS__)

/* REQUIRE: like CHECK, but on failure print the summary and exit(1). */
#define REQUIRE(cond, ...)                                                  \
    do {                                                                    \
        if (!tu_check(!!(cond), #cond, __FILE__, __LINE__, __VA_ARGS__))    \
            tu_abort();                                                     \
    } while (0)

int tu_check(int ok, const char *expr, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Print the summary and exit(1). Never returns. */
void tu_abort(void) __attribute__((noreturn));

/* Print "<prog>: N passed, N failed" and close the observer. Returns the exit status for
 * main: 0 if every check passed and at least one ran, else 1. */
int tu_finish(void);

/* This process's application_name, "pqdt_<program>_<pid>" (at most 63 bytes, unique per
 * run). Owned by testutil; never NULL. */
const char *tu_app_name(void);

/* "application_name=<tu_app_name()> <extra>". A later keyword in extra wins over the
 * application_name, as libpq keeps the last one. The string is owned by testutil and stays
 * valid until tu_finish(); extra may be NULL. Exits 1 if out of memory. */
const char *tu_conninfo(const char *extra);

/* The observer: one connection with application_name=pqd_observer, so its key never matches
 * a test's connections; opened on first use and reopened if it went bad (e.g. after a server
 * restart). Owned by testutil (closed by tu_finish; do not PQfinish it; use it from one thread
 * at a time). Exits 1 (a failure) if the server cannot be reached. */
PGconn *tu_observer(void);

/* Rows in pg_stat_activity with this application_name, not counting the observer's own
 * backend. If the observer's connection died (server restart) it reconnects and asks again.
 * Returns -1 on a query error (also recorded as a failed check). */
long tu_count_backends(const char *application_name);

/* Poll tu_count_backends until it equals want or timeout_ms passes (backends exit a moment
 * after their client disconnects). Returns the last count seen, -1 on error. */
long tu_wait_backends(const char *application_name, long want, int timeout_ms);

/* The server-side pid of conn's backend (SELECT pg_backend_pid()). Returns -1 on error. */
int tu_backend_pid(PGconn *conn);

/* The first column of the first row of sql on conn, as a malloc'd string the caller frees.
 * Returns NULL on error, on no rows, or on an SQL NULL. */
char *tu_query_value(PGconn *conn, const char *sql);

/* PQD_TEST_SCALE (default 1; e.g. 0.1 under valgrind): multiply the amount of work by it.
 * tu_scaled(n) returns n * scale rounded, at least 1 when n > 0. */
double tu_scale(void);
long tu_scaled(long n);

/* A connection with tu_conninfo("") (this test's one key), REQUIREd to be OK.
 * The caller finishes it. */
PGconn *tu_connect_ok(void);

/* tu_connect_ok() and its backend pid into *pid (REQUIREd > 0): a scenario's first holder. */
PGconn *tu_first_holder(int *pid);

/* The next holder: a connection with tu_conninfo("") on the same backend as the first holder
 * (REQUIREd: without reuse a scenario proves nothing), REQUIREd idle and outside any
 * transaction. The pool may hand out another connection while the first holder's reset has not
 * answered (an asynchronous connect opens a spare): such connections are held (so the next try cannot get them), the reset is given
 * a little time, the connect is repeated, and the extras are finished at the end. If
 * connect_msg is given, it gets PQerrorMessage as it was right after the connect, before
 * any query ran on it (malloc'd; the caller frees). The caller finishes the connection;
 * `scenario` names it in failures. */
PGconn *tu_next_holder(const char *scenario, int pid, char **connect_msg);

/* Milliseconds on a monotonic clock. */
long tu_now_ms(void);

/* Sleeps ms milliseconds, the whole time even when signals interrupt it. */
void tu_sleep_ms(long ms);

/* Runs sql on conn. Returns 1 if it ended in PGRES_COMMAND_OK or PGRES_TUPLES_OK, else 0;
 * counts no check. */
int tu_exec_ok(PGconn *conn, const char *sql);

/* tu_exec_ok that also CHECKs the outcome (a failure names sql and conn's error, at the
 * caller's file and line). Returns 1 on success, else 0. */
#define tu_exec_check(conn, sql) tu_exec_check_at((conn), (sql), __FILE__, __LINE__)
int tu_exec_check_at(PGconn *conn, const char *sql, const char *file, int line);

/* Runs "SELECT n" on conn. Returns 1 when the answer is n (the query reached a working
 * session and its answer is this query's), else 0; counts no check. */
int tu_echo_ok(PGconn *conn, long n);

/* An async connect as Ruby's pg and psycopg make them: PQconnectStart, then PQconnectPoll
 * after poll() on PQsocket says the socket is ready, until OK or FAILED (20 s at most).
 * Returns the connection (NULL only if libpq is out of memory); the caller checks PQstatus
 * and finishes it. */
PGconn *tu_connect_async(const char *conninfo);

/* The TCP host of the test server: PQD_TEST_TCP_HOST, else "127.0.0.1". The string is the
 * environment's or a literal; never NULL. */
const char *tu_tcp_host(void);

/* pqdedup sends the reset query (DISCARD ALL by default) at PQfinish without waiting, and
 * a blocking connect takes a kept connection once that reset has answered (waiting for it;
 * an asynchronous one may open a spare instead). Waits (5 s at most) until backend pid shows the finished reset (idle after
 * DISCARD ALL), plus a moment for the answer to reach the client. Returns 1 when seen, 0 on
 * timeout or when the observer's query fails (the failure is printed, not counted). */
int tu_wait_reset(int pid);

/* Sends stderr (fd 2) to a temporary file until tu_release_stderr(); not nested, one
 * thread. REQUIREs that the redirection works. */
void tu_capture_stderr(void);

/* Puts stderr back. Returns what was written to it since tu_capture_stderr(), as a malloc'd
 * string the caller frees ("" if nothing); exits 1 if it cannot be read. */
char *tu_release_stderr(void);

/* An environment for a child: a copy of environ in which each "NAME=VALUE" of extra_env
 * (NULL-terminated, may be NULL) replaces NAME, and a bare "NAME" removes it. Returns a
 * malloc'd NULL-terminated array that the caller frees; its strings are not copied (they are
 * environ's and extra_env's, so keep those alive while it is used). Exits 1 if out of
 * memory. */
char **tu_environ_with(const char *const *extra_env);

/* Polls sql (a query without parameters whose first value is compared as text) on the
 * observer until that value equals want, or timeout_ms passes. For "wait until the server
 * shows X" with a deadline instead of a sleep. Returns 1 when seen, 0 on timeout (a failed
 * query counts as not seen and is printed, not counted). */
int tu_wait_value(const char *sql, const char *want, int timeout_ms);

/* Waits (timeout_ms at most) until backend pid runs a query (state 'active') whose text
 * contains fragment, e.g. "pg_sleep". Returns 1 when seen, else 0. */
int tu_wait_active(int pid, const char *fragment, int timeout_ms);

/* The SQLSTATE of res ("" when it has none). Never NULL. */
const char *tu_sqlstate(const PGresult *res);

/* Connects with tu_conninfo("") and REQUIREs that the new connection runs on backend pid:
 * the server connection of an idle, clean handle moved to it. Run under
 * PQDEDUP_UNBIND_AFTER=0 with no free connection of the key (PQDEDUP_KEEP_PER_KEY=0, or none
 * finished) and every other handle of the key busy or sticky. The caller finishes it;
 * `scenario` names it in failures. */
PGconn *tu_connect_taking(int pid, const char *scenario);

/* Two handles of one key on one backend: *a connects (its backend into *pid), then *b takes
 * a's server connection (tu_connect_taking). Same conditions as tu_connect_taking. */
void tu_connect_pair(PGconn **a, PGconn **b, int *pid, const char *scenario);

/* Reads every result of what is in flight on c (PQgetResult until NULL; it blocks as
 * PQgetResult does) and returns the first value of the first result when that one has rows,
 * malloc'd; else NULL. */
char *tu_result_value(PGconn *c);

/* Drops c's notices (e.g. the observer's "does not exist, skipping" of DROP ... IF EXISTS)
 * instead of printing them on stderr. */
void tu_quiet_notices(PGconn *c);

#endif

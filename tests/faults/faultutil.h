/* faultutil.h: helpers of the fault tests (tests/test_fault_*.c): a write ledger, a plain-libpq reference run, server control, a freezable TCP proxy. */
#ifndef PQDEDUP_FAULTUTIL_H
#define PQDEDUP_FAULTUTIL_H

#include "testutil.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Every fault test checks three things:
 *  1. no lost or duplicated writes: the app's writes go through a ledger (fu_write, fu_commit)
 *     into a table with a unique key; fu_ledger_verify then asserts that every write that
 *     reported success is there exactly once, every write that reported failure is not, and a
 *     write whose connection broke while it was in flight (ambiguous, as with any client) is
 *     there at most once; each row also records the session that wrote it (current_user,
 *     application_name, backend pid), which must be the one the app connected as;
 *  2. no wrong session (the rows above, plus per-test pid and user checks);
 *  3. the app sees what plain libpq would show: each app-visible outcome is noted with
 *     fu_note(); fu_finish() runs the same program again with PQDEDUP_DISABLE=1 (the
 *     "reference run", plain libpq) and asserts that both transcripts are equal, but for one
 *     allowed difference: a clean, idle held connection whose server connection died may
 *     continue under pqdedup ("ok") where plain libpq's is "lost" (fu_note_idle_held).
 * The app's writes use synchronous_commit=on (FU_SYNC_COMMIT in the conninfo): the harness
 * server runs with synchronous_commit=off, which may lose commits at an immediate shutdown
 * even with plain libpq.
 */

#define FU_SYNC_COMMIT "options='-c synchronous_commit=on'"

/* Remembers argv for the reference run. Call first in main. */
void fu_init(int argc, char **argv);

/* True in the reference run (plain libpq, PQDEDUP_DISABLE=1): skip pqdedup-only checks. */
bool fu_is_reference(void);

/* Appends one line of app-visible outcome to the transcript (printed too). */
void fu_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Notes "<what>: <outcome>" for the first use of a clean, idle held connection after its
 * server connection died. Under pqdedup such a handle may have been unbound meanwhile and
 * continue on a new server connection (notes/MODEL.md): the comparison with plain libpq
 * accepts "ok" on this line where plain libpq says "lost", and nothing else (never the
 * reverse). Use it for nothing but such a handle: never one inside a transaction, sticky or
 * busy. */
void fu_note_idle_held(const char *what, const char *outcome);

/* "ok", or "failed: <first line of the error, digits as #>" for a connect. */
const char *fu_conn_outcome(PGconn *c);

/* Runs sql on c and describes what the app saw: "ok", "error <SQLSTATE>" (the connection
 * still works), or "lost" (the connection is gone: PQstatus is CONNECTION_BAD). */
const char *fu_exec(PGconn *c, const char *sql);

/* After a connect the app made: notes its outcome; when connected, notes and CHECKs that it
 * is outside any transaction and that current_user and application_name are user and app.
 * Returns the backend pid, or -1 when not connected. */
int fu_check_connect(PGconn *c, const char *user, const char *app, const char *what);

/* The end of a test: in the pqdedup run, runs the reference (unless skip_reference) and
 * compares transcripts; in the reference run, writes its transcript. Returns tu_finish(). */
int fu_finish(bool skip_reference);

/* ---- time ---------------------------------------------------------------------------- */
double fu_now(void); /* monotonic seconds (tu_sleep_ms sleeps) */

/* ---- the server ---------------------------------------------------------------------- */
/* Runs tests/harness/pg-ctl.sh ARGS (NULL-terminated) outside the preload; returns its exit
 * status. */
int fu_pg_ctl(const char *arg, ...);
/* pg-ctl.sh restart -m MODE -w; REQUIREs success. */
void fu_restart(const char *mode);
/* Superuser SQL on the observer (retried once on a fresh observer if its backend died);
 * REQUIREs success. fu_sql_value returns the first value (malloc'd) or NULL. */
void fu_sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *fu_sql_value(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* pg_terminate_backend(pid) and wait (10 s at most) until it is gone. */
void fu_terminate(int pid);

/* (stderr capture: tu_capture_stderr and tu_release_stderr in testutil.h) */

/* ---- the ledger ---------------------------------------------------------------------- */
enum fu_state { FU_UNTRIED = 0, FU_OK, FU_FAILED, FU_AMBIGUOUS };

struct fu_ledger;

/* Creates table pqdt_w_<pid> (id int primary key, usr, pid, app defaulting to the writing
 * session's current_user, pg_backend_pid(), application_name), writable by everyone, for
 * ids 0..n-1. Thread-safe to write to; create and verify from the main thread. */
struct fu_ledger *fu_ledger_create(int n);
const char *fu_ledger_table(const struct fu_ledger *l);

/* One autocommit INSERT of `id` on c by the app. Records what the app saw: success -> OK,
 * an error with the connection still up -> FAILED, a lost connection -> AMBIGUOUS. The row
 * must show `user` and `app` (the session the app asked for) and c's backend pid. Returns
 * the state. */
enum fu_state fu_write(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app);

/* A write on a clean, idle held connection c whose backend (one of dead[0..ndead)) is known
 * gone: plain libpq must report it lost; pqdedup may instead have moved the handle to a new
 * backend, where the write must then work (never on a dead one). Notes the outcome with
 * fu_note_idle_held; a write the app saw fail on a dead backend is recorded FAILED (nothing was
 * there to commit it), one it saw succeed must be in the table once. Returns the state. */
enum fu_state fu_write_idle_held(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app,
                                 const char *what, const int *dead, int ndead);

/* What the app saw at the last fu_exec/fu_write/fu_write_in_txn/fu_commit of this thread
 * ("ok", "error <SQLSTATE>", "lost"). */
const char *fu_last_outcome(void);

/* An INSERT of `id` inside the app's open transaction: recorded FAILED (not committed)
 * until fu_commit says otherwise. Returns fu_exec's outcome. */
const char *fu_write_in_txn(struct fu_ledger *l, PGconn *c, int id, const char *user, const char *app);

/* COMMIT of a transaction that wrote ids[0..n-1]: "COMMIT" answered -> OK; "ROLLBACK"
 * answered or an error on a live connection -> FAILED; a lost connection -> AMBIGUOUS.
 * Returns fu_exec-style outcome ("ok" only for a real COMMIT, "rolled back" otherwise). */
const char *fu_commit(struct fu_ledger *l, PGconn *c, const int *ids, int n);

/* Records a write made elsewhere (e.g. by a forked worker): state, the backend pid it was
 * made on (0: unknown), and the session it was made for. */
void fu_record(struct fu_ledger *l, int id, enum fu_state state, int pid, const char *user, const char *app);

/* Overrides what the app knows about a write (e.g. FAILED: the backend was known dead
 * before it was sent). */
void fu_mark(struct fu_ledger *l, int id, enum fu_state state);
enum fu_state fu_state_of(struct fu_ledger *l, int id);

/* Reads the table and checks it against the ledger (see above); also that the ambiguous
 * writes number at most max_ambiguous. Returns the number of rows. */
long fu_ledger_verify(struct fu_ledger *l, int max_ambiguous, const char *what);
void fu_ledger_drop(struct fu_ledger *l);

/* ---- a loopback TCP proxy that can freeze -------------------------------------------- */
/* Starts tests/faults/freeze_proxy.py forwarding 127.0.0.1:<returned port> to host:port. */
int fu_proxy_start(const char *host, const char *port);
void fu_proxy_freeze(void);  /* SIGSTOP: nothing forwarded, nothing closed */
void fu_proxy_thaw(void);    /* SIGCONT */
void fu_proxy_stop(void);    /* SIGKILL and reap; also done at exit */

#endif

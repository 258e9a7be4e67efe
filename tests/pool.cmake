# tests/pool.cmake: leak containment, caps, limits, credentials and every connect path.

# --- Leak containment (test_leak.c): each saturates the server, so SERIAL ---------------------
# PQDEDUP_UNBIND_AFTER=1h: an idle handle's connection moves only under pressure, so each leak
# really fills the server before anything moves (the default setting is issue 9's test,
# leak_threads_default); PQDEDUP_MAX_WAIT=1s keeps the waits for a refused connect short.
set(_pqd_leak_env PQDEDUP_UNBIND_AFTER=1h PQDEDUP_MAX_WAIT=1s)
# Leaking past max_connections as a superuser: every connect answers its queries, backends
# stay <= max_connections, a connect for another key meanwhile gets the server's "too many
# clients already" after PQDEDUP_MAX_WAIT, finishing half the handles leaves the rest working.
pqdedup_add_test(NAME leak_past_max_superuser SOURCES test_leak.c ARGS superuser
                 ENV ${_pqd_leak_env} SERIAL LABELS pool)
# The same as an ordinary role over TCP with a password ("remaining connection slots are
# reserved").
pqdedup_add_test(NAME leak_past_max_role PROGRAM test_leak ARGS role ENV ${_pqd_leak_env}
                 SERIAL LABELS pool)
# A leak of async connects (PQconnectStart + PQconnectPoll loop; Ruby's pg connects only this
# way), twice max_connections: every connect works (a refusal during PQconnectPoll is answered
# with an idle handle's connection, issue 10), every handle answers again at the end.
pqdedup_add_test(NAME leak_async_contained PROGRAM test_leak ARGS async ENV ${_pqd_leak_env}
                 SERIAL LABELS pool)
# Handles inside transactions keep their backends and rows: with all of them busy a connect
# gets the server's "too many clients already" after PQDEDUP_MAX_WAIT; one gone idle lends its
# connection to another thread's connect at once, and then fails as a broken connection.
pqdedup_add_test(NAME leak_busy_not_moved PROGRAM test_leak ARGS busy ENV ${_pqd_leak_env}
                 SERIAL LABELS pool)
# A leaking program that exits without finishing: the server has its slots back.
pqdedup_add_test(NAME leak_exit_frees_slots PROGRAM test_leak ARGS exit ENV ${_pqd_leak_env}
                 SERIAL LABELS pool)

# Issue 9's acceptance test, default settings: 8 threads each leak connects (8 x 40 against
# max_connections=40; connect, a query whose answer must be its own, never finish) while each
# uses 4 live handles that stay independent throughout: a transaction keeps its backend and
# its uncommitted row to itself, a rollback on one never loses another's committed rows, a
# temporary table is seen by its handle only. Negative control first: the same leak under
# PQDEDUP_DISABLE=1 fails with "too many clients already".
pqdedup_add_test(NAME leak_threads_default SOURCES test_leak_threads.c SERIAL LABELS pool)

# --- Caps (test_cap.c) ----------------------------------------------------------------------
# PQDEDUP_UNBIND_AFTER=0: a leaking loop runs on exactly 1 backend; 3 threads leaking at once
# on at most 3.
pqdedup_add_test(NAME cap_unbind_after_0 SOURCES test_cap.c ARGS unbind0 3
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS pool)
# Default PQDEDUP_UNBIND_AFTER (100ms): a leak pausing 150ms between requests stays on 1
# backend; a handle idle for less keeps its connection; 3 handles in transactions get 3.
pqdedup_add_test(NAME cap_unbind_after_default PROGRAM test_cap ARGS unbind-default 3
                 LABELS pool)
# PQDEDUP_UNBIND_AFTER=100ms: 2 handles running a query every 10ms are never idle for 100ms, so
# a new connect does not take their connections.
pqdedup_add_test(NAME cap_unbind_after_active_kept PROGRAM test_cap ARGS unbind-active 2
                 ENV PQDEDUP_UNBIND_AFTER=100ms LABELS pool)
# PQDEDUP_UNBIND_AFTER=1h: 3 idle handles keep their connections while 3 more connects open
# new ones; at PQDEDUP_MAX_PER_KEY=6 the longest idle handle's connection moves at once.
pqdedup_add_test(NAME cap_unbind_after_large PROGRAM test_cap ARGS unbind-large 3
                 ENV PQDEDUP_UNBIND_AFTER=1h PQDEDUP_MAX_PER_KEY=6 PQDEDUP_MAX_WAIT=30s
                 LABELS pool)
# Leaking async connects (PQconnectStart + poll loop) run on 1 backend with
# PQDEDUP_UNBIND_AFTER=0 ...
pqdedup_add_test(NAME cap_unbind_after_0_async PROGRAM test_cap ARGS async-leak 1
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS pool)
# ... and on exactly N with PQDEDUP_MAX_PER_KEY=N.
pqdedup_add_test(NAME cap_max_per_key_async PROGRAM test_cap ARGS async-leak 3
                 ENV PQDEDUP_MAX_PER_KEY=3 PQDEDUP_UNBIND_AFTER=1h LABELS pool)
# PQDEDUP_MAX_PER_KEY=5: a leaking loop moves idle handles' connections at the cap, at once:
# exactly 5 backends, every query answered, no connect waits.
pqdedup_add_test(NAME cap_max_per_key_leak PROGRAM test_cap ARGS max-leak 5
                 ENV PQDEDUP_MAX_PER_KEY=5 PQDEDUP_UNBIND_AFTER=1h PQDEDUP_MAX_WAIT=30s
                 LABELS pool)
# At the cap with only handles in transactions (this thread's): wait PQDEDUP_MAX_WAIT, then a
# failed connection whose message names PQDEDUP_MAX_PER_KEY; an idle one's connection moves at
# once (well within the wait).
pqdedup_add_test(NAME cap_max_per_key_busy PROGRAM test_cap ARGS max-busy 2
                 ENV PQDEDUP_MAX_PER_KEY=2 PQDEDUP_MAX_WAIT=2s LABELS pool)
# The same with the handles in transactions in other threads, blocking and async connects;
# one that goes idle lends its connection across threads at once.
pqdedup_add_test(NAME cap_max_per_key_threads PROGRAM test_cap ARGS max-threads 2
                 ENV PQDEDUP_MAX_PER_KEY=2 PQDEDUP_MAX_WAIT=2s LABELS pool)
# At the cap, another thread finishes during the wait: the waiting connect gets its backend.
pqdedup_add_test(NAME cap_max_per_key_handoff PROGRAM test_cap ARGS max-handoff 2
                 ENV PQDEDUP_MAX_PER_KEY=2 PQDEDUP_MAX_WAIT=30s LABELS pool)

# pgbench's shape with default settings: each of 2 threads holds 4 live connections for one key
# at once: 4 independent sessions (4 backends while all are in transactions; a transaction, a
# rollback, a temp table, a SET not seen across).
pqdedup_add_test(NAME leak_pgbench_shape SOURCES test_leak_pgbench.c LABELS pool)
# The same with PQDEDUP_UNBIND_AFTER=0: idle handles lend their connections at once, and the
# sessions are still independent.
pqdedup_add_test(NAME leak_pgbench_shape_unbind_0 PROGRAM test_leak_pgbench
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS pool)

# --- Credentials (test_auth.c) ----------------------------------------------------------------
# A wrong password (conninfo, URI, arrays, async, PGPASSWORD) fails while a good connection with
# otherwise equal parameters is kept or held, and the good one is reused afterwards; users,
# databases (also by PGUSER/PGDATABASE) and SSL modes never share a session.
pqdedup_add_test(NAME auth_keys SOURCES test_auth.c LABELS pool)
# The same where idle handles lend their connections at once (PQDEDUP_UNBIND_AFTER=0): never
# to another key ...
pqdedup_add_test(NAME auth_keys_unbind_0 PROGRAM test_auth ENV PQDEDUP_UNBIND_AFTER=0
                 LABELS pool)
# ... and where one connection per key is the cap (a wrong key match would be moved).
pqdedup_add_test(NAME auth_keys_max_per_key PROGRAM test_auth
                 ENV PQDEDUP_MAX_PER_KEY=1 PQDEDUP_MAX_WAIT=200ms LABELS pool)

# --- Limits on what is kept (test_cap_limits.c) -------------------------------------------------
# PQDEDUP_KEEP_PER_KEY=2: 5 in transactions finished at once leave 2 backends; the next 5
# connects in transactions reuse those 2.
pqdedup_add_test(NAME cap_keep_per_key_2 SOURCES test_cap_limits.c ARGS keep2
                 ENV PQDEDUP_KEEP_PER_KEY=2 LABELS pool)
# PQDEDUP_KEEP_PER_KEY=0: nothing kept, every cycle a new backend, none left.
pqdedup_add_test(NAME cap_keep_per_key_0 PROGRAM test_cap_limits ARGS keep0
                 ENV PQDEDUP_KEEP_PER_KEY=0 LABELS pool)
# PQDEDUP_IDLE_TIMEOUT=1s: idle > 1s is not reused; the backend goes at the next pqdedup call.
pqdedup_add_test(NAME cap_idle_timeout PROGRAM test_cap_limits ARGS idle
                 ENV PQDEDUP_IDLE_TIMEOUT=1s LABELS pool)
# PQDEDUP_MAX_LIFETIME=1s: older than 1s is closed at finish and never reused.
pqdedup_add_test(NAME cap_max_lifetime PROGRAM test_cap_limits ARGS lifetime
                 ENV PQDEDUP_MAX_LIFETIME=1s LABELS pool)
# After a burst of 5, a churning loop (each reset done before its next connect) reuses the most
# recently kept one: every backend it leaves unused for longer than the timeout is closed.
pqdedup_add_test(NAME cap_burst_ages_out PROGRAM test_cap_limits ARGS burst
                 ENV PQDEDUP_IDLE_TIMEOUT=1s LABELS pool)

# --- Connect paths (test_paths.c) ---------------------------------------------------------------
# key=value, URI, PQconnectdbParams (expand_dbname 0/1), PQsetdbLogin and PQsetdb work and
# equivalent forms reuse one kept backend; one differing parameter does not.
pqdedup_add_test(NAME paths_forms SOURCES test_paths.c ARGS forms LABELS pool)
# PQconnectStart(Params) + PQconnectPoll/PQsocket/poll(): fresh ones are kept at finish, and
# later ones get the kept connection (both loop orders).
pqdedup_add_test(NAME paths_async PROGRAM test_paths ARGS async LABELS pool)
# PQping/PQpingParams answer PQPING_OK and leave kept and held connections alone.
pqdedup_add_test(NAME paths_ping PROGRAM test_paths ARGS ping LABELS pool)
# PQreset and PQresetStart/PQresetPoll: new backend, works, still kept at finish.
pqdedup_add_test(NAME paths_reset PROGRAM test_paths ARGS reset LABELS pool)
# Malformed conninfo gives libpq's own status and message; PQfinish(NULL) is harmless.
pqdedup_add_test(NAME paths_malformed PROGRAM test_paths ARGS malformed LABELS pool)

# At exit (main returns, or exit() from a thread), kept connections over the unix socket and
# SSL are closed with a Terminate: the server log shows no unexpected EOF for them (a control
# child that _exit()s shows the check can fail). Reads the server log: PQD_TEST_PGLOG.
pqdedup_add_test(NAME paths_exit_closes_cleanly SOURCES test_paths_exit.c LABELS pool)

# tests/handles.cmake: the handle model's promises (MODEL: every connect gets a PGconn * of
# pqdedup's own, bound to a server connection only while it needs one), test_handles_*.c.

# Moving: an idle, clean handle's server connection moves to a handle that needs one (same
# backend pid); the moved-from handle answers PQstatus OK, PQTRANS_IDLE, its own last error,
# its last backend pid and parameters while pg_stat_activity shows it holds no backend; its
# next call takes the backend back on a reset session (another handle's hidden work_mem and
# temp table gone, its error text not shown); the longest-idle handle goes first; a handle in
# a transaction never loses its backend.
# Once the moved-from handle is bound again by a call that sends nothing (PQconninfo), its
# PQerrorMessage is still its own last error, as plain libpq keeps it.
pqdedup_add_test(NAME handles_move SOURCES test_handles_move.c
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 LABELS handles)


# Sticky: for SET inside a transaction block, SET ROLE, PREPARE, PQprepare, LISTEN, CREATE TEMP TABLE, pg_advisory_lock,
# DECLARE ... WITH HOLD, set_config, PQsetClientEncoding, PQregisterEventProc, a large object,
# an open or aborted transaction, COPY in progress and pipeline mode, the handle keeps its
# backend and its state while another connect of its key needs one: at PQDEDUP_MAX_PER_KEY=1
# that connect waits and fails with the cap's message; with PQDEDUP_UNBIND_AFTER=0 it gets a
# new backend and sees none of the state. A NOTIFY sent later still arrives; the event
# procedure hears CONNDESTROY at PQfinish and nothing pqdedup caused. At the cap, a handle whose
# connection moved to a handle that then turned sticky fails its next query as a broken
# connection with the cap's message, and PQreset brings it back once that handle finished.
# That failed query's PQerrorMessage says why (the cap's message) before libpq's "no connection
# to the server", and PQreset recovers the handle through the pool once capacity frees up.
pqdedup_add_test(NAME handles_sticky_cap SOURCES test_handles_sticky.c ARGS cap
                 ENV PQDEDUP_MAX_PER_KEY=1 PQDEDUP_MAX_WAIT=300ms LABELS handles)
pqdedup_add_test(NAME handles_sticky_new PROGRAM test_handles_sticky ARGS new
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS handles)

# Client-side state belongs to the handle: with two handles passing one backend between them
# at every query, a notice raised after a move reaches only the handle's own receiver or
# processor with its own argument (never after its PQfinish); error verbosity and context
# visibility shape only their own handle's errors, and an unbound handle's setters return its
# own previous values; PQisnonblocking stays per handle and a nonblocking send + poll loop
# works after a move; each PQtrace file holds its own handle's traffic only (no resets).
pqdedup_add_test(NAME handles_client_state SOURCES test_handles_client.c
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 LABELS handles)

# PQsocket: one descriptor number for the handle's life (bound, unbound, bound again); poll()
# on it sees the handle's own results after a move, and nothing of another handle's traffic
# on the connection it had; an epoll registration kept across moves does the same; -1 after
# the server closed its bound connection (pg_terminate_backend + a failed query).
# epoll: a registration made for each wait follows the handle; one kept across a move stays on
# the socket the handle had (README, "The socket": the documented limit), both asserted.
pqdedup_add_test(NAME handles_socket SOURCES test_handles_socket.c
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 LABELS handles)
# Default settings (finished handles' connections kept): 200 connects in a row each ask PQsocket
# and wait on it for their own result: a socket, not readable while idle; every 10th resets its
# connection first (PQreset) and asks after, getting the new socket; the process's descriptors
# do not grow with the connects.
pqdedup_add_test(NAME handles_socket_churn PROGRAM test_handles_socket ARGS churn LABELS handles)
# The same with PQDEDUP_KEEP_PER_KEY=0: every finished connection is closed, the descriptor its
# handle had for PQsocket with it.
pqdedup_add_test(NAME handles_socket_churn_unkept PROGRAM test_handles_socket ARGS churn
                 ENV PQDEDUP_KEEP_PER_KEY=0 LABELS handles)
# While an asynchronous connect waits for a server connection (the cap of 1 held by a
# transaction), PQsocket is a socket (Ruby's pg wraps it with BasicSocket.for_fd) and keeps its
# number into the connection; it turns readable when the holder commits, and at
# PQDEDUP_MAX_WAIT for one that waits in vain (whose poll then fails, PQsocket -1).
pqdedup_add_test(NAME handles_socket_connecting SOURCES test_handles_socket.c ARGS connecting
                 ENV PQDEDUP_MAX_PER_KEY=1 PQDEDUP_MAX_WAIT=1s LABELS handles)

# A nonblocking handle's command that must wait for a server connection (the cap of 1 held by
# a transaction) is kept, and the send returns at once: one thread commits the holder after
# the send, then collects the command's result (binary parameter, simple query, unnamed
# prepared statement) through its descriptor; at PQDEDUP_MAX_WAIT a kept command answers one
# error result saying why (also when read at once with PQgetResult, which waits).
pqdedup_add_test(NAME handles_queued_released SOURCES test_handles_queued.c ARGS released
                 ENV PQDEDUP_MAX_PER_KEY=1 PQDEDUP_UNBIND_AFTER=0 PQDEDUP_MAX_WAIT=20s LABELS handles)
pqdedup_add_test(NAME handles_queued_deadline PROGRAM test_handles_queued ARGS deadline
                 ENV PQDEDUP_MAX_PER_KEY=1 PQDEDUP_UNBIND_AFTER=0 PQDEDUP_MAX_WAIT=1s LABELS handles)
# The reset of the server connection a nonblocking handle's command takes (an idle handle's)
# is collected in the app's own poll cycle: the send returns while the reset still runs.
pqdedup_add_test(NAME handles_queued_resetting PROGRAM test_handles_queued ARGS resetting
                 ENV "PQDEDUP_RESET_QUERY=SELECT pg_sleep(1)" PQDEDUP_UNBIND_AFTER=0 LABELS handles)

# Cancels reach only the handle's own query: PQcancel through PQgetCancel(A) from another
# thread cancels A's pg_sleep (57014); once B took A's backend and runs pg_sleep there, A's
# earlier cancel object sends nothing and returns 1 (B's query completes); bound to another
# backend, A's query is cancelled through the same object; PQrequestCancel and PQcancel from a
# SIGALRM handler cancel A's query; after PQfinish(A) its old object never cancels the query
# of the handle its backend went to; PQfreeCancel afterwards is clean; PQrequestCancel works
# on a handle that never called PQgetCancel.
# PQrequestCancel works on a handle that never called PQgetCancel (every binding publishes
# its server connection's cancel target).
pqdedup_add_test(NAME handles_cancel SOURCES test_handles_cancel.c
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS handles)

# A handle's ends: PQconnectStart / PQconnectStartParams answered by a kept connection read
# CONNECTION_STARTED until the first PQconnectPoll (the socket writable, as libpq's documented
# loop waits for), which returns PGRES_POLLING_OK, then CONNECTION_OK on the kept backend; an
# asynchronous connect that opens a new backend completes with the documented poll loop;
# calls on a finished handle fail as on a failed connection whose error mentions PQfinish
# (also after a failed PQexec on it, and from two threads at once), a second PQfinish is
# ignored, and libpq's connect loop does not connect it; every live connect gets a pointer of
# its own; a program that never calls libpq, started with the library preloaded, connects to
# nothing.
# The library's start-up probe and a finished handle's stand-in never reach the network (a
# program that loads the library connects nowhere; a finished handle reads CONNECTION_BAD,
# says PQfinish, and never runs a query).
pqdedup_add_test(NAME handles_connect SOURCES test_handles_connect.c LABELS handles)

# fork: in a child, an inherited idle clean handle runs on a backend of the child's own (not
# the parent's) and the parent's handle keeps working on its own; the child's PQfinish of
# inherited handles (idle, and inside a transaction), ending with exit() or _exit(), never
# breaks the parent's sessions (same backends, the transaction commits); an inherited handle
# with a plain SET runs it again on the child's own backend; an inherited sticky
# handle keeps plain libpq's behaviour in the child (the parent's backend and settings), and
# the child's PQfinish of it leaves the parent's session working.
pqdedup_add_test(NAME handles_fork SOURCES test_handles_fork.c LABELS handles)

# A handle is its own session: two live handles of one thread never see each other's open
# transaction, temp table, SET or prepared statement, and a rollback on one never loses the
# other's committed rows; 8 threads x 4 live handles (pgbench's shape, with a SET and a temp
# table on two of them) over many rounds: each sees only its own uncommitted row, the four of
# a thread are on four backends inside their transactions, sticky state stays where it was
# made, exactly the committed rows remain; every live connect has a pointer of its own.
# SERIAL: up to 33 backends at once. Once with default settings, once with
# PQDEDUP_UNBIND_AFTER=0 (connections move at every chance).
pqdedup_add_test(NAME handles_session SOURCES test_handles_session.c SERIAL LABELS handles)
pqdedup_add_test(NAME handles_session_unbind0 PROGRAM test_handles_session
                 ENV PQDEDUP_UNBIND_AFTER=0 SERIAL LABELS handles)

# Threads: 8 threads churn handles of one key (connect, transaction, query, finish; one connect
# in 8 leaked and later used again) while 8 others hold handles inside transactions: a backend
# pid registered inside every transaction is never registered twice (no backend serves two
# handles at once), no handle changes backend inside its transaction, pg_stat_activity shows
# every registered backend inside a transaction, every answer is right. SERIAL: up to
# max_connections backends. Once with default settings, once with PQDEDUP_UNBIND_AFTER=0.
pqdedup_add_test(NAME handles_threads SOURCES test_handles_threads.c SERIAL LABELS handles)
pqdedup_add_test(NAME handles_threads_unbind0 PROGRAM test_handles_threads
                 ENV PQDEDUP_UNBIND_AFTER=0 SERIAL LABELS handles)

# Carried SETs: a plain SET or RESET of a session parameter outside a transaction block does not
# pin a handle. psqlODBC's connect-time string and SETs of DateStyle, TIME ZONE, search_path, a
# custom parameter and work_mem: another connect takes A's backend and sees none of them; A,
# unbound, reports its DateStyle and TimeZone; each time A is bound again its SETs run first, and
# the handle that lost the backend to it sees none. RESET name, RESET ALL and PQreset drop what
# it carries. A SET inside a transaction block (in one string or across commands), one whose
# string failed, SET client_encoding and SET SESSION AUTHORIZATION keep the handle on its
# backend. So do a SET whose results were not all read before the next PQexec (libpq drops
# them), one whose error result was read before an escape call cleared libpq's error text, and
# one after a function changed TimeZone where pqdedup could not see it. A SET that cannot run
# again (its GRANT SET ON PARAMETER revoked) fails the handle's next query as a broken
# connection saying why; PQreset recovers it.
pqdedup_add_test(NAME handles_sets_move SOURCES test_handles_sets.c ARGS move
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 LABELS handles)
# Six handles with SETs of their own, never finished, at PQDEDUP_MAX_PER_KEY=2: every connect
# succeeds, every handle sees its own settings in three rounds, never more than two backends.
# With PQDEDUP_RESET_QUERY='' nothing cleans a connection between handles: a SET keeps the
# handle on its backend, and another connect never sees it.
pqdedup_add_test(NAME handles_sets_noreset PROGRAM test_handles_sets ARGS noreset
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 PQDEDUP_RESET_QUERY= LABELS handles)
pqdedup_add_test(NAME handles_sets_leak PROGRAM test_handles_sets ARGS leak
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_KEEP_PER_KEY=0 PQDEDUP_MAX_PER_KEY=2 LABELS handles)

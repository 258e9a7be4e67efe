# tests/concurrency.cmake: threads, fork and dead connections (test_threads.c, test_fork.c, test_dead.c).

# 8 threads x 2000 connect/pg_backend_pid()/finish cycles with one key: no errors, no backend
# (or handle) ever in two threads' hands at once, at most 8 backends ever.
# PQDEDUP_UNBIND_AFTER=1h: a thread's handle is idle between its two queries, and on a busy
# machine easily for 10ms (the default), after which another thread's connect may rightly
# take its server connection; this test is about the kept connections handed out, never to
# two threads at once (moves between threads: handles_threads).
pqdedup_add_test(NAME threads_churn SOURCES test_threads.c
                 ARGS churn --threads 8 --cycles 2000 ENV PQDEDUP_UNBIND_AFTER=1h
                 LABELS concurrency)

# Connections opened by 4 threads are finished by 4 others (through a queue): they work in
# the finishing thread, are never shared, and are reused. PQDEDUP_UNBIND_AFTER=1h: a handle
# waiting in the queue is idle, and the consumer must find it on the backend it was opened on.
pqdedup_add_test(NAME threads_handoff PROGRAM test_threads
                 ARGS handoff --producers 4 --consumers 4 --cycles 1000
                 ENV PQDEDUP_UNBIND_AFTER=1h LABELS concurrency)

# fork: the child connects with the parent's key and gets its own backends, finishes them and
# the inherited held connection, exit(0)s; the parent's held and kept connections survive.
# PQDEDUP_UNBIND_AFTER=1h in all fork_* tests: the parent's held handle is idle while it opens
# the next one, and once idle 10ms (the default; easily reached under valgrind) its server
# connection may rightly move to that connect; these tests name backends by what they held.
pqdedup_add_test(NAME fork_inherit SOURCES test_fork.c ARGS inherit ENV PQDEDUP_UNBIND_AFTER=1h
                 LABELS concurrency)
# The same over TCP with SSL: the child must not write (not even close_notify) on the socket.
pqdedup_add_test(NAME fork_inherit_ssl PROGRAM test_fork
                 ARGS inherit --conninfo "host=127.0.0.1 sslmode=require"
                 ENV PQDEDUP_UNBIND_AFTER=1h LABELS concurrency)
# The child _exit()s without finishing anything.
pqdedup_add_test(NAME fork_no_finish PROGRAM test_fork ARGS no-finish ENV PQDEDUP_UNBIND_AFTER=1h
                 LABELS concurrency)
pqdedup_add_test(NAME fork_no_finish_ssl PROGRAM test_fork
                 ARGS no-finish --conninfo "host=127.0.0.1 sslmode=require"
                 ENV PQDEDUP_UNBIND_AFTER=1h LABELS concurrency)
# Pre-fork server shape: 4 workers churn 200 cycles each with their own backends and exit.
pqdedup_add_test(NAME fork_prefork PROGRAM test_fork ARGS prefork ENV PQDEDUP_UNBIND_AFTER=1h
                 LABELS concurrency)
# A tight pre-fork fleet, default settings: 4 workers churning as a role limited to 4
# connections, the last started late. Every connect works and each worker stays on one backend
# (plain libpq's footprint): no worker opens a spare while its kept connection's reset is in
# flight, which would hold the late worker's slot.
pqdedup_add_test(NAME fork_prefork_tight PROGRAM test_fork ARGS prefork-tight SERIAL
                 LABELS concurrency)
# fork while 3 other threads connect: the child's connect never deadlocks on a lock that a
# vanished thread held at the fork. NO_VALGRIND: valgrind checks each child for leaks even at
# _exit(), and what the parent's other threads were allocating at the fork is lost in the
# child (a false "definitely lost"); valgrind also serializes the threads, which hides the race.
# Not in ASan builds: GCC 12's ASan runtime does not hold its own allocator lock across fork,
# so a child of a multi-threaded process can hang in malloc (seen: the child stuck in
# __sanitizer::SizeClassAllocator64::GetFromAllocator under PQconnectStart, not in pqdedup).
# The plain and TSan builds run it.
if(NOT PQDEDUP_SANITIZE STREQUAL "address")
  pqdedup_add_test(NAME fork_threaded PROGRAM test_fork ARGS threaded NO_VALGRIND
                   LABELS concurrency)
endif()

# Dead connections. Kept connections killed by pg_terminate_backend are skipped silently
# (no error, nothing on stderr, no call to the app's old notice processors).
# PQDEDUP_UNBIND_AFTER=1h in all dead_* tests: they open connections one after another and
# name backends by what each held; an idle one may rightly lend its server connection to the
# next connect once idle 10ms (the default), which a loaded machine reaches.
pqdedup_add_test(NAME dead_terminate_kept SOURCES test_dead.c ARGS terminate-kept
                 ENV PQDEDUP_UNBIND_AFTER=1h LABELS concurrency)
# A held connection whose backend is terminated fails like plain libpq and is not kept.
pqdedup_add_test(NAME dead_terminate_held PROGRAM test_dead ARGS terminate-held
                 ENV PQDEDUP_UNBIND_AFTER=1h LABELS concurrency)
# Kept connections across a server restart: SERIAL, since every other test loses its sessions.
pqdedup_add_test(NAME dead_restart_immediate PROGRAM test_dead ARGS restart immediate
                 ENV PQDEDUP_UNBIND_AFTER=1h SERIAL LABELS concurrency)
pqdedup_add_test(NAME dead_restart_fast PROGRAM test_dead ARGS restart fast
                 ENV PQDEDUP_UNBIND_AFTER=1h SERIAL LABELS concurrency)

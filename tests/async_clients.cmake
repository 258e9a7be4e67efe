# tests/async_clients.cmake: issue 10's acceptance tests: threaded, asyncio and multi-process clients leaking past max_connections, an asyncio connection pool and concurrent asyncio sessions, plain and under the launcher (scripts in tests/async_clients/).
#
# Each script runs the client plain first (for the leaks, the negative control: the server
# refuses connects), then under the pqdedup launcher with default settings; both runs must exit
# 0 with nothing on stderr and leave no backend behind.
# NO_PRELOAD: the script runs plain; the launcher preloads pqdedup into the client.
# NO_VALGRIND: the clients are python3, ruby and php (valgrind would test the interpreters).
# In ASan/TSan builds the interpreters cannot start with the sanitizer runtime and libpq
# loaded: the scripts exit 77, reported as skipped (tests/matrix/run.sh says why).
# Debian packages: python3-psycopg python3-psycopg-pool python3-psycopg2 ruby-pg php-cli
# php-pgsql.

set(_pqd_async ${CMAKE_CURRENT_SOURCE_DIR}/async_clients)

# pqdedup_async_test(NAME SCRIPT [ARGS...] [SERIAL])
function(pqdedup_async_test name script)
  cmake_parse_arguments(A "SERIAL" "" "" ${ARGN})
  set(serial "")
  if(A_SERIAL)
    set(serial SERIAL)
  endif()
  pqdedup_add_test(NAME ${name} COMMAND bash ${_pqd_async}/${script} ${A_UNPARSED_ARGUMENTS}
                   NO_PRELOAD NO_VALGRIND ${serial} TIMEOUT 180 LABELS async_clients)
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
endfunction()

# Leaks of 2 x max_connections connects, all at once, never closed (leak.sh): plain, the server
# refuses; under the launcher every connect works and every leaked connection answers again
# after all connects, with the role's backends within its slots. They fill the server: SERIAL.
# psycopg 3 sync in 8 threads (PQconnectStart + poll, through ctypes and the loader auditor).
pqdedup_async_test(async_leak_psycopg3_threads leak.sh psycopg3-threads SERIAL)
# psycopg 3 AsyncConnection in 50 asyncio tasks of one event loop. The 50 tasks' rechecks at
# once need more server connections than the 37 slots: a query of an unbound handle that would
# wait for one is kept (QUEUED) and PQsendQuery returns at once, so the loop goes on to collect
# the other queries' results, which frees their connections (it stalled PQDEDUP_MAX_WAIT per
# extra task, which then failed, while the query waited inside PQsendQuery).
pqdedup_async_test(async_leak_psycopg3_asyncio leak.sh psycopg3-asyncio SERIAL)
# psycopg2 async connections (async_=1, psycopg2's poll loop) in 8 threads.
pqdedup_async_test(async_leak_psycopg2_async leak.sh psycopg2-async SERIAL)
# Ruby pg (PQconnectStart + poll, nonblocking) in 8 threads. After each PQconnectPoll Ruby's
# pg closes the IO it made from PQsocket's number, and Ruby wakes every thread waiting on that
# number ("stream closed in another thread"); PQsocket is a number of the handle's own from
# the first call, so no other thread waits on it (it failed about 1 run in 20 before).
pqdedup_async_test(async_leak_ruby_threads leak.sh ruby-threads SERIAL)
# Ruby pg connects while the only server connection (PQDEDUP_MAX_PER_KEY=1) is in a
# transaction: the connect waits on socket_io (a socket: BasicSocket.for_fd refuses others),
# then runs on that backend once it is committed, with the same socket number.
pqdedup_async_test(async_wait_ruby wait.sh)
# PHP pg_connect(PGSQL_CONNECT_ASYNC) in 4 processes (PHP's CLI has no threads: pcntl_fork),
# each with its own pool.
pqdedup_async_test(async_leak_php_processes leak.sh php-async SERIAL)

# psycopg_pool.AsyncConnectionPool, max_size 10, serving 200 concurrent tasks: every answer
# right, no task longer than the pool's timeout, at most 10 backends; wall times printed.
pqdedup_async_test(async_pool_psycopg3 pool.sh)

# 20 AsyncConnections in transactions at once (asyncio.gather): each sees only its own
# uncommitted row on its own backend (20 distinct), then exactly the committed half's rows.
pqdedup_async_test(async_sessions_psycopg3 sessions.sh)

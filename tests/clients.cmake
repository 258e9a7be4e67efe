# tests/clients.cmake: real client programs (pgbench, psycopg2 on Debian's python3, psql) plain and under pqdedup (tests/clients/).
#
# Every script here is registered NO_PRELOAD: the script itself runs plain, and each client
# program in it is run explicitly either plain (the negative control) or under pqdedup through
# the launcher (tests/clients/lib.sh).
# NO_VALGRIND: running pgbench, python3 or psql under valgrind tests valgrind, not pqdedup, and
# takes minutes; the C tests cover the library under valgrind.
# Not in sanitizer builds: the library built there needs the ASan/TSan runtime preloaded first,
# and on Debian 12 (gcc 12) that runtime preloaded into these uninstrumented programs
# deadlocks in glibc's __libc_setlocale_lock (in p11-kit's destructor, via libpq -> libldap ->
# gnutls -> p11-kit), with or without pqdedup: `LD_PRELOAD=$(gcc -print-file-name=libasan.so)
# /usr/lib/postgresql/15/bin/psql --version` hangs, so does pgbench at exit, and python3
# hangs at start once libpq is preloaded with the runtime. The C tests cover the library in
# those builds.
if(PQDEDUP_SANITIZE)
  return()
endif()

set(_pqd_clients ${CMAKE_CURRENT_SOURCE_DIR}/clients)

# pgbench -C -S -T 3 -c 4 -j 2: no error or failed transaction, at most 8 server sessions (the
# server's own count and pqdedup's stats), where plain -C opens one per transaction.
pqdedup_add_test(NAME client_pgbench_connect COMMAND bash ${_pqd_clients}/pgbench.sh
                 NO_PRELOAD NO_VALGRIND LABELS clients)
# The same with -M prepared: pgbench PREPAREs again after each reconnect, which only works if
# DISCARD ALL deallocated the previous holder's statements.
pqdedup_add_test(NAME client_pgbench_prepared COMMAND bash ${_pqd_clients}/pgbench.sh -M prepared
                 NO_PRELOAD NO_VALGRIND LABELS clients)

# psycopg2 leaking 150 connections: refused past max_connections plain, all work under pqdedup
# with at most max_connections backends. SERIAL: it fills every connection slot of the server.
pqdedup_add_test(NAME client_psycopg2_leak COMMAND bash ${_pqd_clients}/psycopg2.sh leak
                 NO_PRELOAD NO_VALGRIND SERIAL LABELS clients)
# psycopg2 connect/query/close x 500 under pqdedup: at most 2 backends.
pqdedup_add_test(NAME client_psycopg2_churn COMMAND bash ${_pqd_clients}/psycopg2.sh churn
                 NO_PRELOAD NO_VALGRIND LABELS clients)

# psql with 20 `\c`: works, few backends, no SET survives a reconnect.
pqdedup_add_test(NAME client_psql_reconnect COMMAND bash ${_pqd_clients}/psql_reconnect.sh
                 NO_PRELOAD NO_VALGRIND LABELS clients)

# psqlODBC (pyodbc + unixODBC) leaking 30 connections against a role's CONNECTION LIMIT 4: the
# driver's SETs at every connect are carried, not pinning: refused at the 5th plain, all work
# under pqdedup with the driver's settings, every row committed once.
pqdedup_add_test(NAME client_odbc_leak COMMAND bash ${_pqd_clients}/odbc.sh
                 NO_PRELOAD NO_VALGRIND LABELS clients)

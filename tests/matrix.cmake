# tests/matrix.cmake: the client matrix (tests/matrix/): each libpq client churns and leaks, plain and under the pqdedup launcher (docs/CLIENTS.md is the table).
#
# Each test is tests/matrix/run.sh CLIENT MODE EXPECT: the client program runs plain first (the
# negative control: one backend per connect, or the server's refusal past max_connections),
# then under the launcher, where EXPECT says what pqdedup does with it (reused, contained,
# passthrough, persistent; see run.sh). Both runs must answer every query, exit 0
# with nothing on stderr, and leave no backend behind.
# Registered NO_PRELOAD (the script preloads nothing into itself; the launcher does it for the
# client) and NO_VALGRIND (the clients are python3, perl, php and ruby; the C ones are tiny and
# the library's own C tests cover valgrind). Leak tests fill the server's slots: SERIAL.
# In ASan/TSan builds only the C clients run; the interpreters cannot start with a sanitizer
# runtime and libpq loaded, so their tests report "skipped" (run.sh says why).
# Debian packages: python3-psycopg2 python3-psycopg libdbd-pg-perl php-cli php-pgsql ruby-pg.
#
# PHP's pgsql/pdo_pgsql (loaded with RTLD_DEEPBIND), psycopg 3 and the dlopen C client (libpq's
# functions from dlsym) are reached through the launcher's loader auditor; with --no-audit
# (PQDEDUP_AUDIT=0, as with LD_PRELOAD alone) they are "passthrough": they must work exactly as
# plain libpq, and pqdedup must never reuse or move what they open.

set(_pqd_matrix ${CMAKE_CURRENT_SOURCE_DIR}/matrix)

# The C clients: one source, linked with -lpq, or dlopen()ing libpq.so.5 (not linked with it).
add_executable(matrix_libpq ${_pqd_matrix}/matrix_libpq.c)
target_link_libraries(matrix_libpq PRIVATE PkgConfig::LIBPQ)
add_executable(matrix_libpq_dlopen ${_pqd_matrix}/matrix_libpq.c)
target_compile_definitions(matrix_libpq_dlopen PRIVATE MATRIX_DLOPEN)
target_include_directories(matrix_libpq_dlopen PRIVATE ${LIBPQ_INCLUDE_DIRS})
target_link_libraries(matrix_libpq_dlopen PRIVATE ${CMAKE_DL_LIBS})

# pqdedup_matrix_test(CLIENT MODE EXPECT [SUFFIX s] [ENV ...] [QUICK]): registers
# matrix_<client>_<mode><s>; QUICK also puts it in the quick suite (tests/run-all.sh --quick).
function(pqdedup_matrix_test client mode expect)
  cmake_parse_arguments(M "QUICK" "SUFFIX" "ENV" ${ARGN})
  string(REPLACE "-" "_" name "matrix_${client}_${mode}${M_SUFFIX}")
  set(serial "")
  if(mode STREQUAL "leak")
    set(serial SERIAL)
  endif()
  set(quick "")
  if(M_QUICK)
    set(quick quick)
  endif()
  pqdedup_add_test(NAME ${name} COMMAND bash ${_pqd_matrix}/run.sh ${client} ${mode} ${expect}
                   ENV "MATRIX_C=$<TARGET_FILE:matrix_libpq>"
                       "MATRIX_C_DLOPEN=$<TARGET_FILE:matrix_libpq_dlopen>" ${M_ENV}
                   NO_PRELOAD NO_VALGRIND ${serial} TIMEOUT 120 LABELS matrix ${quick})
  # run.sh exits 77 for an interpreter in a sanitizer build (see run.sh): reported as skipped.
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
endfunction()

# C linked with -lpq (PQconnectdb/PQfinish bind to the preloaded library): reused, contained.
pqdedup_matrix_test(c churn reused QUICK)
pqdedup_matrix_test(c leak contained QUICK)

# C with dlopen("libpq.so.5") + dlsym: reached through the auditor: reused, contained.
pqdedup_matrix_test(c-dlopen churn reused)
pqdedup_matrix_test(c-dlopen leak contained)
# Without the auditor (PQDEDUP_AUDIT=0) pqdedup sees only libpq's inner PQconnectStart, never the
# finish: plain libpq behaviour ...
set(_pqd_no_audit "MATRIX_PQD_ENV=PQDEDUP_AUDIT=0")
pqdedup_matrix_test(c-dlopen churn passthrough SUFFIX _no_audit ENV "${_pqd_no_audit}")
pqdedup_matrix_test(c-dlopen leak passthrough SUFFIX _no_audit ENV "${_pqd_no_audit}")
# ... also with a per-key cap: a connection whose finish pqdedup cannot see must not count
# against PQDEDUP_MAX_PER_KEY (else the 4th connect fails in pqdedup's words) ...
pqdedup_matrix_test(c-dlopen churn passthrough SUFFIX _no_audit_capped
                    ENV "MATRIX_PQD_ENV=PQDEDUP_AUDIT=0 PQDEDUP_MAX_PER_KEY=3 PQDEDUP_MAX_WAIT=200ms")
# ... and with PQDEDUP_UNBIND_AFTER=0 (idle connections lend theirs at once): such a connection
# is libpq's, not a handle, and must never be moved to another connect.
pqdedup_matrix_test(c-dlopen leak passthrough SUFFIX _no_audit_unbind_now
                    ENV "MATRIX_PQD_ENV=PQDEDUP_AUDIT=0 PQDEDUP_UNBIND_AFTER=0")

# psycopg2 async connections (PQconnectStart + poll; nonblocking): reused, contained (a refusal
# arriving in PQconnectPoll is answered with an idle handle's server connection, or a wait the
# poll loop drives).
pqdedup_matrix_test(psycopg2-async churn reused)
pqdedup_matrix_test(psycopg2-async leak contained)

# psycopg 3, pure-Python implementation (ctypes: dlopen + dlsym; PQconnectStart + poll, then
# nonblocking), sync and asyncio: reached through the auditor: reused, contained. Without the
# auditor: plain libpq.
foreach(v sync asyncio)
  pqdedup_matrix_test(psycopg3-${v} churn reused)
  pqdedup_matrix_test(psycopg3-${v} leak contained)
  pqdedup_matrix_test(psycopg3-${v} churn passthrough SUFFIX _no_audit ENV "${_pqd_no_audit}")
endforeach()

# Perl DBD::Pg (RTLD_LOCAL extension linked with libpq; PQconnectdb): reused, contained.
pqdedup_matrix_test(dbd-pg churn reused)
pqdedup_matrix_test(dbd-pg leak contained)

# PHP CLI: pgsql.so and pdo_pgsql.so are loaded with RTLD_DEEPBIND, reached through the auditor.
# pg_connect and PDO (PQconnectdb): reused, contained.
foreach(v connect pdo)
  pqdedup_matrix_test(php-${v} churn reused)
  pqdedup_matrix_test(php-${v} leak contained)
endforeach()
# pg_connect with PGSQL_CONNECT_ASYNC (PQconnectStart + pg_connect_poll): reused, contained.
pqdedup_matrix_test(php-async churn reused)
pqdedup_matrix_test(php-async leak contained)
# pg_pconnect is PHP's own one-connection-per-string pool: one backend either way.
pqdedup_matrix_test(php-pconnect churn persistent)
pqdedup_matrix_test(php-pconnect leak persistent)
# Without the auditor: plain libpq, also with a cap or with idle connections lending theirs at
# once (PHP frees every connection at exit: one pqdedup had moved or freed would crash there).
pqdedup_matrix_test(php-connect churn passthrough SUFFIX _no_audit ENV "${_pqd_no_audit}")
pqdedup_matrix_test(php-connect leak passthrough SUFFIX _no_audit ENV "${_pqd_no_audit}")
pqdedup_matrix_test(php-connect churn passthrough SUFFIX _no_audit_capped
                    ENV "MATRIX_PQD_ENV=PQDEDUP_AUDIT=0 PQDEDUP_MAX_PER_KEY=3 PQDEDUP_MAX_WAIT=200ms")
pqdedup_matrix_test(php-connect leak passthrough SUFFIX _no_audit_unbind_now
                    ENV "MATRIX_PQD_ENV=PQDEDUP_AUDIT=0 PQDEDUP_UNBIND_AFTER=0")

# Ruby pg (RTLD_GLOBAL extension; PQconnectStart + poll, then libpq nonblocking mode), each
# connection set up with ActiveRecord's SETs (carried, and still in effect on every leaked one
# when it answers again): reused, contained.
pqdedup_matrix_test(ruby churn reused)
pqdedup_matrix_test(ruby leak contained)

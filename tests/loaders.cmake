# tests/loaders.cmake: programs that bypass LD_PRELOAD (RTLD_DEEPBIND modules, dlsym on libpq, PHP, psycopg 3) reach pqdedup through the loader auditor (tests/loaders/).
#
# The C tests run with LD_AUDIT=libpqdedup-audit.so beside the usual LD_PRELOAD, and also
# without it or with PQDEDUP_AUDIT=0 (plain libpq behaviour: no reuse). The scripts
# (NO_PRELOAD, NO_VALGRIND: they run php and python3, and the launcher) run each client
# plain, under the launcher and with --no-audit. Debian packages: php-cli php-pgsql
# python3-psycopg. Sanitizer runtimes abort any dlopen with RTLD_DEEPBIND (PHP loads every
# extension that way), so the DEEPBIND and PHP tests report themselves skipped (exit 77) in
# ASan and TSan builds. Leak tests that fill the server's slots are SERIAL.

set(_pqd_loaders ${CMAKE_CURRENT_SOURCE_DIR}/loaders)
set(_pqd_audit "LD_AUDIT=$<TARGET_FILE:pqdedup_audit>")
# With an auditor, glibc sets up TLS before it loads the program's libraries, so their static
# TLS must fit in the surplus; the TSan runtime's (768 KiB) does not by default.
set(_pqd_tls "")
if(PQDEDUP_SANITIZE STREQUAL "thread")
  set(_pqd_tls "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=2097152")
  list(APPEND _pqd_audit ${_pqd_tls})
endif()
# Under valgrind with an auditor, ld.so allocates some of its own data with its minimal malloc
# before valgrind's takes over; glibc's exit-time __libc_freeres then frees it through
# valgrind's free, which reports "Invalid free" for memory valgrind never handed out (seen in
# free_mem and _dl_find_object_freeres). Not pqdedup's memory: skip that exit-time cleanup.
list(APPEND _pqd_audit "VALGRIND_OPTS=--run-libc-freeres=no")

# A module like PHP's pgsql.so, built three ways: lazy binding, -z now (as Debian builds PHP's
# extensions), and -fno-plt (every libpq call through a GLOB_DAT slot, which only the GOT sweep
# rewrites).
foreach(_pqd_kind lazy now noplt)
  add_library(loaders_module_${_pqd_kind} MODULE ${_pqd_loaders}/deep_module.c)
  target_link_libraries(loaders_module_${_pqd_kind} PRIVATE PkgConfig::LIBPQ)
  set_target_properties(loaders_module_${_pqd_kind} PROPERTIES PREFIX "")
endforeach()
target_link_options(loaders_module_lazy PRIVATE -Wl,-z,lazy)
target_link_options(loaders_module_now PRIVATE -Wl,-z,now)
target_compile_options(loaders_module_noplt PRIVATE -fno-plt)
target_link_options(loaders_module_noplt PRIVATE -Wl,-z,now)

# An auditor that audits nothing (controls.sh: the launcher keeps LD_AUDIT entries). Like ours,
# it runs in the audit namespace, so it never gets the sanitizer flags.
add_library(loaders_noop_audit MODULE ${_pqd_loaders}/noop_audit.c)
set_target_properties(loaders_noop_audit PROPERTIES PREFIX "" COMPILE_OPTIONS "-Wall" LINK_OPTIONS "-nostdlib")

# Every registration here gets the auditor's path.
function(pqdedup_loaders_test)
  pqdedup_add_test(${ARGN})
  cmake_parse_arguments(L "" "NAME" "" ${ARGN})
  set_property(TEST ${L_NAME} APPEND PROPERTY ENVIRONMENT "PQD_TEST_AUDIT=$<TARGET_FILE:pqdedup_audit>")
  set_property(TEST ${L_NAME} PROPERTY SKIP_RETURN_CODE 77)
  if(_pqd_tls)
    set_property(TEST ${L_NAME} APPEND PROPERTY ENVIRONMENT "${_pqd_tls}")
  endif()
  set_property(TEST ${L_NAME} APPEND PROPERTY LABELS loaders)
endfunction()

# --- One list of wrapped names: intercepted.h, the exports.map generated from it at build time
# and the built library agree ---
pqdedup_loaders_test(NAME loaders_exports
  COMMAND bash ${_pqd_loaders}/check_exports.sh ${CMAKE_C_COMPILER} ${PROJECT_SOURCE_DIR}/src/intercepted.h
          ${PROJECT_BINARY_DIR}/src/exports.map $<TARGET_FILE:pqdedup_shim> $<TARGET_FILE:pqdedup_audit>
  NO_PRELOAD NO_VALGRIND)

# --- dlopen("libpq.so.5") + dlsym, as ctypes does -------------------------------------------
# 200 cycles (half of them PQconnectStart + PQconnectPoll) on at most 2 backends; dlsym returns
# the wrappers for wrapped names (PQfinish, PQconnectStart, PQstatus) and libpq's own for the
# others (PQresultStatus).
pqdedup_loaders_test(NAME loaders_dlsym_churn SOURCES test_loaders_dlsym.c
  ARGS --cycles 200 --expect-max-pids 2 --expect-redirect yes ENV ${_pqd_audit})
# Without the auditor, and with it turned off: plain libpq, one backend per cycle (dlsym gives
# libpq's own functions).
pqdedup_loaders_test(NAME loaders_dlsym_no_auditor PROGRAM test_loaders_dlsym
  ARGS --cycles 50 --expect-min-pids 50 --expect-redirect no)
pqdedup_loaders_test(NAME loaders_dlsym_audit_off PROGRAM test_loaders_dlsym
  ARGS --cycles 50 --expect-min-pids 50 --expect-redirect no ENV ${_pqd_audit} PQDEDUP_AUDIT=0)
# Leaked (never finished) connections are contained: on 2 backends at PQDEDUP_MAX_PER_KEY=2
# (an idle one lends its server connection at once at the cap), and past max_connections (40)
# with the default settings (after the server's refusal); each still answers at the end.
pqdedup_loaders_test(NAME loaders_dlsym_leak PROGRAM test_loaders_dlsym
  ARGS --leak 30 --expect-max-pids 2 ENV ${_pqd_audit} PQDEDUP_MAX_PER_KEY=2)
pqdedup_loaders_test(NAME loaders_dlsym_leak_past_max PROGRAM test_loaders_dlsym
  ARGS --leak 60 --expect-max-pids 40 ENV ${_pqd_audit} SERIAL)

# --- A module loaded with RTLD_DEEPBIND, as PHP loads pgsql.so ----------------------------------
foreach(_pqd_kind now lazy)
  set(_pqd_lazy "")
  if(_pqd_kind STREQUAL "lazy")
    set(_pqd_lazy --lazy)
  endif()
  pqdedup_loaders_test(NAME loaders_deepbind_churn_${_pqd_kind} SOURCES test_loaders_deepbind.c
    ARGS --module $<TARGET_FILE:loaders_module_${_pqd_kind}> ${_pqd_lazy}
         --cycles 200 --expect-max-pids 2 --expect-redirect yes ENV ${_pqd_audit})
endforeach()
# The program exports its own loaders_probe(), so a module call that left its deep scope
# would find it (--symbols).
set_target_properties(test_loaders_deepbind PROPERTIES ENABLE_EXPORTS ON)
# -fno-plt: reached once a connect of anything else swept the module's slots (before that,
# its calls go to libpq unseen: README, Loaders).
pqdedup_loaders_test(NAME loaders_deepbind_churn_noplt PROGRAM test_loaders_deepbind
  ARGS --module $<TARGET_FILE:loaders_module_noplt> --connect-first
       --cycles 200 --expect-max-pids 2 --expect-redirect yes ENV ${_pqd_audit})
# No other binding changes: the module's own loaders_probe() stays its own, PQresultStatus
# libpq's (PQstatus, wrapped, is pqdedup's).
pqdedup_loaders_test(NAME loaders_deepbind_symbols PROGRAM test_loaders_deepbind
  ARGS --module $<TARGET_FILE:loaders_module_now> --symbols --cycles 10 --expect-redirect yes
  ENV ${_pqd_audit})
pqdedup_loaders_test(NAME loaders_deepbind_audit_off PROGRAM test_loaders_deepbind
  ARGS --module $<TARGET_FILE:loaders_module_now> --symbols --cycles 50 --expect-min-pids 50
       --expect-redirect no ENV ${_pqd_audit} PQDEDUP_AUDIT=0)
pqdedup_loaders_test(NAME loaders_deepbind_leak PROGRAM test_loaders_deepbind
  ARGS --module $<TARGET_FILE:loaders_module_now> --leak 30 --expect-max-pids 2
  ENV ${_pqd_audit} PQDEDUP_MAX_PER_KEY=2)
pqdedup_loaders_test(NAME loaders_deepbind_leak_past_max PROGRAM test_loaders_deepbind
  ARGS --module $<TARGET_FILE:loaders_module_lazy> --lazy --leak 60 --expect-max-pids 40
  ENV ${_pqd_audit} SERIAL)

# --- The launcher and programs that never use libpq --------------------------------------------
pqdedup_loaders_test(NAME loaders_controls COMMAND bash ${_pqd_loaders}/controls.sh
  ENV "PQD_LOADERS_DLSYM=$<TARGET_FILE:test_loaders_dlsym>"
      "PQD_LOADERS_NOOP_AUDIT=$<TARGET_FILE:loaders_noop_audit>"
  NO_PRELOAD NO_VALGRIND)

# --- Real clients under the launcher: PHP CLI and psycopg 3 -----------------------------------
foreach(_pqd_client php-connect php-async php-pconnect php-pdo psycopg3-sync psycopg3-asyncio)
  string(REPLACE "-" "_" _pqd_name "loaders_${_pqd_client}")
  pqdedup_loaders_test(NAME ${_pqd_name} COMMAND bash ${_pqd_loaders}/clients.sh ${_pqd_client}
    NO_PRELOAD NO_VALGRIND TIMEOUT 180)
endforeach()

# --- A libpq that exports a function pqdedup does not know (a newer libpq) ---------------------
# tests/loaders/future_libpq.sh builds, in the build tree, a libpq.so.5 from Debian's libpq.a
# plus PQfutureThing(PGconn *), exporting what the installed libpq exports and that. Run with
# LD_LIBRARY_PATH at it: pqdedup passes every call through (a new backend per connect, libpq's
# own connections), and at PQDEDUP_LOG=info says so in one line that names PQfutureThing. It
# needs libpq's static dependencies libpgcommon_shlib.a and libpgport_shlib.a (Debian:
# postgresql-server-dev-15, in `pg_config --pkglibdir`); without them the test reports itself
# skipped and says why. The control runs the same program with the installed libpq: pooling on.
execute_process(COMMAND pg_config --pkglibdir OUTPUT_VARIABLE _pqd_pg_pkglibdir
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT _pqd_pg_pkglibdir)
  set(_pqd_pg_pkglibdir /usr/lib/postgresql/15/lib)
endif()
set(PQDEDUP_PG_PKGLIBDIR "${_pqd_pg_pkglibdir}" CACHE PATH
    "Where libpgcommon_shlib.a and libpgport_shlib.a are (for loaders_unknown_libpq)")
set(_pqd_future ${CMAKE_CURRENT_BINARY_DIR}/future_libpq)
if(EXISTS "${PQDEDUP_PG_PKGLIBDIR}/libpgcommon_shlib.a" AND EXISTS "${PQDEDUP_PG_PKGLIBDIR}/libpgport_shlib.a")
  add_custom_command(
    OUTPUT ${_pqd_future}/libpq.so.5
    COMMAND sh ${_pqd_loaders}/future_libpq.sh ${CMAKE_C_COMPILER} ${_pqd_loaders}/future_libpq.c
            ${_pqd_future} ${PQDEDUP_PG_PKGLIBDIR}
    DEPENDS ${_pqd_loaders}/future_libpq.sh ${_pqd_loaders}/future_libpq.c ${LIBPQ_LIBDIR}/libpq.a
    COMMENT "Building a libpq.so.5 with a function pqdedup does not know (tests/loaders/future_libpq.sh)")
  add_custom_target(loaders_future_libpq ALL DEPENDS ${_pqd_future}/libpq.so.5)
  pqdedup_loaders_test(NAME loaders_unknown_libpq SOURCES test_loaders_unknown_libpq.c LIBS dl
    ARGS unknown ENV "LD_LIBRARY_PATH=${_pqd_future}" PQDEDUP_LOG=info)
else()
  add_executable(test_loaders_unknown_libpq test_loaders_unknown_libpq.c)
  target_link_libraries(test_loaders_unknown_libpq PRIVATE pqdedup_testutil dl)
  pqdedup_loaders_test(NAME loaders_unknown_libpq
    COMMAND sh -c "echo 'loaders_unknown_libpq: skipped: no libpgcommon_shlib.a and libpgport_shlib.a in ${PQDEDUP_PG_PKGLIBDIR} (install postgresql-server-dev-15, or set PQDEDUP_PG_PKGLIBDIR)' && exit 77"
    NO_PRELOAD NO_VALGRIND)
endif()
pqdedup_loaders_test(NAME loaders_unknown_libpq_control PROGRAM test_loaders_unknown_libpq
  ARGS known ENV PQDEDUP_LOG=info)

# tests/fleet.cmake: beyond one process (tests/fleet/): 8 worker processes, each under pqdedup, churning and leaking through a throwaway PgBouncer in session and transaction mode.
#
# fleet_worker (tests/fleet/fleet_worker.c) is a plain libpq program, also used by
# bench/fleet.sh. The test is NO_PRELOAD (the script runs each worker plain or under the
# launcher), SERIAL (it counts the server's backends of one role and runs 8 busy processes)
# and runs in plain builds only: the worker would need the sanitizer runtime preloaded ahead
# of the launcher's library, and the valgrind flavour would only run it again unwrapped.
# Debian package: pgbouncer.

add_executable(fleet_worker fleet/fleet_worker.c)
target_link_libraries(fleet_worker PRIVATE PkgConfig::LIBPQ)

if(NOT PQDEDUP_SANITIZE AND NOT PQDEDUP_TEST_WRAPPER)
  pqdedup_add_test(NAME fleet_pgbouncer
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fleet/test_fleet.sh
                   ENV "PQD_TEST_FLEET_WORKER=$<TARGET_FILE:fleet_worker>"
                   NO_PRELOAD NO_VALGRIND SERIAL TIMEOUT 300 LABELS fleet)
  set_tests_properties(fleet_pgbouncer PROPERTIES SKIP_RETURN_CODE 77)
endif()

# tests/stats.cmake: the live stats (issue 11): the stats file each process under pqdedup writes, `pqdedup --stat` (text, JSON, Prometheus) read against the server and the program, other users' and broken files, fork, and the exit report.

# The program the scripts run under the launcher: it churns and leaks from a few threads and
# reports what it did. Exported symbols (-rdynamic), so the leak report names leak_one.
add_executable(test_stats_worker test_stats_worker.c)
target_link_libraries(test_stats_worker PRIVATE PkgConfig::LIBPQ Threads::Threads)
set_target_properties(test_stats_worker PROPERTIES ENABLE_EXPORTS ON)

# Writes stats files the library would never write (truncated, garbage, a reused PID).
add_executable(test_stats_forge test_stats_forge.c)
target_include_directories(test_stats_forge PRIVATE ${PROJECT_SOURCE_DIR}/src)

# The scripts run programs through the launcher, so they are never wrapped in valgrind.
foreach(_pqd_group live prometheus sigterm users bad_files lazy exit_report)
  pqdedup_add_test(NAME stats_${_pqd_group}
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_stats.sh ${_pqd_group}
                   ENV "PQD_STATS_WORKER=$<TARGET_FILE:test_stats_worker>"
                       "PQD_STATS_FORGE=$<TARGET_FILE:test_stats_forge>"
                   NO_PRELOAD NO_VALGRIND LABELS stats)
endforeach()

# A forked child never writes into its parent's stats file (C, under the preload).
pqdedup_add_test(NAME stats_fork SOURCES test_stats_fork.c LABELS stats
                 ENV "PQDEDUP_STATS_DIR=${CMAKE_CURRENT_BINARY_DIR}/stats-fork")
target_include_directories(test_stats_fork PRIVATE ${PROJECT_SOURCE_DIR}/src)

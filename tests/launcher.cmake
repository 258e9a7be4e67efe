# tests/launcher.cmake: the pqdedup launcher (test_launcher.sh): usage, exit statuses, LD_PRELOAD, options, real libpq programs under it, and the library's silence.

# Each group is its own test so a failure names the behaviour. The script runs programs
# through the launcher itself, so it is never wrapped in valgrind (NO_VALGRIND). It runs
# psql (plain builds) and test_churn (from smoke.cmake; instrumented, so usable in every build).
foreach(_pqd_group help usage exec_errors preload options passthrough real_program quiet)
  pqdedup_add_test(NAME launcher_${_pqd_group}
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_launcher.sh ${_pqd_group}
                   ENV "PQD_LAUNCHER_CHURN=$<TARGET_FILE:test_churn>"
                   NO_PRELOAD NO_VALGRIND LABELS launcher)
endforeach()

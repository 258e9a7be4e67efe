# tests/check.cmake: `pqdedup --check PROGRAM` (test_check.sh): linked, static, setuid, scripts, missing commands; nothing is run.

pqdedup_add_test(NAME check_program
                 COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_check.sh
                 NO_PRELOAD NO_VALGRIND LABELS check)

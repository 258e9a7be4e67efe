# tests/smoke.cmake: connection churn, the first thing pqdedup must get right (test_churn.c).

# 1000 connect/query/finish cycles under the preload are served by at most 2 backends.
pqdedup_add_test(NAME churn_reuse SOURCES test_churn.c
                 ARGS --cycles 1000 --expect-max-pids 2 LABELS smoke)

# The pass-through switch: every cycle gets its own backend, and none is left open.
pqdedup_add_test(NAME churn_disabled PROGRAM test_churn
                 ARGS --cycles 1000 --expect-min-pids 1000
                 ENV PQDEDUP_DISABLE=1 LABELS smoke)

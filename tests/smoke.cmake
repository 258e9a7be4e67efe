# tests/smoke.cmake: connection churn, the first thing pqdedup must get right (test_churn.c).

# 1000 connect/query/finish cycles under the preload are served by at most 2 backends.
pqdedup_add_test(NAME churn_reuse SOURCES test_churn.c
                 ARGS --cycles 1000 --expect-max-pids 2 LABELS smoke)

# The pass-through switch: every cycle gets its own backend, and none is left open.
pqdedup_add_test(NAME churn_disabled PROGRAM test_churn
                 ARGS --cycles 1000 --expect-min-pids 1000
                 ENV PQDEDUP_DISABLE=1 LABELS smoke)

# After a burst of 2 connections at once, a program that churns with no pause goes back to one
# backend, as under plain libpq: the connection it does not need is never taken again (a
# connect waits for the last one's reset instead of alternating between the two) and ages
# out (PQDEDUP_IDLE_TIMEOUT=300ms) while the program goes on connecting. Then the same with a
# connection held open throughout, inside a transaction so it keeps its server connection: two
# backends, not three.
pqdedup_add_test(NAME churn_after_burst PROGRAM test_churn
                 ARGS --burst 2 --cycles 200 --settle-to 1 --expect-max-pids 2
                 ENV PQDEDUP_IDLE_TIMEOUT=300ms LABELS smoke)
pqdedup_add_test(NAME churn_after_burst_held PROGRAM test_churn
                 ARGS --hold 1 --burst 2 --cycles 200 --settle-to 2 --expect-max-pids 3
                 ENV PQDEDUP_IDLE_TIMEOUT=300ms LABELS smoke)

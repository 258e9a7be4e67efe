# tests/reset_mode.cmake: PQDEDUP_RESET=dirty against =always (test_reset_mode.c), and the state tests in dirty mode.

# keep_per_key=1: one kept connection, so the next holder gets the same backend.
pqdedup_add_test(NAME reset_mode_always SOURCES test_reset_mode.c ARGS --mode always
                 ENV PQDEDUP_KEEP_PER_KEY=1 LABELS state)
pqdedup_add_test(NAME reset_mode_dirty PROGRAM test_reset_mode ARGS --mode dirty
                 ENV PQDEDUP_KEEP_PER_KEY=1 PQDEDUP_RESET=dirty LABELS state)

# Every explicit session change the state tests make is still reset in dirty mode.
if(TARGET test_state_session AND TARGET test_state_client)
  pqdedup_add_test(NAME state_session_dirty_mode PROGRAM test_state_session ARGS --reset-query default
                   ENV PQDEDUP_RESET=dirty LABELS state)
  pqdedup_add_test(NAME state_client_dirty_mode PROGRAM test_state_client
                   ENV PQDEDUP_RESET=dirty LABELS state)
endif()

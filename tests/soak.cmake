# tests/soak.cmake: the short soak (tests/soak/soak.c); the long one is tests/soak/run.sh --minutes N.

# 25 s: 16 threads (8 churning on two keys, 8 leaking) here and 4 child processes (1 churning,
# 1 leaking each) against max_connections=40 with PQDEDUP_UNBIND_AFTER=0 (soak.c says why):
# zero errors, backends within the bound the settings imply, open fds of every process flat
# and its RSS (plain build) within max(2 MB, 5%) plus 512 bytes per handle leaked meanwhile
# (last third vs first third; the bytes per leaked handle are printed).
pqdedup_add_test(NAME soak_short SOURCES soak/soak.c ARGS --seconds 25
                 ENV PQDEDUP_UNBIND_AFTER=0 PQDEDUP_STATS=1 SERIAL NO_VALGRIND TIMEOUT 150
                 LABELS soak)

# Connections kept for one key must not take the server slots another key needs: n connects
# A (busy), all finished, then n connects B (n = free slots - 2), all held busy at once inside
# transactions with a write, all work on n distinct backends, as with plain libpq.
pqdedup_add_test(NAME load_kept_yield_slots SOURCES soak/slots.c SERIAL LABELS soak)

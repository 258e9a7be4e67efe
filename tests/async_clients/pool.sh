#!/usr/bin/env bash
# tests/async_clients/pool.sh: psycopg 3's AsyncConnectionPool (max_size 10) serving 200 concurrent asyncio tasks, plain and under the launcher.
#
# pool.py runs the tasks; both runs must: exit 0 with nothing on stderr, answer all 200
# queries correctly, have no task wait for a connection and run its query longer than the
# pool's timeout (20 s: a generous bound, not a speed measurement), use at most max_size
# backends at once (sampled every 2ms), and leave no backend after exit. Under the launcher,
# default settings, pqdedup logs no error. Both wall times are printed, not compared (they
# depend on the machine).
. "$(dirname "$0")/lib.sh"

"$PYTHON" -c 'import psycopg_pool' ||
  { echo "$SCRIPT: $PYTHON has no psycopg_pool (install python3-psycopg-pool)" >&2; exit 1; }
TASKS=200 MAX_SIZE=10 TIMEOUT=20
APP=pqdt_async_pool_$$
walls=()
for how in plain pqdedup; do
  start_sampler "$APP"
  run_client "$how" env PSYCOPG_IMPL=python "$PYTHON" "$HERE/pool.py" "$TASKS" "$MAX_SIZE" "$TIMEOUT" "$APP"
  stop_sampler
  ok=$(result "$how" ok); max_task=$(result "$how" max_task_ms); wall=$(result "$how" wall_ms)
  walls+=(" $how ${wall:-?} ms")
  check "$how: clean exit (status $RC, stderr empty)" clean_exit "$how"
  check "$how: all $TASKS tasks answered correctly ($ok)" is "$ok" -eq "$TASKS"
  check "$how: no task took longer than the pool's timeout, ${TIMEOUT}s (longest: ${max_task:-?} ms, of which waiting for a connection $(result "$how" max_wait_ms) ms)" \
    is "$max_task" -lt $((TIMEOUT * 1000))
  check "$how: at most $MAX_SIZE backends at once (sampled: $PEAK; the tasks saw $(result "$how" pids))" \
    is "$PEAK" -le "$MAX_SIZE"
  check "$how: no backend left after exit" wait_backends "$APP" 0
done
check "pqdedup: no error logged" no_error_logged
echo "$SCRIPT: wall time from the pool's opening to its closing:$(IFS=,; echo "${walls[*]}")"
finish

#!/usr/bin/env bash
# tests/async_clients/sessions.sh: an asyncio app (psycopg 3) runs transactions on its 20 connections at once: 20 independent sessions, plain and under the launcher.
#
# sessions.py does the work and checks each session (its own uncommitted row only, the same
# backend throughout its transaction, 20 distinct backends, then exactly the committed half's
# rows). Here, for both runs: exit 0 with nothing on stderr, its result line, the table holding
# exactly the even connections' rows (read by the observer, plain libpq), no backend left after
# exit. Under the launcher (default settings, so the connections opened one after another lend
# their server connections once idle 10ms, and bind again at BEGIN) pqdedup logs no error.
. "$(dirname "$0")/lib.sh"

N=20
EVEN=$(seq -s, 2 2 "$N")
APP=pqdt_async_sessions_$$
TABLE=pqdt_async_sessions_$$
trap 'obs "DROP TABLE IF EXISTS $TABLE" >/dev/null || true; cleanup' EXIT
for how in plain pqdedup; do
  obs "DROP TABLE IF EXISTS $TABLE; CREATE TABLE $TABLE (k int, backend int)" >/dev/null
  run_client "$how" env PSYCOPG_IMPL=python "$PYTHON" "$HERE/sessions.py" "$N" "$TABLE" "$APP"
  check "$how: clean exit (status $RC, stderr empty)" clean_exit "$how"
  check "$how: all $N connections saw exactly the committed rows ($(result "$how" ok))" \
    is "$(result "$how" ok)" -eq "$N"
  check "$how: the $N open transactions ran on $(result "$how" distinct_backends) distinct backends" \
    is "$(result "$how" distinct_backends)" -eq "$N"
  check "$how: the app saw the even connections' rows committed ($(result "$how" committed))" \
    test "$(result "$how" committed)" = "$EVEN"
  committed=$(obs "SELECT string_agg(k::text, ',' ORDER BY k) FROM $TABLE")
  check "$how: the table holds exactly the even connections' rows ($committed)" test "$committed" = "$EVEN"
  check "$how: no backend left after exit" wait_backends "$APP" 0
done
check "pqdedup: no error logged" no_error_logged
finish

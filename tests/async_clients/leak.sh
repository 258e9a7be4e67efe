#!/usr/bin/env bash
# tests/async_clients/leak.sh CLIENT: many threads, asyncio tasks or processes leak 2 x max_connections connections at once, plain (the server refuses) and under the launcher (all work).
#
# CLIENT  psycopg3-threads   psycopg 3 sync, 8 threads          (leak.py)
#         psycopg3-asyncio   psycopg 3 AsyncConnection, 50 tasks (leak.py)
#         psycopg2-async     psycopg2 async_=1 + poll, 8 threads (leak.py)
#         ruby-threads       Ruby pg, 8 threads                 (leak.rb)
#         php-async          PHP pg_connect(PGSQL_CONNECT_ASYNC), 4 processes (leak.php)
# The workers together connect at least 2 x max_connections times, as a role of the test's own
# (so a superuser, the observer, always finds a reserved slot), and never close a connection;
# then every kept connection answers again. Plain libpq (the negative control): the server
# refuses connects ("remaining connection slots are reserved"), and everything connected before
# answers. Under the launcher, default settings: every connect and query works, and pqdedup
# moved idle connections' server connections. Both runs: exit 0, nothing on stderr, the app's
# backends (sampled every 2ms) never above max_connections - superuser_reserved_connections,
# none left after exit. Fills the server's slots: register SERIAL.
# shellcheck disable=SC2016,SC2317  # check WHAT eval '...': the condition is evaluated when checked
. "$(dirname "$0")/lib.sh"

case ${1:-} in
  psycopg3-threads|psycopg3-asyncio|psycopg2-async)
    CMD=(env PSYCOPG_IMPL=python "$PYTHON" "$HERE/leak.py" "$1") ;;
  ruby-threads) CMD=(/usr/bin/ruby "$HERE/leak.rb") ;;
  php-async) CMD=(/usr/bin/php "$HERE/leak.php") ;;
  *) sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
case $1 in
  psycopg3-asyncio) WORKERS=50 ;;
  php-async) WORKERS=4 ;;
  *) WORKERS=8 ;;
esac
MAX_CONN=$(obs "SHOW max_connections")
SLOTS=$(obs "SELECT $MAX_CONN - current_setting('superuser_reserved_connections')::int")
EACH=$(( (2 * MAX_CONN + WORKERS - 1) / WORKERS ))
N=$((WORKERS * EACH))
echo "$SCRIPT $1: $WORKERS workers x $EACH connects = $N, max_connections=$MAX_CONN ($SLOTS for the role)"

ROLE=pqdt_async_$$
obs "CREATE ROLE $ROLE LOGIN PASSWORD 'leak_pw'" >/dev/null
trap 'obs "DROP ROLE IF EXISTS $ROLE" >/dev/null || true; cleanup' EXIT
APP=pqdt_async_leak_$$
CMD+=("$WORKERS" "$EACH" "$APP")

refused_by_server() { grep -Eq 'too many clients|remaining connection slots are reserved' <<<"$1"; }

# ---- plain libpq: the negative control ---------------------------------------------------
start_sampler "$APP"
run_client plain env PGUSER="$ROLE" PGPASSWORD=leak_pw "${CMD[@]}"
stop_sampler
ok=$(result plain ok); refused=$(result plain refused); recheck=$(result plain recheck)
refusal=$(sed -n 's/^async-refused: //p' "$OUT/plain.stdout")
check "plain: clean exit (status $RC, stderr empty)" clean_exit plain
check "plain: the server refused $refused workers' connects: $refusal" \
  eval 'is "$refused" -ge 1 && refused_by_server "$refusal"'
check "plain: $ok of $N connects answered before that, and again at the end ($recheck)" \
  eval 'is "$ok" -ge 1 && is "$ok" -lt "$N" && is "$recheck" -eq "$ok"'
check "plain: at most $SLOTS backends at once (sampled: $PEAK)" is "$PEAK" -le "$SLOTS"
check "plain: no backend of the app left after exit" wait_backends "$APP" 0

# ---- under the pqdedup launcher, default settings -----------------------------------------
start_sampler "$APP"
run_client pqdedup env PGUSER="$ROLE" PGPASSWORD=leak_pw "${CMD[@]}"
stop_sampler
ok=$(result pqdedup ok); refused=$(result pqdedup refused); recheck=$(result pqdedup recheck)
pids=$(result pqdedup pids); moved=$(stat_sum moved)
check "pqdedup: clean exit (status $RC, stderr empty)" clean_exit pqdedup
check "pqdedup: no error logged" no_error_logged
check "pqdedup: all $N connects answered ($ok), none refused (${refused:-?})" \
  eval 'is "$ok" -eq "$N" && is "$refused" -eq 0'
check "pqdedup: every leaked connection answered again after all connects ($recheck)" \
  is "$recheck" -eq "$N"
check "pqdedup: at most $SLOTS backends at once (sampled: $PEAK; the app saw $pids)" \
  is "$PEAK" -le "$SLOTS"
check "pqdedup: idle connections' server connections moved to others (stats: moved=$moved)" \
  is "$moved" -ge 1
check "pqdedup: no backend of the app left after exit" wait_backends "$APP" 0
finish

#!/usr/bin/env bash
# test_fleet.sh: 8 worker processes, each under pqdedup, churning and leaking through a throwaway PgBouncer in session and in transaction mode: server backends bounded by PgBouncer's pool, zero errors with the recommended settings, and what pqdedup's reset does in each mode.
#
# Run by ctest (tests/fleet.cmake) with PQD_TEST_LAUNCHER, PQD_TEST_FLEET_WORKER (the C
# worker, tests/fleet/fleet_worker.c) and the harness's env.sh variables; LD_PRELOAD is unset.
# Debian package: pgbouncer. PQD_FLEET_SECONDS (default 3): how long each fleet runs.
#
# Each fleet: a fresh PgBouncer (pool "fleet", default_pool_size=10, query_wait_timeout=3 so
# a client stuck waiting for a server connection becomes an error within the run), an
# observer that counts the server's backends of PgBouncer's role every 5 ms (directly, not
# through PgBouncer), and 8 workers, each a separate `fleet_worker work` process making
# connect + SELECT + finish cycles for PQD_FLEET_SECONDS and leaving every 10th connection
# open, never finished. The server has max_connections=40.
#
# What it shows (checked) and prints (a table, one row per fleet):
#   session mode   plain libpq: the leaks pin PgBouncer's server connections and the workers
#                  wait for one until query_wait_timeout (errors: the workload needs more
#                  than the pool); under pqdedup with PQDEDUP_MAX_PER_KEY=1 (8 workers x 1 <=
#                  the pool of 10): zero errors; backends never above the pool.
#                  pqdedup's reset is what cleans between the app's connects: with the
#                  default DISCARD ALL no session state reaches the next connect; with
#                  PQDEDUP_RESET_QUERY='' it does (PgBouncer's server_reset_query runs only
#                  when a client connection really closes, which pqdedup's kept ones do not).
#   transaction    under pqdedup with PQDEDUP_RESET_QUERY='': zero errors, backends never
#   mode           above the pool, the app's connection parameters (application_name,
#                  client_encoding) intact at every connect, and one pooled transaction per
#                  app transaction. With the default reset every finish is one more
#                  transaction through the pool (DISCARD ALL on whichever server connection
#                  PgBouncer picks, not the one that held the app's state), and it reverts
#                  the parameters PgBouncer set with SET on that server connection.
# Rows not listed above (pqdedup's defaults in session mode, ...) are printed, not checked.
set -euo pipefail

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
W=${PQD_TEST_FLEET_WORKER:?PQD_TEST_FLEET_WORKER is not set}
SRC=${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}
: "${PGHOST:?source the env.sh written by tests/harness/pg-up.sh}"
SECS=${PQD_FLEET_SECONDS:-3}
WORKERS=8
POOL=10
LEAK_EVERY=10

# shellcheck source=tests/checks.sh
. "$SRC/checks.sh"
# shellcheck source=tests/fleet/bouncer.sh
. "$SRC/fleet/bouncer.sh"

if [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
  echo "test_fleet: skipped: the worker would need the sanitizer runtime preloaded ahead of everything"
  exit 77
fi
command -v pgbouncer >/dev/null || { echo "test_fleet: FAIL: pgbouncer is not installed (Debian: pgbouncer)" >&2; exit 1; }
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

T=$(mktemp -d /tmp/pqd-fleet-XXXXXX)
chmod 755 "$T"
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local d
  for d in "$T"/run-*; do [[ -d $d ]] && bouncer_stop "$d"; done
  [[ -n ${PQD_KEEP:-} ]] || rm -rf "$T"
}
trap cleanup EXIT

OBSERVER="host=$PGHOST port=$PGPORT dbname=postgres user=postgres application_name=pqd_observer"

# sum_field PREFIX NAME FILE...: the sum of NAME=N over the lines of the files that start
# with PREFIX ("work " for the workers' lines, "pqdedup[" for the stats lines).
sum_field() {
  local prefix=$1 name=$2
  shift 2
  cat "$@" | grep -F "$prefix" | grep -o " $name=[0-9]*" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'
}

# fleet NAME MODE SETTINGS N_WORKERS WORKER_ARGS...: one fleet through a fresh PgBouncer.
#   SETTINGS: "plain" (no pqdedup), "defaults", or space-separated PQDEDUP_*=VALUE.
# Sets R_CONNECTS R_ERRORS R_STALE R_MISMATCH R_MAX (server backends) R_XACTS (transactions
# PgBouncer ran on the server) R_OPENED (pqdedup's opened, summed) R_FIRST (an error or
# mismatch) and prints a row. Returns 1 when the fleet could not be run at all.
n=0
fleet() {
  local name=$1 mode=$2 settings=$3 workers=$4
  shift 4
  n=$((n + 1))
  local d=$T/run-$n
  mkdir "$d"
  R_CONNECTS=0 R_ERRORS=0 R_STALE=0 R_MISMATCH=0 R_MAX=-1 R_XACTS=-1 R_OPENED=- R_FIRST=
  if ! bouncer_start "$d" "$mode" "$POOL" "query_wait_timeout = 3"; then
    fail "$name: PgBouncer starts"
    return 1
  fi
  "$W" observe -u "$BOUNCER_ROLE" -r "$d/ready" -f "$d/stop" -s 120 "$OBSERVER" >"$d/observer.out" 2>&1 &
  local obs=$! deadline=$((SECONDS + 10))
  while [[ ! -e $d/ready ]] && kill -0 "$obs" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.02; done
  if [[ ! -e $d/ready ]]; then
    fail "$name: the observer is ready: $(cat "$d/observer.out")"
    kill "$obs" 2>/dev/null || true
    bouncer_stop "$d"
    return 1
  fi
  local conninfo="host=127.0.0.1 port=$BOUNCER_PORT dbname=fleet user=$BOUNCER_ROLE connect_timeout=10"
  local -a pre=(env -u LD_PRELOAD -u LD_AUDIT) vars=()
  if [[ $settings != plain ]]; then
    [[ $settings == defaults ]] || read -r -a vars <<<"$settings"
    pre+=("${vars[@]}" "$L" --stats --)
  fi
  local -a pids=()
  local i
  for ((i = 1; i <= workers; i++)); do
    "${pre[@]}" "$W" work "$@" "$conninfo${EXTRA_CONNINFO:+ $EXTRA_CONNINFO}" >"$d/worker-$i.out" 2>&1 &
    pids+=($!)
  done
  # A worker's exit status says whether it saw an error; its line says how many.
  for i in "${pids[@]}"; do wait "$i" || true; done
  : >"$d/stop"
  wait "$obs" || fail "$name: the observer ran to the end: $(cat "$d/observer.out")"
  R_XACTS=$(bouncer_admin "$d" 'SHOW STATS' | awk -F'|' '$1 == "fleet" { print $2 }')
  bouncer_stop "$d"
  local outs=("$d"/worker-*.out)
  R_CONNECTS=$(sum_field "work " connects "${outs[@]}")
  R_ERRORS=$(sum_field "work " errors "${outs[@]}")
  R_STALE=$(sum_field "work " stale "${outs[@]}")
  R_MISMATCH=$(sum_field "work " mismatch "${outs[@]}")
  R_MAX=$(sed -n 's/.* max=\([0-9]*\).*/\1/p' "$d/observer.out")
  [[ $settings == plain ]] || R_OPENED=$(sum_field "pqdedup[" opened "${outs[@]}")
  R_FIRST=$(cat "${outs[@]}" | sed -n 's/.*first_error="\([^"]\{1,\}\)".*/\1/p; s/.*first_mismatch="\([^"]\{1,\}\)".*/\1/p' | head -n 1 | cut -c1-150)
  local nlines
  nlines=$(cat "${outs[@]}" | grep -c '^work ' || true)
  [[ $nlines -eq $workers ]] || fail "$name: every worker printed its line ($nlines of $workers): $(cat "${outs[@]}" | head -n 5)"
  [[ $settings == plain ]] || [[ $(cat "${outs[@]}" | grep -c ': stats connects=' || true) -eq $workers ]] ||
    fail "$name: every worker under pqdedup printed its stats line: $(cat "${outs[@]}" | grep -v '^work ' | head -n 5)"
  local per=-
  [[ $R_CONNECTS -gt 0 && -n $R_XACTS ]] && per=$(awk -v x="$R_XACTS" -v c="$R_CONNECTS" 'BEGIN { printf "%.2f", x / c }')
  printf '%-40s %-11s %8s %6s %6s %8s %6s %7s %8s  %s\n' "$name" "$mode" "$R_CONNECTS" "$R_ERRORS" \
    "$R_MAX" "$R_OPENED" "$R_STALE" "$R_MISMATCH" "$per" "$R_FIRST"
  return 0
}

printf '%-40s %-11s %8s %6s %6s %8s %6s %7s %8s  %s\n' fleet mode connects errors maxsrv opened stale mismatch xact/conn "first error or mismatch"

# --- Session mode ---------------------------------------------------------------------
# Without pqdedup the workload is more than the pool: every leaked connection pins a server
# connection for good, and the workers then wait for one in vain.
fleet "session: plain libpq" session plain "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"
[[ $R_ERRORS -gt 0 ]] && pass || fail "session mode, plain libpq: the leaks exhaust the pool (errors; got $R_ERRORS)"
[[ $R_MAX -ge 0 && $R_MAX -le $POOL ]] && pass || fail "session mode, plain libpq: server backends <= $POOL (max $R_MAX)"

# pqdedup's defaults: each worker may hold several connections to PgBouncer (leaked ones not
# idle long enough to be moved, those kept after a burst), each holding one of the pool's
# server connections. Printed only.
fleet "session: pqdedup defaults" session defaults "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"

# The recommendation: at most workers x PQDEDUP_MAX_PER_KEY connections, within the pool.
fleet "session: PQDEDUP_MAX_PER_KEY=1" session "PQDEDUP_MAX_PER_KEY=1" "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"
[[ $R_ERRORS -eq 0 && $R_CONNECTS -gt $((WORKERS * LEAK_EVERY)) ]] && pass || fail "session mode, PQDEDUP_MAX_PER_KEY=1: zero errors in $R_CONNECTS connects: $R_FIRST"
[[ $R_MAX -ge 1 && $R_MAX -le $POOL ]] && pass || fail "session mode, PQDEDUP_MAX_PER_KEY=1: server backends <= $POOL (max $R_MAX)"
[[ $R_OPENED -ge $WORKERS && $R_OPENED -le $POOL ]] && pass || fail "session mode, PQDEDUP_MAX_PER_KEY=1: about one connection to PgBouncer per worker (opened $R_OPENED)"

# The reset: each connect reads the session variable the previous one set.
fleet "session: reset probe, default reset" session "PQDEDUP_MAX_PER_KEY=1" 1 -n 50 -p
[[ $R_ERRORS -eq 0 && $R_STALE -eq 0 ]] && pass || fail "session mode, default reset: no session state reaches the next connect (stale $R_STALE, errors $R_ERRORS: $R_FIRST)"
fleet "session: reset probe, RESET_QUERY=''" session "PQDEDUP_MAX_PER_KEY=1 PQDEDUP_RESET_QUERY=" 1 -n 50 -p
[[ $R_ERRORS -eq 0 && $R_STALE -gt 0 ]] && pass || fail "session mode, no reset: the state reaches the next connect, PgBouncer does not clean it (stale $R_STALE, errors $R_ERRORS: $R_FIRST)"

# --- Transaction mode -----------------------------------------------------------------
# PgBouncer alone and pqdedup's defaults: printed only.
fleet "transaction: plain libpq" transaction plain "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"
plain_xacts_per_connect=$(awk -v x="$R_XACTS" -v c="$R_CONNECTS" 'BEGIN { print (c > 0 ? x / c : -1) }')
fleet "transaction: pqdedup defaults" transaction defaults "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"
default_xacts=$R_XACTS default_connects=$R_CONNECTS

# The recommendation: no reset query.
fleet "transaction: PQDEDUP_RESET_QUERY=''" transaction "PQDEDUP_RESET_QUERY=" "$WORKERS" -s "$SECS" -l "$LEAK_EVERY"
[[ $R_ERRORS -eq 0 && $R_CONNECTS -gt $((WORKERS * LEAK_EVERY)) ]] && pass || fail "transaction mode, PQDEDUP_RESET_QUERY='': zero errors in $R_CONNECTS connects: $R_FIRST"
[[ $R_MAX -ge 1 && $R_MAX -le $POOL ]] && pass || fail "transaction mode, PQDEDUP_RESET_QUERY='': server backends <= $POOL (max $R_MAX)"
# One pooled transaction per app transaction (plus a SHOW per connection pqdedup opens),
# where the default reset adds one per finish.
awk -v x="$R_XACTS" -v c="$R_CONNECTS" -v p="$plain_xacts_per_connect" 'BEGIN { exit !(c > 0 && x / c < 1.2 && x / c <= p + 0.2) }' && pass ||
  fail "transaction mode, PQDEDUP_RESET_QUERY='': about one pooled transaction per connect, as plain libpq ($R_XACTS for $R_CONNECTS; plain $plain_xacts_per_connect per connect)"
awk -v x="$default_xacts" -v c="$default_connects" 'BEGIN { exit !(c > 0 && x / c > 1.5) }' && pass ||
  fail "transaction mode, default reset: a pooled transaction more per finish ($default_xacts for $default_connects)"

# The app's connection parameters: PgBouncer applies them to whichever server connection
# runs a transaction (with SET); a DISCARD ALL from the client reverts them there.
EXTRA_CONNINFO="application_name=pqd_fleet client_encoding=LATIN1"
param_checks=(-c client_encoding=LATIN1 -c application_name=pqd_fleet)
fleet "transaction: parameters, RESET_QUERY=''" transaction "PQDEDUP_RESET_QUERY=" "$WORKERS" -s 1 -l "$LEAK_EVERY" "${param_checks[@]}"
[[ $R_ERRORS -eq 0 && $R_MISMATCH -eq 0 && $R_CONNECTS -gt 0 ]] && pass || fail "transaction mode, PQDEDUP_RESET_QUERY='': the app's application_name and client_encoding at every connect (mismatch $R_MISMATCH, errors $R_ERRORS: $R_FIRST)"
# With the default reset, DISCARD ALL reverts what PgBouncer SET: pqdedup sees that the reset
# changed the parameters the server reports and closes such a connection instead of handing it
# out (each connect then opens a new one to PgBouncer): never a session other than the one asked for.
fleet "transaction: parameters, default reset" transaction defaults 1 -n 20 "${param_checks[@]}"
[[ $R_ERRORS -eq 0 && $R_MISMATCH -eq 0 && $R_CONNECTS -eq 20 ]] && pass || fail "transaction mode, default reset: the app's parameters at every connect (mismatch $R_MISMATCH, errors $R_ERRORS: $R_FIRST)"
fleet "session: parameters, default reset" session "PQDEDUP_MAX_PER_KEY=1" 1 -n 20 "${param_checks[@]}"
[[ $R_ERRORS -eq 0 && $R_MISMATCH -eq 0 && $R_CONNECTS -eq 20 ]] && pass || fail "session mode, default reset: the app's parameters at every connect (mismatch $R_MISMATCH, errors $R_ERRORS: $R_FIRST)"
# ... also when leaked handles' connections move at PQDEDUP_MAX_PER_KEY: the moved one is
# closed after its reset, which frees the cap for a new one.
fleet "session: MAX_PER_KEY=1 with parameters" session "PQDEDUP_MAX_PER_KEY=1 PQDEDUP_MAX_WAIT=1s" "$WORKERS" -s 1 -l "$LEAK_EVERY" "${param_checks[@]}"
[[ $R_ERRORS -eq 0 && $R_MISMATCH -eq 0 && $R_CONNECTS -gt 0 ]] && pass || fail "session mode, MAX_PER_KEY=1, leaking, with parameters: zero errors and mismatches (mismatch $R_MISMATCH, errors $R_ERRORS: $R_FIRST)"
fleet "session: parameters, RESET=dirty" session "PQDEDUP_MAX_PER_KEY=1 PQDEDUP_RESET=dirty" "$WORKERS" -s 1 -l "$LEAK_EVERY" "${param_checks[@]}"
EXTRA_CONNINFO=

checks_done test_fleet

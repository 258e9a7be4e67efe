#!/usr/bin/env bash
# Fleet benchmark: 8 churning worker processes direct, through PgBouncer alone, and under pqdedup + PgBouncer (session and transaction mode), side by side in one run.
#
# Usage: bench/fleet.sh [--quick|--full] [--seconds S] [--rounds N] [--workers N] [--build DIR]
#   --quick       1 round of 3 s per configuration (default; about 40 s)
#   --full        3 rounds of 10 s (about 4 minutes)
#   --build DIR   where pqdedup and fleet_worker are (built there if missing; default build/)
# Starts its own throwaway PostgreSQL (tests/harness/pg-up.sh: max_connections=40, fsync off)
# and, for each run, a fresh PgBouncer (tests/fleet/bouncer.sh: default_pool_size=10, TCP on
# 127.0.0.1, logs in to the server as pqd_alice). Each worker (tests/fleet/fleet_worker.c) is a
# separate process making PQconnectdb + SELECT + PQfinish cycles for the run's length, over
# TCP to 127.0.0.1 (direct or to PgBouncer). Prints one table (medians over the rounds;
# configuration order rotates every round) and writes it with every run's raw lines to
# bench/results/fleet-<UTC timestamp>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MODE=quick SECS='' ROUNDS='' WORKERS=8 BUILD=$ROOT/build POOL=10

log() { printf '[fleet] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --seconds) SECS=${2:?}; shift ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --workers) WORKERS=${2:?}; shift ;;
    --build) BUILD=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done
if [[ $MODE == full ]]; then : "${SECS:=10}" "${ROUNDS:=3}"; else : "${SECS:=3}" "${ROUNDS:=1}"; fi
[[ $BUILD == /* ]] || BUILD=$PWD/$BUILD
command -v pgbouncer >/dev/null || die "pgbouncer is not installed (Debian: pgbouncer)"

if [[ ! -x $BUILD/pqdedup || ! -x $BUILD/fleet_worker ]]; then
  log "building pqdedup and fleet_worker in $BUILD"
  { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$BUILD" -j 2; } >&2 ||
    die "the build failed"
fi
PQD=$BUILD/pqdedup
W=$BUILD/fleet_worker

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/fleet-$STAMP
mkdir -p "$OUT/runs"
GITREV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

PGDIR=$(mktemp -d /tmp/pqd-fleet-bench.XXXXXX)
B=
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  [[ -z $B ]] || bouncer_stop "$B"
  "$ROOT/tests/harness/pg-down.sh" "$PGDIR" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$ROOT/tests/harness/pg-up.sh" "$PGDIR" >"$OUT/pg-up.log" 2>&1 || { cat "$OUT/pg-up.log" >&2; die "the server did not start"; }
# shellcheck source=/dev/null
. "$PGDIR/env.sh"
# Every path logs in as postgres, trusted on the socket and 127.0.0.1 (pg-up.sh's
# pg_hba.conf), so no path pays for SCRAM on each connect.
BOUNCER_ROLE=postgres BOUNCER_ROLE_PASSWORD=
# shellcheck source=tests/fleet/bouncer.sh
. "$ROOT/tests/fleet/bouncer.sh"
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

OBSERVER="host=$PGHOST port=$PGPORT dbname=postgres user=postgres application_name=pqd_observer"
DIRECT="host=127.0.0.1 port=$PGPORT dbname=postgres user=postgres"

# name | PgBouncer pool_mode (or "none") | pqdedup settings ("plain": none; "defaults")
CONFIGS=(
  "direct, plain libpq|none|plain"
  "direct, pqdedup defaults|none|defaults"
  "PgBouncer session, plain libpq|session|plain"
  "PgBouncer session + pqdedup MAX_PER_KEY=1|session|PQDEDUP_MAX_PER_KEY=1"
  "PgBouncer transaction, plain libpq|transaction|plain"
  "PgBouncer transaction + pqdedup defaults|transaction|defaults"
  "PgBouncer transaction + pqdedup RESET_QUERY=''|transaction|PQDEDUP_RESET_QUERY="
  "PgBouncer transaction + pqdedup RESET=dirty|transaction|PQDEDUP_RESET=dirty"
)

# sum_field PREFIX NAME FILE...: the sum of NAME=N over the lines starting with PREFIX.
sum_field() {
  local prefix=$1 name=$2
  shift 2
  cat "$@" | grep -F "$prefix" | grep -o " $name=[0-9]*" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'
}

# run ROUND INDEX: one configuration once; appends a line to raw.txt.
RAW=$OUT/raw.txt
: >"$RAW"
run() {
  local round=$1 idx=$2 name mode settings d conninfo log0
  IFS='|' read -r name mode settings <<<"${CONFIGS[$idx]}"
  d=$OUT/runs/r$round-c$idx
  mkdir -p "$d"
  chmod 755 "$d"
  if [[ $mode == none ]]; then
    conninfo=$DIRECT
  else
    bouncer_start "$d" "$mode" "$POOL" "query_wait_timeout = 5" || die "PgBouncer did not start"
    B=$d
    conninfo="host=127.0.0.1 port=$BOUNCER_PORT dbname=fleet user=$BOUNCER_ROLE"
  fi
  log0=$(wc -l <"$PQD_TEST_PGLOG")
  rm -f "$d/ready" "$d/stop"
  "$W" observe -u "$BOUNCER_ROLE" -r "$d/ready" -f "$d/stop" -s 600 "$OBSERVER" >"$d/observer.out" 2>&1 &
  local obs=$! deadline=$((SECONDS + 10))
  while [[ ! -e $d/ready ]] && kill -0 "$obs" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.02; done
  local -a pre=(env) vars=() pids=()
  if [[ $settings != plain ]]; then
    [[ $settings == defaults ]] || read -r -a vars <<<"$settings"
    pre+=("${vars[@]}" "$PQD" --stats --)
  fi
  local i
  for ((i = 1; i <= WORKERS; i++)); do
    "${pre[@]}" "$W" work -s "$SECS" "$conninfo" >"$d/worker-$i.out" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  : >"$d/stop"
  wait "$obs" || true
  [[ $mode == none ]] || { bouncer_stop "$d"; B=; }
  # Before the next run: (up to 10 s) until none of this run's backends is left.
  deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)) &&
    [[ $(psql_obs "SELECT count(*) FROM pg_stat_activity WHERE usename = '$BOUNCER_ROLE' AND backend_type = 'client backend' AND application_name <> 'pqd_observer'") != 0 ]]; do sleep 0.05; done
  # Server sessions this run opened: the server logs each (log_connections); the observer's
  # and psql_obs's carry application_name=pqd_observer.
  local opened
  opened=$(tail -n +"$((log0 + 1))" "$PQD_TEST_PGLOG" | grep 'connection authorized: user=' | grep -vc 'application_name=pqd_observer' || true)
  local outs=("$d"/worker-*.out) connects errors ms maxsrv
  connects=$(sum_field "work " connects "${outs[@]}")
  errors=$(sum_field "work " errors "${outs[@]}")
  ms=$(grep -h '^work ' "${outs[@]}" | grep -o ' ms=[0-9]*' | cut -d= -f2 | sort -n | tail -n 1)
  maxsrv=$(sed -n 's/.* max=\([0-9]*\).*/\1/p' "$d/observer.out")
  echo "$round|$idx|$connects|$errors|${ms:-0}|${maxsrv:--1}|$opened" >>"$RAW"
  log "r$round $(printf '%-48s' "$name") connects/s=$(awk -v c="$connects" -v m="${ms:-1}" 'BEGIN { printf "%.0f", c * 1000 / m }') errors=$errors max_server_backends=${maxsrv:-?}"
}

psql_obs() { "$(dirname "$PQD_TEST_PGCTL")/psql" -X -qtA -v ON_ERROR_STOP=1 "$OBSERVER" -c "$1"; }

log "PostgreSQL $(psql_obs 'SHOW server_version') (max_connections=40), $(pgbouncer -V | head -n 1), $WORKERS workers, $ROUNDS round(s) of $SECS s"
n=${#CONFIGS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < n; k++)); do
    run "$r" $(((k + r - 1) % n))
  done
done

# Medians per configuration; ratios to direct plain libpq and to PgBouncer transaction alone.
TABLE=$OUT/table.md
awk -F'|' -v n="$n" -v secs="$SECS" -v names="$(printf '%s\n' "${CONFIGS[@]}" | cut -d'|' -f1 | paste -sd'|')" '
  function median(arr, cnt,   i, j, t) {
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return cnt % 2 ? arr[(cnt + 1) / 2] : (arr[cnt / 2] + arr[cnt / 2 + 1]) / 2
  }
  { c = $2; k = ++cnt[c]; rate[c, k] = $3 * 1000 / ($5 > 0 ? $5 : 1); err[c] += $4; if ($6 > mx[c]) mx[c] = $6; ses[c] += $7; con[c] += $3 }
  END {
    split(names, nm, "|")
    for (c = 0; c < n; c++) { for (k = 1; k <= cnt[c]; k++) a[k] = rate[c, k]; med[c] = median(a, cnt[c]) }
    print "| configuration | connects/s (median) | x direct | x PgBouncer tx alone | errors | max server backends | server sessions opened / connects |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    for (c = 0; c < n; c++)
      printf "| %s | %.0f | %.2f | %.2f | %d | %d | %d / %d |\n", nm[c + 1], med[c], med[c] / med[0], med[c] / med[4], err[c], mx[c], ses[c], con[c]
  }' "$RAW" >"$TABLE"
{
  echo "# Fleet benchmark, $STAMP"
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- PostgreSQL $(psql_obs 'SHOW server_version'), max_connections=40, fsync off; $(pgbouncer -V | head -n 1), default_pool_size=$POOL"
  echo "- $WORKERS worker processes, each PQconnectdb + SELECT pg_backend_pid() + PQfinish in a loop for $SECS s, over TCP 127.0.0.1; $ROUNDS round(s); pqdedup at git $GITREV ($PQD)"
  echo
  cat "$TABLE"
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
echo
echo "written to $OUT"

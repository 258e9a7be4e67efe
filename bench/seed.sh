#!/usr/bin/env bash
# bench/seed.sh: the seed app (tests/seed/app.py) with 100 connection slots: requests per second of the fixed app, the leaky app under pqdedup (default settings) and plain, side by side.
#
# Usage: bench/seed.sh [--requests N] [--clients C] [--rounds R] [--build DIR] [--env "VAR=V ..."]
#   defaults: 1500 requests, 8 concurrent clients, 3 rounds (each round runs every variant,
#   interleaved, so a noisy machine affects them alike); --build: where pqdedup is (build/).
#   --env adds settings to the pqdedup run (e.g. "PQDEDUP_UNBIND_AFTER=10ms").
# Starts its own throwaway PostgreSQL (tests/harness/pg-up.sh) with max_connections=120 and a
# role limited to 100 connections; run as root on Debian 12 (installs what it needs).
# Prints one line per run and a table of medians: requests/s, failed requests, the role's
# highest backend count, and the ratio of each to the fixed app.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
REQUESTS=1500 CLIENTS=8 ROUNDS=3 BUILD=$ROOT/build PQD_ENV=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --requests) REQUESTS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --env) PQD_ENV=$2; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/seed.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

"$ROOT/scripts/ensure-packages.sh" postgresql-15 libpq-dev uthash-dev libxxhash-dev cmake gcc pkg-config \
  python3-fastapi python3-uvicorn python3-sqlalchemy python3-psycopg2
if [[ ! -x $BUILD/pqdedup ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
fi

PGDIR=$(mktemp -d /tmp/pqdedup-seed.XXXXXX)
SEED_OUT=$(mktemp -d /tmp/pqdedup-seed-out.XXXXXX)
PYTHON=/usr/bin/python3
SEED_DIR=$ROOT/tests/seed
SEED_ROLE=pqd_seed_bench
# shellcheck source=tests/seed/lib.sh
. "$ROOT/tests/seed/lib.sh"
cleanup() {
  seed_stop_app
  "$ROOT/tests/harness/pg-down.sh" "$PGDIR" >/dev/null 2>&1 || true
  rm -rf -- "$SEED_OUT"
}
trap cleanup EXIT

"$ROOT/tests/harness/pg-up.sh" "$PGDIR" >/dev/null
# shellcheck source=/dev/null
. "$PGDIR/env.sh"
PSQL=("$(dirname "$PQD_TEST_PGCTL")/psql" -X -q -v ON_ERROR_STOP=1 -tA)
"${PSQL[@]}" -c "ALTER SYSTEM SET max_connections = 120" >/dev/null
"$ROOT/tests/harness/pg-ctl.sh" restart -w >/dev/null
seed_setup_role "$SEED_ROLE" 100
export SEED_DSN="postgresql+psycopg2://$SEED_ROLE:seed_pw@127.0.0.1:$PGPORT/postgres"

echo "seed bench: $REQUESTS requests from $CLIENTS clients, role limited to 100 connections, $ROUNDS rounds"
results=$SEED_OUT/results.tsv
for round in $(seq "$ROUNDS"); do
  for variant in fixed pqdedup plain; do
    prefix=${variant}_$round
    case $variant in
      fixed) seed_run "$prefix" "$REQUESTS" "$CLIENTS" SEED_FIX=1 ;;
      # shellcheck disable=SC2086  # PQD_ENV is a list of VAR=VALUE words
      pqdedup) seed_run "$prefix" "$REQUESTS" "$CLIENTS" $PQD_ENV PQDEDUP_STATS=1 "$BUILD/pqdedup" -- ;;
      plain) seed_run "$prefix" "$REQUESTS" "$CLIENTS" ;;
    esac
    seed_summary "$prefix" "round $round, $variant"
    grep '^pqdedup\[[0-9]*\]: stats ' "$SEED_OUT/$prefix.err" | sed 's/^/      /' || true
    printf '%s\t%s\t%s\t%s\n' "$variant" "$(seed_field "$prefix" requests_per_second)" \
      "$(seed_field "$prefix" failed)" "$(cat "$SEED_OUT/$prefix.max")" >>"$results"
    # The leaky variants leave their connections to the end of the app: wait for them to go.
    for _ in $(seq 200); do
      [[ $("${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE usename = '$SEED_ROLE'") -eq 0 ]] && break
      sleep 0.05
    done
  done
done

echo
"$PYTHON" - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
med = {}
for v in ("fixed", "pqdedup", "plain"):
    r = [row for row in rows if row[0] == v]
    med[v] = (statistics.median(float(x[1]) for x in r), statistics.median(int(x[2]) for x in r),
              max(int(x[3]) for x in r))
print("| the seed app, 100 slots | requests/s (median) | ratio to the fixed app | failed requests (median) | most backends |")
print("|---|---:|---:|---:|---:|")
names = {"fixed": "fixed (one engine), plain libpq", "pqdedup": "leaky, under pqdedup (defaults)",
         "plain": "leaky, plain libpq"}
for v in ("fixed", "pqdedup", "plain"):
    rps, failed, most = med[v]
    print(f"| {names[v]} | {rps:.0f} | {rps / med['fixed'][0]:.2f} | {failed} | {most} |")
PY

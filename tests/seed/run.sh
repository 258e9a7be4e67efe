#!/usr/bin/env bash
# tests/seed/run.sh: the seed app as deployed (uvicorn, its thread pool, 16 concurrent clients, 17 connection slots), plain libpq and under pqdedup.
#
# The app (app.py) builds a SQLAlchemy engine and Session for every request and never disposes
# of them. Its role may open 17 connections (CONNECTION LIMIT). 300 POST requests, each writing
# one row and reading it back, come from 16 concurrent clients:
#   plain libpq   requests fail ("too many connections for role"): the negative control
#   under pqdedup every request succeeds, every write is committed exactly once, and the role
#                 never has more backends than its slots
# Options: --requests N (300) --clients C (16) --slots S (17); extra environment for the pqdedup
# run in SEED_PQD_ENV ("VAR=VALUE ..."). Needs python3-fastapi, python3-uvicorn,
# python3-sqlalchemy, python3-psycopg2 (Debian's /usr/bin/python3).
set -euo pipefail

: "${PGHOST:?source the env.sh written by tests/harness/pg-up.sh}"
: "${PQD_TEST_LAUNCHER:?run through ctest (pqdedup_add_test sets PQD_TEST_LAUNCHER)}"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PYTHON=/usr/bin/python3
PSQL=("$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")/psql" -X -q -v ON_ERROR_STOP=1 -tA)
REQUESTS=300 CLIENTS=16 SLOTS=17
while [[ $# -gt 0 ]]; do
  case $1 in
    --requests) REQUESTS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --slots) SLOTS=$2; shift ;;
    *) echo "usage: $0 [--requests N] [--clients C] [--slots S]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
  echo "seed: skipped in a sanitizer build: python3 cannot run with $(basename "$PQD_TEST_SANITIZER_RUNTIME") and libpq loaded"
  exit 77
fi

ROLE=pqd_seed_$$
OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-seed.XXXXXX")
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  "${PSQL[@]}" -c "DROP SCHEMA IF EXISTS $ROLE CASCADE" -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true
  rm -rf -- "$OUT"
}
trap cleanup EXIT

failures=0
check() { # check DESCRIPTION COMMAND...: a failed command is a failed check
  local what=$1; shift
  if "$@"; then echo "seed: ok: $what"; else echo "seed: FAIL: $what" >&2; failures=$((failures + 1)); fi
}

"${PSQL[@]}" <<SQL
CREATE ROLE $ROLE LOGIN PASSWORD 'seed_pw' CONNECTION LIMIT $SLOTS;
CREATE SCHEMA $ROLE AUTHORIZATION $ROLE;
ALTER ROLE $ROLE SET search_path = $ROLE;
CREATE TABLE $ROLE.seed_items (rid text NOT NULL, backend int NOT NULL);
ALTER TABLE $ROLE.seed_items OWNER TO $ROLE;
SQL
export SEED_DSN="postgresql+psycopg2://$ROLE:seed_pw@127.0.0.1:$PGPORT/${PGDATABASE:-postgres}"

backends() { "${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE usename = '$ROLE'"; }

# run LABEL PREFIX [LAUNCHER...]: starts the app (under LAUNCHER if given), sends the load,
# stops the app. Leaves the load's JSON in $OUT/PREFIX.json, the highest backend count seen in
# $OUT/PREFIX.max and the app's stderr in $OUT/PREFIX.err.
run() {
  local label=$1 prefix=$2; shift 2
  local port
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env "$@" "$PYTHON" -m uvicorn app:app --app-dir "$HERE" --host 127.0.0.1 --port "$port" \
    --log-level warning 2>"$OUT/$prefix.err" &
  server_pid=$!
  for _ in $(seq 200); do
    "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$OUT/$prefix.err" >&2; echo "seed: the app did not start" >&2; exit 1; }
    sleep 0.05
  done
  # The highest backend count of the role while the load runs.
  ( max=0; while :; do n=$(backends); (( n > max )) && { max=$n; echo "$max" >"$OUT/$prefix.max"; }; sleep 0.02; done ) &
  local sampler=$!
  echo 0 >"$OUT/$prefix.max"
  "$PYTHON" "$HERE/load.py" "http://127.0.0.1:$port" "$REQUESTS" "$CLIENTS" "$prefix" >"$OUT/$prefix.json"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=
  "$PYTHON" - "$OUT/$prefix.json" "$label" "$(cat "$OUT/$prefix.max")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"seed: {sys.argv[2]}: {r['ok']} of {r['requests']} requests served, {r['failed']} failed, "
      f"{r['requests_per_second']} requests/s, at most {sys.argv[3]} backends"
      + (f"; first error: {r['first_error'][:200]}" if r['first_error'] else ""))
PY
}

field() { "$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/$1.json" "$2"; }

# Every request that succeeded wrote exactly one row, and no request wrote two.
writes_exactly_once() {
  local prefix=$1
  "$PYTHON" -c "import json, sys; print('\n'.join(json.load(open(sys.argv[1]))['ok_rids']))" "$OUT/$prefix.json" |
    sort >"$OUT/$prefix.ok"
  "${PSQL[@]}" -c "SELECT rid FROM $ROLE.seed_items WHERE rid LIKE '$prefix-%' ORDER BY rid" | sort >"$OUT/$prefix.rows"
  diff -q "$OUT/$prefix.ok" "$OUT/$prefix.rows" >/dev/null
}

echo "seed: $REQUESTS requests from $CLIENTS clients; the role may open $SLOTS connections"
run "plain libpq" plain
check "plain libpq: requests fail once the role's slots are used up (the problem exists)" \
  test "$(field plain failed)" -gt 0
check "plain libpq: every request that succeeded wrote its row exactly once" writes_exactly_once plain

# shellcheck disable=SC2086  # SEED_PQD_ENV is a list of VAR=VALUE words
run "under pqdedup" pqd ${SEED_PQD_ENV:-} PQDEDUP_STATS=1 "$PQD_TEST_LAUNCHER" --
check "under pqdedup: every request succeeded" test "$(field pqd failed)" -eq 0
check "under pqdedup: every write is committed exactly once" writes_exactly_once pqd
check "under pqdedup: the role never had more than $SLOTS backends" test "$(cat "$OUT/pqd.max")" -le "$SLOTS"
check "under pqdedup: the app printed nothing but pqdedup's stats line" \
  test "$(grep -vc '^pqdedup\[[0-9]*\]: stats ' "$OUT/pqd.err")" -eq 0
grep '^pqdedup\[[0-9]*\]: stats ' "$OUT/pqd.err" | sed 's/^/seed: /' || true
echo "seed: $((failures == 0 ? 1 : 0)) of 1 runs passed (failures: $failures)"
[[ $failures -eq 0 ]]

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

SEED_DIR=$HERE
SEED_ROLE=pqd_seed_$$
SEED_OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-seed.XXXXXX")
# shellcheck source=tests/seed/lib.sh
. "$HERE/lib.sh"
cleanup() {
  seed_stop_app
  seed_drop_role "$SEED_ROLE"
  rm -rf -- "$SEED_OUT"
}
trap cleanup EXIT

failures=0
check() { # check DESCRIPTION COMMAND...: a failed command is a failed check
  local what=$1; shift
  if "$@"; then echo "seed: ok: $what"; else echo "seed: FAIL: $what" >&2; failures=$((failures + 1)); fi
}

seed_setup_role "$SEED_ROLE" "$SLOTS"
export SEED_DSN="postgresql+psycopg2://$SEED_ROLE:seed_pw@127.0.0.1:$PGPORT/${PGDATABASE:-postgres}"

# Every request that succeeded wrote exactly one row, and no request wrote two.
writes_exactly_once() {
  local prefix=$1
  "$PYTHON" -c "import json, sys; print('\n'.join(json.load(open(sys.argv[1]))['ok_rids']))" "$SEED_OUT/$prefix.json" |
    sort >"$SEED_OUT/$prefix.ok"
  "${PSQL[@]}" -c "SELECT rid FROM $SEED_ROLE.seed_items WHERE rid LIKE '$prefix-%' ORDER BY rid" | sort >"$SEED_OUT/$prefix.rows"
  diff -q "$SEED_OUT/$prefix.ok" "$SEED_OUT/$prefix.rows" >/dev/null
}

echo "seed: $REQUESTS requests from $CLIENTS clients; the role may open $SLOTS connections"
seed_run plain "$REQUESTS" "$CLIENTS"
seed_summary plain "plain libpq"
check "plain libpq: requests fail once the role's slots are used up (the problem exists)" \
  test "$(seed_field plain failed)" -gt 0
check "plain libpq: every request that succeeded wrote its row exactly once" writes_exactly_once plain

# shellcheck disable=SC2086  # SEED_PQD_ENV is a list of VAR=VALUE words
seed_run pqd "$REQUESTS" "$CLIENTS" ${SEED_PQD_ENV:-} PQDEDUP_STATS=1 "$PQD_TEST_LAUNCHER" --
seed_summary pqd "under pqdedup"
check "under pqdedup: every request succeeded" test "$(seed_field pqd failed)" -eq 0
check "under pqdedup: every write is committed exactly once" writes_exactly_once pqd
check "under pqdedup: the role never had more than $SLOTS backends" test "$(cat "$SEED_OUT/pqd.max")" -le "$SLOTS"
check "under pqdedup: the app printed nothing but pqdedup's stats line" \
  test "$(grep -vc '^pqdedup\[[0-9]*\]: stats ' "$SEED_OUT/pqd.err")" -eq 0
grep '^pqdedup\[[0-9]*\]: stats ' "$SEED_OUT/pqd.err" | sed 's/^/seed: /' || true
echo "seed: $((failures == 0 ? 1 : 0)) of 1 runs passed (failures: $failures)"
[[ $failures -eq 0 ]]

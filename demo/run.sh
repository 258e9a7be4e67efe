#!/usr/bin/env bash
# run.sh: the pqdedup demo: a throwaway PostgreSQL and a leaky program, before and after pqdedup.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
BUILD=$ROOT/build/demo
say() { printf '%s\n' "$*"; }

"$ROOT/scripts/ensure-packages.sh" postgresql postgresql-15 libpq-dev uthash-dev libxxhash-dev cmake make gcc \
  libc6-dev pkg-config openssl

say "== building pqdedup into $BUILD"
cmake -S . -B "$BUILD" -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j2 >/dev/null
cc -O2 -o "$BUILD/leaky" demo/leaky.c -I"$(pg_config --includedir)" -lpq

server=$(mktemp -d /tmp/pqdedup-demo.XXXXXX)
trap 'bash "$ROOT/tests/harness/pg-down.sh" "$server" >/dev/null 2>&1 || true' EXIT
say "== starting a throwaway PostgreSQL 15 in $server"
bash tests/harness/pg-up.sh "$server" >/dev/null
# shellcheck disable=SC1091
. "$server/env.sh"
max=$(psql -XAtc "SHOW max_connections")
say "   max_connections = $max"

run() { # run LABEL COMMAND...: prints the leaky program's summary
  printf '  %-34s ' "$1"; shift
  "$@" || true
}

say ""
say "== A service that connects for every request and never closes (150 requests)"
run "plain libpq:" "$BUILD/leaky" leak 150
run "under pqdedup:" "$BUILD/pqdedup" -- "$BUILD/leaky" leak 150
run "under pqdedup --unbind-after 0:" "$BUILD/pqdedup" --unbind-after 0 -- "$BUILD/leaky" leak 150
say "   Every leaked connection is a session of its own. By default one idle for 10ms (or at"
say "   once, when the server is full) lends its server connection to the next connect: a"
say "   leak this fast opens backends only for its first 10ms. With --unbind-after 0, at once."

say ""
say "== A service that connects and closes for every request (2000 requests)"
run "plain libpq:" "$BUILD/leaky" churn 2000
run "under pqdedup:" "$BUILD/pqdedup" -- "$BUILD/leaky" churn 2000

say ""
say "Each reused connection was rolled back and reset with DISCARD ALL before the next"
say "request got it. See README.md for the settings."

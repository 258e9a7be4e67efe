#!/usr/bin/env bash
# tests/soak/run.sh: the long soak: builds the plain tree, starts a throwaway PostgreSQL (max_connections=40) and runs tests/soak/soak.c under pqdedup for N minutes.
#
# Usage: tests/soak/run.sh [--minutes N] [--threads N] [--procs N] [--build-dir DIR]
#   --minutes N    how long (default 5)
#   --threads N    threads in the main process, half churning, half leaking (default 16)
#   --procs N      child processes, one churning and one leaking thread each (default 4)
#   --build-dir D  build tree to use or make (default build/soak)
# Runs with PQDEDUP_UNBIND_AFTER=0 (soak.c says why) and PQDEDUP_STATS=1; prints the soak's
# samples summary and exits with its status (0: no errors, bounded backends, fds flat and RSS
# within what the leaked handles cost). As root the server
# runs as the postgres user (tests/harness/pg-up.sh). The 25 s version is the ctest soak_short.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
minutes=5 threads=16 procs=4 BUILD=$ROOT/build/soak
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=$2; shift ;;
    --threads) threads=$2; shift ;;
    --procs) procs=$2; shift ;;
    --build-dir) BUILD=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $minutes =~ ^[1-9][0-9]*$ ]] || { echo "soak: --minutes needs a positive number" >&2; exit 2; }

"$ROOT/scripts/ensure-packages.sh" postgresql-15 libpq-dev uthash-dev libxxhash-dev cmake make gcc pkg-config openssl
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON \
  -DPQDEDUP_SANITIZE= -DPQDEDUP_TEST_WRAPPER= >/dev/null
cmake --build "$BUILD" -j2 --target soak pqdedup_shim >/dev/null

while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(PG|PQDEDUP_)' || true)
PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/pqd-soak.XXXXXX")
trap '"$ROOT/tests/harness/pg-down.sh" "$PGDIR" >/dev/null 2>&1 || true' EXIT
"$ROOT/tests/harness/pg-up.sh" "$PGDIR" >/dev/null
# shellcheck source=/dev/null
. "$PGDIR/env.sh"
echo "soak: server on port $PGPORT; running ${minutes} min"
set +e
LD_PRELOAD="$BUILD/libpqdedup.so" PQDEDUP_UNBIND_AFTER=0 PQDEDUP_STATS=1 \
  "$BUILD/soak" --seconds $((minutes * 60)) --threads "$threads" --procs "$procs"
rc=$?
set -e
echo "soak: exit status $rc"
exit $rc

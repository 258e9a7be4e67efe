#!/usr/bin/env bash
# run-all.sh: the pqdedup test command: install what is missing, build each flavour, run ctest against one throwaway PostgreSQL.
#
# Flavours, each in its own build directory:
#   plain     build/plain     RelWithDebInfo
#   address   build/address   -DPQDEDUP_SANITIZE=address (ASan + UBSan)
#   thread    build/thread    -DPQDEDUP_SANITIZE=thread (TSan)
#   valgrind  build/valgrind  the plain build's C tests again under valgrind (PQD_TEST_SCALE=0.1;
#                             NO_VALGRIND tests are left to the plain flavour)
# Options:
#   --quick          the plain build only, and only the tests that need nothing but the build
#                    and the server (labels smoke key pool state handles concurrency launcher
#                    quick); installs only what those need (about 2 minutes on a 2-core VM;
#                    the full run takes 30 to 40 minutes)
#   --flavour NAME   run only NAME (repeatable, or comma-separated)
#   --jobs N         ctest -j N (default 1: tests share one server of max_connections=40)
# The environment variable PQD_TEST_SCALE (default 1) multiplies the tests' loop counts in the
# flavours that are not run under valgrind. Exit status 0 only if every flavour built and
# every test passed; a server that does not come up is a failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

ALL_FLAVOURS=(plain address thread valgrind)
VALGRIND_WRAPPER="valgrind;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite;--track-fds=no;--num-callers=30"
# What the build and the server need (--quick installs only these) ...
QUICK_PACKAGES=(postgresql postgresql-15 libpq-dev uthash-dev libxxhash-dev cmake make gcc libc6-dev pkg-config openssl)
QUICK_LABELS='^(smoke|key|pool|state|handles|concurrency|launcher|quick)$'
# ... and everything the full suite runs: the clients, sanitizers, valgrind, packaging.
PACKAGES=("${QUICK_PACKAGES[@]}"
          valgrind python3-psycopg2 pgbouncer python3-psycopg python3-psycopg-pool libdbd-pg-perl
          php-cli php-pgsql ruby ruby-pg clang libclang-rt-14-dev python3-fastapi python3-uvicorn
          python3-sqlalchemy dpkg-dev debhelper lintian man-db groff-base busybox-static php-fpm
          postgresql-server-dev-15 prometheus odbc-postgresql unixodbc python3-pyodbc libcap2)

say() { echo "run-all: $*"; }
die() { echo "run-all: ERROR: $*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

flavours=()
jobs=1
quick=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) flavours=(plain); quick=1 ;;
    --flavour|--flavor) [[ $# -ge 2 ]] || die "--flavour needs a name"; IFS=, read -ra f <<<"$2"; flavours+=("${f[@]}"); shift ;;
    --flavour=*|--flavor=*) IFS=, read -ra f <<<"${1#*=}"; flavours+=("${f[@]}") ;;
    --jobs) [[ $# -ge 2 ]] || die "--jobs needs a number"; jobs=$2; shift ;;
    --jobs=*) jobs=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[[ ${#flavours[@]} -gt 0 ]] || flavours=("${ALL_FLAVOURS[@]}")
for f in "${flavours[@]}"; do
  [[ " ${ALL_FLAVOURS[*]} " == *" $f "* ]] || die "unknown flavour '$f' (one of: ${ALL_FLAVOURS[*]})"
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive number"

# --- What the build and the tests need --------------------------------------------------
if [[ $quick -eq 1 ]]; then
  "$ROOT/scripts/ensure-packages.sh" "${QUICK_PACKAGES[@]}" || die "needed packages are missing"
else
  "$ROOT/scripts/ensure-packages.sh" "${PACKAGES[@]}" || die "needed packages are missing"
fi
say "all needed packages are installed"

# --- A clean environment: nothing of the caller's may steer libpq or the library ---------
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(PG|PQDEDUP_|PQD_TEST_)' | grep -vx PQD_TEST_SCALE || true)
unset LD_PRELOAD

# --- One throwaway server for every flavour ------------------------------------------------
mkdir -p build
PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/pqdedup-test.XXXXXX")
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [[ -f "$PGDIR/log/postgresql.log" ]]; then
    cp "$PGDIR/log/postgresql.log" "$ROOT/build/test-server.log" 2>/dev/null || true
  fi
  "$ROOT/tests/harness/pg-down.sh" "$PGDIR" >/dev/null 2>&1 || rm -rf -- "$PGDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting the test server in $PGDIR"
"$ROOT/tests/harness/pg-up.sh" "$PGDIR" || die "the test server did not come up (see above)"
# shellcheck source=/dev/null
source "$PGDIR/env.sh"

# Make sure the server answers; restart it if a test left it down. Returns 1 if it is gone.
server_ok() {
  local psql
  psql=$(dirname "$PQD_TEST_PGCTL")/psql
  "$psql" -X -tAc 'SELECT 1' >/dev/null 2>&1 && return 0
  say "the test server does not answer; starting it again"
  "$ROOT/tests/harness/pg-ctl.sh" start -w >/dev/null 2>&1 || true
  "$psql" -X -tAc 'SELECT 1' >/dev/null 2>&1
}

# --- Build and test each flavour -------------------------------------------------------------
declare -A summary
total_passed=0
total_failed=0
overall=0

# Configure and build flavour $1 in build/$1. Returns non-zero on failure.
build_flavour() {
  local f=$1 args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON)
  case $f in
    plain)    args+=(-DPQDEDUP_SANITIZE= -DPQDEDUP_TEST_WRAPPER=) ;;
    address)  args+=(-DPQDEDUP_SANITIZE=address -DPQDEDUP_TEST_WRAPPER=) ;;
    thread)   args+=(-DPQDEDUP_SANITIZE=thread -DPQDEDUP_TEST_WRAPPER=) ;;
    valgrind) args+=(-DPQDEDUP_SANITIZE= "-DPQDEDUP_TEST_WRAPPER=$VALGRIND_WRAPPER") ;;
  esac
  cmake -S "$ROOT" -B "build/$f" "${args[@]}" && cmake --build "build/$f" -j "$(nproc)"
}

for f in "${flavours[@]}"; do
  say "===== flavour $f: build ====="
  start=$SECONDS
  if ! build_flavour "$f"; then
    summary[$f]="FAILED: the build failed"
    total_failed=$((total_failed + 1))
    overall=1
    continue
  fi
  if ! server_ok; then
    summary[$f]="FAILED: the test server is down"
    total_failed=$((total_failed + 1))
    overall=1
    continue
  fi
  say "===== flavour $f: ctest ====="
  log=build/$f/run-all-ctest.log
  set +e
  select=()
  [[ $quick -eq 1 ]] && select=(-L "$QUICK_LABELS")
  ctest --test-dir "build/$f" --output-on-failure --no-tests=error -j "$jobs" "${select[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  closing=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ $closing =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
    failed=${BASH_REMATCH[1]}
    total_passed=$((total_passed + BASH_REMATCH[2] - failed))
    total_failed=$((total_failed + failed))
  else
    failed=0
    closing="ctest ran no test"
  fi
  if [[ $rc -eq 0 && $failed -eq 0 && $closing != "ctest ran no test" ]]; then
    summary[$f]="passed ($closing; $((SECONDS - start)) s)"
  else
    [[ $failed -gt 0 ]] || total_failed=$((total_failed + 1))
    summary[$f]="FAILED ($closing; ctest exit $rc; $((SECONDS - start)) s)"
    overall=1
  fi
done

# A short fuzz run of the key builder (libFuzzer; no server needed).
if [[ ${#flavours[@]} -eq ${#ALL_FLAVOURS[@]} ]]; then
  if "$ROOT/tests/fuzz/run.sh" --seconds 60; then
    summary[fuzz]="passed (60 s)"
  else
    summary[fuzz]="FAILED (see build/fuzz/artifacts)"
    overall=1
  fi
  flavours+=(fuzz)
fi

say "===== summary ====="
for f in "${flavours[@]}"; do
  say "flavour $f: ${summary[$f]}"
done
[[ $overall -eq 0 ]] || say "server log kept in build/test-server.log"
echo "run-all: $total_passed passed, $total_failed failed"
exit "$overall"

# tests/loaders/lib.sh: helpers shared by the loader scripts (sourced, not run).
#
# The scripts are registered NO_PRELOAD (tests/loaders.cmake): nothing is preloaded into the
# script itself; each program in it runs plain or under the launcher, explicitly.
set -uo pipefail

: "${PQD_TEST_LAUNCHER:?run through ctest (pqdedup_add_test sets PQD_TEST_LAUNCHER)}"
: "${PQD_TEST_AUDIT:?run through ctest (tests/loaders.cmake sets PQD_TEST_AUDIT)}"
L=$PQD_TEST_LAUNCHER
SHIM=$PQD_TEST_SHIM
AUDIT=$PQD_TEST_AUDIT
RT=${PQD_TEST_SANITIZER_RUNTIME:-}
PGBIN=$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")
PYTHON=/usr/bin/python3 # Debian's own, with Debian's python3-psycopg
SCRIPT=$(basename "$0")

# Nothing of the caller's pqdedup settings or loader variables leaks into these tests.
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
unset LD_AUDIT
# In sanitizer builds the library needs its sanitizer runtime loaded first: it is put in
# LD_PRELOAD for every program, plain runs included (so both runs differ only by pqdedup),
# and the launcher keeps a leading runtime first. These programs are not ours: no leak report.
# Known, and not pqdedup's doing: with a sanitizer runtime preloaded, a program that calls
# setlocale (env, python3) hangs at exit in p11-kit's destructor when the sanitized
# libpqdedup.so is preloaded without the auditor (the same with the library before the
# auditor existed; psql does it with the runtime alone). Such runs are skipped here.
if [[ -n $RT ]]; then
  export LD_PRELOAD=$RT
  export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0
else
  unset LD_PRELOAD
fi

T=$(mktemp -d /tmp/pqd-loaders-XXXXXX)
trap 'rm -rf "$T"' EXIT

passed=0
failed=0
# check DESCRIPTION CONDITION...: runs the condition; counts a failure if it fails.
check() {
  local what=$1; shift
  if "$@"; then
    passed=$((passed + 1)); echo "$SCRIPT: ok: $what"
  else
    failed=$((failed + 1)); echo "$SCRIPT: FAIL: $what" >&2
  fi
}
# finish: the summary; exit 0 only if every check passed and one ran.
finish() {
  echo "$SCRIPT: $passed passed, $failed failed"
  [[ $passed -gt 0 && $failed -eq 0 ]] && exit 0
  exit 1
}
# skip REASON: this test cannot run in this build (ctest SKIP_RETURN_CODE 77).
skip() {
  echo "$SCRIPT: skipped: $*"
  exit 77
}

# obs SQL: runs SQL through psql with plain libpq, as the observer (pqd_observer).
obs() {
  env -u LD_PRELOAD -u LD_AUDIT PGAPPNAME=pqd_observer "$PGBIN/psql" -X -qtA -v ON_ERROR_STOP=1 -d postgres -c "$1"
}
# wait_backends APP N: waits up to 10 s until at most N backends of APP remain.
wait_backends() {
  local i
  for i in $(seq 1 200); do
    [[ $(obs "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'") -le $2 ]] && return 0
    sleep 0.05
  done
  return 1
}
# stats_field FILE NAME: NAME=N from the last "pqdedup[pid]: stats ..." line of FILE.
stats_field() {
  grep -E '^pqdedup\[[0-9]+\]: stats ' "$1" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# tests/clients/lib.sh: shared helpers for the real-client tests (sourced, not run).
#
# The scripts are registered NO_PRELOAD (tests/clients.cmake): nothing is preloaded into the
# script itself; each client program is run either plain or under pqdedup, explicitly.

set -euo pipefail

: "${PGHOST:?source the env.sh written by tests/harness/pg-up.sh}"
: "${PQD_TEST_SHIM:?run through ctest (pqdedup_add_test sets PQD_TEST_SHIM)}"

# The server's own client programs, not Debian's pg_wrapper (a Perl script) in /usr/bin.
PGBIN=$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")
# Debian's python3 with python3-psycopg2, not a pyenv python3 that may come first on PATH.
PYTHON=/usr/bin/python3

failures=0
checks=0
SCRIPT=$(basename "$0")

# check DESCRIPTION CONDITION...: runs the condition (a command); counts a failure if it fails.
check() {
  local what=$1; shift
  checks=$((checks + 1))
  if "$@"; then
    echo "$SCRIPT: ok: $what"
  else
    failures=$((failures + 1))
    echo "$SCRIPT: FAIL: $what" >&2
  fi
}

# finish: prints the summary and exits 0 only if every check passed and one ran.
finish() {
  echo "$SCRIPT: $((checks - failures)) passed, $failures failed"
  if [[ $checks -gt 0 && $failures -eq 0 ]]; then exit 0; else exit 1; fi
}

# obs SQL: runs SQL on the postgres database through psql, plain libpq, as the observer
# (application_name pqd_observer); prints the unaligned, tuples-only result.
obs() {
  env -u LD_PRELOAD PGAPPNAME=pqd_observer "$PGBIN/psql" -X -qtA -v ON_ERROR_STOP=1 -d postgres -c "$1"
}

# count_backends APP: backends with that application_name.
count_backends() {
  obs "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'"
}

# wait_backends APP N: waits up to 10 s until at most N backends of APP remain.
wait_backends() {
  local i
  for i in $(seq 1 200); do
    [[ $(count_backends "$1") -le $2 ]] && return 0
    sleep 0.05
  done
  return 1
}

# plain CMD...: runs CMD with plain libpq (nothing preloaded).
plain() {
  env -u LD_PRELOAD "$@"
}

# under_pqdedup CMD...: runs CMD under pqdedup through the launcher, as a user would.
# (tests/clients.cmake registers these scripts only in builds without a sanitizer: see there.)
under_pqdedup() {
  : "${PQD_TEST_LAUNCHER:?the pqdedup launcher is not built}"
  if [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
    echo "$SCRIPT: not usable in a sanitizer build (see tests/clients.cmake)" >&2
    return 1
  fi
  "$PQD_TEST_LAUNCHER" -- "$@"
}

# stats_field FILE NAME: the value of NAME=N in the last "pqdedup[pid]: stats ..." line of FILE.
stats_field() {
  grep -E '^pqdedup\[[0-9]+\]: stats ' "$1" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

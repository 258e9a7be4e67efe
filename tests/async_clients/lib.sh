# tests/async_clients/lib.sh: what the async_clients scripts share (sourced): the skip rule, running a client plain or under the launcher, its result line, a sampler of its backends.
#
# Builds on tests/clients/lib.sh (check, finish, obs, plain, wait_backends; PYTHON is Debian's
# /usr/bin/python3).
# shellcheck shell=bash

# shellcheck source=../clients/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../clients/lib.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

# Sanitizer builds: the interpreters cannot start with the ASan/TSan runtime and libpq loaded
# (see tests/matrix/run.sh and docs/CLIENTS.md): the test reports "skipped" (exit 77).
if [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
  echo "$SCRIPT: skipped in a sanitizer build: the interpreter cannot run with $(basename "$PQD_TEST_SANITIZER_RUNTIME") and libpq loaded"
  exit 77
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-async.XXXXXX")
sampler_pid=
cleanup() {
  stop_sampler
  rm -rf -- "$OUT"
}
trap cleanup EXIT

# run_client plain|pqdedup CMD...: runs the client plain or under the launcher (default
# settings; the exit line of counters and any warning go to $OUT/pqdedup.log). Sets RC; the
# client's output is in $OUT/HOW.stdout and .stderr (shown indented), and its wall time in
# WALL (seconds).
run_client() {
  local how=$1; shift
  local start=$EPOCHREALTIME
  set +e
  if [[ $how == plain ]]; then
    plain "$@" >"$OUT/$how.stdout" 2>"$OUT/$how.stderr"
  else
    env -u LD_PRELOAD PQDEDUP_STATS=1 PQDEDUP_LOG=warn PQDEDUP_LOG_FILE="$OUT/pqdedup.log" \
      "$PQD_TEST_LAUNCHER" -- "$@" >"$OUT/$how.stdout" 2>"$OUT/$how.stderr"
  fi
  RC=$?
  set -e
  WALL=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "--- $how: exit $RC after ${WALL}s"
  sed 's/^/    stdout: /' "$OUT/$how.stdout"
  sed 's/^/    stderr: /' "$OUT/$how.stderr"
  if [[ $how == pqdedup ]]; then
    sed 's/^/    pqdedup log: /' "$OUT/pqdedup.log" 2>/dev/null || true
  fi
}

# clean_exit HOW: the client exited 0 with nothing on stderr.
clean_exit() { [[ $RC -eq 0 && ! -s $OUT/$1.stderr ]]; }

# result HOW NAME: NAME's value in the client's last "async-result k=v ..." line (empty if none).
result() {
  sed -n 's/^async-result //p' "$OUT/$1.stdout" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# stat_sum NAME: NAME summed over pqdedup's exit lines (one per process that used libpq).
stat_sum() {
  { sed -En 's/^pqdedup\[[0-9]+\]: stats //p' "$OUT/pqdedup.log" 2>/dev/null || true; } |
    tr ' ' '\n' | sed -n "s/^$1=//p" | awk '{ s += $1 } END { print s + 0 }'
}

# no_error_logged: pqdedup logged no error.
no_error_logged() { ! grep -q ': error: ' "$OUT/pqdedup.log" 2>/dev/null; }

# is A OP B: compares two integers; false when either is empty.
is() { [[ -n $1 && -n $3 ]] && test "$1" "$2" "$3"; }

# start_sampler APP: counts the backends of APP (application_name) every 2ms, from a plain
# superuser connection, until stop_sampler; waits until it has taken its first sample.
# stop_sampler sets PEAK, the highest count seen.
start_sampler() {
  rm -f "$OUT/peak"
  env -u LD_PRELOAD "$PYTHON" "$HERE/sampler.py" "$1" "$OUT/peak" &
  sampler_pid=$!
  local _
  for _ in $(seq 1 200); do
    [[ -s $OUT/peak ]] && return 0
    kill -0 "$sampler_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$SCRIPT: the backend sampler did not start" >&2
  exit 1
}
stop_sampler() {
  [[ -n $sampler_pid ]] || return 0
  kill -TERM "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=
  # shellcheck disable=SC2034  # read by the scripts that source this
  PEAK=$(cat "$OUT/peak" 2>/dev/null || true)
}

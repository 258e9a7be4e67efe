#!/usr/bin/env bash
# tests/matrix/run.sh CLIENT MODE EXPECT: runs one client of the matrix (churn or leak), plain and under the pqdedup launcher, and checks results, backends used and a clean exit.
#
# CLIENT  c | c-dlopen | psycopg2-async | psycopg3-sync | psycopg3-asyncio | dbd-pg |
#         php-connect | php-async | php-pconnect | php-pdo | ruby
# MODE    churn: N=100 connect/query/close cycles   leak: N=60 connects never closed, past the
#         server's max_connections (40). Every client speaks one protocol (matrix_common.py).
# EXPECT  what pqdedup does with the client under the launcher:
#   reused       churn: every cycle works on at most 3 backends (pqdedup's stats: reused)
#   contained    leak: all N connects work and every connection answers again, on at most
#                max_connections backends (idle connections' server connections moved to new
#                connects: stats `moved`), where plain libpq is refused
#   passthrough  pqdedup cannot see the client's connect/finish: it behaves exactly as plain
#                libpq (one backend per connect, the server's refusal) and nothing is reused
#                or moved
#   persistent   PHP's own pg_pconnect pool: one backend, plain and under pqdedup
# Plain (nothing preloaded) the script asserts plain libpq's behaviour first: churn uses N
# backends; leak is refused by the server ("too many clients" / "remaining connection slots")
# before N. In both runs: exit status 0, nothing on stderr, every query answered correctly, and
# no backend of the run left once the program has exited.
# Extra environment for the pqdedup run (e.g. PQDEDUP_MAX_PER_KEY) comes from MATRIX_PQD_ENV
# ("VAR=VALUE ..."). Saturates the server in leak mode: register it SERIAL.
# shellcheck disable=SC2016  # check WHAT eval '...': the condition is evaluated when checked

set -euo pipefail

: "${PGHOST:?source the env.sh written by tests/harness/pg-up.sh}"
: "${PQD_TEST_LAUNCHER:?run through ctest (pqdedup_add_test sets PQD_TEST_LAUNCHER)}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PGBIN=$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")
PYTHON=/usr/bin/python3 # Debian's, with its python3-psycopg2/python3-psycopg; not a pyenv one
CLIENT=${1:-}; MODE=${2:-}; EXPECT=${3:-}
NAME="matrix $CLIENT $MODE"

usage() { sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
case $MODE in churn) N=100 ;; leak) N=60 ;; *) usage ;; esac
case $EXPECT in reused|contained|passthrough|persistent) ;; *) usage ;; esac

interpreter=0
case $CLIENT in
  c)                CMD=("${MATRIX_C:?}") ;;
  c-dlopen)         CMD=("${MATRIX_C_DLOPEN:?}") ;;
  psycopg2-async)   CMD=("$PYTHON" "$HERE/psycopg2_async.py"); interpreter=1 ;;
  psycopg3-sync)    CMD=(env PSYCOPG_IMPL=python "$PYTHON" "$HERE/psycopg3.py"); interpreter=1 ;;
  psycopg3-asyncio) CMD=(env PSYCOPG_IMPL=python "$PYTHON" "$HERE/psycopg3.py"); interpreter=1 ;;
  dbd-pg)           CMD=(/usr/bin/perl "$HERE/dbd_pg.pl"); interpreter=1 ;;
  php-*)            CMD=(/usr/bin/php "$HERE/php_pgsql.php"); interpreter=1 ;;
  ruby)             CMD=(/usr/bin/ruby "$HERE/ruby_pg.rb"); interpreter=1 ;;
  *) usage ;;
esac
# Sanitizer builds: the interpreters cannot start with the ASan/TSan runtime and libpq loaded
# (checked on Debian 12: python3, perl and ruby hang at start-up waiting for glibc's setlocale
# lock, also with only libpq's dependency libp11-kit preloaded beside the runtime, without
# pqdedup; PHP refuses to load its RTLD_DEEPBIND extensions under a sanitizer runtime). The C
# clients cover the library in those builds.
if [[ $interpreter -eq 1 && -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
  echo "$NAME: skipped in a sanitizer build: the interpreter cannot run with $(basename "$PQD_TEST_SANITIZER_RUNTIME") and libpq loaded"
  exit 77
fi
VARIANT=()
case $CLIENT in
  psycopg3-*) VARIANT=("${CLIENT#psycopg3-}") ;;
  php-*) VARIANT=("${CLIENT#php-}") ;;
esac

OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-matrix.XXXXXX")
trap 'rm -rf -- "$OUT"' EXIT

failures=0
checks=0
check() { # check DESCRIPTION COMMAND...: a failed command is a failed check
  local what=$1; shift
  checks=$((checks + 1))
  if "$@"; then
    echo "$NAME: ok: $what"
  else
    failures=$((failures + 1))
    echo "$NAME: FAIL: $what" >&2
  fi
}

# obs SQL: a plain-libpq psql as the observer (application_name pqd_observer).
obs() {
  env -u LD_PRELOAD PGAPPNAME=pqd_observer "$PGBIN/psql" -X -qtA -v ON_ERROR_STOP=1 -d postgres -c "$1"
}
# gone APP: waits up to 10 s until no backend of APP (nor of its observer, APP_obs) remains.
gone() {
  local _
  for _ in $(seq 1 200); do
    [[ $(obs "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('$1', '$1_obs')") -eq 0 ]] && return 0
    sleep 0.05
  done
  return 1
}

# run_client plain|pqdedup APP: runs the client; sets RC, and R_* from its result line.
run_client() {
  local how=$1 app=$2 out=$OUT/$1
  set +e
  if [[ $how == plain ]]; then
    env -u LD_PRELOAD "${CMD[@]}" "$MODE" "$N" "$app" "${VARIANT[@]}" >"$out.stdout" 2>"$out.stderr"
  else
    # The launcher, as a user would run it. In a sanitizer build the runtime must be the first
    # object loaded: it goes in LD_PRELOAD first, and the launcher keeps it there.
    local -a rt=(env -u LD_PRELOAD)
    [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]] && rt=(env "LD_PRELOAD=$PQD_TEST_SANITIZER_RUNTIME")
    # shellcheck disable=SC2086  # MATRIX_PQD_ENV is a list of VAR=VALUE words
    "${rt[@]}" PQDEDUP_STATS=1 PQDEDUP_LOG=warn PQDEDUP_LOG_FILE="$OUT/pqdedup.log" \
      ${MATRIX_PQD_ENV:-} "$PQD_TEST_LAUNCHER" -- "${CMD[@]}" "$MODE" "$N" "$app" "${VARIANT[@]}" \
      >"$out.stdout" 2>"$out.stderr"
  fi
  RC=$?
  set -e
  echo "--- $how: $(tail -n 1 "$out.stdout")"
  sed 's/^/    stdout: /' "$out.stdout" | grep -v 'matrix-result' || true
  sed 's/^/    stderr: /' "$out.stderr" || true
  local line
  line=$(grep '^matrix-result ' "$out.stdout" | tail -n 1 || true)
  R_n=; R_ok=; R_pids=; R_backends=; R_max_conn=; R_refused_at=; R_recheck=
  local kv
  for kv in ${line#matrix-result }; do
    case ${kv%%=*} in n|ok|pids|backends|max_conn|refused_at|recheck) printf -v "R_${kv%%=*}" %s "${kv#*=}" ;; esac
  done
  REFUSAL=$(sed -n 's/^matrix-refused: //p' "$out.stdout")
}

# stat NAME: a counter of pqdedup's stats line (PQDEDUP_STATS=1, written to the log file).
stat() {
  grep -E '^pqdedup\[[0-9]+\]: stats ' "$OUT/pqdedup.log" 2>/dev/null | tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p" || true
}

# is A OP B: compares two numbers (B may be an arithmetic expression); OP is -eq, -le, -ge, -lt.
# False when either is empty (no result line).
is() { [[ -n $1 && -n $3 ]] && test "$(( $1 ))" "$2" "$(( $3 ))"; }
slots_refusal() { [[ $REFUSAL =~ "too many clients"|"remaining connection slots are reserved" ]]; }
clean_exit() { [[ $RC -eq 0 && ! -s $OUT/$1.stderr ]]; }

# check_refused: the server refused a connect before N, with its own message; everything
# connected before works.
check_refused() {
  check "$1: the server refuses connect $R_refused_at of $N (max_connections=$R_max_conn): $REFUSAL" \
    eval 'is "$R_refused_at" -ge 2 && is "$R_refused_at" -le "$R_max_conn" && slots_refusal'
  check "$1: the $R_ok connects before it answered, and again at the end" \
    eval 'is "$R_ok" -eq "$R_refused_at - 1" && is "$R_recheck" -eq "$R_ok"'
}

# ---- plain libpq: the negative control ---------------------------------------------------
APP=pqdt_mx_$$_plain
run_client plain "$APP"
check "plain: clean exit (status $RC, stderr empty)" clean_exit plain
check "plain: the result line is there" test -n "$R_n"
case $MODE:$EXPECT in
  churn:persistent)
    check "plain: $R_ok of $N cycles answered, on $R_pids backend (PHP's persistent connection)" \
      eval 'is "$R_ok" -eq "$N" && is "$R_pids" -eq 1' ;;
  churn:*)
    check "plain: $R_ok of $N cycles answered, on $R_pids distinct backends (one per connect)" \
      eval 'is "$R_ok" -eq "$N" && is "$R_pids" -eq "$N"' ;;
  leak:persistent)
    check "plain: $R_ok of $N connects answered (and $R_recheck again), all on $R_pids backend" \
      eval 'is "$R_ok" -eq "$N" && is "$R_recheck" -eq "$N" && is "$R_pids" -eq 1' ;;
  leak:*)
    check_refused plain ;;
esac
check "plain: no backend left after exit" gone "$APP"

# ---- under the pqdedup launcher -----------------------------------------------------------
APP=pqdt_mx_$$_pqd
run_client pqdedup "$APP"
sed 's/^/    pqdedup log: /' "$OUT/pqdedup.log" 2>/dev/null || true
check "pqdedup: clean exit (status $RC, stderr empty)" clean_exit pqdedup
check "pqdedup: the result line is there" test -n "$R_n"
check "pqdedup: no error logged" eval '! grep -q ": error: " "$OUT/pqdedup.log" 2>/dev/null'
reused=$(stat reused); moved=$(stat moved)
case $MODE:$EXPECT in
  churn:reused)
    check "pqdedup: $R_ok of $N cycles answered, on $R_pids distinct backends (at most 3)" \
      eval 'is "$R_ok" -eq "$N" && is "$R_pids" -le 3'
    check "pqdedup: stats say ${reused:-?} connects reused a kept connection (at least $((N - 3)))" \
      eval 'is "$reused" -ge "$N - 3"' ;;
  churn:persistent)
    check "pqdedup: $R_ok of $N cycles answered, on $R_pids backend" \
      eval 'is "$R_ok" -eq "$N" && is "$R_pids" -eq 1' ;;
  churn:passthrough)
    check "pqdedup: $R_ok of $N cycles answered, on $R_pids distinct backends, as plain libpq" \
      eval 'is "$R_ok" -eq "$N" && is "$R_pids" -eq "$N"'
    check "pqdedup: nothing reused or moved (stats: reused=${reused:-none} moved=${moved:-none})" \
      eval '[[ ${reused:-0} -eq 0 && ${moved:-0} -eq 0 ]]' ;;
  leak:contained)
    check "pqdedup: all $N connects answered ($R_ok), refused at ${R_refused_at:-?} (0: never)" \
      eval 'is "$R_ok" -eq "$N" && is "$R_refused_at" -eq 0'
    check "pqdedup: every leaked handle answered again at the end ($R_recheck)" \
      eval 'is "$R_recheck" -eq "$N"'
    check "pqdedup: $R_pids distinct backends, $R_backends open at the end, max_connections=$R_max_conn" \
      eval 'is "$R_pids" -le "$R_max_conn" && is "$R_backends" -le "$R_max_conn" && is "$R_pids" -lt "$N"'
    check "pqdedup: stats say ${moved:-?} server connections moved from idle connections (at least $((N - R_pids)))" \
      eval 'is "$moved" -ge "$N - $R_pids"' ;;
  leak:passthrough)
    check_refused pqdedup
    check "pqdedup: nothing moved (stats: moved=${moved:-none})" eval '[[ ${moved:-0} -eq 0 ]]' ;;
  leak:persistent)
    check "pqdedup: $R_ok of $N connects answered (and $R_recheck again), all on $R_pids backend" \
      eval 'is "$R_ok" -eq "$N" && is "$R_recheck" -eq "$N" && is "$R_pids" -eq 1' ;;
  *) usage ;;
esac
check "pqdedup: no backend left after exit (kept connections closed at exit)" gone "$APP"

echo "$NAME: $((checks - failures)) passed, $failures failed"
[[ $checks -gt 0 && $failures -eq 0 ]]

#!/usr/bin/env bash
# tests/loaders/clients.sh CLIENT: a client LD_PRELOAD alone cannot reach churns connections, plain, under the launcher and with --no-audit.
#
# CLIENT: php-connect, php-async, php-pconnect, php-pdo (PHP CLI's pgsql and pdo_pgsql, loaded
# with RTLD_DEEPBIND), psycopg3-sync, psycopg3-asyncio (psycopg 3's pure-Python
# implementation: libpq through ctypes' dlopen + dlsym). Each run does PQD_LOADERS_CYCLES
# (default 200) connect/SELECT pg_backend_pid()/close cycles and must exit 0, print a pid per
# cycle, write nothing on stderr but pqdedup's stats line, and leave no backend behind:
#   plain libpq:          one backend per cycle (pconnect: PHP's own persistent link, one);
#   under the launcher:   at most 2 backends, and pqdedup saw every connect (stats);
#   launcher --no-audit:  works as plain libpq: one backend per cycle, nothing reused.
# Debian packages: php-cli php-pgsql python3-psycopg.
. "$(dirname "$0")/lib.sh"
CLIENT=${1:?usage: clients.sh CLIENT}
N=${PQD_LOADERS_CYCLES:-200}
HERE=$(cd "$(dirname "$0")" && pwd)

case $CLIENT in
  php-*)
    [[ -z $RT ]] || skip "sanitizer runtimes abort every dlopen with RTLD_DEEPBIND, which PHP uses for its extensions (github.com/google/sanitizers issue 611)"
    modules=$(php -m 2>/dev/null)
    grep -qx pgsql <<<"$modules" && grep -qx pdo_pgsql <<<"$modules" \
      || { echo "$SCRIPT: php with pgsql and pdo_pgsql is missing (install php-cli php-pgsql)" >&2; exit 1; }
    CMD=(php "$HERE/php_client.php" "${CLIENT#php-}" "$N") ;;
  psycopg3-*)
    export PSYCOPG_IMPL=python
    "$PYTHON" -c 'import psycopg' 2>/dev/null \
      || { echo "$SCRIPT: $PYTHON has no psycopg (install python3-psycopg)" >&2; exit 1; }
    CMD=("$PYTHON" "$HERE/psycopg3_client.py" "${CLIENT#psycopg3-}" "$N") ;;
  *) echo "usage: clients.sh php-connect|php-async|php-pconnect|php-pdo|psycopg3-sync|psycopg3-asyncio" >&2; exit 2 ;;
esac
# PHP's persistent link is one backend for the whole run, with or without pqdedup.
per_run=$N
[[ $CLIENT == php-pconnect ]] && per_run=1

# run LABEL [LAUNCHER ARGS...]: runs the client (plain when no launcher args); checks the
# common expectations; leaves the distinct backend count in $distinct, stats in $T/err.
run() {
  local label=$1; shift
  local app="pqdt_loaders_${CLIENT//-/_}_${label}_$$"
  if [[ $# -gt 0 ]]; then
    "$L" "$@" -- "${CMD[@]}" "$app" >"$T/out" 2>"$T/err"
  else
    "${CMD[@]}" "$app" >"$T/out" 2>"$T/err"
  fi
  local rc=$?
  check "$label: exits 0 (rc $rc)" test "$rc" -eq 0
  check "$label: answered all $N cycles" test "$(grep -c '^[0-9][0-9]*$' "$T/out")" -eq "$N" -a "$(tail -n 1 "$T/out")" = done
  check "$label: nothing on stderr but pqdedup's stats line: $(grep -v '^pqdedup\[[0-9]*\]: stats ' "$T/err")" \
    test "$(grep -vc '^pqdedup\[[0-9]*\]: stats ' "$T/err")" -eq 0
  check "$label: no backend left behind after exit" wait_backends "$app" 0
  distinct=$(grep '^[0-9][0-9]*$' "$T/out" | sort -u | wc -l)
  echo "$SCRIPT: $label: $N cycles on $distinct backends; $(grep -h 'stats' "$T/err")"
}

run plain
check "plain: $distinct backends, one per connect ($per_run)" test "$distinct" -eq "$per_run"

run launcher --stats
check "launcher: at most 2 backends ($distinct)" test "$distinct" -ge 1 -a "$distinct" -le 2
if [[ $CLIENT == php-pconnect ]]; then
  # One persistent connect, finished at PHP's shutdown: both reached pqdedup.
  check "launcher: pqdedup saw the connect (connects=$(stats_field "$T/err" connects))" test "$(stats_field "$T/err" connects)" -eq 1
  check "launcher: and the finish at shutdown (resets=$(stats_field "$T/err" resets))" test "$(stats_field "$T/err" resets)" -eq 1
else
  check "launcher: pqdedup saw every connect (connects=$(stats_field "$T/err" connects))" test "$(stats_field "$T/err" connects)" -eq "$N"
  check "launcher: and reused ($(stats_field "$T/err" reused))" test "$(stats_field "$T/err" reused)" -ge $((N - 2))
fi

if [[ -n $RT ]]; then
  echo "$SCRIPT: the --no-audit run is left out in sanitizer builds (a hang at exit, see lib.sh)"
  finish
fi
run no-audit --no-audit --stats
check "--no-audit: one backend per connect, as plain libpq ($distinct)" test "$distinct" -eq "$per_run"
# (No stats line at all when the client never reached a wrapper: psycopg 3 without the auditor.)
reused=$(stats_field "$T/err" reused) shared=$(stats_field "$T/err" shared)
check "--no-audit: nothing reused or shared" test "${reused:-0}" -eq 0 -a "${shared:-0}" -eq 0

finish

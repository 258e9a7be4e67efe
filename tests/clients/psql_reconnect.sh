#!/usr/bin/env bash
# tests/clients/psql_reconnect.sh: psql running a script with 20 `\c` to the same database, plain and under pqdedup.
#
# The script changes search_path, prints its backend pid and the search_path it sees, then
# reconnects with `\c` (same parameters), 20 times. Plain libpq: 21 distinct backends (so `\c`
# really reconnects each time). Under pqdedup: every step works (ON_ERROR_STOP), the 21
# sessions are served by at most 4 backends, and every new session starts with the default
# search_path: the SET of the previous holder did not survive. Why 4: psql's `\c` opens the
# new connection before finishing the old one (2); pqdedup may open another while a kept
# connection's reset does not answer in time (3); and psql's `\c` reconnects with the parameters
# PQconninfo() reports for the old connection, where libpq has filled in passfile, so the
# very first connection has another key and is not reused (4).
. "$(dirname "$0")/lib.sh"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-psql.XXXXXX")
trap 'rm -rf -- "$OUT"' EXIT
SQL=$OUT/reconnect.sql
{
  for i in $(seq 0 20); do
    [[ $i -gt 0 ]] && echo '\c'
    echo "SELECT 'path:' || current_setting('search_path');"
    echo "SET search_path = pqdt_nowhere_$i;"
    echo "SELECT 'pid:' || pg_backend_pid();"
  done
} >"$SQL"

# run MODE APP: runs the script under MODE (plain|under_pqdedup) into $OUT/APP.out.
run() {
  local mode=$1 app=$2 rc
  set +e
  "$mode" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -f "$SQL" \
    "dbname=postgres application_name=$app" >"$OUT/$app.out" 2>&1
  rc=$?
  set -e
  check "$mode psql: the script with 20 \\c ran (exit $rc)" test "$rc" -eq 0 || cat "$OUT/$app.out"
}
pids() { grep -c '^pid:' "$1"; }
distinct_pids() { grep '^pid:' "$1" | sort -u | wc -l; }
default_paths() { grep -c '^path:"\$user", public$' "$1"; }

APP=pqdt_psql_plain_$$
run plain "$APP"
n=$(distinct_pids "$OUT/$APP.out")
check "plain: 21 distinct backends for 21 connections ($n)" test "$n" -eq 21

APP=pqdt_psql_pqd_$$
run under_pqdedup "$APP"
n=$(pids "$OUT/$APP.out")
d=$(distinct_pids "$OUT/$APP.out")
p=$(default_paths "$OUT/$APP.out")
echo "$SCRIPT: under pqdedup: $n sessions, $d distinct backends, $p started with the default search_path"
check "under pqdedup: all 21 connections answered ($n)" test "$n" -eq 21
check "under pqdedup: at most 4 distinct backends ($d)" test "$d" -ge 1 -a "$d" -le 4
check "under pqdedup: every session started with the default search_path ($p of 21)" test "$p" -eq 21
finish

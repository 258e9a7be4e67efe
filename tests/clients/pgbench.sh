#!/usr/bin/env bash
# tests/clients/pgbench.sh [-M MODE]: pgbench -C (a new connection per transaction) under pqdedup: no failed transaction, a handful of server sessions.
#
# Needs the harness's env.sh (PGHOST...) and the variables pqdedup_add_test sets. Creates its
# own database (dropped at the end), initializes it with pgbench -i, then:
#   1. plain pgbench -C -T 1: the server counts one session per transaction (this proves the
#      session counter below sees what it should);
#   2. pgbench -C -n -S -T 3 -c 4 -j 2 [-M MODE] under pqdedup: exit 0, no failed or aborted
#      client, and both the server (pg_stat_database.sessions) and pqdedup's stats line say
#      at most 8 server sessions served all transactions.
# With -M prepared, pgbench PREPAREs again after every reconnect: that only works if the
# reset at finish (DISCARD ALL) deallocated the statements of the previous holder.
. "$(dirname "$0")/lib.sh"

MODE_ARGS=()
if [[ ${1:-} == -M && -n ${2:-} ]]; then MODE_ARGS=(-M "$2"); fi
MAX_SESSIONS=8
DB=pqdt_pgbench_$$
OUT=$(mktemp -d "${TMPDIR:-/tmp}/pqdt-pgbench.XXXXXX")
cleanup() {
  obs "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf -- "$OUT"
}
trap cleanup EXIT

obs "CREATE DATABASE $DB" >/dev/null
plain "$PGBIN/pgbench" -i -q -s 1 "$DB" >"$OUT/init.log" 2>&1 || { cat "$OUT/init.log"; exit 1; }

# sessions: sessions the server has counted for $DB (pg_stat_database.sessions; a backend
# reports its session when it exits, so read it after the client and its backends are gone).
sessions() {
  obs "SELECT sessions FROM pg_stat_database WHERE datname = '$DB'"
}
# settle APP: waits until no backend of APP remains, so every session has been counted.
settle() {
  wait_backends "$1" 0 || echo "$SCRIPT: backends of $1 still open after 10 s" >&2
  sleep 0.2
}

# processed LOG: pgbench's "number of transactions actually processed".
processed() {
  sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1"
}
# failed_ok LOG: pgbench reported no error (e.g. "prepared statement already exists", which
# it reports and goes on), no failed transaction and no aborted client.
failed_ok() {
  ! grep -qiE 'error|aborted|^number of failed transactions: [1-9]' "$1"
}

# 1. Plain: one session per transaction.
APP=pqdt_pgbench_plain_$$
before=$(sessions)
set +e
PGAPPNAME=$APP plain "$PGBIN/pgbench" -C -n -S -T 1 -c 4 -j 2 "${MODE_ARGS[@]}" "$DB" >"$OUT/plain.log" 2>&1
rc=$?
set -e
settle "$APP"
plain_sessions=$(( $(sessions) - before ))
plain_tx=$(processed "$OUT/plain.log")
echo "$SCRIPT: plain pgbench -C: exit $rc, ${plain_tx:-?} transactions, $plain_sessions sessions"
check "plain pgbench -C ran (exit $rc)" test "$rc" -eq 0
check "plain pgbench -C opened a session per transaction ($plain_sessions sessions for ${plain_tx:-?} transactions)" \
  test "$plain_sessions" -ge "${plain_tx:-1}"

# 2. Under pqdedup.
APP=pqdt_pgbench_pqd_$$
before=$(sessions)
set +e
PGAPPNAME=$APP PQDEDUP_STATS=1 under_pqdedup "$PGBIN/pgbench" -C -n -S -T 3 -c 4 -j 2 "${MODE_ARGS[@]}" "$DB" \
  >"$OUT/pqd.log" 2>&1
rc=$?
set -e
settle "$APP"
pqd_sessions=$(( $(sessions) - before ))
pqd_tx=$(processed "$OUT/pqd.log")
opened=$(stats_field "$OUT/pqd.log" opened)
reused=$(stats_field "$OUT/pqd.log" reused)
echo "$SCRIPT: pgbench -C ${MODE_ARGS[*]} under pqdedup: exit $rc, ${pqd_tx:-?} transactions," \
     "$pqd_sessions sessions, stats opened=${opened:-?} reused=${reused:-?}"
if ! check "pgbench -C ${MODE_ARGS[*]} under pqdedup exits 0 (exit $rc)" test "$rc" -eq 0 ||
   ! check "no error, no failed transaction, no aborted client" failed_ok "$OUT/pqd.log"; then
  head -n 40 "$OUT/pqd.log"
fi
check "transactions were processed (${pqd_tx:-none})" test "${pqd_tx:-0}" -gt "$MAX_SESSIONS"
check "the server counted at most $MAX_SESSIONS sessions ($pqd_sessions)" \
  test "$pqd_sessions" -ge 1 -a "$pqd_sessions" -le "$MAX_SESSIONS"
check "pqdedup's stats line: opened ${opened:-?} <= $MAX_SESSIONS" \
  test -n "$opened" -a "${opened:-99}" -ge 1 -a "${opened:-99}" -le "$MAX_SESSIONS"
check "pqdedup's stats line: most connects were reused (reused=${reused:-?})" \
  test "${reused:-0}" -ge "$(( ${pqd_tx:-0} - MAX_SESSIONS ))"
finish

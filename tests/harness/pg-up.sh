#!/usr/bin/env bash
# pg-up.sh DIR: start a throwaway PostgreSQL 15 in DIR for the pqdedup tests and write DIR/env.sh.
#
# Layout: DIR/data (cluster, with a self-signed SSL cert), DIR/sock (unix socket),
# DIR/log/postgresql.log (server log), DIR/env.sh (exports for the tests), DIR/.pqd-harness
# (marker that lets pg-down.sh remove DIR). As root, the server runs as the `postgres` OS user
# (initdb refuses root); otherwise it runs as the caller. Exits non-zero, with the log's tail,
# if the server does not come up or does not answer over the socket, TCP and SSL.
set -euo pipefail

die() { echo "pg-up: ERROR: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 DIR"
DIR=$1
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
[[ -z "$(ls -A "$DIR")" ]] || die "$DIR is not empty"

PGBIN=${PQD_TEST_PGBIN:-/usr/lib/postgresql/15/bin}
for tool in initdb pg_ctl psql pg_isready; do
  [[ -x "$PGBIN/$tool" ]] || die "$PGBIN/$tool not found (install postgresql-15)"
done
command -v openssl >/dev/null || die "openssl not found (install openssl)"

# Who runs the server, and how to run a command as that user.
if [[ $(id -u) -eq 0 ]]; then
  OSUSER=postgres
  id "$OSUSER" >/dev/null 2>&1 || die "OS user '$OSUSER' missing (install the postgresql package)"
  as_server() { (cd "$DIR" && runuser -u "$OSUSER" -- "$@"); }
else
  OSUSER=$(id -un)
  as_server() { (cd "$DIR" && "$@"); }
fi

DATA=$DIR/data
SOCK=$DIR/sock
# A unix socket path holds at most 107 bytes: "$SOCK/.s.PGSQL.NNNNN" must fit.
(( ${#SOCK} + 17 <= 107 )) || die "$DIR is too long a path for a unix socket; use a shorter one"
if [[ $(id -u) -eq 0 ]] && ! runuser -u "$OSUSER" -- test -x "$(dirname "$DIR")"; then
  die "user $OSUSER cannot reach $(dirname "$DIR"); use a DIR under /tmp"
fi
LOGDIR=$DIR/log
LOG=$LOGDIR/postgresql.log
touch "$DIR/.pqd-harness"
mkdir -p "$SOCK" "$LOGDIR"
if [[ $(id -u) -eq 0 ]]; then
  chown -R "$OSUSER:" "$DIR"
fi
chmod 0700 "$DIR"

echo "pg-up: initdb in $DATA (as $OSUSER)"
if ! as_server "$PGBIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$LOGDIR/initdb.log" 2>&1; then
  cat "$LOGDIR/initdb.log" >&2
  die "initdb failed"
fi

# Self-signed server certificate, so tests can use sslmode=require over TCP.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
  -keyout "$DATA/server.key" -out "$DATA/server.crt" >"$LOGDIR/openssl.log" 2>&1 \
  || { cat "$LOGDIR/openssl.log" >&2; die "openssl could not make a certificate"; }
chmod 0600 "$DATA/server.key"
if [[ $(id -u) -eq 0 ]]; then
  chown "$OSUSER:" "$DATA/server.key" "$DATA/server.crt"
fi

cat >"$DATA/pg_hba.conf" <<'HBA'
# pqdedup test cluster (written by tests/harness/pg-up.sh)
local all postgres                trust
local all all                     scram-sha-256
host  all postgres  127.0.0.1/32  trust
host  all all       127.0.0.1/32  scram-sha-256
HBA

# Is TCP port $1 on 127.0.0.1 free? (Something answering means it is taken.)
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Try ports from 54320 up; a port taken between the check and the bind is retried.
PORT=
for candidate in $(seq "${PQD_TEST_PORT_BASE:-54320}" "$(( ${PQD_TEST_PORT_BASE:-54320} + 79 ))"); do
  port_free "$candidate" || continue
  [[ -e "$SOCK/.s.PGSQL.$candidate" ]] && continue
  cat >"$DATA/postgresql.auto.conf" <<CONF
# pqdedup test cluster (written by tests/harness/pg-up.sh)
port = $candidate
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 40
superuser_reserved_connections = 3
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
# The longest allowed: a login's SCRAM with a huge password (test_hostile.c) under valgrind on a
# loaded machine can take longer than the default minute, and the server must answer it, not
# close the connection on a timer the test does not mean to race.
authentication_timeout = '10min'
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d/%a '
CONF
  echo "pg-up: starting on port $candidate"
  if [[ -f "$LOG" ]]; then : >"$LOG"; fi   # only this attempt's messages (keeps the owner)
  if as_server "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >>"$LOGDIR/pg_ctl.log" 2>&1; then
    PORT=$candidate
    break
  fi
  if grep -q 'could not bind\|could not create lock file\|Address already in use' "$LOG" 2>/dev/null; then
    echo "pg-up: port $candidate taken, trying the next one"
    as_server "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    continue
  fi
  tail -n 40 "$LOG" >&2 || true
  cat "$LOGDIR/pg_ctl.log" >&2 || true
  as_server "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
  die "the server did not start"
done
[[ -n $PORT ]] || die "no free TCP port in ${PQD_TEST_PORT_BASE:-54320}+80"

# From here on, a failure stops the server we started.
fail_stop() {
  tail -n 40 "$LOG" >&2 || true
  as_server "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
  die "$*"
}

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" >"$LOGDIR/setup.log" 2>&1 <<'SQL' || { cat "$LOGDIR/setup.log" >&2; fail_stop "role/database setup failed"; }
CREATE ROLE pqd_alice LOGIN PASSWORD 'alice_pw';
CREATE ROLE pqd_bob LOGIN PASSWORD 'bob_pw';
CREATE DATABASE pqd_other OWNER postgres;
GRANT CONNECT ON DATABASE pqd_other TO pqd_alice, pqd_bob;
GRANT CONNECT, CREATE, TEMP ON DATABASE postgres TO pqd_alice, pqd_bob;
GRANT USAGE, CREATE ON SCHEMA public TO pqd_alice, pqd_bob;
SQL

# Prove each way in that tests will use: socket as postgres, TCP with a password, SSL.
[[ $("${PSQL[@]}" -tAc 'SELECT 1') == 1 ]] || fail_stop "no answer over the unix socket"
[[ $(PGPASSWORD=alice_pw "$PGBIN/psql" -X -tA -h 127.0.0.1 -p "$PORT" -U pqd_alice -d pqd_other \
      -c 'SELECT current_user') == pqd_alice ]] || fail_stop "no password login over TCP"
[[ $(PGSSLMODE=require "$PGBIN/psql" -X -tA -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
      -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()') == t ]] || fail_stop "no SSL over TCP"

cat >"$DIR/env.sh" <<ENV
# Written by tests/harness/pg-up.sh: source this to talk to the pqdedup test server.
export PGHOST='$SOCK'
export PGPORT='$PORT'
export PGUSER='postgres'
export PGDATABASE='postgres'
export PQD_TEST_DIR='$DIR'
export PQD_TEST_PGDATA='$DATA'
export PQD_TEST_PGLOG='$LOG'
export PQD_TEST_TCP_HOST='127.0.0.1'
export PQD_TEST_PGCTL='$PGBIN/pg_ctl'
export PQD_TEST_PGUSER_OS='$OSUSER'
ENV
chmod 0644 "$DIR/env.sh"
echo "pg-up: server is up; environment in $DIR/env.sh:"
cat "$DIR/env.sh"

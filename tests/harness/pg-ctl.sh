#!/usr/bin/env bash
# pg-ctl.sh ARGS...: run pg_ctl -D $PQD_TEST_PGDATA ARGS as the OS user that owns the test server.
#
# Needs the variables from pg-up.sh's env.sh. `start` and `restart` get `-l $PQD_TEST_PGLOG`
# (unless -l is given) so the server never inherits the caller's stdout: a server holding a
# test's output pipe open would make ctest wait for it forever. Exit status is pg_ctl's.
set -euo pipefail

: "${PQD_TEST_PGDATA:?source the env.sh written by tests/harness/pg-up.sh}"
PGCTL=${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}
OSUSER=${PQD_TEST_PGUSER_OS:-$(id -un)}

args=("$@")
want_log=0
for a in "$@"; do
  case $a in
    start|restart) want_log=1 ;;
    -l|--log=*) want_log=0; break ;;
  esac
done
if [[ $want_log -eq 1 && -n ${PQD_TEST_PGLOG:-} ]]; then
  args=(-l "$PQD_TEST_PGLOG" "${args[@]}")
fi

cd "$(dirname "$PQD_TEST_PGDATA")"
if [[ $(id -u) -eq 0 && $OSUSER != root ]]; then
  exec runuser -u "$OSUSER" -- "$PGCTL" -D "$PQD_TEST_PGDATA" "${args[@]}" </dev/null
else
  exec "$PGCTL" -D "$PQD_TEST_PGDATA" "${args[@]}" </dev/null
fi

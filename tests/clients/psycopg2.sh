#!/usr/bin/env bash
# tests/clients/psycopg2.sh leak|churn: Debian's python3 + psycopg2 leaking or churning connections, plain and under pqdedup.
#
# leak:  150 connects never closed (kept referenced). Plain libpq: refused by the server past
#        max_connections ("too many clients"), the negative control. Under pqdedup with default
#        settings: all 150 work, every handle answers, at most max_connections backends.
#        Saturates the server: register SERIAL.
# churn: 500 connect/query/close cycles under pqdedup use at most 2 backends.
. "$(dirname "$0")/lib.sh"

CLIENT=$(dirname "$0")/psycopg2_client.py
"$PYTHON" -c 'import psycopg2' || { echo "$SCRIPT: $PYTHON has no psycopg2 (install python3-psycopg2)" >&2; exit 1; }

case ${1:-} in
  leak)
    APP=pqdt_psy_leak_plain_$$
    set +e
    plain "$PYTHON" "$CLIENT" leak 150 "$APP" --expect-refusal
    rc=$?
    set -e
    check "plain libpq: the leaking script is refused past max_connections (exit $rc)" test "$rc" -eq 0
    # Its backends exit with it; wait, or the next run would find no free slot at all.
    check "plain run's backends are gone" wait_backends "$APP" 0
    check "plain run's observer backend is gone" wait_backends "${APP}_obs" 0

    APP=pqdt_psy_leak_pqd_$$
    set +e
    under_pqdedup "$PYTHON" "$CLIENT" leak 150 "$APP"
    rc=$?
    set -e
    check "under pqdedup: 150 leaked connections work with bounded backends (exit $rc)" test "$rc" -eq 0
    check "under pqdedup: the backends are closed when the script exits" wait_backends "$APP" 0
    ;;
  churn)
    APP=pqdt_psy_churn_$$
    set +e
    under_pqdedup "$PYTHON" "$CLIENT" churn 500 "$APP" 2
    rc=$?
    set -e
    check "under pqdedup: 500 connect/query/close cycles on at most 2 backends (exit $rc)" test "$rc" -eq 0
    ;;
  *)
    echo "usage: $0 leak|churn" >&2
    exit 2
    ;;
esac
finish

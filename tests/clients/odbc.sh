#!/usr/bin/env bash
# tests/clients/odbc.sh: psqlODBC (through unixODBC and pyodbc on Debian's python3) leaking connections, plain and under pqdedup.
#
# The driver sets DateStyle and extra_float_digits with SET at every connect, which pqdedup
# carries with the handle instead of pinning it (README, "A plain SET goes with the handle").
# A role with CONNECTION LIMIT 4: plain libpq is refused at the 5th connect (the negative
# control); under pqdedup 30 leaked connections all work, each keeps the driver's settings,
# every row is committed once (the server holds the role to 4 backends throughout).
. "$(dirname "$0")/lib.sh"

CLIENT=$(dirname "$0")/odbc_client.py
"$PYTHON" -c 'import pyodbc' || { echo "$SCRIPT: $PYTHON has no pyodbc (install python3-pyodbc)" >&2; exit 1; }
# The driver by its path: whether odbcinst.ini names it depends on how the package was set up.
ODBC_DRIVER=$(dpkg -L odbc-postgresql 2>/dev/null | grep '/psqlodbcw\.so$' | head -n 1) || true
[[ -n $ODBC_DRIVER && -f $ODBC_DRIVER ]] ||
  { echo "$SCRIPT: no psqlODBC driver (install odbc-postgresql)" >&2; exit 1; }
export ODBC_DRIVER

ROLE=pqdt_odbc_$$
obs "CREATE ROLE $ROLE LOGIN PASSWORD 'odbc_pw' CONNECTION LIMIT 4"
obs "CREATE TABLE IF NOT EXISTS pqdt_odbc_rows (n int)"
obs "GRANT INSERT ON pqdt_odbc_rows TO $ROLE"
trap 'obs "DROP TABLE IF EXISTS pqdt_odbc_rows; DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true' EXIT

set +e
plain "$PYTHON" "$CLIENT" leak 30 "$ROLE" odbc_pw --expect-refusal
rc=$?
set -e
check "plain libpq: the leaking program is refused at the role's limit (exit $rc)" test "$rc" -eq 0
obs "TRUNCATE pqdt_odbc_rows"

# backends_of ROLE: the role's backends now.
backends_of() { obs "SELECT count(*) FROM pg_stat_activity WHERE usename = '$1'"; }
set +e
under_pqdedup "$PYTHON" "$CLIENT" leak 30 "$ROLE" odbc_pw
rc=$?
set -e
check "under pqdedup: 30 leaked ODBC connections work with the driver's settings (exit $rc)" test "$rc" -eq 0
check "under pqdedup: every row committed once" test "$(obs "SELECT count(DISTINCT n) || '/' || count(*) FROM pqdt_odbc_rows")" = 30/30
check "under pqdedup: the role's backends are gone after the program exits" test "$(backends_of "$ROLE")" -eq 0
finish

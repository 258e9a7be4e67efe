"""tests/clients/odbc_client.py: a pyodbc program (psqlODBC through unixODBC) that leaks connections; run by odbc.sh plain or under pqdedup.

Usage: ODBC_DRIVER=/path/to/psqlodbcw.so odbc_client.py leak N ROLE PASSWORD [--expect-refusal]
N times connect as ROLE (autocommit), read the backend, DateStyle and extra_float_digits, insert
one row into pqdt_odbc_rows, and keep the connection (never closed). psqlODBC sends
"SET DateStyle = 'ISO';SET extra_float_digits = 2;show transaction_isolation" at every connect.
Then every connection must still answer with the driver's settings (extra_float_digits 2, ISO
dates). With --expect-refusal (the plain run) a connect must instead fail with the role's
connection limit before N.
Prints one line per failed check and exits 1 if any failed.
"""
import os
import sys

import pyodbc

failures = 0


def check(ok, what):
    global failures
    if ok:
        print("odbc_client: ok: " + what)
    else:
        failures += 1
        print("odbc_client: FAIL: " + what, file=sys.stderr)
    return ok


def leak(n, role, password, expect_refusal):
    dsn = ("DRIVER={%s};SERVER=%s;PORT=%s;DATABASE=postgres;UID=%s;PWD=%s"
           % (os.environ["ODBC_DRIVER"], os.environ["PGHOST"], os.environ["PGPORT"], role, password))
    kept = []
    for i in range(n):
        try:
            c = pyodbc.connect(dsn, autocommit=True)
        except pyodbc.Error as e:
            if expect_refusal:
                check("too many connections" in str(e),
                      "plain libpq: connect %d refused by the role's limit: %s" % (i + 1, e))
                return
            check(False, "connect %d of %d failed: %s" % (i + 1, n, e))
            return
        cur = c.cursor()
        cur.execute("SELECT current_setting('DateStyle'), current_setting('extra_float_digits')")
        row = tuple(cur.fetchone())
        if not check(row == ("ISO, MDY", "2"), "connect %d: the driver's settings: %s" % (i + 1, row)):
            return
        cur.execute("INSERT INTO pqdt_odbc_rows VALUES (?)", i)
        kept.append(c)
    if expect_refusal:
        check(False, "plain libpq: all %d connects succeeded, expected the role's limit" % n)
        return
    check(len(kept) == n, "%d of %d connects worked" % (len(kept), n))
    bad = 0
    for i, c in enumerate(kept):
        row = c.cursor().execute("SELECT current_setting('DateStyle'), current_setting('extra_float_digits'), "
                                 "CAST(DATE '2026-12-04' AS text)").fetchone()
        bad += tuple(row) != ("ISO, MDY", "2", "2026-12-04")
    check(bad == 0, "every leaked connection still has the driver's settings (%d without)" % bad)


def main():
    if len(sys.argv) < 5 or sys.argv[1] != "leak":
        print(__doc__, file=sys.stderr)
        return 2
    leak(int(sys.argv[2]), sys.argv[3], sys.argv[4], "--expect-refusal" in sys.argv[5:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""tests/clients/psycopg2_client.py: a psycopg2 program that leaks connections, or churns them; run by psycopg2.sh plain or under pqdedup.

Usage: psycopg2_client.py leak N APP [--expect-refusal]
       psycopg2_client.py churn N APP MAX_BACKENDS
leak:  N times connect (application_name=APP), SELECT 1, commit, and keep the connection in a
       list (never closed, never garbage-collected). Then every handle must still answer, and
       at most max_connections backends of APP exist. With --expect-refusal (the plain run)
       the connects must instead fail with the server's "too many clients" before N.
churn: N times connect, SELECT pg_backend_pid(), close: at most MAX_BACKENDS distinct backends.
Prints one line per failed check and exits 1 if any failed.
"""
import sys

import psycopg2

failures = 0


def check(ok, what):
    global failures
    if ok:
        print("psycopg2_client: ok: " + what)
    else:
        failures += 1
        print("psycopg2_client: FAIL: " + what, file=sys.stderr)
    return ok


def observer(app):
    # A connection with another application_name (another key, APP_obs): it also goes through
    # pqdedup, but never shares with APP's connections. Opened first, so it has a slot.
    obs = psycopg2.connect("application_name=" + app + "_obs")
    obs.autocommit = True
    return obs


def one_value(conn, sql, args=None):
    cur = conn.cursor()
    cur.execute(sql, args)
    row = cur.fetchone()
    cur.close()
    return row[0]


def leak(n, app, expect_refusal):
    obs = observer(app)
    max_conn = int(one_value(obs, "SHOW max_connections"))
    dsn = "application_name=" + app
    kept = []
    for i in range(n):
        try:
            c = psycopg2.connect(dsn)
        except psycopg2.OperationalError as e:
            msg = str(e).strip()
            if expect_refusal:
                check("too many clients" in msg or "remaining connection slots" in msg,
                      "plain libpq: connect %d refused by the server: %s" % (i + 1, msg))
                return
            check(False, "connect %d of %d failed: %s" % (i + 1, n, msg))
            return
        cur = c.cursor()
        cur.execute("SELECT 1")
        if not check(cur.fetchone()[0] == 1, "connect %d: SELECT 1" % (i + 1)) and failures > 5:
            return
        c.commit()  # leaves the session idle: not inside a transaction
        kept.append((c, cur))
    if expect_refusal:
        check(False, "plain libpq: all %d connects succeeded, expected a refusal past "
                     "max_connections=%d" % (n, max_conn))
        return
    backends = int(one_value(obs, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             (app,)))
    print("psycopg2_client: %d connections held, %d backends, max_connections=%d"
          % (len(kept), backends, max_conn))
    check(len(kept) == n, "%d of %d connects worked" % (len(kept), n))
    check(1 <= backends <= max_conn, "%d backends for %d leaked connections, at most "
          "max_connections=%d" % (backends, n, max_conn))
    bad = 0
    for i, (c, cur) in enumerate(kept):
        try:
            cur.execute("SELECT %s::int", (i,))
            if cur.fetchone()[0] != i:
                bad += 1
            c.commit()
        except psycopg2.Error as e:
            bad += 1
            print("psycopg2_client: handle %d: %s" % (i, e), file=sys.stderr)
    check(bad == 0, "every leaked handle still answers its own query (%d did not)" % bad)


def churn(n, app, max_backends):
    dsn = "application_name=" + app
    pids = set()
    ok = 0
    for i in range(n):
        c = psycopg2.connect(dsn)
        pids.add(one_value(c, "SELECT pg_backend_pid()"))
        c.commit()
        c.close()
        ok += 1
    print("psycopg2_client: %d connect/query/close cycles, %d distinct backends" % (ok, len(pids)))
    check(ok == n, "%d of %d cycles worked" % (ok, n))
    check(1 <= len(pids) <= max_backends, "%d distinct backends served %d cycles, expected at "
          "most %d" % (len(pids), n, max_backends))


def main():
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "leak":
        leak(int(args[1]), args[2], "--expect-refusal" in args[3:])
    elif len(args) == 4 and args[0] == "churn":
        churn(int(args[1]), args[2], int(args[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print("psycopg2_client: %s" % ("all checks passed" if failures == 0 else "%d failed" % failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

"""tests/async_clients/sessions.py: an asyncio app holding 20 psycopg 3 AsyncConnections runs transactions on all of them at once (asyncio.gather): they must be 20 independent sessions.

Usage: PSYCOPG_IMPL=python sessions.py CONNECTIONS TABLE APP
TABLE (k int, backend int) exists and is empty. The connections (application_name=APP,
autocommit; BEGIN, COMMIT and ROLLBACK are sent as statements) are opened one after another
and left idle; then, each step on all of them at once:
  1. BEGIN; INSERT its own row (k, pg_backend_pid()); it sees exactly its own row (the others'
     are uncommitted) and its transaction status is "in transaction";
  2. once all are inside their transactions: it still sees only its own row, on the same
     backend;
  3. even k commit, odd k roll back;
  4. each sees exactly the committed rows: the even k's, each with the backend that wrote it.
The backends of the 20 open transactions must be 20 distinct ones. Prints one line per
failed check on stderr and "async-result ok=K distinct_backends=B committed=LIST"; exits 1 if
any check failed.
"""
import asyncio
import sys

import psycopg
from psycopg.pq import TransactionStatus

failures = []


def expect(ok, what):
    if not ok:
        failures.append(what)
        print("sessions.py: FAIL: " + what, file=sys.stderr)


async def rows(conn, table):
    cur = await conn.execute("SELECT k, backend FROM %s ORDER BY k" % table)
    return await cur.fetchall()


async def begin_and_insert(conn, k, table, pids):
    await conn.execute("BEGIN")
    cur = await conn.execute("INSERT INTO %s VALUES (%d, pg_backend_pid()) RETURNING backend"
                             % (table, k))
    pids[k] = (await cur.fetchone())[0]
    seen = await rows(conn, table)
    expect(seen == [(k, pids[k])], "connection %d: inside its transaction it sees %r, expected "
           "only its own row" % (k, seen))
    expect(conn.info.transaction_status == TransactionStatus.INTRANS,
           "connection %d: transaction status %r after BEGIN" % (k, conn.info.transaction_status))


async def recheck(conn, k, table, pids):
    cur = await conn.execute("SELECT pg_backend_pid()")
    pid = (await cur.fetchone())[0]
    expect(pid == pids[k], "connection %d: backend %d inside its transaction, then %d" % (k, pids[k], pid))
    seen = await rows(conn, table)
    expect(seen == [(k, pids[k])], "connection %d: with all the transactions open it sees %r, "
           "expected only its own row" % (k, seen))


async def main(n, table, app):
    n = int(n)
    conns = {}
    for k in range(1, n + 1):
        conns[k] = await psycopg.AsyncConnection.connect("application_name=" + app, autocommit=True)
    pids = {}
    await asyncio.gather(*(begin_and_insert(c, k, table, pids) for k, c in conns.items()))
    expect(len(set(pids.values())) == n, "the %d open transactions ran on %d distinct backends: %r"
           % (n, len(set(pids.values())), pids))
    await asyncio.gather(*(recheck(c, k, table, pids) for k, c in conns.items()))
    await asyncio.gather(*(c.execute("COMMIT" if k % 2 == 0 else "ROLLBACK")
                           for k, c in conns.items()))
    committed = [(k, pids[k]) for k in conns if k % 2 == 0]
    seen_by = await asyncio.gather(*(rows(c, table) for c in conns.values()))
    ok = 0
    for k, seen in zip(conns, seen_by):
        expect(seen == committed, "connection %d: after the commits and rollbacks it sees %r, "
               "expected the even connections' rows %r" % (k, seen, committed))
        ok += seen == committed
    print("async-result ok=%d distinct_backends=%d committed=%s"
          % (ok, len(set(pids.values())), ",".join(str(k) for k, _ in committed)))
    for c in conns.values():
        await c.close()
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

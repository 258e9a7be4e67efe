"""tests/matrix/psycopg3.py: psycopg 3 (Debian python3-psycopg, pure-Python libpq binding through ctypes) sync or asyncio, churned or leaked; one matrix client.

Usage: PSYCOPG_IMPL=python psycopg3.py churn|leak N APP sync|asyncio
The protocol is described in matrix_common.py. Connections run in autocommit mode, so a
leaked one sits idle, not inside a transaction.
"""
import asyncio
import sys

import psycopg

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import matrix_common  # noqa: E402


class SyncClient:
    errors = (psycopg.Error,)

    def connect(self, app):
        return psycopg.connect("application_name=" + app, autocommit=True)

    def query(self, conn, sql):
        return conn.execute(sql).fetchone()

    def close(self, conn):
        conn.close()


class AsyncioClient:
    """The same through psycopg.AsyncConnection, each call driven by one event loop."""
    errors = (psycopg.Error,)

    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def connect(self, app):
        return self.loop.run_until_complete(
            psycopg.AsyncConnection.connect("application_name=" + app, autocommit=True))

    def query(self, conn, sql):
        async def q():
            cur = await conn.execute(sql)
            return await cur.fetchone()
        return self.loop.run_until_complete(q())

    def close(self, conn):
        self.loop.run_until_complete(conn.close())


if __name__ == "__main__":
    variant = sys.argv.pop() if len(sys.argv) == 5 else ""
    if variant not in ("sync", "asyncio"):
        print("usage: %s churn|leak N APP sync|asyncio" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    if psycopg.pq.__impl__ != "python":
        print("psycopg3.py: libpq binding is %r, expected the pure-Python (ctypes) one: set "
              "PSYCOPG_IMPL=python" % psycopg.pq.__impl__, file=sys.stderr)
        sys.exit(1)
    matrix_common.main(SyncClient() if variant == "sync" else AsyncioClient())

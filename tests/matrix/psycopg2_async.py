"""tests/matrix/psycopg2_async.py: psycopg2 ASYNC connections (connect(dsn, async_=1) + poll loop) churned or leaked; one matrix client.

Usage: psycopg2_async.py churn|leak N APP   (Debian's /usr/bin/python3 with python3-psycopg2)
The matrix protocol (tests/matrix/README in run.sh): see matrix_common.py.
"""
import select
import sys

import psycopg2
import psycopg2.extensions

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import matrix_common  # noqa: E402


def wait(conn):
    # psycopg2's documented wait loop for async connections.
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], 10)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], 10)
        else:
            raise psycopg2.OperationalError("poll() returned %s" % state)


class Client:
    errors = (psycopg2.Error,)

    def connect(self, app):
        conn = psycopg2.connect("application_name=" + app, async_=1)
        wait(conn)
        return conn

    def query(self, conn, sql):
        cur = conn.cursor()
        cur.execute(sql)
        wait(conn)
        row = cur.fetchone()
        cur.close()
        return row

    def close(self, conn):
        conn.close()


if __name__ == "__main__":
    matrix_common.main(Client())

"""tests/async_clients/leak.py: leaks connections from several threads, or asyncio tasks, at once: psycopg 3 sync in threads, psycopg 3 AsyncConnection in tasks, psycopg2 async connections (async_=1 + poll loop) in threads.

Usage: leak.py psycopg3-threads|psycopg3-asyncio|psycopg2-async WORKERS EACH APP
(Debian's /usr/bin/python3; PSYCOPG_IMPL=python for psycopg 3.)
Each worker connects EACH times (application_name=APP, autocommit), runs
SELECT pg_backend_pid(), ID on each connection (ID unique to it; the echo must match) and keeps
every connection referenced, never closed. A worker whose connect fails stops there (plain
libpq: the server's refusal once its slots are full). Once every worker has stopped, each
worker runs SELECT ID * 7 on every connection it kept, all workers at once: each must answer.
Last stdout line: "async-result ok=K refused=R recheck=Q pids=P" (connects that answered,
connects that failed, kept connections that answered again, distinct backends seen); the first
failed connect's message is on a line "async-refused: MSG". Exit 0 when that ran; 1 with the
reason on stderr on a wrong answer, a failed query or any other error.
"""
import asyncio
import sys
import threading

import psycopg

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/matrix")
import psycopg2_async  # noqa: E402  (matrix client: psycopg2 async connect and query)
import psycopg3  # noqa: E402  (matrix client: psycopg 3 sync connect and query)
from matrix_common import one_line  # noqa: E402


class Worker:
    def __init__(self, index):
        self.index = index
        self.kept = []      # (ID, connection), never closed
        self.pids = set()
        self.refusal = None
        self.error = None
        self.recheck = 0

    def ident(self, j):
        return self.index * 1000 + j

    def answered(self, what, got, want):
        if got != want:
            raise RuntimeError("%s: got %r, expected %r" % (what, got, want))


def leak_sync(client, w, each, app):
    for j in range(1, each + 1):
        try:
            conn = client.connect(app)
        except client.errors as e:
            w.refusal = one_line(e)
            return
        pid, echo = client.query(conn, "SELECT pg_backend_pid(), %d" % w.ident(j))
        w.answered("connect %d" % w.ident(j), echo, w.ident(j))
        w.pids.add(pid)
        w.kept.append((w.ident(j), conn))


def recheck_sync(client, w):
    for i, conn in w.kept:
        w.answered("leaked connection %d" % i, client.query(conn, "SELECT %d * 7" % i)[0], i * 7)
        w.recheck += 1


async def leak_async(w, each, app):
    for j in range(1, each + 1):
        try:
            conn = await psycopg.AsyncConnection.connect("application_name=" + app, autocommit=True)
        except psycopg.Error as e:
            w.refusal = one_line(e)
            return
        cur = await conn.execute("SELECT pg_backend_pid(), %d" % w.ident(j))
        pid, echo = await cur.fetchone()
        w.answered("connect %d" % w.ident(j), echo, w.ident(j))
        w.pids.add(pid)
        w.kept.append((w.ident(j), conn))


async def recheck_async(w):
    for i, conn in w.kept:
        cur = await conn.execute("SELECT %d * 7" % i)
        w.answered("leaked connection %d" % i, (await cur.fetchone())[0], i * 7)
        w.recheck += 1


def guarded(w, step):
    """Runs step() for worker w; an exception is kept as w's error."""
    try:
        step()
    except Exception as e:  # noqa: BLE001  (any error fails the run, with its message)
        w.error = w.error or "worker %d: %s: %s" % (w.index, type(e).__name__, one_line(e))


async def guarded_async(w, coro):
    try:
        await coro
    except Exception as e:  # noqa: BLE001
        w.error = w.error or "worker %d: %s: %s" % (w.index, type(e).__name__, one_line(e))


def in_threads(workers, step):
    threads = [threading.Thread(target=guarded, args=(w, lambda w=w: step(w))) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("psycopg3-threads", "psycopg3-asyncio",
                                                  "psycopg2-async"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    variant, n, each, app = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    workers = [Worker(i) for i in range(1, n + 1)]
    if variant == "psycopg3-asyncio":
        async def run():
            await asyncio.gather(*(guarded_async(w, leak_async(w, each, app)) for w in workers))
            await asyncio.gather(*(guarded_async(w, recheck_async(w)) for w in workers
                                   if not w.error))
        asyncio.run(run())
    else:
        client = psycopg3.SyncClient() if variant == "psycopg3-threads" else psycopg2_async.Client()
        in_threads(workers, lambda w: leak_sync(client, w, each, app))
        in_threads([w for w in workers if not w.error], lambda w: recheck_sync(client, w))
    errors = [w.error for w in workers if w.error]
    for e in errors:
        print("leak.py: " + e, file=sys.stderr)
    refusals = [w.refusal for w in workers if w.refusal]
    if refusals:
        print("async-refused: " + refusals[0])
    print("async-result ok=%d refused=%d recheck=%d pids=%d"
          % (sum(len(w.kept) for w in workers), len(refusals), sum(w.recheck for w in workers),
             len(set().union(*(w.pids for w in workers)))))
    sys.stdout.flush()
    # The leaked connections are still referenced (workers) until the interpreter exits.
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

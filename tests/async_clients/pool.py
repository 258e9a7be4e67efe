"""tests/async_clients/pool.py: 200 concurrent asyncio tasks share a psycopg_pool.AsyncConnectionPool of max_size 10; each runs a query and checks its answer.

Usage: PSYCOPG_IMPL=python pool.py TASKS MAX_SIZE TIMEOUT APP
(Debian's /usr/bin/python3 with python3-psycopg and python3-psycopg-pool.)
Each task takes a connection from the pool (application_name=APP, autocommit), runs
SELECT ID * 3, pg_backend_pid(), pg_sleep(0.005) (so the tasks really queue for the pool's
connections), checks the answer and gives the connection back. A task whose connection did
not come within TIMEOUT seconds fails (psycopg_pool.PoolTimeout).
Last stdout line: "async-result ok=K pids=P max_wait_ms=W max_task_ms=T wall_ms=M" (tasks
answered correctly, distinct backends that answered, the longest wait for a connection, the
longest task, the whole run from the pool's opening to its closing). Exit 0 when every task
answered; 1 with the reasons on stderr otherwise.
"""
import asyncio
import sys
import time

import psycopg_pool

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/matrix")
from matrix_common import one_line  # noqa: E402


async def task(pool, ident, waits, durations, pids):
    start = time.monotonic()
    async with pool.connection() as conn:
        waits.append(time.monotonic() - start)
        cur = await conn.execute("SELECT %s::int * 3, pg_backend_pid(), pg_sleep(0.005)", (ident,))
        value, pid, _ = await cur.fetchone()
    durations.append(time.monotonic() - start)
    if value != ident * 3:
        raise RuntimeError("task %d: got %r, expected %d" % (ident, value, ident * 3))
    pids.add(pid)


async def main(tasks, max_size, timeout, app):
    tasks, max_size, timeout = int(tasks), int(max_size), float(timeout)
    waits, durations, pids = [], [], set()
    start = time.monotonic()
    pool = psycopg_pool.AsyncConnectionPool("application_name=" + app, max_size=max_size,
                                            timeout=timeout, kwargs={"autocommit": True},
                                            open=False)
    await pool.open(wait=True)
    results = await asyncio.gather(*(task(pool, i, waits, durations, pids)
                                     for i in range(1, tasks + 1)), return_exceptions=True)
    await pool.close()
    wall = time.monotonic() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    for e in errors[:10]:
        print("pool.py: %s: %s" % (type(e).__name__, one_line(e)), file=sys.stderr)
    if len(errors) > 10:
        print("pool.py: ... %d errors in all" % len(errors), file=sys.stderr)
    print("async-result ok=%d pids=%d max_wait_ms=%d max_task_ms=%d wall_ms=%d"
          % (tasks - len(errors), len(pids), max(waits, default=0) * 1000,
             max(durations, default=0) * 1000, wall * 1000))
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(*sys.argv[1:])))

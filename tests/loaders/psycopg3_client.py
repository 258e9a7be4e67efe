"""psycopg3_client.py MODE CYCLES APP: psycopg 3's pure-Python implementation (libpq through ctypes: dlopen + dlsym) churning connections.

MODE: sync (psycopg.connect) or asyncio (psycopg.AsyncConnection.connect); both connect with
PQconnectStart and a PQconnectPoll loop. Each cycle runs SELECT pg_backend_pid() and prints
it on its own line; then "done". Connection parameters come from the PG* environment; APP is
the application_name. Run with Debian's /usr/bin/python3 and PSYCOPG_IMPL=python.
"""
import asyncio
import sys

import psycopg

mode, cycles, app = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if psycopg.pq.__impl__ != "python":
    sys.exit(f"psycopg uses its {psycopg.pq.__impl__} implementation; set PSYCOPG_IMPL=python")


def churn_sync():
    for _ in range(cycles):
        conn = psycopg.connect(application_name=app)
        print(conn.execute("SELECT pg_backend_pid()").fetchone()[0], flush=True)
        conn.close()


async def churn_asyncio():
    for _ in range(cycles):
        conn = await psycopg.AsyncConnection.connect(application_name=app)
        cur = await conn.execute("SELECT pg_backend_pid()")
        print((await cur.fetchone())[0], flush=True)
        await conn.close()


if mode == "sync":
    churn_sync()
elif mode == "asyncio":
    asyncio.run(churn_asyncio())
else:
    sys.exit(f"unknown mode {mode}")
print("done")

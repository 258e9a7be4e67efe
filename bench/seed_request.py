"""seed_request.py: the seed app's database work for one request, in a loop in one thread (no
web server), so a profile shows what a leaky request costs against a fixed one.

    SEED_DSN=postgresql+psycopg2:///postgres?host=/tmp/sock MODE=leaky N=500 \\
        pqdedup -- python3 -m cProfile -s tottime bench/seed_request.py

MODE  fixed:  one engine, a Session per request, closed (tests/seed/app.py with SEED_FIX=1)
      leaky:  a new engine and Session per request, never closed (the seed app as it was)
      engine: only create_engine() per request, no connection (what building an engine costs)
N     requests (300). Needs a table seed_items (rid text, backend int), as tests/seed/lib.sh makes.
Prints milliseconds per request.
"""
import os
import time

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

DSN = os.environ["SEED_DSN"]
MODE = os.environ.get("MODE", "leaky")
N = int(os.environ.get("N", "300"))


def one_request(db, i):
    """The seed app's POST /items/{rid}: a write, a read back, a commit."""
    db.execute(text("INSERT INTO seed_items (rid, backend) VALUES (:rid, pg_backend_pid())"), {"rid": str(i)})
    db.execute(text("SELECT count(*) FROM seed_items WHERE rid = :rid"), {"rid": str(i)}).scalar()
    db.commit()


start = time.perf_counter()
if MODE == "fixed":
    engine = create_engine(DSN)
    for i in range(N):
        db = Session(engine)
        one_request(db, i)
        db.close()
elif MODE == "leaky":
    for i in range(N):
        one_request(Session(create_engine(DSN)), i)
elif MODE == "engine":
    for i in range(N):
        create_engine(DSN)
else:
    raise SystemExit("seed_request.py: MODE is fixed, leaky or engine")
print("%s: %.3f ms per request" % (MODE, (time.perf_counter() - start) / N * 1000))

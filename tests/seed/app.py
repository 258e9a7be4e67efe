"""app.py: the app this project started from: FastAPI + SQLAlchemy 1.4 + psycopg2, whose get_db()
makes a new engine and Session for every request and never disposes of them.

SEED_DSN      the SQLAlchemy URL (postgresql+psycopg2://...)
SEED_FIX=1    the fix a developer would write instead: one engine per process, a Session per
              request, closed when the request ends.

POST /items/{rid} writes one row (rid, the backend that wrote it), reads the count back in the
same transaction, and commits: the leaky version's connection is then idle, back in its engine's
pool, until the garbage collector finishes the engine. (A request that reads after its commit
leaves a transaction open until the collector finishes the Session; pqdedup never moves a
connection inside a transaction: README, Limits.)
"""
import os

from fastapi import Depends, FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

DSN = os.environ["SEED_DSN"]
FIXED = os.environ.get("SEED_FIX") == "1"

app = FastAPI()

if FIXED:
    engine = create_engine(DSN)

    def get_db():
        db = Session(engine)
        try:
            yield db
        finally:
            db.close()
else:
    def get_db():
        engine = create_engine(DSN)
        return Session(engine)


@app.post("/items/{rid}")
def create_item(rid: str, db: Session = Depends(get_db)):
    db.execute(text("INSERT INTO seed_items (rid, backend) VALUES (:rid, pg_backend_pid())"), {"rid": rid})
    count = db.execute(text("SELECT count(*) FROM seed_items WHERE rid = :rid"), {"rid": rid}).scalar()
    db.commit()
    return {"rid": rid, "count": count}


@app.get("/health")
def health():
    return {"ok": True}

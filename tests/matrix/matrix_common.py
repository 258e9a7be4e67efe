"""tests/matrix/matrix_common.py: the churn/leak loop and result line shared by the Python matrix clients.

Every matrix client (C, Python, Perl, PHP, Ruby) speaks one protocol, read by tests/matrix/run.sh:
  CLIENT churn|leak N APP
  churn: N times: connect (application_name=APP), SELECT pg_backend_pid(), i; check the echo;
         close.
  leak:  N times: connect, the same query, keep the handle referenced, never close. The first
         connect that fails ends the loop (plain libpq: the server refuses past
         max_connections). Then every kept handle runs SELECT i*7 again and must answer it.
  An observer connection (application_name=APP_obs, opened first through the same client)
  reads max_connections and, at the end (leaked handles still open), the number of backends
  of APP in pg_stat_activity.
  Last stdout line: "matrix-result mode=M n=N ok=K pids=P backends=B max_conn=C refused_at=R
  recheck=Q" (ok: cycles whose query returned the right row; pids: distinct backend pids seen;
  refused_at: 1-based cycle of the first failed connect, 0 if none; recheck: leaked handles
  that answered again). A failed connect's message goes on a line "matrix-refused: MSG".
  Exit 0 when the loop ran (a refused connect is a result, not a crash); 1 on a wrong query
  result or any other error, with the reason on stderr.
"""
import sys


def one_line(e):
    return " ".join(str(e).split())


def run(client, mode, n, app):
    obs = client.connect(app + "_obs")
    max_conn = int(client.query(obs, "SHOW max_connections")[0])
    pids = set()
    kept = []
    ok = 0
    refused_at = 0
    for i in range(1, n + 1):
        try:
            conn = client.connect(app)
        except client.errors as e:
            refused_at = i
            print("matrix-refused: " + one_line(e))
            break
        pid, echo = client.query(conn, "SELECT pg_backend_pid(), %d" % i)
        if int(echo) != i:
            print("matrix: cycle %d: SELECT returned %r, expected %d" % (i, echo, i), file=sys.stderr)
            sys.exit(1)
        pids.add(int(pid))
        ok += 1
        if mode == "churn":
            client.close(conn)
        else:
            kept.append((i, conn))
    recheck = 0
    for i, conn in kept:
        row = client.query(conn, "SELECT %d * 7" % i)
        if int(row[0]) != i * 7:
            print("matrix: leaked handle %d: SELECT returned %r" % (i, row), file=sys.stderr)
            sys.exit(1)
        recheck += 1
    backends = int(client.query(
        obs, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'" % app)[0])
    print("matrix-result mode=%s n=%d ok=%d pids=%d backends=%d max_conn=%d refused_at=%d recheck=%d"
          % (mode, n, ok, len(pids), backends, max_conn, refused_at, recheck))
    sys.stdout.flush()
    return kept, obs


def main(client):
    if len(sys.argv) != 4 or sys.argv[1] not in ("churn", "leak"):
        print("usage: %s churn|leak N APP" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    kept = run(client, sys.argv[1], int(sys.argv[2]), sys.argv[3])
    # Leaked handles stay referenced until the interpreter exits.
    del kept

# tests/seed/lib.sh: runs the seed app (app.py) under uvicorn and sends it load; sourced by tests/seed/run.sh and bench/seed.sh.
#
# Needs: PYTHON (Debian's /usr/bin/python3 with python3-fastapi, python3-uvicorn,
# python3-sqlalchemy, python3-psycopg2), PSQL (an array: psql as the observer), SEED_DIR
# (tests/seed), SEED_OUT (a scratch directory), SEED_ROLE (the app's role), SEED_DSN.

seed_server_pid=

# seed_setup_role ROLE SLOTS: a role that may open SLOTS connections, with its own schema and
# table seed_items.
seed_setup_role() {
  "${PSQL[@]}" <<SQL
CREATE ROLE $1 LOGIN PASSWORD 'seed_pw' CONNECTION LIMIT $2;
CREATE SCHEMA $1 AUTHORIZATION $1;
ALTER ROLE $1 SET search_path = $1;
CREATE TABLE $1.seed_items (rid text NOT NULL, backend int NOT NULL);
ALTER TABLE $1.seed_items OWNER TO $1;
SQL
}

seed_drop_role() {
  "${PSQL[@]}" -c "DROP SCHEMA IF EXISTS $1 CASCADE" -c "DROP ROLE IF EXISTS $1" >/dev/null 2>&1 || true
}

# seed_stop_app: stops the app started by seed_run, if it still runs (for EXIT traps).
seed_stop_app() {
  if [[ -n $seed_server_pid ]]; then
    kill -TERM "$seed_server_pid" 2>/dev/null || true
    wait "$seed_server_pid" 2>/dev/null || true
    seed_server_pid=
  fi
}

# seed_run PREFIX REQUESTS CLIENTS [ENV=VALUE... [LAUNCHER...]]: starts the app (with the
# environment and under the launcher given, e.g. `SEED_FIX=1` or `PQDEDUP_STATS=1 pqdedup --`),
# sends REQUESTS from CLIENTS concurrent clients, stops it. Leaves the load's JSON in
# $SEED_OUT/PREFIX.json, the role's highest backend count in $SEED_OUT/PREFIX.max and the app's
# stderr in $SEED_OUT/PREFIX.err. Exits 1 if the app does not start.
seed_run() {
  local prefix=$1 requests=$2 clients=$3; shift 3
  local port
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env "$@" "$PYTHON" -m uvicorn app:app --app-dir "$SEED_DIR" --host 127.0.0.1 --port "$port" \
    --log-level warning 2>"$SEED_OUT/$prefix.err" &
  seed_server_pid=$!
  local started=0
  for _ in $(seq 400); do
    if "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null; then
      started=1; break
    fi
    kill -0 "$seed_server_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [[ $started -eq 0 ]]; then
    cat "$SEED_OUT/$prefix.err" >&2
    echo "seed: the app did not start" >&2
    exit 1
  fi
  echo 0 >"$SEED_OUT/$prefix.max"
  ( max=0
    while :; do
      n=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE usename = '$SEED_ROLE'")
      (( n > max )) && { max=$n; echo "$max" >"$SEED_OUT/$prefix.max"; }
      sleep 0.02
    done ) &
  local sampler=$!
  "$PYTHON" "$SEED_DIR/load.py" "http://127.0.0.1:$port" "$requests" "$clients" "$prefix" >"$SEED_OUT/$prefix.json"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  seed_stop_app
}

# seed_field PREFIX NAME: a field of the load's JSON.
seed_field() {
  "$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$SEED_OUT/$1.json" "$2"
}

# seed_summary PREFIX LABEL: one line: served, failed, requests/s, backends, first error.
seed_summary() {
  "$PYTHON" - "$SEED_OUT/$1.json" "$2" "$(cat "$SEED_OUT/$1.max")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"seed: {sys.argv[2]}: {r['ok']} of {r['requests']} requests served, {r['failed']} failed, "
      f"{r['requests_per_second']} requests/s, at most {sys.argv[3]} backends"
      + (f"; first error: {r['first_error'][:200]}" if r['first_error'] else ""))
PY
}

# tests/fleet/bouncer.sh: start and stop a throwaway PgBouncer in front of the test server (sourced, not run).
# shellcheck shell=bash
#
# Needs the harness's env.sh (PGHOST, PGPORT, PQD_TEST_PGUSER_OS). PgBouncer runs as the
# server's OS user (postgres when we are root: it refuses to run as root), listens on a free
# TCP port on 127.0.0.1 only (no unix socket), lets its own clients in with auth_type=trust
# for the roles in its auth_file, and logs in to the server as BOUNCER_ROLE (default pqd_alice,
# a password role of the harness), so the server's backends of that role are exactly
# PgBouncer's server connections. Every pool is one database, "fleet" (the server's postgres database).
#
#   bouncer_start DIR MODE POOL_SIZE [INI_LINE...]
#     MODE session or transaction; DIR an empty directory of ours. Extra [pgbouncer] lines
#     (e.g. "query_wait_timeout = 2") go after the defaults. Sets BOUNCER_PORT and
#     BOUNCER_PID. Returns 1, with the log's tail on stderr, if it does not come up.
#   bouncer_stop DIR
#     Stops it (SIGTERM, then SIGKILL after 10 s) and waits until the process is gone.
#   bouncer_admin DIR SQL
#     Runs SQL on its admin console (SHOW STATS, SHOW POOLS ...), unaligned, tuples only.

# The role PgBouncer logs in as (and its clients use); a caller may set another first.
: "${BOUNCER_ROLE:=pqd_alice}"
: "${BOUNCER_ROLE_PASSWORD=alice_pw}"
BOUNCER_PORT=
BOUNCER_PID=
BOUNCER_PSQL=$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")/psql

# Runs a command as the server's OS user (setpriv, not runuser: PAM would reset the
# descriptor limit raised for it).
bouncer_as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    local u=${PQD_TEST_PGUSER_OS:-postgres}
    setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"
  else
    "$@"
  fi
}

bouncer_admin() {
  env -u LD_PRELOAD -u LD_AUDIT "$BOUNCER_PSQL" -X -qtA -v ON_ERROR_STOP=1 \
    "host=127.0.0.1 port=$BOUNCER_PORT dbname=pgbouncer user=$BOUNCER_ROLE connect_timeout=5" -c "$2"
}

bouncer_start() {
  local dir=$1 mode=$2 pool=$3 port attempt deadline pid
  shift 3
  command -v pgbouncer >/dev/null || { echo "bouncer: pgbouncer is not installed (Debian: pgbouncer)" >&2; return 1; }
  printf '"%s" ""\n' "$BOUNCER_ROLE" >"$dir/userlist.txt"
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-), where outgoing connections take ports
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # taken
    {
      echo "[databases]"
      echo "fleet = host=$PGHOST port=$PGPORT dbname=postgres user=$BOUNCER_ROLE${BOUNCER_ROLE_PASSWORD:+ password=$BOUNCER_ROLE_PASSWORD}"
      echo "[pgbouncer]"
      echo "pool_mode = $mode"
      echo "default_pool_size = $pool"
      echo "min_pool_size = 0"
      echo "reserve_pool_size = 0"
      echo "max_client_conn = 2000"
      echo "listen_addr = 127.0.0.1"
      echo "listen_port = $port"
      echo "unix_socket_dir ="
      echo "auth_type = trust"
      echo "auth_file = $dir/userlist.txt"
      echo "admin_users = $BOUNCER_ROLE"
      echo "pidfile = $dir/pgbouncer.pid"
      echo "logfile = $dir/pgbouncer.log"
      echo "log_connections = 0"
      echo "log_disconnections = 0"
      printf '%s\n' "$@"
    } >"$dir/pgbouncer.ini"
    rm -f "$dir/pgbouncer.pid"
    [[ $(id -u) -ne 0 ]] || chown -R "${PQD_TEST_PGUSER_OS:-postgres}:" "$dir"
    # Room for max_client_conn descriptors (the soft limit is often 1024).
    (ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 4096 2>/dev/null || true
     bouncer_as_owner pgbouncer -d -q "$dir/pgbouncer.ini") >>"$dir/stderr.log" 2>&1 || true
    BOUNCER_PORT=$port
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
      pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
      if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && bouncer_admin "$dir" 'SHOW VERSION' >/dev/null 2>&1; then
        BOUNCER_PID=$pid
        return 0
      fi
      [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && break # it exited: try another port
      sleep 0.05
    done
    echo "bouncer: PgBouncer did not come up on port $port (attempt $attempt): $(tail -n 3 "$dir/pgbouncer.log" "$dir/stderr.log" 2>/dev/null)" >&2
    bouncer_stop "$dir"
  done
  BOUNCER_PORT=
  return 1
}

bouncer_stop() {
  local dir=$1 pid deadline
  pid=${BOUNCER_PID:-$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)}
  BOUNCER_PID=
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  fi
  return 0
}

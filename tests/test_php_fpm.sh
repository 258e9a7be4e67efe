#!/usr/bin/env bash
# test_php_fpm.sh: PHP-FPM with its default clear_env under the launcher: the forked workers keep pqdedup's settings (their stats lines reach PQDEDUP_LOG_FILE) and reuse connections across requests.
#
# Run by ctest (tests/php_fpm.cmake) with PQD_TEST_LAUNCHER, PQD_TEST_SOURCE_DIR and the
# harness's PG* variables; LD_PRELOAD is unset. Debian packages: php-fpm php-pgsql.
# PHP-FPM empties each worker's environment (clear_env = yes, its default) before any PHP
# runs, so the library must have read its settings when it was loaded into the master.
# Skipped (exit 77) in sanitizer builds (PHP loads its extensions RTLD_DEEPBIND, which the
# sanitizer runtimes abort) and where php-fpm8.2 is not installed.
set -euo pipefail

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
SRC=${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}
FPM=${PQD_TEST_PHP_FPM:-php-fpm8.2}
WORKERS=3
REQUESTS=24
MAX_REQUESTS=4 # a worker that served this many exits normally (and writes its stats line)

# shellcheck source=tests/checks.sh
. "$SRC/checks.sh"

if [[ -n ${PQD_TEST_SANITIZER_RUNTIME:-} ]]; then
  echo "test_php_fpm: skipped: PHP's RTLD_DEEPBIND extensions abort under a sanitizer runtime"
  exit 77
fi
if ! command -v "$FPM" >/dev/null; then
  echo "test_php_fpm: skipped: $FPM is not installed (Debian: php-fpm php-pgsql)"
  exit 77
fi
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

T=$(mktemp -d /tmp/pqd-fpm-XXXXXX)
chmod 755 "$T"
master=
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  [[ -z $master ]] || kill -KILL "$master" 2>/dev/null || true
  [[ -n ${PQD_KEEP:-} ]] || rm -rf "$T"
}
trap cleanup EXIT

# A pool of static workers, clear_env left at its default. The connection parameters come
# from env[] lines, as a deployment would give them; PQDEDUP_* only from the master's
# environment (the launcher's options).
run_as=()
pool_user=
if [[ $(id -u) -eq 0 ]]; then
  run_as=(-R)
  pool_user="user = root"
fi
cat >"$T/fpm.conf" <<EOF
[global]
pid = $T/fpm.pid
error_log = $T/fpm.log
daemonize = no

[pqd]
$pool_user
listen = $T/fpm.sock
pm = static
pm.max_children = $WORKERS
pm.max_requests = $MAX_REQUESTS
env[PGHOST] = ${PGHOST:?PGHOST is not set}
env[PGPORT] = ${PGPORT:-5432}
env[PGUSER] = ${PGUSER:-postgres}
env[PGDATABASE] = ${PGDATABASE:-postgres}
EOF
cp "$SRC/php_fpm/connect.php" "$T/connect.php"
printf '<?php\necho "PQDEDUP_STATS=[" . getenv("PQDEDUP_STATS") . "]\\n";\n' >"$T/env.php"

"$L" --stats --log "${PQD_FPM_LOG:-info}" --log-file "$T/pqdedup.log" -- "$FPM" -F -y "$T/fpm.conf" "${run_as[@]}" \
  >"$T/fpm.out" 2>&1 &
master=$!
for _ in $(seq 1 100); do
  [[ -S $T/fpm.sock ]] && break
  sleep 0.1
done
[[ -S $T/fpm.sock ]] && pass || fail "php-fpm listens on $T/fpm.sock: $(cat "$T/fpm.out" "$T/fpm.log" 2>/dev/null)"

# clear_env is in force: a worker's environment has no PQDEDUP_STATS.
out=$(python3 "$SRC/php_fpm/fcgi_get.py" "$T/fpm.sock" "$T/env.php" 1 2>&1) || true
[[ $out == "PQDEDUP_STATS=[]" ]] && pass || fail "the workers' environment is cleared (clear_env = yes): $out"

rc=0
python3 "$SRC/php_fpm/fcgi_get.py" "$T/fpm.sock" "$T/connect.php" "$REQUESTS" >"$T/responses" 2>&1 || rc=$?
[[ $rc -eq 0 ]] && pass || fail "$REQUESTS requests served (rc $rc): $(cat "$T/responses")"
[[ $(grep -c '^worker=[0-9]* backend=[0-9]*$' "$T/responses") -eq $REQUESTS ]] && pass || fail "every request connected and queried: $(cat "$T/responses")"
backends=$(sed -n 's/.* backend=//p' "$T/responses" | sort -u | wc -l)
# Each worker's requests share its backends: far fewer than one per request.
[[ $backends -le $((REQUESTS / 2)) ]] && pass || fail "$REQUESTS requests used at most $((REQUESTS / 2)) backends (got $backends)"

# Stop. A worker that reached pm.max_requests has exited normally and written its stats
# line; the others are ended by the master's SIGTERM, which leaves no exit handler to run.
kill -QUIT "$master"
wait "$master" || true
master=

[[ -s $T/pqdedup.log ]] && pass || fail "PQDEDUP_LOG_FILE was written: $(cat "$T/fpm.out" "$T/fpm.log" 2>/dev/null)"
served=0
retired=0
for worker in $(sed -n 's/^worker=\([0-9]*\) .*/\1/p' "$T/responses" | sort -u); do
  n=$(grep -c "^worker=$worker " "$T/responses")
  served=$((served + n))
  # Its settings reached it: PQDEDUP_LOG=info lines of its own in PQDEDUP_LOG_FILE.
  grep -q "^pqdedup\[$worker\]: " "$T/pqdedup.log" && pass || fail "worker $worker logs to PQDEDUP_LOG_FILE (its settings survived clear_env)"
  [[ $n -eq $MAX_REQUESTS ]] || continue
  retired=$((retired + 1))
  line=$(grep "^pqdedup\[$worker\]: stats " "$T/pqdedup.log" || true)
  [[ -n $line ]] && pass || fail "worker $worker (retired after $n requests) wrote its stats line to PQDEDUP_LOG_FILE"
  connects=$(sed -n 's/.* connects=\([0-9]*\).*/\1/p' <<<"$line")
  reused=$(sed -n 's/.* reused=\([0-9]*\).*/\1/p' <<<"$line")
  [[ ${connects:--1} -eq $n ]] && pass || fail "worker $worker: connects=$n (got ${connects:-none}): $line"
  [[ ${reused:-0} -ge 1 ]] && pass || fail "worker $worker: its $n requests reused a connection (reused=${reused:-none})"
done
[[ $served -eq $REQUESTS ]] && pass || fail "the workers' requests add up to $REQUESTS (got $served)"
# 24 requests over 3 workers that each retire after 4: at least 3 retired.
[[ $retired -ge $((REQUESTS / MAX_REQUESTS - WORKERS)) ]] && pass || fail "workers retired at pm.max_requests (got $retired)"
! grep -v '^pqdedup\[[0-9]*\]: ' "$T/pqdedup.log" && pass || fail "every line of the log is prefixed"

checks_done test_php_fpm

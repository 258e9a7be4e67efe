#!/usr/bin/env bash
# Benchmarks pqdedup against persistent, direct, and PgBouncer connections on a throwaway PostgreSQL 15.
#
# Usage: bench/run.sh [--quick|--full] [--build DIR] [--duration S] [--rounds N] [--only-micro]
#   --quick       1 round, 2 s per cell (default; about 3 minutes in all)
#   --full        3 rounds, 15 s per cell (about 50 minutes: run it on a quiet machine)
#   --build DIR   where libpqdedup.so and pqdedup are (built there if missing; default build/)
#   --duration S, --rounds N   override the mode's numbers
#   --only-micro  skip the pgbench matrix (leak run and cycle microbenchmark only)
# Writes bench/results/<timestamp>/{results.md,raw.csv,tps_ratio.png,...} and prints the table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
PGBIN=/usr/lib/postgresql/15/bin
MODE=quick
BUILD=""
DURATION=""
ROUNDS=""
ONLY_MICRO=0

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [[ $# -gt 0 ]]; do
	case "$1" in
	--quick) MODE=quick ;;
	--full) MODE=full ;;
	--build) BUILD="${2:?--build needs a directory}"; shift ;;
	--duration) DURATION="${2:?}"; shift ;;
	--rounds) ROUNDS="${2:?}"; shift ;;
	--only-micro) ONLY_MICRO=1 ;;
	-h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option: $1 (see --help)" ;;
	esac
	shift
done
if [[ "$MODE" == full ]]; then
	: "${DURATION:=15}" "${ROUNDS:=3}"
	LEAK_UNITS=300; CYCLE_ITER=200000; CYCLE_BUDGET=20; MEM_K=90
else
	: "${DURATION:=2}" "${ROUNDS:=1}"
	LEAK_UNITS=300; CYCLE_ITER=50000; CYCLE_BUDGET=5; MEM_K=90
fi
[[ -n "$BUILD" ]] || BUILD="$ROOT/build"
[[ "$BUILD" == /* ]] || BUILD="$PWD/$BUILD"
[[ $EUID -eq 0 ]] || die "run as root (it starts PostgreSQL and PgBouncer as the postgres user)"

# Installs the Debian packages this needs, once, only those missing. Dies if apt fails.
ensure_packages() {
	local pkgs=(postgresql-15 postgresql-client-15 pgbouncer gnuplot-nox libpq-dev uthash-dev libxxhash-dev
		cmake gcc pkg-config util-linux)
	local missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "installing: ${missing[*]}"
	# Debian's postgresql package would otherwise create and start a 'main' cluster.
	mkdir -p /etc/postgresql-common/createcluster.d
	echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/pqdedup-bench.conf
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Builds pqdedup into $BUILD if needed (incremental when configured). Returns 1 when no
# usable library and launcher exist afterwards; the pqdedup rows are then skipped.
ensure_pqdedup() {
	local blog="$WORK/build.log"
	if [[ -f "$BUILD/CMakeCache.txt" ]]; then
		cmake --build "$BUILD" >"$blog" 2>&1 || log "warning: incremental build failed (see results/build.log)"
	elif [[ ! -x "$BUILD/pqdedup" ]]; then
		log "building pqdedup into $BUILD"
		{ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$BUILD"; } \
			>"$blog" 2>&1 || log "warning: build failed (see results/build.log)"
	fi
	[[ -x "$BUILD/pqdedup" && -f "$BUILD/libpqdedup.so" ]]
}

# Prints a TCP port on 127.0.0.1 that nothing listens on (random, checked by connecting).
free_port() {
	local p i
	for i in $(seq 1 50); do
		p=$((20000 + RANDOM % 30000))
		if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME="$WORK" "$@"; }

# Stops whatever this script started; always runs (EXIT trap). Never fails.
cleanup() {
	local rc=$? pid i
	set +e
	if [[ -n "${WORK:-}" && -f "$WORK/pgbouncer.pid" ]]; then
		pid="$(cat "$WORK/pgbouncer.pid")"
		kill "$pid" 2>/dev/null
		for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
	fi
	if [[ -n "${WORK:-}" && -f "$WORK/data/postmaster.pid" ]]; then
		as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1
	fi
	if [[ -n "${OUT:-}" && -d "${OUT:-}" && -n "${WORK:-}" ]]; then
		cp "$WORK"/*.log "$OUT/" 2>/dev/null
	fi
	[[ -n "${WORK:-}" ]] && rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_packages

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
# The checkout's commit, read now (it may move during a long run); "+changes" if src/ differs.
GITREV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
if [[ -n "$(git -C "$ROOT" status --porcelain -- src CMakeLists.txt 2>/dev/null)" ]]; then
	GITREV="$GITREV+changes"
fi
OUT="$BENCH/results/$STAMP"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/pqdedup-bench.XXXXXX)"
chown postgres:postgres "$WORK"
chmod 755 "$WORK"
export PGUSER=postgres PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGDATABASE PGSERVICE PGOPTIONS PGAPPNAME

HAVE_PQD=0
if ensure_pqdedup; then
	HAVE_PQD=1
	PQD="$BUILD/pqdedup"
	log "pqdedup: $PQD"
else
	log "warning: no pqdedup in $BUILD: its rows are marked n/a"
fi

PGSOCK="$WORK/pgsock"
BSOCK="$WORK/bsock"
mkdir -p "$PGSOCK" "$BSOCK"
chown postgres:postgres "$PGSOCK" "$BSOCK"

# --- PostgreSQL 15, ours alone --------------------------------------------------------
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
	>"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
started=0
for attempt in 1 2 3; do
	PGP="$(free_port)"
	cat >"$WORK/data/postgresql.auto.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		port = $PGP
		unix_socket_directories = '$PGSOCK'
		max_connections = 100
		synchronous_commit = off
		shared_buffers = 128MB
		log_line_prefix = '%m [%p] '
	EOF
	if as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 start >/dev/null 2>&1; then
		started=1
		break
	fi
	log "postgres did not start on port $PGP (attempt $attempt)"
done
[[ $started -eq 1 ]] || { tail -20 "$WORK/postgres.log" >&2; die "cannot start postgres"; }
log "postgres 15 on 127.0.0.1:$PGP and $PGSOCK"

psql_q() { psql -X -q -At -h "$PGSOCK" -p "$PGP" -d "${2:-postgres}" -c "$1"; }
psql_q "CREATE DATABASE bench" >/dev/null
# PgBouncer logs in to the server as its own role, so its backends can be told apart.
psql_q "CREATE ROLE bouncer SUPERUSER LOGIN" >/dev/null
pgbench -i -s 1 -q -h "$PGSOCK" -p "$PGP" bench >"$WORK/pgbench-init.log" 2>&1 ||
	{ cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --- PgBouncer, as postgres, one session-mode and one transaction-mode pool per transport --
printf '"postgres" ""\n"bouncer" ""\n' >"$WORK/userlist.txt"
for attempt in 1 2 3; do
	BP="$(free_port)"
	cat >"$WORK/pgbouncer.ini" <<-EOF
		[databases]
		sess_unix = host=$PGSOCK port=$PGP dbname=bench user=bouncer pool_mode=session
		tx_unix = host=$PGSOCK port=$PGP dbname=bench user=bouncer pool_mode=transaction
		sess_tcp = host=127.0.0.1 port=$PGP dbname=bench user=bouncer pool_mode=session
		tx_tcp = host=127.0.0.1 port=$PGP dbname=bench user=bouncer pool_mode=transaction
		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $BP
		unix_socket_dir = $BSOCK
		auth_type = trust
		auth_file = $WORK/userlist.txt
		admin_users = postgres
		pidfile = $WORK/pgbouncer.pid
		logfile = $WORK/pgbouncer.log
		max_client_conn = 400
		default_pool_size = 20
		server_reset_query = DISCARD ALL
		ignore_startup_parameters = extra_float_digits
		log_connections = 0
		log_disconnections = 0
	EOF
	chown postgres:postgres "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
	as_pg pgbouncer -d -q "$WORK/pgbouncer.ini" 2>>"$WORK/pgbouncer-stderr.log" || true
	for i in $(seq 1 50); do
		psql -X -q -At -h "$BSOCK" -p "$BP" -d tx_unix -c 'SELECT 1' >/dev/null 2>&1 && break 2
		sleep 0.1
	done
	log "pgbouncer did not come up on port $BP (attempt $attempt)"
	[[ -f "$WORK/pgbouncer.pid" ]] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
	BP=""
done
[[ -n "$BP" ]] || { tail -20 "$WORK/pgbouncer.log" >&2; die "cannot start pgbouncer"; }
log "pgbouncer $(pgbouncer -V | head -1 | awk '{print $2}') on 127.0.0.1:$BP and $BSOCK"

# --- the C programs, outside the main build and ctest ----------------------------------
CFLAGS_BENCH=(-O2 -Wall -Wextra $(pkg-config --cflags libpq))
cc "${CFLAGS_BENCH[@]}" "$BENCH/leaky.c" -o "$WORK/leaky" $(pkg-config --libs libpq)
cc "${CFLAGS_BENCH[@]}" "$BENCH/cycle.c" -o "$WORK/cycle" $(pkg-config --libs libpq)

# Prints the host, port and database of a configuration over a transport.
target() {
	local cfg="$1" transport="$2" host port db
	case "$cfg" in
	pgb-session|pgb-tx)
		port="$BP"; db="$([[ $cfg == pgb-session ]] && echo sess || echo tx)_$transport"
		host="$([[ $transport == unix ]] && echo "$BSOCK" || echo 127.0.0.1)" ;;
	*)
		port="$PGP"; db=bench
		host="$([[ $transport == unix ]] && echo "$PGSOCK" || echo 127.0.0.1)" ;;
	esac
	echo "$host $port $db"
}

# The environment a configuration runs with: a prefix for `env`.
cfg_env() {
	case "$1" in
	pqdedup | pqdedup-persistent) echo "PQDEDUP_STATS=1" ;;
	pqdedup-noreset) echo "PQDEDUP_STATS=1 PQDEDUP_RESET_QUERY=" ;;
	pqdedup-dirty) echo "PQDEDUP_STATS=1 PQDEDUP_RESET=dirty" ;;
	*) echo "" ;;
	esac
}

sessions() { psql_q "SELECT sessions FROM pg_stat_database WHERE datname = 'bench'"; }

# Runs one pgbench cell and appends a CSV row. Never fails: a failed run is a row with status.
run_cell() {
	local round="$1" script="$2" clients="$3" transport="$4" cfg="$5"
	local host port db jobs args=() cmd=() envs s0 s1 rc log tps lat txn failed status note=""
	read -r host port db <<<"$(target "$cfg" "$transport")"
	jobs=$((clients > 1 ? 2 : 1))
	args=(-n -T "$DURATION" -c "$clients" -j "$jobs" -h "$host" -p "$port" -U postgres)
	if [[ "$cfg" == persistent-reset ]]; then
		args+=(-f "$WORK/$script-discard.sql")
	else
		[[ "$script" == select ]] && args+=(-S)
		[[ "$cfg" != persistent && "$cfg" != pqdedup-persistent ]] && args+=(-C)
	fi
	args+=("$db")
	log="$OUT/logs/r${round}-${script}-c${clients}-${transport}-${cfg}.log"
	if [[ "$cfg" == pqdedup* ]]; then
		if [[ $HAVE_PQD -eq 0 ]]; then
			echo "$round,$script,$clients,$transport,$cfg,,,,,,,,,n/a,not built" >>"$RAW"
			return 0
		fi
		read -r -a envs <<<"$(cfg_env "$cfg")"
		cmd=(env "${envs[@]}" "$PQD" -- pgbench "${args[@]}")
	else
		cmd=(pgbench "${args[@]}")
	fi
	s0="$(sessions)"
	local t0=$EPOCHREALTIME
	set +e
	"${cmd[@]}" >"$log" 2>&1
	rc=$?
	set -e
	local wall
	wall="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
	s1="$(sessions)"
	tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log" | head -1)"
	lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$log" | head -1)"
	txn="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log" | head -1)"
	failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log" | head -1)"
	status=ok
	if [[ $rc -ne 0 || -z "$tps" ]]; then
		status="rc$rc"
		note="$(grep -m1 -iE 'error|fatal|abort' "$log" | tr ',\n' '; ' | cut -c1-200)"
	fi
	local pst="" pc="" po="" pr=""
	if [[ "$cfg" == pqdedup* ]]; then
		pst="$(grep -o 'stats connects=.*' "$log" | tail -1 || true)"
		pc="$(stat_field "$pst" connects)"; po="$(stat_field "$pst" opened)"; pr="$(stat_field "$pst" reused)"
		[[ -n "$pst" ]] || note="${note:+$note | }no PQDEDUP_STATS line"
		# Anything else pqdedup said (warnings, errors) goes into the note.
		note="${note:+$note | }$(grep 'pqdedup\[' "$log" | grep -v ': stats connects=' | sort | uniq -c |
			head -3 | sed 's/^ *//' | tr ',\n' '; ' | cut -c1-300 || true)"
		note="${note% | }"
	fi
	echo "$round,$script,$clients,$transport,$cfg,$tps,$lat,${txn:-0},${failed:-0},$((s1 - s0)),$pc,$po,$pr,$status,$note" >>"$RAW"
	printf '[bench] r%s %-6s c%s %-4s %-16s tps=%-10s lat=%-8s backends=%s %s %ss %s\n' "$round" "$script" \
		"$clients" "$transport" "$cfg" "${tps:-?}" "${lat:-?}" "$((s1 - s0))" "$status" "$wall" \
		"${pst:+(pqdedup $pst)}" >&2
}

# Prints the value of counter $2 in a pqdedup stats line $1 (empty if absent).
stat_field() { sed -n "s/.* $2=\([0-9]*\).*/\1/p" <<<" $1"; }

# Resets table growth between cells, outside the timed runs (pgbench runs with -n).
vacuum_tables() {
	psql -X -q -h "$PGSOCK" -p "$PGP" -d bench -c "VACUUM pgbench_branches, pgbench_tellers" \
		-c "TRUNCATE pgbench_history" >/dev/null
}

CONFIGS=(persistent pqdedup-persistent persistent-reset direct pqdedup pqdedup-noreset pgb-session pgb-tx pqdedup-dirty)
# The reference for the default reset: persistent connections that also run the reset
# statement after every transaction, i.e. the server work of a full reset per reuse with
# no connection handling at all. pgbench prints its built-in scripts on stderr.
for script in select tpcb; do
	{ pgbench --show-script="$([[ $script == select ]] && echo select-only || echo tpcb-like)" 2>&1 |
		grep -v '^--'; echo 'DISCARD ALL;'; } >"$WORK/$script-discard.sql"
done
RAW="$OUT/raw.csv"
mkdir -p "$OUT/logs"
echo "round,script,clients,transport,config,tps,latency_ms,transactions,failed,backends_opened,pqd_connects,pqd_opened,pqd_reused,status,note" >"$RAW"

# --- leak run (first: nothing else holds server slots yet) ----------------------------
# Prints the leak program's lines for one way of connecting; never fails.
leak_run() {
	local name="$1" work="$2"; shift 2
	local obs="host=$PGSOCK port=$PGP dbname=postgres"
	echo "== $name"
	set +e
	"$@" "$WORK/leaky" "$work" "$obs" "$LEAK_UNITS" 50 2>&1 | sed 's/^/   /'
	set -e
	wait_backends_gone
}
# Waits (up to 10 s) until the server has no backends left from a finished bench program.
wait_backends_gone() {
	local i
	for i in $(seq 1 100); do
		[[ "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pqdedup-bench-%'
			AND usename <> 'bouncer'")" == 0 ]] && return 0
		sleep 0.1
	done
	log "warning: backends of an earlier bench program are still there"
}
LEAK="$OUT/leak.txt"
{
	leak_run "plain libpq, direct" "host=$PGSOCK port=$PGP dbname=bench" env
	if [[ $HAVE_PQD -eq 1 ]]; then
		leak_run "under pqdedup (defaults)" "host=$PGSOCK port=$PGP dbname=bench" \
			env PQDEDUP_STATS=1 "$PQD" --
	fi
	leak_run "plain libpq through PgBouncer transaction mode" "host=$BSOCK port=$BP dbname=tx_unix" env
} >"$LEAK"
log "leak run done"

# --- cycle microbenchmark and memory per connection -----------------------------------
MICRO="$OUT/micro.txt"
micro() {
	local name="$1"; shift
	echo "== $name"
	set +e
	"$@" 2>&1 | sed 's/^/   /'
	set -e
	wait_backends_gone
}
{
	ci_unix="host=$PGSOCK port=$PGP dbname=bench"
	micro "connect+finish, plain libpq direct (unix)" env "$WORK/cycle" cycle "$ci_unix" 300 20 3
	micro "connect+finish, plain libpq to PgBouncer tx (unix)" \
		env "$WORK/cycle" cycle "host=$BSOCK port=$BP dbname=tx_unix" 5000 200 3
	if [[ $HAVE_PQD -eq 1 ]]; then
		micro "connect+finish, pqdedup PQDEDUP_RESET_QUERY= (no round trip)" \
			env PQDEDUP_STATS=1 PQDEDUP_RESET_QUERY= "$PQD" -- "$WORK/cycle" cycle "$ci_unix" \
			"$CYCLE_ITER" 2000 "$CYCLE_BUDGET"
		micro "connect+finish, pqdedup defaults (reset query each cycle)" \
			env PQDEDUP_STATS=1 "$PQD" -- "$WORK/cycle" cycle "$ci_unix" 5000 200 3
	fi
	micro "memory: plain libpq, K connections held open, then finished" \
		env "$WORK/cycle" mem "$ci_unix" "$ci_unix dbname=postgres" "$MEM_K"
	if [[ $HAVE_PQD -eq 1 ]]; then
		micro "memory: pqdedup, K connections held open, then finished (kept)" \
			env PQDEDUP_STATS=1 "$PQD" -- "$WORK/cycle" mem "$ci_unix" "$ci_unix dbname=postgres" "$MEM_K"
	fi
} >"$MICRO"
log "microbenchmarks done"

# Prints "field" from the first "mem" line after the header matching $1 in micro.txt.
mem_field() {
	awk -v h="$1" -v f="$2" 'index($0, h) { on = 1 } on && /mem k=/ {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) { print kv[2]; exit } } }' "$MICRO"
}
MEMSUM="$OUT/memory.txt"
{
	pk="$(mem_field 'memory: plain' k)"
	if [[ -n "$pk" ]]; then
		p_held=$(( ($(mem_field 'memory: plain' heap_held) - $(mem_field 'memory: plain' heap_base)) / pk ))
		p_after=$(( ($(mem_field 'memory: plain' heap_after_finish) - $(mem_field 'memory: plain' heap_base)) ))
		echo "plain libpq: $p_held heap bytes per open connection (K=$pk); after PQfinish of all: $p_after bytes above base"
	fi
	qk="$(mem_field 'memory: pqdedup' backends_after_finish)"
	if [[ -n "$qk" && -n "${p_held:-}" ]]; then
		q_held=$(( ($(mem_field 'memory: pqdedup' heap_held) - $(mem_field 'memory: pqdedup' heap_base)) / pk ))
		if [[ "$qk" -gt 0 ]]; then
			q_kept=$(( ($(mem_field 'memory: pqdedup' heap_after_finish) - $(mem_field 'memory: pqdedup' heap_base)) / qk ))
			echo "pqdedup: $q_held heap bytes per open (handed-out) connection; $q_kept per kept connection ($qk of $pk kept)"
			echo "pqdedup adds: $((q_held - p_held)) bytes per handed-out connection, $((q_kept - p_held)) per kept connection (vs a plain open one)"
		else
			echo "pqdedup: $q_held heap bytes per open connection; it kept none of the $pk after PQfinish"
		fi
	fi
} >"$MEMSUM" 2>&1 || true

# --- pgbench matrix (after the leak run and memory test, which need free server slots) ---
if [[ $ONLY_MICRO -eq 0 ]]; then
	log "pgbench matrix: $ROUNDS round(s), ${DURATION}s per cell, ${#CONFIGS[@]} configurations x 8 cells"
	for round in $(seq 1 "$ROUNDS"); do
		for script in select tpcb; do
			for clients in 1 8; do
				for transport in unix tcp; do
					vacuum_tables
					# Rotate the order each round and cell so no configuration always runs first.
					off=$(((round + clients + ${#transport}) % ${#CONFIGS[@]}))
					for k in $(seq 0 $((${#CONFIGS[@]} - 1))); do
						run_cell "$round" "$script" "$clients" "$transport" \
							"${CONFIGS[$(((k + off) % ${#CONFIGS[@]}))]}"
					done
				done
			done
		done
	done
fi

# --- summary ----------------------------------------------------------------------------
# PQDEDUP_RESET=dirty is a mode the library may not have yet: if the library does not
# even contain the name, or pqdedup warned about it, the row says it ran as the defaults.
DIRTY_LABEL="-C pqdedup RESET=dirty"
if [[ $HAVE_PQD -eq 1 ]]; then
	if ! LC_ALL=C grep -qaP 'PQDEDUP_RESET\x00' "$BUILD/libpqdedup.so" ||
		grep -qiE 'PQDEDUP_RESET([^_]|$).*(unknown|ignor|invalid)' "$OUT"/logs/*pqdedup-dirty.log 2>/dev/null; then
		DIRTY_LABEL="-C pqdedup dirty (unknown)"
	fi
fi
TEXT="$OUT/table.txt"
awk -F, -v out=text -v dirty_label="$DIRTY_LABEL" -f "$BENCH/summarize.awk" "$RAW" >"$TEXT"
awk -F, -v out=md -v dirty_label="$DIRTY_LABEL" -f "$BENCH/summarize.awk" "$RAW" >"$OUT/table.md"
awk -F, -v out=dat -v dirty_label="$DIRTY_LABEL" -f "$BENCH/summarize.awk" "$RAW" >"$OUT/ratio.dat"

if [[ $ONLY_MICRO -eq 0 ]]; then
	gnuplot >"$WORK/gnuplot.log" 2>&1 <<-EOF || log "warning: gnuplot failed (see results/gnuplot.log)"
		set terminal pngcairo size 1400,700 font ",10"
		set output "$OUT/tps_ratio.png"
		set title "pgbench TPS relative to persistent connections (median of $ROUNDS x ${DURATION}s; log scale)"
		set style data histogram
		set style histogram clustered gap 1
		set style fill solid 0.85 border -1
		set boxwidth 0.9
		set logscale y
		set yrange [0.002:3]
		set ytics ("0.002" 0.002, "0.005" 0.005, "0.01" 0.01, "0.02" 0.02, "0.05" 0.05, "0.1" 0.1, \
			"0.2" 0.2, "0.5" 0.5, "1" 1, "2" 2)
		set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 linewidth 2 front
		set grid ytics
		set ylabel "TPS / TPS persistent"
		set key outside right top
		set datafile missing "NaN"
		set xtics rotate by -20
		plot for [i=2:${#CONFIGS[@]}] "$OUT/ratio.dat" using i:xtic(1) title columnheader(i)
	EOF
fi

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MEMT="$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
{
	echo "# pqdedup benchmark, $STAMP"
	echo
	echo "- machine: $(nproc) cores, $CPU, $MEMT RAM; load average before the run: $LOAD_BEFORE"
	echo "- mode: $MODE, $ROUNDS round(s) of ${DURATION}s per cell, interleaved (configuration order rotates)"
	echo "- PostgreSQL $(psql_q 'SHOW server_version'), max_connections=100, synchronous_commit=off, trust auth; $(pgbouncer -V | head -1); pgbench scale 1, -n (tables vacuumed between cells)"
	echo "- pqdedup: $([[ $HAVE_PQD -eq 1 ]] && echo "$PQD (checkout at git $GITREV when the run began; a --build dir may hold another build)" || echo 'not built: rows n/a')"
	echo "- 8 clients use -j 2. 'backends opened' = rise of pg_stat_database.sessions for the bench database during the run."
	echo
	echo "![TPS ratio to persistent](tps_ratio.png)"
	echo
	cat "$OUT/table.md"
	echo
	echo "## Leak run: PQconnectdb + SELECT 1 per unit, never PQfinish ($LEAK_UNITS units)"
	echo
	echo '```'
	cat "$LEAK"
	echo '```'
	echo
	echo "## Connect+finish cycle and memory per connection"
	echo
	echo "The cycle is PQconnectdb + PQfinish with no query, timed per cycle with CLOCK_MONOTONIC after"
	echo "a warm-up; a run stops early at its time budget. Memory: the program opens one observer"
	echo "connection (which also warms libpq up), reads mallinfo2() (arena + mmapped bytes in use)"
	echo "and RSS, opens K connections with distinct application_names and holds them, reads again,"
	echo "PQfinishes all and reads again. Plain libpq's 'held' figure is the cost of an open PGconn;"
	echo "under pqdedup the connections are kept after PQfinish, so 'after finish' minus base,"
	echo "divided by the backends still alive, is the cost of a kept one. K is below max_connections."
	echo
	echo '```'
	cat "$MICRO"
	echo
	cat "$MEMSUM"
	echo '```'
	echo
	echo "## Notes from the runs"
	echo
	awk -F, 'NR > 1 && ($14 != "ok" || $15 != "") { print "- r" $1 " " $2 " c" $3 " " $4 " " $5 ": " $14 " " $15; n++ }
		END { if (!n) print "None: every run exited 0 and pqdedup printed nothing but its stats line." }' "$RAW" | head -80
	echo
	echo "Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/results.md"

echo
echo "pqdedup benchmark $STAMP ($MODE: $ROUNDS x ${DURATION}s per cell) -> $OUT"
[[ $ONLY_MICRO -eq 1 ]] || cat "$TEXT"
echo
echo "leak run ($LEAK_UNITS units):"
grep -E '^==|result|sample' "$LEAK" | grep -E '^==|result|unit=(0|100|300) '
echo
cat "$MICRO" | grep -E '^==|cycle iter|mem k'
cat "$MEMSUM"

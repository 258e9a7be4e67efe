#!/usr/bin/env bash
# Two variants of pqdedup side by side, interleaved in one run on a throwaway PostgreSQL 15: PQDEDUP_LIVE_STATS on and off, or (--versus) this build against another.
#
# Cells: cycle (bench/cycle.c: median ns per PQconnectdb+PQfinish, no reset query), calls (ns
# per libpq call on an open handle: PQbackendPID), pgbench -C -S with 1 and 8 clients; with
# --versus also pgbench -S on persistent connections (no -C) with 1 and 8 clients, under each
# build, and plain libpq's as the reference.
# Usage: bench/stats.sh [--build DIR] [--versus DIR] [--rounds N] [--duration S] [--iterations N]
#   --build DIR       where libpqdedup.so and pqdedup are (default build/; built if missing)
#   --versus DIR      compare --build ("new") with the pqdedup built in DIR ("old"), both with
#                     their default settings, instead of live stats on and off
#   --rounds N        rounds; each runs every cell in both variants, the order alternating (5)
#   --duration S      seconds per pgbench run (5)
#   --iterations N    timed connect+finish cycles per cycle run (50000)
# Prints one line per run and a table of medians with the ratio of the two. Run as root (the
# server runs as the postgres user, tests/harness/pg-up.sh). Needs postgresql-15, pgbench, cc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build"
ROUNDS=5
DURATION=5
ITER=50000
VERSUS=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--build) BUILD="${2:?}"; shift ;;
	--versus) VERSUS="${2:?}"; shift ;;
	--rounds) ROUNDS="${2:?}"; shift ;;
	--duration) DURATION="${2:?}"; shift ;;
	--iterations) ITER="${2:?}"; shift ;;
	-h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "stats.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ "$BUILD" == /* ]] || BUILD="$PWD/$BUILD"
log() { printf '[stats-bench] %s\n' "$*" >&2; }

"$ROOT/scripts/ensure-packages.sh" postgresql-15 postgresql-client-15 libpq-dev uthash-dev libxxhash-dev cmake gcc pkg-config
if [[ ! -x "$BUILD/pqdedup" || ! -f "$BUILD/libpqdedup.so" ]]; then
	log "building pqdedup into $BUILD"
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	cmake --build "$BUILD" -j "$(nproc)" >/dev/null
fi
PQD="$BUILD/pqdedup"

WORK=$(mktemp -d /tmp/pqd-sbench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
	"$ROOT/tests/harness/pg-down.sh" "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/tests/harness/pg-up.sh" "$WORK/pg" >"$WORK/pg-up.log" 2>&1 || { cat "$WORK/pg-up.log" >&2; exit 1; }
# shellcheck source=/dev/null
. "$WORK/pg/env.sh"
pgbench -i -s 1 -q postgres >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; exit 1; }
# shellcheck disable=SC2046  # pkg-config's flags are words
cc -O2 $(pkg-config --cflags libpq) "$ROOT/bench/cycle.c" -o "$WORK/cycle" $(pkg-config --libs libpq)
mkdir -p "$WORK/stats" && chmod 0700 "$WORK/stats"

MODES=(on off)
HEADINGS=("live stats on" "live stats off")
CELLS=(cycle calls pgbench-c1 pgbench-c8)
if [[ -n $VERSUS ]]; then
	[[ -x "$VERSUS/pqdedup" ]] || { echo "stats.sh: no pqdedup in $VERSUS" >&2; exit 2; }
	MODES=(new old)
	HEADINGS=("this build" "$(basename "$VERSUS")")
	CELLS+=(persistent-c1 persistent-c8)
fi

# run_one MODE(on|off|new|old) CELL: prints the cell's number (cycle: median ns; pgbench: tps).
run_one() {
	local mode=$1 cell=$2 live=1 out PQD=$PQD
	[[ $mode == off ]] && live=0
	[[ $mode == old ]] && PQD=$VERSUS/pqdedup
	local env=(env "PQDEDUP_LIVE_STATS=$live" "PQDEDUP_STATS_DIR=$WORK/stats")
	case $cell in
	cycle)
		# No reset query: the cycle is then pqdedup's own work only (no round trip).
		out=$("${env[@]}" PQDEDUP_RESET_QUERY= "$PQD" -- "$WORK/cycle" cycle "" "$ITER" 2000 30)
		sed -n 's/.* median_ns=\([0-9]*\).*/\1/p' <<<"$out" ;;
	calls)
		out=$("${env[@]}" "$PQD" -- "$WORK/cycle" calls "" 5000000)
		sed -n 's/.* ns_per_call=\([0-9.]*\).*/\1/p' <<<"$out" ;;
	pgbench-c1)
		out=$("${env[@]}" "$PQD" -- pgbench -n -C -S -T "$DURATION" -c 1 postgres 2>&1)
		sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" ;;
	pgbench-c8)
		out=$("${env[@]}" "$PQD" -- pgbench -n -C -S -T "$DURATION" -c 8 -j 2 postgres 2>&1)
		sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" ;;
	persistent-c1 | persistent-c8 | plain-c1 | plain-c8)
		local clients=${cell##*-c} run=("${env[@]}" "$PQD" --)
		[[ $cell == plain-* ]] && run=()
		out=$("${run[@]}" pgbench -n -S -T "$DURATION" -c "$clients" -j "$((clients > 1 ? 2 : 1))" postgres 2>&1)
		sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" ;;
	esac
}

RAW="$WORK/raw"
: >"$RAW"
# One untimed run of each cell first: the first runs after the server starts are slower.
for cell in "${CELLS[@]}"; do
	run_one "${MODES[0]}" "$cell" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
	for cell in "${CELLS[@]}"; do
		order=("${MODES[0]}" "${MODES[1]}")
		((round % 2 == 0)) && order=("${MODES[1]}" "${MODES[0]}")
		for mode in "${order[@]}"; do
			value=$(run_one "$mode" "$cell")
			echo "$cell $mode $value" >>"$RAW"
			log "round $round $cell $mode: $value"
		done
		if [[ $cell == persistent-* ]]; then # plain libpq's, the reference for both
			value=$(run_one plain "plain-${cell#persistent-}")
			echo "plain-${cell#persistent-} ${MODES[0]} $value" >>"$RAW"
			echo "plain-${cell#persistent-} ${MODES[1]} $value" >>"$RAW"
			log "round $round plain-${cell#persistent-}: $value"
		fi
	done
done
[[ -n $VERSUS ]] && CELLS+=(plain-c1 plain-c8)

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $ROUNDS rounds, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %14s %14s %10s\n' cell "${HEADINGS[0]}" "${HEADINGS[1]}" "${MODES[0]}/${MODES[1]}"
for cell in "${CELLS[@]}"; do
	on=$(awk -v c="$cell" -v m="${MODES[0]}" '$1 == c && $2 == m { print $3 }' "$RAW" | median)
	off=$(awk -v c="$cell" -v m="${MODES[1]}" '$1 == c && $2 == m { print $3 }' "$RAW" | median)
	unit=tps
	[[ $cell == cycle || $cell == calls ]] && unit="ns"
	printf '%-14s %10.1f %-3s %10.1f %-3s %10s\n' "$cell" "$on" "$unit" "$off" "$unit" \
		"$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')"
done
echo "(cycle: median ns per PQconnectdb+PQfinish without a reset query; calls: ns per PQbackendPID call, best of 5;"
echo " both lower is better; pgbench -C -S: tps, higher is better)"
[[ -z $VERSUS ]] || echo "(persistent-cN: pgbench -S without -C under each build; plain-cN: the same with plain libpq, one run per round, in both columns)"

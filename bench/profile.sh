#!/usr/bin/env bash
# profile.sh: where the CPU time of a pgbench transaction goes (server, client, pqdedup's own code), per configuration, measured with perf.
#
# Usage: sudo bench/profile.sh [--clients N] [--seconds S] [--build DIR] [--tpcb]
#   --clients N   pgbench clients (default 8, run with -j 2; 1 client runs with -j 1)
#   --seconds S   sampling time per configuration (default 5)
#   --build DIR   where libpqdedup.so and pqdedup are (default build/; built there if missing)
#   --tpcb        the TPC-B-like script instead of -S
# Starts its own throwaway PostgreSQL 15 (tests/harness/pg-up.sh), runs each configuration for
# S+4 seconds and samples every CPU (perf record -a) for S seconds in the middle. Prints, per
# transaction, the CPU microseconds spent in postgres processes, in pgbench (its kernel time
# included: the socket calls), in libpqdedup.so's own code, and idle; perf files stay in the
# results folder for `perf report -i`. Like bench/run.sh, a benchmark: nothing is asserted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLIENTS=8
SECONDS_PER=5
BUILD="$ROOT/build"
SCRIPT=select

die() { echo "profile: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
	case "$1" in
	--clients) CLIENTS="${2:?}"; shift ;;
	--seconds) SECONDS_PER="${2:?}"; shift ;;
	--build) BUILD="${2:?}"; shift ;;
	--tpcb) SCRIPT=tpcb ;;
	-h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option: $1 (see --help)" ;;
	esac
	shift
done
[[ $EUID -eq 0 ]] || die "run as root (perf samples every process; the server runs as postgres)"
[[ "$BUILD" == /* ]] || BUILD="$PWD/$BUILD"

"$ROOT/scripts/ensure-packages.sh" postgresql-15 postgresql-client-15 linux-perf libpq-dev \
	uthash-dev libxxhash-dev cmake gcc pkg-config >&2
if [[ ! -x "$BUILD/pqdedup" ]]; then
	{ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$BUILD"; } >&2
fi
[[ -x "$BUILD/pqdedup" && -f "$BUILD/libpqdedup.so" ]] || die "no pqdedup in $BUILD"

OUT="$ROOT/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
SERVER="$(mktemp -d /tmp/pqdedup-profile.XXXXXX)"
trap 'bash "$ROOT/tests/harness/pg-down.sh" "$SERVER" >/dev/null 2>&1 || true' EXIT
bash "$ROOT/tests/harness/pg-up.sh" "$SERVER" >"$OUT/server-start.log" 2>&1 ||
	{ cat "$OUT/server-start.log" >&2; die "the server did not start"; }
# shellcheck disable=SC1091
. "$SERVER/env.sh"
pgbench -i -s 1 -q >"$OUT/pgbench-init.log" 2>&1 || die "pgbench -i failed (see $OUT)"
perf record -q -o "$OUT/check.data" -- true >/dev/null 2>&1 ||
	die "perf cannot sample here (a container without perf events?)"

# The reference: persistent connections that also run the reset after every transaction.
pgbench --show-script="$([[ $SCRIPT == select ]] && echo select-only || echo tpcb-like)" 2>&1 |
	grep -v '^--' >"$OUT/builtin.sql"
{ cat "$OUT/builtin.sql"; echo 'DISCARD ALL;'; } >"$OUT/script.sql"
# What an extra statement costs: as its own round trip (any statement: SELECT 1 costs what
# DISCARD ALL costs), and sent in the same round trip as the transaction's own (a pipeline of
# two statements and one Sync, against a pipeline of the statement alone). -S only.
{ cat "$OUT/builtin.sql"; echo 'SELECT 1;'; } >"$OUT/select1.sql"
sed -n '/^\\set/p' "$OUT/builtin.sql" >"$OUT/pipe-alone.sql"
cp "$OUT/pipe-alone.sql" "$OUT/pipe-two.sql"
{ echo '\startpipeline'; sed '/^\\set/d' "$OUT/builtin.sql"; echo '\endpipeline'; } >>"$OUT/pipe-alone.sql"
{ echo '\startpipeline'; echo 'SELECT 1;'; sed '/^\\set/d' "$OUT/builtin.sql"; echo '\endpipeline'; } >>"$OUT/pipe-two.sql"

JOBS=$((CLIENTS > 1 ? 2 : 1))
NCPU="$(nproc)"
BASE=(pgbench -n -c "$CLIENTS" -j "$JOBS" -T $((SECONDS_PER + 4)))
[[ $SCRIPT == select ]] && PGB_SCRIPT=(-S) || PGB_SCRIPT=()

# Runs configuration $1 with command $2..., samples the middle of it, prints one table row.
profile_one() {
	local name="$1"; shift
	local data="$OUT/$name.data" log="$OUT/$name.log"
	"$@" >"$log" 2>&1 &
	local pid=$!
	sleep 2
	perf record -q -a -g -o "$data" -- sleep "$SECONDS_PER" >/dev/null 2>&1
	wait "$pid" || true
	local tps
	tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log" | head -1)"
	[[ -n "$tps" ]] || { printf '%-34s failed (see %s)\n' "$name" "$log"; return 0; }
	# Shares of all samples by command, and libpqdedup.so's own share inside pgbench.
	perf report -i "$data" --no-children --sort comm,dso -g none --stdio 2>/dev/null |
		awk -v tps="$tps" -v ncpu="$NCPU" -v name="$name" '
			/^#/ || NF < 3 { next }
			{ pct = $1; sub(/%/, "", pct); comm[$2] += pct; if ($3 == "libpqdedup.so") own += pct }
			END {
				us = 1e6 * ncpu / tps / 100
				printf "%-34s %9.0f %10.1f %10.1f %10.2f %8.1f\n", name, tps,
					comm["postgres"] * us, comm["pgbench"] * us, own * us, comm["swapper"] * us
			}'
}

echo "pgbench $([[ $SCRIPT == select ]] && echo -S || echo TPC-B), $CLIENTS clients, $NCPU CPUs, ${SECONDS_PER}s sampled per row; CPU microseconds per transaction:"
printf '%-34s %9s %10s %10s %10s %8s\n' configuration tps server client "pqdedup" idle
profile_one persistent "${BASE[@]}" "${PGB_SCRIPT[@]}"
profile_one persistent+discard-all "${BASE[@]}" -f "$OUT/script.sql"
if [[ $SCRIPT == select ]]; then
	profile_one persistent+select-1 "${BASE[@]}" -f "$OUT/select1.sql"
	profile_one persistent-pipelined-alone "${BASE[@]}" -M extended -f "$OUT/pipe-alone.sql"
	profile_one persistent-pipelined+select-1 "${BASE[@]}" -M extended -f "$OUT/pipe-two.sql"
fi
profile_one pqdedup-defaults "$BUILD/pqdedup" -- "${BASE[@]}" -C "${PGB_SCRIPT[@]}"
profile_one pqdedup-reset-off env PQDEDUP_RESET_QUERY= "$BUILD/pqdedup" -- "${BASE[@]}" -C "${PGB_SCRIPT[@]}"
profile_one pqdedup-dirty env PQDEDUP_RESET=dirty "$BUILD/pqdedup" -- "${BASE[@]}" -C "${PGB_SCRIPT[@]}"
echo "(persistent+select-1: one more statement per transaction as its own round trip, which is what"
echo " a reset at each reuse is; persistent-pipelined+select-1: the same statement sent in the"
echo " transaction's own round trip, against persistent-pipelined-alone; -S only.)"
echo "(client: pgbench's user and kernel time, pqdedup's included; pqdedup: libpqdedup.so's own"
echo " code only. Perf files: $OUT; e.g. perf report -i $OUT/pqdedup-defaults.data --comm pgbench)"

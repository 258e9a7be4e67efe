#!/usr/bin/env bash
# test_package_install.sh: builds the Debian package, installs it on this machine with dpkg -i, runs leaky and churning programs with the installed /usr/bin/pqdedup against the test server (reuse and containment seen on the server), reads `man pqdedup`, then removes and purges it and checks the machine is as it was.
#
# Run by ctest (tests/package.cmake, plain builds only) with PQD_TEST_SOURCE_DIR,
# PQD_TEST_FLEET_WORKER (tests/fleet/fleet_worker.c, a plain libpq program) and the harness's
# env.sh variables; LD_PRELOAD is unset. Needs root (dpkg -i). Skipped (exit 77, saying why)
# when not root, or when a pqdedup package is already known to dpkg, or when a file the
# package would install already exists: installing over something this test did not put
# there, and removing it afterwards, would not leave the machine as it was. Whatever
# happens, the package is purged again on exit if this test installed it.
set -euo pipefail

SRC=${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}
ROOT=$(cd "$SRC/.." && pwd -P)
W=${PQD_TEST_FLEET_WORKER:?PQD_TEST_FLEET_WORKER is not set}
: "${PGHOST:?source the env.sh written by tests/harness/pg-up.sh}"
PSQL=$(dirname "${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}")/psql

# shellcheck source=tests/checks.sh
. "$SRC/checks.sh"

say() { echo "test_package_install: $*"; }

if [[ $(id -u) -ne 0 ]]; then
  say "skipped: dpkg -i needs root"
  exit 77
fi
status=$(dpkg-query -W -f='${db:Status-Abbrev}' pqdedup 2>/dev/null || true)
if [[ -n ${status// /} && $status != "un "* ]]; then
  say "skipped: a pqdedup package is already known to dpkg (status '$status', $(dpkg-query -W -f='${Version}' pqdedup 2>/dev/null)); this test installs and removes its own and will not touch that one (remove it with: dpkg --purge pqdedup)"
  exit 77
fi
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

T=$(mktemp -d /tmp/pqd-pkginst-XXXXXX)
chmod 755 "$T"
installed=0

# dpkg_retry ARGS...: dpkg ARGS, retried for up to 120 s while another dpkg or apt holds
# its lock (another session may be installing packages). Prints dpkg's output.
dpkg_retry() {
  local deadline=$((SECONDS + 120)) out rc
  while :; do
    rc=0
    out=$(dpkg "$@" 2>&1) || rc=$?
    if [[ $rc -ne 0 ]] && grep -qi 'lock' <<<"$out" && ((SECONDS < deadline)); then
      sleep 1
      continue
    fi
    printf '%s\n' "$out"
    return "$rc"
  done
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [[ $installed -eq 1 ]]; then
    say "purging the package this test installed"
    dpkg_retry --purge pqdedup >"$T/purge-on-exit.log" 2>&1 || { say "WARNING: dpkg --purge pqdedup failed:"; cat "$T/purge-on-exit.log"; rc=1; }
  fi
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build ------------------------------------------------------------------------------
version=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
start=$SECONDS
if "$ROOT/scripts/build-deb.sh" --no-lintian --out "$T/deb" >"$T/build.log" 2>&1; then
  pass
else
  fail "scripts/build-deb.sh: $(tail -n 40 "$T/build.log")"
  checks_done test_package_install
  exit 1
fi
say "built in $((SECONDS - start)) s (lintian: the package_deb test)"
deb=$T/deb/pqdedup_${version}_$(dpkg --print-architecture).deb
[[ -f $deb ]] && pass || fail "the package is $deb"

# What the package would install, and what of it is here already (parent directories such as
# /usr/bin are; nothing of its own may be).
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|; s|/$||' | grep -v '^$' >"$T/paths"
while read -r p; do
  if [[ -e $p || -L $p ]]; then
    echo "$p"
  fi
done <"$T/paths" >"$T/existing"
clash=$(while read -r p; do [[ -d $p && ! -L $p ]] || echo "$p"; done <"$T/existing"; true)
if [[ -n $clash ]]; then
  say "skipped: files the package would install are already on this machine, put there by something else (a source install?); not overwriting them: $(tr '\n' ' ' <<<"$clash")"
  exit 77
fi

# --- Install ----------------------------------------------------------------------------
installed=1 # from here on, the trap purges (a failed dpkg -i can leave it half-installed)
if dpkg_retry -i "$deb" >"$T/install.log" 2>&1; then pass; else fail "dpkg -i: $(cat "$T/install.log")"; fi
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' pqdedup 2>/dev/null) == "ii "* ]] && pass || fail "dpkg says pqdedup is installed"
dpkg -L pqdedup >"$T/listed" 2>/dev/null || true
[[ -s $T/listed ]] && pass || fail "dpkg -L pqdedup lists its files"
[[ $(command -v pqdedup) == /usr/bin/pqdedup ]] && pass || fail "pqdedup on PATH is /usr/bin/pqdedup: $(command -v pqdedup || true)"
out=$(/usr/bin/pqdedup --version 2>&1) || true
[[ $out == "pqdedup $version" ]] && pass || fail "/usr/bin/pqdedup --version: $out"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
lib=/usr/lib/$multiarch/pqdedup/libpqdedup.so
out=$(/usr/bin/pqdedup --check "$PSQL" 2>&1) || true
grep -qE "^library: +$lib\$" <<<"$out" && pass || fail "the installed --check names $lib: $out"

# --- The installed launcher at work, seen from the server ------------------------------
# The programs log in as pqd_bob (a password role of the harness), so the observer counts
# exactly their backends.
export PGPASSWORD=bob_pw
app=pqdt_pkg_$$
work="host=$PGHOST port=$PGPORT dbname=postgres user=pqd_bob application_name=$app"
observer="host=$PGHOST port=$PGPORT dbname=postgres user=postgres application_name=pqd_observer"
psql_obs() { PGPASSWORD='' "$PSQL" -X -qtA -v ON_ERROR_STOP=1 "$observer" -c "$1"; }
max_conn=$(psql_obs 'SHOW max_connections')
reserved=$(psql_obs 'SHOW superuser_reserved_connections')
slots=$((max_conn - reserved))
leaks=$((2 * max_conn))

# field NAME LINE: the value of NAME=N in LINE.
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $2"; }

# wait_gone: until no backend of pqd_bob remains (they exit a moment after their client);
# false after 10 s.
wait_gone() {
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    [[ $(psql_obs "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pqd_bob'") == 0 ]] && return 0
    sleep 0.05
  done
  return 1
}

# observed CMD...: runs CMD (a fleet_worker work) while the observer counts pqd_bob's
# backends; prints the worker's line, then the observer's.
observed() {
  rm -f "$T/ready" "$T/stop"
  env PGPASSWORD='' "$W" observe -u pqd_bob -r "$T/ready" -f "$T/stop" -s 120 "$observer" >"$T/observer.out" 2>&1 &
  local obs=$! deadline=$((SECONDS + 10))
  while [[ ! -e $T/ready ]] && kill -0 "$obs" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.02; done
  "$@" 2>&1 || true
  : >"$T/stop"
  wait "$obs" || true
  cat "$T/observer.out"
}

# Churn: connect, query, finish. Plain libpq: a backend per connect; under the installed
# launcher: the server sees one or two.
wait_gone || true
out=$(observed "$W" work -n 20 "$work")
[[ $(field errors "$out") == 0 && $(field backends "$out") == 20 ]] && pass || fail "plain libpq: 20 connects, 20 server backends: $out"
wait_gone || true
out=$(observed /usr/bin/pqdedup --stats -- "$W" work -n 200 "$work")
say "churn under /usr/bin/pqdedup: $(tr '\n' ' ' <<<"$out")"
[[ $(field errors "$out") == 0 && $(field ok "$out") == 200 ]] && pass || fail "installed launcher, churn: 200 connects all work: $out"
b=$(field backends "$out")
[[ -n $b && $b -ge 1 && $b -le 2 ]] && pass || fail "installed launcher, churn: the server's backend pids number 1 or 2 for 200 connects (reuse): $out"
m=$(field max "$(grep '^observe ' <<<"$out")")
[[ -n $m && $m -ge 1 && $m -le 2 ]] && pass || fail "installed launcher, churn: at most 2 backends of the program at any sample: $out"
o=$(field opened "$(grep 'stats connects=' <<<"$out")")
[[ -n $o && $o -le 2 ]] && pass || fail "installed launcher, churn: its stats line says it opened at most 2: $out"

# Leaks: 2 x max_connections connects, none ever finished. Plain libpq runs out of slots;
# under the installed launcher every one works and the server never has more than its slots.
wait_gone || true
out=$(observed "$W" work -n "$leaks" -l 1 "$work")
e=$(field errors "$out")
[[ -n $e && $e -gt 0 ]] && grep -q 'too many clients\|remaining connection slots' <<<"$out" && pass || fail "plain libpq, $leaks leaked connects: the server refuses some: $out"
wait_gone || true
out=$(observed /usr/bin/pqdedup --stats -- "$W" work -n "$leaks" -l 1 "$work")
say "leaks under /usr/bin/pqdedup: $(tr '\n' ' ' <<<"$out")"
[[ $(field errors "$out") == 0 && $(field ok "$out") == "$leaks" && $(field leaked "$out") == "$leaks" ]] && pass || fail "installed launcher, $leaks leaked connects all work: $out"
m=$(field max "$(grep '^observe ' <<<"$out")")
[[ -n $m && $m -ge 1 && $m -le $slots ]] && pass || fail "installed launcher, leaks: at most $slots backends of the program at any sample: $out"
wait_gone && pass || fail "the program's backends are gone after it exits"
unset PGPASSWORD

# --- The manual page ----------------------------------------------------------------------
[[ $(man -w pqdedup 2>/dev/null) == /usr/share/man/man1/pqdedup.1.gz ]] && pass || fail "man -w pqdedup: $(man -w pqdedup 2>&1)"
out=$(MANWIDTH=80 MANPAGER=cat man pqdedup 2>&1) || true
grep -q '^SYNOPSIS' <<<"$out" && grep -q 'PQDEDUP_MAX_PER_KEY' <<<"$out" && pass || fail "MANPAGER=cat man pqdedup renders: $(head -n 5 <<<"$out")"
out=$(MANWIDTH=80 man -P cat pqdedup 2>&1) || true
grep -q '^SYNOPSIS' <<<"$out" && pass || fail "man -P cat pqdedup renders: $(head -n 5 <<<"$out")"

# --- Remove, purge, and nothing of it left ------------------------------------------------
if dpkg_retry -r pqdedup >"$T/remove.log" 2>&1; then pass; else fail "dpkg -r pqdedup: $(cat "$T/remove.log")"; fi
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' pqdedup 2>/dev/null) != "ii "* ]] && pass || fail "dpkg -r: not installed any more"
if dpkg_retry --purge pqdedup >"$T/purge.log" 2>&1; then pass; else fail "dpkg --purge pqdedup: $(cat "$T/purge.log")"; fi
installed=0
status=$(dpkg-query -W -f='${db:Status-Abbrev}' pqdedup 2>/dev/null || true)
[[ -z ${status// /} || $status == "un "* ]] && pass || fail "after the purge dpkg knows no pqdedup (status '$status')"
# Every path dpkg listed that was not on the machine before the install is gone again.
left=$(while read -r p; do
  p=${p%/.} # dpkg -L lists the root as "/."
  [[ -n $p ]] || continue
  grep -qxF "$p" "$T/existing" && continue
  if [[ -e $p || -L $p ]]; then echo "$p"; fi
done <"$T/listed")
[[ -z $left ]] && pass || fail "nothing of the package is left: $(tr '\n' ' ' <<<"$left")"
[[ $(wc -l <"$T/listed") -ge 10 ]] && pass || fail "dpkg -L listed the package's files ($(wc -l <"$T/listed") lines)"
! command -v pqdedup >/dev/null && pass || fail "no pqdedup on PATH after the removal: $(command -v pqdedup)"
out=$(man -w pqdedup 2>&1) && fail "man pqdedup finds nothing after the removal: $out" || pass

checks_done test_package_install

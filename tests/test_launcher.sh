#!/usr/bin/env bash
# test_launcher.sh: the pqdedup launcher's command line, exit statuses, environment and a real libpq program under it.
#
# Run by ctest (tests/launcher.cmake) with PQD_TEST_LAUNCHER, PQD_TEST_SHIM and the harness's
# PG* variables; LD_PRELOAD is unset. Each check prints "FAIL: ..." when it does not hold; the
# script exits 1 if any failed. Usage: test_launcher.sh [GROUP...] (default: all groups).
set -u

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
SHIM=${PQD_TEST_SHIM:?PQD_TEST_SHIM is not set}
RT=${PQD_TEST_SANITIZER_RUNTIME:-}
CHURN=${PQD_LAUNCHER_CHURN:?PQD_LAUNCHER_CHURN (test_churn) is not set}
SRC=${PQD_TEST_SOURCE_DIR:-$(cd "$(dirname "$0")" && pwd)}
# The real psql, not Debian's perl wrapper /usr/bin/psql (perl deadlocks in newlocale under ASan).
PSQL=${PQD_TEST_PSQL:-/usr/lib/postgresql/15/bin/psql}

# shellcheck source=tests/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# Nothing of the caller's pqdedup settings leaks into these tests.
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# In sanitizer builds the library needs the sanitizer runtime loaded first: launch() puts
# the runtime in the launcher's LD_PRELOAD, and the launcher keeps leading sanitizer runtimes
# in front of the library it prepends (TSan cannot load second: "cannot allocate memory in
# static TLS block"). The script's own helpers (grep, sed, ldd) run without any preload.
unset LD_PRELOAD

# launch ARGS...: runs the launcher; LD_PRELOAD, when the caller sets it, replaces the
# default (the sanitizer runtime, or nothing).
launch() {
  if [[ -n ${LD_PRELOAD+set} ]]; then
    "$L" "$@"
  elif [[ -n $RT ]]; then
    LD_PRELOAD=$RT "$L" "$@"
  else
    "$L" "$@"
  fi
}

# What the launcher's LD_PRELOAD must start with.
LEAD="${RT:+$RT:}$SHIM"

# The command that lists the environment: env(1), or in sanitizer builds dash's `export -p`.
# (There, programs that call setlocale, like env, hang at exit in p11-kit's destructor once a
# sanitizer runtime and libpq are loaded, with or without pqdedup.)
if [[ -n $RT ]]; then
  ENVCMD=(sh -c 'export -p')
else
  ENVCMD=(env)
fi

# Rewrites $T/out from dash's "export NAME='value'" lines to env's NAME=value.
normalize_env() {
  [[ -n $RT ]] || return 0
  sed -n "s/^export \([A-Za-z_][A-Za-z0-9_]*\)='\(.*\)'\$/\1=\2/p" "$T/out" |
    sed "s/'\"'\"'/'/g" >"$T/out.n"
  mv "$T/out.n" "$T/out"
}

T=$(mktemp -d /tmp/pqd-launcher-XXXXXX)
trap 'rm -rf "$T"' EXIT

# run ARGS...: runs the launcher; sets out, err, rc.
run() {
  launch "$@" >"$T/out" 2>"$T/err"
  rc=$?
  out=$(cat "$T/out")
  err=$(cat "$T/err")
}

# run_env ARGS...: runs the launcher with ARGS -- (the environment lister); $T/out then
# holds NAME=value lines.
run_env() {
  run "$@" -- "${ENVCMD[@]}"
  normalize_env
}

# The settings the issue requires, plus every PQDEDUP_ name the library reads.
required_vars() {
  printf '%s\n' PQDEDUP_DISABLE PQDEDUP_UNBIND_AFTER PQDEDUP_MAX_PER_KEY PQDEDUP_MAX_WAIT \
    PQDEDUP_KEEP_PER_KEY PQDEDUP_IDLE_TIMEOUT PQDEDUP_MAX_LIFETIME PQDEDUP_RESET_QUERY \
    PQDEDUP_LOG PQDEDUP_LOG_FILE PQDEDUP_STATS
  # (but those of earlier versions, which src/settings.c only warns about)
  local removed
  removed=$(awk '/removed_settings\[\] = \{/,/^};/' "$SRC/../src/settings.c" | grep -o '"PQDEDUP_[A-Z_]*"' | tr -d '"')
  grep -oh '"PQDEDUP_[A-Z_]*"' "$SRC"/../src/*.c 2>/dev/null | tr -d '"' | grep -vxF "${removed:-none}"
}

# --help exits 0 on stdout and documents every PQDEDUP_ variable; --version exits 0.
group_help() {
  run --help
  [[ $rc -eq 0 ]] && pass || fail "--help exits 0 (got $rc)"
  [[ -z $err ]] && pass || fail "--help writes nothing on stderr: $err"
  grep -q 'pqdedup \[options\] \[--\] command' "$T/out" && pass || fail "--help shows the usage line"
  local v
  for v in $(required_vars | sort -u); do
    grep -qw "$v" "$T/out" && pass || fail "--help mentions $v"
  done
  run -h
  [[ $rc -eq 0 && -n $out ]] && pass || fail "-h exits 0 (got $rc)"
  run --version
  [[ $rc -eq 0 && $out == pqdedup* ]] && pass || fail "--version exits 0 and names pqdedup (rc $rc: $out)"
}

# Usage errors exit 2 with a message on stderr and run nothing.
group_usage() {
  local args
  for args in "" "--" "--stats" "--unbind-after 3s" "--stats --"; do
    # shellcheck disable=SC2086
    run $args
    [[ $rc -eq 2 ]] && pass || fail "'pqdedup $args' (no command) exits 2 (got $rc)"
    [[ -n $err ]] && pass || fail "'pqdedup $args' says why on stderr"
  done
  # (--share-after/-s went with same-pointer sharing: now unknown options.)
  for args in "--bogus true" "-Z true" "--unbind-after" "-u" "--max-wait" "--stats=1 true" \
              "--share-after 2 true" "-s 2 true"; do
    # shellcheck disable=SC2086
    run $args
    [[ $rc -eq 2 ]] && pass || fail "'pqdedup $args' (bad option) exits 2 (got $rc)"
    [[ -n $err ]] && pass || fail "'pqdedup $args' says why on stderr"
  done
  local bad
  for bad in "--unbind-after abc" "--unbind-after -1" "--unbind-after 5parsecs" "--max-per-key x"
  do
    # shellcheck disable=SC2086
    run $bad -- touch "$T/ran"
    [[ $rc -eq 2 ]] && pass || fail "'pqdedup $bad' exits 2 (got $rc)"
    grep -q -- "${bad%% *}" "$T/err" && pass || fail "'pqdedup $bad' names the option: $err"
    [[ ! -e $T/ran ]] && pass || fail "'pqdedup $bad' does not run the command"
  done
  for bad in "--max-wait -5" "--max-wait abc" "--max-wait 5parsecs" "--idle-timeout 1y" \
             "--max-lifetime -1s" "--keep-per-key many" "--log loud" "-w -5" "-u abc"; do
    # shellcheck disable=SC2086
    run $bad -- touch "$T/ran"
    [[ $rc -eq 2 ]] && pass || fail "'pqdedup $bad' exits 2 (got $rc)"
    [[ -n $err ]] && pass || fail "'pqdedup $bad' explains on stderr"
    [[ ! -e $T/ran ]] && pass || fail "'pqdedup $bad' does not run the command"
  done
}

# A command that cannot be run exits like env(1): 127 not found, 126 not executable.
group_exec_errors() {
  run /nonexistent/pqd_no_such_program
  [[ $rc -eq 127 ]] && pass || fail "missing command by path exits 127 (got $rc)"
  grep -q 'pqd_no_such_program' "$T/err" && pass || fail "missing command says so: $err"
  run pqd_no_such_program_on_path
  [[ $rc -eq 127 ]] && pass || fail "missing command on PATH exits 127 (got $rc)"
  env pqd_no_such_program_on_path 2>/dev/null
  [[ $? -eq 127 ]] && pass || fail "env agrees on 127"
  printf '#!/bin/sh\necho ran\n' >"$T/noexec"
  chmod 0644 "$T/noexec"
  run "$T/noexec"
  [[ $rc -eq 126 && -z $out ]] && pass || fail "non-executable file exits 126 (got $rc)"
  env "$T/noexec" 2>/dev/null
  [[ $? -eq 126 ]] && pass || fail "env agrees on 126"
  mkdir "$T/adir"
  run "$T/adir"
  [[ $rc -eq 126 ]] && pass || fail "a directory exits 126 (got $rc)"
}

# The launcher puts the library first in LD_PRELOAD (after a leading sanitizer runtime in
# sanitizer builds) and keeps what was there after it.
group_preload() {
  run_env
  [[ $rc -eq 0 ]] && pass || fail "pqdedup -- ${ENVCMD[*]} exits 0 (rc $rc, $err)"
  local preload
  preload=$(sed -n 's/^LD_PRELOAD=//p' "$T/out")
  [[ $preload == "$LEAD" ]] && pass || fail "LD_PRELOAD is ${RT:+the sanitizer runtime, then }the library that was built: $preload"
  local first=${preload#"${RT:+$RT:}"}
  first=${first%%:*}
  [[ $(basename "$first") == libpqdedup.so && -f $first ]] && pass || fail "the preloaded libpqdedup.so exists: $first"
  # A pre-existing LD_PRELOAD (a real library, so the loader is content) stays, after ours.
  local other
  other=$(ldd "$SHIM" | awk '/libpq\.so/ {print $3}')
  [[ -f $other ]] && pass || fail "found libpq to preload: $other"
  LD_PRELOAD="${RT:+$RT:}$other" launch -- "${ENVCMD[@]}" >"$T/out" 2>"$T/err"
  rc=$?
  normalize_env
  preload=$(sed -n 's/^LD_PRELOAD=//p' "$T/out")
  [[ $rc -eq 0 ]] && pass || fail "with LD_PRELOAD set, exit 0 (rc $rc: $(cat "$T/err"))"
  [[ $preload == "$LEAD:$other" ]] && pass || fail "library first, old LD_PRELOAD kept after it: $preload"
  LD_PRELOAD="${RT:+$RT:}$other:$other" launch -- "${ENVCMD[@]}" >"$T/out" 2>"$T/err"
  normalize_env
  preload=$(sed -n 's/^LD_PRELOAD=//p' "$T/out")
  [[ $preload == "$LEAD:$other:$other" ]] && pass || fail "two old entries kept in order: $preload"
  # An empty LD_PRELOAD does not leave a stray ':'.
  if [[ -z $RT ]]; then
    LD_PRELOAD='' launch -- env >"$T/out" 2>/dev/null
    preload=$(sed -n 's/^LD_PRELOAD=//p' "$T/out")
    [[ $preload == "$SHIM" ]] && pass || fail "empty LD_PRELOAD: just the library: $preload"
  fi
}

# Each option sets its variable, long and short forms, "--opt=value" too.
group_options() {
  run_env --unbind-after 3s --stats
  [[ $rc -eq 0 ]] && pass || fail "--unbind-after 3s --stats: exit 0"
  grep -qx 'PQDEDUP_UNBIND_AFTER=3s' "$T/out" && pass || fail "PQDEDUP_UNBIND_AFTER=3s"
  grep -qx 'PQDEDUP_STATS=1' "$T/out" && pass || fail "PQDEDUP_STATS=1"
  [[ $(grep -c '^PQDEDUP_' "$T/out") -eq 2 ]] && pass || fail "no option, no other variable"
  run_env --disable --keep-per-key 4 --idle-timeout 30s --max-lifetime 1h \
    --reset-query "SELECT 1" --max-per-key 5 --max-wait=200ms --log debug --log-file "$T/log"
  [[ $rc -eq 0 ]] && pass || fail "every long option: exit 0 (rc $rc: $err)"
  local want
  for want in PQDEDUP_DISABLE=1 PQDEDUP_KEEP_PER_KEY=4 PQDEDUP_IDLE_TIMEOUT=30s \
              PQDEDUP_MAX_LIFETIME=1h "PQDEDUP_RESET_QUERY=SELECT 1" PQDEDUP_MAX_PER_KEY=5 \
              PQDEDUP_MAX_WAIT=200ms PQDEDUP_LOG=debug "PQDEDUP_LOG_FILE=$T/log"; do
    grep -qxF "$want" "$T/out" && pass || fail "long option gives $want"
  done
  run_env -d -k 2 -i 10 -l 20min -r "" -u 7ms -m 9 -w 1s
  [[ $rc -eq 0 ]] && pass || fail "every short option: exit 0 (rc $rc: $err)"
  for want in PQDEDUP_DISABLE=1 PQDEDUP_KEEP_PER_KEY=2 PQDEDUP_IDLE_TIMEOUT=10 \
              PQDEDUP_MAX_LIFETIME=20min PQDEDUP_RESET_QUERY= PQDEDUP_UNBIND_AFTER=7ms \
              PQDEDUP_MAX_PER_KEY=9 PQDEDUP_MAX_WAIT=1s; do
    grep -qxF "$want" "$T/out" && pass || fail "short option gives $want"
  done
  # An option overrides the same variable from the environment.
  PQDEDUP_UNBIND_AFTER=1s launch --unbind-after 4s "${ENVCMD[@]}" >"$T/out" 2>/dev/null
  normalize_env
  grep -qx 'PQDEDUP_UNBIND_AFTER=4s' "$T/out" && pass || fail "option beats the environment"
  # Options stop at the command: what follows is the command's.
  # shellcheck disable=SC2016
  run sh -c 'echo "${PQDEDUP_STATS-unset}|$1"' sh --stats
  [[ $rc -eq 0 && $out == "unset|--stats" ]] && pass || fail "options after the command are the command's: $out"
}

# The command's arguments, exit status, signals and process id pass through unchanged.
group_passthrough() {
  # shellcheck disable=SC2016
  run -- sh -c 'for a; do printf "[%s]\n" "$a"; done' sh "a b" "-x" "--stats" "" "  two  spaces " '$HOME' '*'
  local want
  want=$(printf '[%s]\n' "a b" "-x" "--stats" "" "  two  spaces " '$HOME' '*')
  [[ $rc -eq 0 && $out == "$want" ]] && pass || fail "arguments unchanged (rc $rc): $out"
  run sh -c 'printf "[%s]\n" "$@"' sh -- --help -u 3
  [[ $out == $'[--]\n[--help]\n[-u]\n[3]' ]] && pass || fail "arguments after the command that look like options: $out"
  local code
  for code in 0 1 3 42 125 126 127 255; do
    run sh -c "exit $code"
    [[ $rc -eq $code ]] && pass || fail "exit status $code passes through (got $rc)"
  done
  run sh -c 'kill -TERM $$'
  [[ $rc -eq 143 ]] && pass || fail "death by SIGTERM passes through as 143 (got $rc)"
  # The launcher execs: the command runs in the launcher's own process.
  # shellcheck disable=SC2016
  env ${RT:+LD_PRELOAD=$RT} "$L" sh -c 'echo $$' >"$T/pid" 2>/dev/null &
  local pid=$!
  wait "$pid"
  [[ $(cat "$T/pid") == "$pid" ]] && pass || fail "the command replaces the launcher (same pid $pid vs $(cat "$T/pid"))"
  # stdin and the environment pass through.
  out=$(echo "from stdin" | PQD_LAUNCHER_MARK="x y" launch sh -c 'read -r l; echo "$l/$PQD_LAUNCHER_MARK"' 2>/dev/null)
  [[ $out == "from stdin/x y" ]] && pass || fail "stdin and environment pass through: $out"
}

# psql script: N reconnections (psql's \c opens the new connection before finishing the old),
# each printing the backend pid.
write_psql_script() {
  local n=$1 i
  : >"$T/reconnect.sql"
  for ((i = 0; i < n; i++)); do
    printf 'SELECT pg_backend_pid();\n\\c\n' >>"$T/reconnect.sql"
  done
  printf 'SELECT pg_backend_pid();\n' >>"$T/reconnect.sql"
}

# Checks one "pqdedup[pid]: stats ..." line on stderr ($T/err): connects=$1, reused>0,
# opened=$2 when given, and that it is all there is on stderr.
check_stats() {
  local want_connects=$1 want_opened=${2:-} stats connects reused opened
  stats=$(grep '^pqdedup\[[0-9]*\]: stats ' "$T/err")
  [[ $(grep -c . <<<"$stats") -eq 1 ]] && pass || fail "--stats prints exactly one stats line: $stats"
  [[ $stats =~ stats\ connects=[0-9]+\ opened=[0-9]+\ reused=[0-9]+\ moved=[0-9]+\ resets=[0-9]+\ resets_skipped=[0-9]+\ dead=[0-9]+\ closed=[0-9]+\ refusals=[0-9]+\ waits=[0-9]+\ wait_ms=[0-9]+\ wait_failures=[0-9]+\ passthrough=[0-9]+\ unfinished=[0-9]+$ ]] && pass || fail "stats line has every counter: $stats"
  connects=$(sed -n 's/.* connects=\([0-9]*\).*/\1/p' <<<"$stats")
  reused=$(sed -n 's/.* reused=\([0-9]*\).*/\1/p' <<<"$stats")
  opened=$(sed -n 's/.* opened=\([0-9]*\).*/\1/p' <<<"$stats")
  [[ ${connects:-0} -eq $want_connects ]] && pass || fail "stats: connects=$want_connects (got ${connects:-none})"
  [[ ${reused:-0} -gt 0 ]] && pass || fail "stats: reused>0 (got ${reused:-none})"
  if [[ -n $want_opened ]]; then
    [[ ${opened:--1} -eq $want_opened ]] && pass || fail "stats: opened=$want_opened, one per distinct backend (got ${opened:-none})"
  fi
  [[ $(grep -c . "$T/err") -eq 1 ]] && pass || fail "the stats line is the only thing on stderr: $(cat "$T/err")"
}

# A real libpq program runs under the launcher and its reconnections reuse backends: psql
# (plain builds; Debian's psql hangs at exit with a sanitizer runtime preloaded, in
# p11-kit's destructor, with or without pqdedup) and the instrumented test_churn (every build).
group_real_program() {
  local n=20 app="pqdt_launcher_$$" distinct
  if [[ -z $RT ]]; then
    write_psql_script $n
    launch --stats -- "$PSQL" -X -q -tA -v ON_ERROR_STOP=1 "application_name=$app" \
      -f "$T/reconnect.sql" >"$T/out" 2>"$T/err"
    rc=$?
    [[ $rc -eq 0 ]] && pass || fail "psql under the launcher exits 0 (rc $rc: $(grep -v '^pqdedup\[' "$T/err"))"
    local pids
    pids=$(grep -c '^[0-9][0-9]*$' "$T/out")
    distinct=$(grep '^[0-9][0-9]*$' "$T/out" | sort -u | wc -l)
    [[ $pids -eq $((n + 1)) ]] && pass || fail "psql printed $((n + 1)) backend pids (got $pids)"
    # psql holds the old connection while it opens the new one, so 2 backends are the least;
    # pqdedup may add one while a connection's reset does not answer in time (3-4 were seen
    # while a connect still opened a spare beside a resetting one). Without
    # pqdedup it is one backend per connect (the --disable control below).
    [[ $distinct -ge 2 && $distinct -le 5 ]] && pass || fail "psql's reconnections reuse backends: $distinct distinct pids for $((n + 1)) connects, expected 2..5"
    check_stats $((n + 1)) "$distinct"

    # Negative control: --disable is pure pass-through, one backend per connect.
    launch --disable -- "$PSQL" -X -q -tA -v ON_ERROR_STOP=1 "application_name=$app" \
      -f "$T/reconnect.sql" >"$T/out" 2>"$T/err"
    rc=$?
    distinct=$(grep '^[0-9][0-9]*$' "$T/out" | sort -u | wc -l)
    [[ $rc -eq 0 ]] && pass || fail "--disable: psql exits 0 (rc $rc)"
    [[ $distinct -eq $((n + 1)) ]] && pass || fail "--disable: every psql connect has its own backend ($distinct of $((n + 1)))"
    [[ ! -s $T/err ]] && pass || fail "--disable: nothing on stderr: $(cat "$T/err")"
  else
    echo "note: psql part skipped: a sanitizer runtime is preloaded" >&2
  fi

  # test_churn asserts its own backend counts (at most 2 with pqdedup, one per cycle without).
  launch --stats -- "$CHURN" --cycles 50 --expect-max-pids 2 >"$T/out" 2>"$T/err"
  rc=$?
  [[ $rc -eq 0 ]] && pass || fail "test_churn under the launcher: at most 2 backends for 50 cycles (rc $rc): $(cat "$T/out" "$T/err")"
  check_stats 51 # 50 cycles + testutil's observer connection
  launch --disable -- "$CHURN" --cycles 20 --expect-min-pids 20 >"$T/out" 2>"$T/err"
  rc=$?
  [[ $rc -eq 0 ]] && pass || fail "test_churn under the launcher with --disable: 20 backends (rc $rc): $(cat "$T/out" "$T/err")"
}

# Runs a libpq program under the launcher with extra environment: VAR=VAL... -- ; sets rc,
# $T/out, $T/err. psql reconnecting 3 times in plain builds, test_churn in sanitizer builds.
run_libpq_program() {
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  if [[ -z $RT ]]; then
    env ${RT:+LD_PRELOAD=$RT} "${envs[@]}" "$L" -- "$PSQL" -X -q -tA -v ON_ERROR_STOP=1 \
      "application_name=pqdt_launcher_quiet_$$" -f "$T/reconnect.sql" >"$T/out" 2>"$T/err"
  else
    env ${RT:+LD_PRELOAD=$RT} "${envs[@]}" "$L" -- "$CHURN" --cycles 5 >"$T/out" 2>"$T/err"
  fi
  rc=$?
}

# The library prints nothing unasked; a bad setting warns exactly once; PQDEDUP_LOG=off silences.
group_quiet() {
  write_psql_script 3
  run_libpq_program --
  [[ $rc -eq 0 ]] && pass || fail "default settings: the program exits 0 (rc $rc)"
  [[ ! -s $T/err ]] && pass || fail "default settings: stderr is empty: $(cat "$T/err")"
  if [[ -z $RT ]]; then
    # Preloaded by hand, and a failing connect: libpq's own error only.
    LD_PRELOAD=$SHIM "$PSQL" -X -q -tA -f "$T/reconnect.sql" >/dev/null 2>"$T/err"
    [[ ! -s $T/err ]] && pass || fail "plain LD_PRELOAD, default settings: stderr is empty: $(cat "$T/err")"
    LD_PRELOAD=$SHIM "$PSQL" -X -tA "dbname=pqd_no_such_db" -c 'SELECT 1' >/dev/null 2>"$T/err"
    [[ -s $T/err && $(grep -c 'pqdedup\[' "$T/err") -eq 0 ]] && pass || fail "failed connect: libpq's message and no pqdedup line: $(cat "$T/err")"
  fi
  launch -- "$CHURN" --cycles 5 >/dev/null 2>"$T/err"
  [[ $? -eq 0 && ! -s $T/err ]] && pass || fail "test_churn, default settings: stderr is empty: $(cat "$T/err")"

  # A bad value in the environment: one warning line, prefixed, and the program still works.
  run_libpq_program PQDEDUP_UNBIND_AFTER=zz --
  [[ $rc -eq 0 ]] && pass || fail "bad PQDEDUP_UNBIND_AFTER: the program still exits 0 (rc $rc)"
  if [[ -z $RT ]]; then
    [[ $(grep -c '^[0-9][0-9]*$' "$T/out") -eq 4 ]] && pass || fail "bad PQDEDUP_UNBIND_AFTER: psql's output unchanged"
  fi
  [[ $(grep -c . "$T/err") -eq 1 ]] && pass || fail "bad PQDEDUP_UNBIND_AFTER: exactly one line on stderr: $(cat "$T/err")"
  grep -q '^pqdedup\[[0-9][0-9]*\]: ' "$T/err" && pass || fail "the warning is prefixed pqdedup[pid]: $(cat "$T/err")"
  grep -q 'PQDEDUP_UNBIND_AFTER' "$T/err" && pass || fail "the warning names the variable"
  run_libpq_program PQDEDUP_LOG=off PQDEDUP_UNBIND_AFTER=zz --
  [[ $rc -eq 0 && ! -s $T/err ]] && pass || fail "bad PQDEDUP_UNBIND_AFTER with PQDEDUP_LOG=off: stderr is empty (rc $rc): $(cat "$T/err")"
  # Two bad values: two lines, one for each, once per process.
  run_libpq_program PQDEDUP_MAX_WAIT=-5 PQDEDUP_KEEP_PER_KEY=lots --
  [[ $(grep -c '^pqdedup\[[0-9]*\]: ' "$T/err") -eq 2 && $(grep -c . "$T/err") -eq 2 ]] && pass || fail "two bad values: two warning lines: $(cat "$T/err")"
}

groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(help usage exec_errors preload options passthrough real_program quiet)
for g in "${groups[@]}"; do
  "group_$g"
done
checks_done test_launcher

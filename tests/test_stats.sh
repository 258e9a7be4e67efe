#!/usr/bin/env bash
# test_stats.sh: the live stats: `pqdedup --stat` (text, JSON, Prometheus) read while a program under the launcher churns and leaks, against the server and the program's own counts; SIGTERM; other users' files; broken and stale files; when no file is made; the exit report.
#
# Run by ctest (tests/stats.cmake) with PQD_TEST_LAUNCHER, PQD_STATS_WORKER
# (test_stats_worker.c), PQD_STATS_FORGE (test_stats_forge.c) and the harness's PG* variables;
# LD_PRELOAD is unset. No check waits "long enough": each waits for its condition, with a
# deadline. Usage: test_stats.sh GROUP... (live prometheus sigterm users bad_files lazy
# exit_report).
set -u

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
RT=${PQD_TEST_SANITIZER_RUNTIME:-}
WORKER=${PQD_STATS_WORKER:?PQD_STATS_WORKER is not set}
FORGE=${PQD_STATS_FORGE:?PQD_STATS_FORGE is not set}
PSQL=${PQD_TEST_PSQL:-/usr/lib/postgresql/15/bin/psql}

# shellcheck source=tests/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
unset LD_PRELOAD XDG_RUNTIME_DIR

T=$(mktemp -d /tmp/pqd-stats-XXXXXX)
chmod 755 "$T"
export PQDEDUP_STATS_DIR=$T/dir
WORKERS=()
cleanup() {
  local p
  for p in "${WORKERS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

# launch ARGS...: the launcher, with the sanitizer runtime first in sanitizer builds.
launch() {
  if [[ -n $RT ]]; then
    LD_PRELOAD=$RT "$L" "$@"
  else
    "$L" "$@"
  fi
}

# wait_for SECONDS COMMAND...: runs COMMAND until it succeeds; false once SECONDS passed.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# count_backends APP: the server's backends with this application_name.
count_backends() {
  "$PSQL" -X -tAc "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'"
}

# report_field FILE NAME: a field of the worker's report.
report_field() { sed -n "s/.*\\b$2=\\([0-9]*\\).*/\\1/p" "$1" 2>/dev/null; }
report_phase() { [[ $(report_field "$1" phase) == "$2" ]]; }

# start_worker NAME CONNINFO THREADS LEAKS CHURNS [ENV...]: starts the worker under the
# launcher in the background with report $T/NAME.report and go file $T/NAME.go; sets WPID;
# waits until phase 1 is done (its connections held, idle).
start_worker() {
  local name=$1 conninfo=$2 threads=$3 leaks=$4 churns=$5
  shift 5
  rm -f "$T/$name.report" "$T/$name.go"
  env "$@" bash -c 'if [[ -n $0 ]]; then export LD_PRELOAD=$0; fi; exec "$@"' "$RT" \
    "$L" -- "$WORKER" "$conninfo" "$T/$name.report" "$T/$name.go" "$threads" "$leaks" "$churns" \
    2>"$T/$name.err" &
  WPID=$!
  WORKERS+=("$WPID")
  wait_for 120 report_phase "$T/$name.report" 1 && pass || fail "$name: the worker finished phase 1 (stderr: $(cat "$T/$name.err"))"
}

# json_get FILE EXPRESSION: evaluates a Python expression on the parsed JSON `j`.
json_get() {
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# The JSON expression of the worker's process and of its one key.
proc() { echo "[p for p in j['processes'] if p['pid'] == $WPID][0]"; }
key() { echo "[k for k in $(proc)['keys'] if k['key'] != '(other keys)'][0]"; }

# stat_json FILE [ARGS]: --stat --json into FILE.
stat_json() {
  local out=$1
  shift
  launch --stat --json "$@" >"$out" 2>"$out.err"
}

# The server's count of the app's backends equals what --stat --json says it holds.
server_agrees() {
  stat_json "$T/agree.json" "$WPID" || return 1
  local open
  open=$(json_get "$T/agree.json" "$(key)['server_connections']['open']") || return 1
  [[ $open == "$(count_backends "$APP")" ]]
}

group_live() {
  APP=pqd_stats_live_$$
  start_worker live "application_name=$APP" 4 20 200
  local connects leaked churned
  connects=$(report_field "$T/live.report" connects)
  leaked=$(report_field "$T/live.report" leaked)
  churned=$(report_field "$T/live.report" churned)
  [[ $leaked == 20 && $churned == 200 && $connects == 220 && $(report_field "$T/live.report" failed) == 0 ]] && pass ||
    fail "the worker did what it was told: $(cat "$T/live.report")"

  # Text.
  launch --stat >"$T/text" 2>"$T/text.err"
  local rc=$?
  [[ $rc == 0 ]] && pass || fail "--stat exits 0 (exit $rc: $(cat "$T/text.err"))"
  grep -q "^PID $WPID  test_stats_worker  up " "$T/text" && pass || fail "--stat shows the worker: $(cat "$T/text")"
  grep -q "handles now: $leaked open" "$T/text" && pass || fail "--stat shows $leaked handles open: $(cat "$T/text")"
  grep -Eq "^ +$leaked  .* test_stats_worker:leak_one +postgres@" "$T/text" && pass ||
    fail "the leak report names leak_one with $leaked handles: $(cat "$T/text")"
  ! grep -q churn_one "$T/text" && pass || fail "finished connections are not in the leak report"
  launch --stat "$WPID" >"$T/text1" && grep -q "^PID $WPID " "$T/text1" && pass || fail "--stat PID shows it"

  # JSON, against the program's own counts.
  stat_json "$T/live.json" "$WPID" && pass || fail "--stat --json exits 0: $(cat "$T/live.json.err")"
  [[ $(json_get "$T/live.json" "$(proc)['counters']['connects']") == "$connects" ]] && pass ||
    fail "JSON connects = the program's $connects"
  [[ $(json_get "$T/live.json" "$(key)['counters']['connects']") == "$connects" ]] && pass ||
    fail "the key's connects = the program's $connects"
  [[ $(json_get "$T/live.json" "$(key)['handles']['open']") == "$leaked" ]] && pass ||
    fail "JSON handles open = the program's $leaked leaks"
  [[ $(json_get "$T/live.json" "sum(g['count'] for g in $(proc)['unfinished'] if g['function'] == 'leak_one' and g['module'] == 'test_stats_worker')") == "$leaked" ]] &&
    pass || fail "JSON unfinished: $leaked handles opened in test_stats_worker:leak_one"
  [[ $(json_get "$T/live.json" "min(g['oldest_age_seconds'] >= g['newest_age_seconds'] >= 0 and g['max_idle_seconds'] >= g['min_idle_seconds'] >= 0 for g in $(proc)['unfinished'])") == True ]] &&
    pass || fail "ages and idle times are ordered and not negative"
  # Every connect was answered by a free server connection, an idle handle's, or a new one.
  [[ $(json_get "$T/live.json" "(lambda c: c['opened'] + c['reused'] + c['moved'])($(key)['counters'])") == "$connects" ]] &&
    pass || fail "opened + reused + moved = connects ($connects): $(json_get "$T/live.json" "$(key)['counters']")"
  [[ $(json_get "$T/live.json" "(lambda s: s['open'] == s['bound'] + s['free'] + s['busy'])($(key)['server_connections'])") == True ]] &&
    pass || fail "server connections: open = bound + free + busy"
  [[ $(json_get "$T/live.json" "(lambda h: h['bound'] + h['unbound'] == h['open'])($(key)['handles'])") == True ]] &&
    pass || fail "idle leaked handles are bound or unbound"
  json_get "$T/live.json" "$(key)['key']" | grep -Eq "^postgres@.*:$PGPORT/postgres\$" && pass ||
    fail "the key reads user@host:port/dbname: $(json_get "$T/live.json" "$(key)['key']")"
  # Against the server: its backends of this program are the server connections --stat counts.
  wait_for 10 server_agrees && pass ||
    fail "pg_stat_activity ($(count_backends "$APP")) = --stat's server connections open ($(json_get "$T/agree.json" "$(key)['server_connections']"))"

  # While it works.
  touch "$T/live.go"
  wait_for 60 report_phase "$T/live.report" 2 && pass || fail "the worker works on"
  local before after ok=1
  before=$(report_field "$T/live.report" connects)
  for _ in 1 2 3; do
    stat_json "$T/work.json" "$WPID" || ok=0
    after=$(json_get "$T/work.json" "$(proc)['counters']['connects']") || ok=0
    ((after >= before)) || ok=0
    before=$after
    launch --stat >/dev/null 2>&1 || ok=0
  done
  [[ $ok == 1 && $before -gt $connects ]] && pass ||
    fail "--stat and --json read the working program, counts only growing ($connects -> $before)"
  kill -TERM "$WPID"
  wait "$WPID" 2>/dev/null
}

group_prometheus() {
  APP=pqd_stats_prom_$$
  start_worker prom "application_name=$APP" 2 6 50
  launch --stat --prometheus >"$T/metrics.prom" 2>"$T/metrics.err" && pass || fail "--stat --prometheus exits 0"
  local out
  out=$(promtool check metrics <"$T/metrics.prom" 2>&1) && pass || fail "promtool check metrics: $out"
  local labels="process=\"test_stats_worker\",pid=\"$WPID\""
  grep -q "^pqdedup_connects_total{$labels,command=\"[^\"]*\",key=\"postgres@[^\"]*\"} 56\$" "$T/metrics.prom" && pass ||
    fail "pqdedup_connects_total of the key is the program's 56: $(grep "^pqdedup_connects_total" "$T/metrics.prom")"
  grep -q "^pqdedup_unfinished_handles{$labels,.*,site=\"test_stats_worker:leak_one\"} 6\$" "$T/metrics.prom" && pass ||
    fail "pqdedup_unfinished_handles names leak_one with 6: $(grep "^pqdedup_unfinished_handles{" "$T/metrics.prom")"
  grep -q "^pqdedup_pools_client_connections{$labels,.*} 6\$" "$T/metrics.prom" && pass || fail "6 handles open"
  local open
  open=$(sed -n "s/^pqdedup_pools_server_connections{$labels,.*} \\([0-9]*\\)\$/\\1/p" "$T/metrics.prom")
  [[ -n $open && $open == "$(count_backends "$APP")" ]] && pass ||
    fail "pqdedup_pools_server_connections ($open) = pg_stat_activity ($(count_backends "$APP"))"
  for family in pqdedup_process_start_time_seconds pqdedup_client_wait_seconds_total pqdedup_resets_sent_total \
                pqdedup_resets_skipped_total pqdedup_pools_client_waiting_connections pqdedup_pools_client_maxwait_seconds \
                pqdedup_pools_server_idle_connections pqdedup_passthrough_total; do
    grep -q "^# TYPE $family " "$T/metrics.prom" && pass || fail "the output has $family"
  done
  # As README's textfile-collector line: a temporary file, then a rename.
  mkdir -p "$T/textfile"
  launch --stat --prometheus >"$T/textfile/pqdedup.prom.tmp" && mv "$T/textfile/pqdedup.prom.tmp" "$T/textfile/pqdedup.prom" &&
    promtool check metrics <"$T/textfile/pqdedup.prom" >/dev/null 2>&1 && pass || fail "the textfile collector's file"
  kill -TERM "$WPID"
  wait "$WPID" 2>/dev/null
}

# True once --watch's output in $1 was drawn three times.
redrawn() { [[ $(grep -c "no process under pqdedup" "$1") -ge 3 ]]; }

# True once the process is gone (reaped by this shell's wait).
gone() { ! kill -0 "$1" 2>/dev/null; }

group_sigterm() {
  APP=pqd_stats_term_$$
  start_worker term "application_name=$APP" 2 4 20
  touch "$T/term.go"
  wait_for 60 report_phase "$T/term.report" 2 && pass || fail "the worker works on"
  local file=$PQDEDUP_STATS_DIR/pqdedup-$WPID.stats
  [[ -f $file ]] && pass || fail "the worker has its file $file"
  kill -TERM "$WPID"
  wait "$WPID" 2>/dev/null
  wait_for 10 gone "$WPID" && pass || fail "the worker ended on SIGTERM"
  [[ -f $file ]] && pass || fail "SIGTERM leaves the file behind (no exit handler runs)"
  launch --stat >"$T/term.out" 2>"$T/term.err"
  local rc=$?
  [[ $rc == 0 ]] && pass || fail "--stat exits 0 ($rc)"
  grep -q "pqdedup-$WPID.stats: process $WPID (test_stats_worker) is gone; .*: removed" "$T/term.err" && pass ||
    fail "--stat says the worker is gone and removed its file: $(cat "$T/term.err")"
  [[ ! -e $file ]] && pass || fail "the file is removed"
  ! grep -q "PID $WPID" "$T/term.out" && pass || fail "the gone process is not listed: $(cat "$T/term.out")"
  launch --stat >"$T/term2.out" 2>"$T/term2.err"
  [[ ! -s $T/term2.err ]] && grep -q "^no process under pqdedup" "$T/term2.out" && pass ||
    fail "a second --stat finds nothing to say: $(cat "$T/term2.out" "$T/term2.err")"
  launch --stat "$WPID" >/dev/null 2>"$T/term3.err"
  rc=$?
  [[ $rc == 1 ]] && grep -q "PID $WPID: no live stats file" "$T/term3.err" && pass ||
    fail "--stat of that PID now: exit 1 ($rc) and why: $(cat "$T/term3.err")"
}

# as_nobody COMMAND...: runs a command as the user nobody, with the server over TCP as
# pqd_alice, and nobody's default stats directory.
as_nobody() {
  runuser -u nobody -- env -i PATH=/usr/bin:/bin HOME=/ PGHOST="${PQD_TEST_TCP_HOST:-127.0.0.1}" PGPORT="$PGPORT" \
    PGDATABASE=postgres ${RT:+LD_PRELOAD=$RT} ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS} \
    ${TSAN_OPTIONS:+TSAN_OPTIONS=$TSAN_OPTIONS} ${LSAN_OPTIONS:+LSAN_OPTIONS=$LSAN_OPTIONS} \
    GLIBC_TUNABLES="${GLIBC_TUNABLES:-}" "$@"
}

group_users() {
  if [[ $(id -u) != 0 ]]; then
    fail "the users group runs a process as the user nobody: run it as root"
    return
  fi
  # Copies of the programs that nobody may run.
  mkdir -p "$T/bin"
  cp "$L" "$(dirname "$L")"/libpqdedup*.so "$WORKER" "$T/bin/"
  chmod -R a+rX "$T/bin"
  local nobody_uid nobody_dir
  nobody_uid=$(id -u nobody)
  nobody_dir=/tmp/pqdedup-$nobody_uid
  local secret=alice_pw
  # nobody's worker (its reports go to a directory nobody may write).
  mkdir -p "$T/nobody" && chown nobody "$T/nobody"
  if as_nobody "$T/bin/pqdedup" -- "$T/bin/test_stats_worker" \
    "application_name=pqd_stats_nobody_$$ user=pqd_alice password=$secret" \
    "$T/nobody/once" - 1 2 3 2>"$T/nobody-once.err"; then
    pass
  else
    fail "nobody's worker runs under the launcher: $(cat "$T/nobody-once.err")"
  fi
  as_nobody "$T/bin/pqdedup" -- "$T/bin/test_stats_worker" \
    "application_name=pqd_stats_nobody_$$ user=pqd_alice password=$secret" \
    "$T/nobody/report" "$T/nobody/go" 1 2 3 2>"$T/nobody.err" &
  local npid=$!
  WORKERS+=("$npid")
  wait_for 120 report_phase "$T/nobody/report" 1 && pass || fail "nobody's worker: $(cat "$T/nobody.err")"
  # The runuser process is its parent: nobody's worker is its child.
  local nworker
  nworker=$(pgrep -u nobody -f "pqd_stats_nobody_$$" | head -1)
  [[ -n $nworker && -f $nobody_dir/pqdedup-$nworker.stats ]] && pass ||
    fail "nobody's worker ($nworker) has its file in $nobody_dir"
  [[ $(stat -c '%U %a' "$nobody_dir") == "nobody 700" && $(stat -c '%U %a' "$nobody_dir/pqdedup-$nworker.stats") == "nobody 600" ]] &&
    pass || fail "nobody's directory is 0700 and its file 0600, both nobody's"

  APP=pqd_stats_root_$$
  start_worker root "application_name=$APP" 1 2 3
  local rpid=$WPID
  # Each user sees their own processes only.
  stat_json "$T/root.json" && pass || fail "root's --stat --json"
  [[ $(json_get "$T/root.json" "sorted(p['pid'] for p in j['processes'])") == "[$rpid]" ]] && pass ||
    fail "root sees its worker only: $(json_get "$T/root.json" "[p['pid'] for p in j['processes']]")"
  as_nobody "$T/bin/pqdedup" --stat --json >"$T/nobody.json" 2>"$T/nobody-stat.err" && pass ||
    fail "nobody's --stat --json: $(cat "$T/nobody-stat.err")"
  [[ $(json_get "$T/nobody.json" "sorted(p['pid'] for p in j['processes'])") == "[$nworker]" ]] && pass ||
    fail "nobody sees its worker only: $(cat "$T/nobody.json")"
  ! grep -q "$secret" "$T/nobody.json" && pass || fail "the password in the command line is never printed"
  as_nobody "$T/bin/pqdedup" --stat --prometheus 2>/dev/null | grep -q "password=\*\*\*" && pass ||
    fail "the command label masks the password"

  # Another user's file in one's directory: skipped with a clear message, left alone.
  "$FORGE" valid "$PQDEDUP_STATS_DIR" "$nworker" && chown nobody "$PQDEDUP_STATS_DIR/pqdedup-$nworker.stats"
  launch --stat >"$T/other.out" 2>"$T/other.err"
  grep -q "pqdedup-$nworker.stats: owned by uid $nobody_uid, not by you (uid 0): another user's file; skipped" "$T/other.err" &&
    pass || fail "root's reader skips nobody's file, saying why: $(cat "$T/other.err")"
  [[ -f $PQDEDUP_STATS_DIR/pqdedup-$nworker.stats ]] && pass || fail "and leaves it"
  rm -f "$PQDEDUP_STATS_DIR/pqdedup-$nworker.stats"
  # A file nobody cannot read in nobody's directory.
  "$FORGE" valid "$nobody_dir" "$rpid"
  as_nobody "$T/bin/pqdedup" --stat >/dev/null 2>"$T/unreadable.err"
  grep -q "pqdedup-$rpid.stats: cannot read it (Permission denied): another user's file; skipped" "$T/unreadable.err" &&
    pass || fail "nobody's reader skips root's unreadable file, saying why: $(cat "$T/unreadable.err")"
  rm -f "$nobody_dir/pqdedup-$rpid.stats"
  # A directory of another user: the library refuses it, once, and makes no file.
  as_nobody env PQDEDUP_STATS_DIR="$PQDEDUP_STATS_DIR" "$T/bin/pqdedup" -- "$T/bin/test_stats_worker" \
    "application_name=pqd_stats_nobody_$$ user=pqd_alice password=$secret" "$T/nobody/refused" - 2 2 2 \
    2>"$T/refused.err"
  [[ $(grep -c "no live stats file: cannot use the directory $PQDEDUP_STATS_DIR (it belongs to another user)" "$T/refused.err") == 1 ]] &&
    pass || fail "nobody's library refuses root's directory, once: $(cat "$T/refused.err")"

  touch "$T/nobody/go"
  kill -TERM "$nworker" "$rpid"
  wait "$rpid" "$npid" 2>/dev/null
  as_nobody "$T/bin/pqdedup" --stat >/dev/null 2>&1 # nobody's reader cleans up its own stale file
  [[ ! -e $nobody_dir/pqdedup-$nworker.stats ]] && pass || fail "nobody's reader removed nobody's stale file"
}

group_bad_files() {
  local d=$PQDEDUP_STATS_DIR
  mkdir -p "$d" && chmod 0700 "$d"
  sleep 300 &
  local alive=$!
  WORKERS+=("$alive")
  true &
  local dead=$!
  wait "$dead"
  local rc

  "$FORGE" garbage "$d" "$alive"
  launch --stat >"$T/out" 2>"$T/err"; rc=$?
  [[ $rc == 0 ]] && grep -q "pqdedup-$alive.stats: not a pqdedup stats file (it does not start with PQDDSTAT); skipped" "$T/err" &&
    pass || fail "a garbage file: exit 0 ($rc), skipped saying why: $(cat "$T/err")"
  [[ -f $d/pqdedup-$alive.stats ]] && pass || fail "a garbage file of a live PID is left"
  rm -f "$d/pqdedup-$alive.stats"

  "$FORGE" garbage "$d" "$dead"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$dead.stats: not a pqdedup stats file .*; process $dead is gone: removed" "$T/err" &&
    [[ ! -e $d/pqdedup-$dead.stats ]] && pass || fail "a garbage file of a dead PID is removed: $(cat "$T/err")"

  "$FORGE" truncated "$d" "$alive"
  launch --stat >"$T/out" 2>"$T/err"; rc=$?
  [[ $rc == 0 ]] && grep -q "pqdedup-$alive.stats: truncated (1024 of its [0-9]* bytes); skipped" "$T/err" && pass ||
    fail "a truncated file: skipped saying so: $(cat "$T/err")"
  : >"$d/pqdedup-$alive.stats"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$alive.stats: empty (0 bytes): not a pqdedup stats file; skipped" "$T/err" && pass ||
    fail "an empty file: $(cat "$T/err")"
  head -c 100 /dev/zero >"$d/pqdedup-$alive.stats"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$alive.stats: truncated (100 bytes; a stats file is [0-9]*): not a complete pqdedup stats file; skipped" "$T/err" && pass || fail "a 100-byte file: $(cat "$T/err")"
  "$FORGE" layout "$d" "$alive"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$alive.stats: written by another version of pqdedup (layout 99; this pqdedup reads layout 1); skipped" "$T/err" &&
    pass || fail "another layout: $(cat "$T/err")"
  rm -f "$d/pqdedup-$alive.stats"

  # A PID that was reused: the file's start time is not the live process's.
  "$FORGE" reused "$d" "$alive"
  launch --stat >"$T/out" 2>"$T/err"; rc=$?
  [[ $rc == 0 ]] && grep -q "pqdedup-$alive.stats: PID $alive now belongs to another process (started .*s after boot; the file's forged started .*s after boot): a stale file; removed" "$T/err" &&
    pass || fail "a reused PID is recognised and its file removed: $(cat "$T/err")"
  [[ ! -e $d/pqdedup-$alive.stats ]] && pass || fail "the reused PID's file is gone"
  # The right start time, but the process does not map the file (as after an exec).
  "$FORGE" valid "$d" "$alive"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$alive.stats: process $alive no longer maps it (it ran another program): a stale file; removed" "$T/err" &&
    [[ ! -e $d/pqdedup-$alive.stats ]] && pass || fail "a file its process does not map is removed: $(cat "$T/err")"
  # A dead process's complete file.
  "$FORGE" valid "$d" "$dead"
  launch --stat >"$T/out" 2>"$T/err"
  grep -q "pqdedup-$dead.stats: process $dead (forged) is gone; .*: removed" "$T/err" && pass ||
    fail "a dead process's file is removed: $(cat "$T/err")"
  # A symbolic link, and names that are not stats files.
  ln -s /etc/passwd "$d/pqdedup-$alive.stats"
  : >"$d/pqdedup-x.stats"
  : >"$d/notes.txt"
  launch --stat >"$T/out" 2>"$T/err"; rc=$?
  [[ $rc == 0 ]] && grep -q "pqdedup-$alive.stats: a symbolic link, not a stats file; skipped" "$T/err" &&
    [[ $(grep -c . "$T/err") == 1 ]] && pass || fail "a symlink is skipped, other names ignored: $(cat "$T/err")"
  rm -f "$d/pqdedup-$alive.stats"
  # A PID with no file; and arguments that are not PIDs.
  launch --stat "$alive" >/dev/null 2>"$T/err"; rc=$?
  [[ $rc == 1 ]] && grep -q "PID $alive: no live stats file" "$T/err" && pass || fail "--stat PID without a file: exit 1 ($rc): $(cat "$T/err")"
  launch --stat abc >/dev/null 2>"$T/err"; rc=$?
  [[ $rc == 2 ]] && grep -q "takes process IDs, not abc" "$T/err" && pass || fail "--stat abc is a usage error ($rc)"
  launch --json >/dev/null 2>"$T/err"; rc=$?
  [[ $rc == 2 ]] && pass || fail "--json without --stat is a usage error ($rc)"
  launch --stat --watch --json >/dev/null 2>"$T/err"; rc=$?
  [[ $rc == 2 ]] && pass || fail "--watch with --json is a usage error ($rc)"
  # `pqdedup stat` still runs a command named stat.
  mkdir -p "$T/path"
  printf '#!/bin/sh\necho "a command named stat: $*"\n' >"$T/path/stat"
  chmod +x "$T/path/stat"
  [[ $(PATH=$T/path:$PATH launch stat --json 2>&1) == "a command named stat: --json" ]] && pass ||
    fail "pqdedup stat runs a command named stat"
  # --watch redraws until interrupted.
  # (env execs the launcher: $! is its pid, which a function run in the background would not be)
  env ${RT:+LD_PRELOAD=$RT} "$L" --stat --watch --interval 100ms >"$T/watch" 2>&1 &
  local w=$!
  wait_for 10 redrawn "$T/watch" && pass || fail "--watch redraws: $(cat "$T/watch")"
  kill -TERM "$w" # (SIGINT, as from a terminal, is ignored by a background job of a script)
  wait "$w" 2>/dev/null
  kill "$alive"
}

group_lazy() {
  # A program that never uses libpq makes nothing, not even the directory.
  PQDEDUP_STATS_DIR=$T/lazy launch -- sh -c 'exit 0'
  [[ ! -e $T/lazy ]] && pass || fail "a program without libpq makes no stats directory or file"
  # PQDEDUP_LIVE_STATS=0: no file, --stat sees nothing.
  APP=pqd_stats_off_$$
  start_worker off "application_name=$APP" 1 2 3 PQDEDUP_LIVE_STATS=0
  [[ -z $(ls -A "$PQDEDUP_STATS_DIR" 2>/dev/null) ]] && pass || fail "PQDEDUP_LIVE_STATS=0: no file ($(ls "$PQDEDUP_STATS_DIR"))"
  launch --stat >"$T/off.out" 2>&1
  grep -q "^no process under pqdedup" "$T/off.out" && pass || fail "--stat sees no process: $(cat "$T/off.out")"
  kill -TERM "$WPID"
  wait "$WPID" 2>/dev/null
  # --no-live-stats sets it.
  launch --no-live-stats -- sh -c 'echo "$PQDEDUP_LIVE_STATS"' >"$T/opt" 2>&1
  [[ $(cat "$T/opt") == 0 ]] && pass || fail "--no-live-stats sets PQDEDUP_LIVE_STATS=0"
  # Directories the library refuses: writable by others, not a directory. Said once.
  mkdir -p "$T/open" && chmod 0777 "$T/open"
  PQDEDUP_STATS_DIR=$T/open launch -- "$WORKER" "application_name=$APP" "$T/open.report" - 2 2 4 2>"$T/open.err"
  [[ $(grep -c "warning: no live stats file: cannot use the directory $T/open (others may write to it)" "$T/open.err") == 1 && -z $(ls -A "$T/open") ]] &&
    pass || fail "a directory others may write to is refused, once: $(cat "$T/open.err")"
  : >"$T/afile"
  PQDEDUP_STATS_DIR=$T/afile launch -- "$WORKER" "application_name=$APP" "$T/afile.report" - 1 1 1 2>"$T/afile.err"
  grep -q "cannot use the directory $T/afile (it is not a directory)" "$T/afile.err" && pass ||
    fail "a file as the directory is refused: $(cat "$T/afile.err")"
  # The default directory: $XDG_RUNTIME_DIR/pqdedup, made 0700, the file 0600, gone at exit.
  mkdir -p "$T/xdg" && chmod 0700 "$T/xdg"
  (
    unset PQDEDUP_STATS_DIR
    export XDG_RUNTIME_DIR=$T/xdg
    start_worker xdg "application_name=$APP" 1 1 1
    [[ $(stat -c %a "$T/xdg/pqdedup") == 700 && $(stat -c %a "$T/xdg/pqdedup/pqdedup-$WPID.stats") == 600 ]] && pass ||
      fail "\$XDG_RUNTIME_DIR/pqdedup is made 0700, the file is 0600"
    launch --stat "$WPID" >/dev/null 2>&1 && pass || fail "the reader looks there too"
    touch "$T/xdg.go"
    kill -TERM "$WPID"
    wait "$WPID" 2>/dev/null
    checks_done stats_lazy_xdg >/dev/null
  ) || fail "the default directory (see above)"
  # A normal exit removes the file.
  PQDEDUP_STATS_DIR=$T/exit launch -- "$WORKER" "application_name=$APP" "$T/exit.report" - 1 1 1
  [[ -d $T/exit && -z $(ls -A "$T/exit") ]] && pass || fail "the file is removed at a normal exit: $(ls "$T/exit")"
}

group_exit_report() {
  APP=pqd_stats_exit_$$
  local tcp="host=${PQD_TEST_TCP_HOST:-127.0.0.1} port=$PGPORT user=pqd_alice password=alice_pw dbname=postgres"
  launch --stats -- "$WORKER" "application_name=$APP $tcp" "$T/exit.report" - 2 4 10 2>"$T/exit.err"
  local rc=$?
  [[ $rc == 0 ]] && pass || fail "the worker exits 0 ($rc): $(cat "$T/exit.err")"
  local line
  line=$(grep "stats connects=" "$T/exit.err")
  [[ $line =~ stats\ connects=14\ opened=[0-9]+\ reused=[0-9]+\ moved=[0-9]+\ resets=[0-9]+\ resets_skipped=0\ dead=0\ closed=[0-9]+\ refusals=0\ waits=[0-9]+\ wait_ms=[0-9]+\ wait_failures=0\ passthrough=0\ unfinished=4$ ]] &&
    pass || fail "the stats line has every counter and 4 unfinished: $line"
  grep -Eq "unfinished handles=4 key=pqd_alice@${PQD_TEST_TCP_HOST:-127.0.0.1}:$PGPORT/postgres site=test_stats_worker:leak_one oldest=[0-9.]+s$" "$T/exit.err" &&
    pass || fail "a line names the key and leak_one: $(cat "$T/exit.err")"
  ! grep -q alice_pw "$T/exit.err" && pass || fail "no password in the exit report"
  # PQDEDUP_RESET=dirty: clean sessions are handed on without the reset, counted apart.
  launch --stats --reset dirty -- "$WORKER" "application_name=$APP" "$T/exit.report" - 1 0 20 2>"$T/dirty.err"
  line=$(grep "stats connects=" "$T/dirty.err")
  [[ $line =~ \ resets=0\ resets_skipped=([0-9]+) ]] && ((BASH_REMATCH[1] >= 19)) && pass ||
    fail "with --reset dirty, resets=0 and resets_skipped counts the skipped ones: $line"
  [[ $line =~ unfinished=0$ ]] && ! grep -q "unfinished handles=" "$T/dirty.err" && pass ||
    fail "nothing left unfinished: no unfinished lines: $(cat "$T/dirty.err")"
}

# The programs run in the background (killed by a signal: their exit status says nothing)
# reported no sanitizer error on their stderr.
no_sanitizer_reports() {
  local reports
  reports=$(grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:' "$T"/*.err 2>/dev/null)
  [[ -z $reports ]] && pass || fail "sanitizer reports: $(xargs cat <<<"$reports")"
}

[[ $# -gt 0 ]] || set -- live prometheus sigterm users bad_files lazy exit_report
for g in "$@"; do
  "group_$g"
done
no_sanitizer_reports
checks_done "test_stats $*"

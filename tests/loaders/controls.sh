#!/usr/bin/env bash
# tests/loaders/controls.sh: the launcher's LD_AUDIT, --no-audit and PQDEDUP_AUDIT, what is logged, and programs that never use libpq.
#
# Needs PQD_LOADERS_DLSYM (test_loaders_dlsym, a libpq program) and PQD_LOADERS_NOOP_AUDIT
# (an auditor that audits nothing) from tests/loaders.cmake.
. "$(dirname "$0")/lib.sh"
DLSYM=${PQD_LOADERS_DLSYM:?}
NOOP=${PQD_LOADERS_NOOP_AUDIT:?}

# env_of VAR [ENV...] -- [LAUNCHER OPTIONS]: VAR as the launcher's command sees it.
env_of() {
  local var=$1 envs=(); shift
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  # sh, not env(1): see lib.sh on setlocale in sanitizer builds.
  env "${envs[@]}" "$L" "$@" -- sh -c "printf '%s' \"\${$var-}\""
}

# --- LD_AUDIT: ours first, what was there kept after it, never twice ---------------------
got=$(env_of LD_AUDIT --)
check "LD_AUDIT is the auditor beside the library ($got)" test "$got" -ef "$AUDIT"
got=$(env_of LD_AUDIT "LD_AUDIT=$NOOP" --)
check "an LD_AUDIT entry that was there stays, after ours ($got)" test "$got" = "$(realpath "$AUDIT"):$NOOP"
got=$(env_of LD_AUDIT "LD_AUDIT=$(realpath "$AUDIT"):$NOOP" --)
check "a launcher under the launcher does not add the auditor twice ($got)" test "$got" = "$(realpath "$AUDIT"):$NOOP"
got=$(env_of LD_AUDIT -- --no-audit)
check "--no-audit: no LD_AUDIT ($got)" test -z "$got"
got=$(env_of PQDEDUP_AUDIT -- --no-audit)
check "--no-audit: PQDEDUP_AUDIT=0 for the library ($got)" test "$got" = 0
got=$(env_of LD_AUDIT "LD_AUDIT=$NOOP" -- --no-audit)
check "--no-audit leaves an LD_AUDIT that was there alone ($got)" test "$got" = "$NOOP"
got=$(env_of LD_AUDIT PQDEDUP_AUDIT=off --)
check "PQDEDUP_AUDIT=off in the environment: no LD_AUDIT ($got)" test -z "$got"
got=$(env_of LD_PRELOAD --)
check "LD_PRELOAD still starts with the library, after a sanitizer runtime ($got)" \
  test "$got" = "${RT:+$RT:}$(realpath "$SHIM")"

# --- Programs that never use libpq: the same output and status, nothing added --------------
compare() { # compare DESCRIPTION CMD...: plain and under the launcher, byte for byte
  local what=$1; shift
  "$@" >"$T/out.plain" 2>"$T/err.plain"
  local rc_plain=$?
  "$L" -- "$@" >"$T/out.pqd" 2>"$T/err.pqd"
  local rc_pqd=$?
  if [[ -n $RT && $rc_plain -ne 0 ]]; then
    echo "$SCRIPT: note: $what not compared: the sanitizer runtime alone makes it exit $rc_plain (dash under TSan)"
    return
  fi
  check "$what: exit $rc_plain plain, $rc_pqd under the launcher" test "$rc_plain" -eq 0 -a "$rc_pqd" -eq 0
  check "$what: the same stdout" cmp -s "$T/out.plain" "$T/out.pqd"
  check "$what: the same (empty) stderr: $(cat "$T/err.pqd")" cmp -s "$T/err.plain" "$T/err.pqd"
}
compare "/bin/true" /bin/true
compare "python3 -c pass" "$PYTHON" -c pass
compare "sh -c 'echo hi'" sh -c 'echo hi'
compare "python3 importing ctypes and calling libc" "$PYTHON" -c 'import ctypes; print(ctypes.CDLL(None).getpid() > 0)'
PQDEDUP_LOG=debug "$L" -- sh -c 'echo hi' >"$T/out" 2>"$T/err"
check "PQDEDUP_LOG=debug, a program without libpq: nothing logged: $(cat "$T/err")" test ! -s "$T/err"
# The library says everything (its settings' warnings included) at the first connect: a program
# that loads libpq and calls it without connecting prints nothing either, even with a bad
# setting, and a log file is never created. The same settings with a connect do log (control).
NOCONNECT=("$PYTHON" -c 'import ctypes; print(ctypes.CDLL("libpq.so.5").PQlibVersion() > 0)')
PQDEDUP_LOG=debug PQDEDUP_LOG_FILE=$T/never.log PQDEDUP_MAX_WAIT=zz "$L" -- "${NOCONNECT[@]}" >"$T/out" 2>"$T/err"
check "PQDEDUP_LOG=debug, a bad setting, libpq called without a connect: it ran ($(cat "$T/out")), nothing printed: $(cat "$T/err")" \
  test "$(cat "$T/out")" = True -a ! -s "$T/err"
check "... and PQDEDUP_LOG_FILE was not created" test ! -e "$T/never.log"
PQDEDUP_LOG=debug PQDEDUP_LOG_FILE=$T/never.log PQDEDUP_MAX_WAIT=zz "$L" -- sh -c 'echo hi' >/dev/null 2>"$T/err"
check "a program without libpq: PQDEDUP_LOG_FILE not created, nothing printed: $(cat "$T/err")" \
  test ! -e "$T/never.log" -a ! -s "$T/err"
PQDEDUP_LOG=debug PQDEDUP_LOG_FILE=$T/used.log PQDEDUP_MAX_WAIT=zz "$L" -- "$PQD_LOADERS_DLSYM" --cycles 1 >/dev/null 2>"$T/err"
check "control: with a connect the same settings log to the file (the bad setting's warning included)" \
  grep -q 'warning: ignoring PQDEDUP_MAX_WAIT' "$T/used.log"

# --- The auditor without libpqdedup.so: nothing changes, a warning only when asked ----------
LOADLIBPQ=(env "LD_AUDIT=$AUDIT" "$PYTHON" -c 'import ctypes; l = ctypes.CDLL("libpq.so.5"); print(l.PQlibVersion() > 0)')
"${LOADLIBPQ[@]}" >"$T/out" 2>"$T/err"
check "auditor alone, libpq loaded: works ($(cat "$T/out")), silent by default: $(cat "$T/err")" \
  test "$(cat "$T/out")" = True -a ! -s "$T/err"
PQDEDUP_LOG=warn "${LOADLIBPQ[@]}" >"$T/out" 2>"$T/err"
check "auditor alone with PQDEDUP_LOG=warn: one prefixed warning: $(cat "$T/err")" \
  test "$(grep -c '^pqdedup\[[0-9]*\]: warning: libpqdedup-audit.so is loaded (LD_AUDIT) but libpqdedup.so is not' "$T/err")" -eq 1 \
  -a "$(grep -c . "$T/err")" -eq 1
PQDEDUP_LOG=info PQDEDUP_LOG_FILE=$T/auditor.log "${LOADLIBPQ[@]}" >/dev/null 2>"$T/err"
check "... written to PQDEDUP_LOG_FILE when set" test "$(grep -c 'libpqdedup.so is not' "$T/auditor.log" 2>/dev/null)" -eq 1 -a ! -s "$T/err"

# --- What the library says about the auditor, at PQDEDUP_LOG=info only ----------------------
run_libpq() { # run_libpq [ENV...] -- [LAUNCHER OPTIONS]: one dlsym churn cycle, stderr in $T/err
  local envs=(); while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" "$L" "$@" -- "$DLSYM" --cycles 1 >"$T/out" 2>"$T/err"
}
run_libpq --
check "default: a libpq program under the launcher prints nothing on stderr: $(cat "$T/err")" test ! -s "$T/err"
run_libpq PQDEDUP_LOG=info --
check "PQDEDUP_LOG=info: the auditor is active" grep -q 'info: loader auditor active' "$T/err"
run_libpq PQDEDUP_LOG=info -- --no-audit
check "--no-audit, PQDEDUP_LOG=info: turned off, and why" grep -q 'info: loader auditing turned off by PQDEDUP_AUDIT' "$T/err"
env PQDEDUP_LOG=info LD_PRELOAD="${RT:+$RT:}$SHIM" "$DLSYM" --cycles 1 >"$T/out" 2>"$T/err"
check "plain LD_PRELOAD, PQDEDUP_LOG=info: the auditor is not loaded, and what that means" \
  grep -q 'info: loader auditor not loaded (LD_AUDIT does not name libpqdedup-audit.so): modules loaded with RTLD_DEEPBIND' "$T/err"
run_libpq PQDEDUP_AUDIT=maybe --
check "a bad PQDEDUP_AUDIT: one warning line, and the auditor stays on: $(cat "$T/err")" \
  test "$(grep -c 'warning: ignoring PQDEDUP_AUDIT: not 1 or 0' "$T/err")" -eq 1 -a "$(grep -c . "$T/err")" -eq 1
run_libpq PQDEDUP_AUDIT=maybe PQDEDUP_LOG=info --
check "... and the auditor stays on with it" grep -q 'info: loader auditor active' "$T/err"

finish

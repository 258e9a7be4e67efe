#!/usr/bin/env bash
# test_check.sh: `pqdedup --check PROGRAM` on a program linked with libpq, a static one, a setuid copy, scripts and a missing command, never running them.
#
# Run by ctest (tests/check.cmake) with PQD_TEST_LAUNCHER and PQD_TEST_SOURCE_DIR; LD_PRELOAD
# is unset. Needs no server; builds its two small programs with the system's cc.
set -euo pipefail

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
SRC=${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}

# shellcheck source=tests/checks.sh
. "$SRC/checks.sh"

T=$(mktemp -d /tmp/pqd-check-XXXXXX)
chmod 755 "$T"
trap 'rm -rf "$T"' EXIT
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PQD_CHECK_MARK=$T/mark

# check ARGS...: runs the launcher; sets out, rc.
check() {
  rc=0
  out=$("$L" "$@" 2>&1) || rc=$?
}
# expect RC PATTERN WHAT: the last check exited RC and printed a line matching PATTERN.
expect() {
  [[ $rc -eq $1 ]] && pass || fail "$3: exit $1 (got $rc): $out"
  grep -qE -- "$2" <<<"$out" && pass || fail "$3: says /$2/: $out"
}

# shellcheck disable=SC2046
cc -o "$T/linked" "$SRC/check/linked_libpq.c" $(pkg-config --cflags --libs libpq)
cc -static -o "$T/static" "$SRC/check/static_hello.c"

# A program linked with libpq: reached; the libpq file named; nothing of it ran.
check --check "$T/linked"
expect 0 '^verdict: +reached' "linked with -lpq"
grep -qE '^libpq: +linked directly \(DT_NEEDED libpq\.so\.5\)' <<<"$out" && pass || fail "linked: DT_NEEDED libpq.so.5 read: $out"
libpq=$(ldd "$T/linked" | awk '$1 ~ /^libpq\.so/ { print $3 }')
grep -qE "^under it: +libpq is .*libpq\.so" <<<"$out" && pass || fail "linked: which libpq it would load: $out"
[[ $(realpath "$(sed -n 's/^under it: *libpq is //p' <<<"$out")") == "$(realpath "$libpq")" ]] && pass || fail "linked: the libpq named is ldd's $libpq: $out"
[[ ! -e $T/mark ]] && pass || fail "--check ran none of the program's code (its constructor left a mark)"
grep -qE '^auditor: .*libpqdedup-audit\.so|^auditor: +none beside' <<<"$out" && pass || fail "linked: the auditor line: $out"
check --no-audit --check "$T/linked"
expect 0 '^auditor: +left out' "--no-audit before --check"

# Found on PATH, as execvp finds it.
mkdir -p "$T/bin"
cp "$T/linked" "$T/bin/pqd-linked"
rc=0
out=$(PATH="$T/bin:/usr/bin:/bin" "$L" --check pqd-linked 2>&1) || rc=$?
expect 0 "^program: +pqd-linked: $T/bin/pqd-linked" "a command found on PATH"

# A static program: not reached, exit 1.
check --check "$T/static"
expect 1 '^ELF: +statically linked' "a static program"
grep -q '^verdict: *NOT reached' <<<"$out" && pass || fail "static: the verdict says NOT reached: $out"
if [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; then
  check --check /bin/busybox
  expect 1 '^ELF: +statically linked' "busybox-static"
fi

# A setuid copy owned by another user: the loader ignores LD_PRELOAD; exit 1.
if [[ $(id -u) -eq 0 ]]; then
  cp "$T/linked" "$T/setuid"
  chown 65534 "$T/setuid"
  chmod 4755 "$T/setuid"
  check --check "$T/setuid"
  expect 1 '^set-ID: +setuid \(to uid 65534\)' "a setuid copy"
  cp "$T/linked" "$T/setgid"
  chgrp 65534 "$T/setgid"
  chmod 2755 "$T/setgid"
  check --check "$T/setgid"
  expect 1 '^set-ID: +setgid' "a setgid copy"
else
  echo "note: setuid part skipped: not root" >&2
fi

# A python3 script, by path and through env: the interpreter, and its modules decide.
printf '#!/usr/bin/python3\nimport psycopg2\n' >"$T/script.py"
printf '#!/usr/bin/env python3\nimport psycopg2\n' >"$T/env-script.py"
chmod 755 "$T/script.py" "$T/env-script.py"
check --check "$T/script.py"
expect 0 '^script: +#!/usr/bin/python3$' "a python3 script"
grep -qE '^runs: +/usr/bin/python3' <<<"$out" && pass || fail "python3 script: names the interpreter: $out"
grep -qE '^modules: .*psycopg' <<<"$out" && pass || fail "python3 script: its modules decide (psycopg): $out"
grep -qE '^verdict: +decided at run time' <<<"$out" && pass || fail "python3 script: decided at run time: $out"
rc=0
out=$(PATH=/usr/bin:/bin "$L" --check "$T/env-script.py" 2>&1) || rc=$?
expect 0 '^runs: +/usr/bin/python3' "a script run through /usr/bin/env python3"
# No #! line: execvp runs it with /bin/sh.
printf 'echo plain\n' >"$T/plain.sh"
chmod 755 "$T/plain.sh"
check --check "$T/plain.sh"
expect 0 'execvp runs it with /bin/sh' "a script without #!"
# A script whose interpreter is missing.
printf '#!/nonexistent/interp\n' >"$T/broken"
chmod 755 "$T/broken"
check --check "$T/broken"
expect 1 '^runs: +/nonexistent/interp: not found' "a script with a missing interpreter"

# A program that does not load libpq at start: may be reached at run time, exit 0.
check --check /bin/true
expect 0 '^libpq: +not loaded at start' "/bin/true"

# Missing, not executable, no program: 1, 1, 2.
check --check pqd_no_such_command_anywhere
expect 1 'not found on PATH' "a nonexistent command"
check --check /nonexistent/dir/prog
expect 1 'not found' "a nonexistent path"
printf 'x\n' >"$T/noexec"
chmod 644 "$T/noexec"
check --check "$T/noexec"
expect 1 'not an executable file' "a file that is not executable"
check --check
expect 2 'needs a program' "--check with no program"

# "check" as a word is a command, not the option.
printf '#!/bin/sh\necho "ran the command named check"\n' >"$T/bin/check"
chmod 755 "$T/bin/check"
rc=0
# (In sanitizer builds the runtime leads LD_PRELOAD, as the library needs it first.)
out=$(env ${PQD_TEST_SANITIZER_RUNTIME:+LD_PRELOAD=$PQD_TEST_SANITIZER_RUNTIME} PATH="$T/bin:/usr/bin:/bin" "$L" check 2>&1) || rc=$?
[[ $rc -eq 0 && $out == "ran the command named check" ]] && pass || fail "'pqdedup check' runs a command named check (rc $rc): $out"

checks_done test_check

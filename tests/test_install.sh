#!/usr/bin/env bash
# test_install.sh: `cmake --install` at two prefixes and a moved DESTDIR staging: the launcher finds its own libraries in each, never in the current directory.
#
# Run by ctest (tests/install.cmake) with PQD_TEST_BUILD_DIR (a configured, built tree) and
# PQD_TEST_FLEET_WORKER (a plain libpq program); LD_PRELOAD is unset. With the test server's
# variables set, one install's launcher also runs a churning program against it. Each check prints "FAIL: ..." when it does not hold;
# the script exits 1 if any failed.
set -euo pipefail

BUILD=${PQD_TEST_BUILD_DIR:?PQD_TEST_BUILD_DIR is not set}

# shellcheck source=tests/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

T=$(mktemp -d /tmp/pqd-install-XXXXXX)
trap 'rm -rf "$T"' EXIT
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# The library directory the build was configured with, relative to the prefix (lib, or
# lib/<multiarch> under /usr), from the cache.
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
mandir=$(sed -n 's/^CMAKE_INSTALL_MANDIR:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
[[ -n $libdir && $libdir != /* ]] && pass || fail "a relative CMAKE_INSTALL_LIBDIR in the cache: '$libdir'"
have_auditor=0
[[ -f $BUILD/libpqdedup-audit.so ]] && have_auditor=1

# check_tree PREFIX WHAT: the launcher in PREFIX/bin preloads PREFIX's library and auditor,
# and they are really loaded into the command.
check_tree() {
  local prefix=$1 what=$2 lib=$1/$libdir/pqdedup
  [[ -x $prefix/bin/pqdedup ]] && pass || fail "$what: $prefix/bin/pqdedup installed"
  [[ -f $lib/libpqdedup.so ]] && pass || fail "$what: $lib/libpqdedup.so installed"
  [[ ! -e $prefix/$libdir/libpqdedup.so ]] && pass || fail "$what: nothing in the public library directory"
  if [[ $have_auditor -eq 1 ]]; then
    [[ -f $lib/libpqdedup-audit.so ]] && pass || fail "$what: $lib/libpqdedup-audit.so installed"
  fi
  [[ -f $prefix/${mandir:-share/man}/man1/pqdedup.1 ]] && pass || fail "$what: the man page installed in ${mandir:-share/man}/man1"
  local out rc=0
  out=$("$prefix/bin/pqdedup" -- env 2>&1) || rc=$?
  [[ $rc -eq 0 ]] && pass || fail "$what: the launcher runs env (rc $rc): $out"
  local real_lib
  real_lib=$(realpath "$lib")
  grep -qx "LD_PRELOAD=$real_lib/libpqdedup.so" <<<"$out" && pass || fail "$what: LD_PRELOAD is $real_lib/libpqdedup.so: $(grep '^LD_PRELOAD' <<<"$out")"
  if [[ $have_auditor -eq 1 ]]; then
    grep -qx "LD_AUDIT=$real_lib/libpqdedup-audit.so" <<<"$out" && pass || fail "$what: LD_AUDIT is $real_lib/libpqdedup-audit.so: $(grep '^LD_AUDIT' <<<"$out")"
  fi
  # Loaded for real: both objects are mapped into the command.
  out=$("$prefix/bin/pqdedup" -- cat /proc/self/maps 2>&1) || true
  grep -q " $real_lib/libpqdedup.so\$" <<<"$out" && pass || fail "$what: $real_lib/libpqdedup.so is mapped into the command"
  if [[ $have_auditor -eq 1 ]]; then
    grep -q " $real_lib/libpqdedup-audit.so\$" <<<"$out" && pass || fail "$what: the auditor is mapped into the command"
  fi
  out=$("$prefix/bin/pqdedup" --version 2>&1) || true
  [[ $out == "pqdedup "* ]] && pass || fail "$what: --version: $out"
}

# is_stripped FILE: no symbol table left (--strip).
is_stripped() { ! readelf -S "$1" | grep -q '\.symtab'; }

# 1. Two prefixes, stripped.
for p in "$T/prefix-one" "$T/second prefix/x"; do
  if cmake --install "$BUILD" --prefix "$p" --strip >"$T/log" 2>&1; then pass; else fail "cmake --install --prefix $p: $(cat "$T/log")"; fi
done
check_tree "$T/prefix-one" "--prefix prefix-one"
# A space in the prefix cannot go into LD_PRELOAD: the launcher refuses with 125, saying why.
rc=0
"$T/second prefix/x/bin/pqdedup" -- true 2>"$T/err" || rc=$?
[[ $rc -eq 125 ]] && grep -q "LD_PRELOAD cannot carry" "$T/err" && pass || fail "a prefix with a space: exit 125 and why (rc $rc: $(cat "$T/err"))"
if cmake --install "$BUILD" --prefix "$T/prefix-two" --strip >"$T/log" 2>&1; then pass; else fail "cmake --install --prefix prefix-two"; fi
check_tree "$T/prefix-two" "--prefix prefix-two"
for f in bin/pqdedup "$libdir/pqdedup/libpqdedup.so" "$libdir/pqdedup/libpqdedup-audit.so"; do
  [[ -e $T/prefix-two/$f ]] || continue
  is_stripped "$T/prefix-two/$f" && pass || fail "--strip: $f has no symbol table"
done
# An unstripped install keeps the symbols (the check above means something).
cmake --install "$BUILD" --prefix "$T/unstripped" >/dev/null 2>&1
! is_stripped "$T/unstripped/bin/pqdedup" && pass || fail "without --strip the launcher keeps its symbol table"

# 2. DESTDIR staging, then the staged tree moved elsewhere.
if DESTDIR="$T/stage" cmake --install "$BUILD" --prefix /opt/pqdedup-test --strip >"$T/log" 2>&1; then pass; else fail "DESTDIR staging: $(cat "$T/log")"; fi
mkdir -p "$T/moved/deeper"
mv "$T/stage/opt/pqdedup-test" "$T/moved/deeper/pqdedup"
check_tree "$T/moved/deeper/pqdedup" "DESTDIR staging moved"

# 3. A symlink to the launcher from elsewhere: it follows its own executable.
mkdir -p "$T/links"
ln -s "$T/prefix-two/bin/pqdedup" "$T/links/pqdedup"
out=$("$T/links/pqdedup" -- env 2>&1) || true
grep -qx "LD_PRELOAD=$(realpath "$T/prefix-two/$libdir/pqdedup")/libpqdedup.so" <<<"$out" && pass || fail "through a symlink: the library beside the real launcher: $(grep '^LD_PRELOAD' <<<"$out")"

# 4. Never the current directory: a launcher alone, run from a directory holding a library
# (and from one whose lib/pqdedup holds one), uses neither.
installed=$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$BUILD/CMakeCache.txt")/$libdir/pqdedup/libpqdedup.so
mkdir -p "$T/alone/bin" "$T/cwd/lib/pqdedup" "$T/cwd/bin"
cp "$T/prefix-two/bin/pqdedup" "$T/alone/bin/pqdedup"
cp "$BUILD/libpqdedup.so" "$T/cwd/libpqdedup.so"
cp "$BUILD/libpqdedup.so" "$T/cwd/lib/pqdedup/libpqdedup.so"
rc=0
out=$(cd "$T/cwd/bin" && ../../alone/bin/pqdedup -- env 2>&1) || rc=$?
if [[ -e $installed ]]; then
  grep -qx "LD_PRELOAD=$(realpath "$installed")" <<<"$out" && pass || fail "a launcher alone: the configured directory's library, not the current directory's: $out"
else
  [[ $rc -eq 125 ]] && pass || fail "a launcher alone, no library where it looks: exit 125 (rc $rc): $out"
  grep -q 'looked in' <<<"$out" && pass || fail "a launcher alone says where it looked: $out"
  grep -q "$(dirname "$installed")" <<<"$out" && pass || fail "... including the configured directory: $out"
fi
! grep -q "$T/cwd" <<<"$out" && pass || fail "the current directory is never used: $out"

# 5. At work: the launcher of a --prefix install, run from there, pools a churning program's
# connections (when the test server is up: the harness's PGHOST and the worker program).
if [[ -n ${PGHOST:-} && -x ${PQD_TEST_FLEET_WORKER:-} ]]; then
  out=$("$T/prefix-two/bin/pqdedup" --stats -- "$PQD_TEST_FLEET_WORKER" work -n 100 \
        "dbname=postgres application_name=pqdt_install_$$" 2>&1) || true
  grep -q '^work .* ok=100 errors=0 .* backends=[12] ' <<<"$out" && pass || fail "the prefix-two launcher: 100 connects on 1 or 2 server backends: $out"
  grep -q 'stats connects=100 opened=[12] ' <<<"$out" && pass || fail "the prefix-two launcher: its library's stats line: $out"
fi

checks_done test_install

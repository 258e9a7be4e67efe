#!/usr/bin/env bash
# test_package.sh: builds the Debian package (scripts/build-deb.sh, lintian included), extracts it with dpkg -x into a temporary root and checks its layout and that the extracted launcher finds its own libraries.
#
# Run by ctest (tests/package.cmake, plain builds only) with PQD_TEST_SOURCE_DIR and
# PQD_PACKAGE_OUT (where the .deb goes); LD_PRELOAD is unset. Nothing is installed
# system-wide; needs no server.
set -euo pipefail

SRC=${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}
ROOT=$(cd "$SRC/.." && pwd -P)
OUT=${PQD_PACKAGE_OUT:?PQD_PACKAGE_OUT is not set}

# shellcheck source=tests/checks.sh
. "$SRC/checks.sh"

T=$(mktemp -d /tmp/pqd-package-XXXXXX)
trap 'rm -rf "$T"' EXIT
unset LD_PRELOAD LD_AUDIT
for v in $(env | sed -n 's/^\(PQDEDUP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# The version is the same in CMakeLists.txt and debian/changelog.
version=$(sed -n 's/^project(pqdedup VERSION \([0-9.]*\) .*/\1/p' "$ROOT/CMakeLists.txt")
changelog_version=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
[[ -n $version && $version == "$changelog_version" ]] && pass || fail "CMakeLists.txt's version ($version) is debian/changelog's ($changelog_version)"

start=$SECONDS
if "$ROOT/scripts/build-deb.sh" --out "$OUT" >"$T/build.log" 2>&1; then
  pass
else
  fail "scripts/build-deb.sh (lintian included): $(tail -n 40 "$T/build.log")"
  checks_done test_package
  exit 1
fi
echo "the package was built and checked with lintian in $((SECONDS - start)) s"
grep -E '^[EW]: ' "$T/build.log" >&2 || true

arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb=$OUT/pqdedup_${changelog_version}_$arch.deb
[[ -f $deb ]] && pass || fail "the package is $deb: $(ls "$OUT")"
[[ $(dpkg-deb -f "$deb" Package) == pqdedup ]] && pass || fail "Package: pqdedup"
depends=$(dpkg-deb -f "$deb" Depends)
[[ $depends == *libpq5* && $depends == *libc6* ]] && pass || fail "Depends has libpq5 and libc6: $depends"

# The layout: the launcher in /usr/bin, the library and the auditor in a private directory,
# nothing in the public library directory, the man page, the docs and copyright.
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' >"$T/contents"
priv=/usr/lib/$multiarch/pqdedup
want=(/usr/bin/pqdedup "$priv/libpqdedup.so" /usr/share/man/man1/pqdedup.1.gz
      /usr/share/doc/pqdedup/copyright /usr/share/doc/pqdedup/changelog.gz)
[[ $arch == amd64 ]] && want+=("$priv/libpqdedup-audit.so")
for f in "${want[@]}"; do
  grep -qx "$f" "$T/contents" && pass || fail "the package has $f"
done
for f in README.md NEWS CLIENTS.md RELIABILITY.md; do
  grep -qE "^/usr/share/doc/pqdedup/$f(\.gz)?\$" "$T/contents" && pass || fail "the package has the doc $f"
done
! grep -E "^/usr/lib/$multiarch/[^/]+\$" "$T/contents" && pass || fail "nothing in /usr/lib/$multiarch itself"
! grep -q '^/usr/local' "$T/contents" && pass || fail "nothing under /usr/local"

# Extracted into a temporary root: the launcher there finds the libraries there.
dpkg -x "$deb" "$T/root"
R=$T/root
out=$("$R/usr/bin/pqdedup" --version 2>&1) || true
[[ $out == "pqdedup $version" ]] && pass || fail "the extracted launcher's --version: $out"
out=$("$R/usr/bin/pqdedup" -- env 2>&1) || true
grep -qx "LD_PRELOAD=$R$priv/libpqdedup.so" <<<"$out" && pass || fail "the extracted launcher preloads $R$priv/libpqdedup.so: $(grep '^LD_' <<<"$out")"
if [[ $arch == amd64 ]]; then
  grep -qx "LD_AUDIT=$R$priv/libpqdedup-audit.so" <<<"$out" && pass || fail "the extracted launcher audits with $R$priv/libpqdedup-audit.so: $(grep '^LD_' <<<"$out")"
fi
out=$("$R/usr/bin/pqdedup" -- cat /proc/self/maps 2>&1) || true
grep -q " $R$priv/libpqdedup.so\$" <<<"$out" && pass || fail "the extracted library is loaded into the command"
out=$("$R/usr/bin/pqdedup" --check /usr/lib/postgresql/15/bin/psql 2>&1) || true
grep -qE "^library: +$R$priv/libpqdedup.so\$" <<<"$out" && pass || fail "--check names the extracted library: $out"
for f in usr/bin/pqdedup "${priv#/}/libpqdedup.so"; do
  ! readelf -S "$R/$f" | grep -q '\.symtab' && pass || fail "$f is stripped"
done
zcat "$R/usr/share/man/man1/pqdedup.1.gz" >"$T/pqdedup.1"
[[ -z $(groff -man -ww -z "$T/pqdedup.1" 2>&1) ]] && pass || fail "the packaged man page renders without warnings"
MANWIDTH=80 man -l "$R/usr/share/man/man1/pqdedup.1.gz" 2>/dev/null | grep -q '^SYNOPSIS' && pass || fail "man -l renders the packaged man page"
head -1 "$R/usr/share/doc/pqdedup/copyright" | grep -q '^Format: ' && pass || fail "debian/copyright is machine-readable"

checks_done test_package

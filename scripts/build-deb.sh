#!/usr/bin/env bash
# build-deb.sh: builds the pqdedup Debian package from this repository (dpkg-buildpackage -us -uc -b), after installing its build dependencies, and runs lintian on it.
#
# Usage: scripts/build-deb.sh [--out DIR] [--no-lintian]
#   --out DIR      where the .deb, .ddeb, .buildinfo and .changes go (default: build/deb)
#   --no-lintian   skip lintian
# The build runs in a copy of the source tree in a temporary directory, so the repository
# is left as it was. Exit status: 0 when the package was built and lintian found no
# error; 1 otherwise. Install the result with: sudo apt-get install ./build/deb/pqdedup_*.deb
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
OUT=$ROOT/build/deb
LINTIAN=1

say() { echo "build-deb: $*"; }
die() { echo "build-deb: ERROR: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift ;;
    --out=*) OUT=${1#*=} ;;
    --no-lintian) LINTIAN=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done

# The tools, and debian/control's Build-Depends (dpkg-checkbuilddeps checks the two agree).
PACKAGES=(dpkg-dev debhelper cmake make gcc libc6-dev pkg-config libpq-dev uthash-dev libxxhash-dev)
[[ $LINTIAN -eq 0 ]] || PACKAGES+=(lintian)
"$ROOT/scripts/ensure-packages.sh" "${PACKAGES[@]}" || die "the build dependencies are missing"

start=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pqdedup-deb.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
version=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
SRC=$WORK/pqdedup-$version
mkdir "$SRC"
# The source tree without git's data, build trees or an earlier in-tree package build.
tar -C "$ROOT" -cf - --exclude=./.git --exclude='./build*' --exclude='./obj-*' \
    --exclude=./debian/pqdedup --exclude=./debian/.debhelper --exclude=./debian/files \
    --exclude='./debian/*.substvars' --exclude='./debian/*debhelper*' --exclude=./debian/tmp . |
  tar -C "$SRC" -xf -

(cd "$SRC" && dpkg-checkbuilddeps) || die "debian/control needs build dependencies this script does not install"
jobs=$(nproc)
(( jobs <= 2 )) || jobs=2
say "building pqdedup $version in $SRC"
if ! (cd "$SRC" && DEB_BUILD_OPTIONS="parallel=$jobs ${DEB_BUILD_OPTIONS:-}" \
      dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1); then
  tail -n 60 "$WORK/build.log" >&2
  die "dpkg-buildpackage failed"
fi
mkdir -p "$OUT"
shopt -s nullglob
artifacts=("$WORK"/*.deb "$WORK"/*.ddeb "$WORK"/*.buildinfo "$WORK"/*.changes)
[[ ${#artifacts[@]} -gt 0 ]] || die "dpkg-buildpackage left no package"
for f in "${artifacts[@]}"; do
  rm -f -- "$OUT/$(basename "$f")"
  mv -- "$f" "$OUT/"
done
say "built in $((SECONDS - start)) s:"
for f in "${artifacts[@]}"; do say "  $OUT/$(basename "$f")"; done

if [[ $LINTIAN -eq 1 ]]; then
  changes=$(ls "$OUT"/pqdedup_"$version"_*.changes)
  say "lintian $changes"
  # Errors fail the build; warnings and the rest are shown.
  lintian --fail-on error --display-info "$changes" || die "lintian found errors"
  say "lintian: no errors"
fi

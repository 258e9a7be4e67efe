#!/bin/sh
# check_wrapped.sh CC EXPORTS_MAP STAMP: fails the build when the installed libpq headers declare
# a function that takes a PGconn * and intercepted.h has no row for it (such a function would be
# handed a pqdedup handle and dereference it as libpq's PGconn).
set -eu
CC=$1 MAP=$2 STAMP=$3
INCLUDEDIR=$(pkg-config --variable=includedir libpq)
wrapped=$(tr ' ;{}' '\n\n\n\n' <"$MAP" | grep -E '^(PQ|lo_)' | sort -u)
# Every declaration, one per line, from the preprocessed headers; the name before the first
# "(" of those whose parameter list names PGconn.
declared=$(printf '#include <libpq-fe.h>\n#include <libpq-events.h>\n' |
  "$CC" -E -P -x c -I"$INCLUDEDIR" - | tr '\n' ' ' | tr ';' '\n' |
  grep -v typedef | grep -E '\([^()]*PGconn[^()]*\)' |
  sed -E 's/^.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\(.*$/\1/' | sort -u)
missing=$(printf '%s\n' "$declared" | grep -vxF "$wrapped" || true)
if [ -n "$missing" ]; then
  echo "check_wrapped: libpq's headers in $INCLUDEDIR declare functions that take a PGconn * and" >&2
  echo "have no row in src/intercepted.h (add one each):" $missing >&2
  exit 1
fi
echo "check_wrapped: every one of $(printf '%s\n' "$declared" | wc -l) libpq functions that take a PGconn * is wrapped" >"$STAMP"

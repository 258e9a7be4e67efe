#!/bin/sh
# future_libpq.sh CC SOURCE OUT_DIR PG_PKGLIBDIR: builds OUT_DIR/libpq.so.5, a libpq that exports
# one function pqdedup does not know (PQfutureThing, from SOURCE) beside all of libpq 15's.
#
# It is Debian's static libpq (libpq-dev's libpq.a) whole, linked with libpq's own static
# dependencies (pkg-config --libs --static libpq: libpgcommon and libpgport, whose
# position-independent *_shlib.a builds are in PG_PKGLIBDIR, from postgresql-server-dev-15),
# and exporting exactly what the installed libpq.so.5 exports plus PQfutureThing (a version
# script made from the installed library's dynamic symbols, as libpq's own is made from its
# exports.txt). Exits non-zero, saying why, when it cannot be built.
set -eu
CC=$1 SOURCE=$2 OUT=$3 PKGLIBDIR=$4
LIBDIR=$(pkg-config --variable=libdir libpq)
INCLUDEDIR=$(pkg-config --variable=includedir libpq)
for f in "$LIBDIR/libpq.a" "$LIBDIR/libpq.so.5" "$PKGLIBDIR/libpgcommon_shlib.a" "$PKGLIBDIR/libpgport_shlib.a"; do
  [ -f "$f" ] || { echo "future_libpq.sh: $f is missing" >&2; exit 1; }
done
mkdir -p "$OUT"
{
  echo "{ global:"
  nm -D --defined-only "$LIBDIR/libpq.so.5" | awk '{ print "  " $3 ";" }'
  echo "  PQfutureThing;"
  echo "  local: *;"
  echo "};"
} >"$OUT/libpq.map"
# libpq's other dependencies: the shared libraries the installed libpq.so.5 names as NEEDED,
# by path (Debian installs no libgssapi_krb5.so or libldap.so link without their -dev packages).
needed=""
for name in $(readelf -d "$LIBDIR/libpq.so.5" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
  case $name in libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*) continue ;; esac
  path=$(ldd "$LIBDIR/libpq.so.5" | awk -v n="$name" '$1 == n { print $3 }')
  [ -f "$path" ] || { echo "future_libpq.sh: libpq's dependency $name not found" >&2; exit 1; }
  needed="$needed $path"
done
"$CC" -shared -fPIC -o "$OUT/libpq.so.5.tmp" -Wl,-soname,libpq.so.5 -Wl,--version-script="$OUT/libpq.map" \
  -Wl,--no-undefined -I"$INCLUDEDIR" "$SOURCE" \
  -Wl,--whole-archive "$LIBDIR/libpq.a" -Wl,--no-whole-archive \
  "$PKGLIBDIR/libpgcommon_shlib.a" "$PKGLIBDIR/libpgport_shlib.a" $needed -lm -ldl -pthread
mv "$OUT/libpq.so.5.tmp" "$OUT/libpq.so.5"

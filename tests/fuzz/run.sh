#!/usr/bin/env bash
# tests/fuzz/run.sh: builds the libFuzzer target for the key builder (fuzz_key.c) with clang and runs it for a while.
#
# Usage: tests/fuzz/run.sh [--seconds N] [--build-only] [--replay] [--build-dir DIR] [-- libFuzzer args]
#   --seconds N    fuzz for N seconds (default 60), starting from the seed corpus tests/fuzz/corpus/
#   --replay       only run every file of the seed corpus once (a regression check, ~1 s)
#   --build-only   only build DIR/fuzz_key
#   --build-dir D  where to build (default build/fuzz under the repository)
# New inputs go to DIR/corpus (the seed corpus is not touched); a crash or a violated property
# (see fuzz_key.c) leaves DIR/artifacts/crash-* and exits non-zero: copy it into
# tests/fuzz/corpus/ as a regression seed once the library is fixed. As root it installs clang
# and libclang-rt-14-dev with apt-get when missing. Needs no server.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SEEDS=$ROOT/tests/fuzz/corpus
seconds=60
build_only=0
replay=0
BUILD=$ROOT/build/fuzz
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --seconds=*) seconds=${1#*=} ;;
    --build-only) build_only=1 ;;
    --replay) replay=1 ;;
    --build-dir) BUILD=$2; shift ;;
    --build-dir=*) BUILD=${1#*=} ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: --seconds needs a positive number" >&2; exit 2; }

"$ROOT/scripts/ensure-packages.sh" clang libclang-rt-14-dev libpq-dev uthash-dev libxxhash-dev pkg-config

CC=${FUZZ_CC:-clang}
mkdir -p "$BUILD/corpus" "$BUILD/artifacts"
# The library core that key.c (with the euid it reads, credentials.c) and settings.c need,
# instrumented like the target.
# shellcheck disable=SC2046  # pkg-config prints several words
"$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Wall -Wextra -std=gnu11 \
  -I"$ROOT/src" $(pkg-config --cflags libpq) \
  "$ROOT/tests/fuzz/fuzz_key.c" "$ROOT/src/key.c" "$ROOT/src/credentials.c" "$ROOT/src/settings.c" "$ROOT/src/log.c" \
  $(pkg-config --libs libpq) -lpthread -o "$BUILD/fuzz_key"
echo "fuzz: built $BUILD/fuzz_key"
[[ $build_only -eq 0 ]] || exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ $replay -eq 1 ]]; then
  echo "fuzz: replaying $(find "$SEEDS" -type f | wc -l) seeds"
  exec "$BUILD/fuzz_key" -runs=0 "${extra[@]}" "$SEEDS"/*
fi
echo "fuzz: fuzzing for ${seconds}s from $(find "$SEEDS" -type f | wc -l) seeds"
exec "$BUILD/fuzz_key" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/" "${extra[@]}" "$BUILD/corpus" "$SEEDS"

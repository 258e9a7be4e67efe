#!/usr/bin/env bash
# check_exports.sh EXPORTS_MAP INTERCEPTED_H LIBPQDEDUP_SO AUDIT_SO: the list of wrapped names agrees everywhere.
#
# src/intercepted.h (what the auditor and the GOT sweep use), src/exports.map (what the
# version script exports) and `nm -D` of the built libpqdedup.so must name the same libpq
# functions; the library exports nothing else but the auditor's channel, an object. The
# auditor exports only the rtld-audit entry points and needs no library at all (it is
# freestanding: a libc of its own would be loaded into every process).
set -uo pipefail
[[ $# -eq 4 ]] || { echo "usage: $0 EXPORTS_MAP INTERCEPTED_H LIBPQDEDUP_SO AUDIT_SO" >&2; exit 2; }
MAP=$1 LIST=$2 LIB=$3 AUDIT=$4
failed=0 passed=0
check() { # check DESCRIPTION EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then
    passed=$((passed + 1)); echo "ok: $1"
  else
    failed=$((failed + 1)); printf 'FAIL: %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3" >&2
  fi
}
words() { tr '\n' ' ' | sed 's/ $//'; }

list=$(sed -n 's/^ *X(\([A-Za-z_0-9]*\)).*/\1/p' "$LIST" | sort | words)
map=$(sed -n '/global:/,/local:/p' "$MAP" | sed -n 's/^ *\([A-Za-z_0-9]*\);.*/\1/p' | sort | words)
lib_functions=$(nm -D --defined-only "$LIB" | awk '$2 == "T" {print $3}' | sort | words)
lib_others=$(nm -D --defined-only "$LIB" | awk '$2 != "T" {print $2, $3}' | sort | words)

[[ -n $list ]] || { echo "FAIL: no X(name) line in $LIST" >&2; exit 1; }
check "exports.map exports the intercepted.h list and the channel" \
  "$(printf '%s\n' $list pqdedup_audit_channel | sort | words)" "$map"
check "libpqdedup.so's exported functions are the intercepted.h list" "$list" "$lib_functions"
check "libpqdedup.so exports no other symbol but the channel (an initialized object)" "D pqdedup_audit_channel" "$lib_others"

check "the auditor exports only the audit interface" "la_objclose la_objopen la_symbind64 la_version" \
  "$(nm -D --defined-only "$AUDIT" | awk '{print $3}' | sort | words)"
check "the auditor has no undefined symbol" "" "$(nm -D --undefined-only "$AUDIT" | words)"
check "the auditor needs no library (freestanding)" "" "$(readelf -d "$AUDIT" | grep NEEDED | words)"

echo "check_exports: $passed passed, $failed failed"
[[ $failed -eq 0 ]]

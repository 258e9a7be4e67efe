#!/usr/bin/env bash
# check_exports.sh CC INTERCEPTED_H EXPORTS_MAP LIBPQDEDUP_SO AUDIT_SO: the list of wrapped names agrees everywhere.
#
# src/intercepted.h is the one list: its PQDEDUP_INTERCEPTED rows are what the library wraps
# (read here by preprocessing the header with CC, as the build does), its
# PQDEDUP_NOT_INTERCEPTED names what it must leave to libpq. EXPORTS_MAP is the version script
# the build generated from it (build/src/exports.map). The built libpqdedup.so must export
# exactly the wrapped functions, the libc calls that change the euid (credentials.h, beside
# intercepted.h: the key's cached euid is read again after each), plus the auditor's channel
# (an object), and none of the others. The auditor exports only the rtld-audit entry points
# and needs no library at all (it is freestanding: a libc of its own would be loaded into
# every process).
set -uo pipefail
[[ $# -eq 5 ]] || { echo "usage: $0 CC INTERCEPTED_H EXPORTS_MAP LIBPQDEDUP_SO AUDIT_SO" >&2; exit 2; }
CC=$1 LIST=$2 MAP=$3 LIB=$4 AUDIT=$5
failed=0 passed=0
check() { # check DESCRIPTION EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then
    passed=$((passed + 1)); echo "ok: $1"
  else
    failed=$((failed + 1)); printf 'FAIL: %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3" >&2
  fi
}
words() { tr '\n' ' ' | sed 's/ $//'; }

# names MACRO [HEADER]: the first argument of every row of MACRO in HEADER (intercepted.h), one per line.
names() {
  printf '#define PQDEDUP_EXPORTS_MAP\n#include "%s"\n#define PQD_NAME(name, ...) PQD_NAME_IS name\n%s(PQD_NAME)\n' "${2:-$LIST}" "$1" |
    "$CC" -E -P -x c - | tr ' ' '\n' | sed -n '/^PQD_NAME_IS$/{n;p}' | sort
}
list=$(names PQDEDUP_INTERCEPTED | words)
not_wrapped=$(names PQDEDUP_NOT_INTERCEPTED | words)
credential_calls=$(names PQDEDUP_CREDENTIAL_CALLS "$(dirname "$LIST")/credentials.h" | words)
map=$(tr '\n' ' ' <"$MAP" | sed -n 's/.*global:\(.*\)local:.*/\1/p' | tr ' ;' '\n\n' | grep . | sort | words)
lib_functions=$(nm -D --defined-only "$LIB" | awk '$2 == "T" {print $3}' | sort | words)
lib_others=$(nm -D --defined-only "$LIB" | awk '$2 != "T" {print $2, $3}' | sort | words)

[[ $(wc -w <<<"$list") -ge 100 ]] || { echo "FAIL: fewer than 100 PQDEDUP_INTERCEPTED rows read from $LIST: $list" >&2; exit 1; }
[[ $(wc -w <<<"$not_wrapped") -ge 50 ]] || { echo "FAIL: fewer than 50 PQDEDUP_NOT_INTERCEPTED names read from $LIST" >&2; exit 1; }
echo "intercepted.h: $(wc -w <<<"$list") wrapped, $(wc -w <<<"$not_wrapped") left to libpq"
check "no name is both wrapped and left to libpq" "" \
  "$(comm -12 <(tr ' ' '\n' <<<"$list") <(tr ' ' '\n' <<<"$not_wrapped") | words)"
[[ $credential_calls == "seteuid setresuid setreuid setuid" ]] || { echo "FAIL: credentials.h's list read as: $credential_calls" >&2; exit 1; }
check "the built exports.map exports the intercepted.h list, the credential calls and the channel" \
  "$(printf '%s\n' $list $credential_calls pqdedup_audit_channel | sort | words)" "$map"
check "libpqdedup.so's exported functions are the intercepted.h list and the credential calls" \
  "$(printf '%s\n' $list $credential_calls | sort | words)" "$lib_functions"
check "libpqdedup.so exports none of the functions left to libpq" "" \
  "$(comm -12 <(nm -D --defined-only "$LIB" | awk '{print $3}' | sort) <(tr ' ' '\n' <<<"$not_wrapped") | words)"
check "libpqdedup.so exports no other symbol but the channel (an initialized object)" "D pqdedup_audit_channel" "$lib_others"

check "the auditor exports only the audit interface" "la_objclose la_objopen la_symbind64 la_version" \
  "$(nm -D --defined-only "$AUDIT" | awk '{print $3}' | sort | words)"
check "the auditor has no undefined symbol" "" "$(nm -D --undefined-only "$AUDIT" | words)"
check "the auditor needs no library (freestanding)" "" "$(readelf -d "$AUDIT" | grep NEEDED | words)"

echo "check_exports: $passed passed, $failed failed"
[[ $failed -eq 0 ]]

# tests/checks.sh: pass/fail counting for the test scripts (sourced, not run).
# shellcheck shell=bash
#
# Usage: CONDITION && pass || fail "what should have held"; end the script with
# `checks_done NAME`, which prints "NAME: N passed, N failed" and returns 0 only when
# something passed and nothing failed.

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
  failed=$((failed + 1))
  echo "FAIL: $*" >&2
}
checks_done() {
  echo "$1: $passed passed, $failed failed"
  [[ $failed -eq 0 && $passed -gt 0 ]]
}

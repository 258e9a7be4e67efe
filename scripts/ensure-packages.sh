#!/usr/bin/env bash
# ensure-packages.sh: installs the Debian packages given as arguments that are missing (as root); shared by the demo, tests and bench.
# Usage: scripts/ensure-packages.sh PACKAGE...
# Exit status: 0 when all are installed afterwards; 1 (with the apt-get command to run)
# when some are missing and this is not root, or when apt-get fails.
set -euo pipefail

say() { echo "ensure-packages: $*"; }

if ! command -v dpkg-query >/dev/null; then
  say "not a Debian system: not checking packages"
  exit 0
fi
missing=()
for p in "$@"; do
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) == ii* ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  say "missing packages: ${missing[*]}" >&2
  say "as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
say "installing: ${missing[*]}"
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  say "apt-get could not install: ${missing[*]}" >&2
  exit 1
fi
rm -f "$log"

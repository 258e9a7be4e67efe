#!/usr/bin/env bash
# pg-down.sh DIR: stop (immediate) the throwaway server pg-up.sh started in DIR and remove DIR.
set -euo pipefail

die() { echo "pg-down: ERROR: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 DIR"
DIR=$1
[[ -d "$DIR" ]] || { echo "pg-down: $DIR is already gone"; exit 0; }
# Only ever delete what pg-up.sh made.
[[ -e "$DIR/.pqd-harness" ]] || die "$DIR was not made by pg-up.sh; not touching it"

DATA=$DIR/data
PGCTL=${PQD_TEST_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}
if [[ -f "$DATA/postmaster.pid" ]]; then
  owner=$(stat -c %U "$DATA")
  if [[ $(id -u) -eq 0 && $owner != root ]]; then
    (cd "$DIR" && runuser -u "$owner" -- "$PGCTL" -D "$DATA" -m immediate -w stop) || true
  else
    (cd "$DIR" && "$PGCTL" -D "$DATA" -m immediate -w stop) || true
  fi
fi
rm -rf -- "$DIR"
echo "pg-down: stopped and removed $DIR"

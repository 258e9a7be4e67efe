#!/usr/bin/env bash
# test_docs.sh: the man page renders cleanly, and src/settings.c, `pqdedup --help`, README's Settings table and the man page's ENVIRONMENT list the same settings with the same defaults.
#
# Run by ctest (tests/docs.cmake) with PQD_TEST_LAUNCHER, PQD_TEST_SOURCE_DIR and
# PQD_DOCS_SETTINGS (tests/docs_settings.c, which prints src/settings.c's names and
# defaults). Needs no server. Usage: test_docs.sh GROUP... (man_renders, version, settings_drift).
set -euo pipefail

L=${PQD_TEST_LAUNCHER:?PQD_TEST_LAUNCHER is not set}
ROOT=$(cd "${PQD_TEST_SOURCE_DIR:?PQD_TEST_SOURCE_DIR is not set}/.." && pwd)
MAN=$ROOT/man/pqdedup.1
README=$ROOT/README.md

# shellcheck source=tests/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

T=$(mktemp -d /tmp/pqd-docs-XXXXXX)
trap 'rm -rf "$T"' EXIT

# groff finds nothing to warn about; man(1) renders every section.
group_man_renders() {
  local warnings
  warnings=$(groff -man -ww -z "$MAN" 2>&1)
  [[ -z $warnings ]] && pass || fail "groff -man -ww -z warns: $warnings"
  local text
  text=$(MANWIDTH=80 man -l "$MAN" 2>"$T/man.err") || true
  [[ ! -s $T/man.err ]] && pass || fail "man -l writes to stderr: $(cat "$T/man.err")"
  local section
  for section in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" FILES EXAMPLES LIMITS "SEE ALSO"; do
    grep -qx "$section" <<<"$text" && pass || fail "man -l shows the $section section"
  done
}

# The version in CMakeLists.txt is the man page's and the one README's .deb commands name.
group_version() {
  local version
  version=$(sed -n 's/^project(pqdedup VERSION \([0-9.]*\) .*/\1/p' "$ROOT/CMakeLists.txt")
  [[ -n $version ]] && pass || fail "CMakeLists.txt's project() has a version"
  grep -q "^\.TH PQDEDUP 1 .*\"pqdedup $version\"" "$MAN" && pass || fail "the man page's .TH names pqdedup $version: $(grep '^\.TH' "$MAN")"
  local named
  for named in $(grep -o 'pqdedup_[0-9.]*_' "$README" | sort -u); do
    [[ $named == "pqdedup_${version}_" ]] && pass || fail "README names the package ${named}*.deb, not pqdedup_${version}_*.deb"
  done
}

# The man page's text with its font and character escapes taken out.
man_plain() {
  sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\(dq/"/g' -e 's/\\(lq/"/g' -e 's/\\(rq/"/g' \
      -e 's/\\ / /g' -e 's/\\&//g' "$MAN"
}

# NAME<TAB>DEFAULT lines from each of the four places, into $T/{src,help,readme,man}.
collect() {
  "${PQD_DOCS_SETTINGS:?PQD_DOCS_SETTINGS is not set}" | sort >"$T/src"
  man_plain >"$T/man.txt"
  "$L" --help >"$T/help.txt"

  # --help: "NAME=V:" is a switch (V is what it sets, never the default: written "!V");
  # otherwise the default is the first item of the first "(...)" of the entry, which runs
  # from the variable to the next option line.
  awk '
    /^  +-/ { if (name != "") print name "\t" text; name = ""; text = "" }
    match($0, /PQDEDUP_[A-Z_]+/) { name = substr($0, RSTART, RLENGTH); text = substr($0, RSTART); next }
    name != "" && match($0, /^ +/) && RLENGTH >= 20 { sub(/^ +/, ""); text = text " " $0 }
    END { if (name != "") print name "\t" text }' "$T/help.txt" |
    while IFS=$'\t' read -r name text; do
      local value
      if [[ $text =~ ^$name=([^:]*): ]]; then
        value="!${BASH_REMATCH[1]}"
      elif [[ $text =~ \(([^\)]*)\) ]]; then
        value=${BASH_REMATCH[1]%%;*}
        value=${value%% = *}
        value=${value#\"}
        value=${value%\"}
      else
        value="(no default shown)"
      fi
      printf '%s\t%s\n' "$name" "$value"
    done | sort >"$T/help"

  # README: the Settings table's rows, "| `NAME` | option | default | meaning |".
  grep '^| `PQDEDUP_' "$README" | awk -F' \\| ' '{
      name = $1; sub(/^\| `/, "", name); sub(/`$/, "", name)
      value = $3; sub(/ \(.*$/, "", value); gsub(/`/, "", value)
      print name "\t" value }' | sort >"$T/readme"
  # ... and the option column, for the option check.
  grep '^| `PQDEDUP_' "$README" | awk -F' \\| ' '{
      name = $1; sub(/^\| `/, "", name); sub(/`$/, "", name)
      print name "\t" $2 }' >"$T/readme-options"

  # The man page: each ".TP / .B NAME" entry of ENVIRONMENT and its "Default: X." line.
  awk '
    /^\.SH / { in_env = ($0 == ".SH ENVIRONMENT"); next }
    !in_env { next }
    /^\.TP/ { tp = 1; next }
    tp && /^\.B PQDEDUP_/ { name = $2; tp = 0; next }
    { tp = 0 }
    name != "" && /^Default: / { v = substr($0, 10); sub(/\.$/, "", v); sub(/ \(.*$/, "", v)
                                 gsub(/"/, "", v); print name "\t" v; name = "" }' "$T/man.txt" |
    sort >"$T/man"
  awk '/^\.SH / { in_env = ($0 == ".SH ENVIRONMENT"); next }
       in_env && prev ~ /^\.TP/ && /^\.B PQDEDUP_/ { print $2 } { prev = $0 }' "$T/man.txt" |
    sort >"$T/man-names"
}

group_settings_drift() {
  collect
  [[ -s $T/src ]] && pass || fail "docs_settings printed the settings"
  # Every PQDEDUP_ variable src/ names as a string is one docs_settings knows.
  local name
  # (Variables earlier versions read, which src/settings.c only warns about, are left out.)
  local removed
  removed=$(awk '/removed_settings\[\] = \{/,/^};/' "$ROOT/src/settings.c" | grep -o '"PQDEDUP_[A-Z_]*"' | tr -d '"')
  for name in $(grep -oh '"PQDEDUP_[A-Z_]*"' "$ROOT"/src/*.c "$ROOT"/src/audit/*.c | tr -d '"' | sort -u |
                grep -vxF "${removed:-none}"); do
    grep -q "^$name	" "$T/src" && pass || fail "src/ reads $name, which is neither in setting_table nor in tests/docs_settings.c's extra_settings"
  done
  # The same names in all four places.
  cut -f1 "$T/src" >"$T/names.src"
  local place
  for place in help readme man; do
    cut -f1 "$T/$place" | sort -u >"$T/names.$place"
    [[ $place == man ]] && sort -u "$T/man-names" >"$T/names.man"
    if diff -u "$T/names.src" "$T/names.$place" >"$T/diff"; then
      pass
    else
      fail "the settings in src/settings.c (-) and in $place (+) differ: $(cat "$T/diff")"
    fi
  done
  # The same default for each.
  local default value
  while IFS=$'\t' read -r name default; do
    for place in readme man; do
      value=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$T/$place")
      [[ $value == "$default" ]] && pass || fail "$name: default $default in src/settings.c, '$value' in $place"
    done
    value=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$T/help")
    if [[ $value == !* ]]; then
      [[ ${value#!} != "$default" ]] && pass || fail "$name: --help's switch sets ${value#!}, which is the default"
    else
      [[ $value == "$default" ]] && pass || fail "$name: default $default in src/settings.c, '$value' in --help"
    fi
  done <"$T/src"
  # README's option column names options --help gives for the same variable, and the man
  # page's OPTIONS section has every option --help lists.
  local options opt line
  while IFS=$'\t' read -r name options; do
    line=$(grep -w -- "$name" "$T/help.txt")
    for opt in $(grep -o '`-[-a-z]*' <<<"$options" | tr -d '`'); do
      grep -qE -- "(^| )$opt([ ,=]|\$)" <<<"$line" && pass || fail "README gives $opt for $name; --help does not"
    done
  done <"$T/readme-options"
  for opt in $(grep -oE -- '(^| )--[a-z][-a-z]*' "$T/help.txt" | tr -d ' ' | sort -u); do
    grep -qE -- "^\.B[IR]? $opt( |\$)|^\.B[IR]? -[a-zA-Z] \", \" $opt( |\$)" "$T/man.txt" && pass || fail "--help lists $opt; the man page's OPTIONS do not"
  done
}

[[ $# -gt 0 ]] || set -- man_renders version settings_drift
for g in "$@"; do
  "group_$g"
done
checks_done test_docs

#!/usr/bin/env bash
# tests/fuzz/make-seeds.sh: writes the seed corpus tests/fuzz/corpus/ for fuzz_key (first byte: S string, A/E arrays, D setdb, V setting).
# Regression seeds that the fuzzer found are added by hand beside these (crash-*/oracle-* names).
set -euo pipefail
C=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/corpus
mkdir -p "$C"
s() { printf 'S%s' "$2" >"$C/$1"; }            # conninfo string
a() { local f=$1 m=$2; shift 2; { printf '%s' "$m"; local first=1; for t in "$@"; do
        [[ $first -eq 1 ]] || printf '\0'; first=0; printf '%s' "$t"; done; } >"$C/$f"; }
s str-basic         "host=localhost port=5432 dbname=postgres user=alice password=secret"
s str-spacing       "  host = localhost   dbname=postgres    user =alice "
s str-quotes        "password='it''s' user='a b' options='-c search_path=x\\,y' application_name='q\\'t\\\\'"
s str-escapes       "password=a\\ b\\\\c user=\\'x dbname='\\\\'"
s str-empty-values  "host='' dbname='' user='' password=''"
s str-duplicates    "user=alice user=bob dbname=a dbname=b password=1 password=2"
s str-unknown-kw    "host=localhost nosuchkeyword=1"
s str-missing-eq    "host localhost"
s str-unterminated  "password='abc"
s str-trailing-bs   "password=abc\\"
s str-multihost     "host=h1,h2,/tmp port=5432,5433, target_session_attrs=read-write"
s str-service       "service=mysvc user=alice"
s str-ssl           "sslmode=verify-full sslrootcert=/x/root.crt sslcert=c sslkey=k sslpassword=kpw sslsni=0"
s str-all-params    "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=100 connect_timeout=2 client_encoding=UTF8 gssencmode=disable krbsrvname=pg channel_binding=require replication=database requirepeer=postgres passfile=/p hostaddr=127.0.0.1 fallback_application_name=f"
s str-not-conninfo  "mydb"
s str-empty         ""
s uri-basic         "postgresql://alice:secret@localhost:5432/postgres?sslmode=disable"
s uri-short         "postgres://"
s uri-percent       "postgresql://al%69ce:p%40ss%2Fw%3Ad@h%6Fst/d%62?application_name=%41pp%20x"
s uri-bad-percent   "postgresql://host/db?x=%zz"
s uri-percent-nul   "postgresql://host/db?application_name=%00"
s uri-ipv6          "postgresql://[::1]:5432,[fe80::1%25eth0]:5433/db"
s uri-ipv6-bad      "postgresql://[::1/db"
s uri-socket        "postgresql://%2Fvar%2Frun%2Fpostgresql/db?user=bob"
s uri-query-host    "postgresql:///db?host=/tmp&port=5555&password=pw"
s uri-unknown-param "postgresql://h/db?nosuch=1"
s uri-multi-at      "postgresql://a@b@c/d"
s uri-dup-query     "postgresql://h/db?user=a&user=b"
s uri-no-value      "postgresql://h/db?sslmode"
s uri-ssl-alias     "postgresql://h/db?ssl=true"
head -c 60000 /dev/zero | tr '\0' 'x' | { printf 'Sapplication_name=' ; cat; } >"$C/str-huge-value"
{ printf 'Spassword='; head -c 20000 /dev/zero | tr '\0' "'"; } >"$C/str-huge-quotes"
{ printf 'S'; for i in $(seq 1 1500); do printf 'user=u%d ' "$i"; done; } >"$C/str-many-dups"
a arr-basic       A host localhost dbname postgres user alice password secret
a arr-empty-null  A host "" dbname $'\x01' user alice
a arr-unknown     A host h nosuch 1
a arr-unknown-empty A nosuch "" host h
a arr-odd         A host h user
a exp-conninfo    E dbname "host=h1 user=u password=p" user override
a exp-uri         E user first dbname "postgresql://a:b@h/db?port=1" port 2
a exp-null-first  E dbname $'\x01' dbname "host=x" dbname "y=1"
a exp-empty-first E dbname "" dbname "host=x"
a exp-bad         E dbname "host='x"
a exp-twice       E dbname "user=a" dbname "user=b"
a exp-plain       E dbname plaindb
a setdb-basic     D h 5432 "-c x=1" tty mydb alice pw
a setdb-conninfo  D h2 "" "" "" "host=h1 port=1 password=p1" "" pw2
a setdb-uri       D "" "" "" "" "postgresql://u:p@h/d" bob ""
a setdb-nulls     D $'\x01' $'\x01' $'\x01' $'\x01' $'\x01' $'\x01' $'\x01'
a setdb-bad       D h "" "" "" "host='" u p
a setdb-empty-db  D h "" "" "" "" u p
printf 'V5s' >"$C/set-duration"; printf 'V200ms' >"$C/set-ms"; printf 'V99999999999' >"$C/set-huge"
printf 'V-1' >"$C/set-neg"; printf 'Vabc' >"$C/set-garbage"; printf 'V1e9' >"$C/set-exp"
printf 'Vdebug' >"$C/set-level"; printf 'V 12 ' >"$C/set-spaces"; printf 'V9223372036854775807h' >"$C/set-overflow"
echo "make-seeds: $(ls "$C" | wc -l) files in $C"

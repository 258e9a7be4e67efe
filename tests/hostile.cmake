# tests/hostile.cmake: hostile input, app misuse, bad settings and security through the real preload (test_hostile.c, test_security.c).
# The libFuzzer run of the key builder is tests/fuzz/run.sh (clang; not a ctest).

# ~60 malformed/huge/escaped/duplicate/unknown/percent-encoded conninfo strings, URIs, arrays,
# PQsetdbLogin and async connects: the same status, error text and session (user, database,
# application_name, search_path) as plain libpq in a PQDEDUP_DISABLE=1 child, twice (the
# second time on kept connections); most connects reuse a backend, none a wrong one.
pqdedup_add_test(NAME hostile_inputs SOURCES test_hostile.c ARGS inputs TIMEOUT 300 LABELS hostile)
# PQfinish(NULL) is silent; a second PQfinish of a kept connection logs one warning and is
# ignored: the next two holders get the kept backend and it works.
pqdedup_add_test(NAME hostile_misuse PROGRAM test_hostile ARGS misuse
                 ENV PQDEDUP_LOG=warn LABELS hostile)
# Garbage, negative, huge values of PQDEDUP_* (children): exactly one warning line per bad
# variable and the default's behaviour (16 kept, 5 s wait, log off); good values are used.
pqdedup_add_test(NAME hostile_settings PROGRAM test_hostile ARGS settings SERIAL
                 TIMEOUT 180 LABELS hostile)

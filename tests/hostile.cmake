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
# variable and the default's behaviour (16 kept, 5 s wait, 100ms unbind, log off); good values
# are used.
pqdedup_add_test(NAME hostile_settings PROGRAM test_hostile ARGS settings SERIAL
                 TIMEOUT 180 LABELS hostile)

# --- Security (test_security.c) ---------------------------------------------------------------
# 2 threads, random identities (pqd_alice/pqd_bob x postgres/pqd_other, '-c role=...', postgres
# over the socket, wrong passwords), finished or held at random, SET ROLE / SET SESSION
# AUTHORIZATION left behind: every session is the one asked for, held ones again when used
# again; wrong passwords always fail.
pqdedup_add_test(NAME security_cross SOURCES test_security.c ARGS cross LABELS hostile security)
# The same with PQDEDUP_UNBIND_AFTER=0: a held idle connection lends its server connection to
# the next connect that needs one at once, so held connections used again run on other
# backends: each is still its own session, its SET ROLE / SET SESSION AUTHORIZATION included
# (such a connection keeps its backend), and some did move.
pqdedup_add_test(NAME security_cross_moves PROGRAM test_security ARGS cross
                 ENV PQDEDUP_UNBIND_AFTER=0 LABELS hostile security)
# ALTER ROLE ... PASSWORD and a rewritten .pgpass: the old password works again only on the
# kept backend and only within PQDEDUP_MAX_LIFETIME=1s, then fails as plain libpq; a changed
# PGPASSWORD fails at once.
pqdedup_add_test(NAME security_password_change PROGRAM test_security ARGS lifetime
                 ENV PQDEDUP_MAX_LIFETIME=1s LABELS hostile security)
# Root only (77 otherwise): a connection kept under euid 0 does not go to a connect made after
# seteuid, setreuid or setresuid to nobody, and does again once the euid is 0 again; in a child
# each, setuid and libcap's cap_setuid (which calls setuid) to nobody do the same (pqdedup
# reads the euid again only after those calls: credentials.c).
pqdedup_add_test(NAME security_euid PROGRAM test_security ARGS euid LABELS hostile security)
set_tests_properties(security_euid PROPERTIES SKIP_RETURN_CODE 77)
# A setuid copy of a libpq program run by nobody with LD_PRELOAD=libpqdedup.so: no pqdedup
# (no stats line, PQconnectdb is libpq's); the non-setuid copy loads it (control). Root only:
# skipped (77) otherwise.
add_executable(test_security_probe test_security_probe.c)
target_link_libraries(test_security_probe PRIVATE PkgConfig::LIBPQ dl)
# Plain, even in sanitizer builds: it runs setuid, where a sanitizer runtime is not preloaded.
set_target_properties(test_security_probe PROPERTIES COMPILE_OPTIONS "-Wall;-Wextra" LINK_OPTIONS "")
pqdedup_add_test(NAME security_setuid PROGRAM test_security ARGS setuid
                 ENV "PQD_SEC_PROBE=$<TARGET_FILE:test_security_probe>" LABELS hostile security)
set_tests_properties(security_setuid PROPERTIES SKIP_RETURN_CODE 77)
# At PQDEDUP_LOG=debug with PQDEDUP_LOG_FILE, passwords given every way (strings, URIs, arrays,
# expand_dbname, PQsetdbLogin, async, PGPASSWORD, sslpassword, unparsable) never reach the log
# (which does describe each connect) or stderr; the file is mode 0600.
pqdedup_add_test(NAME security_log_no_password PROGRAM test_security ARGS log LABELS hostile security)

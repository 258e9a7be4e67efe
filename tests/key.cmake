# tests/key.cmake: unit tests of the connection key (test_key.c), linked with the library core, no preload.

# Equivalent strings/URIs/arrays/PQsetdbLogin/env share a key; any differing parameter,
# password or relevant environment variable does not; unparsable input gets no key;
# key_describe hides the password; keys are stable across calls, cache clears and 4 threads.
pqdedup_add_test(NAME key_unit SOURCES test_key.c
                 LIBS pqdedup_core NO_PRELOAD LABELS key unit)

# tests/seed.cmake: the app this project started from, as deployed (tests/seed/): FastAPI +
# SQLAlchemy 1.4 + psycopg2 under uvicorn, an engine and Session per request never disposed of.
#
# NO_PRELOAD (the script runs the app plain, then under the launcher), NO_VALGRIND (python3
# under valgrind tests valgrind), SERIAL (it saturates its role's connection limit). Skipped in
# sanitizer builds (python3 cannot start with their runtime and libpq loaded). Debian packages:
# python3-fastapi python3-uvicorn python3-sqlalchemy python3-psycopg2.

# 300 requests from 16 concurrent clients, the role limited to 17 connections: plain libpq
# fails requests; under pqdedup with default settings every request succeeds, every write is
# committed exactly once, and the role never has more than 17 backends.
pqdedup_add_test(NAME seed_app COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/seed/run.sh
                 NO_PRELOAD NO_VALGRIND SERIAL TIMEOUT 300 LABELS seed)
set_tests_properties(seed_app PROPERTIES SKIP_RETURN_CODE 77)

# tests/sql_class.cmake: unit tests of the SQL classifier (test_sql_class.c), compiled with src/sql_class.c, no server, no preload.

# Which strings leave session state behind (SELECT vs LISTEN, temp tables, set_config, ...;
# quotes, comments, dollar quotes), and what the scan notes: SET/RESET of a session parameter
# (name folded, statement text), PREPARE/DEALLOCATE names, transaction control; SET ROLE,
# SESSION AUTHORIZATION, NAMES, client_encoding and quoted names are never carried.
pqdedup_add_test(NAME sql_class_unit SOURCES test_sql_class.c ${PROJECT_SOURCE_DIR}/src/sql_class.c
                 NO_PRELOAD LABELS state unit quick)
target_include_directories(test_sql_class PRIVATE ${PROJECT_SOURCE_DIR}/src)

# tests/php_fpm.cmake: PHP-FPM (default clear_env) under the launcher (test_php_fpm.sh): the workers keep the settings read when the library was loaded, and reuse connections.

pqdedup_add_test(NAME php_fpm_clear_env
                 COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_php_fpm.sh
                 NO_PRELOAD NO_VALGRIND LABELS php_fpm)
set_tests_properties(php_fpm_clear_env PROPERTIES SKIP_RETURN_CODE 77)

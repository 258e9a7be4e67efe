# tests/install.cmake: the installed layout (test_install.sh): two --prefix installs and a moved DESTDIR staging, each launcher finding its own libraries.

pqdedup_add_test(NAME install_relocatable
                 COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_install.sh
                 ENV "PQD_TEST_BUILD_DIR=${PROJECT_BINARY_DIR}"
                 NO_PRELOAD NO_VALGRIND LABELS install)

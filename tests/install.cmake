# tests/install.cmake: the installed layout (test_install.sh): two --prefix installs and a moved DESTDIR staging, each launcher finding its own libraries, one pooling a program's connections.

# Not in sanitizer builds: the installed library would need the sanitizer runtime preloaded
# before it into every command, which says nothing about the layout.
if(NOT PQDEDUP_SANITIZE)
  pqdedup_add_test(NAME install_relocatable
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_install.sh
                   ENV "PQD_TEST_BUILD_DIR=${PROJECT_BINARY_DIR}"
                       "PQD_TEST_FLEET_WORKER=$<TARGET_FILE:fleet_worker>"
                   NO_PRELOAD NO_VALGRIND LABELS install)
endif()

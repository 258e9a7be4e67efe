# tests/package.cmake: the Debian package (test_package.sh): built with scripts/build-deb.sh (lintian included), extracted with dpkg -x, its layout and launcher checked.

# Plain builds only: the package is built from the sources with Debian's own flags, so the
# sanitizer and valgrind flavours would only build the same package again (~15 s each).
if(NOT PQDEDUP_SANITIZE AND NOT PQDEDUP_TEST_WRAPPER)
  pqdedup_add_test(NAME package_deb
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_package.sh
                   ENV "PQD_PACKAGE_OUT=${PROJECT_BINARY_DIR}/deb"
                   TIMEOUT 600 NO_PRELOAD NO_VALGRIND LABELS package)
endif()

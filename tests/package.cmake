# tests/package.cmake: the Debian package: built and checked (test_package.sh: lintian, layout, dpkg -x), and installed on this machine and used (test_package_install.sh: dpkg -i, the installed launcher against the test server, man, dpkg -r/--purge).

# Plain builds only: the package is built from the sources with Debian's own flags, so the
# sanitizer and valgrind flavours would only build the same package again (~15 s each).
if(NOT PQDEDUP_SANITIZE AND NOT PQDEDUP_TEST_WRAPPER)
  pqdedup_add_test(NAME package_deb
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_package.sh
                   ENV "PQD_PACKAGE_OUT=${PROJECT_BINARY_DIR}/deb"
                   TIMEOUT 600 NO_PRELOAD NO_VALGRIND LABELS package)
  # Installs system-wide (root; skipped, saying why, when a pqdedup package or any of its
  # files is already there), so SERIAL; purged again however it ends.
  pqdedup_add_test(NAME package_install
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_package_install.sh
                   ENV "PQD_TEST_FLEET_WORKER=$<TARGET_FILE:fleet_worker>"
                   TIMEOUT 600 NO_PRELOAD NO_VALGRIND SERIAL LABELS package)
  set_tests_properties(package_install PROPERTIES SKIP_RETURN_CODE 77)
endif()

# tests/docs.cmake: the documentation (test_docs.sh): the man page renders without a warning, one version everywhere, and the settings agree between src/settings.c, --help, README and the man page.

# docs_settings prints src/settings.c's names and defaults (it includes that file).
add_executable(docs_settings docs_settings.c ${PROJECT_SOURCE_DIR}/src/log.c)
target_include_directories(docs_settings PRIVATE ${PROJECT_SOURCE_DIR}/src)

foreach(_pqd_group man_renders version settings_drift)
  pqdedup_add_test(NAME docs_${_pqd_group}
                   COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_docs.sh ${_pqd_group}
                   ENV "PQD_DOCS_SETTINGS=$<TARGET_FILE:docs_settings>"
                   NO_PRELOAD NO_VALGRIND LABELS docs)
endforeach()

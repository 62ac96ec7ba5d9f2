# `vcp bench --backend SPEC` (the load generator on a backend in-process, no channel) on the
# null, ram and file backends, driven by bench_backend_test.sh; the iscsi backend's in-process
# bench runs against tgtd in iscsi.cmake (iscsi_tgtd_bench).
# Included from tests/integration/CMakeLists.txt.
if(TARGET vcp)
  foreach(backend null ram file)
    add_test(NAME bench_backend_${backend}
             COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_backend_test.sh ${backend})
    set_tests_properties(bench_backend_${backend} PROPERTIES
      LABELS integration
      TIMEOUT 120
      ENVIRONMENT "VCP_BIN=$<TARGET_FILE:vcp>")
  endforeach()
endif()

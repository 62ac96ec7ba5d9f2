# libvcp against back-ends in other processes: `vcp serve` (null, ram, file) and
# qemu-storage-daemon's vhost-user-blk export (null-co, a raw file): `vcp bench --verify` and the
# client's functional tests (client_peer_tests), driven by client_test.sh.
# Included from tests/integration/CMakeLists.txt.
if(TARGET vcp AND TARGET client_peer_tests)
  foreach(case vcp:null vcp:ram vcp:file qsd:null qsd:file)
    string(REPLACE ":" ";" _parts ${case})
    list(GET _parts 0 _server)
    list(GET _parts 1 _backend)
    add_test(NAME client_${_server}_${_backend}
             COMMAND ${CMAKE_CURRENT_LIST_DIR}/client_test.sh ${_server} ${_backend})
    set_tests_properties(client_${_server}_${_backend} PROPERTIES
      LABELS integration
      TIMEOUT 120
      ENVIRONMENT "VCP_BIN=$<TARGET_FILE:vcp>;VCP_CLIENT_PEER_TESTS=$<TARGET_FILE:client_peer_tests>")
  endforeach()
endif()

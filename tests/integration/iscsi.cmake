# iscsi backend against a real tgt target (tgtd): included from tests/integration/CMakeLists.txt.
# tgtd.sh starts tgtd on 127.0.0.1 (free port, free control port), runs one case and kills it.
add_executable(iscsi_io_test ${CMAKE_CURRENT_LIST_DIR}/iscsi_io_test.cpp)
target_include_directories(iscsi_io_test PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../../src)
target_link_libraries(iscsi_io_test PRIVATE vcp_backends)

set(VCP_TGTD_DRIVER ${CMAKE_CURRENT_LIST_DIR}/tgtd.sh)
function(vcp_iscsi_test case timeout)
  set(env "IO_TEST=$<TARGET_FILE:iscsi_io_test>")
  if(TARGET vcp)
    list(APPEND env "VCP_BIN=$<TARGET_FILE:vcp>")
  endif()
  list(APPEND env "GUEST_RUNNER=${CMAKE_CURRENT_LIST_DIR}/../../scripts/guest/run-guest.sh"
       "VCP_GUEST_DIR=${CMAKE_BINARY_DIR}/guest")
  add_test(NAME iscsi_tgtd_${case} COMMAND ${VCP_TGTD_DRIVER} ${case})
  set_tests_properties(iscsi_tgtd_${case} PROPERTIES LABELS integration TIMEOUT ${timeout}
                       ENVIRONMENT "${env}")
endfunction()

vcp_iscsi_test(plain 120)
vcp_iscsi_test(chap 120)
vcp_iscsi_test(mutual 120)
vcp_iscsi_test(digests 120)
vcp_iscsi_test(r2t 180)
vcp_iscsi_test(unsolicited 120)
vcp_iscsi_test(wrong_secret 60)
vcp_iscsi_test(absent_target 60)
vcp_iscsi_test(no_listener 60)
vcp_iscsi_test(stop_cont 180)
vcp_iscsi_test(restart 180)
vcp_iscsi_test(delete_conn 120)
vcp_iscsi_test(partition 120)
vcp_iscsi_test(lossy 120)
vcp_iscsi_test(nop 120)
vcp_iscsi_test(redirect 120)
vcp_iscsi_test(redirect_loop 60)
vcp_iscsi_test(discover 60)
vcp_iscsi_test(readonly 60)
vcp_iscsi_test(bench 120)
vcp_iscsi_test(guest 300)
set_tests_properties(iscsi_tgtd_guest PROPERTIES RESOURCE_LOCK qemu_guest)
vcp_iscsi_test(guest_partition 300)
set_tests_properties(iscsi_tgtd_guest_partition PROPERTIES RESOURCE_LOCK qemu_guest)

# The initiator against our own target made to push back (initiator_vcp_target.sh).
if(TARGET vcp)
  add_test(NAME iscsi_vcp_target_task_set_full
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/initiator_vcp_target.sh task_set_full)
  set_tests_properties(iscsi_vcp_target_task_set_full PROPERTIES LABELS integration TIMEOUT 120
                       ENVIRONMENT "IO_TEST=$<TARGET_FILE:iscsi_io_test>;VCP_BIN=$<TARGET_FILE:vcp>")
  # Two portals in the URL (portal=), the first killed or stopped under load: the session moves.
  foreach(case failover_kill failover_stop frontend_gone idle_keepalive partition lossy slow_link slow_reads)
    add_test(NAME iscsi_vcp_target_${case} COMMAND ${CMAKE_CURRENT_LIST_DIR}/initiator_vcp_target.sh ${case})
    set_tests_properties(iscsi_vcp_target_${case} PROPERTIES LABELS integration TIMEOUT 120
                         ENVIRONMENT "IO_TEST=$<TARGET_FILE:iscsi_io_test>;VCP_BIN=$<TARGET_FILE:vcp>")
  endforeach()
  set_tests_properties(iscsi_vcp_target_slow_link PROPERTIES TIMEOUT 180)  # two runs on a slow link
  # scripts/soak.sh for 45 s on one fault schedule (SEED=1: kills, stops past and short of the
  # NOP-Out timeout, reloads, status reports): vcp bench --verify through vcp serve must end clean.
  add_test(NAME iscsi_vcp_target_soak COMMAND ${PROJECT_SOURCE_DIR}/scripts/soak.sh $<TARGET_FILE_DIR:vcp> 45)
  set_tests_properties(iscsi_vcp_target_soak PROPERTIES LABELS integration TIMEOUT 180 ENVIRONMENT "SEED=1")
endif()

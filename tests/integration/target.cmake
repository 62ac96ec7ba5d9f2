# Integration tests of `vcp target` (include()d from tests/integration/CMakeLists.txt): libiscsi's
# tools and iscsi-test-cu against the target on 127.0.0.1, through tests/integration/target_tools.sh.
# The iscsi-test-cu families listed here are the ones we pass (docs/conformance.md); CI keeps them
# passing. A missing tool fails the test.
set(VCP_TARGET_DRIVER ${CMAKE_CURRENT_LIST_DIR}/target_tools.sh)
if(TARGET vcp)
  set(VCP_TARGET_BIN $<TARGET_FILE:vcp>)
else()
  set(VCP_TARGET_BIN "")  # target_tools.sh fails loudly on a missing binary
endif()

function(vcp_target_test name)
  add_test(NAME ${name} COMMAND ${VCP_TARGET_DRIVER} ${VCP_TARGET_BIN} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS integration TIMEOUT 600)
endfunction()

vcp_target_test(target_libiscsi_tools tools)
vcp_target_test(target_chap chap)
vcp_target_test(target_access_list acl)
vcp_target_test(target_digests digests)
vcp_target_test(target_sessions sessions)
vcp_target_test(target_vcp_initiator initiator)
vcp_target_test(target_qsd_iscsi qsd)
vcp_target_test(target_file_shrinks shrink)
vcp_target_test(target_wildcard_portal wildcard)
vcp_target_test(target_out_of_fds fdlimit)
vcp_target_test(target_peer_not_reading noread)
vcp_target_test(target_limits limits)
vcp_target_test(target_several targets)
vcp_target_test(target_portals portals)
vcp_target_test(target_multipath multipath)
vcp_target_test(target_host_names names)
vcp_target_test(target_reinstatement reinstate)
vcp_target_test(target_reload_limits reload-limits)
vcp_target_test(target_pr_aptpl aptpl)

# MultipathIO first, over two paths (target_tools.sh), on the fresh LUN: libiscsi 1.19's
# MultipathIO.CompareAndWrite compares block 256 without zeroing it first (scripts/conformance.sh).
set(VCP_TARGET_CU_SCSI
  MultipathIO CompareAndWrite ExtendedCopy GetLBAStatus Inquiry Mandatory ModeSense6 NoMedia OrWrite Prefetch10 Prefetch16
  PreventAllow PrinReadKeys PrinServiceactionRange PrinReportCapabilities ProutRegister
  ProutReserve ProutClear ProutPreempt Read6 Read10 Read12 Read16 ReadCapacity10 ReadCapacity16
  ReadDefectData10 ReadDefectData12 ReadOnly ReceiveCopyResults ReportSupportedOpcodes Reserve6
  Sanitize StartStopUnit TestUnitReady Unmap Verify10 Verify12 Verify16 Write10 Write12 Write16
  WriteAtomic16 WriteSame10 WriteVerify10 WriteVerify12 WriteVerify16)
set(_specs "")
foreach(f ${VCP_TARGET_CU_SCSI})
  list(APPEND _specs "SCSI.${f}.*")
endforeach()
vcp_target_test(target_cu_scsi cu ${_specs})
vcp_target_test(target_cu_iscsi cu iSCSI.iSCSIcmdsn.* iSCSI.iSCSIResiduals.* iSCSI.iSCSITMF.*)
# The reservation families with two I/O threads: their two initiators land on different threads.
vcp_target_test(target_cu_threads cu-threads SCSI.PrinReadKeys.* SCSI.ProutRegister.* SCSI.ProutReserve.*
  SCSI.ProutClear.* SCSI.ProutPreempt.* SCSI.Reserve6.* SCSI.TestUnitReady.* SCSI.ModeSense6.*)

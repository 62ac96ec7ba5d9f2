#include "target/scsi/commands.hpp"

#include <array>

#include "target/scsi/cdb.hpp"

namespace vcp::scsi {
namespace {
constexpr PrAccess A = PrAccess::allowed, R = PrAccess::read, W = PrAccess::write;
}  // namespace

std::span<const CommandInfo> CommandTable::all() {
  using L = Lun;
  // clang-format off
  static const CommandInfo kTable[] = {
    {op::kTestUnitReady, 0, false, 6, A, false, false, false, &L::cmd_test_unit_ready, {0x00, 0, 0, 0, 0, 0x07}},
    {op::kRequestSense, 0, false, 6, A, true, true, false, &L::cmd_request_sense, {0x03, 0x01, 0, 0, 0xff, 0x07}},
    {op::kRead6, 0, false, 6, R, false, false, false, &L::cmd_read_write, {0x08, 0x1f, 0xff, 0xff, 0xff, 0x07}},
    {op::kWrite6, 0, false, 6, W, false, false, false, &L::cmd_read_write, {0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07}},
    {op::kInquiry, 0, false, 6, A, true, true, false, &L::cmd_inquiry, {0x12, 0x03, 0xff, 0xff, 0xff, 0x07}},
    {op::kModeSelect6, 0, false, 6, W, false, false, false, &L::cmd_mode_select, {0x15, 0x11, 0, 0, 0xff, 0x07}},
    {op::kReserve6, 0, false, 6, A, false, false, false, &L::cmd_reserve, {0x16, 0, 0, 0, 0, 0x07}},
    {op::kRelease6, 0, false, 6, A, false, true, false, &L::cmd_release, {0x17, 0, 0, 0, 0, 0x07}},
    {op::kModeSense6, 0, false, 6, R, false, false, false, &L::cmd_mode_sense, {0x1a, 0x08, 0xff, 0xff, 0xff, 0x07}},
    {op::kStartStopUnit, 0, false, 6, W, false, false, false, &L::cmd_start_stop_unit, {0x1b, 0x01, 0, 0x0f, 0xf7, 0x07}},
    {op::kPreventAllow, 0, false, 6, W, false, false, false, &L::cmd_prevent_allow, {0x1e, 0, 0, 0, 0x03, 0x07}},
    {op::kReadCapacity10, 0, false, 10, A, false, false, false, &L::cmd_read_capacity10,
     {0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07}},
    {op::kRead10, 0, false, 10, R, false, false, false, &L::cmd_read_write,
     {0x28, 0xf8, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kWrite10, 0, false, 10, W, false, false, false, &L::cmd_read_write,
     {0x2a, 0xf8, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kWriteVerify10, 0, false, 10, W, false, false, false, &L::cmd_read_write,
     {0x2e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kVerify10, 0, false, 10, R, false, false, false, &L::cmd_verify,
     {0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kPreFetch10, 0, false, 10, R, false, false, false, &L::cmd_prefetch,
     {0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kSyncCache10, 0, false, 10, W, false, false, false, &L::cmd_sync_cache,
     {0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kWriteSame10, 0, false, 10, W, false, false, false, &L::cmd_write_same,
     {0x41, 0xfe, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {op::kUnmap, 0, false, 10, W, false, false, true, &L::cmd_unmap, {0x42, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kModeSelect10, 0, false, 10, W, false, false, false, &L::cmd_mode_select,
     {0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kReserve10, 0, false, 10, A, false, false, false, &L::cmd_reserve, {0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
    {op::kRelease10, 0, false, 10, A, false, true, false, &L::cmd_release, {0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
    {op::kModeSense10, 0, false, 10, R, false, false, false, &L::cmd_mode_sense,
     {0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kPrIn, 0, true, 10, A, false, true, false, &L::cmd_pr_in, {0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kPrIn, 1, true, 10, A, false, true, false, &L::cmd_pr_in, {0x5e, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kPrIn, 2, true, 10, A, false, true, false, &L::cmd_pr_in, {0x5e, 0x02, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kPrIn, 3, true, 10, A, false, true, false, &L::cmd_pr_in, {0x5e, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {op::kPrOut, 0, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x00, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 1, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x01, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 2, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x02, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 3, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x03, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 4, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x04, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 5, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x05, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kPrOut, 6, true, 10, A, false, false, false, &L::cmd_pr_out, {0x5f, 0x06, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {op::kRead16, 0, false, 16, R, false, false, false, &L::cmd_read_write,
     {0x88, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kCompareAndWrite, 0, false, 16, W, false, false, false, &L::cmd_compare_and_write,
     {0x89, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0, 0x07}},
    {op::kWrite16, 0, false, 16, W, false, false, false, &L::cmd_read_write,
     {0x8a, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kWriteVerify16, 0, false, 16, W, false, false, false, &L::cmd_read_write,
     {0x8e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kVerify16, 0, false, 16, R, false, false, false, &L::cmd_verify,
     {0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kPreFetch16, 0, false, 16, R, false, false, false, &L::cmd_prefetch,
     {0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kSyncCache16, 0, false, 16, W, false, false, false, &L::cmd_sync_cache,
     {0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kWriteSame16, 0, false, 16, W, false, false, false, &L::cmd_write_same,
     {0x93, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kServiceActionIn16, sa::kReadCapacity16, true, 16, A, false, false, false, &L::cmd_service_action_in16,
     {0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kServiceActionIn16, sa::kGetLbaStatus, true, 16, R, false, false, true, &L::cmd_service_action_in16,
     {0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kReportLuns, 0, false, 12, A, true, true, false, &L::cmd_report_luns,
     {0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kMaintenanceIn, sa::kReportSupportedOpcodes, true, 12, A, false, true, false, &L::cmd_maintenance_in,
     {0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kMaintenanceIn, sa::kReportSupportedTmfs, true, 12, A, false, true, false, &L::cmd_maintenance_in,
     {0xa3, 0x0d, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kRead12, 0, false, 12, R, false, false, false, &L::cmd_read_write,
     {0xa8, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kWrite12, 0, false, 12, W, false, false, false, &L::cmd_read_write,
     {0xaa, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kWriteVerify12, 0, false, 12, W, false, false, false, &L::cmd_read_write,
     {0xae, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {op::kVerify12, 0, false, 12, R, false, false, false, &L::cmd_verify,
     {0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
  };
  // clang-format on
  return kTable;
}

const CommandInfo* CommandTable::find(const uint8_t* cdb, bool* opcode_known) {
  // First entry per opcode, built once; service-action opcodes scan their few neighbours.
  static const std::array<int16_t, 256> first = [] {
    std::array<int16_t, 256> f;
    f.fill(-1);
    auto table = all();
    for (size_t i = table.size(); i-- > 0;) f[table[i].opcode] = static_cast<int16_t>(i);
    return f;
  }();
  *opcode_known = false;
  int16_t i = first[cdb[0]];
  if (i < 0) return nullptr;
  *opcode_known = true;
  auto table = all();
  for (size_t k = static_cast<size_t>(i); k < table.size() && table[k].opcode == cdb[0]; ++k) {
    const CommandInfo& c = table[k];
    if (!c.has_sa || c.service_action == (cdb[1] & 0x1f)) return &c;
  }
  return nullptr;
}

}  // namespace vcp::scsi

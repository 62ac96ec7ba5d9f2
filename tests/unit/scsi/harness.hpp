// Drives a scsi::Lun the way the iSCSI target will: one task at a time, buffers owned here,
// completions reaped by polling the backend.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "target/scsi/cdb.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::scsi::test {

struct Reply {
  Status status = Status::good;
  uint8_t key = 0, asc = 0, ascq = 0;
  std::vector<uint8_t> sense;
  std::vector<uint8_t> data;  // data-in actually returned
  Residual residual_kind = Residual::none;
  uint32_t residual = 0;
  bool aborted = false;
  bool in_place = false;  // the data came from the backend's memory (ScsiTask::data_in_view)

  bool good() const { return status == Status::good; }
  // CHECK CONDITION with this key and ASC/ASCQ.
  bool is(SenseKey k, Asc a) const {
    return status == Status::check_condition && key == static_cast<uint8_t>(k) && asc == asc_of(a) &&
           ascq == ascq_of(a);
  }
  bool invalid_field(uint16_t byte) const;  // INVALID FIELD IN CDB pointing at this byte
  uint32_t information() const { return load_be32(&sense[3]); }
};

ItNexus make_nexus(uint64_t id, const std::string& name, uint64_t isid);

// Runs one command on `lun` through `nexus` to completion (polling that Lun).
// accept_view: the task takes data-in in place (ScsiTask::accept_view).
Reply run_on(Lun& lun, std::vector<uint8_t> cdb, DataDir dir, uint32_t edtl, std::vector<uint8_t> data_out,
             const ItNexus* nexus, bool accept_view = false);

class LunHarness {
 public:
  explicit LunHarness(const std::string& spec = "ram:size=4M", LunConfig cfg = {});
  explicit LunHarness(std::unique_ptr<BlockBackend> backend, LunConfig cfg = {});
  Lun& lun() { return *lun_; }
  BlockBackend& backend() { return *backend_; }

  // Runs one command to completion. data_out is sent as the data-out buffer; data-in gets
  // edtl bytes of room. nexus null: the default nexus a.
  Reply run(std::vector<uint8_t> cdb, DataDir dir, uint32_t edtl, std::vector<uint8_t> data_out = {},
            const ItNexus* nexus = nullptr);
  Reply in(std::vector<uint8_t> cdb, uint32_t edtl, const ItNexus* n = nullptr) {
    return run(std::move(cdb), DataDir::in, edtl, {}, n);
  }
  Reply out(std::vector<uint8_t> cdb, std::vector<uint8_t> data, const ItNexus* n = nullptr) {
    uint32_t len = static_cast<uint32_t>(data.size());
    return run(std::move(cdb), DataDir::out, len, std::move(data), n);
  }
  Reply none(std::vector<uint8_t> cdb, const ItNexus* n = nullptr) { return run(std::move(cdb), DataDir::none, 0, {}, n); }
  // TEST UNIT READY until the unit attentions are gone.
  void clear_ua(const ItNexus* n = nullptr);

  // Block-level helpers over READ(16)/WRITE(16).
  std::vector<uint8_t> read_blocks(uint64_t lba, uint32_t n, const ItNexus* nx = nullptr);
  void write_blocks(uint64_t lba, const std::vector<uint8_t>& data, const ItNexus* nx = nullptr);

  ItNexus a, b;  // two initiators
  bool accept_view = false;  // run(): tasks take data-in in place, as the iSCSI target's do

 private:
  void open(std::unique_ptr<BlockBackend> backend, LunConfig cfg);

  std::unique_ptr<BlockBackend> backend_;
  std::unique_ptr<Lun> lun_;
};

// CDB builders.
std::vector<uint8_t> cdb6(uint8_t op, uint32_t lba, uint8_t len, uint8_t b1 = 0);
std::vector<uint8_t> cdb10(uint8_t op, uint32_t lba, uint16_t len, uint8_t b1 = 0);
std::vector<uint8_t> cdb12(uint8_t op, uint32_t lba, uint32_t len, uint8_t b1 = 0);
std::vector<uint8_t> cdb16(uint8_t op, uint64_t lba, uint32_t len, uint8_t b1 = 0);
std::vector<uint8_t> pattern(size_t len, uint8_t seed);

}  // namespace vcp::scsi::test

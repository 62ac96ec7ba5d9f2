// One SCSI command as the transport hands it to a logical unit, and what comes back.
//
// The transport (the iSCSI target) fills the input fields, calls Lun::execute(), and gets the
// task back through `done` exactly once, on the Lun's thread, possibly before execute() returns.
// The task's memory (and its buffers) must stay valid until then. Nothing in here allocates.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backends/block_backend.hpp"
#include "base/scsi_codes.hpp"
#include "target/scsi/sense.hpp"

namespace vcp::scsi {

class Lun;
struct CommandInfo;


enum class TaskAttr : uint8_t { simple, ordered, head_of_queue, aca };
enum class DataDir : uint8_t { none, in, out };  // in: device to initiator (READ)
enum class Residual : uint8_t { none, underflow, overflow };

// An I_T nexus: one initiator port (iSCSI name + ISID) talking through one target port. The
// transport owns it for the life of a session; `id` must be unique among live nexuses (it is
// the fast lookup key); name, ISID and port are the identity that outlives a session (PR).
struct ItNexus {
  uint64_t id = 0;
  std::string initiator_name;
  uint64_t isid = 0;         // 48 bits
  uint16_t target_port = 1;  // relative target port identifier

  bool same_port_as(const ItNexus& o) const {
    return isid == o.isid && target_port == o.target_port && initiator_name == o.initiator_name;
  }
};

namespace detail {
constexpr unsigned kWindowIov = 32;

// Where a data transfer stands inside the task's iovecs.
struct IovCursor {
  uint32_t index = 0;
  uint64_t offset = 0;
};

}  // namespace detail

// How a command ends before any data moves: a status and, for CHECK CONDITION, its sense.
struct Outcome {
  Status status = Status::good;
  Sense sense;
  bool good() const { return status == Status::good; }
};
inline Outcome ok() { return {}; }
inline Outcome check(Sense s) { return {Status::check_condition, s}; }
inline Outcome conflict() { return {Status::reservation_conflict, {}}; }

// The longest CDB a task carries: 16 bytes plus an iSCSI extended-CDB AHS of up to 16 more.
constexpr unsigned kMaxCdbLen = 32;

struct ScsiTask {
  // ---- Filled by the transport before execute() ----
  uint8_t cdb[kMaxCdbLen] = {};
  uint8_t cdb_len = 0;
  uint64_t lun = 0;
  uint64_t tag = 0;
  TaskAttr attr = TaskAttr::simple;
  const ItNexus* nexus = nullptr;
  DataDir dir = DataDir::none;
  uint32_t expected_length = 0;  // the transport's expected data transfer length (EDTL)
  // Data-out (already received, expected_length bytes) or data-in (room for expected_length).
  const iovec* iov = nullptr;
  uint32_t iovcnt = 0;
  void (*done)(ScsiTask* task) = nullptr;
  void* ctx = nullptr;  // the transport's
  // The transport can send data-in from the backend's memory in place (data_in_view below):
  // it hands those bytes only to the kernel (BackendQueue::read_view()). A READ of whole
  // blocks then needs no backend request and no copy into the iovecs.
  bool accept_view = false;

  // ---- Results, valid in done() ----
  Status status = Status::good;
  uint8_t sense_len = 0;  // 0 or kFixedSenseLen
  uint8_t sense[kFixedSenseLen] = {};
  Residual residual_kind = Residual::none;
  uint32_t residual = 0;
  uint32_t data_in_len = 0;  // bytes written into the data-in buffer
  // Non-null: the data-in is these data_in_len bytes of backend memory, not the iovecs (only
  // when accept_view was set). Send them straight away; never read them in user space.
  const uint8_t* data_in_view = nullptr;
  // With a view, a descriptor holding the same bytes from data_in_offset on, or -1: the
  // transport may sendfile(2) them from there instead (BackendQueue::read_view_fd()).
  int data_in_fd = -1;
  uint64_t data_in_offset = 0;
  bool aborted = false;      // aborted by task management: send no response (SAM-5)

  // ---- The Lun's, while in flight ----
  struct Private {
    Lun* lun = nullptr;
    const CommandInfo* cmd = nullptr;
    ScsiTask* prev = nullptr;  // the Lun's list of tasks in flight
    ScsiTask* next = nullptr;
    ScsiTask* wait_next = nullptr;  // parked behind a COMPARE AND WRITE or ORWRITE
    BlockRequest req;
    iovec window[detail::kWindowIov];
    detail::IovCursor cursor;
    uint64_t lba = 0;         // the range this command touches (for COMPARE AND WRITE / ORWRITE ordering)
    uint64_t blocks = 0;
    uint64_t next_lba = 0;    // the data path's progress
    uint64_t bytes_left = 0;
    uint64_t buffer_off = 0;
    uint64_t iov_sum = 0;     // bytes the task's iovecs hold
    uint64_t data_len = 0;    // usable bytes: min(EDTL, iov_sum)
    uint32_t tail = 0;        // a partial last block of a READ, when EDTL cuts one in two
    uint64_t want = 0;        // bytes the command itself would transfer (for residuals)
    uint64_t io_bytes = 0;    // bytes in the request in flight
    int io_status = 0;
    uint8_t phase = 0;
    bool fua = false;
    bool writes = false;      // changes the medium (ordered after COMPARE AND WRITE / ORWRITE)
    bool waiting = false;     // parked until an overlapping COMPARE AND WRITE / ORWRITE ends
    bool in_io = false;       // a backend request was submitted and not yet processed
    bool holds_range = false; // a started COMPARE AND WRITE or ORWRITE
    bool in_advance = false;
    bool again = false;
    uint64_t abort_gen = 0;   // the abort_matching() that aborted it
    std::unique_ptr<uint8_t[]> scratch;  // rare commands only: never READ/WRITE
    uint64_t scratch_len = 0;
  } priv;
};

}  // namespace vcp::scsi

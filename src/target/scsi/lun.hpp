// A SCSI block device (SBC-4 direct-access LU) over one BlockBackend: the device server the
// iSCSI target puts behind each LUN.
//
// Threading: a Lun lives on one thread. execute(), poll(), commit() and the task management
// calls run there; every task completes there, through task->done, exactly once (possibly
// inside execute()). Backend requests are submitted during execute() and poll(); call commit()
// after a batch of execute() calls (poll() commits what completions started).
//
// Several Luns (one per I/O thread, each with its own backend queue and task list) can serve
// one logical unit: they share one SharedLuState (reservations, unit attentions, mode pages).
// A reset or a PREEMPT AND ABORT reaches the other threads' task lists as a message their own
// poll() acts on (shared_state.hpp); poll() must therefore run when the wake function given
// to set_wake() is called.
//
// Data path: READ/WRITE map straight onto backend requests over the task's own iovecs (zero
// copy, no allocation); a transfer is split only when the backend has a size limit or the
// expected transfer length cuts a block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "base/result.hpp"
#include "target/scsi/pr.hpp"
#include "target/scsi/shared_state.hpp"
#include "target/scsi/task.hpp"

namespace vcp::scsi {

struct LunConfig {
  uint64_t lun = 0;
  std::string vendor = "VCP";          // INQUIRY T10 vendor identification (8 chars)
  std::string product = "vcp disk";    // 16 chars
  std::string revision = "0001";       // 4 chars
  std::string serial;                  // unit serial number; empty: derived from the backend's
  std::string target_name;             // iSCSI target name (device identification VPD)
  std::string target_port_name;        // e.g. "iqn...,t,0x0001"; empty: target_name + ",t,0x0001"
  uint16_t relative_port = 1;
  uint16_t target_port_group = 1;
  bool read_only = false;              // on top of a read-only backend
  bool thin_provisioning = true;       // report LBPME and UNMAP when the backend can deallocate
  uint32_t max_transfer_blocks = 0;    // 0: the backend's limit, else none
  uint32_t max_unmap_blocks = 1u << 20;  // libiscsi calls more than 1M blocks insane
  uint32_t max_unmap_descriptors = 256;
  uint32_t max_write_same_blocks = 1u << 22;
  uint8_t max_compare_write_blocks = 255;
  uint32_t max_tasks = 1024;           // more in flight: TASK SET FULL
};

struct CommandInfo;

// A task management function waiting for the tasks it aborted to end (SAM-5 7.1: the response
// follows the end of every task the function aborted). The caller owns it; the Lun keeps it
// from when_quiesced() until done() runs (once, on the Lun's thread, maybe inside
// when_quiesced()) or cancel_wait() takes it back.
struct QuiesceWait {
  void (*done)(QuiesceWait* w) = nullptr;
  void* ctx = nullptr;  // the caller's
  // The Lun's:
  uint64_t abort_gen = 0;  // tasks aborted up to this generation must have ended
  uint64_t reset_seq = 0;  // and the other threads must have acked resets up to this one
};

class Lun final {
 public:
  // Opens queue 0 of the backend and owns it.
  static Result<std::unique_ptr<Lun>> open(LunConfig cfg, BlockBackend& backend);
  // Uses a queue the caller owns (one per thread), which must outlive the Lun. Luns of one
  // logical unit on several threads pass the same `shared`; null: a state of its own.
  Lun(LunConfig cfg, BlockBackend& backend, BackendQueue& queue, std::shared_ptr<SharedLuState> shared = nullptr);
  ~Lun();
  Lun(const Lun&) = delete;
  Lun& operator=(const Lun&) = delete;

  void execute(ScsiTask* task);
  void commit() { queue_->commit(); }
  // Reaps backend completions (completing tasks), acts on messages from the other threads'
  // Luns of this logical unit, and commits requests they started.
  int poll();
  // How another thread gets this one to poll() (its event loop's eventfd).
  void set_wake(std::function<void()> wake);
  int wait_fd() const { return queue_->wait_fd(); }
  uint32_t in_flight() const { return active_count_; }

  // ---- Task management (SAM-5 7): aborted tasks complete with aborted = true ----
  bool abort_task(const ItNexus& nexus, uint64_t tag);
  uint32_t abort_task_set(const ItNexus& nexus);
  // CLEAR TASK SET from `issuer`: every task of the logical unit, on this thread now and on
  // the others by message (the count is this thread's); the other nexuses that lost tasks get
  // COMMANDS CLEARED BY ANOTHER INITIATOR (the control page's TAS is 0: aborted tasks get no
  // status).
  uint32_t clear_task_set(const ItNexus& issuer);
  // LOGICAL UNIT RESET / TARGET (WARM) RESET: aborts every task, drops RESERVE(6/10)
  // reservations and establishes a unit attention for every I_T nexus. Persistent
  // reservations survive (SPC-4 5.13.1).
  void reset(ResetKind kind);
  // The session of this I_T nexus ended (or was reinstated): its tasks are aborted.
  void nexus_lost(const ItNexus& nexus);
  // Calls w->done once every task aborted so far on this Lun has ended, and the other
  // threads have acknowledged that the resets and CLEAR TASK SETs this Lun sent them have quiesced theirs.
  void when_quiesced(QuiesceWait* w);
  // Takes back a wait whose done() has not run (its owner goes away); a no-op otherwise.
  void cancel_wait(QuiesceWait* w);

  // The target's LUN inventory for REPORT LUNS; changed=true raises REPORTED LUNS DATA HAS
  // CHANGED for every I_T nexus.
  void set_reported_luns(std::vector<uint64_t> luns, bool changed);
  // The backend grew (BlockBackend::grow): READ CAPACITY and the LBA checks take the new
  // number of blocks from now on; with `announce`, every I_T nexus gets CAPACITY DATA HAS
  // CHANGED (2Ah/09h) on the state the threads share (one thread announces).
  void set_capacity(uint64_t capacity_bytes, bool announce);

  const LunConfig& config() const { return cfg_; }
  uint64_t blocks() const { return blocks_; }
  uint32_t block_size() const { return block_size_; }
  bool read_only() const { return read_only_; }
  bool thin() const { return thin_; }
  PersistentReservations reservations() const { return shared_->reservations_snapshot(); }
  ModePages mode() const { return shared_->mode(); }
  const std::shared_ptr<SharedLuState>& shared() const { return shared_; }

  // For the command table (commands.cpp).
  using Handler = void (Lun::*)(ScsiTask*);

 private:
  // This thread's live nexuses: the fast lookup from ItNexus::id to the shared record.
  struct NexusState {
    uint64_t id = 0;
    NexusRecord* rec = nullptr;
    AccessVerdict access;  // as of shared_->access_gen() == access.gen
  };
  // A reset or CLEAR TASK SET this Lun sent to the other threads, until they all ack it.
  struct ResetBarrier {
    uint64_t seq = 0;
    uint32_t acks_left = 0;
  };
  // A reset another thread sent: acked once the tasks it aborted here have ended.
  struct OwedAck {
    uint64_t to = 0;
    uint64_t seq = 0;
    uint64_t abort_gen = 0;
  };

  friend struct CommandTable;

  // ---- lun.cpp: dispatch, completion, task lists, unit attentions ----
  NexusState& nexus_state(const ItNexus& n);
  bool access_conflict(const ScsiTask* t, const CommandInfo* cmd, NexusState& ns) const;
  void handle_mail();
  void check_quiesced();
  void complete(ScsiTask* t);
  void finish(ScsiTask* t, const Outcome& o);
  void finish_sense(ScsiTask* t, const Sense& s) { finish(t, check(s)); }
  // Copies a built response (truncated to the allocation length) into the data-in buffer.
  void finish_data_in(ScsiTask* t, const uint8_t* data, uint64_t len, uint64_t alloc_len);
  uint64_t copy_from_iov(const ScsiTask* t, uint64_t offset, uint8_t* dst, uint64_t len) const;
  uint64_t copy_to_iov(ScsiTask* t, uint64_t offset, const uint8_t* src, uint64_t len);
  void link(ScsiTask* t);
  void unlink(ScsiTask* t);
  // cleared_from: CLEAR TASK SET's issuer; the other nexuses whose tasks go get its unit
  // attention.
  uint32_t abort_matching(const ItNexus* nexus, bool by_tag, uint64_t tag, const ItNexus* cleared_from = nullptr);
  void abort_registration(const Registration& who);

  // ---- inquiry.cpp ----
  void cmd_inquiry(ScsiTask* t);
  void cmd_report_luns(ScsiTask* t);
  void cmd_read_capacity10(ScsiTask* t);
  void cmd_service_action_in16(ScsiTask* t);
  void get_lba_status(ScsiTask* t);
  void cmd_test_unit_ready(ScsiTask* t);
  void cmd_request_sense(ScsiTask* t);
  void cmd_start_stop_unit(ScsiTask* t);
  void cmd_prevent_allow(ScsiTask* t);
  void cmd_maintenance_in(ScsiTask* t);
  void cmd_pr_in(ScsiTask* t);
  void cmd_pr_out(ScsiTask* t);
  void cmd_reserve(ScsiTask* t);
  void cmd_release(ScsiTask* t);
  void build_vpd(uint8_t page, std::vector<uint8_t>& out, bool* supported) const;
  void report_opcodes(ScsiTask* t);
  void report_tmfs(ScsiTask* t);

  // ---- mode.cpp ----
  void cmd_mode_sense(ScsiTask* t);
  void cmd_mode_select(ScsiTask* t);
  // Appends page `code` for page control pc (0 current, 1 changeable, 2 default).
  bool append_mode_page(uint8_t code, uint8_t pc, std::vector<uint8_t>& out) const;

  // ---- block_io.cpp ----
  void cmd_read_write(ScsiTask* t);
  void cmd_verify(ScsiTask* t);
  void cmd_sync_cache(ScsiTask* t);
  void cmd_prefetch(ScsiTask* t);
  void cmd_write_same(ScsiTask* t);
  void cmd_unmap(ScsiTask* t);
  void cmd_compare_and_write(ScsiTask* t);
  void cmd_orwrite(ScsiTask* t);
  bool range_ok(uint64_t lba, uint64_t blocks) const {
    return lba <= blocks_ && blocks <= blocks_ - lba;
  }
  bool alloc_scratch(ScsiTask* t, uint64_t len);
  uint64_t scratch_chunk(uint64_t total) const;
  void submit_scratch(ScsiTask* t, BlockOp op);
  void submit_from_scratch(ScsiTask* t, BlockOp op, uint64_t lba, uint64_t n);
  void start_io(ScsiTask* t);
  bool must_wait(const ScsiTask* t) const;
  void release_waiters();
  void advance(ScsiTask* t);
  bool step(ScsiTask* t);
  static void on_block_done(BlockRequest* req, int status);
  void submit(ScsiTask* t, BlockOp op, uint64_t lba, uint64_t bytes, bool unmap = false);
  void park(ScsiTask* t);
  void seek(ScsiTask* t, uint64_t offset);
  void skip(ScsiTask* t, uint64_t bytes);
  bool fail(ScsiTask* t, const Outcome& o) {
    finish(t, o);
    return false;
  }
  bool fill_window(ScsiTask* t, uint64_t max_bytes, uint64_t* got);
  bool step_rw(ScsiTask* t);
  bool step_verify(ScsiTask* t);
  bool step_write_same(ScsiTask* t);
  bool step_unmap(ScsiTask* t);
  bool step_compare_and_write(ScsiTask* t);
  bool step_orwrite(ScsiTask* t);
  void start_read_modify_write(ScsiTask* t, uint64_t lba, uint64_t blocks);
  bool step_flush(ScsiTask* t);
  Sense io_error(const ScsiTask* t, int status) const;

  LunConfig cfg_;
  BlockBackend& backend_;
  std::unique_ptr<BackendQueue> owned_queue_;
  BackendQueue* queue_;
  uint64_t blocks_ = 0;
  uint32_t block_size_ = 512;
  bool read_only_ = false;
  bool thin_ = false;
  bool lbprz_ = false;
  uint64_t max_io_bytes_ = 0;  // the backend's per-request limit; 0: none
  uint32_t max_transfer_blocks_ = 0;

  std::shared_ptr<SharedLuState> shared_;
  Mailbox* mailbox_ = nullptr;
  std::vector<LunMessage> mail_;       // taken from the mailbox, being handled
  uint64_t abort_gen_ = 0;             // one more per abort_matching()
  uint64_t reset_seq_ = 0;             // one more per abort_all sent to the other threads
  std::vector<ResetBarrier> barriers_;
  std::vector<OwedAck> owed_acks_;
  std::vector<QuiesceWait*> waits_;

  std::vector<NexusState> nexuses_;
  std::vector<uint64_t> reported_luns_;
  std::vector<uint8_t> response_;  // built here, then copied into the data-in buffer

  ScsiTask* active_head_ = nullptr;
  uint32_t active_count_ = 0;
  uint32_t caw_active_ = 0;       // COMPARE AND WRITEs and ORWRITEs holding their range
  ScsiTask* wait_head_ = nullptr;  // parked behind them, FIFO
  ScsiTask* wait_tail_ = nullptr;
  bool draining_ = false;
};

// Answers a command addressed to a LUN the target does not have (SPC-4 / SAM-5): INQUIRY
// reports peripheral qualifier 011b, REPORT LUNS lists `luns`, REQUEST SENSE returns LOGICAL
// UNIT NOT SUPPORTED as data, anything else ends in CHECK CONDITION with that sense.
// Completes the task (synchronously).
void respond_without_lun(ScsiTask* task, const std::vector<uint64_t>& luns);

// Eight-byte LUN (SAM-5 4.7): peripheral addressing below 256, flat space addressing above.
void encode_lun(uint64_t lun, uint8_t out[8]);
uint64_t decode_lun(const uint8_t in[8]);

}  // namespace vcp::scsi

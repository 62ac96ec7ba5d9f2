// One iSCSI connection on the target side as a state machine: bytes from the peer in, bytes to
// the peer out, SCSI tasks handed to the thread's logical units. No sockets and no threads here
// (server.cpp owns those), so tests and the fuzzer drive it with in-memory byte streams.
//
// One connection per session (MaxConnections=1, ERL 0): the connection *is* the session.
// Phases: Login (TargetLogin from iscsi/) -> Full Feature Phase (Normal or Discovery) ->
// closing (after a Logout, a fatal protocol error, a timeout or reinstatement) -> finished (no
// task left inside a Lun).
//
// The rules the PDU intake applies (RFC 7143):
//  - a PDU that fails to decode is answered with the Reject reject_reason_for() gives; header
//    digest errors, data digest errors, oversized data segments and sequence errors on Data-Out
//    (ERL 0 cannot recover them) close the connection after the Reject;
//  - non-immediate commands outside [ExpCmdSN, MaxCmdSN] are dropped silently; ones ahead of
//    ExpCmdSN inside the window wait for the gap to fill;
//  - writes: immediate data, then unsolicited Data-Out up to FirstBurstLength (InitialR2T=No),
//    then R2Ts of at most MaxBurstLength, MaxOutstandingR2T at a time; every Data-Out must come
//    in order (DataPDUInOrder=Yes) with the right DataSN, offset and TTT;
//  - reads: Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength, F at each
//    MaxBurstLength, GOOD status carried in the last one (S bit); otherwise a SCSI Response;
//  - a connection that does not finish login in time, or does not answer a NOP-In ping, is
//    dropped.
//
// The data path copies nothing it does not have to (docs/target.md, "Zero-copy data path"):
//  - Data-In: the BHS (and digests) are encoded into the output buffer, the data segment is an
//    iovec pointing into the task's own buffer. A task whose data is queued stays pinned (not
//    reused, its buffer not reallocated) until output_sent() has gone past that data.
//  - Data-In read in place from a file LUN (ScsiTask::data_in_fd) is a range of the file:
//    output_file() gives it, for sendfile(2), and output_iov() stops before it.
//  - Data-Out, immediate and unsolicited data: once the header of a PDU with a large data
//    segment is in (and every check the complete PDU would get has passed), the rest of the
//    segment is received straight into the task's buffer at its offset: rx_iov() offers that
//    region first, then a small staging room for the pad, the data digest and the next header.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/tcp_progress.hpp"
#include "iscsi/login.hpp"
#include "iscsi/pdu.hpp"
#include "iscsi/sendtargets.hpp"
#include "iscsi/seq.hpp"
#include "target/scsi/lun.hpp"
#include "target/session_registry.hpp"
#include "target/settings.hpp"

namespace vcp::target {

class TargetConnection;

// The task buffer room the connections of one I/O thread share (TargetSettings::buffer_bytes
// split over the threads). Each connection counts its buffers here as well as against its own
// room; connections whose next command waits for room here are served in the order they began
// to wait (TargetConnection::pump_thread_room()).
struct ThreadBufferRoom {
  uint64_t budget = ~uint64_t{0};
  uint64_t started = 0;  // buffers of started tasks, all connections
  uint64_t kept = 0;     // buffers kept on finished tasks for reuse, all connections
  // Buffers of small commands started alone on their connection, which never wait: outside
  // the budget, at most 256 KiB per connection (TargetConnection::small_alone()).
  uint64_t small = 0;
  std::vector<TargetConnection*> members;  // every connection of the thread
  std::deque<TargetConnection*> waiting;   // connections waiting for room here, in order
  bool pumping = false;
  uint64_t waits = 0;  // times a connection began to wait here
  uint64_t used() const { return started + kept; }
};

// What the connections of one I/O thread share: settings, the session registry, the targets
// with this thread's logical units (a scsi::Lun lives on one thread) and its task buffer room.
struct ThreadContext {
  struct LunEntry {
    uint64_t number;
    scsi::Lun* lun;
  };
  // A target as this thread serves it; `served` is in TargetSettings::all_targets() order,
  // which AccessSettings::targets follows too.
  struct Target {
    std::string iqn;
    std::string alias;
    std::vector<LunEntry> luns;         // sorted by number
    std::vector<uint64_t> lun_numbers;  // for REPORT LUNS on LUNs it does not have
    // Removed LUNs whose commands still run here: no new command finds them, but a target
    // reset and a session's end reach their tasks as they reach those of `luns`.
    std::vector<scsi::Lun*> draining;

    // f(Lun*) for every Lun of the target on this thread, draining ones too (what a target
    // reset and a session's end must reach).
    template <class F>
    void each_lun(F f) const {
      for (const auto& e : luns) f(e.lun);
      for (scsi::Lun* lu : draining) f(lu);
    }
    scsi::Lun* find_lun(uint64_t n) const {
      for (const auto& e : luns)
        if (e.number == n) return e.lun;
      return nullptr;
    }
  };
  const TargetSettings* settings = nullptr;
  // The limits connections accepted from now on take (a reload replaces them); none: those of
  // `settings`.
  const LimitsHolder* limits = nullptr;
  // Access list and credentials for new logins (the server's, replaced on reload); none: those
  // of `settings`.
  const AccessHolder* access = nullptr;
  SessionRegistry* sessions = nullptr;
  std::deque<Target> served;  // a deque: connections point into it as targets are added
  std::function<void()> wake;         // wakes this thread from another one
  // Logins refused on this thread: each is logged while log::thin() says so (a scan or an
  // initiator retrying with a wrong secret cannot flood the log).
  uint64_t refused_logins = 0;
  ThreadBufferRoom buffers;

  std::shared_ptr<const TargetSettings> current_settings() const {
    if (limits) return limits->load();
    return std::shared_ptr<const TargetSettings>(std::shared_ptr<const TargetSettings>(), settings);  // not owned
  }
  std::shared_ptr<const AccessSettings> current_access() const {
    if (access) return access->load();
    return std::make_shared<const AccessSettings>(AccessSettings::of(*settings));
  }
};

// Bytes waiting to be sent. Unlike std::vector it never zero-fills what it grows by: PDUs are
// encoded straight into it.
class OutBuffer {
 public:
  uint8_t* extend(size_t n) {
    if (size_ + n > cap_) {
      size_t cap = std::max(cap_ * 2, size_ + n);
      std::unique_ptr<uint8_t[]> p(new uint8_t[cap]);
      if (size_) std::memcpy(p.get(), p_.get(), size_);
      p_ = std::move(p);
      cap_ = cap;
    }
    uint8_t* at = p_.get() + size_;
    size_ += n;
    return at;
  }
  void append(std::span<const uint8_t> b) {
    if (!b.empty()) std::memcpy(extend(b.size()), b.data(), b.size());
  }
  void truncate(size_t n) { size_ = n; }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }
  void swap(OutBuffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(size_, o.size_);
    std::swap(cap_, o.cap_);
  }

 private:
  std::unique_ptr<uint8_t[]> p_;
  size_t size_ = 0;
  size_t cap_ = 0;
};

struct ConnectionStats {
  uint64_t commands = 0;
  uint64_t rejects = 0;
  uint64_t dropped_commands = 0;  // outside the CmdSN window
  uint64_t direct_rx_pdus = 0;    // data segments received straight into a task's buffer
  uint64_t zero_copy_data_in = 0;  // Data-In segments sent from a task's buffer or in place
  uint64_t in_place_reads = 0;     // READs whose Data-In went from the backend's memory (read_view)
  uint64_t file_data_in = 0;       // Data-In segments given as a range of a file (output_file)
  uint64_t buffer_waits = 0;       // commands that waited for buffer room (connection_buffer_bytes)
};

class TargetConnection {
 public:
  TargetConnection(ThreadContext& ctx, uint64_t now_ms);
  ~TargetConnection();

  // The target has no room for another connection: the first Login Request is answered with
  // "out of resources" (0x0302) and the connection closes (TargetSettings::max_connections).
  void refuse_login(std::string why);
  // Runs the commands waiting for the thread's buffer room, connection by connection in the
  // order they began to wait, as far as the room allows. The connections call it themselves
  // when their buffers come back; the I/O thread also calls it after removing a connection.
  static void pump_thread_room(ThreadContext& ctx);
  TargetConnection(const TargetConnection&) = delete;
  TargetConnection& operator=(const TargetConnection&) = delete;

  // ---- Receive: the caller reads into the rx_iov() regions, in order, then reports how much
  // arrived. At most kRxIov regions; the first may be a task's buffer (a data segment received
  // in place). The regions stay valid (their memory alive) until the connection is destroyed.
  static constexpr size_t kRxIov = 2;
  size_t rx_iov(std::span<iovec, kRxIov> out);
  void rx_commit(size_t n, uint64_t now_ms);
  // Convenience for tests and the fuzzer: copies bytes in and processes them.
  void receive(std::span<const uint8_t> bytes, uint64_t now_ms);

  // ---- Transmit: the regions output_iov() gives stay valid until output_sent() has gone past
  // them (more output may queue meanwhile). output() is the first region alone.
  // Output is a sequence of pieces: bytes in memory (output_iov()), and ranges of a file LUN's
  // file (output_file()), Data-In the caller sends with sendfile(2). output_iov() gives the
  // memory pieces up to the next file range; when the next piece is a file range, it gives
  // none and output_file() gives that range. output_sent() counts bytes of either kind.
  struct FileRange {
    int fd;
    uint64_t offset;
    size_t len;
  };
  bool has_output() const { return tx_seg_ < tx_segs_.size() || !out_segs_.empty(); }
  size_t output_iov(std::span<iovec> out);
  std::span<const uint8_t> output();
  std::optional<FileRange> output_file();
  // Whether any of the output queued is a file range (the caller then sends it all itself).
  bool file_output_queued() const { return file_segs_ > 0; }
  void output_sent(size_t n);

  // The address SendTargets reports for this target on this connection ("HOST:PORT,TPGT"), when
  // the context's would not do: a target listening on a wildcard address reports the address
  // the initiator reached (the server sets it from the socket). Empty: the context's.
  void set_target_address(std::string address) { target_address_ = std::move(address); }
  // Where the peer connects from, for the access list (TargetSettings::acl): the server sets it
  // from the socket before any input. Unknown (the default) fails an address list.
  void set_peer_address(const IpAddress& a) { peer_ = a; }
  // Whether READs of at least TargetSettings::sendfile_min served in place from a file LUN go
  // out as file ranges (output_file()) rather than from its mapping (output_iov()). The server
  // decides per connection (TargetSettings::sendfile); off by default.
  void set_sendfile(bool on) { sendfile_ = on; }

  // Timers (login timeout, NOP-In keepalive) and requests from other threads (reinstatement).
  // Also where a session meets access settings replaced since it logged in (a reload): if its
  // target's access list no longer lets its initiator in (name or address), it is told so with
  // an Async Message (the target drops the session), nothing more is read from it, and it is
  // closed kDropGraceMs later (the initiator, having read the message, closes first). CHAP
  // changes apply to new logins only.
  static constexpr uint64_t kDropGraceMs = 2000;
  void tick(uint64_t now_ms);
  // Keep-alive on a slow or saturated link: our NOP-In waits behind the Data-In ahead of it,
  // and a peer waiting for those reads sends nothing meanwhile. While a ping is outstanding
  // (wants_peer_progress()), the server tells, before tick(), the connection's TCP progress
  // (bytes the peer acknowledged, bytes still queued: base/tcp_progress.hpp): a peer that
  // takes output we had queued is alive, as one that sends is. A host whose initiator hangs
  // stops taking output once its receive buffer is full, and is dropped nop_timeout after.
  bool wants_peer_progress() const { return nop_outstanding_; }
  void note_peer_progress(const TcpProgress& p, uint64_t now_ms);
  // The peer went away or the server stops: tasks are aborted, the session ends.
  void shutdown();

  // Whether the caller should read more from the peer. Not while closing, nor while more than
  // kMaxUnsent bytes of output wait for a peer that does not take them: reading more commands
  // would only queue more answers (and pin their buffers) without bound. The peer's own reads
  // end the pause; while paused, output it takes counts as hearing from it (keepalive).
  static constexpr size_t kMaxUnsent = 4u << 20;
  bool wants_input() const { return !closing_ && !drop_at_ms_ && unsent_ < kMaxUnsent; }
  size_t unsent_bytes() const { return unsent_; }

  // No more input is wanted; close once the output is flushed.
  bool closing() const { return closing_; }
  // Closing, no task is still inside a Lun and no Lun holds a TMF wait: may be destroyed.
  bool finished() const { return closing_ && tasks_.empty() && tmfs_.empty(); }
  // A LUN removed while the target runs: commands of this connection not yet handed to `lu`
  // (still collecting their data) will find no LUN when they run.
  void forget_lun(const scsi::Lun* lu);
  // Whether a command is in `lu`, output still holds data of its backend (read in place) or a
  // task management function waits on it: until none does, a removed LUN's Lun must stay.
  bool uses_lun(const scsi::Lun* lu) const;
  bool full_feature() const { return phase_ == Phase::FullFeature; }
  bool discovery() const { return params_.session_type == iscsi::SessionType::Discovery; }
  const iscsi::SessionParams& params() const { return params_; }
  const ConnectionStats& stats() const { return stats_; }
  // Memory held for receiving (the staging buffer): small until login ends.
  size_t rx_buffer_bytes() const { return rx_.capacity(); }
  const std::string& close_reason() const { return close_reason_; }
  // A new login reinstated its session (whether this connection was open then or already
  // closing for another reason): the initiator has given this connection up, and the new login
  // waits for it to be gone, so its unsent output is not waited for.
  bool superseded() const {
    return session_ && session_->close_requested.load(std::memory_order_acquire);  // pairs with SessionRegistry::add
  }
  // The limits this connection keeps to (those in force when it was accepted).
  const TargetSettings& settings() const { return *settings_; }
  uint32_t tasks_in_flight() const { return static_cast<uint32_t>(tasks_.size()); }
  // Task buffers counted against TargetSettings::connection_buffer_bytes: those of started
  // tasks (until their data is sent) and those kept on free tasks; and the commands waiting
  // for room among them.
  uint64_t buffer_bytes() const { return started_bytes_ + kept_bytes_; }
  size_t tasks_waiting_for_buffers() const { return waiting_.size(); }
  // Whether the next waiting command waits for the thread's room (ThreadBufferRoom::waiting).
  bool waiting_for_thread_room() const { return in_thread_queue_; }
  // One line for a status report (`vcp target`, SIGUSR1): who, from where, to which target,
  // in which phase, and its commands, tasks and buffers now.
  std::string describe(uint64_t now_ms) const;

 private:
  enum class Phase : uint8_t { Login, FullFeature };
  struct Task;
  struct PendingTmf;

  // A piece of output: bytes in the output buffer (task == nullptr: from offset `off`) or a
  // task's data-in (`at` points into the task's buffer or the backend's view, and the segment
  // pins the task); with fd >= 0, that data-in is sent from the file instead, at fd_off.
  struct TxSeg {
    size_t off;
    const uint8_t* at;
    size_t len;
    Task* task;
    int fd = -1;
    uint64_t fd_off = 0;
  };
  // A data segment being received straight into a task's buffer.
  struct DirectRx {
    Task* task = nullptr;  // pinned while set
    uint8_t header[iscsi::kBhsSize + 4 * 255 + 4];  // BHS, AHS, header digest (for the PDU's handling)
    uint32_t header_len = 0;
    uint32_t ahs_len = 0;     // bytes of AHS after the BHS in header
    iscsi::Pdu decoded;       // the header as try_direct() decoded and checked it
    uint8_t* dst = nullptr;
    uint32_t len = 0;   // the data segment
    uint32_t got = 0;   // bytes of it already in dst
    uint32_t tail = 0;  // pad + data digest still to come through the staging buffer
  };

  // intake
  void process_input();
  bool try_direct(std::span<const uint8_t> staged);
  bool finish_direct();
  void end_direct();
  bool handle_pdu(std::span<const uint8_t> pdu);
  bool dispatch(const iscsi::PduParts& parts, std::span<const uint8_t> pdu);
  bool admissible_now(uint32_t cmd_sn, bool immediate) const;
  void handle_decode_error(std::span<const uint8_t> pdu, iscsi::PduError err);
  void handle_login(const iscsi::PduParts& p);
  void log_refusal(const std::string& why);
  void recheck_access(uint64_t now_ms);
  void enter_full_feature();
  void release_held_login(uint64_t now_ms);
  bool replaced_ended() const;  // every session in replaced_ has ended
  void queue_wire(std::span<const uint8_t> bytes);  // bytes laid out already, to the output
  bool admit(uint32_t cmd_sn, bool immediate, std::span<const uint8_t> pdu);
  void replay_held();
  void on_scsi_command(const iscsi::ScsiCommandPdu& c, const iscsi::PduParts& p, std::span<const uint8_t> pdu);
  std::optional<iscsi::RejectReason> command_error(const iscsi::ScsiCommandPdu& c, std::span<const uint8_t> raw_ahs,
                                                   iscsi::AhsInfo& ahs) const;
  bool command_ok(const iscsi::ScsiCommandPdu& c, std::span<const uint8_t> raw_ahs) const;
  void on_data_out(const iscsi::DataOutPdu& d, std::span<const uint8_t> data, std::span<const uint8_t> pdu);
  const char* check_data_out(const Task* t, const iscsi::DataOutPdu& d, size_t* r2t_index) const;
  void on_nop_out(const iscsi::NopOutPdu& n, std::span<const uint8_t> data);
  void on_task_mgmt(const iscsi::TaskMgmtRequestPdu& t);
  static void tmf_quiesced(scsi::QuiesceWait* w);
  void send_tmf_response(iscsi::TaskMgmtResponsePdu& r, bool cold_reset);
  void on_text(const iscsi::TextRequestPdu& t, std::span<const uint8_t> data, std::span<const uint8_t> pdu);
  void on_logout(const iscsi::LogoutRequestPdu& l);

  // tasks
  Task* new_task();
  Task* alloc_task(Task* reserved = nullptr);
  void free_task(Task* t);
  void release_task(Task* t);  // back to the free list once unpinned
  void to_free_list(Task* t);
  static void reserve_buffer(Task* t, uint32_t n);
  void drop_buffer(Task* t);
  // Buffer room (connection_buffer_bytes, and the thread's buffer_bytes share): start() runs a
  // task that needs its buffer now or queues it; pump() runs queued ones as room appears.
  enum class Room : uint8_t { Fits, Connection, Thread };  // fits, or what it waits for
  void start(Task* t);
  bool may_start(Task* t);
  bool small_alone(const Task* t) const;
  Room make_room(Task* t);
  void go(Task* t);
  void pump();
  void after_release();  // pumps this connection's waiting tasks, then the thread's
  void join_thread_queue();
  void leave_thread_queue();
  void add_started(uint64_t n, bool small);
  void sub_started(uint64_t n, bool small);
  void add_kept(uint64_t n);
  void sub_kept(uint64_t n);
  void drop_kept(Task* t);  // lets go of a kept buffer (t stays on free_)
  void drop_all_kept();
  Task* find_task(uint32_t itt) const;
  scsi::Lun* find_lun(uint64_t n) const { return target_ ? target_->find_lun(n) : nullptr; }
  void issue_r2ts(Task* t);
  void execute(Task* t);
  static void task_done(scsi::ScsiTask* st);
  void complete(Task* t);
  void send_data_in(Task* t, bool with_status);
  void send_scsi_response(Task* t);
  void drop_collecting(uint64_t lun, bool all_luns);

  // output
  void send(const iscsi::Pdu& hdr, std::span<const uint8_t> data = {});
  // in_place: data is backend memory (ScsiTask::data_in_view): handed to the kernel whatever its
  // size, never copied or digested in user space; from_file: as a range of the task's
  // data_in_fd (output_file()).
  void send_from_task(const iscsi::Pdu& hdr, Task* t, std::span<const uint8_t> data, bool in_place = false,
                      bool from_file = false);
  void queued_bytes(size_t at, size_t n);
  void next_tx_batch();  // once the segments handed out are all sent: the ones queued since
  void unpin(Task* t);
  void reject(iscsi::RejectReason why, std::span<const uint8_t> pdu);
  void close(std::string why);
  uint32_t max_cmd_sn() const;

  ThreadContext& ctx_;
  // The limits this connection keeps to, as they were when it came (a reload's new ones are
  // for the connections after it).
  std::shared_ptr<const TargetSettings> settings_;
  Phase phase_ = Phase::Login;
  bool closing_ = false;
  bool ended_ = false;  // shutdown() ran
  std::string close_reason_;
  uint64_t started_ms_ = 0;
  uint64_t last_rx_ms_ = 0;
  uint64_t nop_sent_ms_ = 0;
  bool nop_outstanding_ = false;
  std::optional<TcpProgress> peer_progress_;  // as last told (note_peer_progress); reset by a ping
  uint32_t nop_ttt_ = 0;

  std::unique_ptr<iscsi::TargetLogin> login_;
  std::shared_ptr<const AccessSettings> access_;  // as it was when this connection came
  uint64_t access_gen_ = 0;                       // ctx_.access->generation() when access_ was taken
  const ThreadContext::Target* target_ = nullptr;  // a Normal session's, once its login names it
  size_t target_index_ = 0;                        // its index in ctx_.served
  uint16_t tsih_ = 0;
  iscsi::SessionParams params_;
  iscsi::Digests digests_{};
  iscsi::Isid isid_{};
  uint16_t cid_ = 0;
  scsi::ItNexus nexus_;
  std::shared_ptr<SessionRecord> session_;  // until the connection is gone (SessionRegistry::end)
  // A reinstating login: the sessions it replaces, and its final Login Response, held until
  // each of them has ended (no command of theirs still at the storage), since held_since_ms_.
  std::vector<std::shared_ptr<SessionRecord>> replaced_;
  std::vector<uint8_t> held_login_response_;
  uint64_t held_since_ms_ = 0;

  iscsi::SequenceCounter stat_sn_;
  iscsi::TargetCmdWindow window_;
  uint32_t window_active_ = 0;  // non-immediate SCSI commands not yet completed
  std::map<uint32_t, std::vector<uint8_t>> held_;  // commands ahead of ExpCmdSN, by CmdSN
  bool replaying_ = false;
  uint32_t next_ttt_ = 1;

  std::string target_address_;  // set_target_address()
  IpAddress peer_;             // set_peer_address()
  bool sendfile_ = false;      // set_sendfile()
  uint64_t drop_at_ms_ = 0;    // told the session is dropped (recheck_access): close then

  // Text continuation (a SendTargets answer longer than one PDU).
  std::vector<uint8_t> text_in_;
  std::vector<uint8_t> text_out_;
  size_t text_out_off_ = 0;
  uint32_t text_ttt_ = iscsi::kReservedTag;

  std::vector<std::unique_ptr<PendingTmf>> tmfs_;  // TMF responses waiting for quiescence
  std::vector<Task*> tasks_;
  std::vector<std::unique_ptr<Task>> owned_;  // every task made so far (the owner)
  std::vector<Task*> free_;                   // not in use; their buffers are kept
  uint64_t started_bytes_ = 0;  // buffers of started tasks, until they are back on free_
  uint64_t kept_bytes_ = 0;     // buffers of the tasks on free_
  std::deque<Task*> waiting_;   // tasks waiting for buffer room, in arrival order
  bool pumping_ = false;
  bool in_thread_queue_ = false;  // in ctx_.buffers.waiting

  std::vector<uint8_t> rx_;  // staging
  size_t rx_start_ = 0;
  size_t rx_end_ = 0;
  DirectRx direct_;
  Task* staged_command_ = nullptr;  // the task a directly received command's data went into

  OutBuffer out_;  // being filled
  std::vector<TxSeg> out_segs_;
  OutBuffer tx_;   // handed to output_iov()
  std::vector<TxSeg> tx_segs_;
  size_t tx_seg_ = 0;      // first segment not wholly sent
  size_t tx_seg_off_ = 0;  // bytes of it sent
  size_t unsent_ = 0;      // bytes queued (out_ and tx_ segments) and not yet sent
  size_t file_segs_ = 0;   // segments with fd >= 0 among them
  bool sent_while_paused_ = false;  // output taken since the last tick() while input paused
  ConnectionStats stats_;
};

}  // namespace vcp::target

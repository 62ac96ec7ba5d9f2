// One iSCSI session with one TCP connection, driven by io_uring on the thread that owns it.
//
// The backend opens one Session per queue thread (and one short-lived one at start-up to read
// the LUN's capacity and limits): nothing is shared between threads, so nothing is locked.
// MC/S is not used (vcp_iscsi negotiates MaxConnections=1): parallelism comes from a session
// per queue, which the target schedules like any other set of sessions.
//
// Data path: submit() turns a BlockRequest into a task (a preallocated slot with its CDB);
// commit()/poll() assign CmdSNs while the window is open, emit PDUs into a preallocated ring
// of outgoing PDU records, and keep exactly one sendmsg and one receive in flight. Receives
// read ahead into a per-connection staging buffer and every complete PDU it holds is handled
// from there (one receive for many small PDUs); a Data-In segment that is not all staged yet is
// received straight into the request's iovecs at its buffer offset (only the staged part is
// copied), and after a large Data-In the next receives stop at the next BHS so that large reads
// stay zero copy. Data-Out is sent from the caller's buffers. No allocation, no exceptions, no
// locks after start().
//
// Keeping going: NOP-Out when the target is silent, answers to its NOP-Ins; a command past its
// timeout is aborted (ABORT TASK), then the LUN reset (LOGICAL UNIT RESET), then the connection
// dropped; a lost connection is re-established with the same ISID and TSIH 0, which reinstates
// the session on the target (RFC 7143 §6.3.5), and every command still outstanding is issued
// again with a new ITT and CmdSN. A task completes once: its slot is freed on completion and
// responses for an older ITT of the slot are dropped.
#pragma once

#include <liburing.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "backends/iscsi/scsi.hpp"
#include "backends/iscsi/url.hpp"
#include "base/tcp_progress.hpp"
#include "base/unique_fd.hpp"
#include "iscsi/login.hpp"
#include "iscsi/pdu.hpp"
#include "iscsi/sendtargets.hpp"
#include "iscsi/seq.hpp"

namespace vcp::backends::iscsi {

// What the backend knows about the LUN that the data path needs.
struct LunShape {
  uint32_t block_size = 512;
  bool discard = false;
  bool write_zeroes = false;
  // An eventfd the session adds 1 to when the target reports CAPACITY DATA HAS CHANGED (a unit
  // attention, or an asynchronous SCSI event): the backend's resize_fd(), which tells the
  // control thread to read the capacity again. The session itself goes on as before. -1: none.
  int capacity_changed_fd = -1;
};

class Session {
 public:
  static constexpr uint32_t kMaxTasks = 1024;      // commands in flight per session
  static constexpr uint32_t kMaxIov = 1024;        // iovecs per request (IOV_MAX)
  static constexpr uint32_t kTxRecords = 2048;     // PDUs queued for sending
  static constexpr uint32_t kStageBytes = 64 * 1024;  // receive read-ahead per connection
  // A Data-In segment larger than this makes the next receives header-sized (no copying).
  static constexpr uint32_t kCopyMax = 16 * 1024;
  // A data segment with at least this much still to come is received whole before the kernel
  // wakes the session (SO_RCVLOWAT); below it, the socket wakes on every byte.
  static constexpr uint32_t kLowatMin = 32 * 1024;
  // After this many Data-In PDUs in a row of one size (at least kLowatMin), and while only reads
  // that the target answers with PDUs of that size are outstanding, the receive of the next
  // header waits for a whole PDU of that size (SO_RCVLOWAT): one wake-up per PDU instead of one
  // for its header and another for the rest (docs/iscsi.md, "Receiving").
  static constexpr uint32_t kPredictAfter = 8;

  enum class State : uint8_t { Down, Connecting, LoggingIn, FullFeature, LoggingOut, Failed };

  Session(IscsiConfig cfg, vcp::iscsi::Isid isid, std::string name, LunShape shape);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Allocates everything (rings, buffers, the io_uring) and starts connecting. <0: -errno.
  int start();
  // Runs the loop until the first login ends. 0 when in Full Feature Phase; otherwise -errno
  // and error() says why (authentication failure, target not found, timeout ...).
  int wait_logged_in();
  const std::string& error() const { return error_; }
  State state() const { return state_; }
  // The configured portal in use (portal_at(config, portal())): where the last login was, or
  // the one being tried.
  size_t portal() const { return portal_; }
  // Where the session is and what happened to it, for a status report: "logged in to T
  // through H:P (portal 2 of 2), N commands in flight, R reconnects, ...".
  std::string status_line() const;

  // Data path (BackendQueue semantics).
  void submit(BlockRequest* req);
  // A SCSI command of the caller's making (start-up probes). The data buffer is req->iov;
  // req->length is updated to the bytes transferred (short reads of VPD pages are fine).
  void submit_cdb(BlockRequest* req, const Cdb& cdb, bool read, bool write);
  void commit();
  int poll();
  // The ring itself: readable while completions wait in it, so a waiter is woken only by
  // completions nobody has reaped yet (an eventfd would also count those reaped inline).
  int wait_fd() const { return ring_.ring_fd; }
  uint32_t in_flight() const { return in_flight_; }
  // BackendQueue::abandon(): with no session (an outage: reconnecting, or failed), everything
  // waiting completes now with -ECANCELED; nothing of it is on the wire. With a session,
  // nothing: its commands have timeouts of their own.
  void abandon();

  // Blocks until every request completed or timeout_ms passed; returns in_flight().
  uint32_t run_until_idle(uint32_t timeout_ms);
  // Logs out (best effort, bounded by timeout_ms) and closes the connection.
  void logout(uint32_t timeout_ms);

  // Observability for tests and logs.
  struct Stats {
    uint64_t reconnects = 0;
    uint64_t reissued = 0;
    uint64_t retries = 0;
    uint64_t retries_now = 0;       // of those, reissued at once (UNIT ATTENTION), not after a back-off
    uint64_t busy = 0;              // BUSY or TASK SET FULL answers (retried after a back-off)
    uint64_t depth_reductions = 0;  // times TASK SET FULL lowered the queue depth kept at the target
    uint64_t aborts = 0;
    uint64_t timeouts_extended = 0;  // command timeouts put off: it, or one it waits behind, moved
    uint64_t lun_resets = 0;
    uint64_t nops_sent = 0;
    uint64_t nop_ins_answered = 0;  // target pings (NOP-In with a TTT) echoed back
    uint64_t redirects = 0;         // login redirects followed
    uint64_t async_logouts = 0;     // Logouts sent because the target asked (Async event 1)
    uint64_t idle_polls = 0;        // TEST UNIT READYs sent on an idle session (capacity_changed_fd)
    uint64_t held_completions = 0;  // completions held until the kernel was done with their data
    uint64_t pdus_received = 0;
    uint64_t receives = 0;  // socket receives that returned data
    uint64_t lowat_misses = 0;  // a whole-PDU mark the target's next PDU did not reach (timer)
    uint64_t lowat_late = 0;    // timer ticks that found a whole PDU of the mark's size late
    uint64_t sends = 0;     // sendmsg calls (each carries every queued PDU it can)
    uint64_t failed = 0;    // commands answered with an error (CHECK CONDITION, residual, ...)
  };
  const Stats& stats() const { return stats_; }
  // Commands kept at the target at most now, after TASK SET FULL (0: no limit).
  uint32_t depth_limit() const { return depth_limit_; }
  const vcp::iscsi::SessionParams& params() const { return params_; }

 private:
  // Completing: answered, but a send still holds its buffers; completes when that send ends.
  enum class TaskState : uint8_t { Free, Ready, Issued, Delayed, Completing };
  struct Task {
    BlockRequest* req = nullptr;
    Cdb cdb{};
    bool read = false;
    bool write = false;
    bool raw = false;  // submit_cdb: short transfers are fine
    TaskState state = TaskState::Free;
    uint16_t gen = 0;
    uint32_t itt = 0;
    uint32_t cmd_sn = 0;
    uint32_t xfer = 0;
    const iovec* iov = nullptr;
    uint32_t iovcnt = 0;
    uint32_t rx_done = 0;         // Data-In bytes received (in order)
    uint32_t next_data_sn = 0;
    // Outgoing data: the current sequence [tx_off, tx_end) with its TTT, plus queued R2Ts.
    bool cmd_pending = false;     // the SCSI Command PDU is still to be emitted
    bool in_tx_fifo = false;
    uint32_t imm_len = 0;
    uint32_t tx_off = 0;
    uint32_t tx_end = 0;
    uint32_t tx_ttt = vcp::iscsi::kReservedTag;
    uint32_t tx_data_sn = 0;
    std::array<std::array<uint32_t, 3>, 4> r2t{};  // offset, length, ttt
    uint8_t r2t_count = 0;
    uint32_t retries = 0;
    uint32_t timeouts = 0;
    uint32_t tx_refs = 0;         // queued PDU records that send from the request's buffers
    int held_status = 0;          // Completing: the status to report
    uint64_t deadline_ms = 0;     // Issued: command timeout; Delayed: when to retry
    // Progress (timeouts on slow links): the order of issue, the last time its data moved
    // (Data-In or R2T received, its PDUs taken by the kernel or by the target's TCP), and the
    // connection's byte count just past its last byte the kernel took.
    uint64_t seq = 0;
    uint64_t moved_ms = 0;
    uint64_t tx_mark = 0;
    // The commands its answer may wait behind at the target: those issued before the last of
    // its output was on its way (seq below `ahead`, itself aside), whose answers the target
    // may have queued first; and how many of them were still out at the last check (counted
    // below `checked_ahead`, the bound then).
    uint64_t ahead = 0;
    uint64_t checked_ahead = 0;
    uint32_t older = 0;
    uint32_t next = UINT32_MAX;   // ready / tx FIFO link
    uint32_t tx_next = UINT32_MAX;
    std::array<uint8_t, kUnmapParamLength> params{};
    iovec param_iov{};
  };
  struct TxRecord {
    std::array<uint8_t, vcp::iscsi::kBhsSize + 4> hdr{};
    uint8_t hdr_len = 0;
    const iovec* iov = nullptr;
    uint32_t iovcnt = 0;
    uint32_t data_off = 0;
    uint32_t data_len = 0;
    std::array<uint8_t, 8> trailer{};  // pad + data digest
    uint8_t trailer_len = 0;
    bool data_out = false;          // a Data-Out: may be dropped while not yet handed to the kernel
    uint32_t owner = UINT32_MAX;    // the task whose buffers data_len bytes come from
    uint32_t task = UINT32_MAX;     // the task the PDU is of (any of its PDUs), and its issue
    uint64_t task_seq = 0;
    int8_t echo = -1;               // the NOP-Out echo slot whose data this record sends
    uint64_t total() const { return uint64_t{hdr_len} + data_len + trailer_len; }
  };
  // Stage: reading ahead into the staging buffer; Data: the rest of one data segment straight
  // into its destination (the task's iovecs or the scratch buffer) and its trailer.
  enum class RxPhase : uint8_t { Stage, Data };
  enum class Tmf : uint8_t { None, AbortTask, LunReset };

  // connection lifecycle
  void start_connect();
  // Connects to addrs_[addr_] (the attempt's addresses are known).
  void connect_address();
  // A read of lookup_'s fd in the ring, so that its end wakes the loop.
  void arm_lookup_read();
  // The attempt's lookup ended: its addresses are tried, or the attempt fails.
  void on_resolved();
  void on_connected(int res);
  // The address being tried did not take the connection (why): true when the portal's name
  // has another, which is then tried at once as part of the same attempt.
  bool try_next_address(const std::string& why);
  void begin_login();
  void on_login_response(const vcp::iscsi::LoginResponsePdu& rs, std::span<const uint8_t> data);
  void send_login(const vcp::iscsi::LoginRequestOut& out);
  void enter_full_feature();
  void fail_all(int status);

  // io_uring plumbing
  io_uring_sqe* sqe();
  void arm_send();
  void arm_recv();
  void set_rcvlowat(uint32_t bytes);
  uint32_t predicted_pdu_bytes(uint32_t held) const;
  void note_outgoing(const vcp::iscsi::Pdu& pdu);
  void check_lowat_stall(uint64_t now);
  void queue_msg(int op, msghdr& msg, iovec* iov, uint32_t n);  // op: Send or Recv
  void arm_timer_read();
  void handle_cqe(uint64_t ud, int res);
  void on_sent(int res);
  void on_received(int res);
  void on_timer();
  // Samples the connection's TCP progress: marks the commands whose queued bytes it moved.
  // Returns the sample (nullopt without a TCP socket), for keep-alive to judge its ping by.
  std::optional<TcpProgress> sample_progress(uint64_t now);
  // The last time t, or a command its answer may wait behind, moved or was answered; brings
  // t's count of those up to date.
  uint64_t last_moved(Task& t, uint64_t now);
  // t's output moved (taken by the kernel, or passed on by it): what was issued by now may be
  // answered ahead of it.
  void output_moved(Task& t, uint64_t now) {
    t.moved_ms = now;
    t.ahead = issue_seq_ + 1;
  }
  // The last time anything was heard from the target: a PDU, or bytes of one still arriving.
  uint64_t heard_ms() const { return std::max(last_rx_ms_, rx_kernel_ms_); }
  void maybe_reconnect();
  void use_portal(size_t i);
  void next_portal() { use_portal((portal_ + 1) % portal_count(cfg_)); }
  // Where we connect, as "host:port" ("[v6]:port").
  std::string where() const { return vcp::iscsi::host_port(host_, port_); }
  // where(), and the address it resolved to when that says more ("name:3260 (10.0.0.1:3260)").
  std::string where_connected() const;
  void wait_event(uint32_t timeout_ms);

  // tx
  TxRecord* tx_alloc();
  bool tx_has_room(uint32_t n) const { return kTxRecords - tx_count_ >= n; }
  void tx_release(TxRecord& r);
  void tx_cancel(Task& t);
  void emit_header(TxRecord& r, const vcp::iscsi::Pdu& pdu);
  void emit_data(TxRecord& r, const iovec* iov, uint32_t iovcnt, uint32_t off, uint32_t len);
  void pump();
  void issue_ready();
  bool emit_task_pdu(Task& t);
  void tx_fifo_push(Task& t);
  bool send_nop_out(uint32_t itt, uint32_t ttt, std::span<const uint8_t> ping);
  uint32_t send_logout_request();
  void on_async_message(const vcp::iscsi::AsyncMessagePdu& a, std::span<const uint8_t> data);
  void maybe_answer_logout_request();
  bool poll_when_idle(uint64_t now);  // true when it sent a TEST UNIT READY
  void on_redirect(const std::string& address);
  void send_tmf(vcp::iscsi::TmfFunction fn, Task* t);

  // rx
  void rx_parse_staged();
  bool rx_header(const uint8_t* hdr);
  void rx_take_staged(uint32_t len);
  void rx_data_done();
  void rx_reset();
  void process_pdu();
  Task* task_for(uint32_t itt);
  void update_sn(uint32_t stat_sn, bool advances, uint32_t exp_cmd_sn, uint32_t max_cmd_sn);
  void on_scsi_status(Task& t, uint8_t response, uint8_t status, bool underflow, bool overflow,
                      uint32_t residual, std::span<const uint8_t> sense_segment);
  void note_capacity_change(const Sense& s);
  void on_r2t(const vcp::iscsi::R2TPdu& r);
  void on_tmf_response(const vcp::iscsi::TaskMgmtResponsePdu& r);

  // tasks
  void start_request(BlockRequest* req);
  void ready_push(Task& t);
  void complete(Task& t, int status);
  void finish_complete(Task& t, int status);
  void retry_later(Task& t, uint64_t delay_ms);
  void requeue_issued();
  uint64_t now_ms() const;
  // How long a NOP-Out may go unanswered: nop_timeout, or the command timeout.
  uint32_t nop_timeout_ms() const { return cfg_.nop_timeout_ms ? cfg_.nop_timeout_ms : cfg_.timeout_ms; }
  // Why a connection ends, for where the next one goes.
  enum class Cause : uint8_t {
    Error,       // the connection broke or an attempt failed (a failed attempt moves on)
    Redirect,    // the target sent us elsewhere: follow it at once
    Unanswered,  // the target stopped answering (NOP-Out, LUN reset): the next portal at once
    NextAddress, // one address of the portal's name did not connect: its next, at once
  };
  // The connection ended (or an attempt to make one failed): tear it down and, unless the
  // session is closing or its first login has failed on every portal, reconnect. code is the
  // -errno a failed first login reports.
  void connection_failed(const std::string& why, int code = -EIO, Cause cause = Cause::Error);
  void finish_teardown();

  IscsiConfig cfg_;
  vcp::iscsi::Isid isid_;
  std::string name_;
  LunShape shape_;
  std::string error_;
  int error_code_ = 0;
  State state_ = State::Down;
  bool closing_ = false;           // logout() or destruction: never reconnect
  bool recovery_expired_ = false;  // down longer than recovery_timeout: fail fast
  bool first_login_done_ = false;
  bool logout_done_ = false;

  io_uring ring_{};
  bool ring_ok_ = false;
  UniqueFd timer_fd_;
  uint64_t timer_buf_ = 0;
  bool timer_armed_ = false;
  UniqueFd sock_;
  uint32_t conn_gen_ = 0;
  uint32_t ops_in_flight_ = 0;  // connect/send/recv of the current connection
  bool tearing_down_ = false;
  std::string host_;  // where we connect: the configured portal in use, or where a redirect sent us
  uint16_t port_ = 0;
  size_t portal_ = 0;  // which of the configured portals (portal_at(cfg_, portal_)) is in use
  // The addresses host_ resolved to for the attempt under way, and which is tried (or
  // connected); the failures of those before it, for the error if none connects.
  std::vector<SocketAddress> addrs_;
  size_t addr_ = 0;
  bool next_address_ = false;  // the next start_connect() tries addrs_[addr_] (no new lookup)
  std::string addr_failures_;
  uint64_t addr_wait_ms_ = 0;      // how long a connect to addrs_[addr_] may take
  uint64_t addr_deadline_ms_ = 0;  // when it is given up for the next address
  // The lookup of host_ (a name: resolved on a thread of its own, PortalLookup) and whether the
  // attempt under way waits for it. A lookup outlives an attempt that gave up on it: the next
  // attempt waits for it (or takes its answer) instead of starting another. lookup_gen_ tells
  // the ring's reads of an earlier lookup's fd from the current one's; lookup_reads_ counts
  // those in the ring (the destructor waits for them).
  std::shared_ptr<PortalLookup> lookup_;
  bool resolving_ = false;
  bool lookup_armed_ = false;
  uint32_t lookup_gen_ = 0;
  uint32_t lookup_reads_ = 0;
  uint64_t lookup_buf_ = 0;

  // login
  std::unique_ptr<vcp::iscsi::InitiatorLogin> login_;
  std::vector<uint8_t> login_tx_;
  iovec login_iov_{};
  uint64_t login_deadline_ms_ = 0;
  vcp::iscsi::SessionParams params_;
  vcp::iscsi::Digests digests_{};

  // sequence numbers
  vcp::iscsi::CmdWindow window_;
  // Queue depth after TASK SET FULL (the target's task set is smaller than what we send): at
  // most depth_limit_ commands at the target, one more after every ramp_every_ good
  // completions; 0: no limit. A step up that meets TASK SET FULL again doubles the wait for
  // the next one (kDepthRampEvery up to kDepthRampMax), so a target whose task set stays the
  // same is probed less and less often.
  static constexpr uint32_t kDepthRampEvery = 64;
  static constexpr uint32_t kDepthRampMax = 8192;
  uint32_t depth_limit_ = 0;
  uint32_t good_since_limit_ = 0;
  uint32_t ramp_every_ = kDepthRampEvery;
  bool probing_ = false;  // the limit was raised and no TASK SET FULL has come since
  uint32_t issued_ = 0;  // tasks in state Issued: at the target (set_state() keeps count)
  void set_state(Task& t, TaskState s);
  void on_task_set_full();
  void ramp_depth();
  uint32_t exp_stat_sn_ = 0;

  // tasks
  std::unique_ptr<Task[]> tasks_;
  std::vector<uint32_t> free_;
  uint32_t ready_head_ = UINT32_MAX, ready_tail_ = UINT32_MAX;
  uint32_t tx_head_task_ = UINT32_MAX, tx_tail_task_ = UINT32_MAX;
  uint32_t in_flight_ = 0;
  uint64_t completed_ = 0;
  BlockRequest idle_poll_req_{};  // poll_when_idle()'s TEST UNIT READY (one at a time)
  uint32_t delayed_ = 0;
  uint32_t completing_ = 0;  // tasks in TaskState::Completing
  // Requests beyond kMaxTasks wait here (a fixed ring: no allocation).
  std::vector<BlockRequest*> overflow_;
  uint32_t overflow_head_ = 0, overflow_count_ = 0;
  std::vector<uint8_t> zero_block_;
  iovec zero_iov_{};

  // tx ring
  std::unique_ptr<TxRecord[]> tx_;
  uint32_t tx_head_ = 0, tx_count_ = 0;
  uint64_t tx_head_sent_ = 0;  // bytes of the head record already sent
  bool send_in_flight_ = false;
  std::unique_ptr<iovec[]> send_iov_;
  msghdr send_msg_{};
  uint32_t send_upto_ = 0;  // records (from the head) the in-flight sendmsg covers

  // rx
  RxPhase rx_phase_ = RxPhase::Stage;
  std::unique_ptr<uint8_t[]> stage_;
  uint32_t stage_begin_ = 0, stage_end_ = 0;  // unparsed bytes: [begin, end)
  int rcvlowat_ = 1;            // the socket's SO_RCVLOWAT as last set
  bool rcvlowat_works_ = true;  // false once setsockopt refused it: not tried again
  uint32_t rx_since_large_ = UINT32_MAX;       // PDUs since the last Data-In above kCopyMax
  // Whole-PDU marks: the size (whole PDU, header to digest) and data segment length of the last
  // Data-In, how many in a row had it, and whether a mark went unmet on this connection.
  uint32_t pred_bytes_ = 0, pred_dsl_ = 0, pred_streak_ = 0;
  bool pred_off_ = false;
  uint32_t rx_hdr_len_ = vcp::iscsi::kBhsSize;
  uint32_t rx_got_ = 0;  // Data phase: bytes of rx_total_ in place
  vcp::iscsi::Pdu rx_pdu_;
  uint32_t rx_dsl_ = 0;
  // Data segment destination: the task's iovecs (Data-In), the staging buffer (a PDU staged
  // whole: handled in place) or the scratch buffer (larger than the staging buffer).
  const uint8_t* rx_data_ = nullptr;  // the segment, when not in a task's iovecs
  iovec stage_iov_{};
  const iovec* rx_iov_ = nullptr;
  uint32_t rx_iovcnt_ = 0;
  uint32_t rx_off_ = 0;
  uint32_t rx_total_ = 0;  // data + pad + digest
  bool rx_into_task_ = false;
  std::array<uint8_t, 8> rx_trailer_{};
  std::vector<uint8_t> scratch_;
  iovec scratch_iov_{};
  bool recv_in_flight_ = false;
  std::unique_ptr<iovec[]> recv_iov_;
  msghdr recv_msg_{};

  // keep-alive and task management
  uint64_t last_rx_ms_ = 0;
  uint32_t nop_itt_ = 0;
  bool nop_outstanding_ = false;
  uint64_t nop_deadline_ms_ = 0;
  // The connection's TCP progress a tick after the ping (the ping's own bytes taken).
  std::optional<TcpProgress> nop_acked_;
  // Progress of commands, for their timeouts: issue order, bytes the kernel took from us on
  // this connection and how many of those its queue had passed on (acknowledged) at the last
  // tick, bytes the target's TCP had sent us then, and the last time that grew.
  uint64_t issue_seq_ = 0;
  uint64_t tx_bytes_ = 0;
  uint64_t tx_passed_ = 0;
  uint64_t tx_sampled_ = 0;  // tx_bytes_ at the last tick's sample
  uint64_t rx_kernel_bytes_ = 0;
  uint64_t rx_kernel_ms_ = 0;
  uint64_t window_closed_since_ms_ = 0;  // commands have waited for the CmdSN window since (0: none)
  // The data of NOP-Outs answering target pings, one slot per answer not yet sent (each
  // record's iovec must stay as it is until the record leaves the ring).
  static constexpr int kEchoSlots = 4;
  struct EchoSlot {
    std::vector<uint8_t> data;
    iovec iov{};
    bool busy = false;
  };
  std::array<EchoSlot, kEchoSlots> nop_echo_{};
  Tmf tmf_ = Tmf::None;
  uint32_t tmf_itt_ = 0;
  uint32_t tmf_task_itt_ = 0;
  uint64_t tmf_deadline_ms_ = 0;
  uint32_t special_seq_ = 0;

  // the target asked us to log out (Async event 1): no new commands, Logout by this time
  bool async_logout_ = false;
  bool async_logout_sent_ = false;
  uint32_t async_logout_itt_ = 0;
  uint64_t async_logout_at_ms_ = 0;  // Logout due by then; once sent: its answer due by then

  // recovery
  uint32_t redirects_ = 0;           // in a row, without a login in between
  bool redirected_temporarily_ = false;
  uint64_t down_since_ms_ = 0;
  uint64_t reconnect_at_ms_ = 0;
  // Connection or login attempts failed in a row (any portal) since the last login: each moves
  // to the next portal; after a whole round of them the next attempt waits (back-off).
  uint32_t attempts_failed_ = 0;
  std::string first_login_failures_;  // each portal's failure, for the first login's error
  // An outage's failed attempts are logged, after the first on each portal, once a minute at
  // most (a target down for an hour would otherwise fill the log, a line per queue every 2 s).
  static constexpr uint64_t kOutageLogEveryMs = 60000;
  uint32_t outage_failures_ = 0;   // attempts failed since the session was last in
  uint32_t outage_portals_said_ = 0;  // portals (bit i: portal i) whose failure has been logged
  uint64_t outage_said_ms_ = 0;    // when the last was

  Stats stats_;
};

}  // namespace vcp::backends::iscsi

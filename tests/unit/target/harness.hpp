// Drives a TargetConnection with in-memory PDUs: an initiator built from iscsi/ (InitiatorLogin
// for the login, encode_pdu for the rest) on one side, the target's state machine with a ram LUN
// on the other. Time is a number the test moves.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "iscsi/login.hpp"
#include "iscsi/pdu.hpp"
#include "target/connection.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::target::test {

constexpr const char* kIqn = "iqn.2024-01.org.vcp:test";
constexpr const char* kInitiator = "iqn.2024-01.org.vcp:host";

// One thread's worth of target: settings, registry, a ram LUN 0 (and whatever more LUNs and
// targets the settings name).
struct TargetFixture {
  explicit TargetFixture(TargetSettings s = default_settings());
  static TargetSettings default_settings();
  TargetSettings settings;
  SessionRegistry sessions;
  // The first target's first LUN.
  std::unique_ptr<BlockBackend> backend;
  std::unique_ptr<BackendQueue> queue;
  std::unique_ptr<scsi::Lun> lun;
  // The others, in settings.all_targets() order.
  std::vector<std::unique_ptr<BlockBackend>> more_backends;
  std::vector<std::unique_ptr<BackendQueue>> more_queues;
  std::vector<std::unique_ptr<scsi::Lun>> more_luns;
  ThreadContext ctx;
  int wakes = 0;
};

// Every byte of the connection's queued output, taken in sends of at most `step` bytes (that
// stop at odd places): memory pieces through output_iov(), file ranges (Data-In sent with
// sendfile) read from their file.
std::vector<uint8_t> drain_output(TargetConnection& c, size_t step = SIZE_MAX);

struct Received {
  iscsi::Pdu header;
  std::vector<uint8_t> data;
  template <class T>
  const T* as() const {
    return std::get_if<T>(&header);
  }
};

struct SessionOptions {
  iscsi::SessionType type = iscsi::SessionType::Normal;
  iscsi::Isid isid{0x80, 0, 0, 0, 0, 1};
  std::string target = kIqn;
  std::string initiator = kInitiator;
  std::optional<iscsi::ChapCredentials> chap;
  std::optional<iscsi::ChapCredentials> target_chap;
  iscsi::NegotiationLimits limits = initiator_limits();
  static iscsi::NegotiationLimits initiator_limits();
};

class Initiator {
 public:
  Initiator(TargetFixture& f, SessionOptions o = {});
  TargetConnection& conn() { return *conn_; }

  // Runs the login; returns the final state (the last Login Response is in last_login). A
  // Login Response the target holds back (a reinstatement waiting for the session it replaces
  // to end) leaves it InProgress; finish_login() goes on once the target has answered.
  iscsi::LoginState login();
  iscsi::LoginState finish_login();
  // The I/O thread frees the connection (it does once the connection has finished()).
  void drop_connection() { conn_.reset(); }
  iscsi::LoginResponsePdu last_login;
  const iscsi::SessionParams& params() const { return params_; }

  // Sends one PDU (digests as negotiated once in Full Feature Phase).
  void send(const iscsi::Pdu& hdr, std::span<const uint8_t> data = {});
  void send_raw(std::span<const uint8_t> bytes) { conn_->receive(bytes, now); }
  // Everything the target sent since the last call, decoded.
  std::vector<Received> take();

  uint32_t next_cmd_sn() { return cmd_sn_++; }
  uint32_t cmd_sn() const { return cmd_sn_; }
  uint32_t next_itt() { return itt_++; }

  // A SCSI command with (optional) immediate data; returns the ITT.
  uint32_t command(std::vector<uint8_t> cdb, bool read, bool write, uint32_t edtl,
                   std::span<const uint8_t> immediate = {}, bool final = true, uint64_t lun = 0);
  // Runs a command to its end, answering R2Ts from `out`; returns the PDUs for it.
  std::vector<Received> run(std::vector<uint8_t> cdb, bool read, bool write, uint32_t edtl,
                            std::span<const uint8_t> out = {});
  void data_out(uint32_t itt, uint32_t ttt, uint32_t data_sn, uint32_t offset, std::span<const uint8_t> data,
                bool final);
  // Sends a task management request (immediate); returns its ITT. The response may come later.
  uint32_t send_tmf(iscsi::TmfFunction fn, uint32_t lun = 0, uint32_t ref_itt = iscsi::kReservedTag,
                    uint32_t ref_cmd_sn = 0);
  // Sends a task management request (immediate) and returns the target's one response.
  iscsi::TmfResponse tmf(iscsi::TmfFunction fn, uint32_t lun = 0, uint32_t ref_itt = iscsi::kReservedTag,
                         uint32_t ref_cmd_sn = 0);
  // TEST UNIT READY; the first one after login collects the power-on unit attention.
  std::vector<Received> tur() { return run({0x00, 0, 0, 0, 0, 0}, false, false, 0); }

  uint64_t now = 1000;
  iscsi::Digests digests{};
  // Deliver what send() encodes in pieces of this many bytes (0: all at once), as a socket
  // would: a PDU whose header arrives before its data takes the target's direct receive path.
  size_t chunk = 0;

 private:
  TargetFixture& f_;
  SessionOptions o_;
  std::unique_ptr<TargetConnection> conn_;
  std::unique_ptr<iscsi::InitiatorLogin> login_;  // the login under way
  iscsi::LoginRequestOut login_rq_;               // its last request
  iscsi::SessionParams params_;
  uint32_t cmd_sn_ = 1;
  uint32_t itt_ = 0x100;
  bool ffp_ = false;
};

// Collected data-in of one command and its final status.
struct Outcome {
  std::vector<uint8_t> data;
  bool have_status = false;
  uint8_t status = 0xff;
  bool underflow = false, overflow = false;
  uint32_t residual = 0;
  std::vector<uint8_t> sense;
  int r2ts = 0;
};
Outcome outcome_of(const std::vector<Received>& pdus);

std::vector<uint8_t> cdb_inquiry(uint16_t alloc);
std::vector<uint8_t> cdb_rw16(uint8_t op, uint64_t lba, uint32_t blocks);
std::vector<uint8_t> pattern(size_t n, uint8_t seed);

}  // namespace vcp::target::test

// Serial number arithmetic (RFC 1982, SERIAL_BITS = 32) and the sequence numbers iSCSI keeps
// with it: the CmdSN window (ExpCmdSN..MaxCmdSN), StatSN, DataSN and R2TSN.
//
// All of these wrap; comparing them with `<` is a bug once a long session passes 2^32. Two
// numbers exactly 2^31 apart are incomparable (RFC 1982 §3.2): serial_lt and serial_gt are
// both false for them.
#pragma once

#include <cstdint>

namespace vcp::iscsi {

constexpr uint32_t kSerialHalf = 0x80000000u;

constexpr bool serial_lt(uint32_t a, uint32_t b) {
  return (a < b && b - a < kSerialHalf) || (a > b && a - b > kSerialHalf);
}
constexpr bool serial_gt(uint32_t a, uint32_t b) { return serial_lt(b, a); }
constexpr bool serial_le(uint32_t a, uint32_t b) { return a == b || serial_lt(a, b); }
constexpr bool serial_ge(uint32_t a, uint32_t b) { return a == b || serial_gt(a, b); }
// Number of steps from `from` forward to `to` (meaningful when serial_le(from, to)).
constexpr uint32_t serial_distance(uint32_t from, uint32_t to) { return to - from; }

// The initiator's view of the command window (RFC 7143 §4.2.2.1). Non-immediate commands may
// be sent while CmdSN is within [ExpCmdSN, MaxCmdSN]; MaxCmdSN = ExpCmdSN - 1 closes the window.
class CmdWindow {
 public:
  // After login: the first CmdSN, with ExpCmdSN/MaxCmdSN from the final Login Response.
  void reset(uint32_t cmd_sn, uint32_t exp_cmd_sn, uint32_t max_cmd_sn) {
    cmd_sn_ = cmd_sn;
    exp_ = exp_cmd_sn;
    max_ = max_cmd_sn;
  }
  // Applies ExpCmdSN/MaxCmdSN from a target PDU. The RFC says to ignore the pair when
  // MaxCmdSN < ExpCmdSN - 1, and never to move either backwards (stale PDUs carry old values).
  // Returns false when the pair was ignored as invalid.
  bool update(uint32_t exp_cmd_sn, uint32_t max_cmd_sn) {
    if (serial_lt(max_cmd_sn, exp_cmd_sn - 1)) return false;
    if (serial_gt(exp_cmd_sn, exp_)) exp_ = exp_cmd_sn;
    if (serial_gt(max_cmd_sn, max_)) max_ = max_cmd_sn;
    return true;
  }
  bool is_open() const { return serial_le(cmd_sn_, max_); }
  // Commands that may still be sent before the window closes.
  uint32_t room() const { return is_open() ? serial_distance(cmd_sn_, max_) + 1 : 0; }
  // CmdSN for the next non-immediate command; advances. Call only while is_open().
  uint32_t take() { return cmd_sn_++; }
  // CmdSN carried by an immediate command: the current value, not advanced.
  uint32_t peek() const { return cmd_sn_; }
  uint32_t exp_cmd_sn() const { return exp_; }
  uint32_t max_cmd_sn() const { return max_; }

 private:
  uint32_t cmd_sn_ = 0;
  uint32_t exp_ = 0;
  uint32_t max_ = 0;
};

// The target's view: which CmdSN it expects next and how many commands it will queue.
class TargetCmdWindow {
 public:
  void reset(uint32_t exp_cmd_sn, uint32_t depth) {
    exp_ = exp_cmd_sn;
    depth_ = depth;
  }
  uint32_t exp_cmd_sn() const { return exp_; }
  uint32_t max_cmd_sn() const { return exp_ + depth_ - 1; }
  // A non-immediate command is acceptable when ExpCmdSN <= CmdSN <= MaxCmdSN.
  bool in_window(uint32_t cmd_sn) const {
    return serial_le(exp_, cmd_sn) && serial_le(cmd_sn, max_cmd_sn());
  }
  // Marks the in-order command cmd_sn delivered; false if it is not the expected one.
  bool accept(uint32_t cmd_sn) {
    if (cmd_sn != exp_) return false;
    ++exp_;
    return true;
  }
  void set_depth(uint32_t depth) { depth_ = depth; }

 private:
  uint32_t exp_ = 0;
  uint32_t depth_ = 1;
};

// A counter that numbers PDUs in order and checks the peer's numbering: StatSN per connection,
// DataSN per command (Data-In/Data-Out sequence), R2TSN per command.
class SequenceCounter {
 public:
  explicit constexpr SequenceCounter(uint32_t first = 0) : next_(first) {}
  uint32_t next() const { return next_; }
  uint32_t take() { return next_++; }
  // For a receiver: true (and advances) when sn is the one expected next.
  bool expect(uint32_t sn) {
    if (sn != next_) return false;
    ++next_;
    return true;
  }
  void reset(uint32_t first) { next_ = first; }

 private:
  uint32_t next_;
};

}  // namespace vcp::iscsi

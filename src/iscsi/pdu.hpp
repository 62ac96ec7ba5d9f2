// iSCSI PDUs (RFC 7143 §11): the 48-byte Basic Header Segment of every opcode as a typed struct
// with host-order fields, encoded into and decoded from a caller's buffer.
//
// Decoding is the trust boundary for everything a peer sends: it checks the opcode, the bits
// the RFC fixes, flag combinations the RFC forbids, reserved code values, and which opcodes may
// carry AHS or data; reserved fields are ignored on receive and written as zero on send (§11).
// A failed decode says why (PduError); reject_reason_for() maps that to the Reject a target
// sends back. Nothing here allocates or throws.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <variant>

#include "iscsi/wire.hpp"

namespace vcp::iscsi {

constexpr size_t kBhsSize = 48;
constexpr uint32_t kMaxDataSegmentLength = 0xffffff;  // 24-bit field
constexpr uint32_t kReservedTag = 0xffffffff;         // "no ITT/TTT"

enum class Opcode : uint8_t {
  // initiator to target
  NopOut = 0x00,
  ScsiCommand = 0x01,
  TaskMgmtRequest = 0x02,
  LoginRequest = 0x03,
  TextRequest = 0x04,
  DataOut = 0x05,
  LogoutRequest = 0x06,
  Snack = 0x10,
  // target to initiator
  NopIn = 0x20,
  ScsiResponse = 0x21,
  TaskMgmtResponse = 0x22,
  LoginResponse = 0x23,
  TextResponse = 0x24,
  DataIn = 0x25,
  LogoutResponse = 0x26,
  R2T = 0x31,
  AsyncMessage = 0x32,
  Reject = 0x3f,
};
std::string_view to_string(Opcode op);
constexpr bool is_initiator_opcode(uint8_t op) { return op < 0x20; }

enum class PduError : uint8_t {
  Ok,
  Truncated,            // fewer bytes than the BHS / the lengths it announces
  UnknownOpcode,        // not defined by RFC 7143
  VendorOpcode,         // 0x1c-0x1e, 0x3c-0x3e: we implement none
  WrongDirection,       // a target opcode sent by an initiator or the reverse
  FixedBitClear,        // a bit the RFC fixes to 1 (F on single-PDU opcodes, I on Login) is 0
  ConflictingFlags,     // T+C, F+C, O+U, o+u, S without F, status bits without S
  ReservedValue,        // a reserved code point in a defined field (CSG 2, TMF function 0 ...)
  InvalidField,         // a field value the RFC forbids (R=W=0 with a transfer length ...)
  UnexpectedAhs,        // TotalAHSLength != 0 on an opcode that carries no AHS
  UnexpectedData,       // DataSegmentLength != 0 on an opcode that carries no data
  DataSegmentTooLong,   // larger than the receiver's MaxRecvDataSegmentLength
  BadAhs,               // AHS lengths inconsistent, or an unknown AHS type
  HeaderDigestMismatch,
  DataDigestMismatch,
};
std::string_view to_string(PduError e);

enum class RejectReason : uint8_t {
  DataDigestError = 0x02,
  SnackReject = 0x03,
  ProtocolError = 0x04,
  CommandNotSupported = 0x05,
  ImmediateCommandReject = 0x06,
  TaskInProgress = 0x07,
  InvalidDataAck = 0x08,
  InvalidPduField = 0x09,
  LongOperationReject = 0x0a,
  NegotiationReset = 0x0b,  // deprecated by RFC 7143, still a defined code
  WaitingForLogout = 0x0c,
};
// The Reject a target sends for a PDU that failed to decode; nullopt where the RFC says to
// discard silently instead (header digest error: the header cannot be trusted at all).
std::optional<RejectReason> reject_reason_for(PduError e);

// Login stages (CSG/NSG). 2 is reserved.
enum class LoginStage : uint8_t { SecurityNegotiation = 0, OperationalNegotiation = 1, FullFeature = 3 };
std::string_view to_string(LoginStage s);

enum class TaskAttr : uint8_t { Untagged = 0, Simple = 1, Ordered = 2, HeadOfQueue = 3, Aca = 4 };

enum class TmfFunction : uint8_t {
  AbortTask = 1,
  AbortTaskSet = 2,
  ClearAca = 3,
  ClearTaskSet = 4,
  LogicalUnitReset = 5,
  TargetWarmReset = 6,
  TargetColdReset = 7,
  TaskReassign = 8,
};
enum class TmfResponse : uint8_t {
  Complete = 0,
  TaskDoesNotExist = 1,
  LunDoesNotExist = 2,
  TaskStillAllegiant = 3,
  ReassignmentNotSupported = 4,
  NotSupported = 5,
  AuthorizationFailed = 6,
  Rejected = 255,
};
enum class LogoutReason : uint8_t { CloseSession = 0, CloseConnection = 1, RemoveForRecovery = 2 };
enum class LogoutResponseCode : uint8_t {
  Success = 0,
  CidNotFound = 1,
  RecoveryNotSupported = 2,
  CleanupFailed = 3,
};
enum class SnackType : uint8_t { DataR2T = 0, Status = 1, DataAck = 2, RData = 3 };
enum class AsyncEvent : uint8_t {
  ScsiEvent = 0,
  LogoutRequested = 1,
  ConnectionDropped = 2,
  SessionDropped = 3,
  ParameterNegotiation = 4,
  Vendor = 255,
};
// SCSI Response "Response" field: 0x80-0xff are vendor specific, the rest reserved.
enum class ScsiResponseCode : uint8_t { CommandCompleted = 0x00, TargetFailure = 0x01 };

// An 8-byte SAM LUN, kept as its wire bytes (big-endian) so any value round-trips. Numbers
// below 256 use peripheral device addressing (bus 0), 256..16383 flat space addressing, the
// forms SAM uses for a single level LUN (and Linux, tgt and libiscsi produce).
struct Lun {
  uint64_t encoded = 0;

  static constexpr uint32_t kMaxNumber = 16383;
  // Returns nullopt for n > 16383.
  static std::optional<Lun> from_number(uint32_t n);
  // The single level LUN number, or nullopt for other addressing methods / multi-level LUNs.
  std::optional<uint32_t> number() const;
  friend bool operator==(const Lun&, const Lun&) = default;
};

using Isid = std::array<uint8_t, 6>;

// ---- initiator PDUs ----
struct NopOutPdu {
  bool immediate = false;
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = kReservedTag;
  uint32_t ttt = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  friend bool operator==(const NopOutPdu&, const NopOutPdu&) = default;
};

struct ScsiCommandPdu {
  bool immediate = false;
  bool final = true;  // no unsolicited Data-Out follows
  bool read = false;
  bool write = false;
  TaskAttr attr = TaskAttr::Simple;
  uint8_t total_ahs_length = 0;  // in 4-byte words
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = 0;
  uint32_t expected_data_transfer_length = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  std::array<uint8_t, 16> cdb{};
  friend bool operator==(const ScsiCommandPdu&, const ScsiCommandPdu&) = default;
};

struct TaskMgmtRequestPdu {
  bool immediate = true;
  TmfFunction function = TmfFunction::AbortTask;
  Lun lun;
  uint32_t itt = 0;
  uint32_t referenced_task_tag = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  uint32_t ref_cmd_sn = 0;
  uint32_t exp_data_sn = 0;
  friend bool operator==(const TaskMgmtRequestPdu&, const TaskMgmtRequestPdu&) = default;
};

struct LoginRequestPdu {  // the I bit is always 1 on the wire
  bool transit = false;
  bool cont = false;
  LoginStage csg = LoginStage::SecurityNegotiation;
  LoginStage nsg = LoginStage::SecurityNegotiation;  // meaningful only with transit
  uint8_t version_max = 0;
  uint8_t version_min = 0;
  uint32_t data_segment_length = 0;
  Isid isid{};
  uint16_t tsih = 0;
  uint32_t itt = 0;
  uint16_t cid = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  friend bool operator==(const LoginRequestPdu&, const LoginRequestPdu&) = default;
};

struct TextRequestPdu {
  bool immediate = false;
  bool final = true;
  bool cont = false;
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  friend bool operator==(const TextRequestPdu&, const TextRequestPdu&) = default;
};

struct DataOutPdu {
  bool final = false;
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t exp_stat_sn = 0;
  uint32_t data_sn = 0;
  uint32_t buffer_offset = 0;
  friend bool operator==(const DataOutPdu&, const DataOutPdu&) = default;
};

struct LogoutRequestPdu {
  bool immediate = false;
  LogoutReason reason = LogoutReason::CloseSession;
  uint32_t itt = 0;
  uint16_t cid = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  friend bool operator==(const LogoutRequestPdu&, const LogoutRequestPdu&) = default;
};

struct SnackPdu {
  SnackType type = SnackType::DataR2T;
  Lun lun;
  uint32_t itt = kReservedTag;
  uint32_t ttt_or_snack_tag = kReservedTag;
  uint32_t exp_stat_sn = 0;
  uint32_t beg_run = 0;
  uint32_t run_length = 0;
  friend bool operator==(const SnackPdu&, const SnackPdu&) = default;
};

// ---- target PDUs ----
struct NopInPdu {
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = kReservedTag;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  friend bool operator==(const NopInPdu&, const NopInPdu&) = default;
};

struct ScsiResponsePdu {
  bool bidi_overflow = false;   // o
  bool bidi_underflow = false;  // u
  bool overflow = false;        // O
  bool underflow = false;       // U
  ScsiResponseCode response = ScsiResponseCode::CommandCompleted;
  uint8_t status = 0;  // SCSI status (GOOD 0x00, CHECK CONDITION 0x02 ...)
  uint32_t data_segment_length = 0;  // sense data and response data
  uint32_t itt = 0;
  uint32_t snack_tag = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t exp_data_sn = 0;
  uint32_t bidi_read_residual_count = 0;
  uint32_t residual_count = 0;
  friend bool operator==(const ScsiResponsePdu&, const ScsiResponsePdu&) = default;
};

struct TaskMgmtResponsePdu {
  TmfResponse response = TmfResponse::Complete;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  friend bool operator==(const TaskMgmtResponsePdu&, const TaskMgmtResponsePdu&) = default;
};

struct LoginResponsePdu {
  bool transit = false;
  bool cont = false;
  LoginStage csg = LoginStage::SecurityNegotiation;
  LoginStage nsg = LoginStage::SecurityNegotiation;
  uint8_t version_max = 0;
  uint8_t version_active = 0;
  uint32_t data_segment_length = 0;
  Isid isid{};
  uint16_t tsih = 0;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint8_t status_class = 0;
  uint8_t status_detail = 0;
  friend bool operator==(const LoginResponsePdu&, const LoginResponsePdu&) = default;
};

struct TextResponsePdu {
  bool final = true;
  bool cont = false;
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  friend bool operator==(const TextResponsePdu&, const TextResponsePdu&) = default;
};

struct DataInPdu {
  bool final = false;
  bool ack = false;         // A: DataACK requested (ERL > 0 only)
  bool overflow = false;    // O, only with has_status
  bool underflow = false;   // U, only with has_status
  bool has_status = false;  // S: status and StatSN are valid; needs final
  uint8_t status = 0;
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t data_sn = 0;
  uint32_t buffer_offset = 0;
  uint32_t residual_count = 0;
  friend bool operator==(const DataInPdu&, const DataInPdu&) = default;
};

struct LogoutResponsePdu {
  LogoutResponseCode response = LogoutResponseCode::Success;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint16_t time2wait = 0;
  uint16_t time2retain = 0;
  friend bool operator==(const LogoutResponsePdu&, const LogoutResponsePdu&) = default;
};

struct R2TPdu {
  Lun lun;
  uint32_t itt = 0;
  uint32_t ttt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t r2t_sn = 0;
  uint32_t buffer_offset = 0;
  uint32_t desired_data_transfer_length = 0;
  friend bool operator==(const R2TPdu&, const R2TPdu&) = default;
};

struct AsyncMessagePdu {  // ITT is always 0xffffffff
  uint32_t data_segment_length = 0;
  Lun lun;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  AsyncEvent event = AsyncEvent::ScsiEvent;
  uint8_t vcode = 0;
  uint16_t parameter1 = 0;
  uint16_t parameter2 = 0;
  uint16_t parameter3 = 0;
  friend bool operator==(const AsyncMessagePdu&, const AsyncMessagePdu&) = default;
};

struct RejectPdu {  // ITT is always 0xffffffff; the data segment is the rejected BHS
  RejectReason reason = RejectReason::ProtocolError;
  uint32_t data_segment_length = kBhsSize;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t data_sn_or_r2t_sn = 0;
  friend bool operator==(const RejectPdu&, const RejectPdu&) = default;
};

using Pdu = std::variant<NopOutPdu, ScsiCommandPdu, TaskMgmtRequestPdu, LoginRequestPdu,
                         TextRequestPdu, DataOutPdu, LogoutRequestPdu, SnackPdu, NopInPdu,
                         ScsiResponsePdu, TaskMgmtResponsePdu, LoginResponsePdu, TextResponsePdu,
                         DataInPdu, LogoutResponsePdu, R2TPdu, AsyncMessagePdu, RejectPdu>;

// Raw access to a received BHS before (or instead of) a full decode: what the receive loop
// needs to know how many more bytes belong to this PDU.
struct Bhs {
  std::array<uint8_t, kBhsSize> bytes;

  uint8_t opcode_byte() const { return bytes[0] & 0x3f; }
  bool immediate() const { return (bytes[0] & 0x40) != 0; }
  bool final() const { return (bytes[1] & 0x80) != 0; }
  uint8_t total_ahs_length() const { return bytes[4]; }
  uint32_t data_segment_length() const { return wire::load_be24(&bytes[5]); }
  uint32_t itt() const { return wire::load_be32(&bytes[16]); }
};
static_assert(sizeof(Bhs) == kBhsSize);
static_assert(offsetof(Bhs, bytes) == 0);

// Which way a PDU travels; decode rejects the other direction's opcodes.
enum class Direction : uint8_t { FromInitiator, FromTarget, Any };

struct DecodeOptions {
  Direction direction = Direction::Any;
  // Our MaxRecvDataSegmentLength: a longer data segment is refused.
  uint32_t max_data_segment_length = kMaxDataSegmentLength;
};

// Decodes a BHS (bytes.size() >= 48; only the first 48 are read).
PduError decode_bhs(std::span<const uint8_t> bytes, Pdu& out, const DecodeOptions& opts = {});

// Encodes into exactly 48 bytes; reserved fields are written as zero.
void encode_bhs(const Pdu& pdu, std::span<uint8_t, kBhsSize> out);
template <class T>
  requires std::is_constructible_v<Pdu, T>
void encode_bhs(const T& pdu, std::span<uint8_t, kBhsSize> out) {
  encode_bhs(Pdu(pdu), out);
}

Opcode opcode_of(const Pdu& pdu);
uint32_t data_segment_length_of(const Pdu& pdu);
uint8_t total_ahs_length_of(const Pdu& pdu);

// ---- lengths, padding, digests ----
struct Digests {
  bool header = false;
  bool data = false;
};
constexpr uint32_t pad_length(uint32_t n) { return (4 - (n & 3)) & 3; }
constexpr uint64_t padded_length(uint64_t n) { return (n + 3) & ~uint64_t{3}; }
// Whole PDU on the wire: BHS, AHS, header digest, data + padding, data digest.
constexpr uint64_t pdu_length(uint8_t total_ahs_words, uint32_t data_segment_length,
                              Digests d) {
  return kBhsSize + uint64_t{total_ahs_words} * 4 + (d.header ? 4 : 0) +
         padded_length(data_segment_length) + (d.data && data_segment_length > 0 ? 4 : 0);
}
inline uint64_t pdu_length(const Bhs& bhs, Digests d) {
  return pdu_length(bhs.total_ahs_length(), bhs.data_segment_length(), d);
}

// ---- Additional Header Segments (SCSI Command only) ----
enum class AhsType : uint8_t { ExtendedCdb = 1, BidiReadLength = 2 };
struct AhsInfo {
  std::span<const uint8_t> extended_cdb;  // CDB bytes 16.. (may include trailing pad)
  std::optional<uint32_t> bidi_read_expected_length;
};
PduError parse_ahs(std::span<const uint8_t> ahs, AhsInfo& out);
// Writes an Extended CDB AHS for cdb bytes 16.. into out; returns the bytes used (a multiple
// of 4), or 0 if out is too small or the tail is empty / longer than 65534 bytes.
size_t encode_extended_cdb_ahs(std::span<const uint8_t> cdb_tail, std::span<uint8_t> out);
// Writes the 8-byte Bidirectional Read Expected Data Transfer Length AHS; returns 8 or 0.
size_t encode_bidi_read_length_ahs(uint32_t length, std::span<uint8_t> out);

// A whole received PDU split into its parts, digests checked.
struct PduParts {
  Pdu header;
  std::span<const uint8_t> ahs;
  std::span<const uint8_t> data;  // without padding
};
// bytes must hold the whole PDU (pdu_length() bytes; more is an error: one PDU at a time).
PduError decode_pdu(std::span<const uint8_t> bytes, Digests digests, PduParts& out,
                    const DecodeOptions& opts = {});
// Writes BHS, AHS, header digest, data, pad and data digest into out; returns the length or 0
// if out is too small or the pieces disagree with the header's lengths.
size_t encode_pdu(const Pdu& header, std::span<const uint8_t> ahs, std::span<const uint8_t> data,
                  Digests digests, std::span<uint8_t> out);

}  // namespace vcp::iscsi

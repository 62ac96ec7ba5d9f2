#include "iscsi/pdu.hpp"

#include <cstring>

#include "iscsi/crc32c.hpp"

namespace vcp::iscsi {

using namespace wire;

namespace {

constexpr uint8_t kImmediateBit = 0x40;
constexpr uint8_t kFinalBit = 0x80;
constexpr uint8_t kContinueBit = 0x40;  // Login and Text: the C bit

// Offsets shared by (almost) every opcode.
constexpr size_t kOffFlags = 1;
constexpr size_t kOffAhsLen = 4;
constexpr size_t kOffDsl = 5;
constexpr size_t kOffLun = 8;
constexpr size_t kOffItt = 16;
constexpr size_t kOff20 = 20;
constexpr size_t kOff24 = 24;
constexpr size_t kOff28 = 28;
constexpr size_t kOff32 = 32;
constexpr size_t kOff36 = 36;
constexpr size_t kOff40 = 40;
constexpr size_t kOff44 = 44;

bool valid_stage(uint8_t s) { return s != 2; }
bool valid_tmf_function(uint8_t f) { return f >= 1 && f <= 8; }
bool valid_tmf_response(uint8_t r) { return r <= 6 || r == 255; }
bool valid_logout_reason(uint8_t r) { return r <= 2; }
bool valid_logout_response(uint8_t r) { return r <= 3; }
bool valid_snack_type(uint8_t t) { return t <= 3; }
bool valid_async_event(uint8_t e) { return e <= 4 || e == 255; }
bool valid_reject_reason(uint8_t r) { return r >= 0x02 && r <= 0x0c; }
bool valid_scsi_response(uint8_t r) { return r <= 1 || r >= 0x80; }

// The header fields every opcode shares.
void put_common(uint8_t* b, Opcode op, bool immediate, uint8_t flags, uint8_t ahs_words,
                uint32_t dsl, uint32_t itt) {
  b[0] = static_cast<uint8_t>(static_cast<uint8_t>(op) | (immediate ? kImmediateBit : 0));
  b[kOffFlags] = flags;
  b[kOffAhsLen] = ahs_words;
  store_be24(&b[kOffDsl], dsl);
  store_be32(&b[kOffItt], itt);
}

uint8_t login_flags(bool transit, bool cont, LoginStage csg, LoginStage nsg) {
  return static_cast<uint8_t>((transit ? 0x80 : 0) | (cont ? kContinueBit : 0) |
                              (static_cast<uint8_t>(csg) & 3) << 2 |
                              (static_cast<uint8_t>(nsg) & 3));
}

struct Encoder {
  uint8_t* b;

  void operator()(const NopOutPdu& p) {
    put_common(b, Opcode::NopOut, p.immediate, kFinalBit, 0, p.data_segment_length, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
  }
  void operator()(const ScsiCommandPdu& p) {
    const uint8_t flags = static_cast<uint8_t>((p.final ? kFinalBit : 0) | (p.read ? 0x40 : 0) |
                                               (p.write ? 0x20 : 0) |
                                               (static_cast<uint8_t>(p.attr) & 7));
    put_common(b, Opcode::ScsiCommand, p.immediate, flags, p.total_ahs_length,
               p.data_segment_length, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.expected_data_transfer_length);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
    std::memcpy(&b[kOff32], p.cdb.data(), p.cdb.size());
  }
  void operator()(const TaskMgmtRequestPdu& p) {
    put_common(b, Opcode::TaskMgmtRequest, p.immediate,
               static_cast<uint8_t>(kFinalBit | (static_cast<uint8_t>(p.function) & 0x7f)), 0, 0,
               p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.referenced_task_tag);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
    store_be32(&b[kOff32], p.ref_cmd_sn);
    store_be32(&b[kOff36], p.exp_data_sn);
  }
  void operator()(const LoginRequestPdu& p) {
    put_common(b, Opcode::LoginRequest, true, login_flags(p.transit, p.cont, p.csg, p.nsg), 0,
               p.data_segment_length, p.itt);
    b[2] = p.version_max;
    b[3] = p.version_min;
    std::memcpy(&b[kOffLun], p.isid.data(), p.isid.size());
    store_be16(&b[14], p.tsih);
    store_be16(&b[kOff20], p.cid);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
  }
  void operator()(const TextRequestPdu& p) {
    put_common(b, Opcode::TextRequest, p.immediate,
               static_cast<uint8_t>((p.final ? kFinalBit : 0) | (p.cont ? kContinueBit : 0)), 0,
               p.data_segment_length, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
  }
  void operator()(const DataOutPdu& p) {
    put_common(b, Opcode::DataOut, false, p.final ? kFinalBit : 0, 0, p.data_segment_length,
               p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    store_be32(&b[kOff28], p.exp_stat_sn);
    store_be32(&b[kOff36], p.data_sn);
    store_be32(&b[kOff40], p.buffer_offset);
  }
  void operator()(const LogoutRequestPdu& p) {
    put_common(b, Opcode::LogoutRequest, p.immediate,
               static_cast<uint8_t>(kFinalBit | (static_cast<uint8_t>(p.reason) & 0x7f)), 0, 0,
               p.itt);
    store_be16(&b[kOff20], p.cid);
    store_be32(&b[kOff24], p.cmd_sn);
    store_be32(&b[kOff28], p.exp_stat_sn);
  }
  void operator()(const SnackPdu& p) {
    put_common(b, Opcode::Snack, false,
               static_cast<uint8_t>(kFinalBit | (static_cast<uint8_t>(p.type) & 0x0f)), 0, 0,
               p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt_or_snack_tag);
    store_be32(&b[kOff28], p.exp_stat_sn);
    store_be32(&b[kOff40], p.beg_run);
    store_be32(&b[kOff44], p.run_length);
  }
  void put_sns(uint32_t stat_sn, uint32_t exp_cmd_sn, uint32_t max_cmd_sn) {
    store_be32(&b[kOff24], stat_sn);
    store_be32(&b[kOff28], exp_cmd_sn);
    store_be32(&b[kOff32], max_cmd_sn);
  }
  void operator()(const NopInPdu& p) {
    put_common(b, Opcode::NopIn, false, kFinalBit, 0, p.data_segment_length, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
  }
  void operator()(const ScsiResponsePdu& p) {
    const uint8_t flags =
        static_cast<uint8_t>(kFinalBit | (p.bidi_overflow ? 0x10 : 0) |
                             (p.bidi_underflow ? 0x08 : 0) | (p.overflow ? 0x04 : 0) |
                             (p.underflow ? 0x02 : 0));
    put_common(b, Opcode::ScsiResponse, false, flags, 0, p.data_segment_length, p.itt);
    b[2] = static_cast<uint8_t>(p.response);
    b[3] = p.status;
    store_be32(&b[kOff20], p.snack_tag);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    store_be32(&b[kOff36], p.exp_data_sn);
    store_be32(&b[kOff40], p.bidi_read_residual_count);
    store_be32(&b[kOff44], p.residual_count);
  }
  void operator()(const TaskMgmtResponsePdu& p) {
    put_common(b, Opcode::TaskMgmtResponse, false, kFinalBit, 0, 0, p.itt);
    b[2] = static_cast<uint8_t>(p.response);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
  }
  void operator()(const LoginResponsePdu& p) {
    put_common(b, Opcode::LoginResponse, false, login_flags(p.transit, p.cont, p.csg, p.nsg), 0,
               p.data_segment_length, p.itt);
    b[2] = p.version_max;
    b[3] = p.version_active;
    std::memcpy(&b[kOffLun], p.isid.data(), p.isid.size());
    store_be16(&b[14], p.tsih);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    b[36] = p.status_class;
    b[37] = p.status_detail;
  }
  void operator()(const TextResponsePdu& p) {
    put_common(b, Opcode::TextResponse, false,
               static_cast<uint8_t>((p.final ? kFinalBit : 0) | (p.cont ? kContinueBit : 0)), 0,
               p.data_segment_length, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
  }
  void operator()(const DataInPdu& p) {
    const uint8_t flags = static_cast<uint8_t>(
        (p.final ? kFinalBit : 0) | (p.ack ? 0x40 : 0) | (p.overflow ? 0x04 : 0) |
        (p.underflow ? 0x02 : 0) | (p.has_status ? 0x01 : 0));
    put_common(b, Opcode::DataIn, false, flags, 0, p.data_segment_length, p.itt);
    if (p.has_status) b[3] = p.status;
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    put_sns(p.has_status ? p.stat_sn : 0, p.exp_cmd_sn, p.max_cmd_sn);
    store_be32(&b[kOff36], p.data_sn);
    store_be32(&b[kOff40], p.buffer_offset);
    store_be32(&b[kOff44], p.residual_count);
  }
  void operator()(const LogoutResponsePdu& p) {
    put_common(b, Opcode::LogoutResponse, false, kFinalBit, 0, 0, p.itt);
    b[2] = static_cast<uint8_t>(p.response);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    store_be16(&b[40], p.time2wait);
    store_be16(&b[42], p.time2retain);
  }
  void operator()(const R2TPdu& p) {
    put_common(b, Opcode::R2T, false, kFinalBit, 0, 0, p.itt);
    store_be64(&b[kOffLun], p.lun.encoded);
    store_be32(&b[kOff20], p.ttt);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    store_be32(&b[kOff36], p.r2t_sn);
    store_be32(&b[kOff40], p.buffer_offset);
    store_be32(&b[kOff44], p.desired_data_transfer_length);
  }
  void operator()(const AsyncMessagePdu& p) {
    put_common(b, Opcode::AsyncMessage, false, kFinalBit, 0, p.data_segment_length, kReservedTag);
    store_be64(&b[kOffLun], p.lun.encoded);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    b[36] = static_cast<uint8_t>(p.event);
    b[37] = p.vcode;
    store_be16(&b[38], p.parameter1);
    store_be16(&b[40], p.parameter2);
    store_be16(&b[42], p.parameter3);
  }
  void operator()(const RejectPdu& p) {
    put_common(b, Opcode::Reject, false, kFinalBit, 0, p.data_segment_length, kReservedTag);
    b[2] = static_cast<uint8_t>(p.reason);
    put_sns(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    store_be32(&b[kOff36], p.data_sn_or_r2t_sn);
  }
};

// Per-opcode decoding. Each returns Ok or the first rule the header breaks.
class Decoder {
 public:
  explicit Decoder(const uint8_t* b) : b_(b) {}

  uint8_t flags() const { return b_[kOffFlags]; }
  bool fbit() const { return (flags() & kFinalBit) != 0; }
  bool imm() const { return (b_[0] & kImmediateBit) != 0; }
  uint32_t dsl() const { return load_be24(&b_[kOffDsl]); }
  uint8_t ahs() const { return b_[kOffAhsLen]; }
  uint32_t itt() const { return load_be32(&b_[kOffItt]); }
  Lun lun() const { return Lun{load_be64(&b_[kOffLun])}; }
  uint32_t u32(size_t off) const { return load_be32(&b_[off]); }
  uint16_t u16(size_t off) const { return load_be16(&b_[off]); }
  uint8_t u8(size_t off) const { return b_[off]; }

  // Rules common to all opcodes: AHS only on SCSI Command, data only where the opcode has a
  // data segment.
  PduError segments(bool ahs_allowed, bool data_allowed) const {
    if (!ahs_allowed && ahs() != 0) return PduError::UnexpectedAhs;
    if (!data_allowed && dsl() != 0) return PduError::UnexpectedData;
    return PduError::Ok;
  }

 private:
  const uint8_t* b_;
};

PduError decode_login_stages(uint8_t flags, bool& transit, bool& cont, LoginStage& csg,
                             LoginStage& nsg) {
  transit = (flags & 0x80) != 0;
  cont = (flags & kContinueBit) != 0;
  const uint8_t c = (flags >> 2) & 3;
  const uint8_t n = flags & 3;
  if (transit && cont) return PduError::ConflictingFlags;
  if (!valid_stage(c) || (transit && !valid_stage(n))) return PduError::ReservedValue;
  if (c == 3) return PduError::InvalidField;  // no login PDU is sent in Full Feature Phase
  csg = static_cast<LoginStage>(c);
  // Without T the NSG field is reserved: normalise it so decode(encode(x)) is stable.
  nsg = transit ? static_cast<LoginStage>(n) : LoginStage::SecurityNegotiation;
  if (transit && n <= c) return PduError::InvalidField;  // a transit goes forward only
  return PduError::Ok;
}

PduError decode_into(const uint8_t* b, Pdu& out) {
  const Decoder d(b);
  const auto op = static_cast<Opcode>(b[0] & 0x3f);
  PduError e = PduError::Ok;
  switch (op) {
    case Opcode::NopOut: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      // A NOP-Out that answers a NOP-In has ITT 0xffffffff and must be immediate.
      if (d.itt() == kReservedTag && !d.imm()) return PduError::InvalidField;
      out = NopOutPdu{d.imm(), d.dsl(), d.lun(), d.itt(), d.u32(kOff20), d.u32(kOff24),
                      d.u32(kOff28)};
      return PduError::Ok;
    }
    case Opcode::ScsiCommand: {
      if ((e = d.segments(true, true)) != PduError::Ok) return e;
      ScsiCommandPdu p;
      p.immediate = d.imm();
      p.final = d.fbit();
      p.read = (d.flags() & 0x40) != 0;
      p.write = (d.flags() & 0x20) != 0;
      const uint8_t attr = d.flags() & 7;
      if (attr > 4) return PduError::ReservedValue;
      p.attr = static_cast<TaskAttr>(attr);
      p.total_ahs_length = d.ahs();
      p.data_segment_length = d.dsl();
      p.lun = d.lun();
      p.itt = d.itt();
      if (p.itt == kReservedTag) return PduError::InvalidField;
      p.expected_data_transfer_length = d.u32(kOff20);
      // Immediate data needs W; a transfer length needs a direction (§11.3.1).
      if (p.data_segment_length != 0 && !p.write) return PduError::InvalidField;
      if (!p.read && !p.write && p.expected_data_transfer_length != 0)
        return PduError::InvalidField;
      p.cmd_sn = d.u32(kOff24);
      p.exp_stat_sn = d.u32(kOff28);
      std::memcpy(p.cdb.data(), &b[kOff32], p.cdb.size());
      out = p;
      return PduError::Ok;
    }
    case Opcode::TaskMgmtRequest: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      const uint8_t f = d.flags() & 0x7f;
      if (!valid_tmf_function(f)) return PduError::ReservedValue;
      out = TaskMgmtRequestPdu{d.imm(),       static_cast<TmfFunction>(f), d.lun(),
                               d.itt(),       d.u32(kOff20),               d.u32(kOff24),
                               d.u32(kOff28), d.u32(kOff32),               d.u32(kOff36)};
      return PduError::Ok;
    }
    case Opcode::LoginRequest: {
      if (!d.imm()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      LoginRequestPdu p;
      if ((e = decode_login_stages(d.flags(), p.transit, p.cont, p.csg, p.nsg)) != PduError::Ok)
        return e;
      p.version_max = d.u8(2);
      p.version_min = d.u8(3);
      p.data_segment_length = d.dsl();
      std::memcpy(p.isid.data(), &b[kOffLun], p.isid.size());
      p.tsih = d.u16(14);
      p.itt = d.itt();
      p.cid = d.u16(kOff20);
      p.cmd_sn = d.u32(kOff24);
      p.exp_stat_sn = d.u32(kOff28);
      out = p;
      return PduError::Ok;
    }
    case Opcode::TextRequest: {
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      const bool fin = d.fbit();
      const bool cont = (d.flags() & kContinueBit) != 0;
      if (fin && cont) return PduError::ConflictingFlags;
      if (d.itt() == kReservedTag) return PduError::InvalidField;
      out = TextRequestPdu{d.imm(), fin, cont, d.dsl(), d.lun(), d.itt(), d.u32(kOff20),
                           d.u32(kOff24), d.u32(kOff28)};
      return PduError::Ok;
    }
    case Opcode::DataOut: {
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      out = DataOutPdu{d.fbit(), d.dsl(), d.lun(), d.itt(), d.u32(kOff20), d.u32(kOff28),
                       d.u32(kOff36), d.u32(kOff40)};
      return PduError::Ok;
    }
    case Opcode::LogoutRequest: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      const uint8_t r = d.flags() & 0x7f;
      if (!valid_logout_reason(r)) return PduError::ReservedValue;
      out = LogoutRequestPdu{d.imm(), static_cast<LogoutReason>(r), d.itt(), d.u16(kOff20),
                             d.u32(kOff24), d.u32(kOff28)};
      return PduError::Ok;
    }
    case Opcode::Snack: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      const uint8_t t = d.flags() & 0x0f;
      if (!valid_snack_type(t)) return PduError::ReservedValue;
      out = SnackPdu{static_cast<SnackType>(t), d.lun(), d.itt(), d.u32(kOff20), d.u32(kOff28),
                     d.u32(kOff40), d.u32(kOff44)};
      return PduError::Ok;
    }
    case Opcode::NopIn: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      out = NopInPdu{d.dsl(),       d.lun(),       d.itt(),      d.u32(kOff20),
                     d.u32(kOff24), d.u32(kOff28), d.u32(kOff32)};
      return PduError::Ok;
    }
    case Opcode::ScsiResponse: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      ScsiResponsePdu p;
      const uint8_t f = d.flags();
      p.bidi_overflow = (f & 0x10) != 0;
      p.bidi_underflow = (f & 0x08) != 0;
      p.overflow = (f & 0x04) != 0;
      p.underflow = (f & 0x02) != 0;
      if ((p.bidi_overflow && p.bidi_underflow) || (p.overflow && p.underflow))
        return PduError::ConflictingFlags;
      if (!valid_scsi_response(d.u8(2))) return PduError::ReservedValue;
      p.response = static_cast<ScsiResponseCode>(d.u8(2));
      p.status = d.u8(3);
      p.data_segment_length = d.dsl();
      p.itt = d.itt();
      p.snack_tag = d.u32(kOff20);
      p.stat_sn = d.u32(kOff24);
      p.exp_cmd_sn = d.u32(kOff28);
      p.max_cmd_sn = d.u32(kOff32);
      p.exp_data_sn = d.u32(kOff36);
      p.bidi_read_residual_count = d.u32(kOff40);
      p.residual_count = d.u32(kOff44);
      out = p;
      return PduError::Ok;
    }
    case Opcode::TaskMgmtResponse: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      if (!valid_tmf_response(d.u8(2))) return PduError::ReservedValue;
      out = TaskMgmtResponsePdu{static_cast<TmfResponse>(d.u8(2)), d.itt(), d.u32(kOff24),
                                d.u32(kOff28), d.u32(kOff32)};
      return PduError::Ok;
    }
    case Opcode::LoginResponse: {
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      LoginResponsePdu p;
      if ((e = decode_login_stages(d.flags(), p.transit, p.cont, p.csg, p.nsg)) != PduError::Ok)
        return e;
      p.version_max = d.u8(2);
      p.version_active = d.u8(3);
      p.data_segment_length = d.dsl();
      std::memcpy(p.isid.data(), &b[kOffLun], p.isid.size());
      p.tsih = d.u16(14);
      p.itt = d.itt();
      p.stat_sn = d.u32(kOff24);
      p.exp_cmd_sn = d.u32(kOff28);
      p.max_cmd_sn = d.u32(kOff32);
      p.status_class = d.u8(36);
      p.status_detail = d.u8(37);
      out = p;
      return PduError::Ok;
    }
    case Opcode::TextResponse: {
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      const bool fin = d.fbit();
      const bool cont = (d.flags() & kContinueBit) != 0;
      if (fin && cont) return PduError::ConflictingFlags;
      out = TextResponsePdu{fin,           cont,          d.dsl(),       d.lun(), d.itt(),
                            d.u32(kOff20), d.u32(kOff24), d.u32(kOff28), d.u32(kOff32)};
      return PduError::Ok;
    }
    case Opcode::DataIn: {
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      DataInPdu p;
      const uint8_t f = d.flags();
      p.final = (f & 0x80) != 0;
      p.ack = (f & 0x40) != 0;
      p.overflow = (f & 0x04) != 0;
      p.underflow = (f & 0x02) != 0;
      p.has_status = (f & 0x01) != 0;
      if (p.has_status && !p.final) return PduError::ConflictingFlags;
      if (!p.has_status && (p.overflow || p.underflow)) return PduError::ConflictingFlags;
      if (p.overflow && p.underflow) return PduError::ConflictingFlags;
      p.status = p.has_status ? d.u8(3) : 0;
      p.data_segment_length = d.dsl();
      p.lun = d.lun();
      p.itt = d.itt();
      p.ttt = d.u32(kOff20);
      p.stat_sn = p.has_status ? d.u32(kOff24) : 0;
      p.exp_cmd_sn = d.u32(kOff28);
      p.max_cmd_sn = d.u32(kOff32);
      p.data_sn = d.u32(kOff36);
      p.buffer_offset = d.u32(kOff40);
      p.residual_count = d.u32(kOff44);
      out = p;
      return PduError::Ok;
    }
    case Opcode::LogoutResponse: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      if (!valid_logout_response(d.u8(2))) return PduError::ReservedValue;
      out = LogoutResponsePdu{static_cast<LogoutResponseCode>(d.u8(2)),
                              d.itt(),
                              d.u32(kOff24),
                              d.u32(kOff28),
                              d.u32(kOff32),
                              d.u16(40),
                              d.u16(42)};
      return PduError::Ok;
    }
    case Opcode::R2T: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, false)) != PduError::Ok) return e;
      if (d.u32(kOff20) == kReservedTag) return PduError::InvalidField;
      out = R2TPdu{d.lun(),       d.itt(),       d.u32(kOff20), d.u32(kOff24), d.u32(kOff28),
                   d.u32(kOff32), d.u32(kOff36), d.u32(kOff40), d.u32(kOff44)};
      return PduError::Ok;
    }
    case Opcode::AsyncMessage: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      if (d.itt() != kReservedTag) return PduError::InvalidField;
      if (!valid_async_event(d.u8(36))) return PduError::ReservedValue;
      out = AsyncMessagePdu{d.dsl(),       d.lun(),
                            d.u32(kOff24), d.u32(kOff28),
                            d.u32(kOff32), static_cast<AsyncEvent>(d.u8(36)),
                            d.u8(37),      d.u16(38),
                            d.u16(40),     d.u16(42)};
      return PduError::Ok;
    }
    case Opcode::Reject: {
      if (!d.fbit()) return PduError::FixedBitClear;
      if ((e = d.segments(false, true)) != PduError::Ok) return e;
      if (d.itt() != kReservedTag) return PduError::InvalidField;
      if (d.dsl() < kBhsSize) return PduError::InvalidField;  // must carry the rejected BHS
      if (!valid_reject_reason(d.u8(2))) return PduError::ReservedValue;
      out = RejectPdu{static_cast<RejectReason>(d.u8(2)), d.dsl(), d.u32(kOff24), d.u32(kOff28),
                      d.u32(kOff32), d.u32(kOff36)};
      return PduError::Ok;
    }
  }
  const uint8_t raw = b[0] & 0x3f;
  if ((raw >= 0x1c && raw <= 0x1e) || (raw >= 0x3c && raw <= 0x3e)) return PduError::VendorOpcode;
  return PduError::UnknownOpcode;
}

}  // namespace

std::string_view to_string(Opcode op) {
  switch (op) {
    case Opcode::NopOut: return "NOP-Out";
    case Opcode::ScsiCommand: return "SCSI Command";
    case Opcode::TaskMgmtRequest: return "Task Management Request";
    case Opcode::LoginRequest: return "Login Request";
    case Opcode::TextRequest: return "Text Request";
    case Opcode::DataOut: return "SCSI Data-Out";
    case Opcode::LogoutRequest: return "Logout Request";
    case Opcode::Snack: return "SNACK";
    case Opcode::NopIn: return "NOP-In";
    case Opcode::ScsiResponse: return "SCSI Response";
    case Opcode::TaskMgmtResponse: return "Task Management Response";
    case Opcode::LoginResponse: return "Login Response";
    case Opcode::TextResponse: return "Text Response";
    case Opcode::DataIn: return "SCSI Data-In";
    case Opcode::LogoutResponse: return "Logout Response";
    case Opcode::R2T: return "R2T";
    case Opcode::AsyncMessage: return "Asynchronous Message";
    case Opcode::Reject: return "Reject";
  }
  return "unknown opcode";
}

std::string_view to_string(PduError e) {
  switch (e) {
    case PduError::Ok: return "ok";
    case PduError::Truncated: return "truncated PDU";
    case PduError::UnknownOpcode: return "unknown opcode";
    case PduError::VendorOpcode: return "vendor-specific opcode not supported";
    case PduError::WrongDirection: return "opcode sent in the wrong direction";
    case PduError::FixedBitClear: return "a bit fixed to 1 is 0";
    case PduError::ConflictingFlags: return "conflicting flags";
    case PduError::ReservedValue: return "reserved value in a defined field";
    case PduError::InvalidField: return "invalid field value";
    case PduError::UnexpectedAhs: return "AHS on an opcode without AHS";
    case PduError::UnexpectedData: return "data segment on an opcode without data";
    case PduError::DataSegmentTooLong: return "data segment longer than MaxRecvDataSegmentLength";
    case PduError::BadAhs: return "malformed AHS";
    case PduError::HeaderDigestMismatch: return "header digest mismatch";
    case PduError::DataDigestMismatch: return "data digest mismatch";
  }
  return "unknown PduError";
}

std::string_view to_string(LoginStage s) {
  switch (s) {
    case LoginStage::SecurityNegotiation: return "SecurityNegotiation";
    case LoginStage::OperationalNegotiation: return "LoginOperationalNegotiation";
    case LoginStage::FullFeature: return "FullFeaturePhase";
  }
  return "reserved stage";
}

std::optional<RejectReason> reject_reason_for(PduError e) {
  switch (e) {
    case PduError::Ok:
    case PduError::HeaderDigestMismatch:
    case PduError::Truncated:
      return std::nullopt;
    case PduError::UnknownOpcode:
    case PduError::VendorOpcode:
      return RejectReason::CommandNotSupported;
    case PduError::DataDigestMismatch:
      return RejectReason::DataDigestError;
    case PduError::FixedBitClear:
    case PduError::ConflictingFlags:
    case PduError::ReservedValue:
    case PduError::InvalidField:
      return RejectReason::InvalidPduField;
    case PduError::WrongDirection:
    case PduError::UnexpectedAhs:
    case PduError::UnexpectedData:
    case PduError::DataSegmentTooLong:
    case PduError::BadAhs:
      return RejectReason::ProtocolError;
  }
  return RejectReason::ProtocolError;
}

std::optional<Lun> Lun::from_number(uint32_t n) {
  if (n < 256) return Lun{uint64_t{n} << 48};
  if (n <= kMaxNumber) return Lun{(uint64_t{0x40} | (n >> 8)) << 56 | uint64_t{n & 0xff} << 48};
  return std::nullopt;
}

std::optional<uint32_t> Lun::number() const {
  if ((encoded & 0xffffffffffffull) != 0) return std::nullopt;  // second..fourth level
  const auto hi = static_cast<uint8_t>(encoded >> 56);
  const auto lo = static_cast<uint8_t>(encoded >> 48);
  switch (hi >> 6) {
    case 0:  // peripheral device addressing; only bus 0 names a LUN of this target
      if ((hi & 0x3f) != 0) return std::nullopt;
      return lo;
    case 1:  // flat space addressing
      return static_cast<uint32_t>(hi & 0x3f) << 8 | lo;
    default:
      return std::nullopt;
  }
}

PduError decode_bhs(std::span<const uint8_t> bytes, Pdu& out, const DecodeOptions& opts) {
  if (bytes.size() < kBhsSize) return PduError::Truncated;
  const uint8_t raw = bytes[0] & 0x3f;
  if (opts.direction == Direction::FromInitiator && !is_initiator_opcode(raw))
    return PduError::WrongDirection;
  if (opts.direction == Direction::FromTarget && is_initiator_opcode(raw))
    return PduError::WrongDirection;
  const PduError e = decode_into(bytes.data(), out);
  if (e != PduError::Ok) return e;
  if (load_be24(&bytes[kOffDsl]) > opts.max_data_segment_length)
    return PduError::DataSegmentTooLong;
  return PduError::Ok;
}

void encode_bhs(const Pdu& pdu, std::span<uint8_t, kBhsSize> out) {
  std::memset(out.data(), 0, kBhsSize);
  std::visit(Encoder{out.data()}, pdu);
}

Opcode opcode_of(const Pdu& pdu) {
  static constexpr Opcode kByIndex[] = {
      Opcode::NopOut,       Opcode::ScsiCommand,      Opcode::TaskMgmtRequest,
      Opcode::LoginRequest, Opcode::TextRequest,      Opcode::DataOut,
      Opcode::LogoutRequest, Opcode::Snack,           Opcode::NopIn,
      Opcode::ScsiResponse, Opcode::TaskMgmtResponse, Opcode::LoginResponse,
      Opcode::TextResponse, Opcode::DataIn,           Opcode::LogoutResponse,
      Opcode::R2T,          Opcode::AsyncMessage,     Opcode::Reject};
  static_assert(std::size(kByIndex) == std::variant_size_v<Pdu>);
  return kByIndex[pdu.index()];
}

uint32_t data_segment_length_of(const Pdu& pdu) {
  return std::visit(
      [](const auto& p) -> uint32_t {
        if constexpr (requires { p.data_segment_length; }) {
          return p.data_segment_length;
        } else {
          return 0;
        }
      },
      pdu);
}

uint8_t total_ahs_length_of(const Pdu& pdu) {
  const auto* cmd = std::get_if<ScsiCommandPdu>(&pdu);
  return cmd ? cmd->total_ahs_length : 0;
}

PduError parse_ahs(std::span<const uint8_t> ahs, AhsInfo& out) {
  out = AhsInfo{};
  size_t off = 0;
  while (off < ahs.size()) {
    if (ahs.size() - off < 4) return PduError::BadAhs;
    const uint16_t len = load_be16(&ahs[off]);
    const uint8_t type = ahs[off + 2];
    const size_t total = padded_length(size_t{3} + len);
    if (len == 0 || total > ahs.size() - off) return PduError::BadAhs;
    const auto specific = ahs.subspan(off + 3, len);
    switch (static_cast<AhsType>(type)) {
      case AhsType::ExtendedCdb:
        if (!out.extended_cdb.empty() || len < 2) return PduError::BadAhs;
        out.extended_cdb = specific.subspan(1);  // skip the reserved byte
        break;
      case AhsType::BidiReadLength:
        if (out.bidi_read_expected_length || len != 5) return PduError::BadAhs;
        out.bidi_read_expected_length = load_be32(&specific[1]);
        break;
      default:
        return PduError::BadAhs;
    }
    off += total;
  }
  return PduError::Ok;
}

size_t encode_extended_cdb_ahs(std::span<const uint8_t> cdb_tail, std::span<uint8_t> out) {
  if (cdb_tail.empty() || cdb_tail.size() > 0xfffe) return 0;
  const size_t len = cdb_tail.size() + 1;
  const size_t total = padded_length(3 + len);
  if (out.size() < total) return 0;
  std::memset(out.data(), 0, total);
  store_be16(&out[0], static_cast<uint16_t>(len));
  out[2] = static_cast<uint8_t>(AhsType::ExtendedCdb);
  std::memcpy(&out[4], cdb_tail.data(), cdb_tail.size());
  return total;
}

size_t encode_bidi_read_length_ahs(uint32_t length, std::span<uint8_t> out) {
  if (out.size() < 8) return 0;
  store_be16(&out[0], 5);
  out[2] = static_cast<uint8_t>(AhsType::BidiReadLength);
  out[3] = 0;
  store_be32(&out[4], length);
  return 8;
}

PduError decode_pdu(std::span<const uint8_t> bytes, Digests digests, PduParts& out,
                    const DecodeOptions& opts) {
  if (bytes.size() < kBhsSize) return PduError::Truncated;
  const uint8_t ahs_words = bytes[kOffAhsLen];
  const uint32_t dsl = load_be24(&bytes[kOffDsl]);
  const uint64_t want = pdu_length(ahs_words, dsl, digests);
  if (bytes.size() != want) return PduError::Truncated;
  size_t off = kBhsSize + size_t{ahs_words} * 4;
  if (digests.header) {
    const uint32_t crc = crc32c(bytes.first(off));
    if (crc != load_digest(bytes.subspan(off).first<kDigestSize>()))
      return PduError::HeaderDigestMismatch;
  }
  PduError e = decode_bhs(bytes, out.header, opts);
  if (e != PduError::Ok) return e;
  out.ahs = bytes.subspan(kBhsSize, size_t{ahs_words} * 4);
  if (!out.ahs.empty()) {
    AhsInfo info;
    if ((e = parse_ahs(out.ahs, info)) != PduError::Ok) return e;
  }
  off += digests.header ? kDigestSize : 0;
  out.data = bytes.subspan(off, dsl);
  if (digests.data && dsl > 0) {
    const size_t padded = padded_length(dsl);
    const uint32_t crc = crc32c(bytes.subspan(off, padded));
    if (crc != load_digest(bytes.subspan(off + padded).first<kDigestSize>()))
      return PduError::DataDigestMismatch;
  }
  return PduError::Ok;
}

size_t encode_pdu(const Pdu& header, std::span<const uint8_t> ahs, std::span<const uint8_t> data,
                  Digests digests, std::span<uint8_t> out) {
  const uint8_t ahs_words = total_ahs_length_of(header);
  const uint32_t dsl = data_segment_length_of(header);
  if (ahs.size() != size_t{ahs_words} * 4 || data.size() != dsl) return 0;
  const uint64_t total = pdu_length(ahs_words, dsl, digests);
  if (out.size() < total) return 0;
  encode_bhs(header, out.first<kBhsSize>());
  size_t off = kBhsSize;
  if (!ahs.empty()) std::memcpy(&out[off], ahs.data(), ahs.size());
  off += ahs.size();
  if (digests.header) {
    store_digest(out.subspan(off).first<kDigestSize>(), crc32c(out.first(off)));
    off += kDigestSize;
  }
  if (dsl > 0) {
    std::memcpy(&out[off], data.data(), dsl);
    const uint32_t pad = pad_length(dsl);
    std::memset(&out[off + dsl], 0, pad);
    if (digests.data) {
      const uint32_t crc = crc32c(out.subspan(off, dsl + pad));
      off += dsl + pad;
      store_digest(out.subspan(off).first<kDigestSize>(), crc);
      off += kDigestSize;
    } else {
      off += dsl + pad;
    }
  }
  return off;
}

}  // namespace vcp::iscsi

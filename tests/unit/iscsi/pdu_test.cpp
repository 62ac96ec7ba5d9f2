#include "iscsi/pdu.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace vcp::iscsi {
namespace {

using Bytes = std::array<uint8_t, kBhsSize>;

template <class T>
void expect_round_trip(const T& in) {
  Bytes b;
  encode_bhs(in, b);
  Pdu out;
  ASSERT_EQ(decode_bhs(b, out), PduError::Ok) << to_string(opcode_of(Pdu(in)));
  ASSERT_TRUE(std::holds_alternative<T>(out));
  EXPECT_EQ(std::get<T>(out), in);
  EXPECT_EQ(opcode_of(out), opcode_of(Pdu(in)));
  Bytes again;
  encode_bhs(out, again);
  EXPECT_EQ(again, b);
}

Lun lun(uint32_t n) { return *Lun::from_number(n); }

TEST(Pdu, RoundTripNopOut) {
  expect_round_trip(NopOutPdu{true, 12, lun(3), 0x11223344, kReservedTag, 77, 88});
  expect_round_trip(NopOutPdu{true, 0, lun(0), kReservedTag, 0x55, 77, 88});  // ping reply
}

TEST(Pdu, RoundTripScsiCommand) {
  ScsiCommandPdu p;
  p.immediate = false;
  p.final = false;
  p.write = true;
  p.attr = TaskAttr::Ordered;
  p.total_ahs_length = 2;
  p.data_segment_length = 4096;
  p.lun = lun(300);
  p.itt = 9;
  p.expected_data_transfer_length = 1 << 20;
  p.cmd_sn = 0xfffffffe;
  p.exp_stat_sn = 4;
  for (size_t i = 0; i < p.cdb.size(); ++i) p.cdb[i] = static_cast<uint8_t>(0xa0 + i);
  expect_round_trip(p);
  p.write = false;
  p.read = true;
  p.data_segment_length = 0;
  p.final = true;
  expect_round_trip(p);
}

TEST(Pdu, RoundTripTaskMgmt) {
  expect_round_trip(TaskMgmtRequestPdu{true, TmfFunction::LogicalUnitReset, lun(1), 5,
                                       kReservedTag, 6, 7, 8, 9});
  expect_round_trip(TaskMgmtResponsePdu{TmfResponse::Rejected, 5, 1, 2, 3});
  expect_round_trip(TaskMgmtResponsePdu{TmfResponse::NotSupported, 5, 1, 2, 3});
}

TEST(Pdu, RoundTripLogin) {
  LoginRequestPdu rq;
  rq.transit = true;
  rq.csg = LoginStage::SecurityNegotiation;
  rq.nsg = LoginStage::OperationalNegotiation;
  rq.version_max = 0;
  rq.version_min = 0;
  rq.data_segment_length = 300;
  rq.isid = {0x80, 1, 2, 3, 4, 5};
  rq.tsih = 0;
  rq.itt = 1;
  rq.cid = 7;
  rq.cmd_sn = 100;
  rq.exp_stat_sn = 0;
  expect_round_trip(rq);
  rq.transit = false;
  rq.cont = true;
  rq.nsg = LoginStage::SecurityNegotiation;
  expect_round_trip(rq);

  LoginResponsePdu rs;
  rs.transit = true;
  rs.csg = LoginStage::OperationalNegotiation;
  rs.nsg = LoginStage::FullFeature;
  rs.data_segment_length = 20;
  rs.isid = rq.isid;
  rs.tsih = 0x1234;
  rs.itt = 1;
  rs.stat_sn = 50;
  rs.exp_cmd_sn = 100;
  rs.max_cmd_sn = 131;
  rs.status_class = 2;
  rs.status_detail = 1;
  expect_round_trip(rs);
}

TEST(Pdu, RoundTripText) {
  expect_round_trip(TextRequestPdu{true, false, true, 100, lun(0), 3, kReservedTag, 4, 5});
  expect_round_trip(TextResponsePdu{true, false, 100, lun(0), 3, 0x77, 4, 5, 6});
}

TEST(Pdu, RoundTripData) {
  expect_round_trip(DataOutPdu{true, 8192, lun(2), 10, 0x99, 11, 3, 16384});
  DataInPdu in;
  in.final = true;
  in.has_status = true;
  in.underflow = true;
  in.status = 0;
  in.data_segment_length = 512;
  in.lun = lun(2);
  in.itt = 10;
  in.stat_sn = 20;
  in.exp_cmd_sn = 30;
  in.max_cmd_sn = 40;
  in.data_sn = 2;
  in.buffer_offset = 1024;
  in.residual_count = 512;
  expect_round_trip(in);
  in.has_status = false;
  in.underflow = false;
  in.final = false;
  in.stat_sn = 0;
  expect_round_trip(in);
}

TEST(Pdu, RoundTripLogout) {
  expect_round_trip(LogoutRequestPdu{true, LogoutReason::CloseConnection, 3, 1, 4, 5});
  expect_round_trip(LogoutResponsePdu{LogoutResponseCode::CidNotFound, 3, 1, 2, 3, 2, 20});
}

TEST(Pdu, RoundTripSnackR2tAsyncReject) {
  expect_round_trip(SnackPdu{SnackType::Status, lun(0), 3, kReservedTag, 9, 10, 0});
  expect_round_trip(R2TPdu{lun(1), 3, 0x100, 4, 5, 6, 1, 65536, 262144});
  AsyncMessagePdu a;
  a.event = AsyncEvent::LogoutRequested;
  a.parameter3 = 5;
  a.stat_sn = 9;
  expect_round_trip(a);
  expect_round_trip(RejectPdu{RejectReason::InvalidPduField, 48, 1, 2, 3, 0});
}

TEST(Pdu, RoundTripNopInAndScsiResponse) {
  expect_round_trip(NopInPdu{0, lun(0), kReservedTag, 0x1000, 5, 6, 7});
  ScsiResponsePdu r;
  r.overflow = true;
  r.bidi_underflow = true;
  r.response = ScsiResponseCode::TargetFailure;
  r.status = 0x02;
  r.data_segment_length = 20;
  r.itt = 3;
  r.stat_sn = 4;
  r.exp_cmd_sn = 5;
  r.max_cmd_sn = 6;
  r.exp_data_sn = 7;
  r.bidi_read_residual_count = 8;
  r.residual_count = 9;
  expect_round_trip(r);
}

// Field positions checked against RFC 7143 §11.3 by hand, independently of the encoder.
TEST(Pdu, ScsiCommandLayout) {
  ScsiCommandPdu p;
  p.read = true;
  p.attr = TaskAttr::Simple;
  p.lun = lun(1);
  p.itt = 0x01020304;
  p.expected_data_transfer_length = 0x1000;
  p.cmd_sn = 0x0a0b0c0d;
  p.exp_stat_sn = 0x11121314;
  p.cdb[0] = 0x28;
  Bytes b;
  encode_bhs(p, b);
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[1], 0xc1);  // F R . . . ATTR=1
  EXPECT_EQ(b[9], 0x01);  // LUN 1, peripheral addressing
  EXPECT_EQ(b[16], 0x01);
  EXPECT_EQ(b[19], 0x04);
  EXPECT_EQ(b[22], 0x10);
  EXPECT_EQ(b[24], 0x0a);
  EXPECT_EQ(b[31], 0x14);
  EXPECT_EQ(b[32], 0x28);
}

TEST(Pdu, LoginLayout) {
  LoginRequestPdu p;
  p.transit = true;
  p.csg = LoginStage::OperationalNegotiation;
  p.nsg = LoginStage::FullFeature;
  p.data_segment_length = 0x010203;
  p.isid = {0x40, 0, 1, 0x37, 0, 0};
  p.tsih = 0xbeef;
  p.cid = 0x0102;
  Bytes b;
  encode_bhs(p, b);
  EXPECT_EQ(b[0], 0x43);  // I bit + opcode
  EXPECT_EQ(b[1], 0x87);  // T, CSG=1, NSG=3
  EXPECT_EQ(b[5], 0x01);
  EXPECT_EQ(b[7], 0x03);
  EXPECT_EQ(b[8], 0x40);
  EXPECT_EQ(b[11], 0x37);
  EXPECT_EQ(b[14], 0xbe);
  EXPECT_EQ(b[21], 0x02);
  Bhs view{b};
  EXPECT_EQ(view.data_segment_length(), 0x010203u);
  EXPECT_TRUE(view.immediate());
}

TEST(Lun, PeripheralAndFlat) {
  EXPECT_EQ(lun(0).encoded, 0u);
  EXPECT_EQ(lun(5).encoded, 0x0005000000000000ull);
  EXPECT_EQ(lun(255).encoded, 0x00ff000000000000ull);
  EXPECT_EQ(lun(256).encoded, 0x4100000000000000ull);
  EXPECT_EQ(lun(16383).encoded, 0x7fff000000000000ull);
  EXPECT_FALSE(Lun::from_number(16384));
  for (uint32_t n : {0u, 1u, 255u, 256u, 1000u, 16383u}) EXPECT_EQ(lun(n).number(), n);
  EXPECT_EQ(Lun{0x4005000000000000ull}.number(), 5u);  // flat form of a small LUN
  EXPECT_FALSE(Lun{0x0105000000000000ull}.number());    // bus 1
  EXPECT_FALSE(Lun{0x0005000100000000ull}.number());    // second level
  EXPECT_FALSE(Lun{0x8005000000000000ull}.number());    // logical unit addressing
}

Bytes encoded(const Pdu& p) {
  Bytes b;
  encode_bhs(p, b);
  return b;
}

PduError decode(const Bytes& b, DecodeOptions o = {}) {
  Pdu out;
  return decode_bhs(b, out, o);
}

TEST(PduDecode, Truncated) {
  Bytes b = encoded(NopOutPdu{});
  Pdu out;
  EXPECT_EQ(decode_bhs(std::span<const uint8_t>(b).first(47), out), PduError::Truncated);
}

TEST(PduDecode, UnknownAndVendorOpcodes) {
  Bytes b{};
  for (uint8_t op : {0x07, 0x0f, 0x11, 0x27, 0x30, 0x33}) {
    b[0] = op;
    b[1] = 0x80;
    EXPECT_EQ(decode(b), PduError::UnknownOpcode) << int(op);
  }
  for (uint8_t op : {0x1c, 0x1d, 0x1e, 0x3c, 0x3d, 0x3e}) {
    b[0] = op;
    EXPECT_EQ(decode(b), PduError::VendorOpcode) << int(op);
  }
  EXPECT_EQ(reject_reason_for(PduError::VendorOpcode), RejectReason::CommandNotSupported);
}

TEST(PduDecode, Direction) {
  Bytes b = encoded(NopInPdu{});
  EXPECT_EQ(decode(b, {Direction::FromInitiator}), PduError::WrongDirection);
  EXPECT_EQ(decode(b, {Direction::FromTarget}), PduError::Ok);
  b = encoded(NopOutPdu{true});
  EXPECT_EQ(decode(b, {Direction::FromTarget}), PduError::WrongDirection);
}

TEST(PduDecode, FixedBits) {
  Bytes b = encoded(NopOutPdu{true, 0, {}, 1});
  b[1] &= 0x7f;
  EXPECT_EQ(decode(b), PduError::FixedBitClear);
  b = encoded(LoginRequestPdu{});
  b[0] &= 0xbf;  // Login without I
  EXPECT_EQ(decode(b), PduError::FixedBitClear);
  for (const Pdu& p : {Pdu(TaskMgmtRequestPdu{}), Pdu(LogoutRequestPdu{}), Pdu(SnackPdu{}),
                       Pdu(NopInPdu{}), Pdu(ScsiResponsePdu{}), Pdu(R2TPdu{0, 1, 2}),
                       Pdu(RejectPdu{})}) {
    b = encoded(p);
    b[1] &= 0x7f;
    EXPECT_EQ(decode(b), PduError::FixedBitClear) << to_string(opcode_of(p));
  }
}

TEST(PduDecode, ConflictingFlags) {
  Bytes b = encoded(LoginRequestPdu{true, false, LoginStage::SecurityNegotiation,
                                    LoginStage::OperationalNegotiation});
  b[1] |= 0x40;  // T and C
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
  b = encoded(TextRequestPdu{});
  b[1] |= 0x40;  // F and C
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
  b = encoded(ScsiResponsePdu{});
  b[1] |= 0x06;  // O and U
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
  b = encoded(ScsiResponsePdu{});
  b[1] |= 0x18;  // o and u
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
  b = encoded(DataInPdu{});
  b[1] = 0x01;  // S without F
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
  b[1] = 0x82;  // U without S
  EXPECT_EQ(decode(b), PduError::ConflictingFlags);
}

TEST(PduDecode, ReservedValues) {
  Bytes b = encoded(LoginRequestPdu{});
  b[1] = 0x08;  // CSG 2
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b[1] = 0x82;  // T, CSG 0, NSG 2
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b[1] = 0x80;  // T, CSG 0 -> NSG 0: not forward
  EXPECT_EQ(decode(b), PduError::InvalidField);
  b[1] = 0x0c;  // CSG 3
  EXPECT_EQ(decode(b), PduError::InvalidField);
  b = encoded(TaskMgmtRequestPdu{});
  b[1] = 0x80;  // function 0
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b[1] = 0x89;  // function 9
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b = encoded(LogoutRequestPdu{});
  b[1] = 0x83;
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b = encoded(SnackPdu{});
  b[1] = 0x84;
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b = encoded(RejectPdu{});
  b[2] = 0x01;
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b = encoded(ScsiResponsePdu{});
  b[2] = 0x02;
  EXPECT_EQ(decode(b), PduError::ReservedValue);
  b[2] = 0x80;  // vendor specific response: fine
  EXPECT_EQ(decode(b), PduError::Ok);
  b = encoded(ScsiCommandPdu{.itt = 1});
  b[1] = 0x85;  // ATTR 5
  EXPECT_EQ(decode(b), PduError::ReservedValue);
}

TEST(PduDecode, LengthRules) {
  Bytes b = encoded(NopOutPdu{true, 0, {}, 1});
  b[4] = 1;  // AHS on a NOP-Out
  EXPECT_EQ(decode(b), PduError::UnexpectedAhs);
  b = encoded(R2TPdu{{}, 1, 2});
  b[7] = 4;  // data on an R2T
  EXPECT_EQ(decode(b), PduError::UnexpectedData);
  for (const Pdu& p : {Pdu(TaskMgmtRequestPdu{}), Pdu(LogoutRequestPdu{}), Pdu(SnackPdu{}),
                       Pdu(TaskMgmtResponsePdu{}), Pdu(LogoutResponsePdu{})}) {
    b = encoded(p);
    b[6] = 1;
    EXPECT_EQ(decode(b), PduError::UnexpectedData) << to_string(opcode_of(p));
  }
  b = encoded(DataOutPdu{true, 8193});
  EXPECT_EQ(decode(b, {Direction::Any, 8192}), PduError::DataSegmentTooLong);
  EXPECT_EQ(decode(b, {Direction::Any, 8193}), PduError::Ok);
  b = encoded(RejectPdu{RejectReason::ProtocolError, 47});
  EXPECT_EQ(decode(b), PduError::InvalidField);
}

TEST(PduDecode, FieldRules) {
  ScsiCommandPdu c;
  c.itt = 1;
  c.expected_data_transfer_length = 512;  // but neither R nor W
  EXPECT_EQ(decode(encoded(c)), PduError::InvalidField);
  c.read = true;
  c.data_segment_length = 512;  // immediate data on a read
  EXPECT_EQ(decode(encoded(c)), PduError::InvalidField);
  c.data_segment_length = 0;
  c.itt = kReservedTag;
  EXPECT_EQ(decode(encoded(c)), PduError::InvalidField);
  Bytes b = encoded(AsyncMessagePdu{});
  b[16] = 0;  // ITT must be 0xffffffff
  EXPECT_EQ(decode(b), PduError::InvalidField);
  b = encoded(R2TPdu{{}, 1, kReservedTag});
  EXPECT_EQ(decode(b), PduError::InvalidField);
  b = encoded(NopOutPdu{false, 0, {}, kReservedTag});  // reply to NOP-In must be immediate
  EXPECT_EQ(decode(b), PduError::InvalidField);
}

TEST(PduDecode, ReservedFieldsIgnored) {
  Bytes b = encoded(NopInPdu{0, {}, 1, kReservedTag, 1, 2, 3});
  b[2] = 0xff;
  b[40] = 0xff;
  EXPECT_EQ(decode(b), PduError::Ok);
}

TEST(Pdu, Lengths) {
  EXPECT_EQ(pad_length(0), 0u);
  EXPECT_EQ(pad_length(1), 3u);
  EXPECT_EQ(pad_length(4), 0u);
  EXPECT_EQ(pad_length(7), 1u);
  EXPECT_EQ(padded_length(5), 8u);
  EXPECT_EQ(pdu_length(0, 0, {}), 48u);
  EXPECT_EQ(pdu_length(0, 0, {true, true}), 52u);  // no data digest without data
  EXPECT_EQ(pdu_length(0, 5, {false, true}), 48u + 8 + 4);
  EXPECT_EQ(pdu_length(2, 512, {true, true}), 48u + 8 + 4 + 512 + 4);
}

TEST(Pdu, Ahs) {
  std::array<uint8_t, 16> tail;
  for (size_t i = 0; i < tail.size(); ++i) tail[i] = static_cast<uint8_t>(i + 1);
  std::array<uint8_t, 64> buf{};
  const size_t n = encode_extended_cdb_ahs(tail, buf);
  ASSERT_EQ(n, 20u);
  EXPECT_EQ(buf[1], 17);  // AHSLength = 16 CDB bytes + reserved byte
  EXPECT_EQ(buf[2], 1);
  const size_t m = encode_bidi_read_length_ahs(0x10000, std::span<uint8_t>(buf).subspan(n));
  ASSERT_EQ(m, 8u);
  AhsInfo info;
  ASSERT_EQ(parse_ahs(std::span<const uint8_t>(buf).first(n + m), info), PduError::Ok);
  ASSERT_GE(info.extended_cdb.size(), 16u);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), info.extended_cdb.begin()));
  EXPECT_EQ(info.bidi_read_expected_length, 0x10000u);
  // Lengths that run past the end, zero lengths, unknown types, duplicates.
  std::array<uint8_t, 8> bad = {0, 9, 1, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_ahs(bad, info), PduError::BadAhs);
  bad = {0, 0, 1, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_ahs(bad, info), PduError::BadAhs);
  bad = {0, 1, 7, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_ahs(bad, info), PduError::BadAhs);
  std::array<uint8_t, 16> dup{};
  encode_bidi_read_length_ahs(1, dup);
  encode_bidi_read_length_ahs(2, std::span<uint8_t>(dup).subspan(8));
  EXPECT_EQ(parse_ahs(dup, info), PduError::BadAhs);
}

TEST(Pdu, WholePduWithDigests) {
  const std::vector<uint8_t> data = {'h', 'e', 'l', 'l', 'o'};
  NopOutPdu p{true, 5, {}, 7};
  std::array<uint8_t, 128> buf{};
  for (Digests d : {Digests{}, Digests{true, false}, Digests{false, true}, Digests{true, true}}) {
    const size_t n = encode_pdu(p, {}, data, d, buf);
    ASSERT_EQ(n, pdu_length(0, 5, d));
    PduParts parts;
    const auto wire = std::span<const uint8_t>(buf).first(n);
    ASSERT_EQ(decode_pdu(wire, d, parts), PduError::Ok);
    EXPECT_EQ(std::get<NopOutPdu>(parts.header), p);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), parts.data.begin(), parts.data.end()));
    if (d.header) {
      buf[20] ^= 1;
      EXPECT_EQ(decode_pdu(wire, d, parts), PduError::HeaderDigestMismatch);
      buf[20] ^= 1;
    }
    if (d.data) {
      buf[n - 6] ^= 1;  // a data byte
      EXPECT_EQ(decode_pdu(wire, d, parts), PduError::DataDigestMismatch);
      buf[n - 6] ^= 1;
    }
    EXPECT_EQ(decode_pdu(wire.first(n - 1), d, parts), PduError::Truncated);
  }
  EXPECT_EQ(encode_pdu(p, {}, std::span(data).first(4), {}, buf), 0u);  // length disagrees
  EXPECT_EQ(encode_pdu(p, {}, data, {}, std::span(buf).first(50)), 0u);  // too small
}

TEST(Pdu, ErrorStrings) {
  for (int e = 0; e <= static_cast<int>(PduError::DataDigestMismatch); ++e)
    EXPECT_NE(to_string(static_cast<PduError>(e)), "unknown PduError");
  EXPECT_EQ(to_string(Opcode::R2T), "R2T");
  EXPECT_FALSE(reject_reason_for(PduError::HeaderDigestMismatch));
}

}  // namespace
}  // namespace vcp::iscsi

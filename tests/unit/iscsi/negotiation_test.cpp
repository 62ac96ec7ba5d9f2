#include "iscsi/negotiation.hpp"

#include <gtest/gtest.h>

namespace vcp::iscsi {
namespace {

TextKeys keys(std::initializer_list<std::pair<const char*, const char*>> kv) {
  TextKeys k;
  for (const auto& [key, value] : kv) k.add(key, value);
  return k;
}

std::string answer(const TextKeys& out, const char* key) {
  const std::string* v = out.find(key);
  return v ? *v : "<none>";
}

constexpr auto kOp = LoginStage::OperationalNegotiation;

TEST(KeyTable, HasTheRfcKeys) {
  for (const char* k : {"HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T",
                        "ImmediateData", "MaxRecvDataSegmentLength", "MaxBurstLength",
                        "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain",
                        "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
                        "ErrorRecoveryLevel", "TargetName", "InitiatorName", "SessionType",
                        "TargetAlias", "TargetPortalGroupTag", "AuthMethod", "SendTargets"})
    EXPECT_NE(find_key(k), nullptr) << k;
  EXPECT_EQ(find_key("DefaultTime2Wait")->fn, ResultFn::Max);
  EXPECT_EQ(find_key("ImmediateData")->fn, ResultFn::And);
  EXPECT_EQ(find_key("InitialR2T")->fn, ResultFn::Or);
  EXPECT_EQ(find_key("MaxRecvDataSegmentLength")->scope, KeyScope::Connection);
  EXPECT_EQ(find_key("X-foo"), nullptr);
}

TEST(Negotiator, BooleanResultFunctions) {
  NegotiationLimits lim;
  lim.immediate_data = false;
  lim.initial_r2t = false;
  Negotiator t(Role::Target, lim);
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"ImmediateData", "Yes"}, {"InitialR2T", "No"},
                            {"DataPDUInOrder", "No"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "ImmediateData"), "No");  // AND
  EXPECT_EQ(answer(out, "InitialR2T"), "No");     // OR of No, No
  EXPECT_EQ(answer(out, "DataPDUInOrder"), "Yes");  // OR with our Yes
  EXPECT_FALSE(t.params().immediate_data);
  EXPECT_FALSE(t.params().initial_r2t);
  EXPECT_TRUE(t.params().data_pdu_in_order);
}

TEST(Negotiator, NumericalResultFunctions) {
  NegotiationLimits lim;
  lim.max_burst_length = 65536;
  lim.default_time2wait = 5;
  Negotiator t(Role::Target, lim);
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"MaxBurstLength", "1048576"}, {"DefaultTime2Wait", "2"},
                            {"DefaultTime2Retain", "0"}, {"ErrorRecoveryLevel", "2"},
                            {"MaxOutstandingR2T", "0x10"}, {"FirstBurstLength", "262144"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "MaxBurstLength"), "65536");   // min
  EXPECT_EQ(answer(out, "DefaultTime2Wait"), "5");     // max
  EXPECT_EQ(answer(out, "DefaultTime2Retain"), "0");   // min
  EXPECT_EQ(answer(out, "ErrorRecoveryLevel"), "0");   // we only do ERL 0
  EXPECT_EQ(answer(out, "MaxOutstandingR2T"), "1");
  EXPECT_EQ(answer(out, "FirstBurstLength"), "65536");  // never above MaxBurstLength
  EXPECT_EQ(t.params().max_burst_length, 65536u);
  EXPECT_EQ(t.params().default_time2wait, 5u);
  EXPECT_EQ(t.finish(), NegotiationError::Ok);
}

TEST(Negotiator, OutOfRangeAndMalformedAreRejected) {
  Negotiator t(Role::Target, {});
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"MaxBurstLength", "511"}, {"DefaultTime2Wait", "3601"},
                            {"ErrorRecoveryLevel", "3"}, {"MaxConnections", "0"},
                            {"ImmediateData", "Maybe"}, {"FirstBurstLength", "abc"},
                            {"HeaderDigest", "MD5"}}),
                      kOp, out),
            NegotiationError::Ok);
  for (const char* k : {"MaxBurstLength", "DefaultTime2Wait", "ErrorRecoveryLevel",
                        "MaxConnections", "ImmediateData", "FirstBurstLength", "HeaderDigest"})
    EXPECT_EQ(answer(out, k), "Reject") << k;
  EXPECT_EQ(t.params().max_burst_length, 262144u);  // defaults stand
}

TEST(Negotiator, ListPicksFirstSupported) {
  NegotiationLimits lim;
  lim.header_digest = DigestPolicy::Allow;
  lim.data_digest = DigestPolicy::None;
  Negotiator t(Role::Target, lim);
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "CRC32C,None"},
                            {"TaskReporting", "ResponseFence,RFC3720"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "HeaderDigest"), "CRC32C");
  EXPECT_EQ(answer(out, "DataDigest"), "None");
  EXPECT_EQ(answer(out, "TaskReporting"), "RFC3720");
  EXPECT_TRUE(t.params().header_digest);
  EXPECT_FALSE(t.params().data_digest);
  Negotiator r(Role::Target, NegotiationLimits{DigestPolicy::Require});
  out.clear();
  ASSERT_EQ(r.receive(keys({{"HeaderDigest", "None"}}), kOp, out), NegotiationError::Ok);
  EXPECT_EQ(answer(out, "HeaderDigest"), "Reject");
  EXPECT_EQ(r.finish(), NegotiationError::RequiredRefused);
}

TEST(Negotiator, DeclarativePerDirection) {
  NegotiationLimits lim;
  lim.max_recv_data_segment_length = 65536;
  Negotiator t(Role::Target, lim);
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"MaxRecvDataSegmentLength", "16384"}}), kOp, out),
            NegotiationError::Ok);
  EXPECT_TRUE(out.empty());  // declarations get no answer
  t.add_operational_offers(out);
  EXPECT_EQ(answer(out, "MaxRecvDataSegmentLength"), "65536");
  EXPECT_EQ(t.params().max_send_data_segment_length, 16384u);
  EXPECT_EQ(t.params().max_recv_data_segment_length, 65536u);
  Negotiator bad(Role::Target, lim);
  EXPECT_EQ(bad.receive(keys({{"MaxRecvDataSegmentLength", "100"}}), kOp, out),
            NegotiationError::BadDeclaration);
  Negotiator bad2(Role::Target, lim);
  EXPECT_EQ(bad2.receive(keys({{"MaxRecvDataSegmentLength", "16777216"}}), kOp, out),
            NegotiationError::BadDeclaration);
}

TEST(Negotiator, IrrelevantKeys) {
  Negotiator t(Role::Target, {});
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"SessionType", "Discovery"}}), LoginStage::SecurityNegotiation, out),
            NegotiationError::Ok);
  ASSERT_EQ(t.receive(keys({{"MaxBurstLength", "512"}, {"InitialR2T", "No"},
                            {"DefaultTime2Wait", "0"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "MaxBurstLength"), "Irrelevant");
  EXPECT_EQ(answer(out, "InitialR2T"), "Irrelevant");
  EXPECT_EQ(answer(out, "DefaultTime2Wait"), "2");
  // FirstBurstLength with InitialR2T=Yes and ImmediateData=No, negotiated in the same text.
  NegotiationLimits lim;
  lim.immediate_data = false;
  Negotiator n(Role::Target, lim);
  out.clear();
  ASSERT_EQ(n.receive(keys({{"FirstBurstLength", "8192"}, {"InitialR2T", "Yes"},
                            {"ImmediateData", "Yes"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "FirstBurstLength"), "Irrelevant");
}

TEST(Negotiator, UnknownKeysAreNotUnderstood) {
  Negotiator t(Role::Target, {});
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"X-com.example.foo", "1"}, {"Bogus", "2"}}), kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "X-com.example.foo"), "NotUnderstood");
  EXPECT_EQ(answer(out, "Bogus"), "NotUnderstood");
}

TEST(Negotiator, DeprecatedMarkers) {
  Negotiator t(Role::Target, {});
  TextKeys out;
  ASSERT_EQ(t.receive(keys({{"IFMarker", "Yes"}, {"OFMarker", "No"}, {"OFMarkInt", "2048~8192"}}),
                      kOp, out),
            NegotiationError::Ok);
  EXPECT_EQ(answer(out, "IFMarker"), "No");
  EXPECT_EQ(answer(out, "OFMarker"), "No");
  EXPECT_EQ(answer(out, "OFMarkInt"), "Reject");
}

TEST(Negotiator, ProtocolErrors) {
  TextKeys out;
  Negotiator a(Role::Target, {});
  EXPECT_EQ(a.receive(keys({{"TargetPortalGroupTag", "1"}}), kOp, out),
            NegotiationError::WrongSender);
  Negotiator b(Role::Initiator, {});
  EXPECT_EQ(b.receive(keys({{"InitiatorName", "iqn.x"}}), kOp, out),
            NegotiationError::WrongSender);
  Negotiator c(Role::Target, {});
  EXPECT_EQ(c.receive(keys({{"MaxBurstLength", "512"}}), LoginStage::SecurityNegotiation, out),
            NegotiationError::WrongStage);
  Negotiator d(Role::Target, {});
  EXPECT_EQ(d.receive(keys({{"SendTargets", "All"}}), kOp, out), NegotiationError::WrongStage);
  Negotiator e(Role::Target, {});
  EXPECT_EQ(e.receive(keys({{"CHAP_A", "5"}}), kOp, out), NegotiationError::WrongStage);
  Negotiator f(Role::Target, {});
  ASSERT_EQ(f.receive(keys({{"MaxBurstLength", "512"}}), kOp, out), NegotiationError::Ok);
  EXPECT_EQ(f.receive(keys({{"MaxBurstLength", "1024"}}), kOp, out),
            NegotiationError::Renegotiated);
  Negotiator g(Role::Target, {});
  EXPECT_EQ(g.receive(keys({{"MaxBurstLength", "Reject"}}), kOp, out),
            NegotiationError::UnexpectedAnswer);
  Negotiator h(Role::Target, {});
  EXPECT_EQ(h.receive(keys({{"SessionType", "Weird"}}), LoginStage::SecurityNegotiation, out),
            NegotiationError::BadDeclaration);
}

TEST(Negotiator, InitiatorChecksAnswers) {
  NegotiationLimits lim;
  lim.max_burst_length = 65536;
  Negotiator i(Role::Initiator, lim);
  TextKeys offers;
  i.add_operational_offers(offers);
  EXPECT_EQ(answer(offers, "MaxBurstLength"), "65536");
  EXPECT_EQ(answer(offers, "HeaderDigest"), "None,CRC32C");
  EXPECT_TRUE(i.has_outstanding_offers());
  TextKeys out;
  // A Min answer above our offer violates the result function.
  EXPECT_EQ(i.receive(keys({{"MaxBurstLength", "131072"}}), kOp, out), NegotiationError::BadAnswer);
  Negotiator j(Role::Initiator, lim);
  offers.clear();
  j.add_operational_offers(offers);
  EXPECT_EQ(j.receive(keys({{"DefaultTime2Wait", "1"}}), kOp, out), NegotiationError::BadAnswer);
  Negotiator k(Role::Initiator, lim);
  offers.clear();
  k.add_operational_offers(offers);
  EXPECT_EQ(k.receive(keys({{"HeaderDigest", "MD5"}}), kOp, out), NegotiationError::BadAnswer);
  Negotiator m(Role::Initiator, lim);
  offers.clear();
  m.add_operational_offers(offers);
  EXPECT_EQ(m.receive(keys({{"DataPDUInOrder", "No"}}), kOp, out), NegotiationError::BadAnswer);
}

// A refused answer is told with the key, the value and what we offered: the login error a
// user reads ("the target's answer cannot be taken: ...") names what to change.
TEST(Negotiator, AFailureNamesTheKey) {
  NegotiationLimits lim;
  lim.max_burst_length = 65536;
  Negotiator i(Role::Initiator, lim);
  TextKeys offers, out;
  i.add_operational_offers(offers);
  const NegotiationError e = i.receive(keys({{"MaxBurstLength", "131072"}}), kOp, out);
  EXPECT_EQ(i.describe(e), "answer violates the result function: MaxBurstLength=131072 (we offered 65536)");

  // A digest we require answered None (tgtd not set up for digests says so, where the RFC
  // wants Reject): a required value refused, not a malformed answer.
  NegotiationLimits req;
  req.header_digest = DigestPolicy::Require;
  Negotiator r(Role::Initiator, req);
  offers.clear();
  r.add_operational_offers(offers);
  EXPECT_EQ(answer(offers, "HeaderDigest"), "CRC32C");
  const NegotiationError d = r.receive(keys({{"HeaderDigest", "None"}}), kOp, out);
  EXPECT_EQ(d, NegotiationError::RequiredRefused);
  EXPECT_EQ(r.describe(d), "peer refused a required value: HeaderDigest=None (we offered CRC32C)");

  // An offer the target never answered, found when the login ends.
  Negotiator u(Role::Initiator, lim);
  offers.clear();
  u.add_operational_offers(offers);
  ASSERT_EQ(u.receive(keys({{"MaxBurstLength", "65536"}}), kOp, out), NegotiationError::Ok);
  const NegotiationError f = u.finish();
  EXPECT_EQ(f, NegotiationError::Unanswered);
  EXPECT_NE(u.describe(f).find("offer left unanswered: "), std::string::npos) << u.describe(f);
  EXPECT_EQ(u.describe(NegotiationError::Ok), "ok");
}

TEST(Negotiator, InitiatorAgainstTarget) {
  NegotiationLimits il;
  il.header_digest = DigestPolicy::Prefer;
  il.max_recv_data_segment_length = 131072;
  il.first_burst_length = 262144;
  NegotiationLimits tl;
  tl.max_burst_length = 131072;
  tl.max_recv_data_segment_length = 32768;
  tl.immediate_data = false;
  Negotiator i(Role::Initiator, il);
  Negotiator t(Role::Target, tl);
  TextKeys offers, answers, back;
  i.add_operational_offers(offers);
  ASSERT_EQ(t.receive(offers, kOp, answers), NegotiationError::Ok);
  t.add_operational_offers(answers);
  EXPECT_FALSE(t.has_outstanding_offers());
  ASSERT_EQ(i.receive(answers, kOp, back), NegotiationError::Ok);
  EXPECT_TRUE(back.empty());
  ASSERT_EQ(i.finish(), NegotiationError::Ok);
  ASSERT_EQ(t.finish(), NegotiationError::Ok);
  const SessionParams& ip = i.params();
  const SessionParams& tp = t.params();
  EXPECT_TRUE(ip.header_digest);
  EXPECT_TRUE(tp.header_digest);
  EXPECT_FALSE(ip.data_digest);
  EXPECT_EQ(ip.max_burst_length, 131072u);
  EXPECT_EQ(tp.max_burst_length, 131072u);
  EXPECT_EQ(ip.first_burst_length, 65536u);  // the target's limit
  EXPECT_FALSE(ip.immediate_data);
  EXPECT_EQ(ip.max_send_data_segment_length, 32768u);
  EXPECT_EQ(tp.max_send_data_segment_length, 131072u);
  EXPECT_EQ(ip.max_recv_data_segment_length, 131072u);
}

TEST(Negotiator, TargetOffersWhatItNeeds) {
  NegotiationLimits tl;
  tl.max_burst_length = 16384;
  tl.data_digest = DigestPolicy::Require;
  Negotiator t(Role::Target, tl);
  TextKeys answers;
  // The initiator raised nothing: the target offers what the defaults get wrong.
  ASSERT_EQ(t.receive(keys({{"MaxRecvDataSegmentLength", "8192"}}), kOp, answers),
            NegotiationError::Ok);
  t.add_operational_offers(answers);
  EXPECT_EQ(answer(answers, "MaxBurstLength"), "16384");
  EXPECT_EQ(answer(answers, "FirstBurstLength"), "<none>");
  EXPECT_EQ(answer(answers, "DataDigest"), "CRC32C");
  EXPECT_EQ(answer(answers, "HeaderDigest"), "<none>");
  EXPECT_TRUE(t.has_outstanding_offers());
  EXPECT_EQ(t.finish(), NegotiationError::Unanswered);
  Negotiator i(Role::Initiator, NegotiationLimits{DigestPolicy::Allow, DigestPolicy::Allow});
  TextKeys back;
  ASSERT_EQ(i.receive(answers, kOp, back), NegotiationError::Ok);
  EXPECT_EQ(answer(back, "MaxBurstLength"), "16384");
  EXPECT_EQ(answer(back, "DataDigest"), "CRC32C");
  TextKeys none;
  ASSERT_EQ(t.receive(back, kOp, none), NegotiationError::Ok);
  EXPECT_FALSE(t.has_outstanding_offers());
  EXPECT_EQ(t.finish(), NegotiationError::Inconsistent);  // FirstBurstLength 65536 > 16384
}

}  // namespace
}  // namespace vcp::iscsi

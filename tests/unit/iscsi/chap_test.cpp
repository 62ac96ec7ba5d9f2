#include "iscsi/chap.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace vcp::iscsi {
namespace {

std::vector<uint8_t> seq(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

// A deterministic "random" source: fills with `start, start+1, ...`.
RandomSource counting(uint8_t start) {
  return [start](std::span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(start + i);
    return true;
  };
}

// Expected values computed independently:
//   printf '\x07secretsecret\x00\x01...\x0f' | md5sum  -> 6ecf51cbe0f7ac32d9cd952f3fd639c0
TEST(Chap, Md5MatchesIndependentValue) {
  const auto r = chap_md5_response(7, "secretsecret", seq(16));
  EXPECT_EQ(encode_hex(r), "0x6ecf51cbe0f7ac32d9cd952f3fd639c0");
  //   printf '\x00abc\xff' | md5sum -> 9fd6d2a57559960e059c385892142915
  const std::vector<uint8_t> c = {0xff};
  EXPECT_EQ(encode_hex(chap_md5_response(0, "abc", c)), "0x9fd6d2a57559960e059c385892142915");
}

const ChapCredentials kIni{"iqn.2024-01.org.vcp:init", "initiator-secret"};
const ChapCredentials kTgt{"iqn.2024-01.org.vcp:target", "target-secret-1"};

TEST(Chap, OneWayExchange) {
  ChapTarget t(kIni, std::nullopt, counting(7));
  ChapInitiator i(kIni, std::nullopt);
  ASSERT_EQ(t.check_config(), ChapError::Ok);
  TextKeys a, c, r, none;
  i.start(a);
  EXPECT_EQ(*a.find("CHAP_A"), "5");
  ASSERT_EQ(t.on_algorithms(*a.find("CHAP_A"), c), ChapError::Ok);
  EXPECT_EQ(*c.find("CHAP_I"), "7");
  EXPECT_EQ(*c.find("CHAP_C"), encode_hex(seq(16, 8)));
  ASSERT_EQ(i.on_challenge(c, r), ChapError::Ok);
  EXPECT_EQ(*r.find("CHAP_N"), kIni.name);
  EXPECT_EQ(*r.find("CHAP_R"), encode_hex(chap_md5_response(7, kIni.secret, seq(16, 8))));
  EXPECT_FALSE(r.contains("CHAP_C"));
  EXPECT_EQ(t.on_response(r, none), ChapError::Ok);
  EXPECT_TRUE(none.empty());
}

TEST(Chap, MutualExchange) {
  ChapTarget t(kIni, kTgt, counting(1));
  ChapInitiator i(kIni, kTgt, counting(100));
  TextKeys a, c, r, back;
  i.start(a);
  ASSERT_EQ(t.on_algorithms("5", c), ChapError::Ok);
  ASSERT_EQ(i.on_challenge(c, r), ChapError::Ok);
  EXPECT_EQ(*r.find("CHAP_I"), "100");
  ASSERT_EQ(t.on_response(r, back), ChapError::Ok);
  EXPECT_TRUE(t.mutual_requested());
  EXPECT_EQ(*back.find("CHAP_N"), kTgt.name);
  EXPECT_EQ(i.on_target_response(back), ChapError::Ok);
  // A target with the wrong secret is caught by the initiator.
  ChapInitiator i2(kIni, ChapCredentials{kTgt.name, "another-secret"}, counting(100));
  TextKeys c2, r2;
  ASSERT_EQ(i2.on_challenge(c, r2), ChapError::Ok);
  EXPECT_EQ(i2.on_target_response(back), ChapError::WrongResponse);
}

TEST(Chap, WrongSecretAndName) {
  ChapTarget t(kIni, std::nullopt, counting(3));
  TextKeys c, r, out;
  ASSERT_EQ(t.on_algorithms("5", c), ChapError::Ok);
  ChapInitiator wrong(ChapCredentials{kIni.name, "not-the-secret"}, std::nullopt);
  ASSERT_EQ(wrong.on_challenge(c, r), ChapError::Ok);
  EXPECT_EQ(t.on_response(r, out), ChapError::WrongResponse);
  ChapTarget t2(kIni, std::nullopt, counting(3));
  TextKeys c2, r2;
  ASSERT_EQ(t2.on_algorithms("5", c2), ChapError::Ok);
  ChapInitiator who(ChapCredentials{"iqn.other", kIni.secret}, std::nullopt);
  ASSERT_EQ(who.on_challenge(c2, r2), ChapError::Ok);
  EXPECT_EQ(t2.on_response(r2, out), ChapError::WrongName);
}

TEST(Chap, RefusesReflectedChallenge) {
  ChapTarget t(kIni, kTgt, counting(9));
  TextKeys c, r, out;
  ASSERT_EQ(t.on_algorithms("5", c), ChapError::Ok);
  // A rogue initiator sends the target's own challenge back.
  r.add("CHAP_N", kIni.name);
  r.add("CHAP_R", encode_hex(chap_md5_response(9, kIni.secret, seq(16, 10))));
  r.add("CHAP_I", "9");
  r.add("CHAP_C", *c.find("CHAP_C"));
  EXPECT_EQ(t.on_response(r, out), ChapError::ReflectedChallenge);
}

TEST(Chap, ChallengeBoundsAndEncodings) {
  ChapInitiator i(kIni, std::nullopt);
  TextKeys out;
  auto challenge = [](std::string c) {
    TextKeys k;
    k.add("CHAP_A", "5");
    k.add("CHAP_I", "1");
    k.add("CHAP_C", std::move(c));
    return k;
  };
  EXPECT_EQ(i.on_challenge(challenge(encode_hex(seq(15))), out), ChapError::ChallengeTooShort);
  EXPECT_EQ(i.on_challenge(challenge("0x" + std::string(2050, '1')), out), ChapError::ChallengeTooLong);
  EXPECT_EQ(i.on_challenge(challenge("12345"), out), ChapError::BadChallenge);
  out.clear();
  ASSERT_EQ(i.on_challenge(challenge(encode_base64(seq(16))), out), ChapError::Ok);
  EXPECT_EQ(*out.find("CHAP_R"), encode_hex(chap_md5_response(1, kIni.secret, seq(16))));
  TextKeys bad_id = challenge(encode_hex(seq(16)));
  TextKeys k;
  k.add("CHAP_A", "5");
  k.add("CHAP_I", "256");
  k.add("CHAP_C", encode_hex(seq(16)));
  EXPECT_EQ(i.on_challenge(k, out), ChapError::BadIdentifier);
  TextKeys md5less;
  md5less.add("CHAP_A", "7");
  EXPECT_EQ(i.on_challenge(md5less, out), ChapError::UnsupportedAlgorithm);
}

TEST(Chap, TargetNeedsMd5) {
  ChapTarget t(kIni, std::nullopt);
  TextKeys out;
  EXPECT_EQ(t.on_algorithms("6,7", out), ChapError::UnsupportedAlgorithm);
  EXPECT_EQ(*out.find("CHAP_A"), "Reject");
  TextKeys ok;
  EXPECT_EQ(t.on_algorithms("7,5", ok), ChapError::Ok);  // system random
  EXPECT_EQ(parse_binary(*ok.find("CHAP_C"))->size(), kChapChallengeLength);
}

TEST(Chap, SecretRules) {
  EXPECT_EQ(validate_secret("short"), ChapError::BadSecret);
  EXPECT_EQ(validate_secret("twelve-bytes"), ChapError::Ok);
  EXPECT_EQ(ChapTarget(kIni, ChapCredentials{"t", kIni.secret}).check_config(),
            ChapError::SameSecretBothWays);
  EXPECT_EQ(ChapInitiator(ChapCredentials{"i", "short"}, std::nullopt).check_config(),
            ChapError::BadSecret);
}

TEST(Chap, ResponseBeforeChallengeIsRefused) {
  ChapTarget t(kIni, std::nullopt);
  TextKeys r, out;
  r.add("CHAP_N", kIni.name);
  r.add("CHAP_R", encode_hex(seq(16)));
  EXPECT_EQ(t.on_response(r, out), ChapError::UnexpectedKey);
}

}  // namespace
}  // namespace vcp::iscsi

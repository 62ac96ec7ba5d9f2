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
  const auto r = chap_response(ChapAlgorithm::Md5, 7, "secretsecret", seq(16));
  EXPECT_EQ(encode_hex(r), "0x6ecf51cbe0f7ac32d9cd952f3fd639c0");
  //   printf '\x00abc\xff' | md5sum -> 9fd6d2a57559960e059c385892142915
  const std::vector<uint8_t> c = {0xff};
  EXPECT_EQ(encode_hex(chap_response(ChapAlgorithm::Md5, 0, "abc", c)), "0x9fd6d2a57559960e059c385892142915");
}

// The same input through each algorithm, against Python's hashlib:
//   hashlib.new(NAME, bytes([7]) + b'secretsecret' + bytes(range(16))).hexdigest()
TEST(Chap, EachAlgorithmMatchesIndependentValues) {
  const std::pair<ChapAlgorithm, const char*> cases[] = {
      {ChapAlgorithm::Md5, "0x6ecf51cbe0f7ac32d9cd952f3fd639c0"},
      {ChapAlgorithm::Sha1, "0x36e52195eafe95448fdcaeaed9d412d0f172ed9e"},
      {ChapAlgorithm::Sha256, "0xcf08f83eb6fac1778026846c2914297e19faa06ab011ae8fc9d51a3c10f20a49"},
      {ChapAlgorithm::Sha3_256, "0x85bd8fa7050229b8748221b7994c5337dca98b37923b96a37e2eb75fc3cf9d15"},
  };
  for (const auto& [algo, want] : cases) {
    const auto r = chap_response(algo, 7, "secretsecret", seq(16));
    EXPECT_EQ(encode_hex(r), want) << to_string(algo);
    EXPECT_EQ(r.size(), chap_digest_size(algo)) << to_string(algo);
  }
  EXPECT_EQ(parse_chap_algorithm("7"), ChapAlgorithm::Sha256);
  EXPECT_EQ(parse_chap_algorithm("8"), ChapAlgorithm::Sha3_256);
  EXPECT_FALSE(parse_chap_algorithm("4"));
  EXPECT_FALSE(parse_chap_algorithm("05"));
  EXPECT_FALSE(parse_chap_algorithm(""));
}

const ChapCredentials kIni{"iqn.2024-01.org.vcp:init", "initiator-secret"};
const ChapCredentials kTgt{"iqn.2024-01.org.vcp:target", "target-secret-1"};

TEST(Chap, OneWayExchange) {
  ChapTarget t(kIni, std::nullopt, counting(7));
  ChapInitiator i(kIni, std::nullopt, system_random, {ChapAlgorithm::Sha256, ChapAlgorithm::Md5});
  ASSERT_EQ(t.check_config(), ChapError::Ok);
  TextKeys a, c, r, none;
  i.start(a);
  EXPECT_EQ(*a.find("CHAP_A"), "7,5");  // as configured, SHA-256 first
  ASSERT_EQ(t.on_algorithms(*a.find("CHAP_A"), c), ChapError::Ok);
  EXPECT_EQ(*c.find("CHAP_A"), "7");
  EXPECT_EQ(t.algorithm(), ChapAlgorithm::Sha256);
  EXPECT_EQ(*c.find("CHAP_I"), "7");
  EXPECT_EQ(*c.find("CHAP_C"), encode_hex(seq(32, 8)));  // as long as the digest
  ASSERT_EQ(i.on_challenge(c, r), ChapError::Ok);
  EXPECT_EQ(i.algorithm(), ChapAlgorithm::Sha256);
  EXPECT_EQ(*r.find("CHAP_N"), kIni.name);
  EXPECT_EQ(*r.find("CHAP_R"), encode_hex(chap_response(ChapAlgorithm::Sha256, 7, kIni.secret, seq(32, 8))));
  EXPECT_FALSE(r.contains("CHAP_C"));
  EXPECT_EQ(t.on_response(r, none), ChapError::Ok);
  EXPECT_TRUE(none.empty());
}

TEST(Chap, MutualExchangeInEachAlgorithm) {
  for (const char* algo : {"5", "6", "7", "8"}) {
    SCOPED_TRACE(algo);
    ChapTarget t(kIni, kTgt, counting(1));
    ChapInitiator i(kIni, kTgt, counting(100), {*parse_chap_algorithm(algo)});
    TextKeys c, r, back;
    ASSERT_EQ(t.on_algorithms(algo, c), ChapError::Ok);
    ASSERT_EQ(i.on_challenge(c, r), ChapError::Ok);
    EXPECT_EQ(parse_binary(*r.find("CHAP_R"))->size(), chap_digest_size(*parse_chap_algorithm(algo)));
    ASSERT_EQ(t.on_response(r, back), ChapError::Ok);
    EXPECT_EQ(parse_binary(*back.find("CHAP_R"))->size(), chap_digest_size(*parse_chap_algorithm(algo)));
    EXPECT_EQ(i.on_target_response(back), ChapError::Ok);
  }
}

TEST(Chap, AResponseOfAnotherDigestSizeIsRefused) {
  // An MD5-sized CHAP_R where SHA-256 was chosen (a peer that ignored the choice).
  ChapTarget t(kIni, std::nullopt, counting(7));
  TextKeys c, r, out;
  ASSERT_EQ(t.on_algorithms("7", c), ChapError::Ok);
  r.add("CHAP_N", kIni.name);
  r.add("CHAP_R", encode_hex(chap_response(ChapAlgorithm::Md5, 7, kIni.secret, seq(32, 8))));
  EXPECT_EQ(t.on_response(r, out), ChapError::BadResponse);
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
  r.add("CHAP_R", encode_hex(chap_response(ChapAlgorithm::Md5, 9, kIni.secret, seq(16, 10))));
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
  EXPECT_EQ(*out.find("CHAP_R"), encode_hex(chap_response(ChapAlgorithm::Md5, 1, kIni.secret, seq(16))));
  TextKeys bad_id = challenge(encode_hex(seq(16)));
  TextKeys k;
  k.add("CHAP_A", "5");
  k.add("CHAP_I", "256");
  k.add("CHAP_C", encode_hex(seq(16)));
  EXPECT_EQ(i.on_challenge(k, out), ChapError::BadIdentifier);
  for (const char* a : {"7", "9", "5,7", "Reject", ""}) {  // not one we offered (MD5 alone); a list is no answer
    TextKeys unknown;
    unknown.add("CHAP_A", a);
    EXPECT_EQ(i.on_challenge(unknown, out), ChapError::UnsupportedAlgorithm) << a;
  }
}

TEST(Chap, TargetTakesTheFirstOfTheInitiatorsListItSupports) {
  ChapTarget t(kIni, std::nullopt);
  TextKeys out;
  EXPECT_EQ(t.on_algorithms("1,2,9", out), ChapError::UnsupportedAlgorithm);
  EXPECT_EQ(*out.find("CHAP_A"), "Reject");
  // The initiator's order decides (system random from here).
  for (auto [offer, chosen, challenge] : {std::tuple<const char*, const char*, size_t>{"9,7,5", "7", 32},
                                          {"5", "5", kChapChallengeLength},
                                          {"5,7", "5", kChapChallengeLength},
                                          {"6", "6", 20},
                                          {"8,5", "8", 32}}) {
    ChapTarget fresh(kIni, std::nullopt);
    TextKeys ok;
    ASSERT_EQ(fresh.on_algorithms(offer, ok), ChapError::Ok) << offer;
    EXPECT_EQ(*ok.find("CHAP_A"), chosen) << offer;
    EXPECT_EQ(parse_binary(*ok.find("CHAP_C"))->size(), challenge) << offer;
  }
}

TEST(Chap, ATargetTakesOnlyTheAlgorithmsItAccepts) {
  // A target configured for SHA-256 and SHA3-256: an initiator offering MD5 alone is refused,
  // saying what was offered and what is accepted; one offering MD5 then SHA-256 gets SHA-256.
  ChapTarget t(kIni, std::nullopt, counting(1), {ChapAlgorithm::Sha256, ChapAlgorithm::Sha3_256});
  TextKeys out;
  EXPECT_EQ(t.on_algorithms("5", out), ChapError::UnsupportedAlgorithm);
  EXPECT_EQ(*out.find("CHAP_A"), "Reject");
  EXPECT_EQ(t.refusal(), "the initiator offers CHAP_A=5; accepted here: SHA-256, SHA3-256");
  ChapTarget t2(kIni, std::nullopt, counting(1), {ChapAlgorithm::Sha256, ChapAlgorithm::Sha3_256});
  TextKeys ok;
  ASSERT_EQ(t2.on_algorithms("5,6,7", ok), ChapError::Ok);
  EXPECT_EQ(*ok.find("CHAP_A"), "7");
  EXPECT_EQ(parse_chap_algorithm_names("SHA256,md5:SHA256"),
            (std::vector<ChapAlgorithm>{ChapAlgorithm::Sha256, ChapAlgorithm::Md5}));
  EXPECT_FALSE(parse_chap_algorithm_names(""));
  EXPECT_FALSE(parse_chap_algorithm_names("SHA256:"));
  EXPECT_FALSE(parse_chap_algorithm_names("SHA256:SHA512"));
  EXPECT_EQ(chap_algorithm_names({ChapAlgorithm::Sha3_256, ChapAlgorithm::Md5}), "SHA3-256, MD5");
}

TEST(Chap, TheInitiatorOffersMd5UnlessToldOtherwise) {
  // MD5 alone by default (tgt numbers SHA-1 7: offering 7 to it would fail the login).
  TextKeys a;
  ChapInitiator(kIni, std::nullopt).start(a);
  EXPECT_EQ(*a.find("CHAP_A"), "5");
  TextKeys b;
  ChapInitiator(kIni, std::nullopt, system_random,
                {ChapAlgorithm::Sha3_256, ChapAlgorithm::Sha256, ChapAlgorithm::Sha1, ChapAlgorithm::Md5})
      .start(b);
  EXPECT_EQ(*b.find("CHAP_A"), "8,7,6,5");
  EXPECT_EQ(chap_algorithm_from_name("sha256"), ChapAlgorithm::Sha256);
  EXPECT_EQ(chap_algorithm_from_name("SHA3-256"), ChapAlgorithm::Sha3_256);
  EXPECT_EQ(chap_algorithm_from_name("SHA-1"), ChapAlgorithm::Sha1);
  EXPECT_EQ(chap_algorithm_from_name("md5"), ChapAlgorithm::Md5);
  EXPECT_FALSE(chap_algorithm_from_name("sha512"));
  EXPECT_FALSE(chap_algorithm_from_name(""));
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

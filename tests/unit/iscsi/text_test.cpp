#include "iscsi/text.hpp"

#include <gtest/gtest.h>

#include <string>

namespace vcp::iscsi {
namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TextError parse(const std::string& s, TextKeys& out, TextLimits l = {}) {
  return parse_text(bytes(s), out, l);
}

TEST(Text, ParsesAndEncodes) {
  using namespace std::string_literals;
  const std::string in = "InitiatorName=iqn.2024-01.org.vcp:i\0SessionType=Normal\0X-a=\0"s;
  TextKeys k;
  ASSERT_EQ(parse(in, k), TextError::Ok);
  ASSERT_EQ(k.size(), 3u);
  EXPECT_EQ(*k.find("InitiatorName"), "iqn.2024-01.org.vcp:i");
  EXPECT_EQ(*k.find("X-a"), "");
  EXPECT_FALSE(k.find("TargetName"));
  std::vector<uint8_t> out;
  encode_text(k, out);
  EXPECT_EQ(std::string(out.begin(), out.end()), in);
}

TEST(Text, ValueMayContainEquals) {
  TextKeys k;
  ASSERT_EQ(parse(std::string("X-k=a=b\0", 8), k), TextError::Ok);
  EXPECT_EQ(*k.find("X-k"), "a=b");
}

TEST(Text, SkipsEmptyEntries) {
  TextKeys k;
  ASSERT_EQ(parse(std::string("A=1\0\0\0B=2\0", 10), k), TextError::Ok);
  EXPECT_EQ(k.size(), 2u);
  ASSERT_EQ(parse(std::string(), k), TextError::Ok);
  EXPECT_TRUE(k.empty());
}

TEST(Text, Errors) {
  TextKeys k;
  EXPECT_EQ(parse("A=1", k), TextError::NotTerminated);
  EXPECT_EQ(parse(std::string("A\0", 2), k), TextError::MissingEquals);
  EXPECT_EQ(parse(std::string("=1\0", 3), k), TextError::EmptyKey);
  EXPECT_EQ(parse(std::string("A B=1\0", 6), k), TextError::BadKeyCharacter);
  EXPECT_EQ(parse(std::string("A=1\0A=2\0", 8), k), TextError::DuplicateKey);
  EXPECT_EQ(parse(std::string("A=\x01\0", 4), k), TextError::BadValueCharacter);
  EXPECT_EQ(parse(std::string("A=1\0B=2\0", 8), k, {1, 1000}), TextError::TooManyPairs);
  EXPECT_EQ(parse(std::string("A=1\0B=2\0", 8), k, {10, 7}), TextError::TooLong);
  EXPECT_NE(to_string(TextError::DuplicateKey), "unknown TextError");
}

TEST(Text, RepeatedKeysOnlyWhenAllowed) {
  using namespace std::string_literals;
  const std::string in =
      "TargetName=iqn.a\0TargetAddress=127.0.0.1:3260,1\0TargetAddress=[::1]:3260,1\0TargetName=iqn.b\0"s;
  TextKeys k;
  EXPECT_EQ(parse(in, k), TextError::DuplicateKey);
  TextLimits l;
  l.allow_repeated_keys = true;
  ASSERT_EQ(parse(in, k, l), TextError::Ok);
  ASSERT_EQ(k.size(), 4u);
  EXPECT_EQ(k.pairs()[2].value, "[::1]:3260,1");
  EXPECT_EQ(k.pairs()[3].key, "TargetName");
  l.max_pairs = 3;
  EXPECT_EQ(parse(in, k, l), TextError::TooManyPairs);
}

TEST(Text, KeyAndValueLimits) {
  TextKeys k;
  const std::string key63(63, 'K');
  EXPECT_EQ(parse(key63 + "=1" + std::string(1, '\0'), k), TextError::Ok);
  EXPECT_EQ(parse(key63 + "K=1" + std::string(1, '\0'), k), TextError::KeyTooLong);
  const std::string v255(255, 'v');
  EXPECT_EQ(parse("A=" + v255 + std::string(1, '\0'), k), TextError::Ok);
  EXPECT_EQ(parse("A=" + v255 + "v" + std::string(1, '\0'), k), TextError::ValueTooLong);
  // CHAP_C/CHAP_R may carry up to 1024 bytes in hex.
  const std::string hex1024 = "0x" + std::string(2048, 'a');
  EXPECT_EQ(parse("CHAP_C=" + hex1024 + std::string(1, '\0'), k), TextError::Ok);
  EXPECT_EQ(parse("CHAP_C=" + hex1024 + "a" + std::string(1, '\0'), k), TextError::ValueTooLong);
}

TEST(TextValues, Numbers) {
  EXPECT_EQ(parse_number("0"), 0u);
  EXPECT_EQ(parse_number("262144"), 262144u);
  EXPECT_EQ(parse_number("0x10"), 16u);
  EXPECT_EQ(parse_number("0X1f"), 31u);
  EXPECT_EQ(parse_number("18446744073709551615"), UINT64_MAX);
  EXPECT_FALSE(parse_number("18446744073709551616"));
  EXPECT_FALSE(parse_number(""));
  EXPECT_FALSE(parse_number("0x"));
  EXPECT_FALSE(parse_number("12a"));
  EXPECT_FALSE(parse_number("-1"));
  EXPECT_FALSE(parse_number("0x11112222333344445"));
}

TEST(TextValues, Booleans) {
  EXPECT_EQ(parse_boolean("Yes"), true);
  EXPECT_EQ(parse_boolean("No"), false);
  EXPECT_FALSE(parse_boolean("yes"));
  EXPECT_FALSE(parse_boolean(""));
}

TEST(TextValues, Binary) {
  const std::vector<uint8_t> v = {0x00, 0x01, 0xfe, 0xff, 0x7f};
  EXPECT_EQ(encode_hex(v), "0x0001feff7f");
  EXPECT_EQ(parse_binary("0x0001FEff7f"), v);
  EXPECT_EQ(parse_binary("0X0001feff7f"), v);
  EXPECT_EQ(parse_binary("0x123"), (std::vector<uint8_t>{0x01, 0x23}));
  EXPECT_FALSE(parse_binary("0x"));
  EXPECT_FALSE(parse_binary("0xzz"));
  EXPECT_FALSE(parse_binary("1234"));
  // base64 against RFC 4648 vectors
  const std::string foobar = "foobar";
  for (size_t n = 1; n <= foobar.size(); ++n) {
    const std::vector<uint8_t> raw(foobar.begin(), foobar.begin() + static_cast<long>(n));
    const std::string enc = encode_base64(raw);
    EXPECT_EQ(parse_binary(enc), raw) << enc;
  }
  EXPECT_EQ(encode_base64(std::vector<uint8_t>{'f', 'o', 'o', 'b'}), "0bZm9vYg==");
  EXPECT_EQ(encode_base64(std::vector<uint8_t>{'f', 'o', 'o', 'b', 'a'}), "0bZm9vYmE=");
  EXPECT_FALSE(parse_binary("0bZm9"));    // not a multiple of 4
  EXPECT_FALSE(parse_binary("0bZ=9v"));   // '=' in the middle
  EXPECT_FALSE(parse_binary("0bZm9*"));
  EXPECT_FALSE(parse_binary("0b"));
}

TEST(TextValues, Lists) {
  const auto l = split_list("CRC32C,None");
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0], "CRC32C");
  EXPECT_EQ(l[1], "None");
  EXPECT_EQ(split_list("None").size(), 1u);
}

}  // namespace
}  // namespace vcp::iscsi

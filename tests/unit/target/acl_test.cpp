// The target's access list: address ranges, iSCSI names, and what they let through.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>

#include "iscsi/names.hpp"
#include "target/acl.hpp"
#include "target/settings.hpp"

namespace vcp::target::test {
namespace {

IpAddress v4(const char* a) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, a, &sa.sin_addr), 1);
  return ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
}

IpAddress v6(const char* a) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, a, &sa.sin6_addr), 1);
  return ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
}

AddressRange range(const char* text) {
  std::string err;
  auto r = parse_address_range(text, &err);
  EXPECT_TRUE(r) << text << ": " << err;
  return r.value_or(AddressRange{});
}

TEST(TargetAcl, AddressRangesContainWhatTheirPrefixSays) {
  EXPECT_TRUE(contains(range("10.0.0.0/8"), v4("10.255.1.2")));
  EXPECT_FALSE(contains(range("10.0.0.0/8"), v4("11.0.0.1")));
  EXPECT_TRUE(contains(range("192.168.1.7"), v4("192.168.1.7")));  // one host
  EXPECT_FALSE(contains(range("192.168.1.7"), v4("192.168.1.8")));
  EXPECT_TRUE(contains(range("172.16.0.0/12"), v4("172.31.255.255")));  // a prefix inside a byte
  EXPECT_FALSE(contains(range("172.16.0.0/12"), v4("172.32.0.0")));
  EXPECT_TRUE(contains(range("0.0.0.0/0"), v4("8.8.8.8")));
  EXPECT_TRUE(contains(range("fd00::/8"), v6("fdab::1")));
  EXPECT_FALSE(contains(range("fd00::/8"), v6("fe80::1")));
  EXPECT_TRUE(contains(range("[::1]"), v6("::1")));
  EXPECT_TRUE(contains(range("2001:db8::/33"), v6("2001:db8:7fff::1")));
  EXPECT_FALSE(contains(range("2001:db8::/33"), v6("2001:db8:8000::1")));
  // An IPv4 peer of a dual-stack listener is IPv4; families never match each other.
  EXPECT_TRUE(contains(range("127.0.0.0/8"), v6("::ffff:127.0.0.1")));
  EXPECT_FALSE(contains(range("::/0"), v4("127.0.0.1")));
  EXPECT_FALSE(contains(range("0.0.0.0/0"), v6("::1")));
  EXPECT_FALSE(contains(range("0.0.0.0/0"), IpAddress{}));  // unknown
}

// What `sendfile = "auto"` counts as an initiator on this machine (besides its own address).
TEST(TargetAcl, LoopbackAddresses) {
  EXPECT_TRUE(is_loopback(v4("127.0.0.1")));
  EXPECT_TRUE(is_loopback(v4("127.3.2.1")));
  EXPECT_TRUE(is_loopback(v6("::1")));
  EXPECT_TRUE(is_loopback(v6("::ffff:127.0.0.1")));  // an IPv4 peer of a dual-stack listener
  EXPECT_FALSE(is_loopback(v4("10.0.0.1")));
  EXPECT_FALSE(is_loopback(v4("128.0.0.1")));
  EXPECT_FALSE(is_loopback(v6("::2")));
  EXPECT_FALSE(is_loopback(v6("fe80::1")));
  EXPECT_FALSE(is_loopback(IpAddress{}));
}

TEST(TargetAcl, MalformedRangesAreRefusedWithTheReason) {
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "host.example",
                          "10.0.0", "1.2.3.4/1000", "[10.0.0.1", "fd00::/8/8"}) {
    std::string err;
    EXPECT_FALSE(parse_address_range(bad, &err)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
}

TEST(TargetAcl, NamesCompareWithoutCase) {
  EXPECT_EQ(iscsi::normalize_iscsi_name("IQN.2024-01.Org.Example:Host"), "iqn.2024-01.org.example:host");
  EXPECT_EQ(iscsi::normalize_iscsi_name("eui.02004567A425678D"), "eui.02004567a425678d");
  EXPECT_EQ(iscsi::normalize_iscsi_name("naa.52004567BA64678D"), "naa.52004567ba64678d");
  for (const char* bad : {"", "iqn.", "host", "iqn.2024-01.org.x:a b", "iqn.2024-01.org.x:\x7f", "uuid.1234"})
    EXPECT_FALSE(iscsi::normalize_iscsi_name(bad)) << bad;
  EXPECT_FALSE(iscsi::normalize_iscsi_name("iqn." + std::string(220, 'a')));  // over 223 bytes
}

TEST(TargetAcl, BothListsMustLetAnInitiatorIn) {
  TargetSettings s;
  std::string err;
  EXPECT_TRUE(s.acl.allows("iqn.2024-01.org.x:anyone", IpAddress{}));  // no list: anyone
  ASSERT_TRUE(allow_initiator(s.acl, "iqn.2024-01.org.x:Host", &err)) << err;
  EXPECT_TRUE(s.acl.allows("IQN.2024-01.ORG.X:HOST", v4("10.1.1.1")));
  EXPECT_FALSE(s.acl.allows("iqn.2024-01.org.x:other", v4("10.1.1.1")));
  EXPECT_FALSE(s.acl.allows("not a name", v4("10.1.1.1")));
  ASSERT_TRUE(allow_address(s.acl, "10.0.0.0/8", &err)) << err;
  ASSERT_TRUE(allow_address(s.acl, "::1", &err)) << err;
  EXPECT_TRUE(s.acl.allows("iqn.2024-01.org.x:host", v4("10.1.1.1")));
  EXPECT_TRUE(s.acl.allows("iqn.2024-01.org.x:host", v6("::1")));
  EXPECT_FALSE(s.acl.allows("iqn.2024-01.org.x:host", v4("192.168.1.1")));
  EXPECT_FALSE(s.acl.allows("iqn.2024-01.org.x:host", IpAddress{}));  // address unknown
  EXPECT_FALSE(s.acl.allows("iqn.2024-01.org.x:other", v4("10.1.1.1")));

  EXPECT_FALSE(allow_initiator(s.acl, "host", &err));
  EXPECT_NE(err.find("not an iSCSI name"), std::string::npos) << err;
  EXPECT_FALSE(allow_address(s.acl, "10.0.0.0/40", &err));
  EXPECT_NE(err.find("at most 32"), std::string::npos) << err;
}

}  // namespace
}  // namespace vcp::target::test

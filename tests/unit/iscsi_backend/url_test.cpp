#include "backends/iscsi/url.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>

#include "backends/block_backend.hpp"
#include "backends/iscsi/discovery.hpp"
#include "scripted_target.hpp"

namespace vcp::backends::iscsi {
namespace {

using vcp::iscsi::DigestPolicy;

EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m](const char* k) -> std::optional<std::string> {
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}
const EnvLookup kNoEnv = env_of({});

// parse_iscsi_url refuses `url` (no environment unless given), saying `text`.
void expect_refused(const std::string& url, const std::string& text, const EnvLookup& env = kNoEnv) {
  std::string err;
  EXPECT_FALSE(parse_iscsi_url(url, &err, env)) << url;
  EXPECT_NE(err.find(text), std::string::npos) << url << ": " << err;
}

TEST(IscsiUrl, Minimal) {
  std::string err;
  auto c = parse_iscsi_url("iscsi://10.0.0.1/iqn.2024-01.org.x:disk/3", &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->host, "10.0.0.1");
  EXPECT_EQ(c->port, 3260);
  EXPECT_EQ(c->target, "iqn.2024-01.org.x:disk");
  EXPECT_EQ(c->lun, 3u);
  EXPECT_EQ(c->initiator, kDefaultInitiator);
  EXPECT_TRUE(c->user.empty());
  EXPECT_EQ(c->header_digest, DigestPolicy::Allow);
}

TEST(IscsiUrl, PortIpv6AndOptionsBothWays) {
  std::string err;
  auto c = parse_iscsi_url("iscsi://[::1]:3261/iqn.a:b/0?header_digest=crc32c&data_digest=none&initiator=iqn.i:me",
                           &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 3261);
  EXPECT_EQ(c->header_digest, DigestPolicy::Require);
  EXPECT_EQ(c->data_digest, DigestPolicy::None);
  EXPECT_EQ(c->initiator, "iqn.i:me");
  c = parse_iscsi_url("iscsi://h:1/iqn.a:b/16383,timeout=5,nop_interval=2,max_recv_segment=4096", &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->lun, 16383u);
  EXPECT_EQ(c->timeout_ms, 5000u);
  EXPECT_EQ(c->nop_interval_ms, 2000u);
  EXPECT_EQ(c->max_recv_data_segment_length, 4096u);
}

TEST(IscsiUrl, Errors) {
  std::string err;
  for (const char* bad : {"iscsi:/h/iqn/1", "iscsi://h", "iscsi://h/iqn", "iscsi://h/iqn/x", "iscsi://h/iqn/16384",
                          "iscsi://h:0/iqn/1", "iscsi://h:99999/iqn/1", "iscsi://::1/iqn/1", "iscsi://[::1/iqn/1",
                          "iscsi:///iqn/1", "iscsi://h/iqn/1?header_digest=md5", "iscsi://h/iqn/1?bogus=1",
                          "iscsi://h/iqn/1?timeout=0", "iscsi://h/a/b/1", "iscsi://h/iqn/1?timeout=1&timeout=2"}) {
    err.clear();
    EXPECT_FALSE(parse_iscsi_url(bad, &err, kNoEnv)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
}

TEST(IscsiUrl, SecretsNeverFromTheCommandLine) {
  expect_refused("iscsi://u%pw@h/iqn/1", "visible");
  expect_refused("iscsi://u@h/iqn/1?secret=abc", "command line");
  // A user without a secret anywhere is an error, said plainly.
  expect_refused("iscsi://u@h/iqn/1", "VCP_ISCSI_SECRET");
}

TEST(IscsiUrl, SecretsFromEnvironmentAndFile) {
  std::string err;
  auto c = parse_iscsi_url("iscsi://alice@h/iqn/1?mutual_user=tgt", &err,
                           env_of({{"VCP_ISCSI_SECRET", "s1-0123456789"}, {"VCP_ISCSI_MUTUAL_SECRET", "s2-0123456789"}}));
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->user, "alice");
  EXPECT_EQ(c->secret, "s1-0123456789");
  EXPECT_EQ(c->mutual_user, "tgt");
  EXPECT_EQ(c->mutual_secret, "s2-0123456789");

  char path[] = "/tmp/vcp-secret-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "file-secret-0123\r\nfile-mutual-4567\n";
  c = parse_iscsi_url(std::string("iscsi://alice@h/iqn/1?mutual_user=tgt&secret_file=") + path, &err,
                      env_of({{"VCP_ISCSI_SECRET", "from-env-000000"}}));
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->secret, "file-secret-0123");  // the file wins over the environment
  EXPECT_EQ(c->mutual_secret, "file-mutual-4567");
  std::remove(path);
  expect_refused("iscsi://alice@h/iqn/1?secret_file=/nonexistent/x", "No such file");
  expect_refused("iscsi://alice@h/iqn/1?secret_file=/dev/zero", "longer than");  // endless
  // Mutual CHAP without our own CHAP, or without the target's secret.
  EXPECT_FALSE(parse_iscsi_url("iscsi://h/iqn/1?mutual_user=tgt", &err, kNoEnv));
  EXPECT_FALSE(parse_iscsi_url("iscsi://alice@h/iqn/1?mutual_user=tgt", &err,
                               env_of({{"VCP_ISCSI_SECRET", "s1-0123456789"}})));
}

TEST(IscsiUrl, ChapAlgorithmsInTheOrderGiven) {
  std::string err;
  const auto env = env_of({{"VCP_ISCSI_SECRET", "s1-0123456789"}});
  auto c = parse_iscsi_url("iscsi://alice@h/iqn/1", &err, env);
  ASSERT_TRUE(c) << err;
  EXPECT_TRUE(c->chap_algorithms.empty());  // MD5 alone, as the login offers it
  c = parse_iscsi_url("iscsi://alice@h/iqn/1?chap_algs=SHA3-256:sha256:SHA1:MD5:SHA256&timeout=5", &err, env);
  ASSERT_TRUE(c) << err;
  using vcp::iscsi::ChapAlgorithm;
  EXPECT_EQ(c->chap_algorithms, (std::vector<ChapAlgorithm>{ChapAlgorithm::Sha3_256, ChapAlgorithm::Sha256,
                                                            ChapAlgorithm::Sha1, ChapAlgorithm::Md5}));
  expect_refused("iscsi://alice@h/iqn/1?chap_algs=SHA512", "bad chap_algs 'SHA512'", env);
  expect_refused("iscsi://alice@h/iqn/1?chap_algs=", "bad chap_algs", env);
  expect_refused("iscsi://alice@h/iqn/1?chap_algs=MD5:", "bad chap_algs", env);
  expect_refused("iscsi://h/iqn/1?chap_algs=SHA256", "needs a user@");
}

TEST(IscsiUrl, Portal) {
  std::string h, err;
  uint16_t p = 0;
  ASSERT_TRUE(parse_portal("127.0.0.1:3262,1", &h, &p, &err)) << err;
  EXPECT_EQ(h, "127.0.0.1");
  EXPECT_EQ(p, 3262);
  ASSERT_TRUE(parse_portal("[fe80::1]:3260,7", &h, &p, &err)) << err;
  EXPECT_EQ(h, "fe80::1");
  ASSERT_TRUE(parse_portal("target.example", &h, &p, &err)) << err;
  EXPECT_EQ(p, 3260);
  EXPECT_FALSE(parse_portal(":3260", &h, &p, &err));
  EXPECT_FALSE(parse_portal("h:abc", &h, &p, &err));
}

TEST(IscsiUrl, MorePortalsOfTheTarget) {
  std::string err;
  auto c = parse_iscsi_url("iscsi://10.0.0.1:3261/iqn.x:t/2?portal=10.0.1.1&header_digest=none,portal=[fd00::5]:3262",
                           &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(portal_count(*c), 3u);
  EXPECT_EQ(portal_at(*c, 0), (PortalAddress{"10.0.0.1", 3261}));
  EXPECT_EQ(portal_at(*c, 1), (PortalAddress{"10.0.1.1", 3260}));
  EXPECT_EQ(portal_at(*c, 2), (PortalAddress{"fd00::5", 3262}));
  EXPECT_EQ(portal_name(portal_at(*c, 2)), "[fd00::5]:3262");
  EXPECT_EQ(c->lun, 2u);
  EXPECT_EQ(c->first_portal, 0u);
  EXPECT_EQ(c->nop_timeout_ms, 0u);  // as timeout=
  c = parse_iscsi_url("iscsi://h/iqn/1?portal=g&nop_interval=2&nop_timeout=3", &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->nop_interval_ms, 2000u);
  EXPECT_EQ(c->nop_timeout_ms, 3000u);
  expect_refused("iscsi://h/iqn/1?nop_timeout=0", "bad nop_timeout '0'");
  // Without portal=: one.
  c = parse_iscsi_url("iscsi://h/iqn/1", &err, kNoEnv);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(portal_count(*c), 1u);

  // Refused, in words: the same portal twice (the URL's own too, its port by default), a
  // malformed one, an empty one, too many.
  expect_refused("iscsi://h/iqn/1?portal=h:3260", "portal h:3260 given twice");
  expect_refused("iscsi://h/iqn/1?portal=a:1&portal=a:1", "portal a:1 given twice");
  expect_refused("iscsi://h/iqn/1?portal=a:99999", "bad portal= 'a:99999': bad port");
  expect_refused("iscsi://h/iqn/1?portal=", "bad portal= '': missing host");
  expect_refused("iscsi://h/iqn/1?portal=fd00::1", "needs brackets");
  std::string many = "iscsi://h/iqn/1?";
  for (int i = 1; i < static_cast<int>(kMaxPortals); ++i) many += "portal=h:" + std::to_string(i) + "&";
  EXPECT_TRUE(parse_iscsi_url(many, &err, kNoEnv)) << err;
  expect_refused(many + "portal=h:999", "more than 16 portals");
}

TEST(IscsiUrl, RegistryRoutesIscsiAndReportsUsage) {
  std::string err;
  EXPECT_FALSE(make_backend("iscsi://h/iqn/notanumber", &err));
  EXPECT_NE(err.find("usage: iscsi://"), std::string::npos) << err;
}

TEST(ResolvePortal, NumericAddressesAreTakenAsTheyAre) {
  std::vector<SocketAddress> a;
  std::string err;
  ASSERT_TRUE(resolve_portal("127.0.0.1", 3260, &a, &err)) << err;
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].text, "127.0.0.1:3260");
  EXPECT_EQ(a[0].addr.ss_family, AF_INET);
  ASSERT_TRUE(resolve_portal("::1", 3261, &a, &err)) << err;
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].text, "[::1]:3261");
  EXPECT_EQ(a[0].len, sizeof(sockaddr_in6));
}

TEST(ResolvePortal, ANameGivesEachOfItsAddressesOnce) {
  // localhost is in every /etc/hosts; one entry per address, whatever the socket types.
  std::vector<SocketAddress> a;
  std::string err;
  ASSERT_TRUE(resolve_portal("localhost", 3260, &a, &err)) << err;
  ASSERT_FALSE(a.empty());
  EXPECT_LE(a.size(), kMaxAddresses);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a[i].text == "127.0.0.1:3260" || a[i].text == "[::1]:3260") << a[i].text;
    for (size_t j = 0; j < i; ++j) EXPECT_NE(a[i].text, a[j].text);
  }
}

TEST(Discovery, EveryAddressOfANameFailingNamesEach) {
  // Two ports nothing listens on, given as the two addresses of one name.
  const uint16_t a = testing::ScriptedTarget::closed_port(), b = testing::ScriptedTarget::closed_port();
  IscsiConfig cfg;
  cfg.host = "portal.test";
  cfg.resolver = testing::resolves_to({a, b});
  std::string err;
  EXPECT_FALSE(discover_targets(cfg, &err));
  EXPECT_EQ(err, "cannot connect to portal.test:3260: 127.0.0.1:" + std::to_string(a) +
                     ": Connection refused; 127.0.0.1:" + std::to_string(b) + ": Connection refused");
}

TEST(SendTargets, ParsesRepeatedKeys) {
  using namespace std::string_literals;
  const std::string text =
      "TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[::1]:3260,1\0"
      "TargetName=iqn.b\0TargetAlias=bee\0TargetName=iqn.c\0TargetAddress=h:1,2\0"s;
  std::vector<DiscoveredTarget> out;
  std::string err;
  ASSERT_TRUE(parse_send_targets({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, &out, &err)) << err;
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], (DiscoveredTarget{"iqn.a", {"10.0.0.1:3260,1", "[::1]:3260,1"}}));
  EXPECT_EQ(out[1], (DiscoveredTarget{"iqn.b", {}}));
  EXPECT_EQ(out[2], (DiscoveredTarget{"iqn.c", {"h:1,2"}}));
}

TEST(SendTargets, Malformed) {
  using namespace std::string_literals;
  std::vector<DiscoveredTarget> out;
  std::string err;
  auto parse = [&](const std::string& s) {
    return parse_send_targets({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, &out, &err);
  };
  EXPECT_FALSE(parse("TargetAddress=h:1,1\0TargetName=iqn.a\0"s));
  EXPECT_FALSE(parse("TargetName=\0"s));
  EXPECT_FALSE(parse("TargetName=iqn.a"s));  // not terminated
  EXPECT_TRUE(parse(""s));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace vcp::backends::iscsi

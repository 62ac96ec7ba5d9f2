#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "target/session_registry.hpp"
#include "target/settings.hpp"

namespace vcp::target {
namespace {

std::string write_temp(const std::string& text) {
  char path[] = "/tmp/vcp-target-test-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  return path;
}

// Loads `text` as a TOML file into `s`; true if load_toml() took it (else *err says why).
bool load_text(const std::string& text, TargetSettings& s, std::string* err) {
  const std::string p = write_temp(text);
  const bool ok = load_toml(p, s, err);
  std::remove(p.c_str());
  return ok;
}

// A file load_toml() refuses with an error that begins with `why`.
void expect_refused(const std::string& text, const std::string& why) {
  TargetSettings s;
  std::string err;
  EXPECT_FALSE(load_text(text + "\n", s, &err)) << text;
  EXPECT_EQ(err.rfind(why, 0), 0u) << err;
}

TEST(TargetSettings, LunAndPortalArguments) {
  std::string err;
  auto l = parse_lun_arg("3=file:path=/x,direct=on", &err);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->number, 3u);
  EXPECT_EQ(l->backend, "file:path=/x,direct=on");
  EXPECT_FALSE(parse_lun_arg("x=ram:size=1M", &err));
  EXPECT_FALSE(parse_lun_arg("20000=ram:size=1M", &err));
  EXPECT_FALSE(parse_lun_arg("1=", &err));
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(parse_portal("127.0.0.1:3261", &host, &port, &err));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 3261);
  ASSERT_TRUE(parse_portal("[::1]:0", &host, &port, &err));
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(parse_portal("localhost", &host, &port, &err));
  EXPECT_FALSE(parse_portal("1.2.3.4:99999", &host, &port, &err));
}

TEST(TargetSettings, SeveralPortals) {
  // The command line's --portal, given again: the first is host:port, the others follow.
  TargetSettings s;
  std::string err;
  ASSERT_TRUE(s.set_portals({"127.0.0.1:3261", "[::1]:3262", "0.0.0.0:3263"}, &err)) << err;
  EXPECT_EQ(s.host, "127.0.0.1");
  EXPECT_EQ(s.port, 3261);
  EXPECT_EQ(s.portals(), (std::vector<Portal>{{"127.0.0.1", 3261}, {"::1", 3262}, {"0.0.0.0", 3263}}));
  EXPECT_FALSE(s.set_portals({"127.0.0.1:3261", "nowhere"}, &err));
  EXPECT_EQ(s.portals().size(), 3u) << "a refused list changes nothing";
  // TOML: a string, or a list of them.
  TargetSettings t;
  ASSERT_TRUE(load_text("portal = [\"10.0.0.1:3260\", \"10.0.1.1:3260\"]\n", t, &err)) << err;
  EXPECT_EQ(t.portals(), (std::vector<Portal>{{"10.0.0.1", 3260}, {"10.0.1.1", 3260}}));
  TargetSettings u;
  ASSERT_TRUE(load_text("portal = \"10.0.0.2:3261\"\n", u, &err)) << err;
  EXPECT_EQ(u.portals(), (std::vector<Portal>{{"10.0.0.2", 3261}}));
  expect_refused("portal = [\"10.0.0.1:3260\", 7]", "portal: expected a string or a list of strings (line 1)");
  expect_refused("portal = []", "portal: no portal");
  expect_refused("portal = [\"10.0.0.1\"]", "portal: expected HOST:PORT");
  expect_refused("portal = 3260", "portal: expected a string or a list of strings");
  // One address and port twice is refused; port 0 (the kernel picks) may repeat.
  TargetSettings v;
  v.iqn = "iqn.2024-01.org.vcp:portals";
  v.luns.push_back({0, "ram:size=1M"});
  ASSERT_TRUE(v.set_portals({"127.0.0.1:3260", "127.0.0.1:3260"}, &err));
  EXPECT_FALSE(validate(v, &err));
  EXPECT_EQ(err, "portal 127.0.0.1:3260 given twice");
  ASSERT_TRUE(v.set_portals({"[::1]:3260", "[::1]:3260"}, &err));
  EXPECT_FALSE(validate(v, &err));
  EXPECT_EQ(err, "portal [::1]:3260 given twice");  // as it was given: IPv6 in brackets
  ASSERT_TRUE(v.set_portals({"127.0.0.1:0", "127.0.0.1:0"}, &err));
  EXPECT_TRUE(validate(v, &err)) << err;
}

TEST(TargetSettings, ChapFile) {
  std::string err;
  auto p = write_temp("# comment\n\n user  a-long-secret-1 \n");
  auto c = read_chap_file(p, &err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->name, "user");
  EXPECT_EQ(c->secret, "a-long-secret-1");
  std::remove(p.c_str());
  p = write_temp("user short\n");
  EXPECT_FALSE(read_chap_file(p, &err));
  std::remove(p.c_str());
  EXPECT_FALSE(read_chap_file("/nonexistent/chap", &err));
  EXPECT_NE(err.find("/nonexistent/chap"), std::string::npos) << err;
  // A path to something endless (or huge) is refused, not read into memory.
  EXPECT_FALSE(read_chap_file("/dev/zero", &err));
  EXPECT_NE(err.find("longer than"), std::string::npos) << err;
}

TEST(TargetSettings, ChapAlgorithms) {
  // A list, or one string; every target and discovery take it (AccessSettings); a bad name is
  // an error that says what is allowed.
  for (const char* line : {"chap_algorithms = [\"SHA256\", \"sha3-256\", \"SHA256\"]",
                           "chap_algorithms = \"SHA256:SHA3-256\""}) {
    auto p = write_temp(std::string(line) + "\n");
    TargetSettings s;
    std::string err;
    ASSERT_TRUE(load_toml(p, s, &err)) << line << ": " << err;
    std::remove(p.c_str());
    using iscsi::ChapAlgorithm;
    EXPECT_EQ(s.chap_algorithms, (std::vector<ChapAlgorithm>{ChapAlgorithm::Sha256, ChapAlgorithm::Sha3_256})) << line;
    EXPECT_EQ(AccessSettings::of(s).chap_algorithms, s.chap_algorithms);
  }
  for (const char* line : {"chap_algorithms = [\"SHA512\"]", "chap_algorithms = []", "chap_algorithms = \"\""}) {
    auto p = write_temp(std::string(line) + "\n");
    TargetSettings s;
    std::string err;
    EXPECT_FALSE(load_toml(p, s, &err)) << line;
    EXPECT_NE(err.find("chap_algorithms: a list of"), std::string::npos) << line << ": " << err;
    std::remove(p.c_str());
  }
}

TEST(TargetSettings, StateDir) {
  auto p = write_temp("state_dir = \"/var/lib/vcp/target\"\n");
  TargetSettings s;
  std::string err;
  ASSERT_TRUE(load_toml(p, s, &err)) << err;
  std::remove(p.c_str());
  EXPECT_EQ(s.state_dir, "/var/lib/vcp/target");
  for (const char* line : {"state_dir = \"\""}) {
    auto q = write_temp(std::string(line) + "\n");
    TargetSettings t;
    EXPECT_FALSE(load_toml(q, t, &err)) << line;
    EXPECT_NE(err.find("state_dir: a directory's path"), std::string::npos) << line << ": " << err;
    std::remove(q.c_str());
  }
}

TEST(TargetSettings, UnknownKeysAndWrongTypesAreRefused) {
  // A key mistyped, or a value of the wrong type, would otherwise be a setting silently not
  // taken (chap_algorithm: MD5 still accepted; [limit]: the limits not applied).
  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"chap_algorithm = [\"SHA256\"]", "unknown key 'chap_algorithm' (line 1): did you mean 'chap_algorithms'?"},
           {"xyzzy = 1", "unknown key 'xyzzy' (line 1)"},
           {"iqn = 5", "iqn: expected a string (line 1)"},
           {"[limit]\nmax_tasks = 5", "unknown key 'limit' (line 1): did you mean 'limits'?"},
           {"[limits]\nmax_taks = 5", "[limits]: unknown key 'max_taks' (line 2): did you mean 'max_tasks'?"},
           {"[limits]\ninitial_r2t = \"no\"", "[limits] initial_r2t: expected true or false (line 2)"},
           {"[limits]\nmax_tasks = \"64\"", "[limits] max_tasks: expected an integer (line 2)"},
           {"[[lun]]\nnumber = 0\nbakend = \"ram:size=1M\"", "[[lun]] 1: unknown key 'bakend' (line 3): did you mean 'backend'?"},
           {"[[lun]]\nnumber = \"0\"", "[[lun]] 1 number: expected an integer (line 2)"},
           {"lun = 1", "lun: expected a list of tables ([[...]]) (line 1)"},
           {"[chap]\nname = \"a\"\nsecret = \"b\"\nsalt = 1", "[chap]: unknown key 'salt' (line 4)"},
           {"[[target]]\niqn = \"iqn.2024-01.x:a\"\n[[target]]\ncpus = \"1\"", "[[target]] 2: unknown key 'cpus' (line 4)"},
           {"[[target]]\n[[target.lun]]\nnumber = 1\nbackend = 2", "[[target]] 1 [[lun]] 1 backend: expected a string (line 4)"},
           {"[[target]]\n[target.mutual_chap]\nname = 1", "[[target]] 1 [mutual_chap] name: expected a string (line 3)"},
       })
    expect_refused(text, why);
}

TEST(TargetSettings, Toml) {
  auto p = write_temp(R"(
iqn = "iqn.2024-01.org.vcp:toml"
portal = "127.0.0.1:3333"
cpus = "0"
[[lun]]
number = 0
backend = "ram:size=8M"
[[lun]]
number = 5
backend = "null:size=1G"
[chap]
name = "user"
secret = "initiator-secret"
[mutual_chap]
name = "tgt"
secret = "target-secret-1"
[discovery_chap]
name = "seeker"
secret = "discovery-secret"
[discovery_mutual_chap]
name = "portal"
secret = "portal-secret-1"
[limits]
max_outstanding_r2t = 4
initial_r2t = true
header_digest = "require"
cmd_window = 64
max_tasks = 4
direct_rx_min = 65536
connection_buffer_bytes = 8388608
buffer_bytes = 8589934592
max_connections = 16
sendfile = "on"
sendfile_min = 131072
)");
  TargetSettings s;
  std::string err;
  ASSERT_TRUE(load_toml(p, s, &err)) << err;
  std::remove(p.c_str());
  EXPECT_EQ(s.iqn, "iqn.2024-01.org.vcp:toml");
  EXPECT_EQ(s.port, 3333);
  ASSERT_EQ(s.luns.size(), 2u);
  EXPECT_EQ(s.luns[1].number, 5u);
  EXPECT_EQ(s.chap->name, "user");
  EXPECT_EQ(s.mutual_chap->secret, "target-secret-1");
  EXPECT_EQ(s.discovery_chap->name, "seeker");
  ASSERT_TRUE(s.discovery_mutual_chap);
  EXPECT_EQ(s.discovery_mutual_chap->name, "portal");
  EXPECT_EQ(AccessSettings::of(s).discovery_mutual_chap->secret, "portal-secret-1");
  EXPECT_EQ(s.limits.max_outstanding_r2t, 4u);
  EXPECT_TRUE(s.limits.initial_r2t);
  EXPECT_EQ(s.limits.header_digest, iscsi::DigestPolicy::Require);
  EXPECT_EQ(s.cmd_window, 64u);
  EXPECT_EQ(s.max_tasks, 4u);
  EXPECT_EQ(s.direct_rx_min, 65536u);
  EXPECT_EQ(s.connection_buffer_bytes, 8u << 20);
  EXPECT_EQ(s.buffer_bytes, 8ull << 30);  // beyond 32 bits
  EXPECT_EQ(s.max_connections, 16u);
  EXPECT_EQ(s.sendfile, TargetSettings::Sendfile::On);
  EXPECT_EQ(s.sendfile_min, 131072u);
  EXPECT_EQ(TargetSettings().sendfile, TargetSettings::Sendfile::Auto);
  EXPECT_EQ(s.cpus, std::vector<int>{0});
  EXPECT_TRUE(validate(s, &err)) << err;

  s.luns.push_back(s.luns[0]);
  EXPECT_FALSE(validate(s, &err));  // LUN 0 twice

  for (const char* text : {"[limits]\nbuffer_bytes = -1", "[limits]\nmax_connections = 4294967296"})
    expect_refused(text, "[limits]: a value is out of range");
  for (const char* text : {"[limits]\nsendfile = \"yes\"", "[limits]\nsendfile = \"On\""})
    expect_refused(text, "[limits] sendfile: auto, on or off");
  TargetSettings::Sendfile v{};
  for (const char* word : {"auto", "on", "off"}) {
    ASSERT_TRUE(parse_sendfile(word, &v));
    EXPECT_STREQ(to_string(v), word);
  }

  auto bad = write_temp("iqn = \n");
  EXPECT_FALSE(load_toml(bad, s, &err));
  EXPECT_NE(err.find("(line 1)"), std::string::npos) << err;
  std::remove(bad.c_str());
  EXPECT_FALSE(load_toml("/dev/zero", s, &err));
  EXPECT_NE(err.find("longer than"), std::string::npos) << err;
  EXPECT_FALSE(load_toml("/nonexistent/vcp.toml", s, &err));
  EXPECT_NE(err.find("No such file"), std::string::npos) << err;
}

TEST(TargetSettings, TomlMoreTargets) {
  TargetSettings s;
  std::string err;
  ASSERT_TRUE(load_text(R"(iqn = "iqn.2024-01.org.vcp:first"
[[lun]]
number = 0
backend = "ram:size=8M"
[[target]]
iqn = "iqn.2024-01.org.vcp:second"
alias = "two"
allowed_initiators = ["iqn.2024-01.org.vcp:b"]
[[target.lun]]
number = 0
backend = "ram:size=1M"
[[target.lun]]
number = 7
backend = "null:size=1G"
[target.chap]
name = "user"
secret = "initiator-secret"
[[target]]
iqn = "iqn.2024-01.org.vcp:third"
[[target.lun]]
number = 1
backend = "ram:size=2M"
)", s, &err)) << err;
  EXPECT_EQ(s.iqn, "iqn.2024-01.org.vcp:first");
  ASSERT_EQ(s.more_targets.size(), 2u);
  const TargetSpec& t = s.more_targets[0];
  EXPECT_EQ(t.iqn, "iqn.2024-01.org.vcp:second");
  EXPECT_EQ(t.alias, "two");
  EXPECT_EQ(t.luns, (std::vector<LunSpec>{{0, "ram:size=1M"}, {7, "null:size=1G"}}));
  EXPECT_EQ(t.acl.names, std::vector<std::string>{"iqn.2024-01.org.vcp:b"});
  ASSERT_TRUE(t.chap);
  EXPECT_EQ(t.chap->name, "user");
  EXPECT_FALSE(s.chap);  // the first target's stays as it was
  EXPECT_TRUE(s.acl.names.empty());
  EXPECT_EQ(s.more_targets[1].luns, (std::vector<LunSpec>{{1, "ram:size=2M"}}));
  EXPECT_TRUE(validate(s, &err)) << err;
  const auto all = s.all_targets();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].iqn, s.iqn);
  const AccessSettings a = AccessSettings::of(s);
  ASSERT_EQ(a.targets.size(), 3u);
  EXPECT_TRUE(a.targets[1].chap);

  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"target = 1", "target: expected a list of tables ([[...]]) (line 1)"},
           {"[[target]]\n[[target.lun]]\nnumber = -1\nbackend = \"ram:size=1M\"", "[[target]] 1: [[lun]] needs number"},
           {"[[target]]\n[[target]]\nallowed_addresses = [\"10.0.0.0/99\"]",
            "[[target]] 2: allowed_addresses: '10.0.0.0/99': the prefix length is at most 32"},
           {"[[target]]\n[target.chap]\nname = \"x\"", "[[target]] 1: [chap] needs name and secret"}})
    expect_refused(text, why);
}

TEST(TargetSettings, TomlAccessLists) {
  auto p = write_temp(R"(iqn = "iqn.2024-01.org.vcp:toml"
allowed_initiators = ["IQN.1993-08.org.debian:01:ABC", "iqn.2024-01.org.vcp:b", "iqn.2024-01.org.vcp:B"]
allowed_addresses = ["10.0.0.0/8", "[fd00::]/8", "127.0.0.1"]
)");
  TargetSettings s;
  std::string err;
  ASSERT_TRUE(load_toml(p, s, &err)) << err;
  std::remove(p.c_str());
  EXPECT_EQ(s.acl.names, (std::vector<std::string>{"iqn.1993-08.org.debian:01:abc", "iqn.2024-01.org.vcp:b"}));
  ASSERT_EQ(s.acl.addresses.size(), 3u);
  EXPECT_EQ(s.acl.addresses[1].prefix, 8);

  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"allowed_initiators = [\"host\"]", "allowed_initiators: 'host' is not an iSCSI name"},
           {"allowed_initiators = \"iqn.2024-01.x:y\"", "allowed_initiators: expected a list of strings"},
           {"allowed_initiators = [1]", "allowed_initiators: expected a list of strings"},
           {"allowed_addresses = [\"10.0.0.0/99\"]", "allowed_addresses: '10.0.0.0/99': the prefix length is at most 32"},
           {"allowed_addresses = [\"example.org\"]", "allowed_addresses: 'example.org' is not an IPv4"}})
    expect_refused(text, why);
}

TEST(TargetSettings, ValidateRefusesIncompleteSettings) {
  TargetSettings s;
  std::string err;
  EXPECT_FALSE(validate(s, &err));
  s.iqn = "my disk";
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("target name 'my disk' is not an iSCSI name"), std::string::npos) << err;
  s.iqn = "iqn.x";
  EXPECT_FALSE(validate(s, &err));
  s.luns.push_back({0, "ram:size=1M"});
  EXPECT_TRUE(validate(s, &err));
  s.max_tasks = 0;
  EXPECT_FALSE(validate(s, &err));  // no task could ever run
  EXPECT_NE(err.find("max_tasks"), std::string::npos);
  s.max_tasks = 4;
  EXPECT_TRUE(validate(s, &err));
  s.connection_buffer_bytes = 65536;
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("connection_buffer_bytes"), std::string::npos);
  s.connection_buffer_bytes = 1u << 20;
  EXPECT_TRUE(validate(s, &err));
  // The target's buffer room holds at least one connection's, and 1 MiB per I/O thread.
  s.buffer_bytes = 512u << 10;
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("buffer_bytes must be at least connection_buffer_bytes"), std::string::npos) << err;
  s.buffer_bytes = 2u << 20;
  s.cpus = {0, 1, 2};
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("1048576 per CPU"), std::string::npos) << err;
  s.cpus.clear();
  EXPECT_TRUE(validate(s, &err)) << err;
  s.max_connections = 0;
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("max_connections must be 1..65536"), std::string::npos) << err;
  s.max_connections = 1;
  EXPECT_TRUE(validate(s, &err)) << err;
  s.discovery_chap = iscsi::ChapCredentials{"d", "short"};
  EXPECT_FALSE(validate(s, &err));  // a secret under 12 bytes
  s.discovery_chap = iscsi::ChapCredentials{"d", "target-secret-1"};
  EXPECT_TRUE(validate(s, &err)) << err;
  s.mutual_chap = iscsi::ChapCredentials{"t", "target-secret-1"};
  s.chap = iscsi::ChapCredentials{"u", "initiator-secret"};
  EXPECT_FALSE(validate(s, &err));  // discovery and mutual with one secret
  EXPECT_NE(err.find("different secret"), std::string::npos) << err;
  // Discovery's own mutual identity, when given, is the one that must differ (and the first
  // target's is no longer used there).
  s.discovery_mutual_chap = iscsi::ChapCredentials{"p", "target-secret-1"};
  s.mutual_chap = iscsi::ChapCredentials{"t", "target-secret-2"};
  EXPECT_FALSE(validate(s, &err));
  EXPECT_NE(err.find("different secret"), std::string::npos) << err;
  s.discovery_mutual_chap->secret = "portal-secret-9";
  EXPECT_TRUE(validate(s, &err)) << err;
  EXPECT_EQ(s.discovery_identity()->name, "p");
  s.discovery_mutual_chap->secret = "short";
  EXPECT_FALSE(validate(s, &err));
  s.discovery_mutual_chap->secret = "portal-secret-9";
  s.discovery_chap.reset();
  EXPECT_FALSE(validate(s, &err));  // discovery mutual without discovery CHAP
  EXPECT_NE(err.find("needs discovery CHAP"), std::string::npos) << err;
  s.discovery_mutual_chap.reset();
  EXPECT_EQ(s.discovery_identity()->name, "t");  // the first target's
  s.mutual_chap = iscsi::ChapCredentials{"t", "target-secret-1"};
  s.chap.reset();
  EXPECT_FALSE(validate(s, &err));  // mutual without one-way
  s.chap = iscsi::ChapCredentials{"u", "target-secret-1"};
  EXPECT_FALSE(validate(s, &err));  // same secret both ways
}

TEST(TargetSettings, ValidateKeepsLimitsInTheRfcRanges) {
  TargetSettings base;
  base.iqn = "iqn.x";
  base.luns.push_back({0, "ram:size=1M"});
  std::string err;
  ASSERT_TRUE(validate(base, &err)) << err;  // the defaults are valid
  struct Case {
    const char* what;
    void (*set)(TargetSettings&);
  };
  const Case bad[] = {
      {"max_recv_data_segment_length", [](TargetSettings& s) { s.limits.max_recv_data_segment_length = 511; }},
      {"max_recv_data_segment_length", [](TargetSettings& s) { s.limits.max_recv_data_segment_length = 1u << 24; }},
      {"max_burst_length", [](TargetSettings& s) { s.limits.max_burst_length = 0; }},
      {"first_burst_length", [](TargetSettings& s) { s.limits.first_burst_length = 100; }},
      {"first_burst_length must not exceed", [](TargetSettings& s) {
         s.limits.max_burst_length = 65536;
         s.limits.first_burst_length = 65536 + 512;
       }},
      {"max_outstanding_r2t", [](TargetSettings& s) { s.limits.max_outstanding_r2t = 0; }},  // writes would hang
      {"max_outstanding_r2t", [](TargetSettings& s) { s.limits.max_outstanding_r2t = 65536; }},
      {"max_transfer_bytes", [](TargetSettings& s) { s.max_transfer_bytes = 0; }},
      {"max_data_in_segment", [](TargetSettings& s) { s.max_data_in_segment = 511; }},
      {"login_timeout_ms", [](TargetSettings& s) { s.login_timeout_ms = 0; }},
      {"nop_interval_ms", [](TargetSettings& s) { s.nop_interval_ms = 999; }},
      {"nop_timeout_ms", [](TargetSettings& s) { s.nop_timeout_ms = 0; }},
  };
  for (const Case& c : bad) {
    TargetSettings s = base;
    c.set(s);
    err.clear();
    EXPECT_FALSE(validate(s, &err)) << c.what;
    EXPECT_NE(err.find(c.what), std::string::npos) << c.what << ": " << err;
  }
  TargetSettings edge = base;  // the ends of the ranges are allowed
  edge.limits.max_recv_data_segment_length = 512;
  edge.limits.max_burst_length = 16777215;
  edge.limits.first_burst_length = 16777215;
  edge.limits.max_outstanding_r2t = 65535;
  edge.login_timeout_ms = edge.nop_interval_ms = edge.nop_timeout_ms = 1000;
  EXPECT_TRUE(validate(edge, &err)) << err;
}

TEST(SessionRegistry, TsihsAreUniqueAndNonZero) {
  SessionRegistry r;
  uint16_t a = r.reserve_tsih(), b = r.reserve_tsih();
  EXPECT_NE(a, 0);
  EXPECT_NE(b, 0);
  EXPECT_NE(a, b);
  r.release_tsih(a);
  EXPECT_NE(r.next_nexus_id(), r.next_nexus_id());
}

TEST(SessionRegistry, Reinstatement) {
  SessionRegistry r;
  int woke_old = 0, woke_new = 0;
  std::vector<std::shared_ptr<SessionRecord>> replaced;
  auto s1 = r.add("iqn.i", {1, 2, 3, 4, 5, 6}, "iqn.t", 1, 1, [&] { ++woke_old; }, &replaced);
  EXPECT_TRUE(replaced.empty());
  auto s2 = r.add("iqn.i", {1, 2, 3, 4, 5, 7}, "iqn.t", 2, 2, [&] { ++woke_old; }, &replaced);
  EXPECT_TRUE(replaced.empty());
  auto s3 = r.add("iqn.i", {1, 2, 3, 4, 5, 6}, "iqn.t", 3, 3, [&] { ++woke_new; }, &replaced);
  ASSERT_EQ(replaced.size(), 1u);
  EXPECT_EQ(replaced[0], s1);
  EXPECT_EQ(woke_old, 1) << "the old session's thread is told";
  EXPECT_TRUE(s1->close_requested.load());
  EXPECT_FALSE(s2->close_requested.load());
  // The old one stays until its connection is gone: a third login of the nexus waits for it too.
  EXPECT_EQ(r.size(), 3u);
  auto s4 = r.add("iqn.i", {1, 2, 3, 4, 5, 6}, "iqn.t", 4, 4, [&] { ++woke_new; }, &replaced);
  ASSERT_EQ(replaced.size(), 2u);
  EXPECT_EQ(replaced[0], s1);
  EXPECT_EQ(replaced[1], s3);
  EXPECT_TRUE(s3->close_requested.load());
  EXPECT_FALSE(s1->ended.load());
  r.end(s1.get());  // its tasks have ended: both logins that wait for it are woken
  EXPECT_TRUE(s1->ended.load());
  EXPECT_EQ(woke_new, 3) << "s3's thread woken by s4's login, then s3's and s4's by s1's end";
  EXPECT_EQ(r.size(), 3u);
  r.end(s3.get());
  EXPECT_EQ(woke_new, 4);
  EXPECT_EQ(r.size(), 2u);
  r.end(s4.get());
  r.end(s2.get());
  EXPECT_EQ(r.size(), 0u);
}

}  // namespace
}  // namespace vcp::target

// The target connection state machine in Full Feature Phase: login, discovery, reads and writes
// (immediate data, unsolicited Data-Out, R2T with MaxOutstandingR2T), NOP, task management,
// logout, the CmdSN window, reinstatement and timers.
#include <arpa/inet.h>

#include <cctype>
#include <cstring>
#include <sstream>

#include "../log_capture.hpp"
#include "harness.hpp"
#include "iscsi/sendtargets.hpp"

namespace vcp::target::test {
namespace {

using namespace vcp::iscsi;

TEST(TargetLogin, NormalSessionWithoutAuthentication) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  EXPECT_TRUE(ini.conn().full_feature());
  EXPECT_FALSE(ini.conn().discovery());
  EXPECT_NE(ini.last_login.tsih, 0);
  EXPECT_EQ(f.sessions.size(), 1u);
  EXPECT_EQ(ini.conn().params().max_outstanding_r2t, 2u);
  EXPECT_EQ(ini.conn().params().max_send_data_segment_length, 8192u);
}

TEST(TargetLogin, UnknownTargetIs0203AndCloses) {
  TargetFixture f;
  SessionOptions o;
  o.target = "iqn.2024-01.org.vcp:nope";
  Initiator ini(f, o);
  EXPECT_EQ(ini.login(), LoginState::Failed);
  EXPECT_EQ(ini.last_login.status_class, 2);
  EXPECT_EQ(ini.last_login.status_detail, 3);
  EXPECT_TRUE(ini.conn().closing());
  EXPECT_EQ(f.sessions.size(), 0u);
}

TEST(TargetLogin, ChapRequiredAndChecked) {
  TargetSettings s = TargetFixture::default_settings();
  s.chap = ChapCredentials{"user", "initiator-secret"};
  TargetFixture f(s);
  {
    Initiator none(f);  // no credentials: refused
    EXPECT_EQ(none.login(), LoginState::Failed);
    EXPECT_EQ(none.last_login.status_detail, 1);  // 0x0201
  }
  {
    SessionOptions o;
    o.chap = ChapCredentials{"user", "wrong-secret-123"};
    Initiator wrong(f, o);
    EXPECT_EQ(wrong.login(), LoginState::Failed);
    EXPECT_TRUE(wrong.conn().closing());
  }
  SessionOptions o;
  o.chap = s.chap;
  Initiator ok(f, o);
  EXPECT_EQ(ok.login(), LoginState::FullFeature);
}

TEST(TargetLogin, MutualChapWithDigests) {
  TargetSettings s = TargetFixture::default_settings();
  s.chap = ChapCredentials{"user", "initiator-secret"};
  s.mutual_chap = ChapCredentials{"target", "target-secret-1"};
  TargetFixture f(s);
  SessionOptions o;
  o.chap = s.chap;
  o.target_chap = s.mutual_chap;
  o.limits.header_digest = DigestPolicy::Require;
  o.limits.data_digest = DigestPolicy::Require;
  Initiator ini(f, o);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  EXPECT_TRUE(ini.digests.header);
  EXPECT_TRUE(ini.digests.data);
  // Commands flow with both digests on.
  ini.tur();
  auto data = pattern(4096, 3);
  auto w = outcome_of(ini.run(cdb_rw16(0x8a, 8, 8), false, true, 4096, data));
  EXPECT_EQ(w.status, 0);
  auto r = outcome_of(ini.run(cdb_rw16(0x88, 8, 8), true, false, 4096));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.data, data);
}

TEST(TargetLogin, MutualChapWrongTargetSecretFailsAtInitiator) {
  TargetSettings s = TargetFixture::default_settings();
  s.chap = ChapCredentials{"user", "initiator-secret"};
  s.mutual_chap = ChapCredentials{"target", "target-secret-1"};
  TargetFixture f(s);
  SessionOptions o;
  o.chap = s.chap;
  o.target_chap = ChapCredentials{"target", "not-the-secret"};
  Initiator ini(f, o);
  EXPECT_EQ(ini.login(), LoginState::Failed);
}

// Sends "SendTargets=All" in one Text Request; returns what came back.
std::vector<Received> send_targets_all(Initiator& ini) {
  TextRequestPdu t;
  t.itt = ini.next_itt();
  t.cmd_sn = ini.next_cmd_sn();
  const char kv[] = "SendTargets=All";
  t.data_segment_length = sizeof(kv);
  ini.send(t, {reinterpret_cast<const uint8_t*>(kv), sizeof(kv)});
  return ini.take();
}

// The keys of the one Text Response to SendTargets=All.
TextKeys send_targets_keys(Initiator& ini) {
  TextKeys keys;
  auto got = send_targets_all(ini);
  EXPECT_EQ(got.size(), 1u);
  if (got.size() == 1) {
    EXPECT_EQ(parse_text(got[0].data, keys), TextError::Ok);
  }
  return keys;
}

TEST(TargetDiscovery, SendTargetsAll) {
  TargetFixture f;
  SessionOptions o;
  o.type = SessionType::Discovery;
  Initiator ini(f, o);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  EXPECT_TRUE(ini.conn().discovery());
  EXPECT_EQ(f.sessions.size(), 0u);  // discovery sessions hold no I_T nexus
  auto got = send_targets_all(ini);
  ASSERT_EQ(got.size(), 1u);
  const auto* r = got[0].as<TextResponsePdu>();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->final);
  EXPECT_EQ(r->ttt, kReservedTag);
  TextKeys keys;
  ASSERT_EQ(parse_text(got[0].data, keys), TextError::Ok);
  ASSERT_TRUE(keys.find("TargetName"));
  EXPECT_EQ(*keys.find("TargetName"), kIqn);
  EXPECT_EQ(*keys.find("TargetAddress"), "127.0.0.1:3260,1");

  // SCSI commands have no place in a discovery session.
  ini.command(cdb_inquiry(36), true, false, 36);
  got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<RejectPdu>());
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::ProtocolError);
}

// With discovery CHAP configured, a discovery session must authenticate (one-way, or mutual with
// the target's own credentials); Normal sessions are not affected by it.
TEST(TargetDiscovery, ChapWhenConfigured) {
  TargetSettings s = TargetFixture::default_settings();
  s.discovery_chap = ChapCredentials{"seeker", "discovery-secret"};
  s.mutual_chap = ChapCredentials{"target", "target-secret-1"};
  TargetFixture f(s);
  SessionOptions o{.type = SessionType::Discovery};
  for (auto creds : {std::optional<ChapCredentials>{}, std::optional<ChapCredentials>{{"seeker", "wrong-secret-123"}},
                     std::optional<ChapCredentials>{{"other", "discovery-secret"}}}) {
    o.chap = creds;
    Initiator ini(f, o);
    EXPECT_EQ(ini.login(), LoginState::Failed);
    EXPECT_EQ(ini.last_login.status_class, 2);
    EXPECT_EQ(ini.last_login.status_detail, 1);  // authentication failure
  }
  o.chap = s.discovery_chap;
  for (bool mutual : {false, true}) {
    if (mutual) o.target_chap = s.mutual_chap;
    Initiator ini(f, o);
    ASSERT_EQ(ini.login(), LoginState::FullFeature) << mutual;
    TextKeys keys = send_targets_keys(ini);
    EXPECT_EQ(*keys.find("TargetName"), kIqn);
  }
  Initiator normal(f);  // no CHAP for the target itself
  EXPECT_EQ(normal.login(), LoginState::FullFeature);
}

// Mutual CHAP in discovery sessions with an identity of its own (discovery_mutual_chap): the
// initiator that expects it logs in; one expecting the first target's identity does not.
TEST(TargetDiscovery, MutualChapWithItsOwnIdentity) {
  TargetSettings s = TargetFixture::default_settings();
  s.chap = ChapCredentials{"user", "initiator-secret"};
  s.mutual_chap = ChapCredentials{"target", "target-secret-1"};
  s.discovery_chap = ChapCredentials{"seeker", "discovery-secret"};
  s.discovery_mutual_chap = ChapCredentials{"portal", "portal-secret-1"};
  std::string err;
  ASSERT_TRUE(validate(s, &err)) << err;
  TargetFixture f(s);
  SessionOptions o{.type = SessionType::Discovery};
  o.chap = s.discovery_chap;
  o.target_chap = s.mutual_chap;
  Initiator wrong(f, o);
  EXPECT_EQ(wrong.login(), LoginState::Failed);  // the initiator rejects the target's answer
  o.target_chap = s.discovery_mutual_chap;
  Initiator right(f, o);
  ASSERT_EQ(right.login(), LoginState::FullFeature);
  EXPECT_EQ(*send_targets_keys(right).find("TargetName"), kIqn);
  // A Normal session still authenticates the target with the target's own identity.
  SessionOptions n;
  n.chap = s.chap;
  n.target_chap = s.mutual_chap;
  Initiator normal(f, n);
  EXPECT_EQ(normal.login(), LoginState::FullFeature);
}

// A target listening on a wildcard address names, per connection, the address the initiator
// reached (the server sets it from the socket); the configured one would be 0.0.0.0.
TEST(TargetDiscovery, SendTargetsNamesTheConnectionsAddress) {
  TargetSettings s = TargetFixture::default_settings();
  s.host = "0.0.0.0";  // the one portal: SendTargets names no other
  TargetFixture f(s);
  SessionOptions o;
  o.type = SessionType::Discovery;
  Initiator ini(f, o);
  ini.conn().set_target_address("[fd00::7]:3261,1");
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  TextKeys keys = send_targets_keys(ini);
  EXPECT_EQ(*keys.find("TargetName"), kIqn);
  EXPECT_EQ(*keys.find("TargetAddress"), "[fd00::7]:3261,1");
  EXPECT_EQ(keys.pairs().size(), 2u);  // that address only, not the configured one too
}

// Several portals: SendTargets names each (one portal group, a multipath initiator's paths),
// and a connection through a wildcard one adds the address it reached, once.
TEST(TargetDiscovery, SendTargetsNamesEveryPortal) {
  TargetSettings s = TargetFixture::default_settings();
  s.more_portals = {{"fd00::2", 3260}, {"::", 3261}};
  TargetFixture f(s);
  const std::vector<std::string> portals = {"127.0.0.1:3260,1", "[fd00::2]:3260,1"};
  SessionOptions o;
  o.type = SessionType::Discovery;
  for (const char* reached : {"", "127.0.0.1:3260,1", "10.1.2.3:3261,1"}) {
    Initiator ini(f, o);
    if (*reached) ini.conn().set_target_address(reached);
    ASSERT_EQ(ini.login(), LoginState::FullFeature);
    // Raw key=value strings: TargetAddress repeats, which a negotiation's parser refuses.
    auto got = send_targets_all(ini);
    ASSERT_EQ(got.size(), 1u);
    std::vector<std::string> addresses;
    const std::string text(got[0].data.begin(), got[0].data.end());
    for (size_t at = 0; at < text.size();) {
      size_t end = text.find('\0', at);
      if (end == std::string::npos) end = text.size();
      const std::string kv = text.substr(at, end - at);
      if (kv.rfind("TargetAddress=", 0) == 0) addresses.push_back(kv.substr(14));
      at = end + 1;
    }
    std::vector<std::string> want = portals;
    if (std::string(reached) == "10.1.2.3:3261,1") want.push_back(reached);
    EXPECT_EQ(addresses, want) << reached;
  }
}

// An access list keeps initiators out by name and by address: their logins fail with
// "authorization failure" (0x0202) and SendTargets does not show them the target.
TEST(TargetAccess, OnlyListedInitiatorsLogIn) {
  TargetSettings s = TargetFixture::default_settings();
  std::string err;
  ASSERT_TRUE(allow_initiator(s.acl, "IQN.2024-01.org.vcp:HOST", &err)) << err;  // kInitiator, in other case
  ASSERT_TRUE(allow_address(s.acl, "10.0.0.0/8", &err)) << err;
  TargetFixture f(s);
  auto from = [](const char* addr) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sa.sin_addr);
    return ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  };
  {
    std::ostringstream out;
    vcp::test::LogCapture capture(out);
    {
      Initiator ini(f);
      ini.conn().set_peer_address(from("10.9.8.7"));
      ASSERT_EQ(ini.login(), LoginState::FullFeature);
      EXPECT_EQ(outcome_of(ini.run(cdb_inquiry(36), true, false, 36)).status, 0);
    }
    // The session's start and end are logged, with whom and how it went.
    EXPECT_NE(out.str().find(std::string("target: session of ") + kInitiator + " from 10.9.8.7 (TSIH "),
              std::string::npos)
        << out.str();
    EXPECT_NE(out.str().find("ended: connection closed; 1 commands, 0 rejected"), std::string::npos) << out.str();
  }
  struct Case {
    const char* initiator;
    const char* address;  // nullptr: unknown
  };
  for (Case c : {Case{"iqn.2024-01.org.vcp:other", "10.9.8.7"}, Case{kInitiator, "192.168.0.1"}, Case{kInitiator, nullptr}}) {
    SessionOptions o;
    o.initiator = c.initiator;
    Initiator ini(f, o);
    if (c.address) ini.conn().set_peer_address(from(c.address));
    EXPECT_EQ(ini.login(), LoginState::Failed) << c.initiator;
    EXPECT_EQ(ini.last_login.status_class, 2) << c.initiator;
    EXPECT_EQ(ini.last_login.status_detail, 2) << c.initiator;
    EXPECT_TRUE(ini.conn().closing());
  }
  EXPECT_EQ(f.sessions.size(), 0u);
  EXPECT_EQ(f.ctx.refused_logins, 3u);

  // Discovery: the session is open to all, the target is listed only to those who may log in.
  for (const char* initiator : {kInitiator, "iqn.2024-01.org.vcp:other"}) {
    SessionOptions o;
    o.type = SessionType::Discovery;
    o.initiator = initiator;
    Initiator ini(f, o);
    ini.conn().set_peer_address(from("10.0.0.1"));
    ASSERT_EQ(ini.login(), LoginState::FullFeature);
    TextKeys keys = send_targets_keys(ini);
    EXPECT_EQ(keys.contains("TargetName"), initiator == std::string(kInitiator)) << initiator;
  }
}

// The access list and credentials replaced while the target runs (SIGHUP in `vcp target`):
// logins from then on follow the new ones, a session logged in before goes on.
TEST(TargetAccess, ReplacedAccessAppliesToNewLogins) {
  TargetFixture f;
  AccessHolder access{
      std::make_shared<const AccessSettings>(AccessSettings::of(f.settings))};
  f.ctx.access = &access;
  const std::string other = "iqn.2024-01.org.vcp:other";
  auto login_as = [&](const std::string& name, std::optional<iscsi::ChapCredentials> chap = std::nullopt) {
    SessionOptions o;
    o.initiator = name;
    o.isid = iscsi::Isid{0x80, 0, 0, 0, 0, static_cast<uint8_t>(name.size())};
    o.chap = std::move(chap);
    auto ini = std::make_unique<Initiator>(f, o);
    return std::pair{ini->login(), std::move(ini)};
  };

  auto [first, early] = login_as(kInitiator);
  ASSERT_EQ(first, LoginState::FullFeature);

  AccessSettings only_other = AccessSettings::of(f.settings);
  std::string err;
  ASSERT_TRUE(allow_initiator(only_other.targets.at(0).acl, other, &err)) << err;
  access.store(std::make_shared<const AccessSettings>(only_other));
  EXPECT_EQ(login_as(kInitiator).first, LoginState::Failed);
  EXPECT_EQ(login_as(other).first, LoginState::FullFeature);
  // The session from before the change still works.
  EXPECT_EQ(outcome_of(early->run(cdb_inquiry(36), true, false, 36)).status, 0);

  // CHAP required from now on: without credentials no login, with them one.
  AccessSettings with_chap = only_other;
  with_chap.targets.at(0).chap = iscsi::ChapCredentials{other, "a secret of 16 chars"};
  access.store(std::make_shared<const AccessSettings>(with_chap));
  EXPECT_EQ(login_as(other).first, LoginState::Failed);
  EXPECT_EQ(login_as(other, iscsi::ChapCredentials{other, "a secret of 16 chars"}).first, LoginState::FullFeature);
  EXPECT_EQ(outcome_of(early->run(cdb_inquiry(36), true, false, 36)).status, 0);
}

// Access settings replaced under running sessions (a reload): at its next tick, a session the
// new access list refuses, by name or by address, is told the target drops it (Async Message,
// event 3) and closes; one it still allows goes on; CHAP changes leave sessions alone.
TEST(TargetAccess, SessionsTheReloadedListRefusesEnd) {
  TargetFixture f;
  AccessHolder access{
      std::make_shared<const AccessSettings>(AccessSettings::of(f.settings))};
  f.ctx.access = &access;
  const std::string other = "iqn.2024-01.org.vcp:other", third = "iqn.2024-01.org.vcp:third";
  auto address = [](const char* a) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, a, &sa.sin_addr);
    return ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  };
  auto login_as = [&](const std::string& name, const char* from) {
    SessionOptions o;
    o.initiator = name;
    o.isid = iscsi::Isid{0x80, 0, 0, 0, 0, static_cast<uint8_t>(name.size())};
    auto ini = std::make_unique<Initiator>(f, o);
    ini->conn().set_peer_address(address(from));
    EXPECT_EQ(ini->login(), LoginState::FullFeature) << name;
    return ini;
  };
  auto dropped = [](Initiator& ini) {
    auto got = ini.take();
    if (got.size() != 1 || !got[0].as<AsyncMessagePdu>()) return false;
    const AsyncMessagePdu& m = *got[0].as<AsyncMessagePdu>();
    // Nothing more is read from it; it closes kDropGraceMs later (the initiator first, if it
    // heeds the message).
    if (m.event != AsyncEvent::SessionDropped || m.parameter2 != 2 || m.parameter3 != 0 || ini.conn().closing() ||
        ini.conn().wants_input())
      return false;
    ini.conn().tick(ini.now + TargetConnection::kDropGraceMs - 1);
    if (ini.conn().closing()) return false;
    ini.conn().tick(ini.now + TargetConnection::kDropGraceMs);
    return ini.conn().closing() && ini.take().empty();
  };
  auto early = login_as(kInitiator, "10.1.2.3");
  auto kept = login_as(other, "10.1.2.4");
  auto far = login_as(third, "192.168.7.7");
  std::ostringstream out;
  vcp::test::LogCapture capture(out);

  // Nothing replaced: ticks change nothing.
  for (auto* i : {early.get(), kept.get(), far.get()}) {
    i->conn().tick(i->now);
    EXPECT_TRUE(i->take().empty());
    EXPECT_FALSE(i->conn().closing());
  }
  // The names `other` and `third` allowed, from 10.0.0.0/8 only.
  AccessSettings next = AccessSettings::of(f.settings);
  std::string err;
  ASSERT_TRUE(allow_initiator(next.targets.at(0).acl, other, &err)) << err;
  ASSERT_TRUE(allow_initiator(next.targets.at(0).acl, third, &err)) << err;
  ASSERT_TRUE(allow_address(next.targets.at(0).acl, "10.0.0.0/8", &err)) << err;
  access.store(std::make_shared<const AccessSettings>(next));
  // The session is not ended while nothing ticks (the I/O thread does, four times a second).
  EXPECT_EQ(outcome_of(early->run(cdb_inquiry(36), true, false, 36)).status, 0);
  for (auto* i : {early.get(), kept.get(), far.get()}) i->conn().tick(i->now);
  EXPECT_TRUE(dropped(*early));  // its name is off the list
  EXPECT_TRUE(dropped(*far));    // its address is
  EXPECT_TRUE(kept->take().empty());
  EXPECT_FALSE(kept->conn().closing());
  EXPECT_EQ(outcome_of(kept->run(cdb_inquiry(36), true, false, 36)).status, 0);
  EXPECT_NE(out.str().find("target: session of " + std::string(kInitiator) + " from 10.1.2.3 to " + kIqn +
                           " (TSIH 1) ended: the access list reloaded does not allow it"),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("session of " + third + " from 192.168.7.7"), std::string::npos) << out.str();
  early->conn().shutdown();
  far->conn().shutdown();
  EXPECT_TRUE(early->conn().finished());

  // CHAP required from now on: sessions logged in without it go on (new logins need it).
  AccessSettings with_chap = next;
  with_chap.targets.at(0).chap = iscsi::ChapCredentials{other, "a secret of 16 chars"};
  access.store(std::make_shared<const AccessSettings>(with_chap));
  kept->conn().tick(kept->now);
  EXPECT_TRUE(kept->take().empty());
  EXPECT_FALSE(kept->conn().closing());
  EXPECT_EQ(outcome_of(kept->run(cdb_inquiry(36), true, false, 36)).status, 0);
}

// Refused logins are logged for whoever runs the target: who, from where, why; a storm of them
// is thinned out (log::thin).
TEST(TargetAccess, RefusedLoginsAreLoggedThinly) {
  TargetSettings s = TargetFixture::default_settings();
  std::string err;
  ASSERT_TRUE(allow_initiator(s.acl, kInitiator, &err)) << err;
  TargetFixture f(s);
  std::ostringstream out;
  vcp::test::LogCapture capture(out);
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "fd00::7", &sa.sin6_addr);
  constexpr int kLogins = 40;
  for (int i = 0; i < kLogins; ++i) {
    SessionOptions o;
    o.initiator = i == 0 ? "iqn.2024-01.org.vcp:evil\ntarget: forged line" : "iqn.2024-01.org.vcp:other";
    Initiator ini(f, o);
    ini.conn().set_peer_address(ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa)));
    EXPECT_EQ(ini.login(), LoginState::Failed);
  }
  const std::string log = out.str();
  // A name with a control character in it is refused by the text parser before it is a name:
  // nothing of it reaches the log.
  EXPECT_NE(log.find("target: login from fd00::7 refused: invalid character in value (1 refused"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("forged line"), std::string::npos) << log;
  EXPECT_NE(log.find("target: login of iqn.2024-01.org.vcp:other from fd00::7 refused: initiator "
                     "iqn.2024-01.org.vcp:other may not log in to " + std::string(kIqn) +
                     " (2 refused on this thread so far)"),
            std::string::npos)
      << log;
  size_t lines = 0;
  for (size_t at = 0; (at = log.find("refused on this thread so far", at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(lines, 16u);  // the first 16; then one in 1000
  EXPECT_EQ(f.ctx.refused_logins, static_cast<uint64_t>(kLogins));
}

// The initiator may spell our name in another case: it is the same name (RFC 3722), and the
// session's SendTargets reports the target as we spell it.
TEST(TargetLogin, TargetNameInAnotherCase) {
  TargetFixture f;
  std::string upper = kIqn;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  SessionOptions o;
  o.target = upper;
  Initiator ini(f, o);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  TextKeys keys = send_targets_keys(ini);
  EXPECT_EQ(*keys.find("TargetName"), kIqn);
}

TEST(SendTargets, Scopes) {
  std::vector<SendTargetsRecord> t{{"iqn.a", {"10.0.0.1:3260,1", "[fe80::1]:3260,1"}}, {"iqn.b", {"10.0.0.1:3260,1"}}};
  TextKeys all;
  build_send_targets("All", SessionType::Discovery, "", t, all);
  EXPECT_EQ(all.size(), 5u);
  TextKeys mine;
  build_send_targets("All", SessionType::Normal, "iqn.b", t, mine);
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine.pairs()[0].value, "iqn.b");
  TextKeys empty;
  build_send_targets("", SessionType::Normal, "iqn.a", t, empty);
  EXPECT_EQ(empty.size(), 3u);
  TextKeys named;
  build_send_targets("iqn.zzz", SessionType::Discovery, "", t, named);
  EXPECT_TRUE(named.empty());
  TextKeys other_case;  // names compare without regard to case (RFC 3722)
  build_send_targets("IQN.B", SessionType::Discovery, "", t, other_case);
  ASSERT_EQ(other_case.size(), 2u);
  EXPECT_EQ(other_case.pairs()[0].value, "iqn.b");  // as the target spells it
  EXPECT_EQ(target_address("fe80::1", 3260, 1), "[fe80::1]:3260,1");
  EXPECT_EQ(target_address("127.0.0.1", 3261, 2), "127.0.0.1:3261,2");
}

TEST(TargetIo, InquiryStatusInLastDataIn) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  // The first command sees the power-on unit attention; INQUIRY is exempt.
  auto pdus = ini.run(cdb_inquiry(96), true, false, 96);
  ASSERT_FALSE(pdus.empty());
  const auto* last = pdus.back().as<DataInPdu>();
  ASSERT_TRUE(last);
  EXPECT_TRUE(last->has_status);
  EXPECT_TRUE(last->final);
  auto o = outcome_of(pdus);
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.data[0], 0x00);  // direct access block device
  EXPECT_EQ(std::string(o.data.begin() + 8, o.data.begin() + 11), "VCP");
}

TEST(TargetIo, WriteWithImmediateDataThenR2TsThenReadBack) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();  // TEST UNIT READY takes the unit attention
  // 200 KiB: FirstBurstLength (16 KiB) immediate, the rest through R2Ts of MaxBurstLength
  // 64 KiB, at most MaxOutstandingR2T = 2 at a time.
  const uint32_t len = 200 * 1024;
  auto data = pattern(len, 9);
  auto pdus = ini.run(cdb_rw16(0x8a, 100, len / 512), false, true, len, data);
  auto w = outcome_of(pdus);
  EXPECT_EQ(w.status, 0);
  EXPECT_EQ(w.r2ts, 3);  // 184 KiB in 64 + 64 + 56
  const R2TPdu* first = nullptr;
  for (auto& p : pdus)
    if ((first = p.as<R2TPdu>())) break;
  ASSERT_TRUE(first);
  EXPECT_EQ(first->buffer_offset, 16384u);
  EXPECT_EQ(first->desired_data_transfer_length, 65536u);
  EXPECT_EQ(first->r2t_sn, 0u);

  auto pr = ini.run(cdb_rw16(0x88, 100, len / 512), true, false, len);
  auto r = outcome_of(pr);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.data, data);
  // Data-In PDUs respect the initiator's MaxRecvDataSegmentLength and F marks each burst.
  int finals = 0;
  for (auto& p : pr)
    if (const auto* d = p.as<DataInPdu>()) {
      EXPECT_LE(p.data.size(), 8192u);
      finals += d->final;
    }
  EXPECT_EQ(finals, 4);  // 64+64+64+8 KiB
}

TEST(TargetIo, R2TsNeverExceedMaxOutstanding) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();
  const uint32_t len = 256 * 1024;
  ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len);  // no immediate data
  auto got = ini.take();
  ASSERT_EQ(got.size(), 2u);  // MaxOutstandingR2T = 2
  EXPECT_EQ(got[0].as<R2TPdu>()->buffer_offset, 0u);
  EXPECT_EQ(got[1].as<R2TPdu>()->buffer_offset, 65536u);
}

TEST(TargetIo, UnsolicitedDataOutWhenInitialR2TIsNo) {
  TargetFixture f;
  SessionOptions o;
  o.limits.initial_r2t = false;
  o.limits.immediate_data = false;
  Initiator ini(f, o);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ASSERT_FALSE(ini.params().initial_r2t);
  ini.tur();
  const uint32_t len = 32 * 1024;  // FirstBurstLength 16 KiB unsolicited, then one R2T
  auto data = pattern(len, 1);
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len, {}, /*final=*/false);
  ini.data_out(itt, kReservedTag, 0, 0, std::span(data).first(8192), false);
  ini.data_out(itt, kReservedTag, 1, 8192, std::span(data).subspan(8192, 8192), true);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const auto* r2t = got[0].as<R2TPdu>();
  ASSERT_TRUE(r2t);
  EXPECT_EQ(r2t->buffer_offset, 16384u);
  EXPECT_EQ(r2t->desired_data_transfer_length, 16384u);
  ini.data_out(itt, r2t->ttt, 0, 16384, std::span(data).subspan(16384, 8192), false);
  ini.data_out(itt, r2t->ttt, 1, 24576, std::span(data).subspan(24576, 8192), true);
  auto w = outcome_of(ini.take());
  EXPECT_EQ(w.status, 0);
  auto r = outcome_of(ini.run(cdb_rw16(0x88, 0, len / 512), true, false, len));
  EXPECT_EQ(r.data, data);
}

TEST(TargetIo, CheckConditionCarriesSense) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  auto first = outcome_of(ini.tur());
  EXPECT_EQ(first.status, 2);  // POWER ON unit attention
  ASSERT_GE(first.sense.size(), 14u);
  EXPECT_EQ(first.sense[2] & 0x0f, 0x06);
  // READ beyond the end: LBA OUT OF RANGE.
  auto o = outcome_of(ini.run(cdb_rw16(0x88, 1u << 20, 1), true, false, 512));
  EXPECT_EQ(o.status, 2);
  ASSERT_GE(o.sense.size(), 14u);
  EXPECT_EQ(o.sense[2] & 0x0f, 0x05);
  EXPECT_EQ(o.sense[12], 0x21);
}

TEST(TargetIo, ResidualsOnReads) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();
  auto under = outcome_of(ini.run(cdb_rw16(0x88, 0, 1), true, false, 10000));
  EXPECT_EQ(under.status, 0);
  EXPECT_TRUE(under.underflow);
  EXPECT_EQ(under.residual, 10000u - 512);
  auto over = outcome_of(ini.run(cdb_rw16(0x88, 0, 2), true, false, 512));
  EXPECT_TRUE(over.overflow);
  EXPECT_EQ(over.residual, 512u);
}

TEST(TargetIo, LunThatDoesNotExist) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.command({0x00, 0, 0, 0, 0, 0}, false, false, 0, {}, true, 7);
  auto o = outcome_of(ini.take());
  EXPECT_EQ(o.status, 2);
  ASSERT_GE(o.sense.size(), 14u);
  EXPECT_EQ(o.sense[12], 0x25);  // LOGICAL UNIT NOT SUPPORTED
}

TEST(TargetNop, PingIsEchoed) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  NopOutPdu n;
  n.immediate = true;
  n.itt = ini.next_itt();
  n.cmd_sn = ini.cmd_sn();
  const uint8_t ping[] = {1, 2, 3, 4, 5};
  n.data_segment_length = sizeof(ping);
  ini.send(n, ping);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const auto* in = got[0].as<NopInPdu>();
  ASSERT_TRUE(in);
  EXPECT_EQ(in->itt, n.itt);
  EXPECT_EQ(in->ttt, kReservedTag);
  EXPECT_EQ(got[0].data, std::vector<uint8_t>(ping, ping + 5));
}

TEST(TargetNop, IdleConnectionIsPingedThenDropped) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.conn().tick(ini.now + f.settings.nop_interval_ms + 1);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const auto* ping = got[0].as<NopInPdu>();
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->itt, kReservedTag);
  EXPECT_NE(ping->ttt, kReservedTag);
  // Answered: the connection stays.
  ini.now += f.settings.nop_interval_ms + 2;
  NopOutPdu answer;
  answer.immediate = true;
  answer.itt = kReservedTag;
  answer.ttt = ping->ttt;
  answer.cmd_sn = ini.cmd_sn();
  ini.send(answer);
  EXPECT_TRUE(ini.take().empty());
  ini.conn().tick(ini.now + 10);
  EXPECT_FALSE(ini.conn().closing());
  // Not answered: dropped.
  uint64_t t = ini.now + f.settings.nop_interval_ms + 1;
  ini.conn().tick(t);
  ASSERT_EQ(ini.take().size(), 1u);
  ini.conn().tick(t + f.settings.nop_timeout_ms + 1);
  EXPECT_TRUE(ini.conn().closing());
  EXPECT_EQ(f.sessions.size(), 1u) << "the session is there until its connection is gone";
  ini.drop_connection();
  EXPECT_EQ(f.sessions.size(), 0u);
}

// A peer waiting for reads on a slow link sends nothing while our ping waits behind the
// Data-In ahead of it; its TCP taking our output (bytes acknowledged, which the server reads
// from TCP_INFO before each tick) says it is alive. Once it takes nothing, the ping fails
// nop_timeout later as for a silent peer.
TEST(TargetNop, APeerTakingOurOutputIsAliveThoughSilent) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  uint64_t t = ini.now + f.settings.nop_interval_ms + 1;
  EXPECT_FALSE(ini.conn().wants_peer_progress());
  ini.conn().tick(t);
  ASSERT_EQ(ini.take().size(), 1u);  // the ping
  EXPECT_TRUE(ini.conn().wants_peer_progress());
  // Megabytes of Data-In queued ahead of the ping, the peer's TCP taking a little each tick.
  TcpProgress tcp{1000, 4u << 20};
  ini.conn().note_peer_progress(tcp, t);  // the mark
  // Four nop_timeouts of the peer taking output and sending nothing.
  const uint64_t end = t + 4 * f.settings.nop_timeout_ms;
  for (t += 100; t < end; t += 100) {
    tcp.acked += 1448;
    tcp.queued -= 1448;
    if (ini.conn().wants_peer_progress()) ini.conn().note_peer_progress(tcp, t);
    ini.conn().tick(t);
    ASSERT_FALSE(ini.conn().closing()) << "dropped " << t - ini.now << " ms in while the peer took output";
  }
  ini.take();  // the pings sent meanwhile (one at a time)
  // It stops taking anything (its receive buffer full: the queue stays): dropped after
  // nop_interval + nop_timeout at most.
  const uint64_t stopped = t;
  for (; t < stopped + f.settings.nop_interval_ms + f.settings.nop_timeout_ms + 300 && !ini.conn().closing(); t += 100) {
    if (ini.conn().wants_peer_progress()) ini.conn().note_peer_progress(tcp, t);
    ini.conn().tick(t);
  }
  EXPECT_TRUE(ini.conn().closing()) << "a peer taking nothing and sending nothing was kept";
  EXPECT_GT(t - stopped, f.settings.nop_timeout_ms);
}

// A stopped initiator's kernel acknowledges the ping itself (nothing else was queued): that
// is no sign of the initiator, and the ping fails on time.
TEST(TargetNop, APingTakenByTheKernelOfAStoppedPeerIsNoAnswer) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  uint64_t t = ini.now + f.settings.nop_interval_ms + 1;
  ini.conn().tick(t);
  ASSERT_EQ(ini.take().size(), 1u);  // the ping
  ini.conn().note_peer_progress(TcpProgress{5000, 0}, t + 100);  // the ping acknowledged, nothing queued
  ini.conn().tick(t + 100);
  ini.conn().note_peer_progress(TcpProgress{5048, 0}, t + 200);  // a late few bytes: still nothing queued before
  ini.conn().tick(t + 200);
  ini.conn().tick(t + f.settings.nop_timeout_ms + 1);
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetLogin, HalfOpenLoginTimesOut) {
  TargetFixture f;
  Initiator ini(f);
  ini.conn().tick(ini.now + f.settings.login_timeout_ms - 1);
  EXPECT_FALSE(ini.conn().closing());
  ini.conn().tick(ini.now + f.settings.login_timeout_ms + 1);
  EXPECT_TRUE(ini.conn().closing());
}

TEST(TargetWindow, OutOfWindowDroppedAheadHeld) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  const uint32_t exp = ini.cmd_sn();
  auto tur = [&](uint32_t cmd_sn) {
    ScsiCommandPdu c;
    c.itt = ini.next_itt();
    c.cmd_sn = cmd_sn;
    c.cdb[0] = 0x00;
    ini.send(c);
    return c.itt;
  };
  tur(exp - 1);   // already used: dropped
  tur(exp + 100);  // beyond MaxCmdSN: dropped
  EXPECT_TRUE(ini.take().empty());
  EXPECT_EQ(ini.conn().stats().dropped_commands, 2u);
  uint32_t later = tur(exp + 1);  // ahead: held until exp arrives
  EXPECT_TRUE(ini.take().empty());
  uint32_t first = tur(exp);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].as<ScsiResponsePdu>()->itt, first);
  EXPECT_EQ(got[1].as<ScsiResponsePdu>()->itt, later);
  EXPECT_EQ(got[1].as<ScsiResponsePdu>()->exp_cmd_sn, exp + 2);
  // MaxCmdSN = ExpCmdSN + window - 1 when nothing is in flight.
  EXPECT_EQ(got[1].as<ScsiResponsePdu>()->max_cmd_sn, exp + 2 + f.settings.cmd_window - 1);
}

TEST(TargetTmf, AbortTaskWaitingForData) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, 8), false, true, 4096);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const R2TPdu r2t = *got[0].as<R2TPdu>();
  EXPECT_EQ(ini.conn().tasks_in_flight(), 1u);
  EXPECT_EQ(ini.tmf(TmfFunction::AbortTask, 0, itt, ini.cmd_sn() - 1), TmfResponse::Complete);
  EXPECT_EQ(ini.conn().tasks_in_flight(), 0u);
  // Data for the aborted task is discarded quietly.
  auto data = pattern(4096, 0);
  ini.data_out(itt, r2t.ttt, 0, 0, data, true);
  EXPECT_TRUE(ini.take().empty());
  EXPECT_FALSE(ini.conn().closing());

  // Again for a task that is not there.
  EXPECT_EQ(ini.tmf(TmfFunction::AbortTask, 0, 0x5555, ini.cmd_sn() - 10), TmfResponse::TaskDoesNotExist);
}

TEST(TargetTmf, LunResetAndTargetResetRaiseUnitAttention) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  ini.tur();
  EXPECT_EQ(outcome_of(ini.tur()).status, 0);
  for (TmfFunction fn : {TmfFunction::LogicalUnitReset, TmfFunction::TargetWarmReset}) {
    EXPECT_EQ(ini.tmf(fn), TmfResponse::Complete);
    auto o = outcome_of(ini.tur());
    EXPECT_EQ(o.status, 2);
    ASSERT_GE(o.sense.size(), 14u);
    EXPECT_EQ(o.sense[2] & 0x0f, 0x06);  // UNIT ATTENTION
  }
  EXPECT_EQ(ini.tmf(TmfFunction::LogicalUnitReset, 9), TmfResponse::LunDoesNotExist);
}

TEST(TargetLogout, ClosesTheSession) {
  TargetFixture f;
  Initiator ini(f);
  ASSERT_EQ(ini.login(), LoginState::FullFeature);
  EXPECT_EQ(f.sessions.size(), 1u);
  LogoutRequestPdu l;
  l.immediate = true;
  l.itt = ini.next_itt();
  l.cmd_sn = ini.cmd_sn();
  ini.send(l);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<LogoutResponsePdu>());
  EXPECT_EQ(got[0].as<LogoutResponsePdu>()->response, LogoutResponseCode::Success);
  EXPECT_TRUE(ini.conn().closing());
  EXPECT_TRUE(ini.conn().finished());
  ini.drop_connection();
  EXPECT_EQ(f.sessions.size(), 0u);
}

TEST(TargetSessions, ReinstatementClosesTheOldSession) {
  TargetFixture f;
  Initiator a(f), b(f);
  SessionOptions other;
  other.isid = {0x80, 0, 0, 0, 0, 2};
  Initiator c(f, other);
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  ASSERT_EQ(c.login(), LoginState::FullFeature);
  EXPECT_EQ(f.sessions.size(), 2u);
  // Same initiator name and ISID as a: a is told to close, and b's login is answered only
  // once a's connection is gone (TargetTmf.AReinstatingLoginWaitsForTheOldSessionsWrite).
  EXPECT_EQ(b.login(), LoginState::InProgress);
  EXPECT_GE(f.wakes, 1);
  a.conn().tick(a.now);
  EXPECT_TRUE(a.conn().closing());
  c.conn().tick(c.now);
  EXPECT_FALSE(c.conn().closing());  // another I_T nexus is not touched
  EXPECT_EQ(f.sessions.size(), 3u);
  EXPECT_TRUE(a.conn().finished());
  a.drop_connection();
  EXPECT_EQ(f.sessions.size(), 2u);
  b.conn().tick(b.now);
  ASSERT_EQ(b.finish_login(), LoginState::FullFeature);
  EXPECT_EQ(outcome_of(b.run(cdb_inquiry(36), true, false, 36)).status, 0);
}

TEST(TargetSessions, TwoSessionsInterleave) {
  TargetFixture f;
  SessionOptions o2;
  o2.isid = {0x80, 0, 0, 0, 0, 9};
  Initiator a(f), b(f, o2);
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  ASSERT_EQ(b.login(), LoginState::FullFeature);
  a.tur();
  b.tur();
  auto da = pattern(4096, 1), db = pattern(4096, 2);
  EXPECT_EQ(outcome_of(a.run(cdb_rw16(0x8a, 0, 8), false, true, 4096, da)).status, 0);
  EXPECT_EQ(outcome_of(b.run(cdb_rw16(0x8a, 8, 8), false, true, 4096, db)).status, 0);
  EXPECT_EQ(outcome_of(b.run(cdb_rw16(0x88, 0, 8), true, false, 4096)).data, da);
  EXPECT_EQ(outcome_of(a.run(cdb_rw16(0x88, 8, 8), true, false, 4096)).data, db);
}


// Several targets on one portal (TOML [[target]]): each with LUNs, access list and CHAP of its
// own; the first from the top-level settings.
constexpr const char* kSecond = "iqn.2024-01.org.vcp:second";
constexpr const char* kOther = "iqn.2024-01.org.vcp:other";
TargetSettings two_targets() {
  TargetSettings s = TargetFixture::default_settings();  // kIqn: LUN 0, 4 MiB
  TargetSpec t;
  t.iqn = kSecond;
  t.alias = "second";
  t.luns = {{0, "ram:size=1M"}, {3, "ram:size=2M"}};
  s.more_targets.push_back(t);
  return s;
}

SessionOptions session_to(const char* target, uint8_t isid, const char* initiator = kInitiator) {
  SessionOptions o;
  o.target = target;
  o.initiator = initiator;
  o.isid = {0x80, 0, 0, 0, 0, isid};
  return o;
}

// The capacity in bytes READ CAPACITY(16) reports for a LUN; 0 after CHECK CONDITION.
uint64_t capacity(Initiator& ini, uint64_t lun) {
  std::vector<uint8_t> cdb(16, 0);
  cdb[0] = 0x9e;
  cdb[1] = 0x10;
  cdb[13] = 32;
  ini.command(cdb, true, false, 32, {}, true, lun);
  const Outcome o = outcome_of(ini.take());
  if (o.status != 0 || o.data.size() < 12) return 0;
  uint64_t last = 0;
  for (int i = 0; i < 8; ++i) last = last << 8 | o.data[i];
  const uint32_t bs = uint32_t{o.data[8]} << 24 | uint32_t{o.data[9]} << 16 | uint32_t{o.data[10]} << 8 | o.data[11];
  return (last + 1) * bs;
}

TEST(TargetMultiple, EachTargetServesItsOwnLuns) {
  TargetFixture f(two_targets());
  Initiator a(f, session_to(kIqn, 1));
  Initiator b(f, session_to(kSecond, 2));
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  ASSERT_EQ(b.login(), LoginState::FullFeature);
  a.tur();
  b.tur();
  b.command({0x00, 0, 0, 0, 0, 0}, false, false, 0, {}, true, 3);  // LUN 3's power-on unit attention
  (void)b.take();
  EXPECT_EQ(capacity(a, 0), 4u << 20);
  EXPECT_EQ(capacity(b, 0), 1u << 20);
  EXPECT_EQ(capacity(b, 3), 2u << 20);
  EXPECT_EQ(capacity(a, 3), 0u);  // LUN 3 is the second target's
  // REPORT LUNS: each its own.
  auto report = [](Initiator& ini) {
    std::vector<uint8_t> cdb(12, 0);
    cdb[0] = 0xa0;
    cdb[9] = 64;
    const Outcome o = outcome_of(ini.run(cdb, true, false, 64));
    std::vector<int> luns;
    for (size_t at = 8; at + 8 <= o.data.size(); at += 8) luns.push_back(o.data[at + 1]);
    return luns;
  };
  EXPECT_EQ(report(a), std::vector<int>{0});
  EXPECT_EQ(report(b), (std::vector<int>{0, 3}));
  // Their LUN 0s are different disks.
  const auto data = pattern(4096, 9);
  ASSERT_EQ(outcome_of(a.run(cdb_rw16(0x8a, 0, 8), false, true, 4096, data)).status, 0);
  EXPECT_NE(outcome_of(b.run(cdb_rw16(0x88, 0, 8), true, false, 4096)).data, data);
  EXPECT_EQ(outcome_of(a.run(cdb_rw16(0x88, 0, 8), true, false, 4096)).data, data);
  // A target reset resets that target's LUNs only: the other target's session sees no unit
  // attention.
  EXPECT_EQ(b.tmf(TmfFunction::TargetWarmReset), TmfResponse::Complete);
  EXPECT_EQ(outcome_of(a.tur()).status, 0);
  const Outcome after = outcome_of(b.tur());
  EXPECT_EQ(after.status, 2);
  ASSERT_GE(after.sense.size(), 14u);
  EXPECT_EQ(after.sense[2] & 0x0f, 0x06);  // UNIT ATTENTION
  // A name neither target has: "not found" (0x0203).
  Initiator c(f, session_to("iqn.2024-01.org.vcp:third", 3));
  EXPECT_EQ(c.login(), LoginState::Failed);
  EXPECT_EQ(c.last_login.status_class, 2);
  EXPECT_EQ(c.last_login.status_detail, 3);
}

// A LUN whose backend grew (TargetServer::grow_luns, on SIGHUP): the Lun takes the new size and
// the sessions get CAPACITY DATA HAS CHANGED (2Ah/09h) once; READ CAPACITY gives the new size.
TEST(TargetMultiple, AGrownLunAnnouncesItsCapacity) {
  TargetFixture f;
  Initiator a(f, session_to(kIqn, 1));
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  a.tur();
  EXPECT_EQ(capacity(a, 0), 4u << 20);
  f.lun->set_capacity(8u << 20, true);
  const Outcome ua = outcome_of(a.tur());
  EXPECT_EQ(ua.status, 2);
  ASSERT_GE(ua.sense.size(), 14u);
  EXPECT_EQ(ua.sense[2] & 0x0f, 0x06);  // UNIT ATTENTION
  EXPECT_EQ(ua.sense[12], 0x2a);
  EXPECT_EQ(ua.sense[13], 0x09);
  EXPECT_EQ(outcome_of(a.tur()).status, 0);  // once
  EXPECT_EQ(capacity(a, 0), 8u << 20);
  f.lun->set_capacity(16u << 20, false);  // another thread's Lun: the state was told already
  EXPECT_EQ(outcome_of(a.tur()).status, 0);
  EXPECT_EQ(capacity(a, 0), 16u << 20);
}

// A target removed by a reload (TargetAccess::removed): its session ends at the next tick (the
// Async Message, then closed), logins to it are answered "not found" and SendTargets leaves it
// out; the other target and its session go on. A target of the same name added again later
// (another place in `served`) is found.
TEST(TargetMultiple, ARemovedTargetIsGone) {
  TargetFixture f(two_targets());
  AccessHolder access{
      std::make_shared<const AccessSettings>(AccessSettings::of(f.settings))};
  f.ctx.access = &access;
  Initiator a(f, session_to(kIqn, 1));
  Initiator b(f, session_to(kSecond, 2));
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  ASSERT_EQ(b.login(), LoginState::FullFeature);
  std::ostringstream out;
  vcp::test::LogCapture capture(out);
  AccessSettings next = *access.load();
  next.targets.at(1).removed = true;
  access.store(std::make_shared<const AccessSettings>(next));
  a.conn().tick(a.now);
  b.conn().tick(b.now);
  EXPECT_TRUE(a.take().empty());
  auto got = b.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].as<AsyncMessagePdu>());
  EXPECT_EQ(got[0].as<AsyncMessagePdu>()->event, AsyncEvent::SessionDropped);
  EXPECT_FALSE(b.conn().wants_input());
  b.conn().tick(b.now + TargetConnection::kDropGraceMs);
  EXPECT_TRUE(b.conn().closing());
  EXPECT_NE(out.str().find(std::string("to ") + kSecond + " (TSIH 2) ended: the target was removed by a reload"),
            std::string::npos)
      << out.str();
  EXPECT_EQ(outcome_of(a.tur()).status, 2);  // the power-on unit attention: a is served as before
  EXPECT_EQ(outcome_of(a.tur()).status, 0);
  Initiator c(f, session_to(kSecond, 3));
  EXPECT_EQ(c.login(), LoginState::Failed);
  EXPECT_EQ(c.last_login.status_class, 2);
  EXPECT_EQ(c.last_login.status_detail, 3);  // not found
  SessionOptions d = session_to("", 4);
  d.type = SessionType::Discovery;
  Initiator disc(f, d);
  ASSERT_EQ(disc.login(), LoginState::FullFeature);
  // The TargetName keys of a SendTargets answer (repeated keys: not for parse_text).
  auto names = [](Initiator& ini) {
    auto got = send_targets_all(ini);
    EXPECT_EQ(got.size(), 1u);
    std::vector<std::string> out;
    if (got.size() != 1) return out;
    const std::string text(got[0].data.begin(), got[0].data.end());
    for (size_t at = 0; (at = text.find("TargetName=", at)) != std::string::npos; at += 11)
      out.push_back(text.substr(at + 11, text.find('\0', at) - at - 11));
    return out;
  };
  EXPECT_EQ(names(disc), std::vector<std::string>{kIqn});

  // Added again: a new place after the others, found by logins and SendTargets.
  ThreadContext::Target& again = f.ctx.served.emplace_back();
  again.iqn = kSecond;
  again.luns = f.ctx.served[1].luns;  // the test's stand-in for the LUNs a reload would add
  again.lun_numbers = f.ctx.served[1].lun_numbers;
  next.targets.push_back(TargetAccess{});
  access.store(std::make_shared<const AccessSettings>(next));
  Initiator e(f, session_to(kSecond, 5));
  EXPECT_EQ(e.login(), LoginState::FullFeature);
  e.conn().tick(e.now);
  EXPECT_TRUE(e.take().empty());
  EXPECT_FALSE(e.conn().closing());
  disc.conn().tick(disc.now);  // takes the new access settings, as the I/O thread makes it do
  EXPECT_EQ(names(disc), (std::vector<std::string>{kIqn, kSecond}));
}

TEST(TargetMultiple, AccessListsAndChapAreEachTargets) {
  TargetSettings s = two_targets();
  std::string err;
  ASSERT_TRUE(allow_initiator(s.more_targets[0].acl, kOther, &err)) << err;
  s.more_targets[0].chap = ChapCredentials{"user", "initiator-secret"};
  TargetFixture f(s);
  // kInitiator: the first target (no list) yes, the second (only kOther) no.
  Initiator a(f, session_to(kIqn, 1));
  EXPECT_EQ(a.login(), LoginState::FullFeature);
  Initiator b(f, session_to(kSecond, 2));
  EXPECT_EQ(b.login(), LoginState::Failed);
  EXPECT_EQ(b.last_login.status_class, 2);
  EXPECT_EQ(b.last_login.status_detail, 2);  // authorization failure
  // kOther: the second target with its CHAP, not without.
  Initiator c(f, session_to(kSecond, 3, kOther));
  EXPECT_EQ(c.login(), LoginState::Failed);
  SessionOptions with_chap = session_to(kSecond, 4, kOther);
  with_chap.chap = ChapCredentials{"user", "initiator-secret"};
  Initiator d(f, with_chap);
  EXPECT_EQ(d.login(), LoginState::FullFeature);
  // Discovery lists the targets each initiator may log in to.
  for (const char* initiator : {kInitiator, kOther}) {
    SessionOptions o = session_to("", 5, initiator);
    o.type = SessionType::Discovery;
    Initiator ini(f, o);
    ASSERT_EQ(ini.login(), LoginState::FullFeature);
    // Several records repeat their keys: the text is split here, not parsed as TextKeys.
    const auto got = send_targets_all(ini);
    ASSERT_EQ(got.size(), 1u);
    std::vector<std::string> names;
    const std::string text(got[0].data.begin(), got[0].data.end());
    for (size_t at = 0; at < text.size();) {
      const size_t end = std::min(text.find('\0', at), text.size());
      if (text.compare(at, 11, "TargetName=") == 0) names.push_back(text.substr(at + 11, end - at - 11));
      at = end + 1;
    }
    if (initiator == std::string(kInitiator)) {
      EXPECT_EQ(names, std::vector<std::string>{kIqn});
    } else {
      EXPECT_EQ(names, (std::vector<std::string>{kIqn, kSecond}));
    }
  }
}

TEST(TargetSettings, MoreTargetsAreValidatedEach) {
  TargetSettings s = two_targets();
  std::string err;
  EXPECT_TRUE(validate(s, &err)) << err;
  s.more_targets[0].iqn = "IQN.2024-01.org.vcp:TEST";  // kIqn in other case
  EXPECT_FALSE(validate(s, &err));
  EXPECT_EQ(err, "target IQN.2024-01.org.vcp:TEST given twice");
  s.more_targets[0].iqn = kSecond;
  s.more_targets[0].luns.push_back({3, "ram:size=1M"});
  EXPECT_FALSE(validate(s, &err));
  EXPECT_EQ(err, std::string("LUN 3 of ") + kSecond + " given twice");
  s.more_targets[0].luns.clear();
  EXPECT_FALSE(validate(s, &err));
  EXPECT_EQ(err, std::string("no LUN of ") + kSecond);
  s.more_targets[0].luns = {{0, "ram:size=1M"}};
  s.more_targets[0].mutual_chap = ChapCredentials{"t", "target-secret-1"};
  EXPECT_FALSE(validate(s, &err));
  EXPECT_EQ(err, std::string("mutual CHAP of ") + kSecond + " needs the initiator's CHAP credentials too (--chap-file)");
  s.more_targets[0].iqn = "";
  EXPECT_FALSE(validate(s, &err));
  EXPECT_EQ(err, "[[target]] 1: no iqn");
}

// The status report's line for a connection (`vcp target`, SIGUSR1): logging in, a session
// with its target and counters, a discovery session.
TEST(TargetStatus, EachConnectionDescribesItself) {
  TargetFixture f(two_targets());
  auto from = [] {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "10.1.2.3", &sa.sin_addr);
    return ip_address_of(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  };
  Initiator a(f, session_to(kSecond, 1));
  a.conn().set_peer_address(from());
  EXPECT_EQ(a.conn().describe(a.now + 250), "logging in from 10.1.2.3 for 250 ms");
  ASSERT_EQ(a.login(), LoginState::FullFeature);
  a.tur();
  a.command(cdb_rw16(0x8a, 0, 8), false, true, 4096);  // a WRITE waiting for its data (R2T)
  EXPECT_EQ(a.conn().describe(a.now + 3000),
            std::string("session of ") + kInitiator + " from 10.1.2.3 to " + kSecond +
                " (TSIH 1, up 3 s): 2 commands, 1 tasks (0 waiting for buffers), 4 KiB of buffers, 0 KiB unsent");
  SessionOptions o = session_to("", 2);
  o.type = SessionType::Discovery;
  Initiator d(f, o);
  ASSERT_EQ(d.login(), LoginState::FullFeature);
  EXPECT_EQ(d.conn().describe(d.now), std::string("discovery session of ") + kInitiator + " from an unknown address");
}

}  // namespace
}  // namespace vcp::target::test

namespace vcp::target::test {
namespace {

// A reload's [limits] (TargetServer::set_limits): connections accepted from then on negotiate
// and keep to the new ones; a connection there before keeps the ones it came with, through its
// whole session.
TEST(TargetLimits, AReloadsLimitsAreForConnectionsFromThenOn) {
  TargetFixture f;
  LimitsHolder limits(std::make_shared<const TargetSettings>(f.settings));
  f.ctx.limits = &limits;
  Initiator before(f);
  auto next = std::make_shared<TargetSettings>(f.settings);
  next->limits.max_burst_length = 32768;   // the initiator offers 64 KiB
  next->limits.first_burst_length = 8192;  // and 16 KiB
  next->limits.max_recv_data_segment_length = 16384;
  next->cmd_window = 7;
  limits.store(next);
  SessionOptions o;
  o.isid = {0x80, 0, 0, 0, 0, 2};
  Initiator after(f, o);
  ASSERT_EQ(before.login(), LoginState::FullFeature);
  ASSERT_EQ(after.login(), LoginState::FullFeature);
  EXPECT_EQ(before.params().max_burst_length, 65536u);
  EXPECT_EQ(before.params().first_burst_length, 16384u);
  EXPECT_EQ(before.params().max_send_data_segment_length, f.settings.limits.max_recv_data_segment_length);
  EXPECT_EQ(after.params().max_burst_length, 32768u);
  EXPECT_EQ(after.params().first_burst_length, 8192u);
  EXPECT_EQ(after.params().max_send_data_segment_length, 16384u);
  // The window each keeps: MaxCmdSN = ExpCmdSN + window - 1 with nothing in flight.
  auto window = [](Initiator& ini) {
    ini.tur();  // the power-on unit attention
    auto r = outcome_of(ini.tur());
    EXPECT_EQ(r.status, 0);
    auto got = ini.run({0x00, 0, 0, 0, 0, 0}, false, false, 0);
    const auto* rsp = got.empty() ? nullptr : got.back().as<iscsi::ScsiResponsePdu>();
    return rsp ? rsp->max_cmd_sn - rsp->exp_cmd_sn + 1 : 0u;
  };
  EXPECT_EQ(window(before), f.settings.cmd_window);
  EXPECT_EQ(window(after), 7u);
  EXPECT_EQ(before.conn().settings().cmd_window, f.settings.cmd_window);
  EXPECT_EQ(after.conn().settings().cmd_window, 7u);
}

TEST(TargetLimits, TheLiveOnesAreTakenAndNamedTheOthersNeedARestart) {
  TargetSettings running, file;
  file.limits.max_recv_data_segment_length = 65536;
  file.limits.data_digest = iscsi::DigestPolicy::Require;
  file.cmd_window = 64;
  file.nop_interval_ms = 5000;
  file.max_connections = 10;
  file.sendfile = TargetSettings::Sendfile::Off;
  file.max_tasks = 16;  // a restart's
  file.buffer_bytes = 1 << 20;
  auto changed = take_live_limits(running, file);
  EXPECT_EQ(changed, (std::vector<std::string>{"max_recv_data_segment_length", "data_digest", "cmd_window",
                                               "nop_interval_ms", "max_connections", "sendfile"}));
  EXPECT_EQ(running.limits, file.limits);
  EXPECT_EQ(running.cmd_window, 64u);
  EXPECT_EQ(running.max_tasks, TargetSettings{}.max_tasks) << "not a live one";
  EXPECT_EQ(restart_limits_differing(running, file), (std::vector<std::string>{"max_tasks", "buffer_bytes"}));
  EXPECT_TRUE(take_live_limits(running, file).empty()) << "nothing left to take";
  // A connection's room larger than a thread's share of the buffer room the threads have: left
  // for a restart (with buffer_bytes); one that fits is taken.
  file.connection_buffer_bytes = 0x80000000u;  // 2 GiB; the share is 1 GiB
  EXPECT_TRUE(take_live_limits(running, file).empty());
  EXPECT_EQ(restart_limits_differing(running, file),
            (std::vector<std::string>{"max_tasks", "buffer_bytes", "connection_buffer_bytes"}));
  file.connection_buffer_bytes = 32u << 20;
  EXPECT_EQ(take_live_limits(running, file), (std::vector<std::string>{"connection_buffer_bytes"}));
  // A negotiation key the TOML file does not name still follows.
  file.limits.default_time2wait = 5;
  EXPECT_EQ(take_live_limits(running, file), (std::vector<std::string>{"negotiation limits"}));
}

}  // namespace
}  // namespace vcp::target::test

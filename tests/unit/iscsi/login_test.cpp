#include "iscsi/login.hpp"

#include <gtest/gtest.h>

namespace vcp::iscsi {
namespace {

constexpr const char* kTarget = "iqn.2024-01.org.vcp:disk0";
constexpr const char* kInitiator = "iqn.2024-01.org.vcp:host";
const ChapCredentials kIni{"user", "initiator-secret"};
const ChapCredentials kTgt{"tgt", "target-secret-1"};

struct Fixture {
  TargetLoginConfig tcfg;
  InitiatorLoginConfig icfg;

  Fixture() {
    tcfg.tsih = 0x42;
    tcfg.first_stat_sn = 1000;
    tcfg.lookup = [this](std::string_view name, std::string_view) {
      TargetLookup t;
      if (name == kTarget) {
        t.kind = TargetLookup::Kind::Found;
        t.alias = "disk zero";
        t.auth = auth;
      } else if (name == "iqn.moved") {
        t.kind = TargetLookup::Kind::MovedTemporarily;
        t.redirect_address = "10.0.0.2:3260,1";
      }
      return t;
    };
    icfg.initiator_name = kInitiator;
    icfg.target_name = kTarget;
    icfg.cmd_sn = 5;
    icfg.itt = 0x77;
  }
  TargetAuth auth;
};

// Runs a login through the wire format: every PDU is encoded, decoded and handed over.
struct Exchange {
  LoginState initiator = LoginState::InProgress;
  LoginState target = LoginState::InProgress;
  int pdus = 0;
};

Exchange run(InitiatorLogin& ini, TargetLogin& tgt) {
  Exchange r;
  LoginRequestOut rq = ini.start();
  r.initiator = ini.state();
  while (r.initiator == LoginState::InProgress && r.pdus < 64) {
    ++r.pdus;
    PduParts parts;
    auto wire = to_wire(rq);
    EXPECT_EQ(decode_pdu(wire, {}, parts, {Direction::FromInitiator, kLoginSegmentLength}),
              PduError::Ok);
    LoginResponseOut rs;
    r.target = tgt.on_request(std::get<LoginRequestPdu>(parts.header), parts.data, rs);
    auto back = to_wire(rs);
    EXPECT_EQ(decode_pdu(back, {}, parts, {Direction::FromTarget, kLoginSegmentLength}),
              PduError::Ok);
    r.initiator = ini.on_response(std::get<LoginResponsePdu>(parts.header), parts.data, rq);
  }
  return r;
}

TEST(Login, NoAuthentication) {
  Fixture f;
  f.icfg.limits.max_recv_data_segment_length = 65536;
  f.tcfg.limits.max_burst_length = 131072;
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  ASSERT_EQ(r.target, LoginState::FullFeature) << tgt.failure();
  EXPECT_EQ(r.pdus, 2);  // security (None) then operational
  EXPECT_EQ(ini.tsih(), 0x42);
  EXPECT_EQ(ini.params().max_burst_length, 131072u);
  EXPECT_EQ(tgt.params().max_burst_length, 131072u);
  EXPECT_EQ(tgt.params().max_send_data_segment_length, 65536u);
  EXPECT_EQ(ini.params().target_portal_group_tag, 1);
  EXPECT_EQ(ini.params().target_alias, "disk zero");
  EXPECT_EQ(tgt.params().initiator_name, kInitiator);
  EXPECT_EQ(tgt.params().target_name, kTarget);
  EXPECT_FALSE(tgt.authenticated_with_chap());
  // Sequence numbers carry over into Full Feature Phase.
  EXPECT_EQ(ini.exp_stat_sn(), tgt.next_stat_sn());
  EXPECT_EQ(ini.exp_cmd_sn(), 5u);
  EXPECT_EQ(ini.max_cmd_sn(), 5u + 32 - 1);
  EXPECT_EQ(tgt.exp_cmd_sn(), 5u);
}

TEST(Login, OneWayChap) {
  Fixture f;
  f.auth = TargetAuth{true, kIni, std::nullopt};
  f.icfg.chap = kIni;
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  ASSERT_EQ(r.target, LoginState::FullFeature) << tgt.failure();
  EXPECT_TRUE(tgt.authenticated_with_chap());
  EXPECT_EQ(r.pdus, 4);  // AuthMethod, CHAP_A, CHAP_R, operational
}

TEST(Login, MutualChapWithDigests) {
  Fixture f;
  f.auth = TargetAuth{true, kIni, kTgt};
  f.icfg.chap = kIni;
  f.icfg.target_chap = kTgt;
  f.icfg.limits.header_digest = DigestPolicy::Prefer;
  f.icfg.limits.data_digest = DigestPolicy::Prefer;
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  ASSERT_EQ(r.target, LoginState::FullFeature) << tgt.failure();
  EXPECT_TRUE(ini.params().header_digest);
  EXPECT_TRUE(tgt.params().data_digest);
}

TEST(Login, MutualChapWrongTargetSecret) {
  Fixture f;
  f.auth = TargetAuth{true, kIni, ChapCredentials{kTgt.name, "some-other-secret"}};
  f.icfg.chap = kIni;
  f.icfg.target_chap = kTgt;
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  EXPECT_EQ(r.initiator, LoginState::Failed);
  EXPECT_EQ(ini.status(), LoginStatus::AuthenticationFailure);
}

TEST(Login, WrongSecretIs0201) {
  Fixture f;
  f.auth = TargetAuth{true, kIni, std::nullopt};
  f.icfg.chap = ChapCredentials{kIni.name, "wrong-secret-here"};
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  EXPECT_EQ(r.initiator, LoginState::Failed);
  EXPECT_EQ(r.target, LoginState::Failed);
  EXPECT_EQ(ini.status(), LoginStatus::AuthenticationFailure);
  EXPECT_EQ(static_cast<uint16_t>(ini.status()), 0x0201);
  EXPECT_EQ(tgt.failure(), "CHAP response mismatch");
}

TEST(Login, ChapRequiredButNotOffered) {
  Fixture f;
  f.auth = TargetAuth{true, kIni, std::nullopt};
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  run(ini, tgt);
  EXPECT_EQ(ini.status(), LoginStatus::AuthenticationFailure);
}

TEST(Login, UnknownTargetIs0203) {
  Fixture f;
  f.icfg.target_name = "iqn.2024-01.org.vcp:nothere";
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  EXPECT_EQ(r.initiator, LoginState::Failed);
  EXPECT_EQ(static_cast<uint16_t>(ini.status()), 0x0203);
  EXPECT_EQ(r.pdus, 1);
}

TEST(Login, RedirectCarriesTargetAddress) {
  Fixture f;
  f.icfg.target_name = "iqn.moved";
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  run(ini, tgt);
  EXPECT_EQ(static_cast<uint16_t>(ini.status()), 0x0101);
  EXPECT_EQ(ini.redirect_address(), "10.0.0.2:3260,1");
}

TEST(Login, DiscoverySession) {
  Fixture f;
  f.icfg.session_type = SessionType::Discovery;
  f.icfg.target_name.clear();
  f.tcfg.lookup = nullptr;  // discovery never looks a target up
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  ASSERT_EQ(r.target, LoginState::FullFeature) << tgt.failure();
  EXPECT_EQ(tgt.params().session_type, SessionType::Discovery);
}

TEST(Login, DiscoveryWithChap) {
  Fixture f;
  f.icfg.session_type = SessionType::Discovery;
  f.icfg.chap = kIni;
  f.tcfg.discovery_auth = TargetAuth{true, kIni, std::nullopt};
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  EXPECT_TRUE(tgt.authenticated_with_chap());
}

TEST(Login, TargetOffersKeysAndWaitsForAnswers) {
  Fixture f;
  f.tcfg.limits.data_digest = DigestPolicy::Require;
  f.icfg.limits.data_digest = DigestPolicy::Allow;
  InitiatorLogin ini(f.icfg);
  TargetLogin tgt(f.tcfg);
  const Exchange r = run(ini, tgt);
  ASSERT_EQ(r.initiator, LoginState::FullFeature) << ini.failure();
  ASSERT_EQ(r.target, LoginState::FullFeature) << tgt.failure();
  EXPECT_TRUE(ini.params().data_digest);
}

// Drives the target by hand for the cases an honest initiator never produces.
struct Manual {
  Fixture f;
  std::unique_ptr<TargetLogin> tgt;
  LoginResponseOut rs;
  Manual() : tgt(std::make_unique<TargetLogin>(f.tcfg)) {}
  LoginState send(LoginRequestPdu rq, const TextKeys& k) {
    std::vector<uint8_t> data;
    encode_text(k, data);
    rq.data_segment_length = static_cast<uint32_t>(data.size());
    return tgt->on_request(rq, data, rs);
  }
};

TextKeys identity(bool with_target = true) {
  TextKeys k;
  k.add("InitiatorName", kInitiator);
  if (with_target) k.add("TargetName", kTarget);
  return k;
}

TEST(TargetLogin, MissingInitiatorNameIs0207) {
  Manual m;
  TextKeys k;
  k.add("TargetName", kTarget);
  EXPECT_EQ(m.send(LoginRequestPdu{}, k), LoginState::Failed);
  EXPECT_EQ(m.tgt->status(), LoginStatus::MissingParameter);
  EXPECT_EQ(m.rs.bhs.status_class, 2);
  EXPECT_EQ(m.rs.bhs.status_detail, 7);
}

TEST(TargetLogin, MissingTargetNameIs0207) {
  Manual m;
  EXPECT_EQ(m.send(LoginRequestPdu{}, identity(false)), LoginState::Failed);
  EXPECT_EQ(m.tgt->status(), LoginStatus::MissingParameter);
}

TEST(TargetLogin, UnsupportedVersionAndExistingSession) {
  Manual a;
  LoginRequestPdu rq;
  rq.version_min = 1;
  a.send(rq, identity());
  EXPECT_EQ(a.tgt->status(), LoginStatus::UnsupportedVersion);
  Manual b;
  rq = LoginRequestPdu{};
  rq.tsih = 9;
  b.send(rq, identity());
  EXPECT_EQ(b.tgt->status(), LoginStatus::SessionDoesNotExist);
}

TEST(TargetLogin, OperationalKeyInSecurityStage) {
  Manual m;
  TextKeys k = identity();
  k.add("MaxBurstLength", "4096");
  m.send(LoginRequestPdu{}, k);
  EXPECT_EQ(m.tgt->status(), LoginStatus::InitiatorError);
}

TEST(TargetLogin, SkippingSecurityWhenChapRequired) {
  Manual m;
  m.f.auth = TargetAuth{true, kIni, std::nullopt};
  LoginRequestPdu rq;
  rq.csg = LoginStage::OperationalNegotiation;
  rq.transit = true;
  rq.nsg = LoginStage::FullFeature;
  m.send(rq, identity());
  EXPECT_EQ(m.tgt->status(), LoginStatus::AuthenticationFailure);
}

TEST(TargetLogin, StraightToOperationalWithoutAuth) {
  Manual m;
  LoginRequestPdu rq;
  rq.csg = LoginStage::OperationalNegotiation;
  rq.transit = true;
  rq.nsg = LoginStage::FullFeature;
  TextKeys k = identity();
  k.add("MaxRecvDataSegmentLength", "16384");
  EXPECT_EQ(m.send(rq, k), LoginState::FullFeature);
  EXPECT_TRUE(m.rs.bhs.transit);
  EXPECT_EQ(m.rs.bhs.tsih, 0x42);
  TextKeys back;
  ASSERT_EQ(parse_text(m.rs.data, back), TextError::Ok);
  EXPECT_TRUE(back.contains("MaxRecvDataSegmentLength"));
  EXPECT_TRUE(back.contains("TargetPortalGroupTag"));
}

// libiscsi, given CHAP credentials a target does not need, offers AuthMethod=CHAP,None, is
// answered None and says InitiatorName, TargetName and SessionType again in its first
// operational PDU. The same values again pass; a changed one is an initiator error.
TEST(TargetLogin, NamesSaidAgainUnchangedAfterSecurityStage) {
  for (bool changed : {false, true}) {
    Manual m;
    LoginRequestPdu rq;
    rq.transit = true;
    rq.nsg = LoginStage::OperationalNegotiation;
    TextKeys k = identity();
    k.add("SessionType", "Normal");
    k.add("AuthMethod", "CHAP,None");
    ASSERT_EQ(m.send(rq, k), LoginState::InProgress);
    rq.csg = LoginStage::OperationalNegotiation;
    rq.nsg = LoginStage::FullFeature;
    TextKeys again;
    again.add("InitiatorName", changed ? "iqn.2024-01.org.vcp:someone-else" : kInitiator);
    again.add("TargetName", kTarget);
    again.add("SessionType", "Normal");
    again.add("MaxRecvDataSegmentLength", "65536");
    EXPECT_EQ(m.send(rq, again), changed ? LoginState::Failed : LoginState::FullFeature) << changed;
    if (changed) {
      EXPECT_EQ(m.tgt->status(), LoginStatus::InitiatorError);
    }
  }
}

TEST(TargetLogin, IsidChangeIsAnError) {
  Manual m;
  LoginRequestPdu rq;
  TextKeys k = identity();
  k.add("AuthMethod", "None");
  ASSERT_EQ(m.send(rq, k), LoginState::InProgress);
  rq.isid[5] = 9;
  m.send(rq, {});
  EXPECT_EQ(m.tgt->status(), LoginStatus::InitiatorError);
}

TEST(TargetLogin, ContinuedRequestText) {
  Manual m;
  std::vector<uint8_t> text;
  TextKeys k = identity();
  k.add("AuthMethod", "None");
  encode_text(k, text);
  LoginRequestPdu rq;
  rq.cont = true;
  rq.data_segment_length = 10;
  ASSERT_EQ(m.tgt->on_request(rq, std::span(text).first(10), m.rs), LoginState::InProgress);
  EXPECT_EQ(m.rs.bhs.data_segment_length, 0u);  // an empty acknowledgement
  EXPECT_FALSE(m.rs.bhs.transit);
  rq.cont = false;
  rq.transit = true;
  rq.nsg = LoginStage::OperationalNegotiation;
  rq.data_segment_length = static_cast<uint32_t>(text.size() - 10);
  ASSERT_EQ(m.tgt->on_request(rq, std::span(text).subspan(10), m.rs), LoginState::InProgress);
  EXPECT_TRUE(m.rs.bhs.transit);
  EXPECT_EQ(m.rs.bhs.nsg, LoginStage::OperationalNegotiation);
}

TEST(TargetLogin, LongResponseGoesOutInPieces) {
  Fixture f;
  TargetLoginConfig cfg = f.tcfg;
  cfg.lookup = [](std::string_view, std::string_view) {
    TargetLookup t;
    t.kind = TargetLookup::Kind::Found;
    t.alias = std::string(250, 'a');
    return t;
  };
  TargetLogin tgt(cfg);
  // 120 unknown keys of ~60 bytes make the NotUnderstood answers exceed 8192 bytes.
  TextKeys k = identity();
  k.add("AuthMethod", "None");
  for (int i = 0; i < 120; ++i) k.add("X-vcp.k" + std::to_string(i) + std::string(50, 'x'), "1");
  std::vector<uint8_t> text;
  encode_text(k, text);
  LoginRequestPdu rq;
  rq.transit = true;
  rq.nsg = LoginStage::OperationalNegotiation;
  rq.data_segment_length = static_cast<uint32_t>(text.size());
  LoginResponseOut rs;
  ASSERT_EQ(tgt.on_request(rq, text, rs), LoginState::InProgress);
  std::vector<uint8_t> all = rs.data;
  int pieces = 1;
  while (rs.bhs.cont) {
    EXPECT_FALSE(rs.bhs.transit);
    EXPECT_LE(rs.data.size(), kLoginSegmentLength);
    LoginRequestPdu empty;
    ASSERT_EQ(tgt.on_request(empty, {}, rs), LoginState::InProgress);
    all.insert(all.end(), rs.data.begin(), rs.data.end());
    ++pieces;
  }
  EXPECT_TRUE(rs.bhs.transit);
  EXPECT_GE(pieces, 2);
  TextKeys back;
  ASSERT_EQ(parse_text(all, back), TextError::Ok);
  EXPECT_EQ(*back.find("AuthMethod"), "None");
}

TEST(InitiatorLogin, RejectsBadConfiguration) {
  Fixture f;
  f.icfg.target_chap = kTgt;  // mutual without our own credentials
  InitiatorLogin ini(f.icfg);
  ini.start();
  EXPECT_EQ(ini.state(), LoginState::Failed);
  Fixture g;
  g.icfg.chap = ChapCredentials{"u", "short"};
  InitiatorLogin ini2(g.icfg);
  ini2.start();
  EXPECT_EQ(ini2.state(), LoginState::Failed);
}

TEST(InitiatorLogin, RefusesResponseForAnotherLogin) {
  Fixture f;
  InitiatorLogin ini(f.icfg);
  ini.start();
  LoginResponsePdu rs;
  rs.itt = 0x1234;
  LoginRequestOut out;
  EXPECT_EQ(ini.on_response(rs, {}, out), LoginState::Failed);
}

TEST(LoginStatus, Strings) {
  EXPECT_EQ(to_string(LoginStatus::NotFound), "target not found");
  EXPECT_EQ(status_class(LoginStatus::AuthenticationFailure), 2);
  EXPECT_EQ(status_detail(LoginStatus::AuthenticationFailure), 1);
}

}  // namespace
}  // namespace vcp::iscsi

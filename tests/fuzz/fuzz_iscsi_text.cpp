// Text parsing and negotiation on both sides: the input is split at the first 0xff byte into
// what the initiator says and what the target says; both negotiators process what the other
// side said, and a target login state machine is fed the first part as a Login Request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "iscsi/chap.hpp"
#include "iscsi/login.hpp"
#include "iscsi/negotiation.hpp"
#include "iscsi/text.hpp"

using namespace vcp::iscsi;

namespace {

bool fixed_random(std::span<uint8_t> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 31 + 7);
  return true;
}

void negotiate(Role role, const TextKeys& keys, LoginStage stage) {
  Negotiator n(role, NegotiationLimits{});
  TextKeys offers;
  if (role == Role::Initiator) n.add_operational_offers(offers);
  TextKeys out;
  if (n.receive(keys, stage, out) == NegotiationError::Ok) {
    // Answers must themselves be valid text that parses back.
    std::vector<uint8_t> wire;
    encode_text(out, wire);
    TextKeys back;
    if (parse_text(wire, back) != TextError::Ok) abort();
    (void)n.finish();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* split = static_cast<const uint8_t*>(std::memchr(data, 0xff, size));
  const size_t first = split ? static_cast<size_t>(split - data) : size;
  const std::span<const uint8_t> a(data, first);
  const std::span<const uint8_t> b =
      split ? std::span<const uint8_t>(split + 1, size - first - 1) : std::span<const uint8_t>();

  TextKeys ka, kb;
  const TextError ea = parse_text(a, ka);
  const TextError eb = parse_text(b, kb);
  if (ea == TextError::Ok) {
    std::vector<uint8_t> wire;
    encode_text(ka, wire);
    TextKeys back;
    if (parse_text(wire, back) != TextError::Ok || !(back == ka)) abort();
    negotiate(Role::Target, ka, LoginStage::OperationalNegotiation);
    negotiate(Role::Target, ka, LoginStage::SecurityNegotiation);
    for (const auto& p : ka.pairs()) {
      (void)parse_number(p.value);
      (void)parse_binary(p.value);
    }
  }
  if (eb == TextError::Ok) negotiate(Role::Initiator, kb, LoginStage::OperationalNegotiation);

  // The target login machine, fed the first part (and the second as a follow-up request).
  TargetLoginConfig cfg;
  cfg.random = fixed_random;
  cfg.lookup = [](std::string_view, std::string_view) {
    TargetLookup t;
    t.kind = TargetLookup::Kind::Found;
    t.auth = TargetAuth{false, ChapCredentials{"user", "initiator-secret"},
                        ChapCredentials{"tgt", "target-secret-1"}};
    return t;
  };
  TargetLogin tgt(cfg);
  LoginRequestPdu rq;
  rq.transit = true;
  rq.nsg = LoginStage::OperationalNegotiation;
  rq.data_segment_length = static_cast<uint32_t>(a.size());
  LoginResponseOut rs;
  if (tgt.on_request(rq, a, rs) == LoginState::InProgress) {
    rq.csg = tgt.params().session_type == SessionType::Normal && rs.bhs.transit
                 ? rs.bhs.nsg
                 : LoginStage::SecurityNegotiation;
    if (rq.csg == LoginStage::OperationalNegotiation) rq.nsg = LoginStage::FullFeature;
    rq.data_segment_length = static_cast<uint32_t>(b.size());
    (void)tgt.on_request(rq, b, rs);
  }

  // The initiator login machine, fed the first part as a Login Response.
  InitiatorLoginConfig icfg;
  icfg.initiator_name = "iqn.2024-01.org.vcp:fuzz";
  icfg.target_name = "iqn.2024-01.org.vcp:t";
  icfg.chap = ChapCredentials{"user", "initiator-secret"};
  icfg.random = fixed_random;
  InitiatorLogin ini(icfg);
  LoginRequestOut out = ini.start();
  LoginResponsePdu lr;
  lr.itt = icfg.itt;
  lr.isid = icfg.isid;
  lr.data_segment_length = static_cast<uint32_t>(a.size());
  if (ini.on_response(lr, a, out) == LoginState::InProgress) {
    lr.csg = out.bhs.csg;
    lr.transit = true;
    lr.nsg = lr.csg == LoginStage::SecurityNegotiation ? LoginStage::OperationalNegotiation
                                                       : LoginStage::FullFeature;
    lr.tsih = 1;
    lr.data_segment_length = static_cast<uint32_t>(b.size());
    (void)ini.on_response(lr, b, out);
  }
  return 0;
}

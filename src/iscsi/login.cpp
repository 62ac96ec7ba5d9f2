#include "iscsi/login.hpp"

#include <algorithm>

namespace vcp::iscsi {

std::string_view to_string(LoginStatus s) {
  switch (s) {
    case LoginStatus::Success: return "success";
    case LoginStatus::TargetMovedTemporarily: return "target moved temporarily";
    case LoginStatus::TargetMovedPermanently: return "target moved permanently";
    case LoginStatus::InitiatorError: return "initiator error";
    case LoginStatus::AuthenticationFailure: return "authentication failure";
    case LoginStatus::AuthorizationFailure: return "authorization failure";
    case LoginStatus::NotFound: return "target not found";
    case LoginStatus::TargetRemoved: return "target removed";
    case LoginStatus::UnsupportedVersion: return "unsupported version";
    case LoginStatus::TooManyConnections: return "too many connections";
    case LoginStatus::MissingParameter: return "missing parameter";
    case LoginStatus::CantIncludeInSession: return "can't include in session";
    case LoginStatus::SessionTypeNotSupported: return "session type not supported";
    case LoginStatus::SessionDoesNotExist: return "session does not exist";
    case LoginStatus::InvalidDuringLogin: return "invalid request during login";
    case LoginStatus::TargetError: return "target error";
    case LoginStatus::ServiceUnavailable: return "service unavailable";
    case LoginStatus::OutOfResources: return "out of resources";
  }
  return "unknown login status";
}

namespace {

template <class Out>
std::vector<uint8_t> wire_bytes(const Out& pdu) {
  std::vector<uint8_t> bytes(pdu_length(0, static_cast<uint32_t>(pdu.data.size()), {}));
  const size_t n = encode_pdu(pdu.bhs, {}, pdu.data, {}, bytes);
  bytes.resize(n);
  return bytes;
}

bool has_chap_keys(const TextKeys& in) {
  return std::any_of(in.pairs().begin(), in.pairs().end(),
                     [](const TextPair& p) { return p.key.starts_with("CHAP_"); });
}

bool list_has(std::string_view list, std::string_view value) {
  const auto l = split_list(list);
  return std::find(l.begin(), l.end(), value) != l.end();
}

// Takes the next piece of a long text, at most one login PDU's worth.
std::vector<uint8_t> next_piece(const std::vector<uint8_t>& text, size_t& offset) {
  const size_t n = std::min<size_t>(kLoginSegmentLength, text.size() - offset);
  std::vector<uint8_t> piece(text.begin() + static_cast<long>(offset),
                             text.begin() + static_cast<long>(offset + n));
  offset += n;
  return piece;
}

}  // namespace

std::vector<uint8_t> to_wire(const LoginRequestOut& pdu) { return wire_bytes(pdu); }
std::vector<uint8_t> to_wire(const LoginResponseOut& pdu) { return wire_bytes(pdu); }

// ---------------------------------------------------------------------------------------------
// Target

TargetLogin::TargetLogin(TargetLoginConfig cfg)
    : cfg_(std::move(cfg)), negotiator_(Role::Target, cfg_.limits) {
  if (cfg_.tsih == 0) cfg_.tsih = 1;
  if (cfg_.cmd_window == 0) cfg_.cmd_window = 1;
  negotiator_.params().target_portal_group_tag = cfg_.portal_group_tag;
  negotiator_.params().has_target_portal_group_tag = true;
}

TargetLogin::~TargetLogin() = default;

void TargetLogin::fill_header(const LoginRequestPdu& rq, LoginResponsePdu& bhs) {
  bhs = LoginResponsePdu{};
  bhs.csg = stage_;
  bhs.isid = isid_;
  bhs.itt = rq.itt;
  bhs.stat_sn = stat_sn_++;
  bhs.exp_cmd_sn = exp_cmd_sn_;
  bhs.max_cmd_sn = exp_cmd_sn_ + cfg_.cmd_window - 1;
}

LoginState TargetLogin::fail(LoginStatus s, std::string why, const LoginRequestPdu& rq,
                             LoginResponseOut& out) {
  fill_header(rq, out.bhs);
  out.bhs.status_class = status_class(s);
  out.bhs.status_detail = status_detail(s);
  out.bhs.data_segment_length = static_cast<uint32_t>(out.data.size());
  status_ = s;
  failure_ = std::move(why);
  state_ = LoginState::Failed;
  return state_;
}

LoginState TargetLogin::send_chunk(LoginResponseOut& out) {
  out.data = next_piece(tx_text_, tx_offset_);
  const bool last = tx_offset_ >= tx_text_.size();
  out.bhs.cont = !last;
  out.bhs.transit = last && tx_transit_;
  out.bhs.nsg = out.bhs.transit ? tx_nsg_ : LoginStage::SecurityNegotiation;
  out.bhs.data_segment_length = static_cast<uint32_t>(out.data.size());
  if (last) {
    tx_text_.clear();
    tx_offset_ = 0;
    if (out.bhs.transit) {
      stage_ = tx_nsg_;
      if (stage_ == LoginStage::FullFeature) {
        out.bhs.tsih = cfg_.tsih;
        state_ = LoginState::FullFeature;
      }
    }
  }
  return state_;
}

LoginState TargetLogin::respond(const LoginRequestPdu& rq, TextKeys keys, bool transit,
                                LoginStage nsg, LoginResponseOut& out) {
  fill_header(rq, out.bhs);
  tx_text_.clear();
  encode_text(keys, tx_text_);
  tx_offset_ = 0;
  tx_transit_ = transit;
  tx_nsg_ = nsg;
  return send_chunk(out);
}

LoginState TargetLogin::on_request(const LoginRequestPdu& rq, std::span<const uint8_t> data,
                                   LoginResponseOut& out) {
  out.data.clear();
  if (state_ != LoginState::InProgress) return fail(LoginStatus::InitiatorError, "login is over", rq, out);
  if (++exchanges_ > kMaxLoginExchanges)
    return fail(LoginStatus::InitiatorError, "too many login PDUs", rq, out);
  if (!started_) {
    started_ = true;
    isid_ = rq.isid;
    cid_ = rq.cid;
    stat_sn_ = cfg_.first_stat_sn;
    stage_ = rq.csg;
    exp_cmd_sn_ = rq.cmd_sn;
    if (refuse_status_ != LoginStatus::Success) return fail(refuse_status_, refuse_why_, rq, out);
    if (rq.version_min > 0) return fail(LoginStatus::UnsupportedVersion, "version", rq, out);
    if (rq.tsih != 0)
      return fail(LoginStatus::SessionDoesNotExist, "only new sessions are supported", rq, out);
  } else if (rq.isid != isid_ || rq.tsih != 0 || rq.cid != cid_) {
    return fail(LoginStatus::InitiatorError, "ISID/TSIH/CID changed during login", rq, out);
  } else if (rq.csg != stage_) {
    return fail(LoginStatus::InitiatorError, "CSG changed without a transit", rq, out);
  }
  exp_cmd_sn_ = rq.cmd_sn;
  if (data.size() != rq.data_segment_length)
    return fail(LoginStatus::InitiatorError, "data length mismatch", rq, out);

  if (tx_offset_ > 0 && tx_offset_ < tx_text_.size()) {  // the initiator asks for more of ours
    if (!data.empty() || rq.cont)
      return fail(LoginStatus::InitiatorError, "expected an empty request", rq, out);
    fill_header(rq, out.bhs);
    return send_chunk(out);
  }
  if (rx_text_.size() + data.size() > kMaxLoginText)
    return fail(LoginStatus::InitiatorError, "login text too long", rq, out);
  rx_text_.insert(rx_text_.end(), data.begin(), data.end());
  if (rq.cont) return respond(rq, {}, false, LoginStage::SecurityNegotiation, out);

  TextKeys in;
  const TextError te = parse_text(rx_text_, in, {256, kMaxLoginText});
  rx_text_.clear();
  if (te != TextError::Ok) return fail(LoginStatus::InitiatorError, std::string(to_string(te)), rq, out);
  TextKeys reply;
  const NegotiationError ne = negotiator_.receive(in, stage_, reply);
  if (ne != NegotiationError::Ok)
    return fail(LoginStatus::InitiatorError, negotiator_.describe(ne), rq, out);
  if (!identified_ && identify(rq, out, reply) == LoginState::Failed) return state_;
  return stage_ == LoginStage::SecurityNegotiation ? security(rq, in, out, reply)
                                                   : operational(rq, in, out, reply);
}

LoginState TargetLogin::identify(const LoginRequestPdu& rq, LoginResponseOut& out,
                                 TextKeys& reply) {
  SessionParams& p = negotiator_.params();
  if (p.initiator_name.empty())
    return fail(LoginStatus::MissingParameter, "InitiatorName missing", rq, out);
  std::string alias;
  if (p.session_type == SessionType::Normal) {
    if (p.target_name.empty())
      return fail(LoginStatus::MissingParameter, "TargetName missing", rq, out);
    if (!cfg_.lookup) return fail(LoginStatus::TargetError, "no target lookup", rq, out);
    TargetLookup t = cfg_.lookup(p.target_name, p.initiator_name);
    switch (t.kind) {
      case TargetLookup::Kind::Found: break;
      case TargetLookup::Kind::NotFound:
        return fail(LoginStatus::NotFound, "no such target: " + p.target_name, rq, out);
      case TargetLookup::Kind::NotAuthorized:
        return fail(LoginStatus::AuthorizationFailure,
                    "initiator " + p.initiator_name + " may not log in to " + p.target_name, rq, out);
      case TargetLookup::Kind::Removed:
        return fail(LoginStatus::TargetRemoved, "target removed", rq, out);
      case TargetLookup::Kind::MovedTemporarily:
      case TargetLookup::Kind::MovedPermanently: {
        TextKeys k;
        k.add("TargetAddress", t.redirect_address);
        encode_text(k, out.data);
        return fail(t.kind == TargetLookup::Kind::MovedTemporarily
                        ? LoginStatus::TargetMovedTemporarily
                        : LoginStatus::TargetMovedPermanently,
                    "redirected to " + t.redirect_address, rq, out);
      }
    }
    auth_ = std::move(t.auth);
    alias = std::move(t.alias);
  } else {
    auth_ = cfg_.discovery_auth;
  }
  reply.add("TargetPortalGroupTag", std::to_string(cfg_.portal_group_tag));
  if (!alias.empty()) {
    reply.add("TargetAlias", alias);
    p.target_alias = alias;
  }
  identified_ = true;
  return state_;
}

LoginState TargetLogin::security(const LoginRequestPdu& rq, const TextKeys& in,
                                 LoginResponseOut& out, TextKeys& reply) {
  const Auth before = auth_state_;
  if (const std::string* am = in.find("AuthMethod")) {
    if (before != Auth::Undecided)
      return fail(LoginStatus::InitiatorError, "AuthMethod negotiated twice", rq, out);
    const bool chap_ok = list_has(*am, "CHAP") && auth_.incoming.has_value();
    const bool none_ok = list_has(*am, "None") && !auth_.require_chap;
    if (none_ok) {
      reply.add("AuthMethod", "None");
      auth_state_ = Auth::Done;
    } else if (chap_ok) {
      reply.add("AuthMethod", "CHAP");
      chap_ = std::make_unique<ChapTarget>(*auth_.incoming, auth_.outgoing, cfg_.random, auth_.algorithms);
      if (chap_->check_config() != ChapError::Ok)
        return fail(LoginStatus::TargetError, "CHAP credentials misconfigured", rq, out);
      auth_state_ = Auth::ChapAwaitAlgorithms;
    } else {
      return fail(LoginStatus::AuthenticationFailure, "no acceptable AuthMethod", rq, out);
    }
  } else if (before == Auth::Undecided) {
    if (auth_.require_chap)
      return fail(LoginStatus::AuthenticationFailure, "authentication required", rq, out);
    auth_state_ = Auth::Done;
  }

  if (auth_state_ == Auth::ChapAwaitAlgorithms && in.contains("CHAP_A")) {
    const ChapError e = chap_->on_algorithms(*in.find("CHAP_A"), reply);
    if (e == ChapError::UnsupportedAlgorithm)
      return fail(LoginStatus::AuthenticationFailure, "no CHAP algorithm in common: " + chap_->refusal(), rq, out);
    if (e != ChapError::Ok)
      return fail(LoginStatus::AuthenticationFailure, std::string(to_string(e)), rq, out);
    auth_state_ = Auth::ChapAwaitResponse;
  } else if (auth_state_ == Auth::ChapAwaitResponse && before == Auth::ChapAwaitResponse) {
    const ChapError e = chap_->on_response(in, reply);
    if (e != ChapError::Ok)
      return fail(LoginStatus::AuthenticationFailure, std::string(to_string(e)), rq, out);
    auth_state_ = Auth::Done;
    chap_done_ = true;
  } else if (has_chap_keys(in)) {
    return fail(LoginStatus::InitiatorError, "unexpected CHAP keys", rq, out);
  }

  if (!rq.transit || auth_state_ != Auth::Done)
    return respond(rq, std::move(reply), false, LoginStage::SecurityNegotiation, out);
  LoginStage nsg = rq.nsg;
  if (nsg == LoginStage::FullFeature) {
    // Skipping LoginOperationalNegotiation is fine unless we have keys to raise there.
    Negotiator probe = negotiator_;
    TextKeys tmp;
    probe.add_operational_offers(tmp);
    if (probe.has_outstanding_offers()) {
      nsg = LoginStage::OperationalNegotiation;
    } else {
      negotiator_.add_operational_offers(reply);  // declares our MaxRecvDataSegmentLength
      const NegotiationError ne = negotiator_.finish();
      if (ne != NegotiationError::Ok)
        return fail(LoginStatus::InitiatorError, negotiator_.describe(ne), rq, out);
    }
  }
  return respond(rq, std::move(reply), true, nsg, out);
}

LoginState TargetLogin::operational(const LoginRequestPdu& rq, const TextKeys&,
                                    LoginResponseOut& out, TextKeys& reply) {
  if (auth_state_ != Auth::Done) {
    // Reaching this stage without security negotiation: only where none is required.
    if (auth_state_ != Auth::Undecided || auth_.require_chap)
      return fail(LoginStatus::AuthenticationFailure, "authentication required", rq, out);
    auth_state_ = Auth::Done;
  }
  negotiator_.add_operational_offers(reply);
  if (!rq.transit || negotiator_.has_outstanding_offers())
    return respond(rq, std::move(reply), false, LoginStage::SecurityNegotiation, out);
  const NegotiationError ne = negotiator_.finish();
  if (ne != NegotiationError::Ok)
    return fail(LoginStatus::InitiatorError, negotiator_.describe(ne), rq, out);
  return respond(rq, std::move(reply), true, LoginStage::FullFeature, out);
}

// ---------------------------------------------------------------------------------------------
// Initiator

InitiatorLogin::InitiatorLogin(InitiatorLoginConfig cfg)
    : cfg_(std::move(cfg)), negotiator_(Role::Initiator, cfg_.limits) {
  SessionParams& p = negotiator_.params();
  p.initiator_name = cfg_.initiator_name;
  p.initiator_alias = cfg_.initiator_alias;
  p.session_type = cfg_.session_type;
  if (cfg_.session_type == SessionType::Normal) p.target_name = cfg_.target_name;
}

InitiatorLogin::~InitiatorLogin() = default;

LoginState InitiatorLogin::fail(LoginStatus s, std::string why) {
  status_ = s;
  failure_ = std::move(why);
  state_ = LoginState::Failed;
  return state_;
}

std::string InitiatorLogin::auth_offer() const {
  if (cfg_.target_chap) return "CHAP";
  if (cfg_.chap) return "CHAP,None";
  return "None";
}

LoginState InitiatorLogin::send_chunk(LoginRequestOut& out) {
  out.data = next_piece(tx_text_, tx_offset_);
  const bool last = tx_offset_ >= tx_text_.size();
  LoginRequestPdu& b = out.bhs;
  b = LoginRequestPdu{};
  b.cont = !last;
  b.transit = last && tx_transit_;
  b.csg = stage_;
  b.nsg = b.transit ? tx_nsg_ : LoginStage::SecurityNegotiation;
  b.data_segment_length = static_cast<uint32_t>(out.data.size());
  b.isid = cfg_.isid;
  b.itt = cfg_.itt;
  b.cid = cfg_.cid;
  b.cmd_sn = cfg_.cmd_sn;
  b.exp_stat_sn = exp_stat_sn_;
  if (last) {
    tx_text_.clear();
    tx_offset_ = 0;
  }
  return state_;
}

LoginState InitiatorLogin::request(TextKeys keys, bool transit, LoginStage nsg,
                                   LoginRequestOut& out) {
  tx_text_.clear();
  encode_text(keys, tx_text_);
  tx_offset_ = 0;
  tx_transit_ = transit;
  tx_nsg_ = nsg;
  return send_chunk(out);
}

LoginRequestOut InitiatorLogin::start() {
  LoginRequestOut out;
  if (cfg_.initiator_name.empty()) {
    fail(LoginStatus::InitiatorError, "no InitiatorName configured");
  } else if (cfg_.session_type == SessionType::Normal && cfg_.target_name.empty()) {
    fail(LoginStatus::InitiatorError, "no TargetName configured");
  } else if (cfg_.target_chap && !cfg_.chap) {
    fail(LoginStatus::InitiatorError, "mutual CHAP needs our own credentials too");
  } else if (cfg_.chap) {
    chap_ = std::make_unique<ChapInitiator>(*cfg_.chap, cfg_.target_chap, cfg_.random, cfg_.chap_algorithms);
    const ChapError e = chap_->check_config();
    if (e != ChapError::Ok) fail(LoginStatus::InitiatorError, std::string(to_string(e)));
  }
  TextKeys k;
  k.add("InitiatorName", cfg_.initiator_name);
  if (!cfg_.initiator_alias.empty()) k.add("InitiatorAlias", cfg_.initiator_alias);
  if (cfg_.session_type == SessionType::Normal) k.add("TargetName", cfg_.target_name);
  k.add("SessionType", cfg_.session_type == SessionType::Normal ? "Normal" : "Discovery");
  k.add("AuthMethod", auth_offer());
  request(std::move(k), true, LoginStage::OperationalNegotiation, out);
  return out;
}

LoginState InitiatorLogin::on_response(const LoginResponsePdu& rs, std::span<const uint8_t> data,
                                       LoginRequestOut& out) {
  out.data.clear();
  if (state_ != LoginState::InProgress) return state_;
  if (++exchanges_ > kMaxLoginExchanges) return fail(LoginStatus::InitiatorError, "login never ends");
  if (rs.itt != cfg_.itt || rs.isid != cfg_.isid)
    return fail(LoginStatus::InitiatorError, "response to another login");
  if (data.size() != rs.data_segment_length)
    return fail(LoginStatus::InitiatorError, "data length mismatch");
  exp_stat_sn_ = rs.stat_sn + 1;
  exp_cmd_sn_ = rs.exp_cmd_sn;
  max_cmd_sn_ = rs.max_cmd_sn;
  have_stat_sn_ = true;
  const auto status = static_cast<LoginStatus>(uint16_t{rs.status_class} << 8 | rs.status_detail);
  if (status != LoginStatus::Success) {
    TextKeys k;
    if (parse_text(data, k) == TextError::Ok && k.contains("TargetAddress"))
      redirect_ = *k.find("TargetAddress");
    return fail(status, "target refused the login: " + std::string(to_string(status)));
  }
  if (rs.version_active != 0) return fail(LoginStatus::InitiatorError, "unsupported version");
  if (rs.csg != stage_) return fail(LoginStatus::InitiatorError, "response for another stage");

  if (tx_offset_ > 0 && tx_offset_ < tx_text_.size()) {  // the target acknowledged a piece
    if (!data.empty() || rs.cont || rs.transit)
      return fail(LoginStatus::InitiatorError, "expected an empty response");
    return send_chunk(out);
  }
  if (rx_text_.size() + data.size() > kMaxLoginText)
    return fail(LoginStatus::InitiatorError, "login text too long");
  rx_text_.insert(rx_text_.end(), data.begin(), data.end());
  if (rs.cont) {
    if (rs.transit) return fail(LoginStatus::InitiatorError, "T and C together");
    return request({}, false, LoginStage::SecurityNegotiation, out);
  }
  TextKeys in;
  const TextError te = parse_text(rx_text_, in, {256, kMaxLoginText});
  rx_text_.clear();
  if (te != TextError::Ok) return fail(LoginStatus::InitiatorError, std::string(to_string(te)));
  return stage_ == LoginStage::SecurityNegotiation ? security(rs, in, out)
                                                   : operational(rs, in, out);
}

std::string TargetLogin::authentication() const {
  if (!chap_done_ || !chap_) return "none";
  return chap_description(chap_->mutual_requested(), chap_->algorithm());
}

std::string InitiatorLogin::authentication() const {
  if (!chap_ || auth_ != Auth::Done || !chap_used_) return "none";
  return chap_description(chap_->mutual(), chap_->algorithm());
}

std::string InitiatorLogin::chap_in_progress() const {
  if (!chap_ || auth_ != Auth::AwaitChapResult || chap_->algorithm() == ChapAlgorithm::Md5) return "";
  return "after the target chose CHAP " + std::string(to_string(chap_->algorithm())) + " (CHAP_A=" +
         std::to_string(static_cast<int>(chap_->algorithm())) +
         "): a target that numbers the algorithms otherwise (tgt takes 7 for SHA-1) refuses our answer; "
         "chap_algs= without it tells";
}

LoginState InitiatorLogin::security(const LoginResponsePdu& rs, const TextKeys& in,
                                    LoginRequestOut& out) {
  TextKeys reply;
  const NegotiationError ne = negotiator_.receive(in, LoginStage::SecurityNegotiation, reply);
  if (ne != NegotiationError::Ok) return fail(LoginStatus::InitiatorError, negotiator_.describe(ne));
  switch (auth_) {
    case Auth::AwaitMethod: {
      const std::string* am = in.find("AuthMethod");
      if (am && *am == "CHAP" && chap_) {
        chap_->start(reply);
        auth_ = Auth::AwaitChallenge;
        return request(std::move(reply), false, LoginStage::SecurityNegotiation, out);
      }
      const bool none = (am && *am == "None") || (!am && rs.transit);
      if (!none || cfg_.target_chap)
        return fail(LoginStatus::AuthenticationFailure, "target refused our AuthMethod");
      auth_ = Auth::Done;
      break;
    }
    case Auth::AwaitChallenge: {
      const ChapError e = chap_->on_challenge(in, reply);
      if (e != ChapError::Ok) return fail(LoginStatus::AuthenticationFailure, std::string(to_string(e)));
      chap_used_ = true;
      auth_ = Auth::AwaitChapResult;
      return request(std::move(reply), true, LoginStage::OperationalNegotiation, out);
    }
    case Auth::AwaitChapResult:
      if (chap_->mutual()) {
        const ChapError e = chap_->on_target_response(in);
        if (e != ChapError::Ok)
          return fail(LoginStatus::AuthenticationFailure, "target: " + std::string(to_string(e)));
      }
      auth_ = Auth::Done;
      break;
    case Auth::Done:
      break;
  }
  if (!rs.transit) return request(std::move(reply), true, LoginStage::OperationalNegotiation, out);
  stage_ = rs.nsg;
  if (stage_ == LoginStage::FullFeature) return enter_full_feature(rs);
  negotiator_.add_operational_offers(reply);
  return request(std::move(reply), true, LoginStage::FullFeature, out);
}

LoginState InitiatorLogin::operational(const LoginResponsePdu& rs, const TextKeys& in,
                                       LoginRequestOut& out) {
  TextKeys reply;
  const NegotiationError ne = negotiator_.receive(in, LoginStage::OperationalNegotiation, reply);
  if (ne != NegotiationError::Ok) return fail(LoginStatus::InitiatorError, negotiator_.describe(ne));
  if (rs.transit) {
    if (!reply.empty())
      return fail(LoginStatus::InitiatorError, "target ended the login with keys unanswered");
    return enter_full_feature(rs);
  }
  negotiator_.add_operational_offers(reply);
  return request(std::move(reply), true, LoginStage::FullFeature, out);
}

LoginState InitiatorLogin::enter_full_feature(const LoginResponsePdu& rs) {
  const NegotiationError ne = negotiator_.finish();
  if (ne != NegotiationError::Ok) return fail(LoginStatus::InitiatorError, negotiator_.describe(ne));
  if (rs.tsih == 0) return fail(LoginStatus::InitiatorError, "no TSIH in the final response");
  tsih_ = rs.tsih;
  state_ = LoginState::FullFeature;
  return state_;
}

}  // namespace vcp::iscsi

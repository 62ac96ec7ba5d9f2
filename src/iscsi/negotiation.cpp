#include "iscsi/negotiation.hpp"

#include <algorithm>
#include <array>

namespace vcp::iscsi {

namespace {

constexpr uint64_t kMaxSegment = 16777215;  // 2^24 - 1
constexpr size_t kMaxIscsiNameLength = 223;

using K = KeyKind;
using F = ResultFn;
using U = KeyUse;
using S = KeySender;
using C = KeyScope;

// RFC 7143 §13 (and RFC 7144 for iSCSIProtocolLevel / TaskReporting).
constexpr std::array kKeys = {
    KeyDef{"HeaderDigest", K::List, F::None, U::InitializeOnly, S::Both, C::Connection, 0, 0, "None"},
    KeyDef{"DataDigest", K::List, F::None, U::InitializeOnly, S::Both, C::Connection, 0, 0, "None"},
    KeyDef{"MaxConnections", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 1, 65535, "1", true},
    KeyDef{"SendTargets", K::Declarative, F::None, U::FullFeatureOnly, S::Initiator, C::Session},
    KeyDef{"TargetName", K::Declarative, F::None, U::InitializeOnly, S::Initiator, C::Session},
    KeyDef{"InitiatorName", K::Declarative, F::None, U::InitializeOnly, S::Initiator, C::Session},
    KeyDef{"TargetAlias", K::Declarative, F::None, U::All, S::Target, C::Session},
    KeyDef{"InitiatorAlias", K::Declarative, F::None, U::All, S::Initiator, C::Session},
    KeyDef{"TargetAddress", K::Declarative, F::None, U::All, S::Target, C::Session},
    KeyDef{"TargetPortalGroupTag", K::DeclarativeNumber, F::None, U::InitializeOnly, S::Target, C::Session, 0, 65535},
    KeyDef{"InitialR2T", K::Boolean, F::Or, U::LeadingOnly, S::Both, C::Session, 0, 0, "Yes", true},
    KeyDef{"ImmediateData", K::Boolean, F::And, U::LeadingOnly, S::Both, C::Session, 0, 0, "Yes", true},
    KeyDef{"MaxRecvDataSegmentLength", K::DeclarativeNumber, F::None, U::All, S::Both, C::Connection, 512, kMaxSegment, "8192"},
    KeyDef{"MaxBurstLength", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 512, kMaxSegment, "262144", true},
    KeyDef{"FirstBurstLength", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 512, kMaxSegment, "65536", true},
    KeyDef{"DefaultTime2Wait", K::Numerical, F::Max, U::LeadingOnly, S::Both, C::Session, 0, 3600, "2"},
    KeyDef{"DefaultTime2Retain", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 0, 3600, "20"},
    KeyDef{"MaxOutstandingR2T", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 1, 65535, "1", true},
    KeyDef{"DataPDUInOrder", K::Boolean, F::Or, U::LeadingOnly, S::Both, C::Session, 0, 0, "Yes", true},
    KeyDef{"DataSequenceInOrder", K::Boolean, F::Or, U::LeadingOnly, S::Both, C::Session, 0, 0, "Yes", true},
    KeyDef{"ErrorRecoveryLevel", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 0, 2, "0"},
    KeyDef{"SessionType", K::Declarative, F::None, U::LeadingOnly, S::Initiator, C::Session, 0, 0, "Normal"},
    KeyDef{"iSCSIProtocolLevel", K::Numerical, F::Min, U::LeadingOnly, S::Both, C::Session, 0, 31, "0", true},
    KeyDef{"TaskReporting", K::List, F::None, U::LeadingOnly, S::Both, C::Session, 0, 0, "RFC3720", true},
    // Markers were dropped by RFC 7143; older initiators still send them. We answer No and
    // reject the intervals.
    KeyDef{"IFMarker", K::Boolean, F::And, U::InitializeOnly, S::Both, C::Connection, 0, 0, "No"},
    KeyDef{"OFMarker", K::Boolean, F::And, U::InitializeOnly, S::Both, C::Connection, 0, 0, "No"},
    KeyDef{"IFMarkInt", K::List, F::None, U::InitializeOnly, S::Both, C::Connection, 0, 0, "2048"},
    KeyDef{"OFMarkInt", K::List, F::None, U::InitializeOnly, S::Both, C::Connection, 0, 0, "2048"},
    KeyDef{"AuthMethod", K::List, F::None, U::Security, S::Both, C::Session, 0, 0, "None"},
    KeyDef{"CHAP_A", K::List, F::None, U::Security, S::Both, C::Session},
    KeyDef{"CHAP_I", K::Declarative, F::None, U::Security, S::Both, C::Session},
    KeyDef{"CHAP_C", K::Declarative, F::None, U::Security, S::Both, C::Session},
    KeyDef{"CHAP_N", K::Declarative, F::None, U::Security, S::Both, C::Session},
    KeyDef{"CHAP_R", K::Declarative, F::None, U::Security, S::Both, C::Session},
};

bool is_special(std::string_view v) {
  return v == kReject || v == kIrrelevant || v == kNotUnderstood;
}

std::string_view digest_offer(DigestPolicy p) {
  switch (p) {
    case DigestPolicy::None: return "None";
    case DigestPolicy::Allow: return "None,CRC32C";
    case DigestPolicy::Prefer: return "CRC32C,None";
    case DigestPolicy::Require: return "CRC32C";
  }
  return "None";
}

bool digest_supported(DigestPolicy p, std::string_view v) {
  if (v == "None") return p != DigestPolicy::Require;
  if (v == "CRC32C") return p != DigestPolicy::None;
  return false;
}

// The keys the initiator offers in LoginOperationalNegotiation, in the order it sends them.
constexpr std::array<std::string_view, 13> kInitiatorOffers = {
    "HeaderDigest",       "DataDigest",     "MaxConnections",   "InitialR2T",
    "ImmediateData",      "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
    "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
    "ErrorRecoveryLevel"};

}  // namespace

std::span<const KeyDef> key_table() { return kKeys; }

const KeyDef* find_key(std::string_view name) {
  for (const auto& k : kKeys)
    if (k.name == name) return &k;
  return nullptr;
}

std::string_view to_string(NegotiationError e) {
  switch (e) {
    case NegotiationError::Ok: return "ok";
    case NegotiationError::Renegotiated: return "key negotiated twice";
    case NegotiationError::WrongSender: return "key not allowed from this side";
    case NegotiationError::WrongStage: return "key not allowed in this stage";
    case NegotiationError::BadAnswer: return "answer violates the result function";
    case NegotiationError::BadDeclaration: return "declared value invalid";
    case NegotiationError::UnexpectedAnswer: return "answer to a key never offered";
    case NegotiationError::RequiredRefused: return "peer refused a required value";
    case NegotiationError::Inconsistent: return "FirstBurstLength exceeds MaxBurstLength";
    case NegotiationError::Unanswered: return "offer left unanswered";
  }
  return "unknown NegotiationError";
}

Negotiator::Negotiator(Role role, const NegotiationLimits& limits) : role_(role), limits_(limits) {
  params_.max_recv_data_segment_length = limits.max_recv_data_segment_length;
}

std::string Negotiator::our_value(const KeyDef& def) const {
  const std::string_view n = def.name;
  if (n == "HeaderDigest") return std::string(digest_offer(limits_.header_digest));
  if (n == "DataDigest") return std::string(digest_offer(limits_.data_digest));
  if (n == "MaxConnections") return std::to_string(limits_.max_connections);
  if (n == "InitialR2T") return std::string(boolean_value(limits_.initial_r2t));
  if (n == "ImmediateData") return std::string(boolean_value(limits_.immediate_data));
  if (n == "MaxBurstLength") return std::to_string(limits_.max_burst_length);
  if (n == "FirstBurstLength") return std::to_string(limits_.first_burst_length);
  if (n == "DefaultTime2Wait") return std::to_string(limits_.default_time2wait);
  if (n == "DefaultTime2Retain") return std::to_string(limits_.default_time2retain);
  if (n == "MaxOutstandingR2T") return std::to_string(limits_.max_outstanding_r2t);
  if (n == "DataPDUInOrder") return std::string(boolean_value(limits_.data_pdu_in_order));
  if (n == "DataSequenceInOrder") return std::string(boolean_value(limits_.data_sequence_in_order));
  if (n == "ErrorRecoveryLevel") return std::to_string(limits_.error_recovery_level);
  if (n == "iSCSIProtocolLevel") return std::to_string(limits_.iscsi_protocol_level);
  if (n == "TaskReporting") return "RFC3720";
  return default_for(def);  // markers: "No"
}

void Negotiator::apply(const KeyDef& def, std::string_view value) {
  const std::string_view n = def.name;
  const auto num = [&] { return static_cast<uint32_t>(parse_number(value).value_or(0)); };
  const auto yes = [&] { return value == "Yes"; };
  if (n == "HeaderDigest") params_.header_digest = value == "CRC32C";
  else if (n == "DataDigest") params_.data_digest = value == "CRC32C";
  else if (n == "MaxConnections") params_.max_connections = num();
  else if (n == "InitialR2T") params_.initial_r2t = yes();
  else if (n == "ImmediateData") params_.immediate_data = yes();
  else if (n == "MaxRecvDataSegmentLength") params_.max_send_data_segment_length = num();
  else if (n == "MaxBurstLength") params_.max_burst_length = num();
  else if (n == "FirstBurstLength") params_.first_burst_length = num();
  else if (n == "DefaultTime2Wait") params_.default_time2wait = num();
  else if (n == "DefaultTime2Retain") params_.default_time2retain = num();
  else if (n == "MaxOutstandingR2T") params_.max_outstanding_r2t = num();
  else if (n == "DataPDUInOrder") params_.data_pdu_in_order = yes();
  else if (n == "DataSequenceInOrder") params_.data_sequence_in_order = yes();
  else if (n == "ErrorRecoveryLevel") params_.error_recovery_level = num();
  else if (n == "iSCSIProtocolLevel") params_.iscsi_protocol_level = num();
  else if (n == "SessionType")
    params_.session_type = value == "Discovery" ? SessionType::Discovery : SessionType::Normal;
  else if (n == "TargetName") params_.target_name = std::string(value);
  else if (n == "InitiatorName") params_.initiator_name = std::string(value);
  else if (n == "TargetAlias") params_.target_alias = std::string(value);
  else if (n == "InitiatorAlias") params_.initiator_alias = std::string(value);
  else if (n == "TargetPortalGroupTag") {
    params_.target_portal_group_tag = static_cast<uint16_t>(num());
    params_.has_target_portal_group_tag = true;
  }
}

bool Negotiator::irrelevant(const KeyDef& def) const {
  if (def.irrelevant_in_discovery && params_.session_type == SessionType::Discovery) return true;
  return def.name == "FirstBurstLength" && !params_.first_burst_relevant();
}

void Negotiator::offer(std::string_view name, std::string value, TextKeys& out) {
  const KeyDef* def = find_key(name);
  if (def && def->kind != KeyKind::Declarative && def->kind != KeyKind::DeclarativeNumber) {
    KeyState& st = state_[std::string(name)];
    st.offered_by_us = true;
    st.answered = false;
    st.our_offer = value;
  }
  out.add(std::string(name), std::move(value));
}

void Negotiator::add_operational_offers(TextKeys& out) {
  if (!declared_mrdsl_) {
    out.add("MaxRecvDataSegmentLength", std::to_string(limits_.max_recv_data_segment_length));
    declared_mrdsl_ = true;
  }
  for (std::string_view name : kInitiatorOffers) {
    const KeyDef& def = *find_key(name);
    if (state_.contains(name) || irrelevant(def)) continue;
    const std::string ours = our_value(def);
    if (role_ == Role::Target) {
      // The target raises a key only when the default would be wrong for it.
      bool needed = false;
      if (def.kind == KeyKind::List) {
        needed = !digest_supported(name == "HeaderDigest" ? limits_.header_digest
                                                          : limits_.data_digest,
                                   def.default_value);
      } else if (def.kind == KeyKind::Boolean) {
        const bool mine = ours == "Yes";
        const bool dflt = def.default_value == "Yes";
        needed = def.fn == ResultFn::And ? (!mine && dflt) : (mine && !dflt);
      } else {
        const uint64_t mine = *parse_number(ours);
        const uint64_t dflt = *parse_number(def.default_value);
        needed = def.fn == ResultFn::Min ? mine < dflt : mine > dflt;
      }
      if (!needed) continue;
    }
    offer(name, ours, out);
  }
}

NegotiationError Negotiator::declare(const KeyDef& def, const std::string& value) {
  if (def.kind == KeyKind::DeclarativeNumber) {
    const auto n = parse_number(value);
    if (!n || *n < def.min || *n > def.max) return NegotiationError::BadDeclaration;
  } else if (def.name == "SessionType") {
    if (value != "Normal" && value != "Discovery") return NegotiationError::BadDeclaration;
  } else if (def.name == "TargetName" || def.name == "InitiatorName") {
    if (value.empty() || value.size() > kMaxIscsiNameLength) return NegotiationError::BadDeclaration;
  }
  apply(def, value);
  return NegotiationError::Ok;
}

NegotiationError Negotiator::answer_offer(const KeyDef& def, const std::string& value,
                                          TextKeys& out) {
  const std::string name(def.name);
  if (irrelevant(def)) {
    out.add(name, std::string(kIrrelevant));
    return NegotiationError::Ok;
  }
  std::string result;
  switch (def.kind) {
    case KeyKind::Boolean: {
      const auto theirs = parse_boolean(value);
      if (theirs) {
        const bool mine = our_value(def) == "Yes";
        result = boolean_value(def.fn == ResultFn::And ? (mine && *theirs) : (mine || *theirs));
      }
      break;
    }
    case KeyKind::Numerical: {
      const auto theirs = parse_number(value);
      if (theirs && *theirs >= def.min && *theirs <= def.max) {
        uint64_t mine = *parse_number(our_value(def));
        if (def.name == "FirstBurstLength") mine = std::min<uint64_t>(mine, params_.max_burst_length);
        result = std::to_string(def.fn == ResultFn::Min ? std::min(mine, *theirs)
                                                        : std::max(mine, *theirs));
      }
      break;
    }
    case KeyKind::List: {
      for (std::string_view candidate : split_list(value)) {
        bool ok = false;
        if (def.name == "HeaderDigest") ok = digest_supported(limits_.header_digest, candidate);
        else if (def.name == "DataDigest") ok = digest_supported(limits_.data_digest, candidate);
        else if (def.name == "TaskReporting") ok = candidate == "RFC3720";
        if (ok) {
          result = std::string(candidate);
          break;
        }
      }
      break;
    }
    case KeyKind::Declarative:
    case KeyKind::DeclarativeNumber:
      return declare(def, value);
  }
  if (result.empty()) {
    out.add(name, std::string(kReject));  // out of range, malformed or nothing acceptable
    return NegotiationError::Ok;
  }
  apply(def, result);
  out.add(name, std::move(result));
  return NegotiationError::Ok;
}

NegotiationError Negotiator::take_answer(const KeyDef& def, KeyState& st,
                                         const std::string& value) {
  if (is_special(value)) {
    // The default stands; unless the default is something we refuse.
    if (def.name == "HeaderDigest" && limits_.header_digest == DigestPolicy::Require)
      return NegotiationError::RequiredRefused;
    if (def.name == "DataDigest" && limits_.data_digest == DigestPolicy::Require)
      return NegotiationError::RequiredRefused;
    return NegotiationError::Ok;
  }
  switch (def.kind) {
    case KeyKind::Boolean: {
      const auto theirs = parse_boolean(value);
      if (!theirs) return NegotiationError::BadAnswer;
      const bool mine = st.our_offer == "Yes";
      if (def.fn == ResultFn::And && !mine && *theirs) return NegotiationError::BadAnswer;
      if (def.fn == ResultFn::Or && mine && !*theirs) return NegotiationError::BadAnswer;
      break;
    }
    case KeyKind::Numerical: {
      const auto theirs = parse_number(value);
      const auto mine = parse_number(st.our_offer);
      if (!theirs || !mine || *theirs < def.min || *theirs > def.max)
        return NegotiationError::BadAnswer;
      if (def.fn == ResultFn::Min && *theirs > *mine) return NegotiationError::BadAnswer;
      if (def.fn == ResultFn::Max && *theirs < *mine) return NegotiationError::BadAnswer;
      break;
    }
    case KeyKind::List: {
      const auto offered = split_list(st.our_offer);
      if (std::find(offered.begin(), offered.end(), value) == offered.end()) {
        // A digest we require answered with one we did not offer (tgtd says None to a
        // CRC32C it is not set up for, though the RFC wants Reject): refused, so say that.
        if ((def.name == "HeaderDigest" && limits_.header_digest == DigestPolicy::Require) ||
            (def.name == "DataDigest" && limits_.data_digest == DigestPolicy::Require))
          return NegotiationError::RequiredRefused;
        return NegotiationError::BadAnswer;
      }
      break;
    }
    case KeyKind::Declarative:
    case KeyKind::DeclarativeNumber:
      return NegotiationError::BadAnswer;
  }
  apply(def, value);
  return NegotiationError::Ok;
}

NegotiationError Negotiator::handle(const KeyDef& def, const std::string& value,
                                    LoginStage stage, TextKeys& out) {
  const bool declarative = def.kind == KeyKind::Declarative || def.kind == KeyKind::DeclarativeNumber;
  if (def.use == KeyUse::FullFeatureOnly && stage != LoginStage::FullFeature)
    return NegotiationError::WrongStage;
  if ((def.use == KeyUse::LeadingOnly || def.use == KeyUse::InitializeOnly) &&
      stage == LoginStage::FullFeature)
    return NegotiationError::WrongStage;
  // Operational negotiation starts after security negotiation (§6.3); declarations may come
  // in either stage.
  if (stage == LoginStage::SecurityNegotiation && !declarative) return NegotiationError::WrongStage;
  const Role sender = role_ == Role::Initiator ? Role::Target : Role::Initiator;
  if ((def.sender == KeySender::Initiator && sender != Role::Initiator) ||
      (def.sender == KeySender::Target && sender != Role::Target))
    return NegotiationError::WrongSender;

  KeyState& st = state_[std::string(def.name)];
  if (st.offered_by_us && !st.answered) {
    st.answered = true;
    return take_answer(def, st, value);
  }
  if (st.answered && !(declarative && def.use == KeyUse::All && stage == LoginStage::FullFeature)) {
    // The names and the session type said again, unchanged, in a later login PDU: libiscsi
    // does so in its first operational PDU after a security stage that needed no CHAP. tgt
    // and LIO let it pass; the same value again changes nothing. A different one still fails.
    if (declarative && def.use != KeyUse::All && stage != LoginStage::FullFeature && value == st.declared)
      return NegotiationError::Ok;
    return NegotiationError::Renegotiated;
  }
  if (is_special(value)) return NegotiationError::UnexpectedAnswer;
  st.answered = true;
  if (declarative) st.declared = value;
  return answer_offer(def, value, out);
}

NegotiationError Negotiator::receive(const TextKeys& in, LoginStage stage, TextKeys& out) {
  // SessionType first (it makes keys irrelevant), FirstBurstLength last (its answer depends on
  // InitialR2T, ImmediateData and MaxBurstLength from the same text).
  const auto pass = [&](auto select) -> NegotiationError {
    for (const auto& p : in.pairs()) {
      if (!select(p.key)) continue;
      const KeyDef* def = find_key(p.key);
      if (!def) {
        if (!is_special(p.value)) out.add(p.key, std::string(kNotUnderstood));
        continue;
      }
      if (def->use == KeyUse::Security) {
        if (stage != LoginStage::SecurityNegotiation) return NegotiationError::WrongStage;
        continue;  // the login state machine handles authentication
      }
      const NegotiationError e = handle(*def, p.value, stage, out);
      if (e != NegotiationError::Ok) {
        error_detail_ = p.key + "=" + p.value;
        const auto st = state_.find(p.key);
        if (st != state_.end() && st->second.offered_by_us)
          error_detail_ += " (we offered " + st->second.our_offer + ")";
        return e;
      }
    }
    return NegotiationError::Ok;
  };
  NegotiationError e = pass([](std::string_view k) { return k == "SessionType"; });
  if (e == NegotiationError::Ok)
    e = pass([](std::string_view k) { return k != "SessionType" && k != "FirstBurstLength"; });
  if (e == NegotiationError::Ok)
    e = pass([](std::string_view k) { return k == "FirstBurstLength"; });
  return e;
}

bool Negotiator::has_outstanding_offers() const {
  return std::any_of(state_.begin(), state_.end(),
                     [](const auto& kv) { return kv.second.offered_by_us && !kv.second.answered; });
}

NegotiationError Negotiator::finish() {
  error_detail_.clear();
  for (const auto& [name, st] : state_) {
    if (st.offered_by_us && !st.answered) {
      error_detail_ = name + "=" + st.our_offer;
      return NegotiationError::Unanswered;
    }
  }
  if (limits_.header_digest == DigestPolicy::Require && !params_.header_digest) {
    error_detail_ = "HeaderDigest=None";
    return NegotiationError::RequiredRefused;
  }
  if (limits_.data_digest == DigestPolicy::Require && !params_.data_digest) {
    error_detail_ = "DataDigest=None";
    return NegotiationError::RequiredRefused;
  }
  if (params_.session_type == SessionType::Normal && params_.first_burst_relevant() &&
      params_.first_burst_length > params_.max_burst_length)
    return NegotiationError::Inconsistent;
  return NegotiationError::Ok;
}

std::string Negotiator::describe(NegotiationError e) const {
  std::string out(to_string(e));
  if (e != NegotiationError::Ok && !error_detail_.empty()) out += ": " + error_detail_;
  return out;
}

}  // namespace vcp::iscsi

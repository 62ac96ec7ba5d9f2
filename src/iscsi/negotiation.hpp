// Declarative key negotiation (RFC 7143 §6.2, §13): one table says what each key is (type,
// result function, range, default, who may send it, in which stage, whether it is session or
// connection wide), and a Negotiator applies it for either side of a login.
//
// The Negotiator never sees sockets or PDUs: it takes the peer's keys (one reassembled text)
// and produces our answers and offers, tracking which of our offers are still unanswered.
// Security keys (AuthMethod, CHAP_*) pass through untouched: the login state machine owns them.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "iscsi/pdu.hpp"
#include "iscsi/text.hpp"

namespace vcp::iscsi {

enum class Role : uint8_t { Initiator, Target };

enum class KeyKind : uint8_t {
  Boolean,           // Yes/No with an AND or OR result function
  Numerical,         // a number with a Min or Max result function
  List,              // the acceptor picks the first value of the offer it supports
  Declarative,       // a string the sender states; no answer
  DeclarativeNumber, // a number the sender states (MaxRecvDataSegmentLength, TPGT); no answer
};
enum class ResultFn : uint8_t { None, And, Or, Min, Max };
enum class KeyUse : uint8_t {
  Security,        // SecurityNegotiation stage only (AuthMethod, CHAP_*)
  LeadingOnly,     // LO: login of the session's first connection
  InitializeOnly,  // IO: any login, never in Full Feature Phase
  All,             // login and Full Feature Phase
  FullFeatureOnly, // FFPO: Text requests after login (SendTargets)
};
enum class KeySender : uint8_t { Initiator, Target, Both };
enum class KeyScope : uint8_t { Session, Connection };

struct KeyDef {
  std::string_view name;
  KeyKind kind;
  ResultFn fn;
  KeyUse use;
  KeySender sender;
  KeyScope scope;
  uint64_t min = 0;  // numerical range (inclusive)
  uint64_t max = 0;
  std::string_view default_value;
  bool irrelevant_in_discovery = false;
};

std::span<const KeyDef> key_table();
const KeyDef* find_key(std::string_view name);

enum class SessionType : uint8_t { Normal, Discovery };

// The operational parameters a login settles. Defaults are RFC 7143's.
struct SessionParams {
  bool header_digest = false;  // CRC32C
  bool data_digest = false;
  uint32_t max_connections = 1;
  bool initial_r2t = true;
  bool immediate_data = true;
  // Declarative and per direction: what we accept in one PDU (we declared it), and what the
  // peer accepts (it declared it; 8192 until it does).
  uint32_t max_recv_data_segment_length = 8192;
  uint32_t max_send_data_segment_length = 8192;
  uint32_t max_burst_length = 262144;
  uint32_t first_burst_length = 65536;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_outstanding_r2t = 1;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  uint32_t error_recovery_level = 0;
  uint32_t iscsi_protocol_level = 0;
  SessionType session_type = SessionType::Normal;
  std::string target_name;
  std::string initiator_name;
  std::string target_alias;
  std::string initiator_alias;
  uint16_t target_portal_group_tag = 0;
  bool has_target_portal_group_tag = false;

  Digests digests() const { return Digests{header_digest, data_digest}; }
  // FirstBurstLength matters only when unsolicited data is possible.
  bool first_burst_relevant() const { return !(initial_r2t && !immediate_data); }
};

enum class DigestPolicy : uint8_t {
  None,     // offer/accept None only
  Allow,    // offer "None,CRC32C"; accept either
  Prefer,   // offer "CRC32C,None"; accept either
  Require,  // offer/accept CRC32C only
};

// What this side offers and accepts. Numbers are limits for Min keys (we answer no more than
// this) and floors for Max keys; booleans are our preference.
struct NegotiationLimits {
  DigestPolicy header_digest = DigestPolicy::Allow;
  DigestPolicy data_digest = DigestPolicy::Allow;
  uint32_t max_connections = 1;  // multiple connections per session are not supported
  bool initial_r2t = true;
  bool immediate_data = true;
  uint32_t max_recv_data_segment_length = 262144;
  uint32_t max_burst_length = 262144;
  uint32_t first_burst_length = 65536;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_outstanding_r2t = 1;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  uint32_t error_recovery_level = 0;  // only ERL 0 is implemented
  uint32_t iscsi_protocol_level = 1;  // RFC 7143

  bool operator==(const NegotiationLimits&) const = default;
};

enum class NegotiationError : uint8_t {
  Ok,
  Renegotiated,     // a key negotiated earlier in this login came again
  WrongSender,      // e.g. TargetPortalGroupTag from an initiator
  WrongStage,       // an operational key in SecurityNegotiation, SendTargets during login ...
  BadAnswer,        // the peer answered our offer with a value the result function forbids
  BadDeclaration,   // a declarative value out of range or malformed
  UnexpectedAnswer, // Reject/Irrelevant/NotUnderstood for a key we did not offer
  RequiredRefused,  // the peer refused something we require (a digest we insist on)
  Inconsistent,     // FirstBurstLength > MaxBurstLength after negotiation
  Unanswered,       // login ended with one of our offers unanswered
};
std::string_view to_string(NegotiationError e);

class Negotiator {
 public:
  Negotiator(Role role, const NegotiationLimits& limits);

  Role role() const { return role_; }
  // Declaratives we state at login start. The initiator sets the session's identity; the
  // target sets its portal group tag and alias.
  SessionParams& params() { return params_; }
  const SessionParams& params() const { return params_; }

  // Appends our offers for the operational stage and our declaration of
  // MaxRecvDataSegmentLength. The initiator offers every key it cares about; the target only
  // those whose defaults it cannot live with and the initiator did not raise. Call after
  // receive() for the same PDU on the target side.
  void add_operational_offers(TextKeys& out);
  // Processes the peer's keys (not security keys) for the given stage; answers to the peer's
  // offers are appended to out.
  NegotiationError receive(const TextKeys& in, LoginStage stage, TextKeys& out);
  // True while any of our offers waits for an answer (the target must not transit then).
  bool has_outstanding_offers() const;
  // Final checks when the login reaches Full Feature Phase.
  NegotiationError finish();
  // After receive() or finish() failed: the key it failed on, as a user can act on it:
  // "HeaderDigest=None (we offered CRC32C)", "MaxBurstLength=x"; empty when no key is to blame.
  const std::string& error_detail() const { return error_detail_; }
  // to_string(e) with error_detail() after it: "answer violates the result function:
  // HeaderDigest=None (we offered CRC32C)".
  std::string describe(NegotiationError e) const;

 private:
  struct KeyState {
    bool offered_by_us = false;
    bool answered = false;  // our offer answered, or the peer's offer answered / declared
    std::string our_offer;
    std::string declared;  // the peer's declaration, for a declarative key
  };

  NegotiationError handle(const KeyDef& def, const std::string& value, LoginStage stage,
                          TextKeys& out);
  NegotiationError answer_offer(const KeyDef& def, const std::string& value, TextKeys& out);
  NegotiationError take_answer(const KeyDef& def, KeyState& st, const std::string& value);
  NegotiationError declare(const KeyDef& def, const std::string& value);
  void offer(std::string_view name, std::string value, TextKeys& out);
  bool irrelevant(const KeyDef& def) const;
  // Our value for a negotiated key, as we would offer it.
  std::string our_value(const KeyDef& def) const;
  // Stores a settled value into params_.
  void apply(const KeyDef& def, std::string_view value);
  std::string default_for(const KeyDef& def) const { return std::string(def.default_value); }

  Role role_;
  NegotiationLimits limits_;
  SessionParams params_;
  std::map<std::string, KeyState, std::less<>> state_;
  bool declared_mrdsl_ = false;
  std::string error_detail_;
};

}  // namespace vcp::iscsi

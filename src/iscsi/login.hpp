// The login phase (RFC 7143 §6.3, §11.12-11.13) for both sides as pure logic: Login PDUs in,
// Login PDUs out, no sockets. Stages SecurityNegotiation -> LoginOperationalNegotiation ->
// FullFeaturePhase, the T/C/CSG/NSG bits, text continuation across PDUs, ISID/TSIH, status
// classes, CHAP through chap.hpp and operational keys through negotiation.hpp.
//
// One connection per session: a login naming an existing session (TSIH != 0) is refused.
// Digests never apply during login (they start with Full Feature Phase).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "iscsi/chap.hpp"
#include "iscsi/negotiation.hpp"
#include "iscsi/pdu.hpp"
#include "iscsi/text.hpp"

namespace vcp::iscsi {

// Status-Class << 8 | Status-Detail (§11.13.5).
enum class LoginStatus : uint16_t {
  Success = 0x0000,
  TargetMovedTemporarily = 0x0101,
  TargetMovedPermanently = 0x0102,
  InitiatorError = 0x0200,
  AuthenticationFailure = 0x0201,
  AuthorizationFailure = 0x0202,
  NotFound = 0x0203,
  TargetRemoved = 0x0204,
  UnsupportedVersion = 0x0205,
  TooManyConnections = 0x0206,
  MissingParameter = 0x0207,
  CantIncludeInSession = 0x0208,
  SessionTypeNotSupported = 0x0209,
  SessionDoesNotExist = 0x020a,
  InvalidDuringLogin = 0x020b,
  TargetError = 0x0300,
  ServiceUnavailable = 0x0301,
  OutOfResources = 0x0302,
};
std::string_view to_string(LoginStatus s);
constexpr uint8_t status_class(LoginStatus s) { return static_cast<uint8_t>(static_cast<uint16_t>(s) >> 8); }
constexpr uint8_t status_detail(LoginStatus s) { return static_cast<uint8_t>(static_cast<uint16_t>(s)); }

// During login both sides assume the peer takes 8192 bytes per PDU (the default
// MaxRecvDataSegmentLength); longer texts go out in several PDUs with the C bit.
constexpr uint32_t kLoginSegmentLength = 8192;
constexpr size_t kMaxLoginText = 64 * 1024;  // reassembled text we accept
constexpr int kMaxLoginExchanges = 32;       // round trips before we give up

struct LoginRequestOut {
  LoginRequestPdu bhs;
  std::vector<uint8_t> data;
};
struct LoginResponseOut {
  LoginResponsePdu bhs;
  std::vector<uint8_t> data;
};
// The PDU as bytes on the wire (BHS + data + pad; no digests during login).
std::vector<uint8_t> to_wire(const LoginRequestOut& pdu);
std::vector<uint8_t> to_wire(const LoginResponseOut& pdu);

enum class LoginState : uint8_t { InProgress, FullFeature, Failed };

// ---------------------------------------------------------------------------------------------
// Target side

struct TargetAuth {
  bool require_chap = false;
  std::optional<ChapCredentials> incoming;  // the initiator's name/secret we accept
  std::optional<ChapCredentials> outgoing;  // ours, for mutual CHAP
  std::vector<ChapAlgorithm> algorithms;    // CHAP algorithms accepted (empty: all)
};

struct TargetLookup {
  // NotAuthorized: the target exists, this initiator may not use it (an access list).
  enum class Kind : uint8_t { Found, NotFound, NotAuthorized, MovedTemporarily, MovedPermanently, Removed };
  Kind kind = Kind::NotFound;
  std::string alias;
  std::string redirect_address;  // "host:port,tpgt" for the moved kinds
  TargetAuth auth;
};

struct TargetLoginConfig {
  NegotiationLimits limits;
  uint16_t portal_group_tag = 1;
  // Looks a target up by name (Normal sessions).
  std::function<TargetLookup(std::string_view target_name, std::string_view initiator_name)>
      lookup;
  TargetAuth discovery_auth;  // SessionType=Discovery
  uint16_t tsih = 1;          // given to the new session; must be non-zero
  uint32_t first_stat_sn = 0;
  uint32_t cmd_window = 32;   // MaxCmdSN - ExpCmdSN + 1 we grant
  RandomSource random = system_random;
};

class TargetLogin {
 public:
  explicit TargetLogin(TargetLoginConfig cfg);
  ~TargetLogin();

  // Handles one Login Request and fills the response to send. After a response with a
  // non-zero status the state is Failed and the connection is to be closed once it is sent.
  LoginState on_request(const LoginRequestPdu& rq, std::span<const uint8_t> data,
                        LoginResponseOut& out);

  // Answers the first Login Request with this status (a target out of room for another
  // connection: OutOfResources), whatever it asks; `why` becomes failure().
  void refuse(LoginStatus s, std::string why) {
    refuse_status_ = s;
    refuse_why_ = std::move(why);
  }

  LoginState state() const { return state_; }
  LoginStatus status() const { return status_; }
  const std::string& failure() const { return failure_; }
  const SessionParams& params() const { return negotiator_.params(); }
  const Isid& isid() const { return isid_; }
  uint16_t tsih() const { return cfg_.tsih; }
  uint16_t cid() const { return cid_; }
  // For Full Feature Phase: the next StatSN to send and the CmdSN expected next.
  uint32_t next_stat_sn() const { return stat_sn_; }
  uint32_t exp_cmd_sn() const { return exp_cmd_sn_; }
  bool authenticated_with_chap() const { return chap_done_; }
  // How the initiator authenticated, for logs: "none", "CHAP SHA-256", "mutual CHAP MD5".
  std::string authentication() const;

 private:
  enum class Auth : uint8_t { Undecided, ChapAwaitAlgorithms, ChapAwaitResponse, Done };

  LoginState fail(LoginStatus s, std::string why, const LoginRequestPdu& rq, LoginResponseOut& out);
  LoginState respond(const LoginRequestPdu& rq, TextKeys keys, bool transit, LoginStage nsg,
                     LoginResponseOut& out);
  LoginState send_chunk(LoginResponseOut& out);
  LoginState identify(const LoginRequestPdu& rq, LoginResponseOut& out, TextKeys& reply);
  LoginState security(const LoginRequestPdu& rq, const TextKeys& in, LoginResponseOut& out,
                      TextKeys& reply);
  LoginState operational(const LoginRequestPdu& rq, const TextKeys& in, LoginResponseOut& out,
                         TextKeys& reply);
  void fill_header(const LoginRequestPdu& rq, LoginResponsePdu& bhs);

  TargetLoginConfig cfg_;
  LoginStatus refuse_status_ = LoginStatus::Success;
  std::string refuse_why_;
  Negotiator negotiator_;
  LoginState state_ = LoginState::InProgress;
  LoginStatus status_ = LoginStatus::Success;
  std::string failure_;
  bool started_ = false;
  LoginStage stage_ = LoginStage::SecurityNegotiation;
  Isid isid_{};
  uint16_t cid_ = 0;
  uint32_t stat_sn_ = 0;
  uint32_t exp_cmd_sn_ = 0;
  int exchanges_ = 0;
  std::vector<uint8_t> rx_text_;
  // A response too long for one PDU, sent in pieces as the initiator asks for them.
  std::vector<uint8_t> tx_text_;
  size_t tx_offset_ = 0;
  bool tx_transit_ = false;
  LoginStage tx_nsg_ = LoginStage::SecurityNegotiation;
  TargetAuth auth_;
  bool identified_ = false;  // InitiatorName/TargetName seen and the target looked up
  Auth auth_state_ = Auth::Undecided;
  std::unique_ptr<ChapTarget> chap_;
  bool chap_done_ = false;
};

// ---------------------------------------------------------------------------------------------
// Initiator side

struct InitiatorLoginConfig {
  std::string initiator_name;
  std::string initiator_alias;
  std::string target_name;  // ignored for discovery
  SessionType session_type = SessionType::Normal;
  Isid isid{0x80, 0, 0, 0, 0, 1};  // random format by default (T=10b)
  uint16_t cid = 0;
  uint32_t itt = 0;
  uint32_t cmd_sn = 1;  // CmdSN of the login and of the first command after it
  std::optional<ChapCredentials> chap;         // ours: offer CHAP
  std::optional<ChapCredentials> target_chap;  // the target's: require mutual CHAP
  std::vector<ChapAlgorithm> chap_algorithms;  // CHAP_A offered, in order (empty: MD5)
  NegotiationLimits limits;
  RandomSource random = system_random;
};

class InitiatorLogin {
 public:
  explicit InitiatorLogin(InitiatorLoginConfig cfg);
  ~InitiatorLogin();

  // The first Login Request.
  LoginRequestOut start();
  // Handles a Login Response. While the state stays InProgress, out is the next request.
  LoginState on_response(const LoginResponsePdu& rs, std::span<const uint8_t> data,
                         LoginRequestOut& out);

  LoginState state() const { return state_; }
  // On failure: the target's status (or InitiatorError/AuthenticationFailure for failures we
  // detect ourselves), and why.
  LoginStatus status() const { return status_; }
  const std::string& failure() const { return failure_; }
  // TargetAddress from a redirect (status 0x0101/0x0102).
  const std::string& redirect_address() const { return redirect_; }
  const SessionParams& params() const { return negotiator_.params(); }
  uint16_t tsih() const { return tsih_; }
  // For Full Feature Phase.
  uint32_t exp_stat_sn() const { return exp_stat_sn_; }
  uint32_t cmd_sn() const { return cfg_.cmd_sn; }
  uint32_t exp_cmd_sn() const { return exp_cmd_sn_; }
  uint32_t max_cmd_sn() const { return max_cmd_sn_; }
  // How we authenticated, for logs: "none", "CHAP SHA-256", "mutual CHAP MD5".
  std::string authentication() const;
  // While our CHAP answer awaits the target's verdict with an algorithm other than MD5: a
  // clause for a refusal ("after the target chose CHAP SHA-256 (CHAP_A=7): ..."), since tgt
  // numbers SHA-1 7 and refuses our SHA-256 answer; else empty.
  std::string chap_in_progress() const;

 private:
  enum class Auth : uint8_t { AwaitMethod, AwaitChallenge, AwaitChapResult, Done };

  LoginState fail(LoginStatus s, std::string why);
  LoginState request(TextKeys keys, bool transit, LoginStage nsg, LoginRequestOut& out);
  LoginState send_chunk(LoginRequestOut& out);
  LoginState security(const LoginResponsePdu& rs, const TextKeys& in, LoginRequestOut& out);
  LoginState operational(const LoginResponsePdu& rs, const TextKeys& in, LoginRequestOut& out);
  LoginState enter_full_feature(const LoginResponsePdu& rs);
  std::string auth_offer() const;

  InitiatorLoginConfig cfg_;
  Negotiator negotiator_;
  LoginState state_ = LoginState::InProgress;
  LoginStatus status_ = LoginStatus::Success;
  std::string failure_;
  std::string redirect_;
  LoginStage stage_ = LoginStage::SecurityNegotiation;
  Auth auth_ = Auth::AwaitMethod;
  bool chap_used_ = false;  // the target took CHAP and we answered its challenge
  std::unique_ptr<ChapInitiator> chap_;
  uint16_t tsih_ = 0;
  uint32_t exp_stat_sn_ = 0;
  uint32_t exp_cmd_sn_ = 0;
  uint32_t max_cmd_sn_ = 0;
  bool have_stat_sn_ = false;
  int exchanges_ = 0;
  std::vector<uint8_t> rx_text_;
  std::vector<uint8_t> tx_text_;
  size_t tx_offset_ = 0;
  bool tx_transit_ = false;
  LoginStage tx_nsg_ = LoginStage::SecurityNegotiation;
};

}  // namespace vcp::iscsi

// CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994): CHAP_R = H(CHAP_I || secret || CHAP_C).
// One-way (the target authenticates the initiator) and mutual (then the initiator
// authenticates the target too, in the same exchange, with the same algorithm).
//
// Algorithms (CHAP_A, the IANA PPP authentication algorithm numbers RFC 7143 refers to): 5 MD5,
// 6 SHA-1, 7 SHA-256, 8 SHA3-256, as Linux's target and open-iscsi number them. The target
// takes the first of the initiator's list it supports (§12.1.3: an initiator offering only
// MD5, as libiscsi does, gets MD5). The initiator offers what it is configured with, MD5 alone
// by default, as open-iscsi does: tgt numbers SHA-1 7, so a target of it given "7" answers
// with SHA-1 where we would answer with SHA-256, and the login fails. Rules we enforce: challenges of 16..1024 bytes (ours: the digest's size, at
// least 16); a response of exactly the digest's size; a challenge that comes back the other
// way (reflection) fails the login; secrets of at least 12 bytes (96 bits, §12.1.3); mutual
// CHAP refuses the same secret in both directions.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "iscsi/text.hpp"

namespace vcp::iscsi {

constexpr size_t kChapChallengeLength = 16;  // what we send at least (else the digest's size)
constexpr size_t kChapMinChallenge = 16;     // what we accept
constexpr size_t kChapMaxChallenge = 1024;
constexpr size_t kChapMinSecret = 12;
constexpr size_t kChapMaxSecret = 255;

struct ChapCredentials {
  std::string name;
  std::string secret;

  // Configuration compared with configuration (a reload); logins never compare secrets so.
  bool operator==(const ChapCredentials&) const = default;
};

enum class ChapAlgorithm : uint8_t { Md5 = 5, Sha1 = 6, Sha256 = 7, Sha3_256 = 8 };
// "5".."8" to the algorithm; nullopt for any other value.
std::optional<ChapAlgorithm> parse_chap_algorithm(std::string_view v);
// "MD5", "SHA1", "SHA256", "SHA3-256" (any case; also "SHA-1", "SHA-256"), open-iscsi's names.
std::optional<ChapAlgorithm> chap_algorithm_from_name(std::string_view name);
// A list of those names joined by ':' or ',' ("SHA256:MD5"), in order, repeats dropped;
// nullopt when empty or when a name is not one of them.
std::optional<std::vector<ChapAlgorithm>> parse_chap_algorithm_names(std::string_view text);
// "SHA-256, MD5".
std::string chap_algorithm_names(const std::vector<ChapAlgorithm>& list);
// How a login authenticated, for logs: "CHAP SHA-256", "mutual CHAP MD5".
std::string chap_description(bool mutual, ChapAlgorithm a);
std::string_view to_string(ChapAlgorithm a);  // "MD5", "SHA-1", "SHA-256", "SHA3-256"
size_t chap_digest_size(ChapAlgorithm a);
// H(id || secret || challenge).
std::vector<uint8_t> chap_response(ChapAlgorithm a, uint8_t id, std::string_view secret,
                                   std::span<const uint8_t> challenge);

enum class ChapError : uint8_t {
  Ok,
  UnsupportedAlgorithm,  // CHAP_A with none of 5..8 (or, to an initiator, one it did not offer)
  MissingKey,            // CHAP_N / CHAP_R / CHAP_I / CHAP_C absent
  BadIdentifier,         // CHAP_I not a number 0..255
  BadChallenge,          // CHAP_C not a binary value
  ChallengeTooShort,
  ChallengeTooLong,
  ReflectedChallenge,    // the peer sent back our own challenge
  BadResponse,           // CHAP_R not a binary value of the digest's size
  WrongName,             // CHAP_N is not the configured user
  WrongResponse,         // CHAP_R does not match: wrong secret
  BadSecret,             // our configured secret is too short/long
  SameSecretBothWays,    // mutual CHAP with one secret for both directions
  RandomFailure,         // no random bytes for a challenge
  UnexpectedKey,         // mutual CHAP keys where none were expected (or the reverse)
};
std::string_view to_string(ChapError e);

// Fills a buffer with random bytes; false on failure. Tests inject a fixed source.
using RandomSource = std::function<bool(std::span<uint8_t>)>;
bool system_random(std::span<uint8_t> out);  // getrandom(2)

ChapError validate_secret(std::string_view secret);

// The target side: challenges the initiator, checks its answer, and for mutual CHAP answers
// the initiator's challenge.
class ChapTarget {
 public:
  // incoming: the initiator's name and secret we accept; outgoing: ours, for mutual CHAP;
  // accepted: the algorithms an initiator may use (empty: all four).
  ChapTarget(ChapCredentials incoming, std::optional<ChapCredentials> outgoing,
             RandomSource random = system_random, std::vector<ChapAlgorithm> accepted = {});
  ChapError check_config() const;

  // The initiator's CHAP_A list: answers CHAP_A (the first of the list we support), CHAP_I,
  // CHAP_C.
  ChapError on_algorithms(std::string_view chap_a, TextKeys& out);
  // The algorithm taken (valid after on_algorithms()).
  ChapAlgorithm algorithm() const { return algo_; }
  // Why on_algorithms() refused: "the initiator offers CHAP_A=5; accepted here: SHA-256".
  const std::string& refusal() const { return refusal_; }
  // The initiator's CHAP_N, CHAP_R (and CHAP_I, CHAP_C for mutual): verifies; for mutual
  // answers CHAP_N and CHAP_R.
  ChapError on_response(const TextKeys& in, TextKeys& out);
  bool mutual_requested() const { return mutual_requested_; }

 private:
  ChapCredentials incoming_;
  std::optional<ChapCredentials> outgoing_;
  RandomSource random_;
  std::vector<ChapAlgorithm> accepted_;
  ChapAlgorithm algo_ = ChapAlgorithm::Md5;
  std::string refusal_;
  uint8_t id_ = 0;
  std::vector<uint8_t> challenge_;
  bool mutual_requested_ = false;
};

// The initiator side: answers the target's challenge; with target credentials configured it
// asks for mutual CHAP and checks the target's answer.
class ChapInitiator {
 public:
  // ours: our name and secret; target: the name and secret the target must prove (mutual);
  // offer: the algorithms to offer, in order of preference (empty: MD5).
  ChapInitiator(ChapCredentials ours, std::optional<ChapCredentials> target,
                RandomSource random = system_random, std::vector<ChapAlgorithm> offer = {});
  ChapError check_config() const;
  bool mutual() const { return target_.has_value(); }

  // CHAP_A: the offer ("5" by default; "7,5" for SHA-256 then MD5).
  void start(TextKeys& out) const;
  // The algorithm the target chose (valid after on_challenge()).
  ChapAlgorithm algorithm() const { return algo_; }
  // The target's CHAP_A, CHAP_I, CHAP_C: answers CHAP_N, CHAP_R (and CHAP_I, CHAP_C).
  ChapError on_challenge(const TextKeys& in, TextKeys& out);
  // The target's CHAP_N, CHAP_R (mutual only).
  ChapError on_target_response(const TextKeys& in);

 private:
  ChapCredentials ours_;
  std::optional<ChapCredentials> target_;
  RandomSource random_;
  std::vector<ChapAlgorithm> offer_;
  ChapAlgorithm algo_ = ChapAlgorithm::Md5;
  uint8_t id_ = 0;
  std::vector<uint8_t> challenge_;
};

}  // namespace vcp::iscsi

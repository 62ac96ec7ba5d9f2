#include "iscsi/chap.hpp"

#include <nettle/nettle-meta.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>

namespace vcp::iscsi {

std::string_view to_string(ChapError e) {
  switch (e) {
    case ChapError::Ok: return "ok";
    case ChapError::UnsupportedAlgorithm:
      return "no supported CHAP algorithm (need one of MD5, SHA-1, SHA-256, SHA3-256)";
    case ChapError::MissingKey: return "CHAP key missing";
    case ChapError::BadIdentifier: return "CHAP_I invalid";
    case ChapError::BadChallenge: return "CHAP_C invalid";
    case ChapError::ChallengeTooShort: return "CHAP challenge too short";
    case ChapError::ChallengeTooLong: return "CHAP challenge too long";
    case ChapError::ReflectedChallenge: return "CHAP challenge reflected";
    case ChapError::BadResponse: return "CHAP_R invalid";
    case ChapError::WrongName: return "CHAP_N unknown";
    case ChapError::WrongResponse: return "CHAP response mismatch";
    case ChapError::BadSecret: return "CHAP secret length out of bounds";
    case ChapError::SameSecretBothWays: return "mutual CHAP with the same secret both ways";
    case ChapError::RandomFailure: return "no random bytes for a CHAP challenge";
    case ChapError::UnexpectedKey: return "unexpected CHAP key";
  }
  return "unknown ChapError";
}

std::optional<ChapAlgorithm> parse_chap_algorithm(std::string_view v) {
  if (v == "5") return ChapAlgorithm::Md5;
  if (v == "6") return ChapAlgorithm::Sha1;
  if (v == "7") return ChapAlgorithm::Sha256;
  if (v == "8") return ChapAlgorithm::Sha3_256;
  return std::nullopt;
}

std::optional<ChapAlgorithm> chap_algorithm_from_name(std::string_view name) {
  std::string n;
  for (char ch : name) n += static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
  if (n == "MD5") return ChapAlgorithm::Md5;
  if (n == "SHA1" || n == "SHA-1") return ChapAlgorithm::Sha1;
  if (n == "SHA256" || n == "SHA-256") return ChapAlgorithm::Sha256;
  if (n == "SHA3-256" || n == "SHA3_256") return ChapAlgorithm::Sha3_256;
  return std::nullopt;
}

std::optional<std::vector<ChapAlgorithm>> parse_chap_algorithm_names(std::string_view text) {
  std::vector<ChapAlgorithm> out;
  while (true) {
    const size_t sep = text.find_first_of(":,");
    const auto a = chap_algorithm_from_name(text.substr(0, sep));
    if (!a) return std::nullopt;
    if (std::find(out.begin(), out.end(), *a) == out.end()) out.push_back(*a);
    if (sep == std::string_view::npos) return out;
    text.remove_prefix(sep + 1);
  }
}

std::string chap_description(bool mutual, ChapAlgorithm a) {
  return std::string(mutual ? "mutual CHAP " : "CHAP ") + std::string(to_string(a));
}

std::string chap_algorithm_names(const std::vector<ChapAlgorithm>& list) {
  std::string s;
  for (ChapAlgorithm a : list) s += (s.empty() ? "" : ", ") + std::string(to_string(a));
  return s;
}

std::string_view to_string(ChapAlgorithm a) {
  switch (a) {
    case ChapAlgorithm::Md5: return "MD5";
    case ChapAlgorithm::Sha1: return "SHA-1";
    case ChapAlgorithm::Sha256: return "SHA-256";
    case ChapAlgorithm::Sha3_256: return "SHA3-256";
  }
  return "unknown";
}

namespace {
const nettle_hash& hash_of(ChapAlgorithm a) {
  switch (a) {
    case ChapAlgorithm::Sha1: return nettle_sha1;
    case ChapAlgorithm::Sha256: return nettle_sha256;
    case ChapAlgorithm::Sha3_256: return nettle_sha3_256;
    case ChapAlgorithm::Md5: break;
  }
  return nettle_md5;
}
}  // namespace

size_t chap_digest_size(ChapAlgorithm a) { return hash_of(a).digest_size; }

std::vector<uint8_t> chap_response(ChapAlgorithm a, uint8_t id, std::string_view secret,
                                   std::span<const uint8_t> challenge) {
  const nettle_hash& h = hash_of(a);
  alignas(std::max_align_t) uint8_t ctx[512];  // every nettle hash context is smaller (checked below)
  std::vector<uint8_t> out(h.digest_size);
  if (h.context_size > sizeof ctx) return out;  // cannot happen with the four above
  h.init(ctx);
  h.update(ctx, 1, &id);
  h.update(ctx, secret.size(), reinterpret_cast<const uint8_t*>(secret.data()));
  h.update(ctx, challenge.size(), challenge.data());
  h.digest(ctx, out.size(), out.data());
  return out;
}

bool system_random(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

ChapError validate_secret(std::string_view secret) {
  if (secret.size() < kChapMinSecret || secret.size() > kChapMaxSecret) return ChapError::BadSecret;
  return ChapError::Ok;
}

namespace {

// Compares without an early exit, so timing does not tell how many bytes matched.
bool same_digest(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

ChapError parse_identifier(const std::string* v, uint8_t& id) {
  if (!v) return ChapError::MissingKey;
  const auto n = parse_number(*v);
  if (!n || *n > 255) return ChapError::BadIdentifier;
  id = static_cast<uint8_t>(*n);
  return ChapError::Ok;
}

ChapError parse_challenge(const std::string* v, std::vector<uint8_t>& out) {
  if (!v) return ChapError::MissingKey;
  auto bin = parse_binary(*v);
  if (!bin) return ChapError::BadChallenge;
  if (bin->size() < kChapMinChallenge) return ChapError::ChallengeTooShort;
  if (bin->size() > kChapMaxChallenge) return ChapError::ChallengeTooLong;
  out = std::move(*bin);
  return ChapError::Ok;
}

// Checks CHAP_N and CHAP_R against the credentials for the challenge we sent.
ChapError verify(const TextKeys& in, const ChapCredentials& who, ChapAlgorithm algo, uint8_t id,
                 std::span<const uint8_t> challenge) {
  const std::string* n = in.find("CHAP_N");
  const std::string* r = in.find("CHAP_R");
  if (!n || !r) return ChapError::MissingKey;
  const auto resp = parse_binary(*r);
  if (!resp || resp->size() != chap_digest_size(algo)) return ChapError::BadResponse;
  // Compute and compare before looking at the name, so a wrong name costs the same time.
  const bool match = same_digest(*resp, chap_response(algo, id, who.secret, challenge));
  if (*n != who.name) return ChapError::WrongName;
  return match ? ChapError::Ok : ChapError::WrongResponse;
}

// A challenge as long as the algorithm's digest (at least kChapChallengeLength), and an id.
ChapError make_challenge(const RandomSource& random, ChapAlgorithm algo, uint8_t& id, std::vector<uint8_t>& c) {
  std::vector<uint8_t> bytes(1 + std::max(kChapChallengeLength, chap_digest_size(algo)));
  if (!random(bytes)) return ChapError::RandomFailure;
  id = bytes[0];
  c.assign(bytes.begin() + 1, bytes.end());
  return ChapError::Ok;
}

ChapError check_pair(const ChapCredentials& a, const std::optional<ChapCredentials>& b) {
  ChapError e = validate_secret(a.secret);
  if (e != ChapError::Ok) return e;
  if (b) {
    if ((e = validate_secret(b->secret)) != ChapError::Ok) return e;
    if (a.secret == b->secret) return ChapError::SameSecretBothWays;
  }
  return ChapError::Ok;
}

}  // namespace

ChapTarget::ChapTarget(ChapCredentials incoming, std::optional<ChapCredentials> outgoing,
                       RandomSource random, std::vector<ChapAlgorithm> accepted)
    : incoming_(std::move(incoming)),
      outgoing_(std::move(outgoing)),
      random_(std::move(random)),
      accepted_(std::move(accepted)) {
  if (accepted_.empty())
    accepted_ = {ChapAlgorithm::Md5, ChapAlgorithm::Sha1, ChapAlgorithm::Sha256, ChapAlgorithm::Sha3_256};
}

ChapError ChapTarget::check_config() const { return check_pair(incoming_, outgoing_); }

ChapError ChapTarget::on_algorithms(std::string_view chap_a, TextKeys& out) {
  // The first of the initiator's list we support (§12.1.3), so the initiator's preference holds.
  std::string_view chosen;
  for (std::string_view a : split_list(chap_a)) {
    const auto algo = parse_chap_algorithm(a);
    if (algo && std::find(accepted_.begin(), accepted_.end(), *algo) != accepted_.end()) {
      chosen = a;
      algo_ = *algo;
      break;
    }
  }
  if (chosen.empty()) {
    out.add("CHAP_A", std::string(kReject));
    refusal_ = "the initiator offers CHAP_A=" + std::string(chap_a.substr(0, 64)) +
               "; accepted here: " + chap_algorithm_names(accepted_);
    return ChapError::UnsupportedAlgorithm;
  }
  const ChapError e = make_challenge(random_, algo_, id_, challenge_);
  if (e != ChapError::Ok) return e;
  out.add("CHAP_A", std::string(chosen));
  out.add("CHAP_I", std::to_string(id_));
  out.add("CHAP_C", encode_hex(challenge_));
  return ChapError::Ok;
}

ChapError ChapTarget::on_response(const TextKeys& in, TextKeys& out) {
  if (challenge_.empty()) return ChapError::UnexpectedKey;
  ChapError e = verify(in, incoming_, algo_, id_, challenge_);
  if (e != ChapError::Ok) return e;
  const std::string* ci = in.find("CHAP_I");
  const std::string* cc = in.find("CHAP_C");
  if (!ci && !cc) return ChapError::Ok;  // one-way
  mutual_requested_ = true;
  if (!outgoing_) return ChapError::UnexpectedKey;  // no credentials to prove ourselves with
  uint8_t id = 0;
  std::vector<uint8_t> challenge;
  if ((e = parse_identifier(ci, id)) != ChapError::Ok) return e;
  if ((e = parse_challenge(cc, challenge)) != ChapError::Ok) return e;
  if (challenge == challenge_) return ChapError::ReflectedChallenge;
  out.add("CHAP_N", outgoing_->name);
  out.add("CHAP_R", encode_hex(chap_response(algo_, id, outgoing_->secret, challenge)));
  return ChapError::Ok;
}

ChapInitiator::ChapInitiator(ChapCredentials ours, std::optional<ChapCredentials> target,
                             RandomSource random, std::vector<ChapAlgorithm> offer)
    : ours_(std::move(ours)), target_(std::move(target)), random_(std::move(random)), offer_(std::move(offer)) {
  if (offer_.empty()) offer_.push_back(ChapAlgorithm::Md5);
}

ChapError ChapInitiator::check_config() const { return check_pair(ours_, target_); }

void ChapInitiator::start(TextKeys& out) const {
  std::string list;
  for (ChapAlgorithm a : offer_) list += (list.empty() ? "" : ",") + std::to_string(static_cast<int>(a));
  out.add("CHAP_A", list);
}

ChapError ChapInitiator::on_challenge(const TextKeys& in, TextKeys& out) {
  const std::string* a = in.find("CHAP_A");
  if (!a) return ChapError::MissingKey;
  const auto algo = parse_chap_algorithm(*a);  // one value, one we offered
  if (!algo || std::find(offer_.begin(), offer_.end(), *algo) == offer_.end()) return ChapError::UnsupportedAlgorithm;
  algo_ = *algo;
  uint8_t id = 0;
  std::vector<uint8_t> challenge;
  ChapError e = parse_identifier(in.find("CHAP_I"), id);
  if (e != ChapError::Ok) return e;
  if ((e = parse_challenge(in.find("CHAP_C"), challenge)) != ChapError::Ok) return e;
  out.add("CHAP_N", ours_.name);
  out.add("CHAP_R", encode_hex(chap_response(algo_, id, ours_.secret, challenge)));
  if (!target_) return ChapError::Ok;
  // Our challenge must differ from the target's, or the target could answer us with ours.
  for (int attempt = 0;; ++attempt) {
    if ((e = make_challenge(random_, algo_, id_, challenge_)) != ChapError::Ok) return e;
    if (challenge_ != challenge) break;
    if (attempt == 3) return ChapError::RandomFailure;
  }
  out.add("CHAP_I", std::to_string(id_));
  out.add("CHAP_C", encode_hex(challenge_));
  return ChapError::Ok;
}

ChapError ChapInitiator::on_target_response(const TextKeys& in) {
  if (!target_ || challenge_.empty()) return ChapError::UnexpectedKey;
  return verify(in, *target_, algo_, id_, challenge_);
}

}  // namespace vcp::iscsi

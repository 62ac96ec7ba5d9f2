// iSCSI text: the key=value pairs of Login and Text PDUs (RFC 7143 §6.1), and the value
// encodings (numbers, booleans, binary as 0x hex or 0b base64).
//
// Text is control-path only (login, discovery), so it lives in std::string; the limits below
// bound what a peer can make us hold.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vcp::iscsi {

constexpr size_t kMaxKeyLength = 63;     // key-name (§6.1)
constexpr size_t kMaxValueLength = 255;  // text value, unless the key says otherwise
// CHAP_C / CHAP_R carry binary values up to 1024 bytes, i.e. 2 + 2048 characters in hex.
constexpr size_t kMaxBinaryValueLength = 2 + 2 * 1024;

struct TextLimits {
  size_t max_pairs = 256;
  size_t max_total_bytes = 64 * 1024;  // the whole (reassembled) text
  // SendTargets responses repeat TargetName and TargetAddress (RFC 7143 §13.3, Appendix C);
  // login and negotiation texts never may.
  bool allow_repeated_keys = false;
};

enum class TextError : uint8_t {
  Ok,
  TooLong,            // more than max_total_bytes
  NotTerminated,      // the last pair has no NUL
  MissingEquals,      // "key" without "=value"
  EmptyKey,
  KeyTooLong,
  BadKeyCharacter,    // outside A-Z a-z 0-9 . - + @ _
  ValueTooLong,
  BadValueCharacter,  // a control character in a value
  DuplicateKey,       // the same key twice in one text
  TooManyPairs,
};
std::string_view to_string(TextError e);

struct TextPair {
  std::string key;
  std::string value;
  friend bool operator==(const TextPair&, const TextPair&) = default;
};

// An ordered list of pairs; order is kept because some answers depend on it.
class TextKeys {
 public:
  void add(std::string key, std::string value);
  const std::string* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const std::vector<TextPair>& pairs() const { return pairs_; }
  bool empty() const { return pairs_.empty(); }
  size_t size() const { return pairs_.size(); }
  void clear() { pairs_.clear(); }
  friend bool operator==(const TextKeys&, const TextKeys&) = default;

 private:
  std::vector<TextPair> pairs_;
};

// Parses a whole text (after C-bit reassembly). Stray empty entries (NUL NUL) are skipped.
TextError parse_text(std::span<const uint8_t> data, TextKeys& out, const TextLimits& limits = {});
// Appends "key=value\0" for every pair.
void encode_text(const TextKeys& keys, std::vector<uint8_t>& out);

bool is_valid_key_name(std::string_view key);
// Whether a key may carry a long binary value (CHAP_C, CHAP_R).
bool allows_long_value(std::string_view key);

// Values. Numbers: decimal or 0x hex, up to 2^64 - 1. Booleans: Yes / No.
std::optional<uint64_t> parse_number(std::string_view v);
std::optional<bool> parse_boolean(std::string_view v);
inline std::string_view boolean_value(bool b) { return b ? "Yes" : "No"; }
// Binary: "0x..." (hex, case-insensitive, odd digit count allowed) or "0b..." (base64).
std::optional<std::vector<uint8_t>> parse_binary(std::string_view v);
std::string encode_hex(std::span<const uint8_t> bytes);     // "0x..." lower case
std::string encode_base64(std::span<const uint8_t> bytes);  // "0b..."
// Splits a list value ("CRC32C,None") at commas.
std::vector<std::string_view> split_list(std::string_view v);

// The special answers of §6.2.
inline constexpr std::string_view kReject = "Reject";
inline constexpr std::string_view kIrrelevant = "Irrelevant";
inline constexpr std::string_view kNotUnderstood = "NotUnderstood";

}  // namespace vcp::iscsi

#include "iscsi/text.hpp"

#include <algorithm>

namespace vcp::iscsi {

std::string_view to_string(TextError e) {
  switch (e) {
    case TextError::Ok: return "ok";
    case TextError::TooLong: return "text too long";
    case TextError::NotTerminated: return "key=value pair not NUL-terminated";
    case TextError::MissingEquals: return "key without '='";
    case TextError::EmptyKey: return "empty key";
    case TextError::KeyTooLong: return "key longer than 63 bytes";
    case TextError::BadKeyCharacter: return "invalid character in key";
    case TextError::ValueTooLong: return "value too long";
    case TextError::BadValueCharacter: return "invalid character in value";
    case TextError::DuplicateKey: return "key sent twice";
    case TextError::TooManyPairs: return "too many keys";
  }
  return "unknown TextError";
}

void TextKeys::add(std::string key, std::string value) {
  pairs_.push_back(TextPair{std::move(key), std::move(value)});
}

const std::string* TextKeys::find(std::string_view key) const {
  for (const auto& p : pairs_)
    if (p.key == key) return &p.value;
  return nullptr;
}

bool is_valid_key_name(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyLength) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '+' || c == '@' || c == '_';
  });
}

bool allows_long_value(std::string_view key) { return key == "CHAP_C" || key == "CHAP_R"; }

TextError parse_text(std::span<const uint8_t> data, TextKeys& out, const TextLimits& limits) {
  out.clear();
  if (data.size() > limits.max_total_bytes) return TextError::TooLong;
  const std::string_view all(reinterpret_cast<const char*>(data.data()), data.size());
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t nul = all.find('\0', pos);
    if (nul == std::string_view::npos) return TextError::NotTerminated;
    const std::string_view entry = all.substr(pos, nul - pos);
    pos = nul + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) return TextError::MissingEquals;
    const std::string_view key = entry.substr(0, eq);
    const std::string_view value = entry.substr(eq + 1);
    if (key.empty()) return TextError::EmptyKey;
    if (key.size() > kMaxKeyLength) return TextError::KeyTooLong;
    if (!is_valid_key_name(key)) return TextError::BadKeyCharacter;
    const size_t max_value = allows_long_value(key) ? kMaxBinaryValueLength : kMaxValueLength;
    if (value.size() > max_value) return TextError::ValueTooLong;
    if (std::any_of(value.begin(), value.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
      return TextError::BadValueCharacter;
    if (!limits.allow_repeated_keys && out.contains(key)) return TextError::DuplicateKey;
    if (out.size() >= limits.max_pairs) return TextError::TooManyPairs;
    out.add(std::string(key), std::string(value));
  }
  return TextError::Ok;
}

void encode_text(const TextKeys& keys, std::vector<uint8_t>& out) {
  for (const auto& p : keys.pairs()) {
    out.insert(out.end(), p.key.begin(), p.key.end());
    out.push_back('=');
    out.insert(out.end(), p.value.begin(), p.value.end());
    out.push_back('\0');
  }
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int base64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool has_prefix(std::string_view v, char second) {
  return v.size() >= 2 && v[0] == '0' && (v[1] == second || v[1] == second - 'a' + 'A');
}

std::optional<std::vector<uint8_t>> parse_hex(std::string_view digits) {
  if (digits.empty()) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(digits.size() / 2 + 1);
  size_t i = 0;
  if (digits.size() % 2 == 1) {  // a leading nibble
    const int d = hex_digit(digits[0]);
    if (d < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>(d));
    i = 1;
  }
  for (; i < digits.size(); i += 2) {
    const int hi = hex_digit(digits[i]);
    const int lo = hex_digit(digits[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

std::optional<std::vector<uint8_t>> parse_base64(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  if (s.back() == '=') ++pad;
  if (s.size() >= 2 && s[s.size() - 2] == '=') ++pad;
  std::vector<uint8_t> out;
  out.reserve(s.size() / 4 * 3);
  for (size_t i = 0; i < s.size(); i += 4) {
    uint32_t acc = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = s[i + j];
      const bool in_pad = i + j >= s.size() - pad;
      const int d = in_pad ? (c == '=' ? 0 : -1) : base64_digit(c);
      if (d < 0) return std::nullopt;
      acc = acc << 6 | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<uint8_t>(acc >> 16));
    out.push_back(static_cast<uint8_t>(acc >> 8));
    out.push_back(static_cast<uint8_t>(acc));
  }
  out.resize(out.size() - pad);
  if (out.empty()) return std::nullopt;
  return out;
}

}  // namespace

std::optional<uint64_t> parse_number(std::string_view v) {
  if (v.empty()) return std::nullopt;
  uint64_t n = 0;
  if (has_prefix(v, 'x')) {
    const std::string_view d = v.substr(2);
    if (d.empty() || d.size() > 16) return std::nullopt;
    for (char c : d) {
      const int x = hex_digit(c);
      if (x < 0) return std::nullopt;
      n = n << 4 | static_cast<uint64_t>(x);
    }
    return n;
  }
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - digit) / 10) return std::nullopt;
    n = n * 10 + digit;
  }
  return n;
}

std::optional<bool> parse_boolean(std::string_view v) {
  if (v == "Yes") return true;
  if (v == "No") return false;
  return std::nullopt;
}

std::optional<std::vector<uint8_t>> parse_binary(std::string_view v) {
  if (has_prefix(v, 'x')) return parse_hex(v.substr(2));
  if (has_prefix(v, 'b')) return parse_base64(v.substr(2));
  return std::nullopt;
}

std::string encode_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  s.reserve(2 + bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

std::string encode_base64(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string s = "0b";
  s.reserve(2 + (bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t acc = uint32_t{bytes[i]} << 16;
    if (n > 1) acc |= uint32_t{bytes[i + 1]} << 8;
    if (n > 2) acc |= bytes[i + 2];
    s.push_back(kDigits[acc >> 18 & 63]);
    s.push_back(kDigits[acc >> 12 & 63]);
    s.push_back(n > 1 ? kDigits[acc >> 6 & 63] : '=');
    s.push_back(n > 2 ? kDigits[acc & 63] : '=');
  }
  return s;
}

std::vector<std::string_view> split_list(std::string_view v) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (true) {
    const size_t comma = v.find(',', pos);
    out.push_back(v.substr(pos, comma == std::string_view::npos ? comma : comma - pos));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace vcp::iscsi

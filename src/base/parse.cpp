#include "base/parse.hpp"

#include <cctype>
#include <charconv>

namespace vcp {

Result<uint64_t> parse_size(const std::string& s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data()) return Err(EINVAL);
  std::string suffix(p, s.data() + s.size());
  for (auto& c : suffix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (suffix.size() > 1 && (suffix.ends_with("ib") || suffix.ends_with("b")))
    suffix = suffix.substr(0, suffix.find('i') != std::string::npos ? suffix.find('i') : suffix.size() - 1);
  int shift = 0;
  if (suffix.empty() || suffix == "b") shift = 0;
  else if (suffix == "k") shift = 10;
  else if (suffix == "m") shift = 20;
  else if (suffix == "g") shift = 30;
  else if (suffix == "t") shift = 40;
  else return Err(EINVAL);
  if (shift && v > (UINT64_MAX >> shift)) return Err(ERANGE);
  return v << shift;
}

Result<bool> parse_bool(const std::string& s) {
  if (s == "on" || s == "yes" || s == "true" || s == "1") return true;
  if (s == "off" || s == "no" || s == "false" || s == "0") return false;
  return Err(EINVAL);
}

std::optional<std::string> Spec::get(const std::string& key) const {
  auto it = options.find(key);
  if (it == options.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Spec::take(const std::string& key) {
  auto it = options.find(key);
  if (it == options.end()) return std::nullopt;
  std::string v = std::move(it->second);
  options.erase(it);
  return v;
}

std::optional<Spec> parse_spec(const std::string& text, std::string* error) {
  Spec spec;
  size_t colon = text.find(':');
  spec.kind = text.substr(0, colon);
  if (spec.kind.empty()) {
    *error = "missing backend kind before ':'";
    return std::nullopt;
  }
  if (colon == std::string::npos) return spec;
  std::string rest = text.substr(colon + 1);
  size_t pos = 0;
  while (pos < rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    std::string item = rest.substr(pos, comma - pos);
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key.empty()) {
      *error = "empty option name in '" + text + "'";
      return std::nullopt;
    }
    if (!spec.options.emplace(key, value).second) {
      *error = "option '" + key + "' given twice";
      return std::nullopt;
    }
    pos = comma + 1;
  }
  return spec;
}

}  // namespace vcp

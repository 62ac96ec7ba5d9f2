#include "base/parse.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <charconv>

#include "base/unique_fd.hpp"

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

Result<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Err(errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err(errno);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) return Err(EFBIG);
    out.append(buf, static_cast<size_t>(n));
  }
}

std::string small_file_error(int err, const std::string& kind) {
  return err == EFBIG ? "longer than a " + kind + " can be" : errno_str(err);
}

}  // namespace vcp

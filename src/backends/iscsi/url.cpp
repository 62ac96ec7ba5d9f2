#include "backends/iscsi/url.hpp"

#include <cstdlib>
#include <map>
#include <sstream>

#include "base/parse.hpp"
#include "iscsi/sendtargets.hpp"

namespace vcp::backends::iscsi {

using vcp::iscsi::DigestPolicy;

const char* const kIscsiUsage =
    "iscsi://[user@]host[:port]/target-iqn/lun[?option=value&...]  options: header_digest=, "
    "data_digest= (crc32c|none|prefer|allow), initiator=IQN, mutual_user=NAME, chap_algs=A[:B...] (CHAP "
    "algorithms offered in order, of SHA3-256, SHA256, SHA1, MD5; default MD5), secret_file=PATH "
    "(CHAP secret on line 1, the target's mutual secret on line 2; or env VCP_ISCSI_SECRET, "
    "VCP_ISCSI_MUTUAL_SECRET), timeout=SECONDS, nop_interval=SECONDS, nop_timeout=SECONDS, recovery_timeout=SECONDS, "
    "login_timeout=SECONDS, max_recv_segment=BYTES, portal=HOST[:PORT] (repeatable: more portals of the "
    "target, tried in turn)";

std::optional<std::string> system_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

namespace {

bool parse_u32(const std::string& s, uint64_t max, uint32_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

bool parse_digest(const std::string& v, DigestPolicy* out) {
  if (v == "crc32c" || v == "CRC32C" || v == "require") *out = DigestPolicy::Require;
  else if (v == "none" || v == "None") *out = DigestPolicy::None;
  else if (v == "prefer") *out = DigestPolicy::Prefer;
  else if (v == "allow") *out = DigestPolicy::Allow;
  else return false;
  return true;
}

bool seconds_option(std::map<std::string, std::string>& opts, const char* key, uint32_t* ms,
                    std::string* error) {
  auto it = opts.find(key);
  if (it == opts.end()) return true;
  uint32_t s = 0;
  if (!parse_u32(it->second, 3600, &s) || s == 0) {
    *error = std::string("bad ") + key + " '" + it->second + "' (seconds, 1..3600)";
    return false;
  }
  *ms = s * 1000;
  opts.erase(it);
  return true;
}

// Reads a secrets file: line 1 our CHAP secret, line 2 (optional) the target's.
bool read_secret_file(const std::string& path, std::string* secret, std::string* mutual,
                      std::string* error) {
  auto text = read_small_file(path, 64 * 1024);  // two lines of at most 255 bytes each, really
  if (!text) {
    *error = "cannot read secret_file '" + path + "': " + small_file_error(text.error(), "secrets file");
    return false;
  }
  std::istringstream f(*text);
  std::string a, b;
  std::getline(f, a);
  std::getline(f, b);
  auto chomp = [](std::string& s) {
    while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.pop_back();
  };
  chomp(a);
  chomp(b);
  *secret = a;
  *mutual = b;
  return true;
}

}  // namespace

PortalAddress portal_at(const IscsiConfig& c, size_t i) {
  return i == 0 ? PortalAddress{c.host, c.port} : c.more_portals.at(i - 1);
}

std::string portal_name(const PortalAddress& p) { return vcp::iscsi::host_port(p.host, p.port); }

bool parse_portal(const std::string& text, std::string* host, uint16_t* port, std::string* error) {
  std::string t = text.substr(0, text.find(','));  // TargetAddress: "addr:port,tpgt"
  std::string h, p;
  if (!t.empty() && t[0] == '[') {
    size_t close = t.find(']');
    if (close == std::string::npos) {
      *error = "unterminated '[' in '" + text + "'";
      return false;
    }
    h = t.substr(1, close - 1);
    std::string rest = t.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        *error = "junk after ']' in '" + text + "'";
        return false;
      }
      p = rest.substr(1);
    }
  } else {
    size_t colon = t.find(':');
    if (colon != std::string::npos && t.find(':', colon + 1) != std::string::npos) {
      *error = "an IPv6 address needs brackets: '[" + t + "]'";
      return false;
    }
    h = t.substr(0, colon);
    if (colon != std::string::npos) p = t.substr(colon + 1);
  }
  if (h.empty()) {
    *error = "missing host in '" + text + "'";
    return false;
  }
  uint32_t port_v = kDefaultPort;
  if (!p.empty() || (t.find(':') != std::string::npos && t[0] != '[')) {
    if (!parse_u32(p, 65535, &port_v) || port_v == 0) {
      *error = "bad port '" + p + "' in '" + text + "'";
      return false;
    }
  }
  *host = h;
  *port = static_cast<uint16_t>(port_v);
  return true;
}

std::optional<IscsiConfig> parse_iscsi_url(const std::string& text, std::string* error,
                                           const EnvLookup& env) {
  const std::string scheme = "iscsi://";
  if (text.compare(0, scheme.size(), scheme) != 0) {
    *error = "an iscsi spec starts with iscsi://";
    return std::nullopt;
  }
  std::string rest = text.substr(scheme.size());
  // Options: after '?' ('&' or ',' between them), or after the LUN as ",key=value".
  std::string opt_text;
  size_t q = rest.find('?');
  size_t comma = rest.find(',');
  size_t cut = std::min(q, comma);
  if (cut != std::string::npos) {
    opt_text = rest.substr(cut + 1);
    rest = rest.substr(0, cut);
  }
  std::map<std::string, std::string> opts;
  std::vector<std::string> portal_values;  // portal= may repeat
  size_t pos = 0;
  while (pos < opt_text.size()) {
    size_t end = opt_text.find_first_of("&,", pos);
    if (end == std::string::npos) end = opt_text.size();
    std::string item = opt_text.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key.empty()) {
      *error = "empty option name in '" + text + "'";
      return std::nullopt;
    }
    if (key == "portal") {
      portal_values.push_back(value);
      continue;
    }
    if (!opts.emplace(key, value).second) {
      *error = "option '" + key + "' given twice";
      return std::nullopt;
    }
  }

  IscsiConfig c;
  // [user@]host[:port]
  size_t slash = rest.find('/');
  if (slash == std::string::npos) {
    *error = "missing /target-iqn/lun in '" + text + "'";
    return std::nullopt;
  }
  std::string authority = rest.substr(0, slash);
  std::string path = rest.substr(slash + 1);
  size_t at = authority.rfind('@');
  if (at != std::string::npos) {
    c.user = authority.substr(0, at);
    authority = authority.substr(at + 1);
    if (c.user.find('%') != std::string::npos || c.user.find(':') != std::string::npos) {
      *error = "a password in the URL would be visible to every user (ps, /proc): put it in "
               "secret_file= or VCP_ISCSI_SECRET";
      return std::nullopt;
    }
    if (c.user.empty()) {
      *error = "empty user name before '@'";
      return std::nullopt;
    }
  }
  if (!parse_portal(authority, &c.host, &c.port, error)) return std::nullopt;
  for (const std::string& v : portal_values) {
    PortalAddress p;
    if (!parse_portal(v, &p.host, &p.port, error)) {
      *error = "bad portal= '" + v + "': " + *error;
      return std::nullopt;
    }
    for (size_t i = 0; i < portal_count(c); ++i) {
      if (portal_at(c, i) == p) {
        *error = "portal " + portal_name(p) + " given twice";
        return std::nullopt;
      }
    }
    if (portal_count(c) >= kMaxPortals) {
      *error = "more than " + std::to_string(kMaxPortals) + " portals";
      return std::nullopt;
    }
    c.more_portals.push_back(std::move(p));
  }
  // target-iqn/lun
  size_t last = path.rfind('/');
  if (last == std::string::npos || last == 0) {
    *error = "missing target name or LUN in '" + text + "' (iscsi://host/iqn.../LUN)";
    return std::nullopt;
  }
  c.target = path.substr(0, last);
  if (c.target.find('/') != std::string::npos) {
    *error = "target name '" + c.target + "' contains '/'";
    return std::nullopt;
  }
  if (!parse_u32(path.substr(last + 1), vcp::iscsi::Lun::kMaxNumber, &c.lun)) {
    *error = "bad LUN '" + path.substr(last + 1) + "' (0..16383)";
    return std::nullopt;
  }

  for (const char* forbidden : {"secret", "password", "mutual_secret", "mutual_password"}) {
    if (opts.count(forbidden)) {
      *error = std::string("refusing ") + forbidden +
               "= on the command line (visible to every user): use secret_file= or "
               "VCP_ISCSI_SECRET / VCP_ISCSI_MUTUAL_SECRET";
      return std::nullopt;
    }
  }
  auto take = [&](const char* k) -> std::optional<std::string> {
    auto it = opts.find(k);
    if (it == opts.end()) return std::nullopt;
    std::string v = it->second;
    opts.erase(it);
    return v;
  };
  if (auto v = take("header_digest"); v && !parse_digest(*v, &c.header_digest)) {
    *error = "bad header_digest '" + *v + "' (crc32c, none, prefer or allow)";
    return std::nullopt;
  }
  if (auto v = take("data_digest"); v && !parse_digest(*v, &c.data_digest)) {
    *error = "bad data_digest '" + *v + "' (crc32c, none, prefer or allow)";
    return std::nullopt;
  }
  if (auto v = take("initiator")) {
    if (v->empty()) {
      *error = "empty initiator=";
      return std::nullopt;
    }
    c.initiator = *v;
  }
  if (auto v = take("mutual_user")) c.mutual_user = *v;
  if (auto v = take("chap_algs")) {
    // open-iscsi's names, in order of preference, ':' between them (',' ends an option here).
    auto list = vcp::iscsi::parse_chap_algorithm_names(*v);
    if (!list) {
      *error = "bad chap_algs '" + *v + "' (SHA3-256, SHA256, SHA1 or MD5, several joined by ':')";
      return std::nullopt;
    }
    c.chap_algorithms = std::move(*list);
  }
  if (auto v = take("max_recv_segment")) {
    uint32_t n = 0;
    if (!parse_u32(*v, 0xffffff, &n) || n < 512) {
      *error = "bad max_recv_segment '" + *v + "' (512..16777215)";
      return std::nullopt;
    }
    c.max_recv_data_segment_length = n;
  }
  if (!seconds_option(opts, "timeout", &c.timeout_ms, error) ||
      !seconds_option(opts, "nop_interval", &c.nop_interval_ms, error) ||
      !seconds_option(opts, "nop_timeout", &c.nop_timeout_ms, error) ||
      !seconds_option(opts, "recovery_timeout", &c.recovery_timeout_ms, error) ||
      !seconds_option(opts, "login_timeout", &c.login_timeout_ms, error))
    return std::nullopt;

  std::string file_secret, file_mutual;
  if (auto f = take("secret_file")) {
    if (!read_secret_file(*f, &file_secret, &file_mutual, error)) return std::nullopt;
  }
  if (!opts.empty()) {
    *error = "unknown option '" + opts.begin()->first + "' for iscsi";
    return std::nullopt;
  }
  c.secret = !file_secret.empty() ? file_secret : env("VCP_ISCSI_SECRET").value_or("");
  c.mutual_secret = !file_mutual.empty() ? file_mutual : env("VCP_ISCSI_MUTUAL_SECRET").value_or("");
  if (!c.user.empty() && c.secret.empty()) {
    *error = "user '" + c.user + "' given but no CHAP secret: set secret_file= or VCP_ISCSI_SECRET";
    return std::nullopt;
  }
  if (!c.mutual_user.empty()) {
    if (c.user.empty()) {
      *error = "mutual_user= needs a user@ (mutual CHAP authenticates both sides)";
      return std::nullopt;
    }
    if (c.mutual_secret.empty()) {
      *error = "mutual_user given but no target secret: line 2 of secret_file= or VCP_ISCSI_MUTUAL_SECRET";
      return std::nullopt;
    }
  }
  if (!c.chap_algorithms.empty() && c.user.empty()) {
    *error = "chap_algs= needs a user@ (it chooses how CHAP is done)";
    return std::nullopt;
  }
  return c;
}

}  // namespace vcp::backends::iscsi

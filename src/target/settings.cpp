#include "target/settings.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <sstream>

#include "base/cpu.hpp"
#include "base/parse.hpp"
#include "iscsi/names.hpp"
#include "iscsi/sendtargets.hpp"

namespace vcp::target {

namespace {
// Far above any real file of the kind: a CHAP file is one line, a configuration a few dozen.
constexpr size_t kMaxChapFileBytes = 64 * 1024;
constexpr size_t kMaxConfigFileBytes = 1024 * 1024;
constexpr uint32_t kMinTimeoutMs = 1000;
constexpr const char* kNameForms = "iqn.YYYY-MM.reversed.domain[:id], eui.HEX or naa.HEX";
}  // namespace

std::optional<LunSpec> parse_lun_arg(const std::string& arg, std::string* error) {
  auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
    *error = "expected N=SPEC, e.g. 0=ram:size=64M";
    return std::nullopt;
  }
  std::string num = arg.substr(0, eq);
  if (!std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; }) || num.size() > 5) {
    *error = "LUN number '" + num + "' is not a number";
    return std::nullopt;
  }
  unsigned long n = std::stoul(num);
  if (n > 16383) {
    *error = "LUN number " + num + " is above 16383";
    return std::nullopt;
  }
  return LunSpec{static_cast<uint32_t>(n), arg.substr(eq + 1)};
}

bool parse_portal(const std::string& arg, std::string* host, uint16_t* port, std::string* error) {
  std::string h, p;
  if (!arg.empty() && arg[0] == '[') {
    auto close = arg.find(']');
    if (close == std::string::npos || close + 1 >= arg.size() || arg[close + 1] != ':') {
      *error = "expected [ADDR]:PORT";
      return false;
    }
    h = arg.substr(1, close - 1);
    p = arg.substr(close + 2);
  } else {
    auto colon = arg.rfind(':');
    if (colon == std::string::npos) {
      *error = "expected HOST:PORT";
      return false;
    }
    h = arg.substr(0, colon);
    p = arg.substr(colon + 1);
  }
  if (h.empty() || p.empty() || p.size() > 5 ||
      !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }) || std::stoul(p) > 65535) {
    *error = "bad portal '" + arg + "' (expected HOST:PORT)";
    return false;
  }
  *host = h;
  *port = static_cast<uint16_t>(std::stoul(p));
  return true;
}

std::optional<iscsi::ChapCredentials> read_chap_file(const std::string& path, std::string* error) {
  auto text = read_small_file(path, kMaxChapFileBytes);
  if (!text) {
    *error = "cannot read " + path + ": " + small_file_error(text.error(), "CHAP file");
    return std::nullopt;
  }
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream ls(line);
    std::string name, secret, extra;
    if (!(ls >> name)) continue;
    if (!(ls >> secret) || (ls >> extra)) {
      *error = path + ": expected one line 'NAME SECRET'";
      return std::nullopt;
    }
    if (iscsi::validate_secret(secret) != iscsi::ChapError::Ok) {
      *error = path + ": the secret must be 12 to 255 bytes";
      return std::nullopt;
    }
    return iscsi::ChapCredentials{name, secret};
  }
  *error = path + ": no 'NAME SECRET' line";
  return std::nullopt;
}

bool allow_initiator(InitiatorAcl& acl, const std::string& name, std::string* error) {
  auto n = iscsi::normalize_iscsi_name(name);
  if (!n) {
    *error = "'" + name + "' is not an iSCSI name (" + kNameForms + ")";
    return false;
  }
  if (std::find(acl.names.begin(), acl.names.end(), *n) == acl.names.end()) acl.names.push_back(*n);
  return true;
}

bool allow_address(InitiatorAcl& acl, const std::string& range, std::string* error) {
  auto r = parse_address_range(range, error);
  if (!r) return false;
  acl.addresses.push_back(std::move(*r));
  return true;
}

std::vector<Portal> TargetSettings::portals() const {
  std::vector<Portal> all{{host, port}};
  all.insert(all.end(), more_portals.begin(), more_portals.end());
  return all;
}

bool TargetSettings::set_portals(const std::vector<std::string>& texts, std::string* error) {
  if (texts.empty()) {
    *error = "no portal";
    return false;
  }
  std::vector<Portal> all(texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    if (!parse_portal(texts[i], &all[i].host, &all[i].port, error)) return false;
  host = all[0].host;
  port = all[0].port;
  more_portals.assign(all.begin() + 1, all.end());
  return true;
}

std::vector<TargetSpec> TargetSettings::all_targets() const {
  std::vector<TargetSpec> all{first_target()};
  all.insert(all.end(), more_targets.begin(), more_targets.end());
  return all;
}

void TargetSettings::set_first_target(TargetSpec t) {
  iqn = std::move(t.iqn);
  alias = std::move(t.alias);
  luns = std::move(t.luns);
  acl = std::move(t.acl);
  chap = std::move(t.chap);
  mutual_chap = std::move(t.mutual_chap);
}

AccessSettings AccessSettings::of(const TargetSettings& s) {
  AccessSettings a;
  for (const TargetSpec& t : s.all_targets()) a.targets.push_back({t.acl, t.chap, t.mutual_chap});
  a.discovery_chap = s.discovery_chap;
  a.discovery_mutual_chap = s.discovery_identity();
  a.chap_algorithms = s.chap_algorithms;
  a.set_portals(s.portals(), s.portal_group_tag);
  return a;
}

void AccessSettings::set_portals(const std::vector<Portal>& portals, uint16_t portal_group_tag) {
  portal_addresses.clear();
  wildcard_portal = false;
  for (const Portal& p : portals) {
    if (is_wildcard(p.host)) wildcard_portal = true;
    else portal_addresses.push_back(iscsi::target_address(p.host, p.port, portal_group_tag));
  }
}

bool is_wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

namespace {

// A TOML array of strings (check_keys() saw to that), each handed to add(); a missing key is
// no error.
bool string_list(const toml::table& root, const char* key, InitiatorAcl& s,
                 bool (*add)(InitiatorAcl&, const std::string&, std::string*), std::string* error) {
  const toml::array* a = root[key].as_array();
  if (!a) return true;
  for (const auto& item : *a) {
    if (!add(s, *item.value<std::string>(), error)) {
      *error = std::string(key) + ": " + *error;
      return false;
    }
  }
  return true;
}

bool digest_policy(const std::string& v, iscsi::DigestPolicy* out) {
  if (v == "none") *out = iscsi::DigestPolicy::None;
  else if (v == "allow") *out = iscsi::DigestPolicy::Allow;
  else if (v == "prefer") *out = iscsi::DigestPolicy::Prefer;
  else if (v == "require") *out = iscsi::DigestPolicy::Require;
  else return false;
  return true;
}

bool chap_table(const toml::table& root, const char* table, const char* file_key,
                std::optional<iscsi::ChapCredentials>* out, std::string* error) {
  if (auto f = root[file_key].value<std::string>()) {
    auto c = read_chap_file(*f, error);
    if (!c) return false;
    *out = c;
  }
  if (const toml::table* t = root[table].as_table()) {
    auto name = (*t)["name"].value<std::string>();
    auto secret = (*t)["secret"].value<std::string>();
    if (!name || !secret) {
      *error = std::string("[") + table + "] needs name and secret";
      return false;
    }
    *out = iscsi::ChapCredentials{*name, *secret};
  }
  return true;
}

// ---- What a file may hold: every key with its type, so that a mistyped key or value is an
// error at start (or a refused reload) instead of a setting silently not taken. ----

enum class Kind : uint8_t { string, integer, boolean, table, tables, strings, string_or_strings };

struct KeySpec {
  std::string_view name;
  Kind kind;
  const std::vector<KeySpec>* sub = nullptr;  // table, tables: the keys inside
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::string: return "a string";
    case Kind::integer: return "an integer";
    case Kind::boolean: return "true or false";
    case Kind::table: return "a table";
    case Kind::tables: return "a list of tables ([[...]])";
    case Kind::strings: return "a list of strings";
    case Kind::string_or_strings: return "a string or a list of strings";
  }
  return "?";
}

bool is_strings(const toml::node& n) {
  const toml::array* a = n.as_array();
  return a && std::all_of(a->begin(), a->end(), [](const toml::node& e) { return e.is_string(); });
}

bool has_kind(const toml::node& n, Kind k) {
  switch (k) {
    case Kind::string: return n.is_string();
    case Kind::integer: return n.is_integer();
    case Kind::boolean: return n.is_boolean();
    case Kind::table: return n.is_table();
    case Kind::tables: return n.is_array_of_tables();
    case Kind::strings: return is_strings(n);
    case Kind::string_or_strings: return n.is_string() || is_strings(n);
  }
  return false;
}

// Edit distance, for "did you mean" (names are short).
size_t distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string line_of(const toml::node& n) {
  return n.source().begin ? " (line " + std::to_string(n.source().begin.line) + ")" : "";
}

// Every key of t is one of `keys` with its kind; tables are checked in turn. `where` names the
// table for the message ("" at the top, "[limits]", "[[target]] 2 [[lun]] 1").
bool check_keys(const toml::table& t, const std::vector<KeySpec>& keys, const std::string& where, std::string* error) {
  const std::string in = where.empty() ? "" : where + " ";
  for (const auto& [k, node] : t) {
    const std::string name(k.str());
    auto spec = std::find_if(keys.begin(), keys.end(), [&](const KeySpec& s) { return s.name == name; });
    if (spec == keys.end()) {
      *error = (where.empty() ? "" : where + ": ") + "unknown key '" + name + "'" + line_of(node);
      const KeySpec* best = nullptr;
      size_t best_d = 3;  // suggest only close names
      for (const auto& s : keys)
        if (size_t d = distance(name, s.name); d < best_d) best_d = d, best = &s;
      if (best) *error += ": did you mean '" + std::string(best->name) + "'?";
      return false;
    }
    if (!has_kind(node, spec->kind)) {
      *error = in + name + ": expected " + kind_name(spec->kind) + line_of(node);
      return false;
    }
    if (!spec->sub) continue;
    if (spec->kind == Kind::table) {
      if (!check_keys(*node.as_table(), *spec->sub, in + "[" + name + "]", error)) return false;
      continue;
    }
    const toml::array& a = *node.as_array();
    for (size_t i = 0; i < a.size(); ++i)
      if (!check_keys(*a.get(i)->as_table(), *spec->sub, in + "[[" + name + "]] " + std::to_string(i + 1), error))
        return false;
  }
  return true;
}

const std::vector<KeySpec> kLunKeys = {{"number", Kind::integer}, {"backend", Kind::string}};
const std::vector<KeySpec> kChapKeys = {{"name", Kind::string}, {"secret", Kind::string}};
const std::vector<KeySpec> kTargetKeys = {
    {"iqn", Kind::string},
    {"alias", Kind::string},
    {"lun", Kind::tables, &kLunKeys},
    {"allowed_initiators", Kind::strings},
    {"allowed_addresses", Kind::strings},
    {"chap", Kind::table, &kChapKeys},
    {"mutual_chap", Kind::table, &kChapKeys},
    {"chap_file", Kind::string},
    {"mutual_chap_file", Kind::string},
};
const std::vector<KeySpec> kLimitKeys = {
    {"max_recv_data_segment_length", Kind::integer},
    {"max_burst_length", Kind::integer},
    {"first_burst_length", Kind::integer},
    {"max_outstanding_r2t", Kind::integer},
    {"initial_r2t", Kind::boolean},
    {"immediate_data", Kind::boolean},
    {"header_digest", Kind::string},
    {"data_digest", Kind::string},
    {"cmd_window", Kind::integer},
    {"max_transfer_bytes", Kind::integer},
    {"max_data_in_segment", Kind::integer},
    {"direct_rx_min", Kind::integer},
    {"login_timeout_ms", Kind::integer},
    {"nop_interval_ms", Kind::integer},
    {"nop_timeout_ms", Kind::integer},
    {"max_tasks", Kind::integer},
    {"connection_buffer_bytes", Kind::integer},
    {"buffer_bytes", Kind::integer},
    {"max_connections", Kind::integer},
    {"sendfile", Kind::string},
    {"sendfile_min", Kind::integer},
};
const std::vector<KeySpec> kTopKeys = [] {
  std::vector<KeySpec> k = kTargetKeys;  // the first target's
  k.insert(k.end(), {
                        {"portal", Kind::string_or_strings},
                        {"cpus", Kind::string},
                        {"state_dir", Kind::string},
                        {"chap_algorithms", Kind::string_or_strings},
                        {"discovery_chap", Kind::table, &kChapKeys},
                        {"discovery_chap_file", Kind::string},
                        {"discovery_mutual_chap", Kind::table, &kChapKeys},
                        {"discovery_mutual_chap_file", Kind::string},
                        {"target", Kind::tables, &kTargetKeys},
                        {"limits", Kind::table, &kLimitKeys},
                    });
  return k;
}();

// The keys of one target, at the top level of the file (the first target) or in a [[target]].
bool target_table(const toml::table& t, TargetSpec& s, std::string* error) {
  if (auto v = t["iqn"].value<std::string>()) s.iqn = *v;
  if (auto v = t["alias"].value<std::string>()) s.alias = *v;
  if (const toml::array* luns = t["lun"].as_array()) {
    for (const auto& node : *luns) {
      const toml::table* l = node.as_table();
      auto num = l ? (*l)["number"].value<int64_t>() : std::nullopt;
      auto backend = l ? (*l)["backend"].value<std::string>() : std::nullopt;
      if (!num || !backend || *num < 0 || *num > 16383) {
        *error = "[[lun]] needs number (0..16383) and backend";
        return false;
      }
      s.luns.push_back(LunSpec{static_cast<uint32_t>(*num), *backend});
    }
  }
  if (!string_list(t, "allowed_initiators", s.acl, allow_initiator, error)) return false;
  if (!string_list(t, "allowed_addresses", s.acl, allow_address, error)) return false;
  if (!chap_table(t, "chap", "chap_file", &s.chap, error)) return false;
  if (!chap_table(t, "mutual_chap", "mutual_chap_file", &s.mutual_chap, error)) return false;
  return true;
}

}  // namespace

bool load_toml(const std::string& path, TargetSettings& s, std::string* error) {
  auto text = read_small_file(path, kMaxConfigFileBytes);
  if (!text) {
    *error = "cannot read " + path + ": " + small_file_error(text.error(), "configuration file");
    return false;
  }
  toml::table root;
  try {
    root = toml::parse(*text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << path << ": " << e.description() << " (line " << e.source().begin.line << ")";
    *error = os.str();
    return false;
  }
  if (!check_keys(root, kTopKeys, "", error)) return false;
  TargetSpec first = s.first_target();
  if (!target_table(root, first, error)) return false;
  s.set_first_target(std::move(first));
  if (const toml::array* a = root["target"].as_array()) {  // of tables: check_keys()
    for (size_t i = 0; i < a->size(); ++i) {
      TargetSpec t;
      if (!target_table(*a->get(i)->as_table(), t, error)) {
        *error = "[[target]] " + std::to_string(i + 1) + ": " + *error;
        return false;
      }
      s.more_targets.push_back(std::move(t));
    }
  }
  if (auto v = root["portal"].value<std::string>()) {
    if (!s.set_portals({*v}, error)) return false;
  } else if (const toml::array* list = root["portal"].as_array()) {  // of strings: check_keys()
    std::vector<std::string> texts;
    for (const auto& e : *list) texts.push_back(*e.value<std::string>());
    if (!s.set_portals(texts, error)) {
      *error = "portal: " + *error;
      return false;
    }
  }
  if (auto v = root["cpus"].value<std::string>()) {
    auto cpus = parse_cpu_list(*v);
    if (!cpus) {
      *error = "cpus: bad CPU list '" + *v + "'";
      return false;
    }
    s.cpus = *cpus;
  }
  if (root.contains("state_dir")) {
    auto v = root["state_dir"].value<std::string>();  // a string: check_keys()
    if (v->empty()) {
      *error = "state_dir: a directory's path";
      return false;
    }
    s.state_dir = *v;
  }
  if (!chap_table(root, "discovery_chap", "discovery_chap_file", &s.discovery_chap, error)) return false;
  if (root.contains("chap_algorithms")) {
    // A list of names, or one string of them joined by ':' or ','.
    std::string text;
    if (auto v = root["chap_algorithms"].value<std::string>()) {
      text = *v;
    } else {
      for (const auto& node : *root["chap_algorithms"].as_array()) text += (text.empty() ? "" : ":") + *node.value<std::string>();
    }
    auto list = iscsi::parse_chap_algorithm_names(text);
    if (!list) {
      *error = "chap_algorithms: a list of \"SHA3-256\", \"SHA256\", \"SHA1\", \"MD5\"";
      return false;
    }
    s.chap_algorithms = std::move(*list);
  }
  if (!chap_table(root, "discovery_mutual_chap", "discovery_mutual_chap_file", &s.discovery_mutual_chap, error))
    return false;
  if (const toml::table* l = root["limits"].as_table()) {
    auto u32 = [&](const char* key, uint32_t* out) {
      if (auto v = (*l)[key].value<int64_t>()) {
        if (*v < 0 || *v > 0xffffffffll) return false;
        *out = static_cast<uint32_t>(*v);
      }
      return true;
    };
    auto& lim = s.limits;
    bool ok = u32("max_recv_data_segment_length", &lim.max_recv_data_segment_length) &&
              u32("max_burst_length", &lim.max_burst_length) &&
              u32("first_burst_length", &lim.first_burst_length) &&
              u32("max_outstanding_r2t", &lim.max_outstanding_r2t) && u32("cmd_window", &s.cmd_window) &&
              u32("max_transfer_bytes", &s.max_transfer_bytes) &&
              u32("max_data_in_segment", &s.max_data_in_segment) &&
              u32("direct_rx_min", &s.direct_rx_min) &&
              u32("login_timeout_ms", &s.login_timeout_ms) && u32("nop_interval_ms", &s.nop_interval_ms) &&
              u32("nop_timeout_ms", &s.nop_timeout_ms) && u32("max_tasks", &s.max_tasks) &&
              u32("connection_buffer_bytes", &s.connection_buffer_bytes) &&
              u32("max_connections", &s.max_connections) && u32("sendfile_min", &s.sendfile_min);
    if (auto v = (*l)["buffer_bytes"].value<int64_t>()) {
      if (*v < 0) ok = false;
      else s.buffer_bytes = static_cast<uint64_t>(*v);
    }
    if (!ok) {
      *error = "[limits]: a value is out of range";
      return false;
    }
    if (auto v = (*l)["sendfile"].value<std::string>()) {
      if (!parse_sendfile(*v, &s.sendfile)) {
        *error = "[limits] sendfile: auto, on or off";
        return false;
      }
    }
    if (auto v = (*l)["initial_r2t"].value<bool>()) lim.initial_r2t = *v;
    if (auto v = (*l)["immediate_data"].value<bool>()) lim.immediate_data = *v;
    for (auto [key, field] : {std::pair{"header_digest", &lim.header_digest}, std::pair{"data_digest", &lim.data_digest}}) {
      if (auto v = (*l)[key].value<std::string>()) {
        if (!digest_policy(*v, field)) {
          *error = std::string("[limits] ") + key + ": none, allow, prefer or require";
          return false;
        }
      }
    }
  }
  return true;
}

bool parse_sendfile(const std::string& v, TargetSettings::Sendfile* out) {
  if (v == "auto") *out = TargetSettings::Sendfile::Auto;
  else if (v == "on") *out = TargetSettings::Sendfile::On;
  else if (v == "off") *out = TargetSettings::Sendfile::Off;
  else return false;
  return true;
}

const char* to_string(TargetSettings::Sendfile v) {
  switch (v) {
    case TargetSettings::Sendfile::Auto: return "auto";
    case TargetSettings::Sendfile::On: return "on";
    case TargetSettings::Sendfile::Off: return "off";
  }
  return "?";
}

namespace {

// One target's checks; messages name the target when there are several (`which`).
bool validate_target(const TargetSpec& t, const std::string& which, std::string* error) {
  if (t.iqn.empty()) {
    *error = which.empty() ? "no target name (--iqn)" : which + ": no iqn";
    return false;
  }
  if (!iscsi::normalize_iscsi_name(t.iqn)) {
    *error = "target name '" + t.iqn + "' is not an iSCSI name (" + kNameForms + ")";
    return false;
  }
  const std::string of = which.empty() ? "" : " of " + t.iqn;
  if (t.luns.empty()) {
    *error = which.empty() ? "no LUN (--lun N=SPEC)" : "no LUN" + of;
    return false;
  }
  for (size_t i = 0; i < t.luns.size(); ++i)
    for (size_t j = i + 1; j < t.luns.size(); ++j)
      if (t.luns[i].number == t.luns[j].number) {
        *error = "LUN " + std::to_string(t.luns[i].number) + of + " given twice";
        return false;
      }
  if (t.mutual_chap && !t.chap) {
    *error = "mutual CHAP" + of + " needs the initiator's CHAP credentials too (--chap-file)";
    return false;
  }
  for (const auto* c : {&t.chap, &t.mutual_chap}) {
    if (*c && iscsi::validate_secret((*c)->secret) != iscsi::ChapError::Ok) {
      *error = "CHAP secrets must be 12 to 255 bytes";
      return false;
    }
  }
  if (t.chap && t.mutual_chap && t.chap->secret == t.mutual_chap->secret) {
    *error = "mutual CHAP" + of + " needs a different secret in each direction";
    return false;
  }
  return true;
}

}  // namespace

bool validate(const TargetSettings& s, std::string* error) {
  const std::vector<Portal> portals = s.portals();
  for (size_t i = 0; i < portals.size(); ++i)
    for (size_t j = i + 1; j < portals.size(); ++j)
      if (portals[i] == portals[j] && portals[i].port != 0) {
        *error = "portal " + iscsi::host_port(portals[i].host, portals[i].port) + " given twice";
        return false;
      }
  const std::vector<TargetSpec> targets = s.all_targets();
  std::vector<std::string> names;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!validate_target(targets[i], i == 0 ? "" : "[[target]] " + std::to_string(i), error)) return false;
    const std::string n = *iscsi::normalize_iscsi_name(targets[i].iqn);  // names compare without case
    if (std::find(names.begin(), names.end(), n) != names.end()) {
      *error = "target " + targets[i].iqn + " given twice";
      return false;
    }
    names.push_back(n);
  }
  if (s.discovery_chap && iscsi::validate_secret(s.discovery_chap->secret) != iscsi::ChapError::Ok) {
    *error = "CHAP secrets must be 12 to 255 bytes";
    return false;
  }
  if (s.discovery_mutual_chap && iscsi::validate_secret(s.discovery_mutual_chap->secret) != iscsi::ChapError::Ok) {
    *error = "CHAP secrets must be 12 to 255 bytes";
    return false;
  }
  if (s.discovery_mutual_chap && !s.discovery_chap) {
    *error = "discovery mutual CHAP needs discovery CHAP (the initiator authenticates first)";
    return false;
  }
  if (const auto id = s.discovery_identity(); s.discovery_chap && id && s.discovery_chap->secret == id->secret) {
    *error = "mutual CHAP needs a different secret in each direction";
    return false;
  }
  if (s.cmd_window < 1 || s.cmd_window > 4096) {
    *error = "cmd_window must be 1..4096";
    return false;
  }
  if (s.max_tasks < 1 || s.max_tasks > 65536) {
    *error = "max_tasks must be 1..65536";
    return false;
  }
  // The declarative limits go to the initiator as they are: RFC 7143's ranges (13.12-13.14, 13.17).
  const iscsi::NegotiationLimits& l = s.limits;
  for (auto [key, v] : {std::pair{"max_recv_data_segment_length", l.max_recv_data_segment_length},
                        std::pair{"max_burst_length", l.max_burst_length},
                        std::pair{"first_burst_length", l.first_burst_length}}) {
    if (v < 512 || v > 16777215) {
      *error = std::string(key) + " must be 512..16777215 (RFC 7143)";
      return false;
    }
  }
  if (l.first_burst_length > l.max_burst_length) {
    *error = "first_burst_length must not exceed max_burst_length (RFC 7143, 13.14)";
    return false;
  }
  if (l.max_outstanding_r2t < 1 || l.max_outstanding_r2t > 65535) {
    *error = "max_outstanding_r2t must be 1..65535";
    return false;
  }
  if (s.max_transfer_bytes < 512 || s.max_data_in_segment < 512) {
    *error = "max_transfer_bytes and max_data_in_segment must be at least 512";
    return false;
  }
  if (s.connection_buffer_bytes < (1u << 20)) {
    *error = "connection_buffer_bytes must be at least 1048576";
    return false;
  }
  const uint64_t threads = s.cpus.empty() ? 1 : s.cpus.size();
  if (s.buffer_bytes < s.connection_buffer_bytes || s.buffer_bytes / threads < (1u << 20)) {
    *error = "buffer_bytes must be at least connection_buffer_bytes and 1048576 per CPU";
    return false;
  }
  if (s.max_connections < 1 || s.max_connections > 65536) {
    *error = "max_connections must be 1..65536";
    return false;
  }
  // A connection is dropped when one of these runs out: shorter than a tick of the I/O thread's
  // timer they would drop healthy peers.
  for (auto [key, v] : {std::pair{"login_timeout_ms", s.login_timeout_ms},
                        std::pair{"nop_interval_ms", s.nop_interval_ms},
                        std::pair{"nop_timeout_ms", s.nop_timeout_ms}}) {
    if (v < kMinTimeoutMs) {
      *error = std::string(key) + " must be at least " + std::to_string(kMinTimeoutMs);
      return false;
    }
  }
  return true;
}

}  // namespace vcp::target

namespace vcp::target {

std::vector<std::string> take_live_limits(TargetSettings& to, const TargetSettings& from) {
  std::vector<std::string> changed;
  auto take = [&](const char* name, auto& dst, const auto& src) {
    if (dst == src) return;
    dst = src;
    changed.emplace_back(name);
  };
  using NL = iscsi::NegotiationLimits;
  for (auto [name, field] : {std::pair{"max_recv_data_segment_length", &NL::max_recv_data_segment_length},
                             std::pair{"max_burst_length", &NL::max_burst_length},
                             std::pair{"first_burst_length", &NL::first_burst_length},
                             std::pair{"max_outstanding_r2t", &NL::max_outstanding_r2t}})
    take(name, to.limits.*field, from.limits.*field);
  take("initial_r2t", to.limits.initial_r2t, from.limits.initial_r2t);
  take("immediate_data", to.limits.immediate_data, from.limits.immediate_data);
  take("header_digest", to.limits.header_digest, from.limits.header_digest);
  take("data_digest", to.limits.data_digest, from.limits.data_digest);
  // Keys the TOML file does not set (they have one value here) follow whole.
  take("negotiation limits", to.limits, from.limits);
  using TS = TargetSettings;
  for (auto [name, field] : {std::pair{"cmd_window", &TS::cmd_window}, std::pair{"max_data_in_segment", &TS::max_data_in_segment},
                             std::pair{"direct_rx_min", &TS::direct_rx_min},
                             std::pair{"login_timeout_ms", &TS::login_timeout_ms},
                             std::pair{"nop_interval_ms", &TS::nop_interval_ms},
                             std::pair{"nop_timeout_ms", &TS::nop_timeout_ms},
                             std::pair{"max_connections", &TS::max_connections}})
    take(name, to.*field, from.*field);
  // A connection's room must fit in its thread's share of the buffer room the threads were made
  // with: a larger one waits for a restart with buffer_bytes.
  const uint64_t share = to.buffer_bytes / std::max<size_t>(1, to.cpus.size());
  if (from.connection_buffer_bytes <= share)
    take("connection_buffer_bytes", to.connection_buffer_bytes, from.connection_buffer_bytes);
  take("sendfile", to.sendfile, from.sendfile);
  take("sendfile_min", to.sendfile_min, from.sendfile_min);
  return changed;
}

std::vector<std::string> restart_limits_differing(const TargetSettings& a, const TargetSettings& b) {
  std::vector<std::string> out;
  if (a.max_transfer_bytes != b.max_transfer_bytes) out.emplace_back("max_transfer_bytes");
  if (a.max_tasks != b.max_tasks) out.emplace_back("max_tasks");
  if (a.buffer_bytes != b.buffer_bytes) out.emplace_back("buffer_bytes");
  if (a.connection_buffer_bytes != b.connection_buffer_bytes)  // not taken live: too large for the running threads
    out.emplace_back("connection_buffer_bytes");
  return out;
}

}  // namespace vcp::target

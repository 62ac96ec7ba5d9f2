#include "iscsi/names.hpp"

namespace vcp::iscsi {

std::optional<std::string> normalize_iscsi_name(std::string_view name) {
  if (name.size() < 5 || name.size() > 223) return std::nullopt;
  std::string n(name);
  for (char& c : n) {
    if (c <= ' ' || c > '~') return std::nullopt;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (n.rfind("iqn.", 0) != 0 && n.rfind("eui.", 0) != 0 && n.rfind("naa.", 0) != 0) return std::nullopt;
  return n;
}

bool same_iscsi_name(std::string_view a, std::string_view b) {
  const auto na = normalize_iscsi_name(a);
  return na && na == normalize_iscsi_name(b);
}

}  // namespace vcp::iscsi

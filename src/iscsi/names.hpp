// iSCSI names (RFC 7143 §4.2.7, RFC 3722): what is one, and when two are the same.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace vcp::iscsi {

// An iSCSI name as names compare (RFC 3722: case does not matter; lower case is the form), or
// nothing if it is not one: "iqn.", "eui." or "naa." then printable ASCII without spaces, at
// most 223 bytes (RFC 7143 §4.2.7.1).
std::optional<std::string> normalize_iscsi_name(std::string_view name);
// Both are iSCSI names and the same one.
bool same_iscsi_name(std::string_view a, std::string_view b);

}  // namespace vcp::iscsi

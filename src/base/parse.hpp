// Parsing of the small textual forms users type: sizes ("4k", "1G") and backend specs
// ("file:path=/x,direct=on"). Everything here is input from a user: errors are values with a
// message, never exceptions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "base/result.hpp"

namespace vcp {

// "512", "4k", "4K", "4KiB", "1M", "1G", "2T" (powers of 1024). Overflow and junk are errors.
Result<uint64_t> parse_size(const std::string& s);
// "on"/"off", "yes"/"no", "true"/"false", "1"/"0".
Result<bool> parse_bool(const std::string& s);

// "kind:key=value,key=value" (also "kind" alone). Keys are unique; values may be empty.
struct Spec {
  std::string kind;
  std::map<std::string, std::string> options;

  std::optional<std::string> get(const std::string& key) const;
  // Removes and returns a key's value, so that leftovers can be reported as unknown.
  std::optional<std::string> take(const std::string& key);
};
// On failure, *error says what is wrong.
std::optional<Spec> parse_spec(const std::string& text, std::string* error);

// Reads all of a small file a user points us at (a secrets file, a configuration file), at most
// max_bytes: a longer one is EFBIG, so a wrong path (a disk image, /dev/zero) cannot take the
// memory. Pipes and /dev/fd/N work (handing a secret over on a descriptor). Retries EINTR.
Result<std::string> read_small_file(const std::string& path, size_t max_bytes);
// Why read_small_file failed, in words: "longer than a KIND can be" for EFBIG, else the errno's.
std::string small_file_error(int err, const std::string& kind);

}  // namespace vcp

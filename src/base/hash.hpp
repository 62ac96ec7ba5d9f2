// FNV-1a, 64 bits: a stable name for a string (a disk's serial, a LUN's NAA identifier). Not a
// secret and not for hash tables under attack: only a value two different inputs do not share
// by chance.
#pragma once

#include <cstdint>
#include <string_view>

namespace vcp {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;

// `h` carries on an earlier hash, so that parts can be hashed as if joined.
constexpr uint64_t fnv1a64(std::string_view s, uint64_t h = kFnv1aOffset) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace vcp

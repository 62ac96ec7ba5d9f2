// One line per backend kind: the registry (registry.cpp) is the only caller.
#pragma once

#include <memory>
#include <string>

#include "backends/block_backend.hpp"
#include "base/parse.hpp"

namespace vcp::backends {

// Each takes the parsed spec (consuming the options it knows) and returns null with *error set
// on failure.
std::unique_ptr<BlockBackend> make_null(Spec& spec, std::string* error);
std::unique_ptr<BlockBackend> make_ram(Spec& spec, std::string* error);
std::unique_ptr<BlockBackend> make_file(Spec& spec, std::string* error);
// iscsi takes the whole URL ("iscsi://host/iqn/lun?..."): its syntax is not "kind:key=value".
std::unique_ptr<BlockBackend> make_iscsi(const std::string& url, std::string* error);

// Shared option helpers: a size option (with a default), a block size (power of two, 512..64K).
bool take_size(Spec& spec, const char* key, uint64_t* out, std::string* error);
bool take_block_size(Spec& spec, uint32_t* out, std::string* error);
bool take_bool(Spec& spec, const char* key, bool* out, std::string* error);

}  // namespace vcp::backends

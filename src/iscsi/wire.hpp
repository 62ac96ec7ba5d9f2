// Big-endian field access for iSCSI headers. Every multi-byte BHS field is big-endian
// (RFC 7143 §11.1); the only little-endian thing on the wire is the CRC32C digest.
#pragma once

#include "base/endian.hpp"

namespace vcp::iscsi::wire {

using vcp::load_be16;
using vcp::load_be24;
using vcp::load_be32;
using vcp::load_be64;
using vcp::store_be16;
using vcp::store_be24;
using vcp::store_be32;
using vcp::store_be64;

}  // namespace vcp::iscsi::wire

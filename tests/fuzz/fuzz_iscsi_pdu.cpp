// Decodes any bytes as one iSCSI PDU (BHS, AHS, data, with every digest combination chosen by
// the first byte) and checks that what decodes re-encodes to something that decodes the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "iscsi/pdu.hpp"

using namespace vcp::iscsi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Digests digests{(data[0] & 1) != 0, (data[0] & 2) != 0};
  const std::span<const uint8_t> in(data + 1, size - 1);

  // The header alone.
  Pdu bhs;
  if (decode_bhs(in, bhs) == PduError::Ok) {
    std::array<uint8_t, kBhsSize> again;
    encode_bhs(bhs, again);
    Pdu back;
    if (decode_bhs(again, back) != PduError::Ok || !(back == bhs)) abort();
    std::array<uint8_t, kBhsSize> third;
    encode_bhs(back, third);
    if (third != again) abort();
    (void)to_string(opcode_of(bhs));
  }

  // A whole PDU with its segments.
  if (in.size() >= kBhsSize) {
    const Bhs raw = [&] {
      Bhs b;
      std::memcpy(b.bytes.data(), in.data(), kBhsSize);
      return b;
    }();
    const uint64_t want = pdu_length(raw, digests);
    if (want <= in.size()) {
      PduParts parts;
      const PduError e = decode_pdu(in.first(want), digests, parts);
      (void)reject_reason_for(e);
      (void)to_string(e);
      if (e == PduError::Ok) {
        std::vector<uint8_t> out(want);
        const size_t n = encode_pdu(parts.header, parts.ahs, parts.data, digests, out);
        if (n != want) abort();
        PduParts again;
        if (decode_pdu(out, digests, again) != PduError::Ok) abort();
        if (!(again.header == parts.header)) abort();
        if (again.data.size() != parts.data.size() ||
            std::memcmp(again.data.data(), parts.data.data(), parts.data.size()) != 0)
          abort();
        AhsInfo info;
        (void)parse_ahs(parts.ahs, info);
        if (const auto* cmd = std::get_if<ScsiCommandPdu>(&parts.header)) (void)cmd->lun.number();
      }
    }
  }
  return 0;
}

#include "backends/iscsi/scsi.hpp"

#include <cerrno>
#include <cstdio>

#include "iscsi/wire.hpp"

namespace vcp::backends::iscsi {

using vcp::iscsi::wire::load_be16;
using vcp::iscsi::wire::load_be32;
using vcp::iscsi::wire::load_be64;
using vcp::iscsi::wire::store_be16;
using vcp::iscsi::wire::store_be32;
using vcp::iscsi::wire::store_be64;

Cdb build_read16(uint64_t lba, uint32_t blocks) {
  Cdb c{};
  c[0] = vcp::scsi::op::kRead16;
  store_be64(&c[2], lba);
  store_be32(&c[10], blocks);
  return c;
}

Cdb build_write16(uint64_t lba, uint32_t blocks, bool fua) {
  Cdb c{};
  c[0] = vcp::scsi::op::kWrite16;
  c[1] = fua ? 0x08 : 0;
  store_be64(&c[2], lba);
  store_be32(&c[10], blocks);
  return c;
}

Cdb build_synchronize_cache16() {
  Cdb c{};  // LBA 0, NUMBER OF LOGICAL BLOCKS 0: the whole medium
  c[0] = vcp::scsi::op::kSyncCache16;
  return c;
}

Cdb build_unmap(uint16_t param_length) {
  Cdb c{};
  c[0] = vcp::scsi::op::kUnmap;
  store_be16(&c[7], param_length);
  return c;
}

void build_unmap_params(uint64_t lba, uint32_t blocks, std::span<uint8_t, kUnmapParamLength> out) {
  std::fill(out.begin(), out.end(), uint8_t{0});
  store_be16(&out[0], kUnmapParamLength - 2);  // UNMAP DATA LENGTH: bytes after this field
  store_be16(&out[2], 16);                     // UNMAP BLOCK DESCRIPTOR DATA LENGTH
  store_be64(&out[8], lba);
  store_be32(&out[16], blocks);
}

Cdb build_write_same16(uint64_t lba, uint32_t blocks, bool unmap) {
  Cdb c{};
  c[0] = vcp::scsi::op::kWriteSame16;
  c[1] = unmap ? 0x08 : 0;
  store_be64(&c[2], lba);
  store_be32(&c[10], blocks);
  return c;
}

Cdb build_inquiry_vpd(uint8_t page, uint16_t allocation) {
  Cdb c{};
  c[0] = vcp::scsi::op::kInquiry;
  c[1] = 0x01;  // EVPD
  c[2] = page;
  store_be16(&c[3], allocation);
  return c;
}

Cdb build_mode_sense10_header() {
  Cdb c{};
  c[0] = vcp::scsi::op::kModeSense10;
  c[1] = 0x08;  // DBD
  c[2] = 0x3f;  // PC 0 (current values), all pages
  store_be16(&c[7], kModeSense10HeaderLength);
  return c;
}

std::optional<bool> parse_mode_sense10_write_protect(std::span<const uint8_t> d) {
  if (d.size() < 4) return std::nullopt;
  return (d[3] & 0x80) != 0;
}

Cdb build_read_capacity16(uint32_t allocation) {
  Cdb c{};
  c[0] = vcp::scsi::op::kServiceActionIn16;
  c[1] = static_cast<uint8_t>(vcp::scsi::sa::kReadCapacity16);
  store_be32(&c[10], allocation);
  return c;
}

Cdb build_test_unit_ready() { return Cdb{}; }

std::optional<Capacity> parse_read_capacity16(std::span<const uint8_t> d) {
  if (d.size() < 14) return std::nullopt;
  Capacity c;
  uint64_t last = load_be64(&d[0]);
  if (last == ~uint64_t{0}) return std::nullopt;
  c.blocks = last + 1;
  c.block_size = load_be32(&d[8]);
  if (c.block_size < 512 || c.block_size > 65536 || (c.block_size & (c.block_size - 1)) != 0)
    return std::nullopt;
  c.physical_block_exponent = d[13] & 0x0f;
  if (d.size() >= 15) {
    c.thin_provisioning_enabled = (d[14] & 0x80) != 0;
    c.unmapped_reads_zero = (d[14] & 0x40) != 0;
  }
  return c;
}

namespace {
// A VPD page's payload after its 4-byte header, checked against the page code we asked for.
std::optional<std::span<const uint8_t>> vpd_payload(std::span<const uint8_t> d, uint8_t page) {
  if (d.size() < 4 || d[1] != page) return std::nullopt;
  size_t len = load_be16(&d[2]);
  size_t have = d.size() - 4;
  return d.subspan(4, len < have ? len : have);
}
}  // namespace

std::optional<BlockLimits> parse_block_limits_vpd(std::span<const uint8_t> d) {
  auto p = vpd_payload(d, 0xb0);
  if (!p) return std::nullopt;
  // Offsets below are from the page start (SBC-4 Table 217); p starts at byte 4.
  auto at = [&](size_t page_offset, size_t n) -> const uint8_t* {
    return page_offset + n <= p->size() + 4 ? &(*p)[page_offset - 4] : nullptr;
  };
  BlockLimits b;
  if (auto x = at(8, 4)) b.max_transfer_blocks = load_be32(x);
  if (auto x = at(12, 4)) b.optimal_transfer_blocks = load_be32(x);
  if (auto x = at(20, 4)) b.max_unmap_blocks = load_be32(x);
  if (auto x = at(24, 4)) b.max_unmap_descriptors = load_be32(x);
  if (auto x = at(28, 4)) b.unmap_granularity_blocks = load_be32(x) & 0x7fffffffu;
  if (auto x = at(36, 8)) b.max_write_same_blocks = load_be64(x);
  return b;
}

std::optional<Provisioning> parse_provisioning_vpd(std::span<const uint8_t> d) {
  auto p = vpd_payload(d, 0xb2);
  if (!p || p->size() < 2) return std::nullopt;
  Provisioning v;
  uint8_t flags = (*p)[1];  // page byte 5
  v.unmap = (flags & 0x80) != 0;
  v.write_same16 = (flags & 0x40) != 0;
  v.unmapped_reads_zero = (flags & 0x04) != 0;
  return v;
}

std::optional<std::string> parse_serial_vpd(std::span<const uint8_t> d) {
  auto p = vpd_payload(d, 0x80);
  if (!p) return std::nullopt;
  std::string s;
  for (uint8_t ch : *p) {
    if (ch == 0) break;
    if (ch < 0x20 || ch > 0x7e) return std::nullopt;
    s.push_back(static_cast<char>(ch));
  }
  size_t b = s.find_first_not_of(' ');
  if (b == std::string::npos) return std::string();
  size_t e = s.find_last_not_of(' ');
  return s.substr(b, e - b + 1);
}

std::optional<std::string> parse_device_id_vpd(std::span<const uint8_t> d) {
  auto p = vpd_payload(d, 0x83);
  if (!p) return std::nullopt;
  // Designation descriptors (SPC-4 7.8.6): 4-byte header, then the designator. Of those that
  // name the logical unit (association 0) we take the strongest: NAA, then EUI-64, then the
  // T10 vendor ID, then the SCSI name string.
  static constexpr uint8_t kRank[16] = {0, 2, 3, 4, 0, 0, 0, 0, 1};  // by designator type
  std::optional<std::string> best;
  uint8_t best_rank = 0;
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t off = 0; off + 4 <= p->size();) {
    const uint8_t* h = &(*p)[off];
    const size_t len = h[3];
    if (off + 4 + len > p->size()) break;  // a descriptor running past the page: stop there
    const uint8_t code_set = h[0] & 0x0f, assoc = (h[1] >> 4) & 0x3, type = h[1] & 0x0f;
    const uint8_t* v = h + 4;
    off += 4 + len;
    if (assoc != 0 || len == 0 || kRank[type] <= best_rank) continue;
    std::string s;
    if (code_set == 1) {  // binary: hex
      for (size_t k = 0; k < len; ++k) {
        s.push_back(kHex[v[k] >> 4]);
        s.push_back(kHex[v[k] & 0xf]);
      }
    } else {  // ASCII or UTF-8: printable ASCII only
      bool ok = true;
      for (size_t k = 0; k < len && v[k]; ++k) {
        if (v[k] < 0x20 || v[k] > 0x7e) ok = false;
        s.push_back(static_cast<char>(v[k]));
      }
      while (!s.empty() && s.back() == ' ') s.pop_back();
      if (!ok || s.empty()) continue;
    }
    best = std::move(s);
    best_rank = kRank[type];
  }
  return best;
}

std::optional<Sense> parse_sense(std::span<const uint8_t> d) {
  if (d.empty()) return std::nullopt;
  uint8_t code = d[0] & 0x7f;
  Sense s;
  if (code == 0x70 || code == 0x71) {
    if (d.size() < 3) return std::nullopt;
    s.deferred = code == 0x71;
    s.key = d[2] & 0x0f;
    // ASC/ASCQ are present when the additional sense length reaches them.
    size_t total = d.size() >= 8 ? 8 + size_t{d[7]} : d.size();
    if (total > d.size()) total = d.size();
    if (total >= 14) {
      s.asc = d[12];
      s.ascq = d[13];
    }
    return s;
  }
  if (code == 0x72 || code == 0x73) {
    if (d.size() < 4) return std::nullopt;
    s.deferred = code == 0x73;
    s.key = d[1] & 0x0f;
    s.asc = d[2];
    s.ascq = d[3];
    return s;
  }
  return std::nullopt;
}

std::optional<Sense> parse_response_sense(std::span<const uint8_t> seg) {
  if (seg.size() < 2) return std::nullopt;
  size_t len = load_be16(seg.data());
  if (len == 0 || len > seg.size() - 2) return std::nullopt;
  return parse_sense(seg.subspan(2, len));
}

const char* sense_key_name(uint8_t key) {
  static const char* const names[16] = {
      "NO SENSE",        "RECOVERED ERROR", "NOT READY",     "MEDIUM ERROR",
      "HARDWARE ERROR",  "ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT",
      "BLANK CHECK",     "VENDOR SPECIFIC", "COPY ABORTED",   "ABORTED COMMAND",
      "RESERVED (0xc)",  "VOLUME OVERFLOW", "MISCOMPARE",     "COMPLETED"};
  return names[key & 0x0f];
}

std::string describe(const Sense& s) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s%s, ASC/ASCQ %02x/%02x", s.deferred ? "deferred " : "",
                sense_key_name(s.key), s.asc, s.ascq);
  return buf;
}

Outcome classify(uint8_t status, const std::optional<Sense>& sense, BlockOp op) {
  using vcp::scsi::Status;
  switch (static_cast<Status>(status)) {
    case Status::good:
    case Status::condition_met:
      return {};
    case Status::busy:
    case Status::task_set_full:
    case Status::aca_active:
    case Status::task_aborted:
      return {Verdict::RetryBackoff, 0};
    case Status::reservation_conflict:
      return {Verdict::Done, -EBUSY};
    case Status::check_condition:
      break;
    default:
      return {Verdict::Done, -EIO};
  }
  if (!sense) return {Verdict::Done, -EIO};
  switch (static_cast<vcp::scsi::SenseKey>(sense->key)) {
    case vcp::scsi::SenseKey::no_sense:
    case vcp::scsi::SenseKey::recovered_error:
      return {};
    case vcp::scsi::SenseKey::unit_attention:
      return {Verdict::RetryNow, 0};
    case vcp::scsi::SenseKey::aborted_command:
      return {Verdict::RetryBackoff, 0};
    case vcp::scsi::SenseKey::not_ready:
      // 04/01 becoming ready, 04/07 operation in progress, 04/0a transitioning: wait.
      if (sense->asc == 0x04 && (sense->ascq == 0x01 || sense->ascq == 0x07 || sense->ascq == 0x0a))
        return {Verdict::RetryBackoff, 0};
      return {Verdict::Done, -EIO};
    case vcp::scsi::SenseKey::illegal_request:
      // 20/00 invalid command operation code, 24/00 invalid field in CDB: an optional command
      // (or its UNMAP bit) the target does not have.
      if ((op == BlockOp::discard || op == BlockOp::write_zeroes || op == BlockOp::flush) &&
          (sense->asc == 0x20 || sense->asc == 0x24))
        return {Verdict::Done, -EOPNOTSUPP};
      return {Verdict::Done, -EIO};
    case vcp::scsi::SenseKey::data_protect:
      // 27/07 SPACE ALLOCATION FAILED WRITE PROTECT: a thin LUN (or the file system under it) is full.
      if (sense->asc == 0x27 && sense->ascq == 0x07) return {Verdict::Done, -ENOSPC};
      return {Verdict::Done, -EROFS};
    default:
      return {Verdict::Done, -EIO};
  }
}

}  // namespace vcp::backends::iscsi

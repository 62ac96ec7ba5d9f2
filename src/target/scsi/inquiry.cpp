// INQUIRY (standard data and the VPD pages), REPORT LUNS, and the answer for absent LUNs.
#include <algorithm>
#include <cstring>

#include "base/hash.hpp"
#include "target/scsi/cdb.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::scsi {
namespace {

constexpr uint8_t kDiskType = 0x00;
constexpr unsigned kStdInquiryLen = 66;

void put_padded(uint8_t* dst, const std::string& s, size_t width) {
  std::memset(dst, ' ', width);
  std::memcpy(dst, s.data(), std::min(s.size(), width));
}

void standard_inquiry(uint8_t* d, uint8_t peripheral, const std::string& vendor, const std::string& product,
                      const std::string& revision) {
  std::memset(d, 0, kStdInquiryLen);
  d[0] = peripheral;
  d[2] = 0x06;                       // VERSION: SPC-4
  d[3] = 0x10 | 0x02;                // HISUP, RESPONSE DATA FORMAT 2
  d[4] = kStdInquiryLen - 5;         // ADDITIONAL LENGTH
  d[7] = 0x02;                       // CMDQUE
  put_padded(d + 8, vendor, 8);
  put_padded(d + 16, product, 16);
  put_padded(d + 32, revision, 4);
  // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
  store_be16(d + 58, 0x00a0);
  store_be16(d + 60, 0x0960);
  store_be16(d + 62, 0x0460);
  store_be16(d + 64, 0x04c0);
}

// FNV-1a: a stable 60-bit locally assigned NAA identifier from the serial number.
uint64_t naa_from(const std::string& s) { return (uint64_t{0x3} << 60) | (fnv1a64(s) & 0x0fffffffffffffffull); }

void append_designator(std::vector<uint8_t>& out, uint8_t proto_codeset, uint8_t piv_assoc_type,
                       const uint8_t* data, size_t len) {
  out.push_back(proto_codeset);
  out.push_back(piv_assoc_type);
  out.push_back(0);
  out.push_back(static_cast<uint8_t>(len));
  out.insert(out.end(), data, data + len);
}

void append_name_designator(std::vector<uint8_t>& out, uint8_t piv_assoc_type, const std::string& name) {
  size_t len = (name.size() + 1 + 3) & ~size_t{3};  // NUL-terminated, a multiple of 4
  len = std::min<size_t>(len, 252);
  std::vector<uint8_t> buf(len, 0);
  std::memcpy(buf.data(), name.data(), std::min(name.size(), len - 1));
  append_designator(out, 0x50 | 0x03, piv_assoc_type, buf.data(), len);  // iSCSI, UTF-8
}

}  // namespace

void Lun::build_vpd(uint8_t page, std::vector<uint8_t>& out, bool* supported) const {
  *supported = true;
  out.assign(4, 0);
  out[0] = kDiskType;
  out[1] = page;
  switch (page) {
    case 0x00: {
      const uint8_t pages[] = {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2};
      out.insert(out.end(), pages, pages + (thin_ ? 6 : 5));
      break;
    }
    case 0x80:
      out.insert(out.end(), cfg_.serial.begin(), cfg_.serial.end());
      break;
    case 0x83: {
      uint8_t naa[8];
      store_be64(naa, naa_from(cfg_.serial + "/" + cfg_.target_name));
      append_designator(out, 0x01, 0x03, naa, 8);  // binary, LU, NAA
      std::vector<uint8_t> t10(8, ' ');
      std::memcpy(t10.data(), cfg_.vendor.data(), std::min<size_t>(cfg_.vendor.size(), 8));
      t10.insert(t10.end(), cfg_.serial.begin(), cfg_.serial.end());
      append_designator(out, 0x02, 0x01, t10.data(), t10.size());  // ASCII, LU, T10 vendor id
      uint8_t rel[4] = {0, 0, 0, 0};
      store_be16(rel + 2, cfg_.relative_port);
      append_designator(out, 0x51, 0x94, rel, 4);  // iSCSI, PIV, target port, relative port
      uint8_t tpg[4] = {0, 0, 0, 0};
      store_be16(tpg + 2, cfg_.target_port_group);
      append_designator(out, 0x51, 0x95, tpg, 4);  // target port group
      if (!cfg_.target_port_name.empty()) append_name_designator(out, 0x98, cfg_.target_port_name);
      if (!cfg_.target_name.empty()) append_name_designator(out, 0xa8, cfg_.target_name);
      break;
    }
    case 0xb0: {
      out.resize(64, 0);
      uint8_t* d = out.data();
      d[4] = 0x01;  // WSNZ: WRITE SAME with zero blocks is not "to the end"
      d[5] = cfg_.max_compare_write_blocks;
      const BackendInfo& info = backend_.info();
      store_be16(d + 6, static_cast<uint16_t>(std::min<uint32_t>(info.optimal_io_bytes / block_size_, 0xffff)));
      store_be32(d + 8, max_transfer_blocks_);
      if (thin_) {
        store_be32(d + 20, cfg_.max_unmap_blocks);
        store_be32(d + 24, cfg_.max_unmap_descriptors);
        uint32_t gran = info.discard_granularity ? info.discard_granularity / block_size_ : 1;
        store_be32(d + 28, std::max<uint32_t>(gran, 1));
      }
      store_be64(d + 36, cfg_.max_write_same_blocks);
      break;
    }
    case 0xb1:
      out.resize(64, 0);
      store_be16(out.data() + 4, 0x0001);  // non-rotating medium
      break;
    case 0xb2:
      if (!thin_) {
        *supported = false;
        return;
      }
      out.resize(8, 0);
      out[5] = 0x80 | 0x40 | 0x20 | (lbprz_ ? 0x04 : 0);  // LBPU LBPWS LBPWS10, LBPRZ 001b
      out[6] = 0x02;                                     // thin provisioned
      break;
    default:
      *supported = false;
      return;
  }
  store_be16(out.data() + 2, static_cast<uint16_t>(out.size() - 4));
}

void Lun::cmd_inquiry(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  uint32_t alloc = load_be16(cdb + 3);
  if (cdb[1] & 0x02) return finish_sense(t, invalid_cdb_field(1, 1));  // CMDDT
  if (!(cdb[1] & 0x01)) {
    if (cdb[2] != 0) return finish_sense(t, invalid_cdb_field(2));
    uint8_t d[kStdInquiryLen];
    standard_inquiry(d, kDiskType, cfg_.vendor, cfg_.product, cfg_.revision);
    return finish_data_in(t, d, sizeof(d), alloc);
  }
  bool supported = false;
  build_vpd(cdb[2], response_, &supported);
  if (!supported) return finish_sense(t, invalid_cdb_field(2));
  finish_data_in(t, response_.data(), response_.size(), alloc);
}

void Lun::cmd_report_luns(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  uint8_t select = cdb[2];
  if (select != 0x00 && select != 0x01 && select != 0x02) return finish_sense(t, invalid_cdb_field(2));
  shared_->remove_ua(*nexus_state(*t->nexus).rec, Asc::reported_luns_data_changed);
  response_.assign(8, 0);
  if (select != 0x01) {  // 01h: well-known LUNs only, of which there are none
    std::vector<uint64_t> one{cfg_.lun};
    const std::vector<uint64_t>& luns = reported_luns_.empty() ? one : reported_luns_;
    for (uint64_t l : luns) {
      uint8_t e[8];
      encode_lun(l, e);
      response_.insert(response_.end(), e, e + 8);
    }
  }
  store_be32(response_.data(), static_cast<uint32_t>(response_.size() - 8));
  finish_data_in(t, response_.data(), response_.size(), load_be32(cdb + 6));
}

// A task for a LUN that does not exist completes here, with no Lun behind it.
void respond_without_lun(ScsiTask* t, const std::vector<uint64_t>& luns) {
  auto reply = [t](const uint8_t* data, uint64_t len, uint64_t alloc) {
    uint64_t want = std::min(len, alloc);
    uint64_t room = std::min<uint64_t>(t->expected_length, want);
    uint64_t copied = 0;
    for (uint32_t i = 0; i < t->iovcnt && copied < room && t->dir == DataDir::in; ++i) {
      uint64_t n = std::min<uint64_t>(t->iov[i].iov_len, room - copied);
      std::memcpy(t->iov[i].iov_base, data + copied, n);
      copied += n;
    }
    t->status = Status::good;
    t->data_in_len = static_cast<uint32_t>(copied);
    if (want > t->expected_length) {
      t->residual_kind = Residual::overflow;
      t->residual = static_cast<uint32_t>(std::min<uint64_t>(want - t->expected_length, UINT32_MAX));
    } else if (want < t->expected_length) {
      t->residual_kind = Residual::underflow;
      t->residual = static_cast<uint32_t>(t->expected_length - want);
    }
  };
  t->sense_len = 0;
  t->residual_kind = Residual::none;
  t->residual = 0;
  t->data_in_len = 0;
  t->aborted = false;
  const uint8_t* cdb = t->cdb;
  Sense not_supported = illegal(Asc::lun_not_supported);
  if (cdb[0] == op::kInquiry && !(cdb[1] & 0x03) && cdb[2] == 0) {
    uint8_t d[kStdInquiryLen];
    standard_inquiry(d, 0x7f, "VCP", "no such LUN", "0001");  // qualifier 011b, type 1Fh
    reply(d, sizeof(d), load_be16(cdb + 3));
  } else if (cdb[0] == op::kReportLuns && cdb[2] <= 0x02) {
    std::vector<uint8_t> d(8, 0);
    if (cdb[2] != 0x01)
      for (uint64_t l : luns) {
        uint8_t e[8];
        encode_lun(l, e);
        d.insert(d.end(), e, e + 8);
      }
    store_be32(d.data(), static_cast<uint32_t>(d.size() - 8));
    reply(d.data(), d.size(), load_be32(cdb + 6));
  } else if (cdb[0] == op::kRequestSense) {
    uint8_t s[kFixedSenseLen];
    not_supported.encode(s);
    reply(s, sizeof(s), cdb[4]);
  } else {
    t->status = Status::check_condition;
    not_supported.encode(t->sense);
    t->sense_len = kFixedSenseLen;
    if (t->expected_length) {
      t->residual_kind = Residual::underflow;
      t->residual = t->expected_length;
    }
  }
  t->done(t);
}

}  // namespace vcp::scsi

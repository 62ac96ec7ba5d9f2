// MODE SENSE(6/10) and MODE SELECT(6/10): the caching page (WCE), the control page and the
// informational exceptions control page. Saved values are not supported (SPC-4 7.5).
#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.hpp"
#include "target/scsi/lun.hpp"

namespace vcp::scsi {
namespace {

constexpr uint8_t kCachingPage = 0x08, kControlPage = 0x0a, kInfoExceptionsPage = 0x1c, kAllPages = 0x3f;
constexpr uint8_t kPageOrder[] = {kCachingPage, kControlPage, kInfoExceptionsPage};
constexpr uint8_t kPcChangeable = 1, kPcDefault = 2, kPcSaved = 3;  // 0: current values

uint8_t page_length(uint8_t code) {
  switch (code) {
    case kCachingPage: return 20;
    case kControlPage: return 12;
    case kInfoExceptionsPage: return 12;
    default: return 0;
  }
}

// A page with the given values (wce only matters for the caching page).
void fill_page(uint8_t code, bool changeable, bool wce, uint8_t* d) {
  uint8_t len = page_length(code);
  std::memset(d, 0, len);
  d[0] = code;
  d[1] = static_cast<uint8_t>(len - 2);
  switch (code) {
    case kCachingPage:
      if (wce) d[2] = 0x04;
      break;
    case kControlPage:
      if (changeable) break;
      d[3] = 0x10;  // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR 00b
      store_be16(d + 8, 0xffff);  // BUSY TIMEOUT PERIOD: unlimited
      break;
    case kInfoExceptionsPage:
      if (!changeable) d[2] = 0x08;  // DEXCPT: no informational exceptions reported
      break;
    default:
      break;
  }
}

}  // namespace

bool Lun::append_mode_page(uint8_t code, uint8_t pc, std::vector<uint8_t>& out) const {
  uint8_t len = page_length(code);
  if (!len) return false;
  uint8_t d[32];
  bool wce = pc == kPcDefault ? backend_.info().volatile_cache : pc == kPcChangeable ? true : shared_->wce();
  fill_page(code, pc == kPcChangeable, wce, d);
  out.insert(out.end(), d, d + len);
  return true;
}

void Lun::cmd_mode_sense(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  bool ten = cdb[0] == op::kModeSense10;
  bool dbd = cdb[1] & 0x08;
  bool llbaa = ten && (cdb[1] & 0x10);
  uint8_t pc = cdb[2] >> 6;
  uint8_t page = cdb[2] & 0x3f;
  uint8_t subpage = cdb[3];
  uint32_t alloc = ten ? load_be16(cdb + 7) : cdb[4];
  if (pc == kPcSaved) return finish_sense(t, illegal(Asc::saving_parameters_not_supported));
  if (page == kAllPages) {
    if (subpage != 0x00 && subpage != 0xff) return finish_sense(t, invalid_cdb_field(3));
  } else {
    if (!page_length(page)) return finish_sense(t, invalid_cdb_field(2, 5));
    if (subpage != 0) return finish_sense(t, invalid_cdb_field(3));
  }

  unsigned hdr = ten ? 8 : 4;
  unsigned bdlen = dbd ? 0 : llbaa ? 16 : 8;
  response_.assign(hdr + bdlen, 0);
  uint8_t* h = response_.data();
  uint8_t dsp = static_cast<uint8_t>((read_only_ ? 0x80 : 0) | 0x10);  // WP, DPOFUA
  if (ten) {
    h[3] = dsp;
    if (llbaa && !dbd) h[4] = 0x01;  // LONGLBA
    store_be16(h + 6, static_cast<uint16_t>(bdlen));
  } else {
    h[2] = dsp;
    h[3] = static_cast<uint8_t>(bdlen);
  }
  uint8_t* bd = h + hdr;
  if (bdlen == 8) {
    store_be32(bd, static_cast<uint32_t>(std::min<uint64_t>(blocks_, 0xffffffff)));
    store_be24(bd + 5, block_size_);
  } else if (bdlen == 16) {
    store_be64(bd, blocks_);
    store_be32(bd + 12, block_size_);
  }
  if (page == kAllPages) {
    for (uint8_t code : kPageOrder) append_mode_page(code, pc, response_);
  } else {
    append_mode_page(page, pc, response_);
  }
  if (ten) {
    store_be16(response_.data(), static_cast<uint16_t>(response_.size() - 2));
  } else {
    response_[0] = static_cast<uint8_t>(response_.size() - 1);
  }
  finish_data_in(t, response_.data(), response_.size(), alloc);
}

void Lun::cmd_mode_select(ScsiTask* t) {
  const uint8_t* cdb = t->cdb;
  bool ten = cdb[0] == op::kModeSelect10;
  uint32_t plen = ten ? load_be16(cdb + 7) : cdb[4];
  t->priv.want = plen;
  if (cdb[1] & 0x01) return finish_sense(t, invalid_cdb_field(1, 0));  // SP: nothing can be saved
  if (plen == 0) return finish(t, ok());
  if (t->priv.data_len < plen) return finish_sense(t, illegal(Asc::parameter_list_length_error));
  std::vector<uint8_t>& p = response_;
  p.resize(plen);
  copy_from_iov(t, 0, p.data(), plen);

  unsigned hdr = ten ? 8 : 4;
  if (plen < hdr) return finish_sense(t, illegal(Asc::parameter_list_length_error));
  unsigned bdlen = ten ? load_be16(&p[6]) : p[3];
  bool longlba = ten && (p[4] & 0x01);
  if (bdlen != 0 && bdlen != (longlba ? 16u : 8u)) return finish_sense(t, invalid_param_field(ten ? 6 : 3));
  if (hdr + bdlen > plen) return finish_sense(t, illegal(Asc::parameter_list_length_error));
  if (bdlen == 8 && load_be24(&p[hdr + 5]) != block_size_) return finish_sense(t, invalid_param_field(hdr + 5));
  if (bdlen == 16 && load_be32(&p[hdr + 12]) != block_size_) return finish_sense(t, invalid_param_field(hdr + 12));

  ModePages next = shared_->mode();
  for (unsigned off = hdr + bdlen; off < plen;) {
    if (plen - off < 2) return finish_sense(t, illegal(Asc::parameter_list_length_error));
    uint8_t code = p[off] & 0x3f;
    if (p[off] & 0x40) return finish_sense(t, invalid_param_field(static_cast<uint16_t>(off), 6));  // SPF
    uint8_t len = page_length(code);
    if (!len) return finish_sense(t, invalid_param_field(static_cast<uint16_t>(off), 5));
    if (p[off + 1] != len - 2) return finish_sense(t, invalid_param_field(static_cast<uint16_t>(off + 1)));
    if (off + len > plen) return finish_sense(t, illegal(Asc::parameter_list_length_error));
    uint8_t cur[32], mask[32];
    fill_page(code, false, next.wce, cur);
    fill_page(code, true, true, mask);
    for (unsigned i = 2; i < len; ++i)
      if ((p[off + i] ^ cur[i]) & ~mask[i]) return finish_sense(t, invalid_param_field(static_cast<uint16_t>(off + i)));
    if (code == kCachingPage) next.wce = p[off + 2] & 0x04;
    off += len;
  }
  shared_->set_mode(next, t->nexus);
  finish(t, ok());
}

}  // namespace vcp::scsi

#include "target/scsi/pr.hpp"

#include <algorithm>
#include <cstdio>

#include "target/scsi/cdb.hpp"

namespace vcp::scsi {
namespace {

constexpr uint8_t kPrInReadKeys = 0, kPrInReadReservation = 1, kPrInReportCapabilities = 2, kPrInReadFullStatus = 3;
constexpr uint8_t kPrOutRegister = 0, kPrOutReserve = 1, kPrOutRelease = 2, kPrOutClear = 3, kPrOutPreempt = 4,
                  kPrOutPreemptAbort = 5, kPrOutRegisterIgnore = 6;
constexpr uint32_t kPrOutParamLen = 24;

bool valid_type(uint8_t t) {
  switch (static_cast<PrType>(t)) {
    case PrType::write_exclusive:
    case PrType::exclusive_access:
    case PrType::write_exclusive_registrants_only:
    case PrType::exclusive_access_registrants_only:
    case PrType::write_exclusive_all_registrants:
    case PrType::exclusive_access_all_registrants:
      return true;
    default:
      return false;
  }
}

bool registrants_only(PrType t) {
  return t == PrType::write_exclusive_registrants_only || t == PrType::exclusive_access_registrants_only;
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  uint8_t b[4];
  store_be32(b, v);
  out.insert(out.end(), b, b + 4);
}
void append_be64(std::vector<uint8_t>& out, uint64_t v) {
  uint8_t b[8];
  store_be64(b, v);
  out.insert(out.end(), b, b + 8);
}

}  // namespace

void append_iscsi_transport_id(std::vector<uint8_t>& out, const std::string& name, uint64_t isid) {
  char suffix[24];
  std::snprintf(suffix, sizeof(suffix), ",i,0x%012llx", static_cast<unsigned long long>(isid & 0xffffffffffffull));
  std::string id = name + suffix;
  size_t len = id.size() + 1;  // NUL-terminated
  len = (len + 3) & ~size_t{3};
  size_t start = out.size();
  out.resize(start + 4 + len, 0);
  out[start] = 0x40 | 0x05;  // FORMAT CODE 01b (port with ISID), PROTOCOL IDENTIFIER iSCSI
  store_be16(&out[start + 2], static_cast<uint16_t>(len));
  std::copy(id.begin(), id.end(), out.begin() + static_cast<long>(start + 4));
}

const Registration* PersistentReservations::find(const ItNexus& n) const {
  for (const auto& r : regs_)
    if (r.is(n)) return &r;
  return nullptr;
}

Registration* PersistentReservations::find(const ItNexus& n) {
  for (auto& r : regs_)
    if (r.is(n)) return &r;
  return nullptr;
}

bool PersistentReservations::all_registrants() const {
  return type_ == PrType::write_exclusive_all_registrants || type_ == PrType::exclusive_access_all_registrants;
}

bool PersistentReservations::holder_is(const Registration& r) const {
  if (type_ == PrType::none) return false;
  if (all_registrants()) return true;
  return r.isid == holder_.isid && r.target_port == holder_.target_port && r.initiator_name == holder_.initiator_name;
}

bool PersistentReservations::is_holder(const ItNexus& n) const {
  const Registration* r = find(n);
  return r && holder_is(*r);
}

bool PersistentReservations::conflicts(const ItNexus& n, PrAccess access) const {
  if (type_ == PrType::none || access == PrAccess::allowed) return false;
  const Registration* r = find(n);
  if (r && holder_is(*r)) return false;
  switch (type_) {
    case PrType::write_exclusive:
      return access == PrAccess::write;
    case PrType::exclusive_access:
      return true;
    case PrType::write_exclusive_registrants_only:
    case PrType::write_exclusive_all_registrants:
      return access == PrAccess::write && !r;
    case PrType::exclusive_access_registrants_only:
    case PrType::exclusive_access_all_registrants:
      return !r;
    case PrType::none:
      break;
  }
  return false;
}

Outcome PersistentReservations::in(const uint8_t* cdb, std::vector<uint8_t>& out) const {
  out.clear();
  switch (cdb[1] & 0x1f) {
    case kPrInReadKeys:
      append_be32(out, generation_);
      append_be32(out, static_cast<uint32_t>(regs_.size() * 8));
      for (const auto& r : regs_) append_be64(out, r.key);
      return ok();
    case kPrInReadReservation:
      append_be32(out, generation_);
      append_be32(out, reserved() ? 16 : 0);
      if (reserved()) {
        uint64_t key = 0;
        if (!all_registrants())
          for (const auto& r : regs_)
            if (holder_is(r)) key = r.key;
        append_be64(out, key);
        append_be32(out, 0);  // obsolete scope-specific address
        out.push_back(0);
        out.push_back(static_cast<uint8_t>(type_));  // scope LU_SCOPE (0)
        out.push_back(0);
        out.push_back(0);
      }
      return ok();
    case kPrInReportCapabilities:
      out.assign(8, 0);
      out[1] = 8;
      out[3] = 0x80;  // TMV: the type mask is valid; ALLOW COMMANDS 000b
      out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;  // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
      out[5] = 0x01;                              // EX_AC_AR
      return ok();
    case kPrInReadFullStatus:
      read_full_status(out);
      return ok();
    default:
      return check(invalid_cdb_field(1, 4));
  }
}

void PersistentReservations::read_full_status(std::vector<uint8_t>& out) const {
  append_be32(out, generation_);
  append_be32(out, 0);  // additional length, patched below
  for (const auto& r : regs_) {
    size_t start = out.size();
    append_be64(out, r.key);
    out.resize(out.size() + 16, 0);
    uint8_t* d = &out[start];
    if (holder_is(r)) {
      d[12] = 0x01;  // R_HOLDER
      d[13] = static_cast<uint8_t>(type_);
    }
    store_be16(d + 18, r.target_port);
    size_t tid_start = out.size();
    append_iscsi_transport_id(out, r.initiator_name, r.isid);
    store_be32(&out[start + 20], static_cast<uint32_t>(out.size() - tid_start));
  }
  store_be32(&out[4], static_cast<uint32_t>(out.size() - 8));
}

Outcome PersistentReservations::out(const ItNexus& n, const uint8_t* cdb, const uint8_t* param, uint32_t param_len,
                                    PrEvents& ev) {
  uint8_t action = cdb[1] & 0x1f;
  if (action > kPrOutRegisterIgnore) return check(invalid_cdb_field(1, 4));
  if (load_be32(cdb + 5) != kPrOutParamLen || param_len < kPrOutParamLen)
    return check(illegal(Asc::parameter_list_length_error));
  uint64_t key = load_be64(param);
  uint64_t sa_key = load_be64(param + 8);
  uint8_t flags = param[20];
  if (flags & 0x08) return check(invalid_param_field(20, 3));  // SPEC_I_PT: SIP_C = 0
  if (flags & 0x04) return check(invalid_param_field(20, 2));  // ALL_TG_PT: ATP_C = 0
  if (flags & 0x01) return check(invalid_param_field(20, 0));  // APTPL: PTPL_C = 0
  uint8_t scope = cdb[2] >> 4;
  uint8_t type = cdb[2] & 0x0f;
  bool uses_type = action == kPrOutReserve || action == kPrOutRelease || action == kPrOutPreempt ||
                   action == kPrOutPreemptAbort;
  if (uses_type) {
    if (scope != 0) return check(invalid_cdb_field(2, 7));
    if (!valid_type(type)) return check(invalid_cdb_field(2, 3));
  }
  if (action == kPrOutRegister || action == kPrOutRegisterIgnore)
    return do_register(n, key, sa_key, action == kPrOutRegisterIgnore, ev);
  const Registration* r = find(n);
  if (!r || r->key != key) return conflict();
  switch (action) {
    case kPrOutReserve: return do_reserve(n, static_cast<PrType>(type));
    case kPrOutRelease: return do_release(n, static_cast<PrType>(type), ev);
    case kPrOutClear: return do_clear(n, ev);
    default: return do_preempt(n, sa_key, static_cast<PrType>(type), action == kPrOutPreemptAbort, ev);
  }
}

Outcome PersistentReservations::do_register(const ItNexus& n, uint64_t key, uint64_t sa_key, bool ignore_key,
                                            PrEvents& ev) {
  Registration* r = find(n);
  if (!r) {
    if (!ignore_key && key != 0) return conflict();
    if (sa_key == 0) return ok();
    if (regs_.size() >= kMaxRegistrations)
      return check(illegal(Asc::insufficient_registration_resources));
    regs_.push_back(Registration::of(n, sa_key));
    ++generation_;
    return ok();
  }
  if (!ignore_key && key != r->key) return conflict();
  if (sa_key != 0) {
    r->key = sa_key;
    ++generation_;
    return ok();
  }
  // Unregistering. A holder's reservation goes with it, except that an all-registrants
  // reservation lasts while anyone is registered.
  bool was_holder = holder_is(*r);
  regs_.erase(regs_.begin() + (r - regs_.data()));
  ++generation_;
  if (was_holder && (!all_registrants() || regs_.empty())) {
    bool notify = registrants_only(type_);
    type_ = PrType::none;
    if (notify)
      for (const auto& o : regs_) ev.pr_unit_attention(o, Asc::reservations_released);
  }
  return ok();
}

Outcome PersistentReservations::do_reserve(const ItNexus& n, PrType type) {
  if (type_ != PrType::none) {
    if (is_holder(n) && type == type_) return ok();
    return conflict();
  }
  type_ = type;
  holder_ = Registration::of(n);
  return ok();
}

Outcome PersistentReservations::do_release(const ItNexus& n, PrType type, PrEvents& ev) {
  if (type_ == PrType::none || !is_holder(n)) return ok();
  if (type != type_) return check(illegal(Asc::invalid_release_of_pr));
  bool notify = registrants_only(type_) || all_registrants();
  type_ = PrType::none;
  if (notify)
    for (const auto& o : regs_)
      if (!o.is(n)) ev.pr_unit_attention(o, Asc::reservations_released);
  return ok();
}

Outcome PersistentReservations::do_clear(const ItNexus& n, PrEvents& ev) {
  for (const auto& o : regs_)
    if (!o.is(n)) ev.pr_unit_attention(o, Asc::reservations_preempted);
  regs_.clear();
  type_ = PrType::none;
  ++generation_;
  return ok();
}

Outcome PersistentReservations::do_preempt(const ItNexus& n, uint64_t sa_key, PrType type, bool abort,
                                           PrEvents& ev) {
  // Removes every other registration the predicate selects; says how many went.
  auto remove_if = [&](auto pred) {
    size_t removed = 0;
    for (size_t i = 0; i < regs_.size();) {
      if (!regs_[i].is(n) && pred(regs_[i])) {
        Registration gone = regs_[i];
        regs_.erase(regs_.begin() + static_cast<long>(i));
        ev.pr_unit_attention(gone, Asc::registrations_preempted);
        if (abort) ev.pr_abort_tasks(gone);
        ++removed;
      } else {
        ++i;
      }
    }
    return removed;
  };
  auto take_reservation = [&] {
    PrType old = type_;
    type_ = type;
    holder_ = Registration::of(n);
    if (old != type)
      for (const auto& o : regs_)
        if (!o.is(n)) ev.pr_unit_attention(o, Asc::reservations_released);
  };

  if (type_ == PrType::none || (all_registrants() && sa_key != 0)) {
    if (sa_key == 0) return check(invalid_param_field(8));
    if (remove_if([&](const Registration& o) { return o.key == sa_key; }) == 0) return conflict();
    ++generation_;
    return ok();
  }
  if (all_registrants()) {  // SA key zero: everyone else goes, n holds the new reservation
    remove_if([](const Registration&) { return true; });
    take_reservation();
    ++generation_;
    return ok();
  }
  uint64_t holder_key = 0;
  for (const auto& o : regs_)
    if (holder_is(o)) holder_key = o.key;
  if (sa_key == holder_key) {
    remove_if([&](const Registration& o) { return o.key == sa_key; });
    take_reservation();
    ++generation_;
    return ok();
  }
  if (sa_key == 0) return check(invalid_param_field(8));
  if (remove_if([&](const Registration& o) { return o.key == sa_key; }) == 0) return conflict();
  ++generation_;
  return ok();
}

}  // namespace vcp::scsi

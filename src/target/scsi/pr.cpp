#include "target/scsi/pr.hpp"

#include <algorithm>
#include <charconv>
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
      out[2] = ptpl_capable_ ? 0x01 : 0x00;  // PTPL_C (CRH, SIP_C, ATP_C 0)
      out[3] = 0x80 | (ptpl_active_ ? 0x01 : 0x00);  // TMV: the type mask is valid; ALLOW COMMANDS 000b; PTPL_A
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
  const bool registering = action == kPrOutRegister || action == kPrOutRegisterIgnore;
  // APTPL counts in the register actions only (other actions ignore it).
  const bool aptpl = (flags & 0x01) != 0;
  if (registering && aptpl && !ptpl_capable_) return check(invalid_param_field(20, 0));
  uint8_t scope = cdb[2] >> 4;
  uint8_t type = cdb[2] & 0x0f;
  bool uses_type = action == kPrOutReserve || action == kPrOutRelease || action == kPrOutPreempt ||
                   action == kPrOutPreemptAbort;
  if (uses_type) {
    if (scope != 0) return check(invalid_cdb_field(2, 7));
    if (!valid_type(type)) return check(invalid_cdb_field(2, 3));
  }
  if (registering) {
    Outcome o = do_register(n, key, sa_key, action == kPrOutRegisterIgnore, ev);
    // The APTPL of the last register action that completed is what holds (SPC-4 6.16.3).
    if (o.good()) ptpl_active_ = aptpl;
    return o;
  }
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

// ---------------------------------------------------------------------------------------------
// The state as text (SharedLuState's PrStore keeps it in a file for APTPL):
//   generation N
//   registration KEY ISID PORT NAME      one per registration, in order
//   reservation TYPE ISID PORT NAME      when reserved (the holder; for the all-registrants
//                                        types the fields name no one: 0 0 -)
// KEY and ISID in hex, the rest in decimal; NAME (the initiator's iSCSI name, from the wire)
// with every byte outside '!'..'~' and '%' itself written %XX, so it is one word.

const char* to_string(PrType t) {
  switch (t) {
    case PrType::none: return "none";
    case PrType::write_exclusive: return "Write Exclusive";
    case PrType::exclusive_access: return "Exclusive Access";
    case PrType::write_exclusive_registrants_only: return "Write Exclusive - Registrants Only";
    case PrType::exclusive_access_registrants_only: return "Exclusive Access - Registrants Only";
    case PrType::write_exclusive_all_registrants: return "Write Exclusive - All Registrants";
    case PrType::exclusive_access_all_registrants: return "Exclusive Access - All Registrants";
  }
  return "?";
}

std::string escape_word(const std::string& name) {
  if (name == "-") return "%2D";  // "-" alone is the empty text
  std::string out;
  for (unsigned char c : name) {
    if (c > ' ' && c <= '~' && c != '%') {
      out += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof(b), "%%%02X", c);
      out += b;
    }
  }
  return out.empty() ? "-" : out;
}

std::optional<std::string> unescape_word(std::string_view w) {
  if (w == "-") return std::string();
  std::string out;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] != '%') {
      out += w[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= w.size()) return std::nullopt;
    auto [p, ec] = std::from_chars(w.data() + i + 1, w.data() + i + 3, v, 16);
    if (ec != std::errc() || p != w.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

namespace {

template <class T>
bool parse_number(std::string_view w, T* out, int base) {
  if (w.empty()) return false;
  auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), *out, base);
  return ec == std::errc() && p == w.data() + w.size();
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

// "ISID PORT NAME" into r; false if malformed.
bool parse_port(const std::vector<std::string_view>& w, size_t at, Registration* r) {
  uint16_t port = 0;
  if (!parse_number(w[at], &r->isid, 16) || r->isid > 0xffffffffffffull || !parse_number(w[at + 1], &port, 10))
    return false;
  auto name = unescape_word(w[at + 2]);
  if (!name) return false;
  r->target_port = port;
  r->initiator_name = std::move(*name);
  return true;
}

}  // namespace

std::string PersistentReservations::persisted_text() const {
  std::string out = "generation " + std::to_string(generation_) + "\n";
  char b[64];
  for (const auto& r : regs_) {
    std::snprintf(b, sizeof(b), "registration %016llx %012llx %u ", static_cast<unsigned long long>(r.key),
                  static_cast<unsigned long long>(r.isid), r.target_port);
    out += b + escape_word(r.initiator_name) + "\n";
  }
  if (type_ != PrType::none) {
    if (all_registrants()) {
      std::snprintf(b, sizeof(b), "reservation %u 0 0 -\n", static_cast<unsigned>(type_));
      out += b;
    } else {
      std::snprintf(b, sizeof(b), "reservation %u %012llx %u ", static_cast<unsigned>(type_),
                    static_cast<unsigned long long>(holder_.isid), holder_.target_port);
      out += b + escape_word(holder_.initiator_name) + "\n";
    }
  }
  return out;
}

bool PersistentReservations::restore_text(std::string_view text, std::string* error, unsigned first_line) {
  std::vector<Registration> regs;
  PrType type = PrType::none;
  Registration holder;
  std::optional<uint32_t> generation;
  unsigned line_no = first_line;
  auto bad = [&](const std::string& why) {
    *error = "line " + std::to_string(line_no) + ": " + why;
    return false;
  };
  for (size_t pos = 0; pos < text.size(); ++line_no) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) return bad("no newline at the end (a file cut short?)");
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const auto w = words(line);
    if (w.empty()) continue;
    if (w[0] == "generation") {
      uint32_t g = 0;
      if (w.size() != 2 || !parse_number(w[1], &g, 10)) return bad("expected 'generation N'");
      if (generation) return bad("a second generation");
      generation = g;
    } else if (w[0] == "registration") {
      Registration r;
      if (w.size() != 5 || !parse_number(w[1], &r.key, 16) || !parse_port(w, 2, &r))
        return bad("expected 'registration KEY ISID PORT NAME'");
      if (r.key == 0) return bad("a registration with key 0");
      if (r.initiator_name.empty()) return bad("a registration with no initiator name");
      if (std::any_of(regs.begin(), regs.end(), [&](const Registration& o) { return o.is(r.port()); }))
        return bad("a second registration of the same I_T nexus");
      if (regs.size() >= kMaxRegistrations) return bad("more than " + std::to_string(kMaxRegistrations) + " registrations");
      regs.push_back(std::move(r));
    } else if (w[0] == "reservation") {
      unsigned t = 0;
      Registration h;
      if (w.size() != 5 || !parse_number(w[1], &t, 10) || t > 0xff || !valid_type(static_cast<uint8_t>(t)) ||
          !parse_port(w, 2, &h))
        return bad("expected 'reservation TYPE ISID PORT NAME' with a valid type");
      if (type != PrType::none) return bad("a second reservation");
      type = static_cast<PrType>(t);
      holder = std::move(h);
    } else {
      return bad("unknown line '" + std::string(w[0]) + "'");
    }
  }
  if (!generation) {
    *error = "no 'generation' line";
    return false;
  }
  if (type != PrType::none) {
    const bool all = type == PrType::write_exclusive_all_registrants || type == PrType::exclusive_access_all_registrants;
    // A reservation is held by a registered nexus (all registrants: while anyone is registered).
    const bool held = all ? !regs.empty() : std::any_of(regs.begin(), regs.end(), [&](const Registration& o) {
      return o.is(holder.port());
    });
    if (!held) {
      *error = "the reservation's holder is not registered";
      return false;
    }
    if (all) holder = Registration{};
  }
  regs_ = std::move(regs);
  type_ = type;
  holder_ = std::move(holder);
  generation_ = *generation;
  ptpl_active_ = true;  // what was kept is what APTPL asked to keep
  return true;
}

}  // namespace vcp::scsi

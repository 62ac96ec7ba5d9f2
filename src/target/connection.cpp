#include "target/connection.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "base/log.hpp"
#include "iscsi/crc32c.hpp"
#include "iscsi/names.hpp"
#include "iscsi/text.hpp"

namespace vcp::target {

using namespace vcp::iscsi;

namespace {

constexpr size_t kRxSpace = 64 * 1024;  // free room offered to each receive
// Until login ends, less: a connection nobody has logged in on yet costs this much memory (a
// flood of idle or half-sent logins costs 4 KiB each, not 64), and a login PDU (at most 8 KiB of
// data) comes in a few receives, which login can afford.
constexpr size_t kLoginRxSpace = 4 * 1024;
// A Data-In data segment no longer than this is copied into the output buffer: for 4 KiB reads
// the copy (of a buffer the backend just wrote, still in cache) measured cheaper than a second
// iovec and the pin (4 KiB random reads, 3-4% less target CPU per I/O).
constexpr uint32_t kTxCopyMax = 8192;

// What a connection with nothing started may always start, the thread's room full or not
// (TargetConnection::small_alone()).
constexpr uint64_t kSmallCommand = 256u << 10;

// Task buffers are page aligned (see reserve_buffer()).
constexpr size_t kTaskBufferAlign = 4096;
struct PageAlignedDelete {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{kTaskBufferAlign}); }
};

scsi::TaskAttr to_scsi(TaskAttr a) {
  switch (a) {
    case TaskAttr::Ordered: return scsi::TaskAttr::ordered;
    case TaskAttr::HeadOfQueue: return scsi::TaskAttr::head_of_queue;
    case TaskAttr::Aca: return scsi::TaskAttr::aca;
    default: return scsi::TaskAttr::simple;
  }
}

uint64_t isid_value(const Isid& i) {
  uint64_t v = 0;
  for (uint8_t b : i) v = v << 8 | b;
  return v;
}

// Text from a peer (names it gave) made fit for a log line: no control characters, no more
// than 256 bytes.
std::string printable(std::string_view text) {
  std::string out(text.substr(0, 256));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  if (text.size() > 256) out += "...";
  return out;
}

// Opcodes that carry a CmdSN the window counts.
bool carries_cmd_sn(uint8_t op) {
  switch (static_cast<Opcode>(op)) {
    case Opcode::NopOut:
    case Opcode::ScsiCommand:
    case Opcode::TaskMgmtRequest:
    case Opcode::TextRequest:
    case Opcode::LogoutRequest: return true;
    default: return false;
  }
}

}  // namespace

struct TargetConnection::Task {
  scsi::ScsiTask st;
  TargetConnection* conn = nullptr;
  bool in_lun = false;  // handed to a Lun (else still collecting Data-Out)
  uint32_t itt = 0;
  uint32_t cmd_sn = 0;
  uint32_t edtl = 0;
  Lun lun_field;
  uint64_t lun = 0;
  scsi::Lun* lu = nullptr;
  bool read = false;
  bool write = false;
  bool counted = false;  // holds a place in the CmdSN window
  // Not in tasks_ (done, dropped, or reserved for a command still being received); it goes
  // back to free_ when no queued output or direct receive pins its buffer any more.
  bool released = true;
  uint32_t pins = 0;
  std::unique_ptr<uint8_t[], PageAlignedDelete> buf;
  uint32_t cap = 0;
  iovec iov{};
  // Write data still to come.
  bool unsol_open = false;  // unsolicited Data-Out may still arrive
  uint32_t unsol_next = 0;  // the offset the next unsolicited Data-Out must have
  uint32_t unsol_limit = 0;
  uint32_t unsol_data_sn = 0;
  uint32_t r2t_next = 0;  // first byte not yet solicited
  uint32_t r2t_sn = 0;
  struct R2t {
    uint32_t ttt, offset, length, next, data_sn;
  };
  std::vector<R2t> r2ts;  // outstanding
  // Buffer room (TargetSettings::connection_buffer_bytes).
  bool started = false;  // its buffer is counted in started_bytes_ (charge) until it is free
  bool waiting = false;  // in waiting_
  bool small = false;    // started as a small command alone (small_alone()): outside the thread's room
  uint32_t charge = 0;
};

// A task management response held back until every task the function aborted has ended
// (SAM-5 7.1): one wait per Lun the aborted tasks were in.
struct TargetConnection::PendingTmf {
  TargetConnection* conn = nullptr;
  TaskMgmtResponsePdu r;
  bool cold_reset = false;
  size_t left = 0;
  std::vector<std::pair<scsi::Lun*, scsi::QuiesceWait>> waits;  // never resized once waiting
};

TargetConnection::TargetConnection(ThreadContext& ctx, uint64_t now_ms)
    : ctx_(ctx), settings_(ctx.current_settings()), started_ms_(now_ms), last_rx_ms_(now_ms) {
  const TargetSettings& s = *settings_;
  if (ctx_.access) access_gen_ = ctx_.access->generation();
  access_ = ctx_.current_access();
  tsih_ = ctx_.sessions->reserve_tsih();
  TargetLoginConfig cfg;
  cfg.limits = s.limits;
  cfg.portal_group_tag = s.portal_group_tag;
  cfg.tsih = tsih_ ? tsih_ : 1;
  cfg.first_stat_sn = 1;
  cfg.cmd_window = s.cmd_window;
  cfg.lookup = [this](std::string_view name, std::string_view initiator) {
    TargetLookup t;
    for (size_t i = 0; i < ctx_.served.size(); ++i) {
      if (!same_iscsi_name(name, ctx_.served[i].iqn)) continue;  // without regard to case (RFC 3722)
      if (i >= access_->targets.size()) break;  // not in the access settings: as if absent
      const TargetAccess& a = access_->targets[i];
      if (a.removed) continue;  // as if absent (one of the same name may have been added since)
      if (!a.acl.allows(initiator, peer_)) {
        t.kind = TargetLookup::Kind::NotAuthorized;
        return t;
      }
      t.kind = TargetLookup::Kind::Found;
      t.alias = ctx_.served[i].alias;
      if (a.chap) {
        t.auth.require_chap = true;
        t.auth.incoming = a.chap;
        t.auth.outgoing = a.mutual_chap;
        t.auth.algorithms = access_->chap_algorithms;
      }
      target_ = &ctx_.served[i];
      target_index_ = i;
      return t;
    }
    return t;
  };
  if (access_->discovery_chap)
    cfg.discovery_auth =
        TargetAuth{true, access_->discovery_chap, access_->discovery_mutual_chap, access_->chap_algorithms};
  login_ = std::make_unique<TargetLogin>(std::move(cfg));
  rx_.resize(kLoginRxSpace);
  ctx_.buffers.members.push_back(this);
}

TargetConnection::~TargetConnection() {
  shutdown();
  // Gone, and every task of it ended (the thread frees a connection only then): a login
  // reinstating the session may go on.
  if (session_) ctx_.sessions->end(session_.get());
  if (tsih_) ctx_.sessions->release_tsih(tsih_);
  ThreadBufferRoom& room = ctx_.buffers;
  leave_thread_queue();
  room.members.erase(std::find(room.members.begin(), room.members.end(), this));
  for (const auto& t : owned_)
    if (t->started) (t->small ? room.small : room.started) -= t->charge;
  room.kept -= kept_bytes_;
}

std::string TargetConnection::describe(uint64_t now_ms) const {
  const std::string from = to_string(peer_);
  if (phase_ == Phase::Login) {
    const std::string who = login_ ? printable(login_->params().initiator_name) : std::string();
    return fmt::format("logging in{} from {} for {} ms", who.empty() ? "" : " as " + who, from, now_ms - started_ms_);
  }
  if (discovery())
    return fmt::format("discovery session of {} from {}{}", printable(params_.initiator_name), from,
                       closing_ ? ", closing" : "");
  if (!held_login_response_.empty())
    return fmt::format("logging in as {} from {} (TSIH {}), waiting {} ms for the session it reinstates to end",
                       printable(params_.initiator_name), from, tsih_, now_ms - held_since_ms_);
  return fmt::format("session of {} from {} to {} (TSIH {}, up {} s){}: {} commands, {} tasks ({} waiting for "
                     "buffers{}), {} KiB of buffers, {} KiB unsent{}",
                     printable(params_.initiator_name), from, target_ ? target_->iqn : std::string("?"), tsih_,
                     (now_ms - started_ms_) / 1000, closing_ ? ", closing" : "", stats_.commands, tasks_.size(),
                     waiting_.size(), in_thread_queue_ ? ", in the thread's queue" : "",
                     (started_bytes_ + kept_bytes_) >> 10, unsent_ >> 10,
                     sendfile_ ? fmt::format(", {} Data-In segments by sendfile", stats_.file_data_in) : "");
}

void TargetConnection::refuse_login(std::string why) { login_->refuse(LoginStatus::OutOfResources, std::move(why)); }

// ---------------------------------------------------------------------------------------------
// Byte stream in

size_t TargetConnection::rx_iov(std::span<iovec, kRxIov> out) {
  size_t n = 0;
  size_t room = phase_ == Phase::Login ? kLoginRxSpace : kRxSpace;
  if (direct_.task) {
    if (direct_.got < direct_.len) out[n++] = {direct_.dst + direct_.got, size_t{direct_.len - direct_.got}};
    // Then only this PDU's pad and digest and the next header: while large data PDUs stream,
    // each receive ends at a header and the next one goes straight to the task buffer.
    room = direct_.tail + kBhsSize + (digests_.header ? kDigestSize : 0);
  }
  if (rx_.size() - rx_end_ < room && rx_start_ > 0) {
    std::memmove(rx_.data(), rx_.data() + rx_start_, rx_end_ - rx_start_);
    rx_end_ -= rx_start_;
    rx_start_ = 0;
  }
  // In login, whatever room is left will do (it grows only when full); in Full Feature Phase
  // each receive is offered the whole room (fewer, larger receives).
  const size_t free = rx_.size() - rx_end_;
  if (phase_ == Phase::Login && free > 0 && !direct_.task) room = std::min(room, free);
  if (free < room) rx_.resize(rx_end_ + room);
  out[n++] = {rx_.data() + rx_end_, room};
  return n;
}

void TargetConnection::rx_commit(size_t n, uint64_t now_ms) {
  // After close (or the session told it is dropped) nothing more is read; a receive still in
  // flight may end here (its bytes, even those that went into a task buffer, are dropped).
  if (closing_ || drop_at_ms_) return;
  if (n) last_rx_ms_ = now_ms;
  if (direct_.task) {
    const size_t k = std::min<size_t>(n, direct_.len - direct_.got);
    direct_.got += static_cast<uint32_t>(k);
    n -= k;
  }
  rx_end_ += n;
  process_input();
  after_release();
}

void TargetConnection::receive(std::span<const uint8_t> bytes, uint64_t now_ms) {
  while (!bytes.empty() && !closing_) {
    iovec iov[kRxIov];
    const size_t cnt = rx_iov(iov);
    size_t total = 0;
    for (size_t i = 0; i < cnt && !bytes.empty(); ++i) {
      const size_t k = std::min(iov[i].iov_len, bytes.size());
      std::memcpy(iov[i].iov_base, bytes.data(), k);
      bytes = bytes.subspan(k);
      total += k;
      if (k < iov[i].iov_len) break;
    }
    rx_commit(total, now_ms);
  }
}

void TargetConnection::process_input() {
  while (!closing_) {
    if (direct_.task) {
      if (direct_.got < direct_.len || rx_end_ - rx_start_ < direct_.tail) break;
      finish_direct();
      continue;
    }
    size_t avail = rx_end_ - rx_start_;
    if (avail < kBhsSize) break;
    const uint8_t* p = rx_.data() + rx_start_;
    Bhs bhs;
    std::memcpy(bhs.bytes.data(), p, kBhsSize);
    const bool login = phase_ == Phase::Login;
    const uint32_t limit = login ? kLoginSegmentLength : params_.max_recv_data_segment_length;
    if (bhs.data_segment_length() > limit) {
      // Skipping the segment would mean trusting a length we refuse; ERL 0 ends here.
      if (!login) reject(RejectReason::ProtocolError, {p, kBhsSize});
      close("data segment of " + std::to_string(bhs.data_segment_length()) + " bytes, limit " +
            std::to_string(limit));
      break;
    }
    const uint64_t len = pdu_length(bhs, login ? Digests{} : digests_);
    if (avail < len) {
      if (!login && try_direct({p, avail})) continue;
      break;  // rx_iov() grows the buffer for the rest
    }
    handle_pdu({p, static_cast<size_t>(len)});
    rx_start_ += len;
  }
  if (rx_start_ == rx_end_) rx_start_ = rx_end_ = 0;
}

// The header of a Data-Out or a SCSI Command with a large data segment is in `staged`, its data
// only partly: if the complete PDU would pass every check (header digest, fields, AHS, the
// command's admission or the Data-Out's task, offset, length, DataSN and TTT), the rest of the
// segment goes straight to where its handling would have copied it. Anything else stays on the
// staging path, which then refuses the PDU exactly as it always has.
bool TargetConnection::try_direct(std::span<const uint8_t> staged) {
  Bhs bhs;
  std::memcpy(bhs.bytes.data(), staged.data(), kBhsSize);
  const uint32_t dsl = bhs.data_segment_length();
  const auto op = static_cast<Opcode>(bhs.opcode_byte());
  // Small segments are copied: each direct one costs a receive of its own (and one ending at
  // the next header), which is dearer than copying a few KiB (TargetSettings::direct_rx_min).
  if (dsl < settings_->direct_rx_min || dsl == 0 || (op != Opcode::DataOut && op != Opcode::ScsiCommand)) return false;
  const size_t ahs_len = size_t{bhs.total_ahs_length()} * 4;
  const size_t hdr_len = kBhsSize + ahs_len + (digests_.header ? kDigestSize : 0);
  if (staged.size() < hdr_len) return false;
  const size_t have = staged.size() - hdr_len;
  if (have >= dsl) return false;  // only the pad or digest missing: not worth it
  if (digests_.header &&
      crc32c(staged.first(kBhsSize + ahs_len)) != load_digest(staged.subspan(kBhsSize + ahs_len).first<kDigestSize>()))
    return false;
  Pdu h;
  if (decode_bhs(staged, h, {Direction::FromInitiator, params_.max_recv_data_segment_length}) != PduError::Ok)
    return false;
  const auto ahs = staged.subspan(kBhsSize, ahs_len);

  Task* t = nullptr;
  uint8_t* dst = nullptr;
  if (const auto* d = std::get_if<DataOutPdu>(&h)) {
    t = find_task(d->itt);
    size_t r2t;
    if (!t || t->in_lun || check_data_out(t, *d, &r2t)) return false;
    dst = t->buf.get() + d->buffer_offset;  // offset + dsl <= EDTL <= capacity: checked above
  } else {
    const auto& c = std::get<ScsiCommandPdu>(h);
    if (discovery() || !admissible_now(c.cmd_sn, c.immediate) || find_task(c.itt) || !command_ok(c, ahs))
      return false;
    t = new_task();  // reserved: it joins tasks_ when the command is handled
    reserve_buffer(t, c.expected_data_transfer_length);
    dst = t->buf.get();  // immediate data <= EDTL: checked by command_ok()
  }
  ++t->pins;
  ++stats_.direct_rx_pdus;
  direct_.task = t;
  std::memcpy(direct_.header, staged.data(), hdr_len);
  direct_.header_len = static_cast<uint32_t>(hdr_len);
  direct_.ahs_len = static_cast<uint32_t>(ahs_len);
  direct_.decoded = std::move(h);
  direct_.dst = dst;
  direct_.len = dsl;
  direct_.got = static_cast<uint32_t>(have);
  direct_.tail = pad_length(dsl) + (digests_.data ? kDigestSize : 0);
  std::memcpy(dst, staged.data() + hdr_len, have);  // what the last receive already brought
  rx_start_ += hdr_len + have;
  return true;
}

// The data segment is in the task's buffer and its pad and digest in the staging buffer.
bool TargetConnection::finish_direct() {
  const DirectRx d = direct_;
  direct_.task = nullptr;
  const uint8_t* tail = rx_.data() + rx_start_;
  const uint32_t pad = pad_length(d.len);
  rx_start_ += d.tail;
  std::span<const uint8_t> hdr{d.header, d.header_len};
  bool ok = true;
  if (digests_.data) {
    Crc32c crc;
    crc.update({d.dst, d.len});
    crc.update({tail, pad});
    if (crc.value() != load_digest(std::span<const uint8_t>(tail + pad, kDigestSize).first<kDigestSize>())) {
      handle_decode_error(hdr, PduError::DataDigestMismatch);
      ok = false;
    }
  }
  if (ok) {
    PduParts parts;
    parts.header = d.decoded;
    parts.ahs = hdr.subspan(kBhsSize, d.ahs_len);
    parts.data = {d.dst, d.len};
    if (std::holds_alternative<ScsiCommandPdu>(parts.header)) staged_command_ = d.task;
    ok = dispatch(parts, hdr);
    staged_command_ = nullptr;  // if not taken, the unpin below frees the task
  }
  unpin(d.task);
  return ok;
}

// The connection ends: a receive may still be in flight into the task's buffer, so the task is
// only unpinned; nothing reuses it, as no input is read any more.
void TargetConnection::end_direct() {
  if (!direct_.task) return;
  Task* t = direct_.task;
  direct_.task = nullptr;
  unpin(t);
}

bool TargetConnection::handle_pdu(std::span<const uint8_t> pdu) {
  const bool login = phase_ == Phase::Login;
  PduParts parts;
  DecodeOptions opts{Direction::FromInitiator,
                     login ? kLoginSegmentLength : params_.max_recv_data_segment_length};
  PduError err = decode_pdu(pdu, login ? Digests{} : digests_, parts, opts);
  if (err != PduError::Ok) {
    handle_decode_error(pdu, err);
    return false;
  }
  return dispatch(parts, pdu);
}

// A decoded PDU; `pdu` holds at least its header (what a Reject quotes).
bool TargetConnection::dispatch(const PduParts& parts, std::span<const uint8_t> pdu) {
  if (!held_login_response_.empty()) {
    close(std::string("a ") + std::string(to_string(opcode_of(parts.header))) + " PDU before the answer to its login");
    return true;
  }
  const bool login = phase_ == Phase::Login;
  if (login) {
    if (const auto* rq = std::get_if<LoginRequestPdu>(&parts.header)) {
      (void)rq;
      handle_login(parts);
    } else {
      close(std::string("a ") + std::string(to_string(opcode_of(parts.header))) + " PDU during login");
    }
    return true;
  }

  const Pdu& h = parts.header;
  if (const auto* d = std::get_if<DataOutPdu>(&h)) {
    on_data_out(*d, parts.data, pdu);
    return true;
  }
  if (const auto* s = std::get_if<SnackPdu>(&h)) {
    (void)s;
    reject(RejectReason::SnackReject, pdu);  // ERL 0: nothing to retransmit from
    return true;
  }
  if (std::holds_alternative<LoginRequestPdu>(h)) {
    reject(RejectReason::ProtocolError, pdu);
    return true;
  }

  // The rest carry a CmdSN.
  uint32_t cmd_sn = 0;
  bool immediate = false;
  std::visit(
      [&](const auto& x) {
        if constexpr (requires { x.cmd_sn; x.immediate; }) {
          cmd_sn = x.cmd_sn;
          immediate = x.immediate;
        }
      },
      h);
  if (const auto* n = std::get_if<NopOutPdu>(&h); n && n->itt == kReservedTag) {
    // A ping answer or a one-way ping: immediate by rule, no CmdSN check, no reply.
    if (nop_outstanding_ && n->ttt == nop_ttt_) nop_outstanding_ = false;
    return true;
  }
  if (!admit(cmd_sn, immediate, pdu)) return false;

  if (discovery() && !std::holds_alternative<TextRequestPdu>(h) &&
      !std::holds_alternative<LogoutRequestPdu>(h) && !std::holds_alternative<NopOutPdu>(h)) {
    reject(RejectReason::ProtocolError, pdu);  // a discovery session only does Text and Logout
  } else if (const auto* c = std::get_if<ScsiCommandPdu>(&h)) {
    on_scsi_command(*c, parts, pdu);
  } else if (const auto* n = std::get_if<NopOutPdu>(&h)) {
    on_nop_out(*n, parts.data);
  } else if (const auto* t = std::get_if<TaskMgmtRequestPdu>(&h)) {
    on_task_mgmt(*t);
  } else if (const auto* x = std::get_if<TextRequestPdu>(&h)) {
    on_text(*x, parts.data, pdu);
  } else if (const auto* l = std::get_if<LogoutRequestPdu>(&h)) {
    on_logout(*l);
  }
  if (!replaying_) replay_held();
  return true;
}

void TargetConnection::handle_decode_error(std::span<const uint8_t> pdu, PduError err) {
  ++stats_.rejects;
  if (phase_ == Phase::Login) {
    close("malformed login PDU: " + std::string(to_string(err)));
    return;
  }
  if (err == PduError::HeaderDigestMismatch) {
    // The header (and its lengths) cannot be trusted: no way to find the next PDU (ERL 0).
    close("header digest error");
    return;
  }
  // A command that fails to decode still used its CmdSN, or the window would stall.
  const uint8_t op = pdu[0] & 0x3f;
  const bool imm = (pdu[0] & 0x40) != 0;
  if (err != PduError::DataDigestMismatch && carries_cmd_sn(op) && !imm && pdu.size() >= kBhsSize &&
      wire::load_be32(&pdu[24]) == window_.exp_cmd_sn())
    window_.accept(window_.exp_cmd_sn());
  if (auto why = reject_reason_for(err)) reject(*why, pdu);
  if (err == PduError::DataDigestMismatch) close("data digest error");
}

bool TargetConnection::admissible_now(uint32_t cmd_sn, bool immediate) const {
  return immediate || (cmd_sn == window_.exp_cmd_sn() && serial_le(cmd_sn, max_cmd_sn()));
}

bool TargetConnection::admit(uint32_t cmd_sn, bool immediate, std::span<const uint8_t> pdu) {
  if (immediate) return true;
  if (admissible_now(cmd_sn, immediate)) {
    window_.accept(cmd_sn);
    return true;
  }
  if (window_.in_window(cmd_sn) && serial_le(cmd_sn, max_cmd_sn()) && !replaying_ &&
      held_.size() < settings_->cmd_window && !held_.contains(cmd_sn)) {
    held_.emplace(cmd_sn, std::vector<uint8_t>(pdu.begin(), pdu.end()));
    return false;
  }
  ++stats_.dropped_commands;  // outside the window or a duplicate: ignored (§4.2.2.1)
  VCP_LOG_DEBUG("target: dropped command CmdSN {} (window {}..{})", cmd_sn, window_.exp_cmd_sn(), max_cmd_sn());
  return false;
}

void TargetConnection::replay_held() {
  replaying_ = true;
  while (!closing_ && !held_.empty()) {
    auto it = held_.find(window_.exp_cmd_sn());
    if (it == held_.end()) break;
    std::vector<uint8_t> bytes = std::move(it->second);
    held_.erase(it);
    handle_pdu(bytes);
  }
  replaying_ = false;
}

// ---------------------------------------------------------------------------------------------
// Login

void TargetConnection::handle_login(const PduParts& p) {
  const auto& rq = std::get<LoginRequestPdu>(p.header);
  LoginResponseOut out;
  LoginState st = login_->on_request(rq, p.data, out);
  auto wire = to_wire(out);
  if (st == LoginState::FullFeature && tsih_ != 0) {
    enter_full_feature();
    if (!replaced_ended()) {
      // Reinstatement: the old session's commands (writes at the backend, aborted or not) end
      // before the initiator, told it is in, sends new ones that could overtake them. tick()
      // sends the answer once they have.
      VCP_LOG_INFO("target: login of {} from {} (TSIH {}) waits for the session it reinstates to end",
                   printable(params_.initiator_name), to_string(peer_), tsih_);
      held_login_response_ = std::move(wire);
      held_since_ms_ = last_rx_ms_;
      return;
    }
    replaced_.clear();
  }
  queue_wire(wire);
  if (st == LoginState::Failed) {
    log_refusal(login_->failure());
    close("login failed: " + login_->failure());
  } else if (st == LoginState::FullFeature && tsih_ == 0) {
    close("no TSIH left");
  }
}

// A reinstating login's answer, held by handle_login(), goes out once the sessions it replaces
// have ended; a session that does not end within the login timeout (a backend that does not
// complete) fails the login: the initiator tries again.
void TargetConnection::release_held_login(uint64_t now_ms) {
  if (replaced_ended()) {
    replaced_.clear();
    queue_wire(held_login_response_);
    held_login_response_.clear();
    VCP_LOG_DEBUG("target: the session TSIH {} reinstates has ended after {} ms", tsih_, now_ms - held_since_ms_);
  } else if (now_ms - held_since_ms_ > settings_->login_timeout_ms) {
    close("the session it reinstates did not end within " + std::to_string(settings_->login_timeout_ms / 1000) + " s");
  }
}

void TargetConnection::enter_full_feature() {
  params_ = login_->params();
  digests_ = params_.digests();
  isid_ = login_->isid();
  cid_ = login_->cid();
  stat_sn_.reset(login_->next_stat_sn());
  window_.reset(login_->exp_cmd_sn(), settings_->cmd_window);
  phase_ = Phase::FullFeature;
  if (params_.session_type == SessionType::Normal) {
    nexus_.id = ctx_.sessions->next_nexus_id();
    nexus_.initiator_name = params_.initiator_name;
    nexus_.isid = isid_value(isid_);
    nexus_.target_port = settings_->portal_group_tag;
    session_ = ctx_.sessions->add(params_.initiator_name, isid_, params_.target_name, tsih_, nexus_.id,
                                  ctx_.wake, &replaced_);
    const bool reinstated = !replaced_.empty();
    VCP_LOG_INFO("target: session of {} from {} (TSIH {}){}: authentication {}, header digest {}, data digest {}, "
                 "MaxRecvDataSegmentLength {} / {}, MaxBurstLength {}, FirstBurstLength {}, ImmediateData {}, "
                 "InitialR2T {}",
                 printable(params_.initiator_name), to_string(peer_), tsih_, reinstated ? ", reinstated" : "",
                 login_->authentication(),
                 params_.header_digest ? "CRC32C" : "none", params_.data_digest ? "CRC32C" : "none",
                 params_.max_recv_data_segment_length, params_.max_send_data_segment_length,
                 params_.max_burst_length, params_.first_burst_length, params_.immediate_data ? "Yes" : "No",
                 params_.initial_r2t ? "Yes" : "No");
  } else {
    VCP_LOG_INFO("target: discovery session of {} from {}: authentication {}", printable(params_.initiator_name),
                 to_string(peer_), login_->authentication());
  }
  login_.reset();
}

// access_ was replaced by newer settings (tick()).
void TargetConnection::recheck_access(uint64_t now_ms) {
  if (closing_ || drop_at_ms_ || phase_ != Phase::FullFeature || discovery() || !target_) return;
  if (target_index_ >= access_->targets.size() ||
      access_->targets[target_index_].admits(params_.initiator_name, peer_))
    return;
  VCP_LOG_WARN("target: session of {} from {} to {} (TSIH {}) ended: {}", printable(params_.initiator_name),
               to_string(peer_), target_->iqn, tsih_,
               access_->targets[target_index_].removed ? "the target was removed by a reload"
                                                       : "the access list reloaded does not allow it");
  // RFC 7143, 11.9.1, event 3: the target drops all the connections of this session. The
  // initiator may log in again after Time2Wait (it will be refused); nothing to retain.
  AsyncMessagePdu m;
  m.lun = Lun{};
  m.event = AsyncEvent::SessionDropped;
  m.parameter2 = 2;  // Time2Wait, seconds
  m.parameter3 = 0;  // Time2Retain
  m.stat_sn = stat_sn_.take();
  m.exp_cmd_sn = window_.exp_cmd_sn();
  m.max_cmd_sn = max_cmd_sn();
  send(m);
  // Closed a little later rather than at once: closing on a peer that is still sending makes
  // the kernel reset the connection, and the initiator may then never read the message.
  drop_at_ms_ = std::max<uint64_t>(now_ms, 1) + kDropGraceMs;
}

// A login answered with a refusal (authentication, access list, unknown target, bad keys): a
// line for whoever runs the target, thinned out (log::thin) with the count so far.
void TargetConnection::log_refusal(const std::string& why) {
  const uint64_t n = ++ctx_.refused_logins;
  if (!log::thin(n)) return;
  const std::string who = printable(login_->params().initiator_name);
  VCP_LOG_WARN("target: login {}from {} refused: {} ({} refused on this thread so far)",
               who.empty() ? std::string() : "of " + who + " ", to_string(peer_), printable(why), n);
}

// ---------------------------------------------------------------------------------------------
// SCSI commands and their data

// A task off the free list (or a new one), not yet in tasks_.
TargetConnection::Task* TargetConnection::new_task() {
  if (!free_.empty()) {
    Task* t = free_.back();
    free_.pop_back();
    sub_kept(t->cap);
    return t;
  }
  owned_.push_back(std::make_unique<Task>());
  return owned_.back().get();
}

// Task buffers are page aligned: a file LUN opened with O_DIRECT reads and writes straight
// from them, and the kernel refuses (EINVAL) buffers not aligned to the logical block size.
void TargetConnection::reserve_buffer(Task* t, uint32_t n) {
  if (t->cap < n) {
    const size_t bytes = (static_cast<size_t>(n) + kTaskBufferAlign - 1) & ~(kTaskBufferAlign - 1);
    t->buf.reset(static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t{kTaskBufferAlign})));
    t->cap = n;
  }
}

TargetConnection::Task* TargetConnection::alloc_task(Task* reserved) {
  Task* t = reserved ? reserved : new_task();
  t->conn = this;
  t->released = false;
  t->in_lun = false;
  t->counted = false;
  t->r2ts.clear();
  t->unsol_open = false;
  t->unsol_next = t->unsol_limit = t->unsol_data_sn = 0;
  t->r2t_next = t->r2t_sn = 0;
  t->started = t->waiting = t->small = false;
  t->st.aborted = false;
  tasks_.push_back(t);
  return t;
}

void TargetConnection::free_task(Task* t) {
  auto it = std::find(tasks_.begin(), tasks_.end(), t);
  if (it != tasks_.end()) {
    *it = tasks_.back();
    tasks_.pop_back();
  }
  if (t->counted) --window_active_;
  t->counted = false;
  if (t->waiting) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), t));
    t->waiting = false;
    if (waiting_.empty()) leave_thread_queue();
  }
  release_task(t);
}

void TargetConnection::release_task(Task* t) {
  t->released = true;
  if (t->pins == 0) to_free_list(t);
}

void TargetConnection::unpin(Task* t) {
  if (--t->pins == 0 && t->released) to_free_list(t);
}

// Its buffer stops counting as started; it is kept for the next task if both rooms allow.
void TargetConnection::to_free_list(Task* t) {
  sub_started(t->charge, t->small);
  t->charge = 0;
  t->started = false;
  t->small = false;
  if (started_bytes_ + kept_bytes_ + t->cap > settings_->connection_buffer_bytes ||
      ctx_.buffers.used() + t->cap > ctx_.buffers.budget)
    drop_buffer(t);
  add_kept(t->cap);
  free_.push_back(t);
}

// Every change to the buffers counted is made on the thread's room too.
void TargetConnection::add_started(uint64_t n, bool small) {
  started_bytes_ += n;
  (small ? ctx_.buffers.small : ctx_.buffers.started) += n;
}
void TargetConnection::sub_started(uint64_t n, bool small) {
  started_bytes_ -= n;
  (small ? ctx_.buffers.small : ctx_.buffers.started) -= n;
}
void TargetConnection::add_kept(uint64_t n) {
  kept_bytes_ += n;
  ctx_.buffers.kept += n;
}
void TargetConnection::sub_kept(uint64_t n) {
  kept_bytes_ -= n;
  ctx_.buffers.kept -= n;
}
void TargetConnection::drop_kept(Task* t) {
  sub_kept(t->cap);
  drop_buffer(t);
}
void TargetConnection::drop_all_kept() {
  for (Task* t : free_) drop_kept(t);
}

void TargetConnection::drop_buffer(Task* t) {
  t->buf.reset();
  t->cap = 0;
}

// A task that needs its whole buffer now (a READ or other command about to execute, a WRITE
// about to ask for its data) starts if it fits in the connection's buffer room and nothing
// waits ahead of it; else it waits its turn, holding no buffer if it has no data yet. Its
// CmdSN stays counted meanwhile, so the window closes on an initiator that keeps sending.
void TargetConnection::start(Task* t) {
  if (waiting_.empty() && may_start(t)) {
    go(t);
    return;
  }
  if (!t->write) drop_buffer(t);  // one off the free list: not counted while it waits
  t->waiting = true;
  ++stats_.buffer_waits;
  waiting_.push_back(t);
}

// Whether t may start now: its turn has come on the thread (no other connection waits for the
// thread's room ahead of this one) and its buffer fits. If not, this connection joins the
// thread's queue when the thread's room is what it waits for, and leaves it when it waits for
// its own (its own tasks give that back).
bool TargetConnection::may_start(Task* t) {
  const ThreadBufferRoom& room = ctx_.buffers;
  if (!small_alone(t) && !room.waiting.empty() && room.waiting.front() != this) {
    join_thread_queue();
    return false;
  }
  switch (make_room(t)) {
    case Room::Fits: return true;
    case Room::Connection: leave_thread_queue(); return false;
    case Room::Thread: join_thread_queue(); return false;
  }
  return false;
}

// Whether t's buffer fits beside those of the started tasks and the kept ones, in this
// connection's room and in the thread's, after letting go of kept buffers (first this
// connection's, then the other connections') and of t's own when larger than it needs, as far
// as that helps. With no task started, anything fits: one command alone always runs (alone on
// the connection for its room, alone on the thread for the thread's).
TargetConnection::Room TargetConnection::make_room(Task* t) {
  const uint64_t budget = settings_->connection_buffer_bytes;
  ThreadBufferRoom& room = ctx_.buffers;
  auto fits = [&](uint64_t n) {
    return started_bytes_ + kept_bytes_ + n <= budget && room.used() + n <= room.budget;
  };
  if (!t->write && t->cap > t->edtl && !fits(t->cap)) drop_buffer(t);
  const uint64_t need = t->write ? t->cap : std::max(t->cap, t->edtl);
  for (size_t i = 0; !fits(need) && i < free_.size(); ++i) drop_kept(free_[i]);
  for (size_t i = 0; room.used() + need > room.budget && room.kept > 0 && i < room.members.size(); ++i)
    room.members[i]->drop_all_kept();
  if (started_bytes_ + kept_bytes_ + need > budget && started_bytes_ != 0) return Room::Connection;
  if (room.used() + need > room.budget && room.started != 0 && !small_alone(t)) return Room::Thread;
  return Room::Fits;
}

// A connection with nothing started may always start one command of at most kSmallCommand
// bytes, whatever the thread's room holds and whoever waits for it: initiators that hold the
// thread's room (slow readers, big transfers) never stall another one's INQUIRY or 4 KiB
// read. Its buffer is counted outside the thread's room (ThreadBufferRoom::small), so a stream
// of such commands never keeps a command waiting there from its turn either; the room is
// exceeded by at most kSmallCommand per connection.
bool TargetConnection::small_alone(const Task* t) const {
  // A READ's larger buffer off the free list is let go of by make_room() when it does not fit.
  return started_bytes_ == 0 && (t->write ? t->cap : t->edtl) <= kSmallCommand;
}

void TargetConnection::join_thread_queue() {
  if (in_thread_queue_) return;
  in_thread_queue_ = true;
  ctx_.buffers.waiting.push_back(this);
  ++ctx_.buffers.waits;
}

void TargetConnection::leave_thread_queue() {
  if (!in_thread_queue_) return;
  in_thread_queue_ = false;
  auto& q = ctx_.buffers.waiting;
  q.erase(std::find(q.begin(), q.end(), this));
}

void TargetConnection::pump_thread_room(ThreadContext& ctx) {
  ThreadBufferRoom& room = ctx.buffers;
  if (room.pumping) return;  // a connection pumped from here comes back through after_release()
  room.pumping = true;
  while (!room.waiting.empty()) {
    TargetConnection* c = room.waiting.front();
    c->pump();  // leaves the queue unless its next task still waits for the thread's room
    if (!room.waiting.empty() && room.waiting.front() == c) break;
  }
  room.pumping = false;
}

// The thread's queue first: room given back goes to whoever waits for it longest.
void TargetConnection::after_release() {
  if (!ctx_.buffers.waiting.empty()) pump_thread_room(ctx_);
  if (!waiting_.empty()) pump();
}

void TargetConnection::go(Task* t) {
  t->small = small_alone(t);
  // Counted outside the thread's room, a small READ is charged no more than it needs.
  if (t->small && !t->write && t->cap > t->edtl) drop_buffer(t);
  if (t->write) {
    t->started = true;
    t->charge = t->cap;
    add_started(t->charge, t->small);
    issue_r2ts(t);
  } else {
    reserve_buffer(t, t->edtl);
    execute(t);
  }
}

// Runs waiting tasks as room appears (a task's buffer is back on the free list).
void TargetConnection::pump() {
  if (pumping_) return;  // a task that completes inside go() comes back here
  pumping_ = true;
  while (!closing_ && !waiting_.empty() && may_start(waiting_.front())) {
    Task* t = waiting_.front();
    waiting_.pop_front();
    t->waiting = false;
    go(t);
  }
  if (closing_ || waiting_.empty()) leave_thread_queue();
  pumping_ = false;
}

TargetConnection::Task* TargetConnection::find_task(uint32_t itt) const {
  for (Task* t : tasks_)
    if (t->itt == itt) return t;
  return nullptr;
}

void TargetConnection::on_scsi_command(const ScsiCommandPdu& c, const PduParts& p,
                                       std::span<const uint8_t> pdu) {
  // The task its immediate data was received into, if it was (finish_direct() frees it unless
  // it is taken below).
  Task* staged = std::exchange(staged_command_, nullptr);
  ++stats_.commands;
  if (find_task(c.itt)) {
    reject(RejectReason::TaskInProgress, pdu);
    return;
  }
  AhsInfo ahs;
  if (auto why = command_error(c, p.ahs, ahs)) {
    reject(*why, pdu);
    return;
  }
  const uint32_t edtl = c.expected_data_transfer_length;
  const uint32_t imm = c.data_segment_length;

  Task* t = alloc_task(staged);
  t->itt = c.itt;
  t->cmd_sn = c.cmd_sn;
  t->lun_field = c.lun;
  auto num = c.lun.number();
  t->lun = num.value_or(~uint64_t{0});
  t->lu = num ? find_lun(*num) : nullptr;
  t->read = c.read;
  t->write = c.write;
  t->counted = !c.immediate;
  if (t->counted) ++window_active_;

  // An EDTL beyond what we hold in memory: the command fails before any data moves.
  const bool too_big = edtl > settings_->max_transfer_bytes;
  t->edtl = too_big ? 0 : edtl;
  // A WRITE's data lands in its buffer from now on; others get theirs when they start.
  if (c.write) reserve_buffer(t, t->edtl);
  scsi::ScsiTask& st = t->st;
  std::memset(st.cdb, 0, sizeof(st.cdb));
  std::memcpy(st.cdb, c.cdb.data(), 16);
  if (!ahs.extended_cdb.empty()) std::memcpy(st.cdb + 16, ahs.extended_cdb.data(), ahs.extended_cdb.size());
  st.cdb_len = static_cast<uint8_t>(16 + ahs.extended_cdb.size());
  st.lun = t->lun;
  st.tag = c.itt;
  st.attr = to_scsi(c.attr);
  st.nexus = &nexus_;
  st.dir = c.write ? scsi::DataDir::out : c.read ? scsi::DataDir::in : scsi::DataDir::none;
  st.expected_length = t->edtl;
  st.iov = nullptr;  // execute() points it at the buffer
  st.iovcnt = 0;
  st.done = &TargetConnection::task_done;
  st.ctx = t;
  // Data-In straight from the backend's memory, unless a data digest has to be computed over it
  // here in user space (a view may fault there: BackendQueue::read_view()).
  st.accept_view = c.read && !digests_.data;
  st.data_in_view = nullptr;
  st.data_in_fd = -1;

  if (too_big) {
    st.status = scsi::Status::check_condition;
    scsi::invalid_cdb_field(0).encode(st.sense);
    st.sense_len = scsi::kFixedSenseLen;
    st.residual_kind = scsi::Residual::underflow;
    st.residual = edtl;
    st.data_in_len = 0;  // unsolicited data still on its way is dropped (unknown ITT)
    complete(t);
    return;
  }

  if (c.write) {
    if (imm && p.data.data() != t->buf.get()) std::memcpy(t->buf.get(), p.data.data(), imm);
    t->unsol_next = imm;
    t->r2t_next = imm;
    if (!c.final) {
      t->unsol_open = true;
      t->unsol_limit = std::min(edtl, params_.first_burst_length);
    }
    if (t->unsol_open) return;  // R2Ts once the unsolicited burst ends
    if (t->r2t_next < t->edtl) {
      start(t);  // its R2Ts
      return;
    }
    execute(t);  // all its data came with it
    return;
  }
  start(t);
}

// Why a SCSI Command PDU is refused before it becomes a task, or nothing; fills `ahs`.
std::optional<RejectReason> TargetConnection::command_error(const ScsiCommandPdu& c, std::span<const uint8_t> raw_ahs,
                                                            AhsInfo& ahs) const {
  if (!raw_ahs.empty() && parse_ahs(raw_ahs, ahs) != PduError::Ok) return RejectReason::InvalidPduField;
  // Bidirectional commands: no SBC command we serve has them.
  if ((c.read && c.write) || ahs.bidi_read_expected_length || 16 + ahs.extended_cdb.size() > 32)
    return RejectReason::CommandNotSupported;
  const uint32_t edtl = c.expected_data_transfer_length;
  const uint32_t imm = c.data_segment_length;
  if (imm > 0 && (!c.write || !params_.immediate_data || imm > edtl ||
                  (params_.first_burst_relevant() && imm > params_.first_burst_length)))
    return RejectReason::ProtocolError;
  if (c.write && !c.final && params_.initial_r2t)
    return RejectReason::ProtocolError;  // unsolicited Data-Out announced but not allowed
  return std::nullopt;
}

// A write whose immediate data may be received in place: one on_scsi_command() accepts whole.
bool TargetConnection::command_ok(const ScsiCommandPdu& c, std::span<const uint8_t> raw_ahs) const {
  AhsInfo ahs;
  return c.write && c.data_segment_length > 0 && !command_error(c, raw_ahs, ahs) &&
         c.expected_data_transfer_length <= settings_->max_transfer_bytes;
}

void TargetConnection::issue_r2ts(Task* t) {
  while (t->r2t_next < t->edtl && t->r2ts.size() < params_.max_outstanding_r2t) {
    Task::R2t r;
    r.ttt = next_ttt_++;
    if (next_ttt_ == kReservedTag) next_ttt_ = 1;
    r.offset = t->r2t_next;
    r.length = std::min(params_.max_burst_length, t->edtl - t->r2t_next);
    r.next = r.offset;
    r.data_sn = 0;
    t->r2t_next += r.length;
    t->r2ts.push_back(r);
    R2TPdu pdu;
    pdu.lun = t->lun_field;
    pdu.itt = t->itt;
    pdu.ttt = r.ttt;
    pdu.stat_sn = stat_sn_.next();
    pdu.exp_cmd_sn = window_.exp_cmd_sn();
    pdu.max_cmd_sn = max_cmd_sn();
    pdu.r2t_sn = t->r2t_sn++;
    pdu.buffer_offset = r.offset;
    pdu.desired_data_transfer_length = r.length;
    send(pdu);
  }
}

void TargetConnection::on_data_out(const DataOutPdu& d, std::span<const uint8_t> data,
                                   std::span<const uint8_t> pdu) {
  Task* t = find_task(d.itt);
  if (!t || t->in_lun) {
    // Data for a task that was aborted, refused or already complete: discarded (§11.7).
    VCP_LOG_DEBUG("target: Data-Out for unknown ITT {:#x} dropped", d.itt);
    return;
  }
  const uint32_t len = d.data_segment_length;
  size_t ri = 0;
  if (const char* why = check_data_out(t, d, &ri)) {
    reject(RejectReason::ProtocolError, pdu);
    close(std::string("Data-Out: ") + why);
    return;
  }
  uint8_t* dst = t->buf.get() + d.buffer_offset;
  if (len && data.data() != dst) std::memcpy(dst, data.data(), len);  // else received in place
  if (d.ttt == kReservedTag) {
    ++t->unsol_data_sn;
    t->unsol_next += len;
    if (d.final) {
      t->unsol_open = false;
      t->r2t_next = t->unsol_next;
    }
  } else {
    Task::R2t& r = t->r2ts[ri];
    ++r.data_sn;
    r.next += len;
    if (d.final) t->r2ts.erase(t->r2ts.begin() + static_cast<ptrdiff_t>(ri));
  }
  if (t->unsol_open) return;
  if (t->r2t_next < t->edtl) {
    if (t->started) {
      issue_r2ts(t);
    } else if (!t->waiting) {
      start(t);  // the unsolicited burst ended: its R2Ts
    }
  }
  if (t->r2ts.empty() && t->r2t_next >= t->edtl) execute(t);
}

// Why a Data-Out for the collecting task t breaks the sequence rules (ERL 0: fatal), or null;
// for solicited data, *r2t_index is the R2T it answers. Passing means offset + length lies
// inside the task's EDTL (and its buffer).
const char* TargetConnection::check_data_out(const Task* t, const DataOutPdu& d, size_t* r2t_index) const {
  const uint64_t end = uint64_t{d.buffer_offset} + d.data_segment_length;
  if (d.ttt == kReservedTag) {
    if (!t->unsol_open) return "unsolicited data not expected";
    if (d.data_sn != t->unsol_data_sn) return "wrong DataSN";
    if (d.buffer_offset != t->unsol_next) return "wrong buffer offset";
    if (end > t->unsol_limit) return "beyond FirstBurstLength";
    return nullptr;
  }
  auto r = std::find_if(t->r2ts.begin(), t->r2ts.end(), [&](const Task::R2t& x) { return x.ttt == d.ttt; });
  if (r == t->r2ts.end()) return "unknown Target Transfer Tag";
  if (d.data_sn != r->data_sn) return "wrong DataSN";
  if (d.buffer_offset != r->next) return "wrong buffer offset";
  if (end > uint64_t{r->offset} + r->length) return "more data than the R2T asked for";
  if (d.final && end != uint64_t{r->offset} + r->length) return "sequence ended early";
  *r2t_index = static_cast<size_t>(r - t->r2ts.begin());
  return nullptr;
}

void TargetConnection::execute(Task* t) {
  if (!t->started) {  // a WRITE whose data all came unsolicited; others through go()
    t->started = true;
    t->charge = t->cap;
    add_started(t->charge, t->small);
  }
  t->iov = {t->buf.get(), t->edtl};
  t->st.iov = t->edtl ? &t->iov : nullptr;
  t->st.iovcnt = t->edtl ? 1 : 0;
  t->in_lun = true;
  if (t->lu) {
    t->lu->execute(&t->st);
  } else {
    static const std::vector<uint64_t> kNone;
    scsi::respond_without_lun(&t->st, target_ ? target_->lun_numbers : kNone);
  }
}

void TargetConnection::forget_lun(const scsi::Lun* lu) {
  for (Task* t : tasks_)
    if (t->lu == lu && !t->in_lun) t->lu = nullptr;
}

bool TargetConnection::uses_lun(const scsi::Lun* lu) const {
  auto in = [lu](const TxSeg& s) { return s.task && s.task->lu == lu; };
  return std::any_of(tasks_.begin(), tasks_.end(), [lu](const Task* t) { return t->lu == lu; }) ||
         std::any_of(out_segs_.begin(), out_segs_.end(), in) ||
         std::any_of(tx_segs_.begin() + static_cast<long>(tx_seg_), tx_segs_.end(), in) ||
         std::any_of(tmfs_.begin(), tmfs_.end(), [lu](const auto& pt) {
           return std::any_of(pt->waits.begin(), pt->waits.end(), [lu](const auto& w) { return w.first == lu; });
         });
}

void TargetConnection::task_done(scsi::ScsiTask* st) {
  Task* t = static_cast<Task*>(st->ctx);
  TargetConnection* c = t->conn;
  c->complete(t);
  c->after_release();
}

void TargetConnection::complete(Task* t) {
  const bool respond = !t->st.aborted && !closing_;
  if (t->counted) {
    --window_active_;  // before the window goes out in the response
    t->counted = false;
  }
  if (respond) {
    const bool good = t->st.status == scsi::Status::good && t->st.sense_len == 0;
    if (t->read && t->st.data_in_len > 0) {
      send_data_in(t, good);
      if (!good) send_scsi_response(t);
    } else {
      send_scsi_response(t);
    }
  }
  free_task(t);
}

void TargetConnection::send_data_in(Task* t, bool with_status) {
  const scsi::ScsiTask& st = t->st;
  if (st.data_in_view) ++stats_.in_place_reads;
  const uint32_t total = std::min(st.data_in_len, t->edtl);
  // In place from a file LUN, a large READ goes out with sendfile(2) (set_sendfile()).
  const bool from_file =
      st.data_in_view && st.data_in_fd >= 0 && sendfile_ && total >= settings_->sendfile_min;
  // The initiator's MaxRecvDataSegmentLength, capped: libiscsi reads large Data-In PDUs much
  // more slowly than several 32 KiB ones (measured: 256 KiB reads at qd 8 went 1.7x faster).
  const uint32_t seg = std::max<uint32_t>(
      512, std::min(params_.max_send_data_segment_length, settings_->max_data_in_segment));
  const uint32_t burst = std::max<uint32_t>(seg, params_.max_burst_length);
  uint32_t off = 0, data_sn = 0, in_burst = 0;
  while (off < total) {
    uint32_t n = std::min({seg, total - off, burst - in_burst});
    DataInPdu d;
    d.lun = t->lun_field;
    d.itt = t->itt;
    d.ttt = kReservedTag;
    d.data_sn = data_sn++;
    d.buffer_offset = off;
    d.data_segment_length = n;
    off += n;
    in_burst += n;
    const bool last = off == total;
    d.final = last || in_burst == burst;
    if (in_burst == burst) in_burst = 0;
    if (last && with_status) {
      d.has_status = true;
      d.status = static_cast<uint8_t>(st.status);
      d.stat_sn = stat_sn_.take();
      d.overflow = st.residual_kind == scsi::Residual::overflow;
      d.underflow = st.residual_kind == scsi::Residual::underflow;
      d.residual_count = st.residual_kind == scsi::Residual::none ? 0 : st.residual;
    }
    d.exp_cmd_sn = window_.exp_cmd_sn();
    d.max_cmd_sn = max_cmd_sn();
    if (st.data_in_view) send_from_task(d, t, {st.data_in_view + d.buffer_offset, n}, true, from_file);
    else send_from_task(d, t, {t->buf.get() + d.buffer_offset, n});
  }
}

void TargetConnection::send_scsi_response(Task* t) {
  const scsi::ScsiTask& st = t->st;
  ScsiResponsePdu r;
  r.response = ScsiResponseCode::CommandCompleted;
  r.status = static_cast<uint8_t>(st.status);
  r.itt = t->itt;
  r.stat_sn = stat_sn_.take();
  r.exp_cmd_sn = window_.exp_cmd_sn();
  r.max_cmd_sn = max_cmd_sn();
  r.overflow = st.residual_kind == scsi::Residual::overflow;
  r.underflow = st.residual_kind == scsi::Residual::underflow;
  r.residual_count = st.residual_kind == scsi::Residual::none ? 0 : st.residual;
  uint8_t sense[2 + scsi::kFixedSenseLen];
  size_t n = 0;
  if (st.sense_len) {
    sense[0] = 0;
    sense[1] = st.sense_len;
    std::memcpy(sense + 2, st.sense, st.sense_len);
    n = 2 + st.sense_len;
  }
  r.data_segment_length = static_cast<uint32_t>(n);
  send(r, {sense, n});
}

// ---------------------------------------------------------------------------------------------
// NOP, task management, text, logout

void TargetConnection::on_nop_out(const NopOutPdu& n, std::span<const uint8_t> data) {
  NopInPdu r;
  r.lun = n.lun;
  r.itt = n.itt;
  r.ttt = kReservedTag;
  r.stat_sn = stat_sn_.take();
  r.exp_cmd_sn = window_.exp_cmd_sn();
  r.max_cmd_sn = max_cmd_sn();
  auto echo = data.first(std::min<size_t>(data.size(), params_.max_send_data_segment_length));
  r.data_segment_length = static_cast<uint32_t>(echo.size());
  send(r, echo);
}

void TargetConnection::drop_collecting(uint64_t lun, bool all_luns) {
  for (size_t i = 0; i < tasks_.size();) {
    Task* t = tasks_[i];
    if (!t->in_lun && (all_luns || t->lun == lun)) {
      free_task(t);  // swaps the last task into slot i
    } else {
      ++i;
    }
  }
}

void TargetConnection::on_task_mgmt(const TaskMgmtRequestPdu& rq) {
  TaskMgmtResponsePdu r;
  r.itt = rq.itt;
  r.response = TmfResponse::Complete;
  const auto num = rq.lun.number();
  scsi::Lun* lu = num ? find_lun(*num) : nullptr;
  std::vector<scsi::Lun*> quiesce;  // where aborted tasks may still be in flight
  const bool lun_scoped = rq.function == TmfFunction::AbortTask || rq.function == TmfFunction::AbortTaskSet ||
                          rq.function == TmfFunction::ClearTaskSet || rq.function == TmfFunction::ClearAca ||
                          rq.function == TmfFunction::LogicalUnitReset;
  if (discovery()) {
    r.response = TmfResponse::Rejected;
  } else if (lun_scoped && !lu) {
    r.response = TmfResponse::LunDoesNotExist;
  } else {
    switch (rq.function) {
      case TmfFunction::AbortTask: {
        Task* t = find_task(rq.referenced_task_tag);
        if (t && t->lun == *num) {
          if (t->in_lun) {
            quiesce.push_back(t->lu);
            t->lu->abort_task(nexus_, t->itt);  // it ends without a response, maybe later
          } else {
            free_task(t);
          }
        } else if (!(serial_ge(rq.ref_cmd_sn, window_.exp_cmd_sn()) && serial_lt(rq.ref_cmd_sn, rq.cmd_sn))) {
          // Not here and not a command still to come: §11.5.1 c).
          r.response = TmfResponse::TaskDoesNotExist;
        }
        break;
      }
      case TmfFunction::AbortTaskSet:
        drop_collecting(*num, false);
        lu->abort_task_set(nexus_);
        quiesce.push_back(lu);
        break;
      case TmfFunction::ClearTaskSet:
        drop_collecting(*num, false);
        lu->clear_task_set(nexus_);
        quiesce.push_back(lu);
        break;
      case TmfFunction::LogicalUnitReset:
        drop_collecting(*num, false);
        lu->reset(scsi::ResetKind::lun_reset);
        quiesce.push_back(lu);
        break;
      case TmfFunction::TargetWarmReset:
      case TmfFunction::TargetColdReset:
        drop_collecting(0, true);
        target_->each_lun([&](scsi::Lun* lu) {  // this session's target (Normal: target_ is set)
          lu->reset(scsi::ResetKind::target_reset);
          quiesce.push_back(lu);
        });
        break;
      case TmfFunction::ClearAca:
        r.response = TmfResponse::NotSupported;
        break;
      case TmfFunction::TaskReassign:
        r.response = TmfResponse::ReassignmentNotSupported;  // ERL 0
        break;
    }
  }
  const bool cold = rq.function == TmfFunction::TargetColdReset && r.response == TmfResponse::Complete;
  if (quiesce.empty()) return send_tmf_response(r, cold);
  auto pending = std::make_unique<PendingTmf>();
  PendingTmf* pt = pending.get();
  pt->conn = this;
  pt->r = r;
  pt->cold_reset = cold;
  pt->left = quiesce.size();
  pt->waits.resize(quiesce.size());
  for (size_t i = 0; i < quiesce.size(); ++i) {
    pt->waits[i].first = quiesce[i];
    pt->waits[i].second.done = &TargetConnection::tmf_quiesced;
    pt->waits[i].second.ctx = pt;
  }
  tmfs_.push_back(std::move(pending));
  // Each may answer at once (nothing left in flight there); the last one frees pt.
  for (size_t i = 0; i < quiesce.size(); ++i) quiesce[i]->when_quiesced(&pt->waits[i].second);
}

void TargetConnection::tmf_quiesced(scsi::QuiesceWait* w) {
  auto* pt = static_cast<PendingTmf*>(w->ctx);
  if (--pt->left > 0) return;
  TargetConnection* c = pt->conn;
  auto it = std::find_if(c->tmfs_.begin(), c->tmfs_.end(), [pt](auto& p) { return p.get() == pt; });
  std::unique_ptr<PendingTmf> done = std::move(*it);
  c->tmfs_.erase(it);
  if (!c->closing_) c->send_tmf_response(done->r, done->cold_reset);
}

void TargetConnection::send_tmf_response(TaskMgmtResponsePdu& r, bool cold_reset) {
  r.stat_sn = stat_sn_.take();
  r.exp_cmd_sn = window_.exp_cmd_sn();
  r.max_cmd_sn = max_cmd_sn();
  send(r);
  // A cold reset ends every connection to the target (SAM-5); we end ours.
  if (cold_reset) close("target cold reset");
}

void TargetConnection::on_text(const TextRequestPdu& rq, std::span<const uint8_t> data,
                               std::span<const uint8_t> pdu) {
  auto respond = [&](bool final, uint32_t ttt, std::span<const uint8_t> chunk) {
    TextResponsePdu r;
    r.final = final;
    r.cont = !final;
    r.lun = rq.lun;
    r.itt = rq.itt;
    r.ttt = ttt;
    r.stat_sn = stat_sn_.take();
    r.exp_cmd_sn = window_.exp_cmd_sn();
    r.max_cmd_sn = max_cmd_sn();
    r.data_segment_length = static_cast<uint32_t>(chunk.size());
    send(r, chunk);
  };
  auto send_chunk = [&]() {
    size_t room = std::max<uint32_t>(512, params_.max_send_data_segment_length);
    size_t n = std::min(room, text_out_.size() - text_out_off_);
    std::span<const uint8_t> chunk{text_out_.data() + text_out_off_, n};
    text_out_off_ += n;
    const bool last = text_out_off_ == text_out_.size();
    if (!last && text_ttt_ == kReservedTag) {
      text_ttt_ = next_ttt_++;
      if (next_ttt_ == kReservedTag) next_ttt_ = 1;
    }
    respond(last, last ? kReservedTag : text_ttt_, chunk);
    if (last) {
      text_out_.clear();
      text_out_off_ = 0;
      text_ttt_ = kReservedTag;
    }
  };

  if (rq.ttt != kReservedTag) {
    // The initiator asks for the next piece of a long answer.
    if (rq.ttt != text_ttt_ || text_out_off_ >= text_out_.size()) {
      reject(RejectReason::InvalidPduField, pdu);
      return;
    }
    send_chunk();
    return;
  }
  text_out_.clear();
  text_out_off_ = 0;
  text_ttt_ = kReservedTag;
  if (text_in_.size() + data.size() > kMaxLoginText) {
    text_in_.clear();
    reject(RejectReason::ProtocolError, pdu);
    return;
  }
  text_in_.insert(text_in_.end(), data.begin(), data.end());
  if (rq.cont) {
    respond(false, kReservedTag, {});  // more of the request to come: an empty answer (§11.10.2)
    return;
  }
  TextKeys in, out;
  TextError terr = parse_text(text_in_, in);
  text_in_.clear();
  if (terr != TextError::Ok) {
    reject(RejectReason::ProtocolError, pdu);
    return;
  }
  for (const auto& kv : in.pairs()) {
    if (kv.key == "SendTargets") {
      // A target whose access list keeps the initiator out is not shown to it at all. A
      // Normal session's own target goes by the name we gave it (the initiator's spelling
      // may differ in case).
      const std::string session_target = target_ ? target_->iqn : std::string();
      std::vector<std::string> addresses = access_->portal_addresses;
      if (!target_address_.empty() && std::find(addresses.begin(), addresses.end(), target_address_) == addresses.end())
        addresses.push_back(target_address_);
      std::vector<iscsi::SendTargetsRecord> shown;
      for (size_t i = 0; i < ctx_.served.size() && i < access_->targets.size(); ++i) {
        if (!access_->targets[i].admits(params_.initiator_name, peer_)) continue;
        shown.push_back({ctx_.served[i].iqn, addresses});
      }
      build_send_targets(kv.value, params_.session_type, session_target, shown, out);
    } else if (find_key(kv.key)) {
      out.add(kv.key, std::string(kReject));  // no renegotiation in Full Feature Phase
    } else {
      out.add(kv.key, std::string(kNotUnderstood));
    }
  }
  encode_text(out, text_out_);
  send_chunk();
}

void TargetConnection::on_logout(const LogoutRequestPdu& rq) {
  LogoutResponsePdu r;
  r.itt = rq.itt;
  if (rq.reason == LogoutReason::RemoveForRecovery) {
    r.response = LogoutResponseCode::RecoveryNotSupported;
  } else if (rq.reason == LogoutReason::CloseConnection && rq.cid != cid_) {
    r.response = LogoutResponseCode::CidNotFound;
  }
  r.stat_sn = stat_sn_.take();
  r.exp_cmd_sn = window_.exp_cmd_sn();
  r.max_cmd_sn = max_cmd_sn();
  r.time2wait = 0;
  r.time2retain = 0;
  send(r);
  if (r.response == LogoutResponseCode::Success) close("logout");
}

// ---------------------------------------------------------------------------------------------
// Output, timers, the end

uint32_t TargetConnection::max_cmd_sn() const {
  // Grows as commands complete, never shrinks: ExpCmdSN moves with each command received while
  // the room shrinks by one for it.
  const uint32_t depth = settings_->cmd_window;
  const uint32_t room = window_active_ >= depth ? 0 : depth - window_active_;
  return window_.exp_cmd_sn() + room - 1;
}

void TargetConnection::send(const Pdu& hdr, std::span<const uint8_t> data) {
  const Digests d = phase_ == Phase::FullFeature ? digests_ : Digests{};
  const size_t len = pdu_length(total_ahs_length_of(hdr), data_segment_length_of(hdr), d);
  const size_t at = out_.size();
  uint8_t* p = out_.extend(len);
  size_t n = encode_pdu(hdr, {}, data, d, {p, len});
  out_.truncate(at + n);
  queued_bytes(at, n);
}

// A Data-In: header (and digests) in the output buffer, the data segment where it is, in the
// task's buffer, which stays pinned until output_sent() is past it.
void TargetConnection::send_from_task(const Pdu& hdr, Task* t, std::span<const uint8_t> data, bool in_place,
                                      bool from_file) {
  if (data.size() <= kTxCopyMax && !in_place) {
    send(hdr, data);
    return;
  }
  const size_t hdr_len = kBhsSize + (digests_.header ? kDigestSize : 0);
  size_t at = out_.size();
  uint8_t* p = out_.extend(hdr_len);
  encode_bhs(hdr, std::span<uint8_t, kBhsSize>(p, kBhsSize));
  if (digests_.header) store_digest(std::span<uint8_t>(p + kBhsSize, kDigestSize).first<kDigestSize>(), crc32c({p, kBhsSize}));
  queued_bytes(at, hdr_len);
  TxSeg& seg = out_segs_.emplace_back(TxSeg{0, data.data(), data.size(), t});
  if (from_file) {
    seg.fd = t->st.data_in_fd;
    seg.fd_off = t->st.data_in_offset + static_cast<uint64_t>(data.data() - t->st.data_in_view);
    ++file_segs_;
    ++stats_.file_data_in;
  }
  unsent_ += data.size();
  ++t->pins;
  ++stats_.zero_copy_data_in;
  const uint32_t pad = pad_length(static_cast<uint32_t>(data.size()));
  const size_t tail = pad + (digests_.data ? kDigestSize : 0);
  if (tail) {
    at = out_.size();
    p = out_.extend(tail);
    std::memset(p, 0, pad);
    // (never in place: accept_view is off with data digests)
    if (digests_.data) store_digest(std::span<uint8_t>(p + pad, kDigestSize).first<kDigestSize>(), data_digest(data));
    queued_bytes(at, tail);
  }
}

bool TargetConnection::replaced_ended() const {
  return std::all_of(replaced_.begin(), replaced_.end(),
                     [](const auto& r) { return r->ended.load(std::memory_order_acquire); });
}

void TargetConnection::queue_wire(std::span<const uint8_t> bytes) {
  const size_t at = out_.size();
  out_.append(bytes);
  queued_bytes(at, bytes.size());
}

void TargetConnection::queued_bytes(size_t at, size_t n) {
  if (n == 0) return;
  unsent_ += n;
  if (!out_segs_.empty()) {
    TxSeg& last = out_segs_.back();
    if (!last.task && last.off + last.len == at) {
      last.len += n;
      return;
    }
  }
  out_segs_.push_back({at, nullptr, n, nullptr});
}

void TargetConnection::reject(RejectReason why, std::span<const uint8_t> pdu) {
  ++stats_.rejects;
  RejectPdu r;
  r.reason = why;
  r.stat_sn = stat_sn_.take();
  r.exp_cmd_sn = window_.exp_cmd_sn();
  r.max_cmd_sn = max_cmd_sn();
  uint8_t bhs[kBhsSize] = {};
  if (pdu.size() >= kBhsSize) std::memcpy(bhs, pdu.data(), kBhsSize);
  r.data_segment_length = kBhsSize;
  send(r, {bhs, kBhsSize});
}

void TargetConnection::close(std::string why) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = std::move(why);
  VCP_LOG_DEBUG("target: closing connection: {}", close_reason_);
  shutdown();
}

void TargetConnection::tick(uint64_t now_ms) {
  if (closing_) return;
  const TargetSettings& s = *settings_;
  if (superseded()) {
    close("session reinstated by a new login");
    return;
  }
  if (!held_login_response_.empty()) {
    release_held_login(now_ms);
    return;
  }
  if (phase_ == Phase::Login) {
    if (now_ms - started_ms_ > s.login_timeout_ms) close("login timed out");
    return;
  }
  if (ctx_.access && ctx_.access->generation() != access_gen_) {  // a reload replaced them since the last look
    access_gen_ = ctx_.access->generation();
    access_ = ctx_.access->load();
    recheck_access(now_ms);
  }
  if (drop_at_ms_) {
    if (now_ms >= drop_at_ms_) close("dropped by a reload (access revoked or target removed)");
    return;  // no keepalive: nothing is read any more
  }
  // A peer we stopped reading from (its answers pile up) but that takes our output is alive.
  if (sent_while_paused_) {
    sent_while_paused_ = false;
    last_rx_ms_ = now_ms;
  }
  if (nop_outstanding_) {
    if (last_rx_ms_ <= nop_sent_ms_ && now_ms - nop_sent_ms_ > s.nop_timeout_ms) close("NOP-In ping unanswered");
    else if (last_rx_ms_ > nop_sent_ms_) nop_outstanding_ = false;  // the peer is alive
    return;
  }
  if (now_ms - last_rx_ms_ > s.nop_interval_ms) {
    NopInPdu p;
    p.itt = kReservedTag;
    nop_ttt_ = next_ttt_++;
    if (next_ttt_ == kReservedTag) next_ttt_ = 1;
    p.ttt = nop_ttt_;
    p.stat_sn = stat_sn_.next();  // not advanced by a ping (§11.19)
    p.exp_cmd_sn = window_.exp_cmd_sn();
    p.max_cmd_sn = max_cmd_sn();
    send(p);
    nop_outstanding_ = true;
    nop_sent_ms_ = now_ms;
    peer_progress_.reset();  // the next note_peer_progress() sets the mark
  }
}

void TargetConnection::note_peer_progress(const TcpProgress& p, uint64_t now_ms) {
  if (!nop_outstanding_) return;
  if (peer_progress_ && took_queued_output(*peer_progress_, p)) last_rx_ms_ = now_ms;  // it took output
  peer_progress_ = p;
}

void TargetConnection::shutdown() {
  closing_ = true;
  if (ended_) return;
  ended_ = true;
  leave_thread_queue();
  held_.clear();
  end_direct();
  drop_collecting(0, true);
  // TMF responses still waiting will not be sent: the Luns let go of their waits.
  for (auto& pt : tmfs_)
    for (auto& [lun, w] : pt->waits) lun->cancel_wait(&w);
  tmfs_.clear();
  if (session_) {
    VCP_LOG_INFO("target: session of {} (TSIH {}) ended: {}; {} commands, {} rejected, {} dropped outside the window",
                 printable(params_.initiator_name), tsih_, close_reason_.empty() ? "connection closed" : close_reason_,
                 stats_.commands, stats_.rejects, stats_.dropped_commands);
  }
  if (phase_ == Phase::FullFeature && nexus_.id) {
    // Tasks inside the Luns are aborted; they come back through task_done (no response).
    if (target_) target_->each_lun([&](scsi::Lun* lu) { lu->nexus_lost(nexus_); });
  }
}

void TargetConnection::next_tx_batch() {
  if (tx_seg_ < tx_segs_.size()) return;
  tx_.clear();
  tx_segs_.clear();
  tx_seg_ = tx_seg_off_ = 0;
  tx_.swap(out_);
  tx_segs_.swap(out_segs_);
}

size_t TargetConnection::output_iov(std::span<iovec> out) {
  next_tx_batch();
  size_t n = 0;
  for (size_t i = tx_seg_; i < tx_segs_.size() && n < out.size(); ++i) {
    const TxSeg& s = tx_segs_[i];
    if (s.fd >= 0) break;  // output_file()'s
    const uint8_t* base = s.task ? s.at : tx_.data() + s.off;
    const size_t skip = i == tx_seg_ ? tx_seg_off_ : 0;
    out[n++] = {const_cast<uint8_t*>(base + skip), s.len - skip};
  }
  return n;
}

std::optional<TargetConnection::FileRange> TargetConnection::output_file() {
  next_tx_batch();
  if (tx_seg_ >= tx_segs_.size() || tx_segs_[tx_seg_].fd < 0) return std::nullopt;
  const TxSeg& s = tx_segs_[tx_seg_];
  return FileRange{s.fd, s.fd_off + tx_seg_off_, s.len - tx_seg_off_};
}

std::span<const uint8_t> TargetConnection::output() {
  iovec one;
  if (output_iov({&one, 1}) == 0) return {};
  return {static_cast<const uint8_t*>(one.iov_base), one.iov_len};
}

void TargetConnection::output_sent(size_t n) {
  if (n > 0 && !wants_input()) sent_while_paused_ = true;
  while (n > 0 && tx_seg_ < tx_segs_.size()) {
    const TxSeg& s = tx_segs_[tx_seg_];
    const size_t k = std::min(n, s.len - tx_seg_off_);
    tx_seg_off_ += k;
    unsent_ -= k;
    n -= k;
    if (tx_seg_off_ == s.len) {
      if (s.fd >= 0) --file_segs_;
      if (s.task) unpin(s.task);
      ++tx_seg_;
      tx_seg_off_ = 0;
    }
  }
  after_release();
}

}  // namespace vcp::target

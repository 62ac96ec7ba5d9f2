#include "harness.hpp"

#include <algorithm>
#include <cstring>

#include <unistd.h>

namespace vcp::target::test {

using namespace vcp::iscsi;

TargetSettings TargetFixture::default_settings() {
  TargetSettings s;
  s.iqn = kIqn;
  s.luns.push_back({0, "ram:size=4M"});
  s.limits.max_burst_length = 65536;
  s.limits.first_burst_length = 16384;
  s.limits.max_outstanding_r2t = 2;
  s.cmd_window = 16;
  s.direct_rx_min = 8192;  // PDUs of 8 KiB and more arriving in pieces take the direct path
  return s;
}

TargetFixture::TargetFixture(TargetSettings s) : settings(std::move(s)) {
  ctx.settings = &settings;
  ctx.sessions = &sessions;
  for (const TargetSpec& t : settings.all_targets()) {
    ThreadContext::Target& served = ctx.served.emplace_back();
    served.iqn = t.iqn;
    served.alias = t.alias;
    for (const LunSpec& l : t.luns) served.lun_numbers.push_back(l.number);
    std::sort(served.lun_numbers.begin(), served.lun_numbers.end());
    for (const LunSpec& l : t.luns) {
      std::string err;
      auto b = make_backend(l.backend, &err);
      EXPECT_TRUE(b) << err;
      auto q = b->open_queue(0);
      EXPECT_TRUE(q.ok());
      scsi::LunConfig cfg;
      cfg.lun = l.number;
      cfg.target_name = t.iqn;
      auto lu = std::make_unique<scsi::Lun>(cfg, *b, **q);
      lu->set_reported_luns(served.lun_numbers, false);
      served.luns.push_back({cfg.lun, lu.get()});
      if (!lun) {  // the first target's first LUN
        backend = std::move(b);
        queue = std::move(*q);
        lun = std::move(lu);
      } else {
        more_backends.push_back(std::move(b));
        more_queues.push_back(std::move(*q));
        more_luns.push_back(std::move(lu));
      }
    }
    std::sort(served.luns.begin(), served.luns.end(), [](auto& a, auto& b) { return a.number < b.number; });
  }
  ctx.wake = [this] { ++wakes; };
  ctx.buffers.budget = settings.buffer_bytes;
}

std::vector<uint8_t> drain_output(TargetConnection& c, size_t step) {
  std::vector<uint8_t> bytes;
  while (c.has_output()) {
    size_t sent = 0;
    if (auto f = c.output_file()) {
      sent = std::min(step, f->len);
      const size_t at = bytes.size();
      bytes.resize(at + sent);
      const ssize_t n = pread(f->fd, bytes.data() + at, sent, static_cast<off_t>(f->offset));
      if (n != static_cast<ssize_t>(sent)) {
        ADD_FAILURE() << "file range " << f->offset << "+" << sent << " not readable";
        break;
      }
    } else {
      iovec iov[8];
      const size_t n = c.output_iov(iov);
      if (n == 0) {
        ADD_FAILURE() << "output queued, but neither memory nor a file range to send";
        break;
      }
      size_t budget = step;
      for (size_t i = 0; i < n && budget > 0; ++i) {
        const size_t k = std::min(budget, iov[i].iov_len);
        const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
        bytes.insert(bytes.end(), p, p + k);
        sent += k;
        budget -= k;
      }
    }
    c.output_sent(sent);
  }
  return bytes;
}

NegotiationLimits SessionOptions::initiator_limits() {
  NegotiationLimits l;
  l.max_recv_data_segment_length = 8192;
  l.max_burst_length = 65536;
  l.first_burst_length = 16384;
  l.max_outstanding_r2t = 4;
  return l;
}

Initiator::Initiator(TargetFixture& f, SessionOptions o)
    : f_(f), o_(std::move(o)), conn_(std::make_unique<TargetConnection>(f.ctx, now)) {}

LoginState Initiator::login() {
  InitiatorLoginConfig cfg;
  cfg.initiator_name = o_.initiator;
  cfg.target_name = o_.target;
  cfg.session_type = o_.type;
  cfg.isid = o_.isid;
  cfg.cmd_sn = cmd_sn_;
  cfg.itt = next_itt();
  cfg.chap = o_.chap;
  cfg.target_chap = o_.target_chap;
  cfg.limits = o_.limits;
  login_ = std::make_unique<InitiatorLogin>(cfg);
  login_rq_ = login_->start();
  conn_->receive(to_wire(login_rq_), now);
  return finish_login();
}

LoginState Initiator::finish_login() {
  if (!login_) {
    ADD_FAILURE() << "no login under way";
    return LoginState::Failed;
  }
  for (int i = 0; i < 40 && login_->state() == LoginState::InProgress; ++i) {
    auto got = take();
    if (got.empty()) return LoginState::InProgress;  // held back: the caller goes on later
    if (got.size() != 1 || !got[0].as<LoginResponsePdu>()) {
      ADD_FAILURE() << "expected one Login Response, got " << got.size() << " PDUs";
      return LoginState::Failed;
    }
    last_login = *got[0].as<LoginResponsePdu>();
    login_->on_response(last_login, got[0].data, login_rq_);
    if (login_->state() == LoginState::InProgress) conn_->receive(to_wire(login_rq_), now);
  }
  const LoginState st = login_->state();
  if (st == LoginState::FullFeature) {
    params_ = login_->params();
    digests = params_.digests();
    ffp_ = true;
  }
  if (st != LoginState::InProgress) login_.reset();
  return st;
}

void Initiator::send(const Pdu& hdr, std::span<const uint8_t> data) {
  std::vector<uint8_t> buf(pdu_length(total_ahs_length_of(hdr), data_segment_length_of(hdr), digests));
  size_t n = encode_pdu(hdr, {}, data, digests, buf);
  ASSERT_EQ(n, buf.size());
  std::span<const uint8_t> rest(buf);
  while (!rest.empty()) {
    const size_t k = chunk ? std::min(chunk, rest.size()) : rest.size();
    conn_->receive(rest.first(k), now);
    rest = rest.subspan(k);
  }
}

std::vector<Received> Initiator::take() {
  std::vector<Received> out;
  std::vector<uint8_t> bytes = drain_output(*conn_);
  size_t off = 0;
  // The Login Response that ends the login goes out without digests; later PDUs with them.
  while (off + kBhsSize <= bytes.size()) {
    Bhs bhs;
    std::memcpy(bhs.bytes.data(), &bytes[off], kBhsSize);
    const bool login_rsp = bhs.opcode_byte() == static_cast<uint8_t>(Opcode::LoginResponse);
    Digests d = login_rsp ? Digests{} : digests;
    size_t len = pdu_length(bhs, d);
    if (off + len > bytes.size()) {
      ADD_FAILURE() << "truncated PDU in the target's output";
      break;
    }
    PduParts parts;
    PduError e = decode_pdu({&bytes[off], len}, d, parts, {Direction::FromTarget, kMaxDataSegmentLength});
    EXPECT_EQ(e, PduError::Ok) << to_string(e);
    out.push_back({parts.header, std::vector<uint8_t>(parts.data.begin(), parts.data.end())});
    off += len;
  }
  EXPECT_EQ(off, bytes.size());
  return out;
}

uint32_t Initiator::command(std::vector<uint8_t> cdb, bool read, bool write, uint32_t edtl,
                            std::span<const uint8_t> immediate, bool final, uint64_t lun) {
  ScsiCommandPdu c;
  c.read = read;
  c.write = write;
  c.final = final;
  c.lun = *Lun::from_number(static_cast<uint32_t>(lun));
  c.itt = next_itt();
  c.expected_data_transfer_length = edtl;
  c.cmd_sn = next_cmd_sn();
  c.data_segment_length = static_cast<uint32_t>(immediate.size());
  std::memcpy(c.cdb.data(), cdb.data(), std::min<size_t>(16, cdb.size()));
  send(c, immediate);
  return c.itt;
}

void Initiator::data_out(uint32_t itt, uint32_t ttt, uint32_t data_sn, uint32_t offset,
                         std::span<const uint8_t> data, bool final) {
  DataOutPdu d;
  d.final = final;
  d.itt = itt;
  d.ttt = ttt;
  d.data_sn = data_sn;
  d.buffer_offset = offset;
  d.data_segment_length = static_cast<uint32_t>(data.size());
  send(d, data);
}

uint32_t Initiator::send_tmf(TmfFunction fn, uint32_t lun, uint32_t ref_itt, uint32_t ref_cmd_sn) {
  TaskMgmtRequestPdu t;
  t.function = fn;
  t.lun = *Lun::from_number(lun);
  t.itt = next_itt();
  t.referenced_task_tag = ref_itt;
  t.cmd_sn = cmd_sn_;
  t.ref_cmd_sn = ref_cmd_sn;
  send(t);
  return t.itt;
}

TmfResponse Initiator::tmf(TmfFunction fn, uint32_t lun, uint32_t ref_itt, uint32_t ref_cmd_sn) {
  send_tmf(fn, lun, ref_itt, ref_cmd_sn);
  auto got = take();
  if (got.size() != 1 || !got[0].as<TaskMgmtResponsePdu>()) {
    ADD_FAILURE() << "expected one Task Management Response, got " << got.size() << " PDUs";
    return TmfResponse::Rejected;
  }
  return got[0].as<TaskMgmtResponsePdu>()->response;
}

std::vector<Received> Initiator::run(std::vector<uint8_t> cdb, bool read, bool write, uint32_t edtl,
                                     std::span<const uint8_t> out) {
  uint32_t imm = 0;
  if (write && params_.immediate_data)
    imm = std::min<uint32_t>({edtl, params_.first_burst_length, params_.max_send_data_segment_length,
                              static_cast<uint32_t>(out.size())});
  uint32_t itt = command(cdb, read, write, edtl, out.first(imm));
  std::vector<Received> all;
  for (int round = 0; round < 1000; ++round) {
    auto got = take();
    bool done = false;
    for (auto& r : got) {
      all.push_back(r);
      if (const auto* r2t = r.as<R2TPdu>()) {
        EXPECT_EQ(r2t->itt, itt);
        uint32_t off = r2t->buffer_offset, end = off + r2t->desired_data_transfer_length, sn = 0;
        while (off < end) {
          uint32_t n = std::min(end - off, params_.max_send_data_segment_length);
          data_out(itt, r2t->ttt, sn++, off, out.subspan(off, n), off + n == end);
          off += n;
        }
      }
      if (r.as<ScsiResponsePdu>() || (r.as<DataInPdu>() && r.as<DataInPdu>()->has_status) || r.as<RejectPdu>())
        done = true;
    }
    if (done || got.empty()) break;
  }
  return all;
}

Outcome outcome_of(const std::vector<Received>& pdus) {
  Outcome o;
  for (const auto& r : pdus) {
    if (const auto* d = r.as<DataInPdu>()) {
      if (o.data.size() < d->buffer_offset + r.data.size()) o.data.resize(d->buffer_offset + r.data.size());
      std::memcpy(o.data.data() + d->buffer_offset, r.data.data(), r.data.size());
      if (d->has_status) {
        o.have_status = true;
        o.status = d->status;
        o.underflow = d->underflow;
        o.overflow = d->overflow;
        o.residual = d->residual_count;
      }
    } else if (const auto* s = r.as<ScsiResponsePdu>()) {
      o.have_status = true;
      o.status = s->status;
      o.underflow = s->underflow;
      o.overflow = s->overflow;
      o.residual = s->residual_count;
      if (r.data.size() > 2) o.sense.assign(r.data.begin() + 2, r.data.end());
    } else if (r.as<R2TPdu>()) {
      ++o.r2ts;
    }
  }
  return o;
}

std::vector<uint8_t> cdb_inquiry(uint16_t alloc) {
  return {0x12, 0, 0, static_cast<uint8_t>(alloc >> 8), static_cast<uint8_t>(alloc), 0};
}

std::vector<uint8_t> cdb_rw16(uint8_t op, uint64_t lba, uint32_t blocks) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op;
  for (int i = 0; i < 8; ++i) c[2 + i] = static_cast<uint8_t>(lba >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) c[10 + i] = static_cast<uint8_t>(blocks >> (24 - 8 * i));
  return c;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return v;
}

}  // namespace vcp::target::test

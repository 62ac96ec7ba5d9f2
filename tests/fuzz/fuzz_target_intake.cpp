// The target's PDU intake: arbitrary bytes as the byte stream of one connection, fed into the
// TargetConnection state machine with a small ram LUN behind it.
//
// Input layout: byte 0 = flags (bit 0: log in first with a valid Normal login, bit 1: and ask
// for header digests, bit 2: data digests, bit 3: a Discovery session instead); byte 1 = the
// chunk size the rest is delivered in (0 means all at once), so PDU reassembly across receives
// is exercised too. The rest is the stream. Every byte the target sends back must decode as
// target PDUs; timers run between chunks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "base/log.hpp"
#include "iscsi/login.hpp"
#include "target/connection.hpp"

using namespace vcp;
using namespace vcp::iscsi;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Every login would log its session's start and end; FUZZ_LOG=1 keeps the log (seed checks).
  if (!std::getenv("FUZZ_LOG")) log::set_level(log::Level::off);
  return 0;
}

namespace {

struct World {
  target::TargetSettings settings;
  target::SessionRegistry sessions;
  std::unique_ptr<BlockBackend> backend;
  std::unique_ptr<BackendQueue> queue;
  World() {
    settings.iqn = "iqn.2024-01.org.vcp:fuzz";
    settings.luns.push_back({0, "ram:size=1M"});
    settings.limits.max_recv_data_segment_length = 16384;
    settings.limits.max_burst_length = 16384;
    settings.limits.first_burst_length = 8192;
    settings.limits.max_outstanding_r2t = 2;
    settings.max_transfer_bytes = 1 << 20;
    settings.cmd_window = 8;
    // The least room: two READs or WRITEs of 512 KiB fill it, so the waiting path is fuzzed.
    settings.connection_buffer_bytes = 1 << 20;
    // Only the fuzzer's own initiator may log in: logins under other names are refused.
    settings.acl.names = {"iqn.2024-01.org.vcp:fuzzer"};
    settings.direct_rx_min = 4096;  // within MaxRecvDataSegmentLength: the direct path is fuzzed
    std::string err;
    backend = make_backend("ram:size=1M", &err);
    if (!backend) abort();
    auto q = backend->open_queue(0);
    if (!q) abort();
    queue = std::move(*q);
  }
};

World& world() {
  static World w;
  return w;
}

// Reads what the target sent; aborts if it is not a sequence of well-formed target PDUs.
std::vector<uint8_t> drain(target::TargetConnection& c, Digests d, bool login_phase) {
  std::vector<uint8_t> bytes;
  while (c.has_output()) {
    auto o = c.output();
    bytes.insert(bytes.end(), o.begin(), o.end());
    c.output_sent(o.size());
  }
  // Every byte queued was counted, and every byte sent uncounted (the input pause depends on it).
  if (c.unsent_bytes() != 0) abort();
  // With every task over, nothing waits for buffer room and what is kept fits in it.
  if (c.tasks_in_flight() == 0 &&
      (c.tasks_waiting_for_buffers() != 0 || c.waiting_for_thread_room() ||
       c.buffer_bytes() > world().settings.connection_buffer_bytes))
    abort();
  size_t off = 0;
  while (off < bytes.size()) {
    if (bytes.size() - off < kBhsSize) abort();
    Bhs bhs;
    std::memcpy(bhs.bytes.data(), &bytes[off], kBhsSize);
    const bool login_rsp = bhs.opcode_byte() == static_cast<uint8_t>(Opcode::LoginResponse);
    Digests dd = (login_rsp || login_phase) ? Digests{} : d;
    size_t len = pdu_length(bhs, dd);
    if (off + len > bytes.size()) abort();
    PduParts parts;
    if (decode_pdu({&bytes[off], len}, dd, parts, {Direction::FromTarget, kMaxDataSegmentLength}) != PduError::Ok)
      abort();
    off += len;
  }
  return bytes;
}

bool login(target::TargetConnection& c, uint8_t flags, Digests* d) {
  InitiatorLoginConfig cfg;
  cfg.initiator_name = "iqn.2024-01.org.vcp:fuzzer";
  cfg.target_name = world().settings.iqn;
  cfg.session_type = (flags & 8) ? SessionType::Discovery : SessionType::Normal;
  cfg.cmd_sn = 1;
  cfg.limits.header_digest = (flags & 2) ? DigestPolicy::Require : DigestPolicy::None;
  cfg.limits.data_digest = (flags & 4) ? DigestPolicy::Require : DigestPolicy::None;
  // Data-In segments above 8 KiB go out from the task buffer (below, they are copied).
  cfg.limits.max_recv_data_segment_length = 16384;
  InitiatorLogin ini(cfg);
  LoginRequestOut rq = ini.start();
  for (int i = 0; i < 16 && ini.state() == LoginState::InProgress; ++i) {
    c.receive(to_wire(rq), 0);
    auto bytes = drain(c, {}, true);
    PduParts parts;
    if (bytes.empty() || decode_pdu(bytes, {}, parts, {Direction::FromTarget, kMaxDataSegmentLength}) != PduError::Ok)
      return false;
    ini.on_response(std::get<LoginResponsePdu>(parts.header), parts.data, rq);
  }
  *d = ini.params().digests();
  return ini.state() == LoginState::FullFeature;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  World& w = world();
  const uint8_t flags = data[0];
  const size_t chunk = data[1] ? data[1] : size;
  data += 2;
  size -= 2;

  scsi::LunConfig cfg;
  cfg.target_name = w.settings.iqn;
  scsi::Lun lun(cfg, *w.backend, *w.queue);
  lun.set_reported_luns({0}, false);
  target::ThreadContext ctx;
  ctx.settings = &w.settings;
  ctx.sessions = &w.sessions;
  ctx.served.push_back({w.settings.iqn, w.settings.alias, {{0, &lun}}, {0}});
  ctx.wake = [] {};
  // The thread's room below the connection's: the second 512 KiB command waits for the thread.
  ctx.buffers.budget = 768 << 10;
  {
    target::TargetConnection c(ctx, 0);
    Digests d{};
    bool ffp = false;
    if (flags & 1) {
      if (!login(c, flags, &d)) abort();  // a valid login must always work
      ffp = true;
    }
    uint64_t now = 0;
    for (size_t off = 0; off < size && !c.closing(); off += chunk) {
      size_t n = std::min(chunk, size - off);
      c.receive({data + off, n}, now);
      lun.poll();
      drain(c, d, !ffp && !c.full_feature());
      ffp = ffp || c.full_feature();
      now += 500;
      c.tick(now);
      drain(c, d, !ffp);
      // The thread's room counts what its one connection counts.
      if (ctx.buffers.used() + ctx.buffers.small != c.buffer_bytes()) abort();
      // The status line (SIGUSR1) of a connection in whatever state the input left it.
      if (c.describe(now).empty()) abort();
    }
    c.shutdown();
    lun.poll();
    if (!c.finished() || c.tasks_waiting_for_buffers() != 0) abort();  // ram completes inline: nothing may be left in the Lun
  }
  if (w.sessions.size() != 0) abort();
  if (!ctx.buffers.members.empty() || !ctx.buffers.waiting.empty() || ctx.buffers.used() + ctx.buffers.small != 0) abort();
  return 0;
}

// The initiator's receive path as a whole: the Session that splits its 64 KiB staging buffer
// into PDUs, copies or receives Data-In straight into the request's buffers, gathers large
// segments in scratch, and routes R2T, responses, NOP-In, TMF responses, Async Messages and
// Rejects to their tasks.
//
// Each input is what a target sends after login: a Session logs in to a scripted target on
// 127.0.0.1 (tests/unit/iscsi_backend/scripted_target.hpp), gets three commands outstanding
// (ITT 0x400: READ of 80 KiB, 0x401: WRITE of 128 KiB with 64 KiB immediate, the rest by R2T,
// 0x402: SYNCHRONIZE CACHE; CmdSN 1..3), and the input is then written to the connection and
// the connection closed. The session must stay inside its buffers, complete nothing twice,
// and never crash. Seeds: fuzz_backends_session_seeds.py.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "../unit/iscsi_backend/scripted_target.hpp"
#include "base/log.hpp"

using namespace vcp;
using namespace vcp::backends::iscsi;
using namespace vcp::backends::iscsi::testing;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Every malformed input would log a lost connection; FUZZ_LOG=1 keeps the log (seed checks).
  if (!std::getenv("FUZZ_LOG")) log::set_level(log::Level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  TestIo rd(BlockOp::read, 0, 80 * 1024);
  TestIo wr(BlockOp::write, 1 << 20, 128 * 1024);
  TestIo fl(BlockOp::flush, 0, 0);
  ScriptedTarget target;
  if (!target.ok()) std::abort();
  auto session = std::make_unique<Session>(scripted_config(target.port()), vcp::iscsi::Isid{0x80, 0, 0, 1, 0, 0},
                                           "fuzz", LunShape{512, false, true});
  target.attach(session.get());
  if (session->start() != 0 || !target.connect_and_login()) std::abort();
  for (TestIo* io : {&rd, &wr, &fl}) session->submit(&io->req);
  session->commit();
  // The three commands (and the write's immediate data) have reached the target.
  for (int seen = 0; seen < 3;) {
    auto r = target.next(2000);
    if (!r) std::abort();
    if (r->as<vcp::iscsi::ScsiCommandPdu>()) ++seen;
  }
  target.send_raw(std::vector<uint8_t>(data, data + size));
  target.shutdown_write();
  // Until the session has seen the end of the stream (or a PDU it failed the connection on).
  target.run_until([&] { return session->state() != Session::State::FullFeature; }, 2000);
  for (TestIo* io : {&rd, &wr, &fl})
    if (io->calls > 1) std::abort();  // completed twice
  target.attach(nullptr);
  session.reset();  // before the requests it may still hold
  return 0;
}

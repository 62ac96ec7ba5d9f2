// A scripted iSCSI target for driving the initiator's Session through situations no real
// target produces on demand (BUSY, Async Messages, commands never answered, redirect loops).
//
// It listens on 127.0.0.1 (port 0), logs the initiator in with src/iscsi's TargetLogin, and then
// plays a scenario PDU by PDU on one thread: every wait for the initiator's next PDU runs the
// Session's event loop (Session::poll) between non-blocking reads, so no threads are involved
// and the order of events is the test's. No digests (both sides negotiate None).
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "backends/iscsi/session.hpp"
#include "iscsi/login.hpp"
#include "iscsi/pdu.hpp"
#include "iscsi/text.hpp"

namespace vcp::backends::iscsi::testing {

namespace is = vcp::iscsi;

inline uint64_t mono_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

struct Received {
  is::Pdu bhs;
  std::vector<uint8_t> data;
  uint64_t at_ms = 0;  // when it was parsed
  template <class T>
  const T* as() const {
    return std::get_if<T>(&bhs);
  }
};

inline constexpr const char* kScriptedIqn = "iqn.2024-01.org.vcp.test:scripted";

class ScriptedTarget {
 public:
  ScriptedTarget() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 16) != 0) {
      ::close(listen_fd_);
      listen_fd_ = -1;
      return;
    }
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~ScriptedTarget() {
    drop();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  ScriptedTarget(const ScriptedTarget&) = delete;
  ScriptedTarget& operator=(const ScriptedTarget&) = delete;

  bool ok() const { return listen_fd_ >= 0; }
  uint16_t port() const { return port_; }
  void attach(Session* s) { session_ = s; }
  // Another listener whose accept() this one's waits also serve (a redirect's other end).
  int listen_fd() const { return listen_fd_; }

  is::NegotiationLimits limits = default_limits();
  uint32_t cmd_window = 32;

  static is::NegotiationLimits default_limits() {
    is::NegotiationLimits l;
    l.header_digest = is::DigestPolicy::None;
    l.data_digest = is::DigestPolicy::None;
    l.initial_r2t = true;
    l.immediate_data = true;
    l.max_recv_data_segment_length = 262144;
    l.max_burst_length = 16776192;
    l.first_burst_length = 65536;
    return l;
  }

  // Runs the session's loop once and waits up to wait_ms for either side to have something.
  void pump(int wait_ms = 5) {
    if (session_) session_->poll();
    pollfd p[2] = {{session_ ? session_->wait_fd() : -1, POLLIN, 0}, {fd_, POLLIN, 0}};
    ::poll(p, 2, wait_ms);
    if (session_) session_->poll();
  }
  // Runs the session's loop for ms milliseconds without reading anything.
  void run_for(int ms) {
    const uint64_t until = mono_ms() + ms;
    while (mono_ms() < until) pump(5);
  }
  template <class Pred>
  bool run_until(Pred pred, int timeout_ms) {
    const uint64_t until = mono_ms() + timeout_ms;
    while (!pred()) {
      if (mono_ms() > until) return false;
      pump(5);
    }
    return true;
  }

  // Accepts the initiator's next connection (running its loop meanwhile).
  bool accept(int timeout_ms = 3000) {
    drop();
    const uint64_t until = mono_ms() + timeout_ms;
    while (listen_fd_ >= 0 && mono_ms() < until) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) {
        fd_ = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd_ >= 0) {
          int one = 1;
          setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          rx_.clear();
          eof_ = false;
          ++accepted_;
          accepted_at_ms_ = mono_ms();
          return true;
        }
      }
      pump(5);
    }
    return false;
  }
  // Closes the listening socket: connections to the port are refused from now on.
  void stop_listening() {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // A port of 127.0.0.1 nothing listens on (connections to it are refused).
  static uint16_t closed_port() {
    ScriptedTarget t;
    return t.port();  // its socket is closed when t goes
  }
  uint32_t accepted() const { return accepted_; }
  uint64_t accepted_at_ms() const { return accepted_at_ms_; }
  void drop() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Ends the target's byte stream (the initiator sees EOF after what was sent).
  void shutdown_write() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
  }

  // The initiator's next PDU; nullopt on timeout or when it closed the connection (eof()).
  std::optional<Received> next(int timeout_ms = 3000) {
    const uint64_t until = mono_ms() + timeout_ms;
    for (;;) {
      if (auto r = parse()) return r;
      if (eof_ || fd_ < 0) return std::nullopt;
      if (!read_some()) {
        if (mono_ms() > until) return std::nullopt;
        pump(5);
      }
    }
  }
  // True when nothing arrives for ms milliseconds (the session runs meanwhile).
  bool quiet(int ms) {
    auto r = next(ms);
    if (r) unread_ = std::move(r);
    return !r && !eof_;
  }
  // Waits for the initiator to close the connection; PDUs before that are skipped.
  bool wait_eof(int timeout_ms) {
    const uint64_t until = mono_ms() + timeout_ms;
    while (!eof_) {
      if (mono_ms() > until) return false;
      next(static_cast<int>(until - mono_ms()));
    }
    return true;
  }
  bool eof() const { return eof_; }

  // Full login with TargetLogin; false when it did not reach Full Feature Phase.
  bool login(is::Isid* isid = nullptr, uint16_t* tsih_asked = nullptr) {
    is::TargetLoginConfig cfg;
    cfg.limits = limits;
    cfg.tsih = next_tsih_++;
    cfg.first_stat_sn = 1;
    cfg.cmd_window = cmd_window;
    cfg.lookup = [](std::string_view name, std::string_view) {
      is::TargetLookup t;
      if (name == kScriptedIqn) t.kind = is::TargetLookup::Kind::Found;
      return t;
    };
    is::TargetLogin login(std::move(cfg));
    for (int i = 0; i < 16; ++i) {
      auto r = next();
      if (!r) return false;
      auto* rq = r->as<is::LoginRequestPdu>();
      if (!rq) return false;
      if (i == 0) {
        if (isid) *isid = rq->isid;
        if (tsih_asked) *tsih_asked = rq->tsih;
      }
      is::LoginResponseOut out;
      is::LoginState st = login.on_request(*rq, r->data, out);
      send_raw(is::to_wire(out));
      if (st == is::LoginState::Failed) return false;
      if (st == is::LoginState::FullFeature) {
        stat_sn = login.next_stat_sn();
        exp_cmd_sn = login.exp_cmd_sn();
        return session_ ? run_until([&] { return session_->state() == Session::State::FullFeature; }, 2000) : true;
      }
    }
    return false;
  }
  // Accept + login.
  bool connect_and_login(is::Isid* isid = nullptr, uint16_t* tsih_asked = nullptr) {
    return accept() && login(isid, tsih_asked);
  }

  // Answers the first Login Request with a redirect (status class 1) to `address`.
  bool redirect(const std::string& address, bool permanent = false) {
    auto r = next();
    if (!r || !r->as<is::LoginRequestPdu>()) return false;
    const auto& rq = *r->as<is::LoginRequestPdu>();
    is::LoginResponseOut out;
    out.bhs.isid = rq.isid;
    out.bhs.itt = rq.itt;
    out.bhs.stat_sn = 0;
    out.bhs.exp_cmd_sn = rq.cmd_sn;
    out.bhs.max_cmd_sn = rq.cmd_sn;
    out.bhs.status_class = 0x01;
    out.bhs.status_detail = permanent ? 0x02 : 0x01;
    if (!address.empty()) {
      std::string kv = "TargetAddress=" + address;
      out.data.assign(kv.begin(), kv.end());
      out.data.push_back(0);
    }
    out.bhs.data_segment_length = static_cast<uint32_t>(out.data.size());
    send_raw(is::to_wire(out));
    return true;
  }

  // ---- sending ----
  void send(const is::Pdu& bhs, std::span<const uint8_t> data = {}) {
    std::vector<uint8_t> buf(is::kBhsSize + is::padded_length(data.size()), 0);
    is::encode_bhs(bhs, std::span<uint8_t, is::kBhsSize>(buf.data(), is::kBhsSize));
    if (!data.empty()) std::memcpy(buf.data() + is::kBhsSize, data.data(), data.size());
    send_raw(buf);
  }
  void send_raw(const std::vector<uint8_t>& buf) {
    size_t off = 0;
    const uint64_t until = mono_ms() + 5000;
    while (off < buf.size() && fd_ >= 0 && mono_ms() < until) {
      ssize_t n = ::send(fd_, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;
      read_some();  // keep the initiator's sends flowing while ours wait
      pump(1);
    }
  }

  // Sequence numbers the target keeps.
  uint32_t stat_sn = 1;
  uint32_t exp_cmd_sn = 1;
  uint32_t max_cmd_sn() const { return exp_cmd_sn + cmd_window - 1; }
  // Notes a command's CmdSN (non-immediate commands advance ExpCmdSN).
  void saw_command(const is::ScsiCommandPdu& c) {
    if (!c.immediate && static_cast<int32_t>(c.cmd_sn + 1 - exp_cmd_sn) > 0) exp_cmd_sn = c.cmd_sn + 1;
  }

  // Fills the sequence numbers of a target PDU; StatSN advances unless `advance` is false.
  template <class T>
  void stamp(T& p, bool advance = true) {
    p.stat_sn = advance ? stat_sn++ : stat_sn;
    p.exp_cmd_sn = exp_cmd_sn;
    p.max_cmd_sn = max_cmd_sn();
  }

  // SCSI Response with a status (and sense data, for CHECK CONDITION).
  void respond(uint32_t itt, uint8_t status, std::span<const uint8_t> sense = {},
               is::ScsiResponseCode response = is::ScsiResponseCode::CommandCompleted) {
    is::ScsiResponsePdu r;
    r.response = response;
    r.status = status;
    r.itt = itt;
    stamp(r);
    std::vector<uint8_t> seg;
    if (!sense.empty()) {
      seg.push_back(static_cast<uint8_t>(sense.size() >> 8));
      seg.push_back(static_cast<uint8_t>(sense.size()));
      seg.insert(seg.end(), sense.begin(), sense.end());
    }
    r.data_segment_length = static_cast<uint32_t>(seg.size());
    send(r, seg);
  }
  // One Data-In carrying the whole read and GOOD status.
  void data_in_good(uint32_t itt, std::span<const uint8_t> data) {
    is::DataInPdu d;
    d.final = true;
    d.has_status = true;
    d.status = 0;
    d.data_segment_length = static_cast<uint32_t>(data.size());
    d.itt = itt;
    stamp(d);
    send(d, data);
  }
  void async(is::AsyncEvent ev, uint16_t p1, uint16_t p2, uint16_t p3) {
    is::AsyncMessagePdu a;
    a.event = ev;
    a.parameter1 = p1;
    a.parameter2 = p2;
    a.parameter3 = p3;
    stamp(a);
    send(a);
  }

  // An asynchronous SCSI event (AsyncEvent 0) carrying this sense data.
  void scsi_event(std::span<const uint8_t> sense) {
    std::vector<uint8_t> seg{static_cast<uint8_t>(sense.size() >> 8), static_cast<uint8_t>(sense.size())};
    seg.insert(seg.end(), sense.begin(), sense.end());
    is::AsyncMessagePdu ev;
    ev.event = is::AsyncEvent::ScsiEvent;
    stamp(ev);
    ev.data_segment_length = static_cast<uint32_t>(seg.size());
    send(ev, seg);
  }

  // Fixed-format sense (SPC-4 4.5.3) with key/ASC/ASCQ.
  static std::vector<uint8_t> sense(uint8_t key, uint8_t asc, uint8_t ascq) {
    std::vector<uint8_t> s(18, 0);
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    return s;
  }

 private:
  bool read_some() {
    if (fd_ < 0 || eof_) return false;
    uint8_t buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      rx_.insert(rx_.end(), buf, buf + n);
      return true;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof_ = true;
    return false;
  }
  std::optional<Received> parse() {
    if (unread_) {
      auto r = std::move(unread_);
      unread_.reset();
      return r;
    }
    if (rx_.size() < is::kBhsSize) return std::nullopt;
    is::Bhs b;
    std::memcpy(b.bytes.data(), rx_.data(), is::kBhsSize);
    const uint64_t total = is::pdu_length(b, is::Digests{});
    if (rx_.size() < total) return std::nullopt;
    Received r;
    is::PduParts parts;
    is::DecodeOptions o;
    o.direction = is::Direction::FromInitiator;
    if (is::decode_pdu({rx_.data(), total}, is::Digests{}, parts, o) != is::PduError::Ok) {
      eof_ = true;  // garbage from the initiator: the test fails on what it expected
      return std::nullopt;
    }
    r.bhs = parts.header;
    r.data.assign(parts.data.begin(), parts.data.end());
    r.at_ms = mono_ms();
    rx_.erase(rx_.begin(), rx_.begin() + static_cast<std::ptrdiff_t>(total));
    return r;
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int fd_ = -1;
  bool eof_ = false;
  std::vector<uint8_t> rx_;
  std::optional<Received> unread_;
  Session* session_ = nullptr;
  uint16_t next_tsih_ = 1;
  uint32_t accepted_ = 0;
  uint64_t accepted_at_ms_ = 0;
};

// A block request with its own buffer; done() counts completions.
struct TestIo {
  BlockRequest req{};
  std::vector<uint8_t> buf;
  iovec iov{};
  int status = 1;  // 1: not completed
  int calls = 0;
  uint64_t done_at_ms = 0;
  uint8_t scribble = 0;  // when set, the buffer is overwritten on completion (the client reuses it)

  TestIo(BlockOp op, uint64_t offset, uint32_t length) : buf(length) {
    iov = {buf.data(), buf.size()};
    req.op = op;
    req.offset = offset;
    req.length = length;
    req.iov = length ? &iov : nullptr;
    req.iovcnt = length ? 1 : 0;
    req.ctx = this;
    req.done = [](BlockRequest* r, int st) {
      auto* io = static_cast<TestIo*>(r->ctx);
      io->status = st;
      ++io->calls;
      io->done_at_ms = mono_ms();
      if (io->scribble) std::memset(io->buf.data(), io->scribble, io->buf.size());
    };
  }
  bool done() const { return calls > 0; }
};

inline IscsiConfig scripted_config(uint16_t port) {
  IscsiConfig c;
  c.host = "127.0.0.1";
  c.port = port;
  c.target = kScriptedIqn;
  c.lun = 1;
  c.header_digest = is::DigestPolicy::None;
  c.data_digest = is::DigestPolicy::None;
  c.timeout_ms = 30000;
  c.nop_interval_ms = 600000;  // no keep-alive pings unless a test asks for them
  c.login_timeout_ms = 5000;
  c.recovery_timeout_ms = 30000;
  return c;
}

// A resolver that answers every name with these ports of 127.0.0.1, in order (a name of
// several addresses, in tests).
inline Resolver resolves_to(std::vector<uint16_t> ports) {
  return [ports](const std::string&, uint16_t, std::vector<SocketAddress>* out, std::string*) {
    out->clear();
    for (uint16_t p : ports) {
      SocketAddress a;
      auto* in = reinterpret_cast<sockaddr_in*>(&a.addr);
      in->sin_family = AF_INET;
      in->sin_port = htons(p);
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.len = sizeof(sockaddr_in);
      a.text = address_text(reinterpret_cast<sockaddr*>(&a.addr), a.len);
      out->push_back(std::move(a));
    }
    return true;
  };
}

}  // namespace vcp::backends::iscsi::testing

#include "backends/iscsi/discovery.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "iscsi/login.hpp"
#include "iscsi/sendtargets.hpp"
#include "iscsi/text.hpp"

namespace vcp::backends::iscsi {

namespace is = vcp::iscsi;

bool parse_send_targets(std::span<const uint8_t> text, std::vector<DiscoveredTarget>* out, std::string* error) {
  is::TextKeys keys;
  is::TextLimits limits;
  limits.allow_repeated_keys = true;
  limits.max_pairs = 4096;
  limits.max_total_bytes = 1024 * 1024;
  is::TextError e = is::parse_text(text, keys, limits);
  if (e != is::TextError::Ok) {
    *error = "malformed SendTargets response: " + std::string(is::to_string(e));
    return false;
  }
  out->clear();
  for (const auto& p : keys.pairs()) {
    if (p.key == "TargetName") {
      if (p.value.empty()) {
        *error = "empty TargetName in the SendTargets response";
        return false;
      }
      out->push_back({p.value, {}});
    } else if (p.key == "TargetAddress") {
      if (out->empty()) {
        *error = "TargetAddress before any TargetName in the SendTargets response";
        return false;
      }
      out->back().addresses.push_back(p.value);
    }
    // Other keys (TargetAlias ...) are not ours to interpret here.
  }
  return true;
}

namespace {

class Conn {
 public:
  Conn(int fd, uint32_t timeout_ms) : fd_(fd), timeout_ms_(timeout_ms) {}

  bool send_all(const std::vector<uint8_t>& b, std::string* error) {
    size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        *error = "send: " + errno_str(errno);
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  bool recv_exact(uint8_t* p, size_t len, std::string* error) {
    size_t off = 0;
    while (off < len) {
      pollfd pfd{fd_, POLLIN, 0};
      int r = ::poll(&pfd, 1, static_cast<int>(timeout_ms_));
      if (r == 0) {
        *error = "no answer from the portal within " + std::to_string(timeout_ms_ / 1000) + " s";
        return false;
      }
      if (r < 0 && errno == EINTR) continue;
      ssize_t n = ::recv(fd_, p + off, len - off, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        *error = "the portal closed the connection";
        return false;
      }
      if (n < 0) {
        *error = "recv: " + errno_str(errno);
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // One PDU (no digests in our discovery sessions): its header and data segment.
  bool recv_pdu(is::Pdu& pdu, std::vector<uint8_t>& data, std::string* error) {
    std::array<uint8_t, is::kBhsSize> bhs{};
    if (!recv_exact(bhs.data(), bhs.size(), error)) return false;
    is::DecodeOptions o;
    o.direction = is::Direction::FromTarget;
    o.max_data_segment_length = 1024 * 1024;
    is::PduError e = is::decode_bhs(bhs, pdu, o);
    if (e != is::PduError::Ok) {
      *error = "malformed PDU from the portal: " + std::string(is::to_string(e));
      return false;
    }
    uint32_t dsl = is::data_segment_length_of(pdu);
    data.assign(is::padded_length(dsl), 0);
    if (!data.empty() && !recv_exact(data.data(), data.size(), error)) return false;
    data.resize(dsl);
    return true;
  }

 private:
  int fd_;
  uint32_t timeout_ms_;
};

std::vector<uint8_t> wire_text_request(const is::TextRequestPdu& rq, std::span<const uint8_t> data) {
  std::vector<uint8_t> out(is::pdu_length(0, static_cast<uint32_t>(data.size()), {}));
  size_t n = is::encode_pdu(rq, {}, data, {}, out);
  out.resize(n);
  return out;
}

// A blocking connection to one address, given at most timeout_ms to be taken; none and *error
// ("Connection refused", "no answer within 7500 ms") when it is not.
UniqueFd connect_within(const SocketAddress& a, uint32_t timeout_ms, std::string* error) {
  UniqueFd fd(::socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    *error = "socket: " + errno_str(errno);
    return {};
  }
  int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len);
  if (rc != 0 && errno != EINPROGRESS) {
    *error = errno_str(errno);
    return {};
  }
  if (rc != 0) {
    pollfd pfd{fd.get(), POLLOUT, 0};
    int r;
    do r = ::poll(&pfd, 1, static_cast<int>(timeout_ms));
    while (r < 0 && errno == EINTR);
    if (r == 0) {
      *error = "no answer within " + std::to_string(timeout_ms) + " ms";
      return {};
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (r < 0 || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      *error = errno_str(err);
      return {};
    }
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    *error = "fcntl: " + errno_str(errno);
    return {};
  }
  return fd;
}

}  // namespace

std::optional<std::vector<DiscoveredTarget>> discover_targets(const IscsiConfig& cfg, std::string* error) {
  const std::string where = vcp::iscsi::host_port(cfg.host, cfg.port);
  std::vector<SocketAddress> addrs;
  if (!resolve_with(cfg.resolver, cfg.host, cfg.port, &addrs, error)) return std::nullopt;
  // Each address of the name in turn, within login_timeout for them all (each but the last an
  // even share of what is left).
  UniqueFd fd;
  std::string failures;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.login_timeout_ms);
  for (size_t i = 0; i < addrs.size() && !fd; ++i) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const uint32_t wait = static_cast<uint32_t>(std::max<int64_t>(left.count(), 1) / static_cast<int64_t>(addrs.size() - i));
    std::string why;
    fd = connect_within(addrs[i], wait, &why);
    if (!fd) failures += (addrs.size() > 1 ? addrs[i].text + ": " : "") + why + (i + 1 < addrs.size() ? "; " : "");
  }
  if (!fd) {
    *error = "cannot connect to " + where + ": " + failures;
    return std::nullopt;
  }
  timeval tv{static_cast<time_t>(cfg.login_timeout_ms / 1000), 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  Conn c(fd.get(), cfg.login_timeout_ms);

  is::InitiatorLoginConfig lc;
  lc.initiator_name = cfg.initiator;
  lc.session_type = is::SessionType::Discovery;
  lc.isid = {0x80, 0x00, 0x5c, 0x0d, 0x15, 0xc0};
  lc.itt = 1;
  if (!cfg.user.empty()) lc.chap = is::ChapCredentials{cfg.user, cfg.secret};
  if (!cfg.mutual_user.empty()) lc.target_chap = is::ChapCredentials{cfg.mutual_user, cfg.mutual_secret};
  lc.chap_algorithms = cfg.chap_algorithms;
  lc.limits.header_digest = is::DigestPolicy::None;
  lc.limits.data_digest = is::DigestPolicy::None;
  is::InitiatorLogin login(std::move(lc));
  is::LoginRequestOut rq = login.start();
  std::vector<uint8_t> data;
  is::Pdu pdu;
  for (;;) {
    if (!c.send_all(is::to_wire(rq), error)) return std::nullopt;
    if (!c.recv_pdu(pdu, data, error)) return std::nullopt;
    auto* rs = std::get_if<is::LoginResponsePdu>(&pdu);
    if (!rs) {
      *error = "expected a Login Response from " + where + ", got " + std::string(is::to_string(is::opcode_of(pdu)));
      return std::nullopt;
    }
    // A refusal counts by its status even without our ITT/ISID echoed (tgtd zeroes them).
    const bool refused = rs->status_class != 0;
    is::LoginState st = refused ? is::LoginState::Failed : login.on_response(*rs, data, rq);
    if (st == is::LoginState::FullFeature) break;
    if (st == is::LoginState::Failed) {
      auto status = refused ? static_cast<is::LoginStatus>(rs->status_class << 8 | rs->status_detail) : login.status();
      char code[8];
      std::snprintf(code, sizeof code, "%04x", static_cast<unsigned>(status));
      if (!refused && status == is::LoginStatus::InitiatorError && !login.failure().empty())
        *error = "discovery login to " + where + " failed: the target's answer cannot be taken: " + login.failure();
      else
        *error = "discovery login to " + where + " failed: " + std::string(is::to_string(status)) + " (0x" + code +
                 ")" + (refused || login.failure().empty() ? "" : ": " + login.failure());
      return std::nullopt;
    }
  }

  // SendTargets=All; a long answer comes in pieces (C bit), each asked for with the TTT.
  uint32_t cmd_sn = login.cmd_sn();
  uint32_t exp_stat_sn = login.exp_stat_sn();
  std::vector<uint8_t> text;
  const std::string ask = std::string("SendTargets=All") + '\0';
  is::TextRequestPdu tr;
  tr.final = true;
  tr.itt = 2;
  tr.ttt = is::kReservedTag;
  tr.cmd_sn = cmd_sn++;
  tr.exp_stat_sn = exp_stat_sn;
  tr.data_segment_length = static_cast<uint32_t>(ask.size());
  std::vector<uint8_t> out = wire_text_request(tr, {reinterpret_cast<const uint8_t*>(ask.data()), ask.size()});
  for (int rounds = 0;; ++rounds) {
    if (rounds > 256) {
      *error = "the SendTargets response from " + where + " never ends";
      return std::nullopt;
    }
    if (!c.send_all(out, error)) return std::nullopt;
    for (;;) {
      if (!c.recv_pdu(pdu, data, error)) return std::nullopt;
      if (auto* n = std::get_if<is::NopInPdu>(&pdu)) {
        if (n->ttt != is::kReservedTag) {
          is::NopOutPdu no;
          no.immediate = true;
          no.ttt = n->ttt;
          no.cmd_sn = cmd_sn;
          no.exp_stat_sn = exp_stat_sn;
          std::vector<uint8_t> w(is::kBhsSize);
          is::encode_bhs(no, std::span<uint8_t, is::kBhsSize>(w.data(), is::kBhsSize));
          if (!c.send_all(w, error)) return std::nullopt;
        }
        continue;
      }
      break;
    }
    auto* rs = std::get_if<is::TextResponsePdu>(&pdu);
    if (!rs) {
      *error = "expected a Text Response from " + where + ", got " + std::string(is::to_string(is::opcode_of(pdu)));
      return std::nullopt;
    }
    exp_stat_sn = rs->stat_sn + 1;
    text.insert(text.end(), data.begin(), data.end());
    if (text.size() > 1024 * 1024) {
      *error = "the SendTargets response from " + where + " is larger than 1 MiB";
      return std::nullopt;
    }
    if (rs->final && !rs->cont) break;
    tr = {};
    tr.final = true;
    tr.itt = 2;
    tr.ttt = rs->ttt;
    tr.cmd_sn = cmd_sn++;
    tr.exp_stat_sn = exp_stat_sn;
    tr.data_segment_length = 0;
    out = wire_text_request(tr, {});
  }
  std::vector<DiscoveredTarget> targets;
  if (!parse_send_targets(text, &targets, error)) return std::nullopt;

  // Log out politely; the answer does not matter any more.
  is::LogoutRequestPdu lo;
  lo.immediate = true;
  lo.reason = is::LogoutReason::CloseSession;
  lo.itt = 3;
  lo.cmd_sn = cmd_sn;
  lo.exp_stat_sn = exp_stat_sn;
  std::vector<uint8_t> w(is::kBhsSize);
  is::encode_bhs(lo, std::span<uint8_t, is::kBhsSize>(w.data(), is::kBhsSize));
  std::string ignored;
  if (c.send_all(w, &ignored)) (void)c.recv_pdu(pdu, data, &ignored);
  return targets;
}

}  // namespace vcp::backends::iscsi

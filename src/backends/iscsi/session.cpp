#include "backends/iscsi/session.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/tcp_progress.hpp"
#include "iscsi/crc32c.hpp"
#include "iscsi/text.hpp"

namespace vcp::backends::iscsi {

namespace is = vcp::iscsi;

namespace {

constexpr uint32_t kTaskIndexBits = 10;
static_assert((1u << kTaskIndexBits) == Session::kMaxTasks);
// Tags of our own PDUs that are not SCSI commands: above every task ITT (< 2^26).
constexpr uint32_t kNopTag = 0x40000000;
constexpr uint32_t kTmfTag = 0x41000000;
constexpr uint32_t kLogoutTag = 0x42000000;
constexpr uint32_t kLoginTag = 0x43000000;
constexpr uint32_t kTextTag = 0x44000000;
constexpr uint32_t kTxReserve = 16;       // records kept free for NOP/TMF/logout
constexpr uint64_t kTickMs = 100;         // timer period: timeouts, NOPs, back-off, reconnect
constexpr uint32_t kOverflow = 32768;     // requests beyond kMaxTasks
constexpr uint32_t kMaxRetriesNow = 10;   // UNIT ATTENTION in a row
constexpr uint32_t kMaxRetriesBackoff = 40;
constexpr uint32_t kMaxTimeouts = 3;      // a command aborted this often fails
constexpr uint32_t kMaxRedirects = 8;     // login redirects in a row: a loop
constexpr uint64_t kMaxTime2WaitMs = 10000;  // cap on a target's Time2Wait before reconnecting

enum class Op : uint8_t { Timer = 1, Connect, Send, Recv, Cancel, Lookup };
uint64_t user_data(Op op, uint32_t gen) { return uint64_t{static_cast<uint8_t>(op)} << 56 | gen; }

// Appends the part of [base, base+len) that is not yet skipped; false when the iovec array is full.
struct IovBuilder {
  iovec* out;
  uint32_t max;
  uint32_t n = 0;
  uint64_t skip = 0;
  bool add(const void* base, uint64_t len) {
    if (len == 0) return true;
    if (skip >= len) {
      skip -= len;
      return true;
    }
    if (n == max) return false;
    out[n].iov_base = const_cast<uint8_t*>(static_cast<const uint8_t*>(base)) + skip;
    out[n].iov_len = len - skip;
    skip = 0;
    ++n;
    return true;
  }
  // The byte range [off, off+len) of a scattered buffer.
  bool add_range(const iovec* iov, uint32_t iovcnt, uint64_t off, uint64_t len) {
    for (uint32_t i = 0; i < iovcnt && len > 0; ++i) {
      if (off >= iov[i].iov_len) {
        off -= iov[i].iov_len;
        continue;
      }
      uint64_t take = std::min<uint64_t>(iov[i].iov_len - off, len);
      if (!add(static_cast<uint8_t*>(iov[i].iov_base) + off, take)) return false;
      len -= take;
      off = 0;
    }
    return true;
  }
};

void crc_range(is::Crc32c& crc, const iovec* iov, uint32_t iovcnt, uint64_t off, uint64_t len) {
  for (uint32_t i = 0; i < iovcnt && len > 0; ++i) {
    if (off >= iov[i].iov_len) {
      off -= iov[i].iov_len;
      continue;
    }
    uint64_t take = std::min<uint64_t>(iov[i].iov_len - off, len);
    crc.update({static_cast<const uint8_t*>(iov[i].iov_base) + off, take});
    len -= take;
    off = 0;
  }
}

}  // namespace

Session::Session(IscsiConfig cfg, is::Isid isid, std::string name, LunShape shape)
    : cfg_(std::move(cfg)), isid_(isid), name_(std::move(name)), shape_(shape) {}

Session::~Session() {
  if (!ring_ok_) return;
  // Nothing may complete into freed memory: cancel everything of ours and wait for it.
  state_ = State::Failed;
  if (sock_) ::shutdown(sock_.get(), SHUT_RDWR);
  if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) {
    io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(s, user_data(Op::Cancel, 0));
  }
  io_uring_submit(&ring_);
  uint64_t until = vcp::now_ms() + 2000;
  while ((ops_in_flight_ > 0 || timer_armed_ || lookup_reads_ > 0) && vcp::now_ms() < until) {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{0, 50 * 1000 * 1000};
    if (io_uring_wait_cqe_timeout(&ring_, &cqe, &ts) < 0) continue;
    unsigned head = 0, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++n;
      auto op = static_cast<Op>(cqe->user_data >> 56);
      if (op == Op::Timer) timer_armed_ = false;
      else if (op == Op::Lookup) lookup_reads_ -= lookup_reads_ > 0;
      else if (op != Op::Cancel && ops_in_flight_ > 0) --ops_in_flight_;
    }
    io_uring_cq_advance(&ring_, n);
  }
  io_uring_queue_exit(&ring_);
}

uint64_t Session::now_ms() const { return vcp::now_ms(); }

int Session::start() {
  tasks_ = std::make_unique<Task[]>(kMaxTasks);
  free_.reserve(kMaxTasks);
  for (uint32_t i = kMaxTasks; i-- > 0;) free_.push_back(i);
  overflow_.assign(kOverflow, nullptr);
  zero_block_.assign(shape_.block_size, 0);
  zero_iov_ = {zero_block_.data(), zero_block_.size()};
  tx_ = std::make_unique<TxRecord[]>(kTxRecords);
  send_iov_ = std::make_unique<iovec[]>(kMaxIov);
  recv_iov_ = std::make_unique<iovec[]>(kMaxIov + 2);
  uint32_t seg = std::max(cfg_.max_recv_data_segment_length, is::kLoginSegmentLength);
  scratch_.assign(seg + 8, 0);
  scratch_iov_ = {scratch_.data(), scratch_.size()};
  stage_ = std::make_unique<uint8_t[]>(kStageBytes);

  io_uring_params p{};
  int rc = io_uring_queue_init_params(64, &ring_, &p);
  if (rc < 0) {
    error_ = "io_uring_queue_init: " + errno_str(rc);
    return rc;
  }
  ring_ok_ = true;
  timer_fd_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  if (!timer_fd_) return -errno;
  itimerspec its{};
  its.it_interval.tv_nsec = static_cast<long>(kTickMs * 1000000);
  its.it_value = its.it_interval;
  if (timerfd_settime(timer_fd_.get(), 0, &its, nullptr) != 0) return -errno;
  arm_timer_read();

  use_portal(cfg_.first_portal % portal_count(cfg_));
  down_since_ms_ = now_ms();
  start_connect();
  io_uring_submit(&ring_);
  return 0;
}

io_uring_sqe* Session::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;  // never null: at most a handful of ops are outstanding in a 64-entry ring
}

void Session::arm_timer_read() {
  if (timer_armed_ || !timer_fd_) return;
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, timer_fd_.get(), &timer_buf_, sizeof timer_buf_, 0);
  io_uring_sqe_set_data64(s, user_data(Op::Timer, 0));
  timer_armed_ = true;
}

// ---------------------------------------------------------------------------------------------
// Connection lifecycle

void Session::start_connect() {
  ++conn_gen_;
  if (!next_address_) {
    // A new attempt on this portal: its name is looked up again (it may have moved), and the
    // attempt, every address of it, gets login_timeout.
    login_deadline_ms_ = now_ms() + cfg_.login_timeout_ms;
    addr_ = 0;
    addr_failures_.clear();
    addrs_.clear();
    std::string why;
    if (!numeric_host(host_)) {
      // A name is looked up on a thread of its own (a resolver that stalls must not hold the
      // queue's thread), within the attempt's login timeout. One still under way for an
      // attempt that gave up on it is waited for again, one that has ended since is taken.
      if (!lookup_ || lookup_->host() != host_ || lookup_->port() != port_) {
        lookup_ = PortalLookup::start(cfg_.resolver, host_, port_, &why);
        ++lookup_gen_;
        lookup_armed_ = false;
        if (!lookup_) {
          connection_failed(why, -EHOSTUNREACH);
          return;
        }
      }
      state_ = State::Connecting;
      resolving_ = true;
      if (lookup_->done()) {
        on_resolved();
      } else {
        arm_lookup_read();
      }
      return;
    }
    if (!resolve_with(cfg_.resolver, host_, port_, &addrs_, &why)) {
      connection_failed(why, -EHOSTUNREACH);
      return;
    }
  }
  next_address_ = false;
  connect_address();
}

void Session::arm_lookup_read() {
  if (lookup_armed_) return;
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, lookup_->fd(), &lookup_buf_, sizeof lookup_buf_, 0);
  io_uring_sqe_set_data64(s, user_data(Op::Lookup, lookup_gen_));
  lookup_armed_ = true;
  ++lookup_reads_;
}

void Session::on_resolved() {
  resolving_ = false;
  std::string why;
  const bool ok = lookup_->result(&addrs_, &why);
  lookup_.reset();  // the next attempt looks the name up again (it may have moved)
  if (!ok) {
    connection_failed(why, -EHOSTUNREACH);
    return;
  }
  connect_address();
}

void Session::connect_address() {
  const SocketAddress& a = addrs_[addr_];
  // Each address but the last gets an even share of what is left of the attempt's time, so
  // that one that never answers (a dropped SYN) leaves time for the others.
  const uint64_t now = now_ms();
  const uint64_t left = login_deadline_ms_ > now ? login_deadline_ms_ - now : 0;
  addr_wait_ms_ = left / (addrs_.size() - addr_);
  addr_deadline_ms_ = now + addr_wait_ms_;
  sock_.reset(::socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  tx_bytes_ = tx_passed_ = tx_sampled_ = rx_kernel_bytes_ = rx_kernel_ms_ = 0;
  rcvlowat_ = 1;
  if (!sock_) {
    connection_failed("socket: " + errno_str(errno));
    return;
  }
  int one = 1;
  setsockopt(sock_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(sock_.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  state_ = State::Connecting;
  io_uring_sqe* s = sqe();
  io_uring_prep_connect(s, sock_.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len);
  io_uring_sqe_set_data64(s, user_data(Op::Connect, conn_gen_));
  ++ops_in_flight_;
}

bool Session::try_next_address(const std::string& why) {
  if (addr_ + 1 >= addrs_.size() || state_ != State::Connecting) return false;
  addr_failures_ += addrs_[addr_].text + ": " + why + "; ";
  VCP_LOG_INFO("{}: cannot connect to {} at {}: {}; trying {}", name_, where(), addrs_[addr_].text, why,
               addrs_[addr_ + 1].text);
  ++addr_;
  connection_failed(why, -EIO, Cause::NextAddress);
  return true;
}

void Session::on_connected(int res) {
  if (res < 0) {
    if (try_next_address(errno_str(res))) return;
    // With several addresses, each says what it did ("cannot connect to name:3260: [::1]:3260:
    // Connection refused; 127.0.0.1:3260: Connection refused").
    connection_failed("cannot connect to " + where() + ": " +
                          (addr_failures_.empty() ? "" : addr_failures_ + addrs_[addr_].text + ": ") + errno_str(res),
                      res);
    return;
  }
  begin_login();
}

std::string Session::where_connected() const {
  const std::string w = where();
  if (addr_ < addrs_.size() && addrs_[addr_].text != w) return w + " (" + addrs_[addr_].text + ")";
  return w;
}

void Session::begin_login() {
  rx_reset();
  rx_hdr_len_ = is::kBhsSize;
  digests_ = {};
  is::InitiatorLoginConfig lc;
  lc.initiator_name = cfg_.initiator;
  lc.target_name = cfg_.target;
  lc.isid = isid_;
  lc.cid = 0;
  lc.itt = kLoginTag | (++special_seq_ & 0xffffff);
  lc.cmd_sn = 1;
  if (!cfg_.user.empty()) lc.chap = is::ChapCredentials{cfg_.user, cfg_.secret};
  if (!cfg_.mutual_user.empty()) lc.target_chap = is::ChapCredentials{cfg_.mutual_user, cfg_.mutual_secret};
  lc.chap_algorithms = cfg_.chap_algorithms;
  lc.limits.header_digest = cfg_.header_digest;
  lc.limits.data_digest = cfg_.data_digest;
  lc.limits.max_recv_data_segment_length = cfg_.max_recv_data_segment_length;
  // We can send unsolicited data and take large bursts; the target's answers (Min/OR) decide.
  lc.limits.initial_r2t = false;
  lc.limits.immediate_data = true;
  lc.limits.max_burst_length = 16776192;
  lc.limits.first_burst_length = 262144;
  login_ = std::make_unique<is::InitiatorLogin>(std::move(lc));
  state_ = State::LoggingIn;
  send_login(login_->start());
  arm_recv();
}

// Queues one login request (header and data already laid out by the login machine).
void Session::send_login(const is::LoginRequestOut& out) {
  login_tx_ = is::to_wire(out);
  login_iov_ = {login_tx_.data(), login_tx_.size()};
  TxRecord* r = tx_alloc();
  r->hdr_len = 0;
  r->iov = &login_iov_;
  r->iovcnt = 1;
  r->data_off = 0;
  r->data_len = static_cast<uint32_t>(login_tx_.size());
  r->trailer_len = 0;
  arm_send();
}

void Session::on_login_response(const is::LoginResponsePdu& rs, std::span<const uint8_t> data) {
  is::LoginRequestOut out;
  // A refusal is reported by its status even when the target does not echo our ITT/ISID on it
  // (tgtd zeroes them), which the login machine would otherwise call "another login".
  const bool refused = rs.status_class != 0;
  is::LoginState st = refused ? is::LoginState::Failed : login_->on_response(rs, data, out);
  if (st == is::LoginState::InProgress) {
    send_login(out);
    return;
  }
  if (st == is::LoginState::FullFeature) {
    enter_full_feature();
    return;
  }
  is::LoginStatus status =
      refused ? static_cast<is::LoginStatus>(rs.status_class << 8 | rs.status_detail) : login_->status();
  char code[8];
  std::snprintf(code, sizeof code, "%04x", static_cast<unsigned>(status));
  std::string why = "login to " + where() + " target " + cfg_.target + " failed: ";
  if (!refused && status == is::LoginStatus::InitiatorError && !login_->failure().empty()) {
    // Our verdict on the target's answer, not a status the target sent.
    why += "the target's answer cannot be taken: " + login_->failure();
  } else {
    why += std::string(is::to_string(status)) + " (0x" + code + ")";
    if (!refused && !login_->failure().empty()) why += ": " + login_->failure();
  }
  if (refused) {
    if (const std::string chap = login_->chap_in_progress(); !chap.empty()) why += " " + chap;
  }
  if (status == is::LoginStatus::TargetMovedTemporarily || status == is::LoginStatus::TargetMovedPermanently) {
    std::string h, perr;
    uint16_t p = 0;
    is::TextKeys keys;
    std::string address;
    if (is::parse_text(data, keys) == is::TextError::Ok && keys.find("TargetAddress")) address = *keys.find("TargetAddress");
    if (address.empty()) {
      why += ": the redirect carries no TargetAddress";
    } else if (!parse_portal(address, &h, &p, &perr)) {
      why += ": bad TargetAddress '" + address + "'";
    } else if (++redirects_ > kMaxRedirects) {
      why += ": more than " + std::to_string(kMaxRedirects) + " redirects in a row (last to " + address +
             "): a redirect loop";
      redirects_ = 0;
      use_portal(portal_);  // start over from the configured portals (the next one, or back-off)
      redirected_temporarily_ = false;
    } else {
      VCP_LOG_INFO("{}: target redirects us ({}) to {}", name_,
                   status == is::LoginStatus::TargetMovedTemporarily ? "temporarily" : "permanently", address);
      ++stats_.redirects;
      host_ = h;
      port_ = p;
      redirected_temporarily_ = status == is::LoginStatus::TargetMovedTemporarily;
      connection_failed("redirected", 0, Cause::Redirect);
      return;
    }
  }
  connection_failed(why, status == is::LoginStatus::AuthenticationFailure ||
                                 status == is::LoginStatus::AuthorizationFailure
                             ? -EACCES
                         : status == is::LoginStatus::NotFound || status == is::LoginStatus::TargetRemoved ? -ENOENT
                                                                                                             : -EIO);
}

void Session::enter_full_feature() {
  params_ = login_->params();
  digests_ = params_.digests();
  rx_hdr_len_ = is::kBhsSize + (digests_.header ? is::kDigestSize : 0);
  window_.reset(login_->cmd_sn(), login_->exp_cmd_sn(), login_->max_cmd_sn());
  exp_stat_sn_ = login_->exp_stat_sn();
  bool reconnect = first_login_done_;
  first_login_done_ = true;
  state_ = State::FullFeature;
  attempts_failed_ = 0;
  first_login_failures_.clear();
  outage_failures_ = outage_portals_said_ = 0;
  error_code_ = 0;  // what a portal that did not answer left: the login got through another
  redirects_ = 0;
  down_since_ms_ = 0;
  recovery_expired_ = false;
  async_logout_ = async_logout_sent_ = false;
  last_rx_ms_ = now_ms();
  nop_outstanding_ = false;
  tmf_ = Tmf::None;
  uint32_t waiting = 0;
  for (uint32_t i = ready_head_; i != UINT32_MAX; i = tasks_[i].next) ++waiting;
  if (reconnect) {
    ++stats_.reconnects;
    VCP_LOG_INFO("{}: session reinstated on {} (TSIH {}); reissuing {} command(s)", name_,
                 where_connected(), login_->tsih(), waiting);
  } else {
    VCP_LOG_INFO("{}: logged in to {} on {} (TSIH {}, authentication {}, header digest {}, data digest {}, "
                 "ImmediateData {}, InitialR2T {}, FirstBurst {}, MaxBurst {}, MaxRecvDSL {}/{}, window {})",
                 name_, cfg_.target, where_connected(), login_->tsih(), login_->authentication(),
                 digests_.header ? "CRC32C" : "None",
                 digests_.data ? "CRC32C" : "None", params_.immediate_data ? "Yes" : "No",
                 params_.initial_r2t ? "Yes" : "No", params_.first_burst_length, params_.max_burst_length,
                 params_.max_recv_data_segment_length, params_.max_send_data_segment_length, window_.room());
  }
  login_.reset();
  pump();
}

std::string Session::status_line() const {
  std::string s;
  switch (state_) {
    case State::FullFeature: s = "logged in to " + cfg_.target + " through " + where_connected(); break;
    case State::LoggingOut: s = "logging out of " + cfg_.target + " through " + where(); break;
    case State::Failed: s = "failed: " + error_; break;
    case State::Down:
    case State::Connecting:
    case State::LoggingIn:
      s = fmt::format("no session for {} s, {} {}", (now_ms() - down_since_ms_) / 1000,
                      resolving_ ? "looking up" : "logging in through", where());
      break;
  }
  const size_t portals = portal_count(cfg_);
  const PortalAddress configured = portal_at(cfg_, portal_);
  if (configured.host != host_ || configured.port != port_)
    s += " (redirected from " + portal_name(configured) + ")";
  else if (portals > 1)
    s += fmt::format(" (portal {} of {})", portal_ + 1, portals);
  return s + fmt::format(", {} commands in flight, {} completed, {} reconnects, {} reissued, {} aborts, {} redirects",
                         in_flight_, completed_, stats_.reconnects, stats_.reissued, stats_.aborts, stats_.redirects);
}

void Session::use_portal(size_t i) {
  portal_ = i;
  PortalAddress p = portal_at(cfg_, i);
  host_ = std::move(p.host);
  port_ = p.port;
}

void Session::connection_failed(const std::string& why, int code, Cause cause) {
  if (tearing_down_) return;
  const size_t portals = portal_count(cfg_);
  const bool redirected = cause == Cause::Redirect;
  const size_t failed_portal = portal_;  // (next_portal() below moves on)
  if (state_ != State::FullFeature && state_ != State::LoggingOut && cause == Cause::Error) ++outage_failures_;
  // Another address of the same portal: part of this attempt, tried at once.
  next_address_ = cause == Cause::NextAddress && !closing_ && !logout_done_;
  if (!next_address_ && !redirected && !closing_ && !logout_done_ &&
      (state_ == State::Down || state_ == State::Connecting || state_ == State::LoggingIn)) {
    // An attempt failed: the next goes to the next portal. A first login gives up (open fails)
    // when every portal has failed once, saying what each did.
    ++attempts_failed_;
    if (!first_login_done_) {
      if (!first_login_failures_.empty()) first_login_failures_ += "; ";
      // Each portal's failure says which portal it was ("recv: ..." alone would not).
      first_login_failures_ += why.find(where()) == std::string::npos ? where() + ": " + why : why;
      // The most telling code: a target's refusal (credentials, no such target) over a
      // portal that could not be reached.
      if (error_code_ != -EACCES && error_code_ != -ENOENT) error_code_ = code;
      if (attempts_failed_ >= portals) {
        state_ = State::Failed;
        error_ = portals == 1 ? why
                              : "no login through any of the " + std::to_string(portals) +
                                    " portals: " + first_login_failures_;
      }
    }
    if (portals > 1) next_portal();
  } else if (cause == Cause::Unanswered && portals > 1 && state_ == State::FullFeature) {
    // A portal that went silent (its host or link down) would take a whole login timeout to
    // give up on again: the next portal first. A broken connection tries its portal again.
    next_portal();
  }
  // Lost while we log out (the queue's thread gone, say, which cancels its receives): the
  // session is ending anyway; nothing to reconnect.
  if (state_ == State::LoggingOut) logout_done_ = true;
  bool closing = state_ == State::Failed || logout_done_ || closing_;
  if (!closing) {
    // A temporary redirect holds for the session it was given to (RFC 7143 §11.13.5): the
    // next session starts at the configured portal again.
    if (state_ == State::FullFeature && redirected_temporarily_) {
      use_portal(portal_);
      redirected_temporarily_ = false;
    }
    const std::string through = portals > 1 ? " through " + where() : "";
    const uint64_t now = now_ms();
    if (next_address_) {
      // (try_next_address() has said so)
    } else if (state_ == State::FullFeature || redirected || (outage_portals_said_ & (1u << failed_portal)) == 0) {
      // A session lost, a redirect, or the first failure of the outage on this portal: said.
      if (state_ != State::FullFeature && !redirected) outage_portals_said_ |= 1u << failed_portal;
      outage_said_ms_ = now;
      VCP_LOG_WARN("{}: connection lost: {}; {} command(s) outstanding, reconnecting{}", name_, why, in_flight_,
                   through);
    } else if (now - outage_said_ms_ >= kOutageLogEveryMs) {
      outage_said_ms_ = now;
      VCP_LOG_WARN("{}: still no session after {} s ({} attempts failed, the last: {}); {} command(s) outstanding, "
                   "reconnecting{}",
                   name_, (now - down_since_ms_) / 1000, outage_failures_, why, in_flight_, through);
    } else {
      VCP_LOG_DEBUG("{}: attempt failed: {}; reconnecting{}", name_, why, through);
    }
    state_ = State::Down;
    if (down_since_ms_ == 0) down_since_ms_ = now;
    // The portals are tried one after the other at once; a whole round failed waits before
    // the next (0.2, 0.4, 0.8, 1.6, then 2 s). A redirect is followed at once.
    const uint32_t rounds = attempts_failed_ % portals == 0 ? static_cast<uint32_t>(attempts_failed_ / portals) : 0;
    const uint64_t delay =
        rounds == 0 || redirected || next_address_ ? 0 : std::min<uint64_t>(100ull << std::min(rounds, 5u), 2000);
    reconnect_at_ms_ = now + delay;
    requeue_issued();
  }
  tmf_ = Tmf::None;
  nop_outstanding_ = false;
  async_logout_ = async_logout_sent_ = false;
  // Drop the tx FIFO: tasks requeued above are issued afresh on the next connection.
  for (uint32_t i = tx_head_task_; i != UINT32_MAX;) {
    uint32_t nx = tasks_[i].tx_next;
    tasks_[i].in_tx_fifo = false;
    tasks_[i].tx_next = UINT32_MAX;
    i = nx;
  }
  tx_head_task_ = tx_tail_task_ = UINT32_MAX;
  login_.reset();
  resolving_ = false;  // (a lookup under way goes on: the next attempt waits for it)
  tearing_down_ = true;
  if (sock_) {
    ::shutdown(sock_.get(), SHUT_RDWR);
    if (ops_in_flight_ > 0) {
      io_uring_sqe* s = sqe();
      io_uring_prep_cancel_fd(s, sock_.get(), IORING_ASYNC_CANCEL_ALL);
      io_uring_sqe_set_data64(s, user_data(Op::Cancel, 0));
    }
  }
  if (ops_in_flight_ == 0) finish_teardown();
}

void Session::finish_teardown() {
  sock_.reset();
  tearing_down_ = false;
  tx_head_ = tx_count_ = 0;
  tx_head_sent_ = 0;
  for (EchoSlot& e : nop_echo_) e.busy = false;
  window_closed_since_ms_ = 0;
  send_upto_ = 0;
  send_in_flight_ = recv_in_flight_ = false;
  rx_reset();
  // Every operation of the connection has been reaped: the kernel holds no request buffer any
  // more, so completions held for a send can be delivered now.
  for (uint32_t i = 0; i < kMaxTasks; ++i) {
    Task& t = tasks_[i];
    t.tx_refs = 0;
    if (t.state == TaskState::Completing) finish_complete(t, t.held_status);
  }
}

void Session::requeue_issued() {
  for (uint32_t i = 0; i < kMaxTasks; ++i) {
    Task& t = tasks_[i];
    if (t.state != TaskState::Issued) continue;
    ++stats_.reissued;
    tx_cancel(t);
    ready_push(t);
  }
}

void Session::abandon() {
  if (state_ == State::FullFeature || state_ == State::LoggingOut || in_flight_ == 0) return;
  VCP_LOG_INFO("{}: giving up {} request(s) waiting for a session (no one waits for them any more)", name_,
               in_flight_);
  fail_all(-ECANCELED);
}

void Session::fail_all(int status) {
  for (uint32_t i = 0; i < kMaxTasks; ++i) {
    Task& t = tasks_[i];
    if (t.state == TaskState::Free || t.state == TaskState::Completing) continue;
    if (t.state == TaskState::Delayed) --delayed_;
    complete(t, status);
  }
  ready_head_ = ready_tail_ = UINT32_MAX;
  while (overflow_count_ > 0) {
    BlockRequest* r = overflow_[overflow_head_];
    overflow_head_ = (overflow_head_ + 1) % kOverflow;
    --overflow_count_;
    --in_flight_;
    r->done(r, status);
  }
}

// ---------------------------------------------------------------------------------------------
// Requests and tasks

void Session::submit(BlockRequest* req) {
  if (req->op == BlockOp::get_id) {  // the device model answers GET_ID from BackendInfo.serial
    req->done(req, -EOPNOTSUPP);
    return;
  }
  if ((req->op == BlockOp::discard && !shape_.discard) || (req->op == BlockOp::write_zeroes && !shape_.write_zeroes)) {
    req->done(req, -EOPNOTSUPP);
    return;
  }
  const uint64_t bs = shape_.block_size;
  if (req->offset % bs || req->length % bs || req->length / bs > UINT32_MAX || req->iovcnt > kMaxIov) {
    req->done(req, -EINVAL);
    return;
  }
  if (state_ == State::Failed || recovery_expired_) {
    req->done(req, -EIO);
    return;
  }
  ++in_flight_;
  if (free_.empty() || overflow_count_ > 0) {
    if (overflow_count_ == kOverflow) {
      --in_flight_;
      req->done(req, -EAGAIN);
      return;
    }
    overflow_[(overflow_head_ + overflow_count_) % kOverflow] = req;
    ++overflow_count_;
    return;
  }
  start_request(req);
}

void Session::start_request(BlockRequest* req) {
  uint32_t i = free_.back();
  free_.pop_back();
  Task& t = tasks_[i];
  uint16_t gen = t.gen;
  t = Task{};
  t.gen = gen;
  t.req = req;
  const uint64_t lba = req->offset / shape_.block_size;
  const auto blocks = static_cast<uint32_t>(req->length / shape_.block_size);
  switch (req->op) {
    case BlockOp::read:
      t.cdb = build_read16(lba, blocks);
      t.read = true;
      t.xfer = static_cast<uint32_t>(req->length);
      t.iov = req->iov;
      t.iovcnt = req->iovcnt;
      break;
    case BlockOp::write:
      t.cdb = build_write16(lba, blocks, req->fua);
      t.write = true;
      t.xfer = static_cast<uint32_t>(req->length);
      t.iov = req->iov;
      t.iovcnt = req->iovcnt;
      break;
    case BlockOp::flush:
      t.cdb = build_synchronize_cache16();
      break;
    case BlockOp::discard:
      t.cdb = build_unmap(kUnmapParamLength);
      build_unmap_params(lba, blocks, t.params);
      t.param_iov = {t.params.data(), t.params.size()};
      t.write = true;
      t.xfer = kUnmapParamLength;
      t.iov = &t.param_iov;
      t.iovcnt = 1;
      break;
    case BlockOp::write_zeroes:
      t.cdb = build_write_same16(lba, blocks, req->unmap);
      t.write = true;
      t.xfer = shape_.block_size;
      t.iov = &zero_iov_;
      t.iovcnt = 1;
      break;
    case BlockOp::get_id:
      break;
  }
  ready_push(t);
}

void Session::submit_cdb(BlockRequest* req, const Cdb& cdb, bool read, bool write) {
  if (free_.empty() || state_ == State::Failed) {
    req->done(req, -EIO);
    return;
  }
  ++in_flight_;
  uint32_t i = free_.back();
  free_.pop_back();
  Task& t = tasks_[i];
  uint16_t gen = t.gen;
  t = Task{};
  t.gen = gen;
  t.req = req;
  t.raw = true;
  t.cdb = cdb;
  t.read = read;
  t.write = write;
  t.xfer = static_cast<uint32_t>(req->length);
  t.iov = req->iov;
  t.iovcnt = req->iovcnt;
  ready_push(t);
}

void Session::ready_push(Task& t) {
  set_state(t, TaskState::Ready);
  t.next = UINT32_MAX;
  uint32_t idx = static_cast<uint32_t>(&t - tasks_.get());
  if (ready_tail_ == UINT32_MAX) {
    ready_head_ = ready_tail_ = idx;
  } else {
    tasks_[ready_tail_].next = idx;
    ready_tail_ = idx;
  }
}

void Session::set_state(Task& t, TaskState s) {
  issued_ += static_cast<uint32_t>(s == TaskState::Issued) - static_cast<uint32_t>(t.state == TaskState::Issued);
  t.state = s;
}

// TASK SET FULL: the target holds all it can (SAM-5 5.3.5). As Linux's SCSI layer does, keep
// at most as many commands there as it held besides the refused one (this task is still
// Issued here), and let the depth grow back slowly while it keeps up.
void Session::on_task_set_full() {
  const uint32_t held = issued_;
  const uint32_t limit = held > 1 ? held - 1 : 1;
  good_since_limit_ = 0;
  if (probing_) ramp_every_ = std::min(ramp_every_ * 2, kDepthRampMax);
  probing_ = false;
  if (depth_limit_ != 0 && limit >= depth_limit_) return;
  if (depth_limit_ == 0)
    VCP_LOG_INFO("{}: TASK SET FULL with {} commands at the target: keeping at most {} there", name_, held, limit);
  depth_limit_ = limit;
  ++stats_.depth_reductions;
}

// One more command at the target after a run of good completions; no limit once it would not
// bind (more than the session has in flight at all).
void Session::ramp_depth() {
  if (depth_limit_ == 0 || ++good_since_limit_ < ramp_every_) return;
  good_since_limit_ = 0;
  ++depth_limit_;
  probing_ = true;
  if (depth_limit_ > in_flight_ || depth_limit_ >= kMaxTasks) {
    VCP_LOG_INFO("{}: no TASK SET FULL for a while: queue depth limit lifted (was {})", name_, depth_limit_ - 1);
    depth_limit_ = 0;
    ramp_every_ = kDepthRampEvery;
    probing_ = false;
  }
}

void Session::retry_later(Task& t, uint64_t delay_ms) {
  ++stats_.retries;
  tx_cancel(t);
  set_state(t, TaskState::Delayed);
  t.deadline_ms = now_ms() + delay_ms;
  ++delayed_;
}

// A task answered by the target completes to the client only when no send still reads from
// the request's buffers: Data-Out not yet handed to the kernel is dropped (the target has no use
// for it), and one the in-flight sendmsg carries holds the completion until that send ends.
void Session::complete(Task& t, int status) {
  if (t.state == TaskState::Completing) return;
  if (t.in_tx_fifo) {
    uint32_t idx = static_cast<uint32_t>(&t - tasks_.get());
    uint32_t prev = UINT32_MAX;
    for (uint32_t i = tx_head_task_; i != UINT32_MAX; prev = i, i = tasks_[i].tx_next) {
      if (i != idx) continue;
      uint32_t nx = tasks_[i].tx_next;
      if (prev == UINT32_MAX) tx_head_task_ = nx;
      else tasks_[prev].tx_next = nx;
      if (tx_tail_task_ == idx) tx_tail_task_ = prev;
      break;
    }
    t.in_tx_fifo = false;
  }
  tx_cancel(t);
  if (t.tx_refs > 0) {
    set_state(t, TaskState::Completing);
    t.held_status = status;
    ++completing_;
    ++stats_.held_completions;
    return;
  }
  finish_complete(t, status);
}

void Session::finish_complete(Task& t, int status) {
  if (t.state == TaskState::Completing) --completing_;
  BlockRequest* req = t.req;
  t.req = nullptr;
  set_state(t, TaskState::Free);
  ++t.gen;
  free_.push_back(static_cast<uint32_t>(&t - tasks_.get()));
  --in_flight_;
  ++completed_;
  req->done(req, status);
}

Session::Task* Session::task_for(uint32_t itt) {
  if (itt >= kNopTag) return nullptr;
  uint32_t idx = itt & (kMaxTasks - 1);
  Task& t = tasks_[idx];
  if (t.state != TaskState::Issued || t.itt != itt) return nullptr;
  return &t;
}

// ---------------------------------------------------------------------------------------------
// Transmit

Session::TxRecord* Session::tx_alloc() {
  // Callers check tx_has_room; login and control PDUs use the reserve.
  TxRecord& r = tx_[(tx_head_ + tx_count_) % kTxRecords];
  ++tx_count_;
  r.hdr_len = 0;
  r.iov = nullptr;
  r.iovcnt = 0;
  r.data_off = r.data_len = 0;
  r.trailer_len = 0;
  r.data_out = false;
  r.owner = UINT32_MAX;
  r.task = UINT32_MAX;
  r.echo = -1;
  return &r;
}

// A record leaves the ring (sent, or dropped unsent): its task may be waiting for it.
void Session::tx_release(TxRecord& r) {
  if (r.echo >= 0) {
    nop_echo_[r.echo].busy = false;
    r.echo = -1;
  }
  if (r.owner == UINT32_MAX) return;
  Task& t = tasks_[r.owner];
  r.owner = UINT32_MAX;
  if (t.tx_refs > 0 && --t.tx_refs == 0 && t.state == TaskState::Completing) finish_complete(t, t.held_status);
}

// Drops the task's Data-Out records that no sendmsg has taken yet (a record dropped whole
// leaves the byte stream intact). Command PDUs stay: each holds a CmdSN the target waits for.
void Session::tx_cancel(Task& t) {
  if (t.tx_refs == 0) return;
  const uint32_t idx = static_cast<uint32_t>(&t - tasks_.get());
  const uint32_t first = std::max<uint32_t>(send_upto_, tx_head_sent_ > 0 ? 1 : 0);
  for (uint32_t k = first; k < tx_count_ && t.tx_refs > 0; ++k) {
    TxRecord& r = tx_[(tx_head_ + k) % kTxRecords];
    if (r.owner != idx || !r.data_out) continue;
    r.hdr_len = 0;
    r.iov = nullptr;
    r.iovcnt = 0;
    r.data_len = 0;
    r.trailer_len = 0;
    r.owner = UINT32_MAX;
    --t.tx_refs;
  }
}

void Session::emit_header(TxRecord& r, const is::Pdu& pdu) {
  note_outgoing(pdu);
  is::encode_bhs(pdu, std::span<uint8_t, is::kBhsSize>(r.hdr.data(), is::kBhsSize));
  r.hdr_len = is::kBhsSize;
  if (digests_.header) {
    is::store_digest(std::span<uint8_t, 4>(&r.hdr[is::kBhsSize], 4), is::crc32c({r.hdr.data(), is::kBhsSize}));
    r.hdr_len += is::kDigestSize;
  }
}

void Session::emit_data(TxRecord& r, const iovec* iov, uint32_t iovcnt, uint32_t off, uint32_t len) {
  r.iov = iov;
  r.iovcnt = iovcnt;
  r.data_off = off;
  r.data_len = len;
  uint32_t pad = is::pad_length(len);
  std::fill(r.trailer.begin(), r.trailer.begin() + pad, uint8_t{0});
  r.trailer_len = static_cast<uint8_t>(pad);
  if (digests_.data && len > 0) {
    is::Crc32c crc;
    crc_range(crc, iov, iovcnt, off, len);
    if (pad) crc.update({r.trailer.data(), pad});
    is::store_digest(std::span<uint8_t, 4>(&r.trailer[pad], 4), crc.value());
    r.trailer_len = static_cast<uint8_t>(pad + is::kDigestSize);
  }
}

void Session::tx_fifo_push(Task& t) {
  if (t.in_tx_fifo) return;
  uint32_t idx = static_cast<uint32_t>(&t - tasks_.get());
  t.in_tx_fifo = true;
  t.tx_next = UINT32_MAX;
  if (tx_tail_task_ == UINT32_MAX) {
    tx_head_task_ = tx_tail_task_ = idx;
  } else {
    tasks_[tx_tail_task_].tx_next = idx;
    tx_tail_task_ = idx;
  }
}

void Session::issue_ready() {
  // After an Async logout request no new command goes out on this connection (RFC 7143 §11.9.1).
  if (state_ != State::FullFeature || tmf_ == Tmf::LunReset || async_logout_) {
    window_closed_since_ms_ = 0;  // those states have deadlines of their own
    return;
  }
  const uint64_t now = ready_head_ != UINT32_MAX ? now_ms() : 0;
  const is::Lun lun = *is::Lun::from_number(cfg_.lun);
  (void)lun;
  while (ready_head_ != UINT32_MAX && window_.is_open() && (depth_limit_ == 0 || issued_ < depth_limit_)) {
    Task& t = tasks_[ready_head_];
    ready_head_ = t.next;
    if (ready_head_ == UINT32_MAX) ready_tail_ = UINT32_MAX;
    t.next = UINT32_MAX;
    uint32_t idx = static_cast<uint32_t>(&t - tasks_.get());
    ++t.gen;
    t.itt = (uint32_t{t.gen} << kTaskIndexBits) | idx;
    t.cmd_sn = window_.take();
    set_state(t, TaskState::Issued);
    t.deadline_ms = now + cfg_.timeout_ms;
    t.seq = ++issue_seq_;
    t.moved_ms = now;
    t.tx_mark = 0;
    t.ahead = t.checked_ahead = t.seq;
    t.older = issued_ - 1;  // every other Issued command went before it
    t.rx_done = 0;
    t.next_data_sn = 0;
    t.r2t_count = 0;
    t.cmd_pending = true;
    t.imm_len = 0;
    t.tx_off = t.tx_end = 0;
    t.tx_ttt = is::kReservedTag;
    t.tx_data_sn = 0;
    if (t.write) {
      const uint32_t seg = params_.max_send_data_segment_length;
      const uint32_t first = params_.first_burst_length;
      t.imm_len = params_.immediate_data ? std::min({t.xfer, first, seg}) : 0;
      t.tx_off = t.imm_len;
      t.tx_end = params_.initial_r2t ? t.imm_len : std::min(t.xfer, first);
    }
    tx_fifo_push(t);
  }
  // Commands waiting for a window the target keeps closed: on_timer() gives up on the
  // connection after the command timeout.
  if (ready_head_ == UINT32_MAX || window_.is_open()) {
    window_closed_since_ms_ = 0;
  } else if (window_closed_since_ms_ == 0) {
    window_closed_since_ms_ = now;
  }
}

bool Session::emit_task_pdu(Task& t) {
  TxRecord& r = *tx_alloc();
  r.owner = static_cast<uint32_t>(&t - tasks_.get());
  r.task = r.owner;
  r.task_seq = t.seq;
  if (t.cmd_pending) {
    is::ScsiCommandPdu c;
    c.immediate = false;
    c.final = t.tx_end == t.imm_len;  // no unsolicited Data-Out follows
    c.read = t.read;
    c.write = t.write;
    c.attr = is::TaskAttr::Simple;
    c.data_segment_length = t.imm_len;
    c.lun = *is::Lun::from_number(cfg_.lun);
    c.itt = t.itt;
    c.expected_data_transfer_length = t.xfer;
    c.cmd_sn = t.cmd_sn;
    c.exp_stat_sn = exp_stat_sn_;
    c.cdb = t.cdb;
    emit_header(r, c);
    emit_data(r, t.iov, t.iovcnt, 0, t.imm_len);
    t.cmd_pending = false;
  } else {
    const uint32_t len = std::min(t.tx_end - t.tx_off, params_.max_send_data_segment_length);
    is::DataOutPdu d;
    d.final = t.tx_off + len == t.tx_end;
    d.data_segment_length = len;
    d.lun = *is::Lun::from_number(cfg_.lun);
    d.itt = t.itt;
    d.ttt = t.tx_ttt;
    d.exp_stat_sn = exp_stat_sn_;
    d.data_sn = t.tx_data_sn++;
    d.buffer_offset = t.tx_off;
    emit_header(r, d);
    emit_data(r, t.iov, t.iovcnt, t.tx_off, len);
    r.data_out = true;
    t.tx_off += len;
  }
  if (r.data_len > 0) ++t.tx_refs;
  else r.owner = UINT32_MAX;
  if (t.tx_off == t.tx_end && t.r2t_count > 0) {
    const auto& n = t.r2t[0];
    t.tx_off = n[0];
    t.tx_end = n[0] + n[1];
    t.tx_ttt = n[2];
    t.tx_data_sn = 0;
    std::move(t.r2t.begin() + 1, t.r2t.begin() + t.r2t_count, t.r2t.begin());
    --t.r2t_count;
  }
  return t.cmd_pending || t.tx_off < t.tx_end;
}

void Session::pump() {
  while (overflow_count_ > 0 && !free_.empty()) {
    BlockRequest* r = overflow_[overflow_head_];
    overflow_head_ = (overflow_head_ + 1) % kOverflow;
    --overflow_count_;
    start_request(r);
  }
  issue_ready();
  if (async_logout_) maybe_answer_logout_request();
  // Round robin over tasks with data to send, one PDU each, while the ring has room.
  while (tx_head_task_ != UINT32_MAX && tx_has_room(kTxReserve) && state_ == State::FullFeature) {
    Task& t = tasks_[tx_head_task_];
    bool more = emit_task_pdu(t);
    tx_head_task_ = t.tx_next;
    if (tx_head_task_ == UINT32_MAX) tx_tail_task_ = UINT32_MAX;
    t.in_tx_fifo = false;
    t.tx_next = UINT32_MAX;
    if (more) tx_fifo_push(t);
  }
  arm_send();
}

void Session::arm_send() {
  if (send_in_flight_ || tx_count_ == 0 || !sock_ || tearing_down_) return;
  if (state_ != State::LoggingIn && state_ != State::FullFeature && state_ != State::LoggingOut) return;
  IovBuilder b{send_iov_.get(), kMaxIov};
  b.skip = tx_head_sent_;
  uint32_t covered = tx_count_;
  for (uint32_t k = 0; k < tx_count_; ++k) {
    const TxRecord& r = tx_[(tx_head_ + k) % kTxRecords];
    if (!b.add(r.hdr.data(), r.hdr_len) || !b.add_range(r.iov, r.iovcnt, r.data_off, r.data_len) ||
        !b.add(r.trailer.data(), r.trailer_len)) {
      covered = k + 1;  // (partly) in this sendmsg: the kernel reads its buffers from now on
      break;
    }
  }
  if (b.n == 0) return;
  send_upto_ = covered;
  queue_msg(static_cast<int>(Op::Send), send_msg_, send_iov_.get(), b.n);
  send_in_flight_ = true;
  ++stats_.sends;
}

void Session::queue_msg(int op, msghdr& msg, iovec* iov, uint32_t n) {
  msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  io_uring_sqe* s = sqe();
  if (static_cast<Op>(op) == Op::Send) {
    io_uring_prep_sendmsg(s, sock_.get(), &msg, MSG_NOSIGNAL);
  } else {
    // MSG_WAITALL: the kernel keeps receiving until the data segment is complete. Not with a
    // low-water mark (set_rcvlowat): a partial receive would leave less to come than the mark.
    io_uring_prep_recvmsg(s, sock_.get(), &msg, rcvlowat_ > 1 ? 0 : MSG_WAITALL);
  }
  io_uring_sqe_set_data64(s, user_data(static_cast<Op>(op), conn_gen_));
  ++ops_in_flight_;
}

void Session::on_sent(int res) {
  send_in_flight_ = false;
  send_upto_ = 0;
  if (res < 0) {
    connection_failed("send: " + errno_str(res));
    return;
  }
  uint64_t n = static_cast<uint64_t>(res);
  uint64_t end = tx_bytes_ - tx_head_sent_;  // the connection's byte count where the head record began
  tx_bytes_ += n;
  const uint64_t now = now_ms();
  // A command whose PDU the kernel took (some or all of it) moved: its timeout is put off.
  auto moved = [&](const TxRecord& r, uint64_t mark) {
    if (r.task == UINT32_MAX || r.total() == 0) return;
    Task& t = tasks_[r.task];
    if (t.seq != r.task_seq || t.state != TaskState::Issued) return;
    output_moved(t, now);
    t.tx_mark = mark;
  };
  // Pops every record sent whole (and dropped ones, of length 0, on the way).
  while (tx_count_ > 0) {
    TxRecord& r = tx_[tx_head_];
    uint64_t rem = r.total() - tx_head_sent_;
    end += r.total();
    if (rem > n) {
      tx_head_sent_ += n;
      moved(r, tx_bytes_);
      break;
    }
    moved(r, end);
    n -= rem;
    tx_head_ = (tx_head_ + 1) % kTxRecords;
    --tx_count_;
    tx_head_sent_ = 0;
    tx_release(r);
  }
  // Held completions: what this send did not take is no longer the kernel's; drop it.
  for (uint32_t i = 0; completing_ > 0 && i < kMaxTasks; ++i) {
    Task& t = tasks_[i];
    if (t.state != TaskState::Completing) continue;
    tx_cancel(t);
    if (t.tx_refs == 0) finish_complete(t, t.held_status);
  }
  pump();
}

bool Session::send_nop_out(uint32_t itt, uint32_t ttt, std::span<const uint8_t> ping) {
  if (!tx_has_room(1) || state_ != State::FullFeature) return false;
  // Ping data (at most our MaxRecvDataSegmentLength: the PDU parser saw to it) is echoed from a
  // slot of its own. All slots busy: a target pinging faster than it takes our answers gets no
  // answer to this one.
  EchoSlot* slot = nullptr;
  if (!ping.empty()) {
    for (EchoSlot& e : nop_echo_)
      if (!e.busy) {
        slot = &e;
        break;
      }
    if (!slot) return false;
    slot->data.assign(ping.begin(), ping.end());
    slot->iov = {slot->data.data(), slot->data.size()};
    slot->busy = true;
  }
  const size_t len = ping.size();
  is::NopOutPdu n;
  n.immediate = true;
  n.data_segment_length = static_cast<uint32_t>(len);
  n.lun = *is::Lun::from_number(cfg_.lun);
  n.itt = itt;
  n.ttt = ttt;
  n.cmd_sn = window_.peek();
  n.exp_stat_sn = exp_stat_sn_;
  TxRecord& r = *tx_alloc();
  emit_header(r, n);
  if (slot) {
    r.echo = static_cast<int8_t>(slot - nop_echo_.data());
    emit_data(r, &slot->iov, 1, 0, static_cast<uint32_t>(len));
  }
  arm_send();
  return true;
}

// An immediate Logout closing the session; returns its ITT.
uint32_t Session::send_logout_request() {
  is::LogoutRequestPdu l;
  l.immediate = true;
  l.reason = is::LogoutReason::CloseSession;
  l.itt = kLogoutTag | (++special_seq_ & 0xffffff);
  l.cid = 0;
  l.cmd_sn = window_.peek();
  l.exp_stat_sn = exp_stat_sn_;
  TxRecord& r = *tx_alloc();
  emit_header(r, l);
  arm_send();
  return l.itt;
}

void Session::send_tmf(is::TmfFunction fn, Task* t) {
  if (!tx_has_room(1)) return;
  is::TaskMgmtRequestPdu m;
  m.immediate = true;
  m.function = fn;
  m.lun = *is::Lun::from_number(cfg_.lun);
  m.itt = tmf_itt_ = kTmfTag | (++special_seq_ & 0xffffff);
  m.referenced_task_tag = t ? t->itt : is::kReservedTag;
  m.cmd_sn = window_.peek();
  m.exp_stat_sn = exp_stat_sn_;
  m.ref_cmd_sn = t ? t->cmd_sn : window_.peek();
  m.exp_data_sn = 0;
  tmf_task_itt_ = t ? t->itt : is::kReservedTag;
  tmf_deadline_ms_ = now_ms() + cfg_.timeout_ms;
  TxRecord& r = *tx_alloc();
  emit_header(r, m);
  arm_send();
}

// ---------------------------------------------------------------------------------------------
// Receive

void Session::rx_reset() {
  rx_phase_ = RxPhase::Stage;
  rx_got_ = 0;
  stage_begin_ = stage_end_ = 0;
  rx_since_large_ = UINT32_MAX;
  pred_bytes_ = pred_dsl_ = pred_streak_ = 0;
  pred_off_ = false;
}

void Session::arm_recv() {
  if (recv_in_flight_ || !sock_ || tearing_down_) return;
  if (state_ != State::LoggingIn && state_ != State::FullFeature && state_ != State::LoggingOut) return;
  if (rx_phase_ == RxPhase::Data) {
    set_rcvlowat(rx_total_ - rx_got_);
    IovBuilder b{recv_iov_.get(), kMaxIov + 2};
    b.skip = rx_got_;
    b.add_range(rx_iov_, rx_iovcnt_, rx_off_, rx_dsl_);
    b.add(rx_trailer_.data(), rx_total_ - rx_dsl_);
    queue_msg(static_cast<int>(Op::Recv), recv_msg_, recv_iov_.get(), b.n);
    recv_in_flight_ = true;
    return;
  }
  // What is left unparsed is the start of one PDU (at most kStageBytes): move it to the front.
  const uint32_t held = stage_end_ - stage_begin_;
  if (stage_begin_ > 0) {
    if (held > 0) std::memmove(stage_.get(), stage_.get() + stage_begin_, held);
    stage_begin_ = 0;
    stage_end_ = held;
  }
  set_rcvlowat(predicted_pdu_bytes(held));
  uint32_t want = kStageBytes - stage_end_;
  // Large Data-In lately: read up to the next BHS only, so its segment goes straight to the
  // request's buffers instead of through the staging buffer.
  if (rx_since_large_ < 4 && held < rx_hdr_len_) want = rx_hdr_len_ - held;
  io_uring_sqe* s = sqe();
  io_uring_prep_recv(s, sock_.get(), stage_.get() + stage_end_, want, 0);
  io_uring_sqe_set_data64(s, user_data(Op::Recv, conn_gen_));
  ++ops_in_flight_;
  recv_in_flight_ = true;
}

// A large data segment arrives in several pieces (64 KiB TCP segments on loopback), and each one
// that arrives while the receive waits wakes this thread (for io_uring to take it and wait again,
// with MSG_WAITALL); docs/iscsi.md has what the mark saves. With SO_RCVLOWAT at what is left of the
// segment, TCP signals the socket once it is all in (or when its receive window is nearly full,
// so a mark above what the window can hold cannot stall it). The mark must never exceed what is
// still to come, so these receives go without MSG_WAITALL: one that finds bytes queued takes
// them and completes (short), the next is armed with a mark lowered to the rest, and a receive
// only waits when it found nothing, i.e. with the whole rest still to come. Back to 1 before a
// receive of headers, which must see any byte. Below kLowatMin it is not worth the syscalls.
void Session::set_rcvlowat(uint32_t bytes) {
  const int want = bytes >= kLowatMin ? static_cast<int>(std::min<uint32_t>(bytes, INT32_MAX)) : 1;
  if (want == rcvlowat_ || !rcvlowat_works_) return;
  if (::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want) == 0) {
    rcvlowat_ = want;
  } else {
    rcvlowat_works_ = false;  // receives still complete; they only wake more often
    VCP_LOG_WARN("{}: SO_RCVLOWAT refused ({}): large reads wake per TCP segment", name_, errno_str(errno));
  }
}

// The mark for the receive of the next header: a whole PDU of the size the target has been
// sending, or 1 (any byte). Only with nothing of the next PDU staged, in full feature phase with
// no NOP or task management answer awaited, and after kPredictAfter Data-In PDUs in a row of one
// size; every PDU sent that could bring back anything else breaks the row first (note_outgoing).
// A target that sends something smaller anyway (a check condition, a NOP-In of its own) leaves
// the mark unmet: the session timer notices (check_lowat_stall) within two ticks, lowers it, and
// predicts no more on this connection.
uint32_t Session::predicted_pdu_bytes(uint32_t held) const {
  if (pred_off_ || held > 0 || pred_streak_ < kPredictAfter || pred_bytes_ < kLowatMin) return 1;
  if (state_ != State::FullFeature || nop_outstanding_ || tmf_ != Tmf::None) return 1;
  return pred_bytes_;
}

void Session::note_outgoing(const is::Pdu& pdu) {
  if (pred_streak_ == 0) return;
  if (const auto* c = std::get_if<is::ScsiCommandPdu>(&pdu); c && c->read && !c->write && pred_dsl_ > 0) {
    // A read keeps the row going when none of its Data-In can be smaller than the predicted
    // ones: a whole number of them, and where the target must split it (at our
    // MaxRecvDataSegmentLength or MaxBurstLength), no piece smaller either.
    const uint32_t x = c->expected_data_transfer_length;
    const uint32_t most = std::min(params_.max_recv_data_segment_length, params_.max_burst_length);
    const uint32_t last = most > 0 ? x % most : 0;
    if (x >= pred_dsl_ && x % pred_dsl_ == 0 && (x <= most || last == 0 || last >= pred_dsl_)) return;
  }
  pred_streak_ = 0;
  if (rx_phase_ == RxPhase::Stage && rcvlowat_ > 1) set_rcvlowat(1);  // before the PDU goes out
}

void Session::check_lowat_stall(uint64_t now) {
  if (rcvlowat_ <= 1 || rx_phase_ != RxPhase::Stage || !recv_in_flight_ || !sock_) return;
  if (now - last_rx_ms_ < kTickMs) return;
  int queued = 0;
  if (::ioctl(sock_.get(), FIONREAD, &queued) != 0 || queued <= 0 || queued >= rcvlowat_) return;
  // Bytes wait below the mark and none came for a tick. The next PDU starts them (nothing of
  // it is staged): its header says whether it is all here, smaller than the mark. If it is
  // not, the rest is late, not missing: a segment lost on the way is sent again by TCP after
  // 200 ms or more, and a slow link is slow; the mark is right and stays.
  is::Bhs bhs;
  const ssize_t got = ::recv(sock_.get(), bhs.bytes.data(), bhs.bytes.size(), MSG_PEEK | MSG_DONTWAIT);
  if (got < static_cast<ssize_t>(is::kBhsSize) || is::pdu_length(bhs, digests_) > static_cast<uint64_t>(queued)) {
    ++stats_.lowat_late;
    return;
  }
  // The target sent a smaller PDU.
  ++stats_.lowat_misses;
  VCP_LOG_WARN("{}: the target sent a PDU smaller than the {} bytes of its last {} Data-In ({} bytes waited {} ms); "
               "no more whole-PDU receives on this connection",
               name_, rcvlowat_, pred_streak_, queued, now - last_rx_ms_);
  pred_off_ = true;
  pred_streak_ = 0;
  set_rcvlowat(1);  // the kernel signals the socket at once if the bytes queued now suffice
}

void Session::on_received(int res) {
  recv_in_flight_ = false;
  if (res == 0) {
    connection_failed("the target closed the connection");
    return;
  }
  if (res < 0) {
    connection_failed("recv: " + errno_str(res));
    return;
  }
  last_rx_ms_ = now_ms();  // the target is alive: keep-alive counts from here
  ++stats_.receives;
  const uint32_t gen = conn_gen_;
  if (rx_phase_ == RxPhase::Data) {
    rx_got_ += static_cast<uint32_t>(res);
    if (rx_got_ == rx_total_) rx_data_done();
  } else {
    stage_end_ += static_cast<uint32_t>(res);
  }
  if (gen == conn_gen_ && !tearing_down_) rx_parse_staged();
  if (gen == conn_gen_) arm_recv();
}

// Handles every complete PDU in the staging buffer; stops at a partial one (kept for the next
// receive) or when a data segment continues beyond what is staged (Data phase).
void Session::rx_parse_staged() {
  const uint32_t gen = conn_gen_;
  while (rx_phase_ == RxPhase::Stage && gen == conn_gen_ && !tearing_down_ && sock_) {
    const uint32_t hdr_len = rx_hdr_len_;  // the PDU that ends login may change it
    uint32_t held = stage_end_ - stage_begin_;
    if (held < hdr_len) break;
    if (!rx_header(stage_.get() + stage_begin_)) return;
    if (rx_dsl_ == 0) {
      stage_begin_ += hdr_len;
      rx_data_ = nullptr;
      process_pdu();
      continue;
    }
    if (!rx_into_task_) {
      if (held - hdr_len >= rx_total_) {
        // Staged whole: handled in place.
        stage_begin_ += hdr_len;
        rx_data_ = stage_.get() + stage_begin_;
        stage_iov_ = {stage_.get() + stage_begin_, rx_dsl_};
        rx_iov_ = &stage_iov_;
        rx_iovcnt_ = 1;
        rx_off_ = 0;
        std::memcpy(rx_trailer_.data(), rx_data_ + rx_dsl_, rx_total_ - rx_dsl_);
        stage_begin_ += rx_total_;
        rx_data_done();
        continue;
      }
      if (uint64_t{hdr_len} + rx_total_ <= kStageBytes) break;  // fits: wait for the rest
      rx_data_ = scratch_.data();  // too large for the staging buffer: gathered in scratch
    }
    stage_begin_ += hdr_len;
    held -= hdr_len;
    rx_got_ = 0;
    rx_take_staged(std::min(held, rx_total_));
    if (rx_got_ == rx_total_) {
      rx_data_done();
      continue;
    }
    rx_phase_ = RxPhase::Data;  // the staging buffer is empty now; the rest goes straight in
  }
  if (stage_begin_ == stage_end_) stage_begin_ = stage_end_ = 0;
}

// Copies `len` staged bytes of the current data segment (then its pad and digest) to where
// the segment goes.
void Session::rx_take_staged(uint32_t len) {
  const uint8_t* src = stage_.get() + stage_begin_;
  stage_begin_ += len;
  if (rx_got_ < rx_dsl_) {
    uint32_t n = std::min(len, rx_dsl_ - rx_got_);
    uint64_t off = uint64_t{rx_off_} + rx_got_;
    uint32_t left = n;
    const uint8_t* from = src;
    for (uint32_t i = 0; i < rx_iovcnt_ && left > 0; ++i) {
      if (off >= rx_iov_[i].iov_len) {
        off -= rx_iov_[i].iov_len;
        continue;
      }
      const auto take = static_cast<uint32_t>(std::min<uint64_t>(rx_iov_[i].iov_len - off, left));
      std::memcpy(static_cast<uint8_t*>(rx_iov_[i].iov_base) + off, from, take);
      from += take;
      left -= take;
      off = 0;
    }
    rx_got_ += n;
    src += n;
    len -= n;
  }
  if (len > 0) {
    std::memcpy(rx_trailer_.data() + (rx_got_ - rx_dsl_), src, len);
    rx_got_ += len;
  }
}

// Checks and decodes the BHS at `hdr` and picks where its data segment goes; false when the
// connection failed over it.
bool Session::rx_header(const uint8_t* hdr) {
  if (digests_.header) {
    uint32_t want = is::load_digest(std::span<const uint8_t, 4>(hdr + is::kBhsSize, 4));
    if (is::crc32c({hdr, is::kBhsSize}) != want) {
      connection_failed("header digest mismatch");
      return false;
    }
  }
  is::DecodeOptions opts;
  opts.direction = is::Direction::FromTarget;
  opts.max_data_segment_length = static_cast<uint32_t>(scratch_.size() - 8);
  is::PduError e = is::decode_bhs({hdr, is::kBhsSize}, rx_pdu_, opts);
  if (e != is::PduError::Ok) {
    connection_failed("malformed PDU from the target: " + std::string(is::to_string(e)));
    return false;
  }
  rx_dsl_ = is::data_segment_length_of(rx_pdu_);
  rx_into_task_ = false;
  auto* d = std::get_if<is::DataInPdu>(&rx_pdu_);
  if (d) rx_since_large_ = rx_dsl_ > kCopyMax ? 0 : UINT32_MAX;
  else if (rx_since_large_ != UINT32_MAX) ++rx_since_large_;
  if (rx_dsl_ > 0)
    rx_total_ = static_cast<uint32_t>(is::padded_length(rx_dsl_)) + (digests_.data ? is::kDigestSize : 0);
  if (d && rx_dsl_ > 0) {
    const uint32_t whole = rx_hdr_len_ + rx_total_;
    if (whole == pred_bytes_) {
      if (pred_streak_ < kPredictAfter) ++pred_streak_;
    } else {
      pred_bytes_ = whole;
      pred_dsl_ = rx_dsl_;
      pred_streak_ = 1;
    }
  } else {
    pred_streak_ = 0;  // anything else (a SCSI Response, an R2T, a NOP-In): not a row of Data-In
  }
  if (rx_dsl_ == 0) return true;
  rx_iov_ = &scratch_iov_;
  rx_iovcnt_ = 1;
  rx_off_ = 0;
  if (d) {
    if (Task* t = task_for(d->itt)) {
      if (!t->read || d->buffer_offset != t->rx_done || uint64_t{d->buffer_offset} + rx_dsl_ > t->xfer) {
        connection_failed("Data-In out of order or beyond the transfer (offset " + std::to_string(d->buffer_offset) +
                          ", length " + std::to_string(rx_dsl_) + ")");
        return false;
      }
      // Zero copy: the data segment lands in the request's own buffers.
      rx_iov_ = t->iov;
      rx_iovcnt_ = t->iovcnt;
      rx_off_ = d->buffer_offset;
      rx_into_task_ = true;
    }
  }
  return true;
}

void Session::rx_data_done() {
  rx_phase_ = RxPhase::Stage;
  rx_got_ = 0;
  const uint32_t pad = is::pad_length(rx_dsl_);
  if (digests_.data) {
    is::Crc32c crc;
    crc_range(crc, rx_iov_, rx_iovcnt_, rx_off_, rx_dsl_);
    if (pad) crc.update({rx_trailer_.data(), pad});
    uint32_t want = is::load_digest(std::span<const uint8_t, 4>(&rx_trailer_[pad], 4));
    if (crc.value() != want) {
      // ERL 0: a digest error costs the connection; the command is reissued on the next one.
      connection_failed("data digest mismatch");
      return;
    }
  }
  process_pdu();
}

void Session::update_sn(uint32_t stat_sn, bool advances, uint32_t exp_cmd_sn, uint32_t max_cmd_sn) {
  if (advances && is::serial_ge(stat_sn, exp_stat_sn_)) exp_stat_sn_ = stat_sn + 1;
  window_.update(exp_cmd_sn, max_cmd_sn);
}

void Session::process_pdu() {
  ++stats_.pdus_received;
  std::span<const uint8_t> data;
  if (!rx_into_task_ && rx_dsl_ > 0) data = {rx_data_, rx_dsl_};
  if (auto* lr = std::get_if<is::LoginResponsePdu>(&rx_pdu_)) {
    if (state_ != State::LoggingIn || !login_) {
      connection_failed("Login Response outside login");
      return;
    }
    on_login_response(*lr, data);
    return;
  }
  if (state_ == State::LoggingIn) {
    connection_failed("unexpected " + std::string(is::to_string(is::opcode_of(rx_pdu_))) + " during login");
    return;
  }
  if (auto* d = std::get_if<is::DataInPdu>(&rx_pdu_)) {
    window_.update(d->exp_cmd_sn, d->max_cmd_sn);
    Task* t = task_for(d->itt);
    if (!t) return;  // a command we gave up on (aborted, reissued): its data is dropped
    t->moved_ms = last_rx_ms_;
    if (rx_into_task_) t->rx_done += rx_dsl_;
    if (d->has_status) {
      update_sn(d->stat_sn, true, d->exp_cmd_sn, d->max_cmd_sn);
      on_scsi_status(*t, 0, d->status, d->underflow, d->overflow, d->residual_count, {});
    }
    return;
  }
  if (auto* r = std::get_if<is::ScsiResponsePdu>(&rx_pdu_)) {
    update_sn(r->stat_sn, true, r->exp_cmd_sn, r->max_cmd_sn);
    if (Task* t = task_for(r->itt))
      on_scsi_status(*t, static_cast<uint8_t>(r->response), r->status, r->underflow, r->overflow, r->residual_count,
                     data);
    return;
  }
  if (auto* r = std::get_if<is::R2TPdu>(&rx_pdu_)) {
    window_.update(r->exp_cmd_sn, r->max_cmd_sn);
    on_r2t(*r);
    return;
  }
  if (auto* n = std::get_if<is::NopInPdu>(&rx_pdu_)) {
    update_sn(n->stat_sn, n->itt != is::kReservedTag, n->exp_cmd_sn, n->max_cmd_sn);
    // The target pings us: echo its TTT and data (RFC 7143 §11.18).
    if (n->ttt != is::kReservedTag && send_nop_out(is::kReservedTag, n->ttt, data)) ++stats_.nop_ins_answered;
    if (nop_outstanding_ && n->itt == nop_itt_) nop_outstanding_ = false;
    return;
  }
  if (auto* m = std::get_if<is::TaskMgmtResponsePdu>(&rx_pdu_)) {
    update_sn(m->stat_sn, true, m->exp_cmd_sn, m->max_cmd_sn);
    on_tmf_response(*m);
    return;
  }
  if (auto* a = std::get_if<is::AsyncMessagePdu>(&rx_pdu_)) {
    update_sn(a->stat_sn, true, a->exp_cmd_sn, a->max_cmd_sn);
    on_async_message(*a, data);
    return;
  }
  if (auto* tr = std::get_if<is::TextResponsePdu>(&rx_pdu_)) {
    update_sn(tr->stat_sn, true, tr->exp_cmd_sn, tr->max_cmd_sn);
    VCP_LOG_INFO("{}: Text Response to our (empty) renegotiation request: {} bytes of keys, ignored", name_,
                 data.size());
    return;
  }
  if (auto* rj = std::get_if<is::RejectPdu>(&rx_pdu_)) {
    update_sn(rj->stat_sn, true, rj->exp_cmd_sn, rj->max_cmd_sn);
    uint32_t itt = data.size() >= is::kBhsSize ? is::wire::load_be32(&data[16]) : is::kReservedTag;
    VCP_LOG_ERROR("{}: the target rejected a PDU (reason 0x{:02x}, ITT 0x{:08x})", name_,
                  static_cast<unsigned>(rj->reason), itt);
    if (Task* t = task_for(itt)) complete(*t, -EIO);
    return;
  }
  if (auto* lo = std::get_if<is::LogoutResponsePdu>(&rx_pdu_)) {
    update_sn(lo->stat_sn, true, lo->exp_cmd_sn, lo->max_cmd_sn);
    if (async_logout_sent_ && lo->itt == async_logout_itt_) {
      // The target has cleaned up the session: what it did not answer is issued again on the
      // next one, after Time2Wait.
      const uint64_t wait = std::min<uint64_t>(uint64_t{lo->time2wait} * 1000, kMaxTime2WaitMs);
      connection_failed("logged out at the target's request");
      reconnect_at_ms_ = now_ms() + wait;
      return;
    }
    logout_done_ = true;
    return;
  }
  VCP_LOG_DEBUG("{}: ignoring {}", name_, is::to_string(is::opcode_of(rx_pdu_)));
}

// Async Messages (RFC 7143 §11.9.1).
void Session::on_async_message(const is::AsyncMessagePdu& a, std::span<const uint8_t> data) {
  switch (a.event) {
    case is::AsyncEvent::ScsiEvent: {
      auto s = parse_response_sense(data);
      VCP_LOG_WARN("{}: asynchronous SCSI event from the target: {}", name_, s ? describe(*s) : "no sense data");
      if (s) note_capacity_change(*s);
      break;
    }
    case is::AsyncEvent::LogoutRequested:
      // Logout within Parameter3 seconds; meanwhile no new commands. Commands already issued
      // get half of that time to finish; whatever is left is issued again after the Logout.
      if (async_logout_) break;
      VCP_LOG_WARN("{}: the target asks us to log out within {} s; {} command(s) outstanding", name_, a.parameter3,
                   in_flight_);
      async_logout_ = true;
      async_logout_at_ms_ = now_ms() + uint64_t{a.parameter3} * 1000 / 2;
      maybe_answer_logout_request();
      break;
    case is::AsyncEvent::ConnectionDropped:
    case is::AsyncEvent::SessionDropped: {
      // Parameter2 is Time2Wait: no new connection before it has passed.
      const uint64_t wait = std::min<uint64_t>(uint64_t{a.parameter2} * 1000, kMaxTime2WaitMs);
      connection_failed(a.event == is::AsyncEvent::ConnectionDropped ? "the target dropped the connection"
                                                                      : "the target dropped all connections");
      reconnect_at_ms_ = now_ms() + wait;
      break;
    }
    case is::AsyncEvent::ParameterNegotiation: {
      // We must answer with a Text Request (which may be empty); we renegotiate nothing.
      VCP_LOG_WARN("{}: the target asks for parameter renegotiation: sending an empty Text Request", name_);
      if (!tx_has_room(1)) break;
      is::TextRequestPdu tq;
      tq.immediate = true;
      tq.final = true;
      tq.itt = kTextTag | (++special_seq_ & 0xffffff);
      tq.cmd_sn = window_.peek();
      tq.exp_stat_sn = exp_stat_sn_;
      TxRecord& r = *tx_alloc();
      emit_header(r, tq);
      arm_send();
      break;
    }
    case is::AsyncEvent::Vendor:
      break;
  }
}

void Session::maybe_answer_logout_request() {
  if (async_logout_sent_ && state_ == State::FullFeature && now_ms() > async_logout_at_ms_) {
    connection_failed("no Logout Response within " + std::to_string(cfg_.timeout_ms) + " ms");
    return;
  }
  if (!async_logout_ || async_logout_sent_ || state_ != State::FullFeature || !tx_has_room(1)) return;
  if (now_ms() < async_logout_at_ms_) {
    for (uint32_t i = 0; i < kMaxTasks; ++i)
      if (tasks_[i].state == TaskState::Issued) return;  // still draining
  }
  async_logout_itt_ = send_logout_request();
  async_logout_sent_ = true;
  async_logout_at_ms_ = now_ms() + cfg_.timeout_ms;  // now: the deadline for the Logout Response
  ++stats_.async_logouts;
}

void Session::on_scsi_status(Task& t, uint8_t response, uint8_t status, bool underflow, bool overflow,
                             uint32_t residual, std::span<const uint8_t> sense_segment) {
  if (response != 0) {
    VCP_LOG_WARN("{}: target failure (iSCSI response 0x{:02x}) for CDB 0x{:02x}", name_, response, t.cdb[0]);
    if (++t.retries <= kMaxRetriesBackoff) {
      retry_later(t, 100);
      return;
    }
    complete(t, -EIO);
    return;
  }
  std::optional<Sense> sense;
  if (status == vcp::scsi::code(vcp::scsi::Status::check_condition)) {
    sense = parse_response_sense(sense_segment);
  }
  Outcome o = classify(status, sense, t.raw ? BlockOp::read : t.req->op);
  if (status == vcp::scsi::code(vcp::scsi::Status::busy) || status == vcp::scsi::code(vcp::scsi::Status::task_set_full)) ++stats_.busy;
  if (status == vcp::scsi::code(vcp::scsi::Status::task_set_full)) on_task_set_full();
  // A target that fails every command (a full LUN, a dying disk) must not flood the log
  // (log::thin, with the count so far). Start-up commands are few: theirs are always logged, but
  // for ILLEGAL REQUEST (an optional page or command the target lacks).
  const bool log_failure = !t.raw && vcp::log::thin(stats_.failed + 1);
  if (sense) {
    if (sense->key == vcp::scsi::code(vcp::scsi::SenseKey::unit_attention)) {
      VCP_LOG_INFO("{}: unit attention: {}", name_, describe(*sense));
      note_capacity_change(*sense);
    } else if (t.req == &idle_poll_req_) {
      // An idle TEST UNIT READY that fails (a LUN not ready, say) would say so every
      // nop_interval; the guest's own commands say it when there are any.
    } else if (t.raw ? sense->key != vcp::scsi::code(vcp::scsi::SenseKey::illegal_request) : log_failure) {
      VCP_LOG_WARN("{}: CDB 0x{:02x}: CHECK CONDITION: {}", name_, t.cdb[0], describe(*sense));
    }
  } else if (status != vcp::scsi::code(vcp::scsi::Status::good)) {
    VCP_LOG_DEBUG("{}: CDB 0x{:02x}: SCSI status 0x{:02x}", name_, t.cdb[0], status);
  }
  switch (o.verdict) {
    case Verdict::RetryNow:
      if (++t.retries <= kMaxRetriesNow) {
        ++stats_.retries;
        ++stats_.retries_now;
        tx_cancel(t);
        ready_push(t);
        return;
      }
      complete(t, -EIO);
      return;
    case Verdict::RetryBackoff:
      if (++t.retries <= kMaxRetriesBackoff) {
        retry_later(t, std::min<uint64_t>(10ull << std::min(t.retries, 7u), 1000));
        return;
      }
      VCP_LOG_ERROR("{}: CDB 0x{:02x} still refused after {} retries", name_, t.cdb[0], t.retries - 1);
      complete(t, -EIO);
      return;
    case Verdict::Done:
      break;
  }
  int err = o.error;
  if (err == 0) {
    if (t.raw) {
      t.req->length = t.read ? t.rx_done : (underflow ? t.xfer - std::min(residual, t.xfer) : t.xfer);
    } else if ((t.req->op == BlockOp::read || t.req->op == BlockOp::write) && (underflow || overflow) &&
               residual != 0) {
      // (UNMAP and WRITE SAME: some targets report their parameter data as residual; harmless.)
      if (log_failure)
        VCP_LOG_ERROR("{}: CDB 0x{:02x}: residual {} bytes ({})", name_, t.cdb[0], residual,
                      underflow ? "underflow" : "overflow");
      err = -EIO;
    } else if (t.read && t.rx_done != t.xfer) {
      if (log_failure) VCP_LOG_ERROR("{}: read returned {} of {} bytes", name_, t.rx_done, t.xfer);
      err = -EIO;
    }
  } else if (err != -EOPNOTSUPP || !t.raw) {
    if (log_failure)
      VCP_LOG_ERROR("{}: {} at byte {} ({} bytes) failed: {} [{} failed so far]", name_, to_string(t.req->op),
                    t.req->offset, t.req->length, errno_str(err), stats_.failed + 1);
  }
  if (err != 0 && !t.raw) ++stats_.failed;
  if (err == 0) ramp_depth();
  complete(t, err);
}

// A unit attention waits at the target for the nexus's next command, and a guest that does no
// I/O sends none: its LUN could grow and it would not learn of it. So a data-path session (one
// with a capacity_changed_fd) with nothing in flight, when the target has been silent for
// nop_interval_ms, sends a TEST UNIT READY of its own instead of a NOP-Out: a CAPACITY DATA HAS
// CHANGED waiting is taken there (and signalled, as for any command), and the answer shows the
// target alive as a NOP-In would. Unanswered, the next tick pings as before (a command is in
// flight). Other unit attentions it takes early are retried as always and mean nothing to a
// virtio-blk guest.
bool Session::poll_when_idle(uint64_t now) {
  if (shape_.capacity_changed_fd < 0 || in_flight_ > 0 || nop_outstanding_ ||
      now - last_rx_ms_ < cfg_.nop_interval_ms)
    return false;
  ++stats_.idle_polls;
  idle_poll_req_ = BlockRequest{};
  idle_poll_req_.done = [](BlockRequest*, int) {};  // what it finds, on_scsi_status() handles
  submit_cdb(&idle_poll_req_, build_test_unit_ready(), false, false);
  return true;
}

// The LUN's size is the backend's (info()), read on the control thread: a session only says
// that it may have changed. A failed write can only be EAGAIN, a counter already near its
// limit, which still reads as "changed".
void Session::note_capacity_change(const Sense& s) {
  using vcp::scsi::Asc;
  if (shape_.capacity_changed_fd < 0 || s.asc != vcp::scsi::asc_of(Asc::capacity_data_changed) ||
      s.ascq != vcp::scsi::ascq_of(Asc::capacity_data_changed))
    return;
  const uint64_t one = 1;
  (void)!::write(shape_.capacity_changed_fd, &one, sizeof one);
}

void Session::on_r2t(const is::R2TPdu& r) {
  Task* t = task_for(r.itt);
  if (!t) return;  // for a command we already gave up on
  t->moved_ms = last_rx_ms_;
  if (!t->write || r.desired_data_transfer_length == 0 ||
      uint64_t{r.buffer_offset} + r.desired_data_transfer_length > t->xfer) {
    connection_failed("R2T outside the command's data (offset " + std::to_string(r.buffer_offset) + ", length " +
                      std::to_string(r.desired_data_transfer_length) + ")");
    return;
  }
  const bool busy = t->cmd_pending || t->tx_off < t->tx_end;
  if (busy) {
    if (t->r2t_count == t->r2t.size()) {
      connection_failed("more outstanding R2Ts than we can hold");
      return;
    }
    t->r2t[t->r2t_count++] = {r.buffer_offset, r.desired_data_transfer_length, r.ttt};
    return;
  }
  t->tx_off = r.buffer_offset;
  t->tx_end = r.buffer_offset + r.desired_data_transfer_length;
  t->tx_ttt = r.ttt;
  t->tx_data_sn = 0;
  tx_fifo_push(*t);
}

void Session::on_tmf_response(const is::TaskMgmtResponsePdu& r) {
  if (r.itt != tmf_itt_ || tmf_ == Tmf::None) return;
  const bool ok = r.response == is::TmfResponse::Complete || r.response == is::TmfResponse::TaskDoesNotExist;
  if (tmf_ == Tmf::AbortTask) {
    if (!ok) {
      VCP_LOG_WARN("{}: ABORT TASK refused (response {}); resetting the LUN", name_, static_cast<int>(r.response));
      tmf_ = Tmf::LunReset;
      ++stats_.lun_resets;
      send_tmf(is::TmfFunction::LogicalUnitReset, nullptr);
      return;
    }
    tmf_ = Tmf::None;
    if (Task* t = task_for(tmf_task_itt_)) {
      if (++t->timeouts > kMaxTimeouts) {
        complete(*t, -EIO);
      } else {
        ++stats_.reissued;
        tx_cancel(*t);
        ready_push(*t);
      }
    }
    return;
  }
  // LUN reset: every command of ours on the LUN is gone; the ones not answered go again.
  if (!ok) {
    connection_failed("LOGICAL UNIT RESET refused");
    return;
  }
  tmf_ = Tmf::None;
  VCP_LOG_INFO("{}: LUN reset done; reissuing outstanding commands", name_);
  requeue_issued();
}

// ---------------------------------------------------------------------------------------------
// Timer: keep-alive, timeouts and their escalation, back-off, reconnect

void Session::on_timer() {
  const uint64_t now = now_ms();
  check_lowat_stall(now);
  if (delayed_ > 0) {
    for (uint32_t i = 0; i < kMaxTasks; ++i) {
      Task& t = tasks_[i];
      if (t.state == TaskState::Delayed && t.deadline_ms <= now) {
        --delayed_;
        ready_push(t);
      }
    }
  }
  switch (state_) {
    case State::FullFeature: {
      maybe_answer_logout_request();
      if (state_ != State::FullFeature) break;
      // The connection's TCP progress, read once a tick while commands or a ping are out.
      const auto tcp = issued_ > 0 || nop_outstanding_ ? sample_progress(now) : std::nullopt;
      if (nop_outstanding_ && !nop_acked_) nop_acked_ = tcp;
      if (nop_outstanding_ && now > nop_deadline_ms_) {
        // Heard from since the ping (any bytes), or the target's TCP took some of the output
        // we had queued (a target waiting for our Data-Out sends nothing; the kernel of a
        // stopped target takes a ping or an ABORT TASK, which is why only queued output
        // counts, base/tcp_progress.hpp): the path is alive, the answer is
        // behind what the target sends or our ping behind what we send (a slow or saturated
        // link). The ping fails only after nop_timeout with neither, as open-iscsi (which
        // counts what it receives) and our target judge it; commands that do not move have
        // their own timeout.
        const auto& acked = tcp;
        const bool took = acked && nop_acked_ && took_queued_output(*nop_acked_, *acked);
        if (heard_ms() > nop_deadline_ms_ - nop_timeout_ms() || took) {
          nop_deadline_ms_ = (took ? now : heard_ms()) + nop_timeout_ms();
          nop_acked_ = acked;
        } else {
          connection_failed("no answer to NOP-Out for " + std::to_string(nop_timeout_ms()) + " ms", -EIO,
                            Cause::Unanswered);
          break;
        }
      }
      // A target that lets the CmdSN window close and keeps it closed (MaxCmdSN no longer
      // moving) would hold the commands waiting for it forever: none of them can be aborted,
      // never having been sent. Reinstatement starts a fresh window (and reissues them).
      if (window_closed_since_ms_ && now - window_closed_since_ms_ > cfg_.timeout_ms && !window_.is_open() &&
          ready_head_ != UINT32_MAX) {
        uint32_t waiting = 0;
        for (uint32_t i = ready_head_; i != UINT32_MAX; i = tasks_[i].next) ++waiting;
        connection_failed("CmdSN window closed for " + std::to_string(now - window_closed_since_ms_) + " ms (MaxCmdSN " +
                          std::to_string(window_.max_cmd_sn()) + ") with " + std::to_string(waiting) +
                          " commands waiting for it");
        break;
      }
      if (!poll_when_idle(now) && !nop_outstanding_ && now - heard_ms() >= cfg_.nop_interval_ms) {
        nop_itt_ = kNopTag | (++special_seq_ & 0xffffff);
        nop_outstanding_ = true;
        nop_deadline_ms_ = now + nop_timeout_ms();
        nop_acked_.reset();  // the mark is taken at the next tick, with the ping itself taken
        ++stats_.nops_sent;
        send_nop_out(nop_itt_, is::kReservedTag, {});
      }
      if (tmf_ != Tmf::None && now > tmf_deadline_ms_) {
        if (tmf_ == Tmf::AbortTask) {
          VCP_LOG_WARN("{}: ABORT TASK unanswered; resetting the LUN", name_);
          tmf_ = Tmf::LunReset;
          ++stats_.lun_resets;
          send_tmf(is::TmfFunction::LogicalUnitReset, nullptr);
        } else {
          connection_failed("LOGICAL UNIT RESET unanswered", -EIO, Cause::Unanswered);
          break;
        }
      }
      if (tmf_ == Tmf::None) {
        for (uint32_t i = 0; i < kMaxTasks; ++i) {
          Task& t = tasks_[i];
          if (t.state != TaskState::Issued || t.deadline_ms > now) continue;
          // On a slow link a command waits behind the data of others: as long as it, or one
          // its answer may wait behind (issued before the last of its output was on its way),
          // moves, it gets another timeout from then, as open-iscsi puts off its timeouts for
          // the progress of a task or of an older one. One the target sits on while it
          // answers those sent later still runs out, once the ones before it are answered.
          const uint64_t last = last_moved(t, now);
          if (last + cfg_.timeout_ms > now) {
            t.deadline_ms = last + cfg_.timeout_ms;
            ++stats_.timeouts_extended;
            continue;
          }
          VCP_LOG_WARN("{}: CDB 0x{:02x} (ITT 0x{:x}) unanswered, and nothing of it or of what it waits behind "
                       "moving for {} ms; ABORT TASK",
                       name_, t.cdb[0], t.itt, cfg_.timeout_ms);
          tmf_ = Tmf::AbortTask;
          ++stats_.aborts;
          send_tmf(is::TmfFunction::AbortTask, &t);
          break;
        }
      }
      break;
    }
    case State::Connecting:
    case State::LoggingIn:
      if (state_ == State::Connecting && !resolving_ && now > addr_deadline_ms_ && now <= login_deadline_ms_ &&
          try_next_address("no answer within " + std::to_string(addr_wait_ms_) + " ms")) {
        break;
      }
      if (now > login_deadline_ms_) {
        const std::string within = fmt::format(" within {:g} s", cfg_.login_timeout_ms / 1000.0);
        connection_failed(resolving_ ? "cannot resolve '" + host_ + "': no answer from the resolver" + within
                                     : "no login to " + where() + within,
                          -ETIMEDOUT);
      }
      break;
    case State::Down:
      if (down_since_ms_ && !recovery_expired_ && now - down_since_ms_ > cfg_.recovery_timeout_ms) {
        VCP_LOG_ERROR("{}: no session for {} s: failing {} outstanding request(s)", name_,
                      cfg_.recovery_timeout_ms / 1000, in_flight_);
        recovery_expired_ = true;
        fail_all(-EIO);
      }
      break;
    case State::LoggingOut:
    case State::Failed:
      break;
  }
  maybe_reconnect();
}

std::optional<TcpProgress> Session::sample_progress(uint64_t now) {
  if (!sock_) return std::nullopt;
  const auto p = tcp_progress(sock_.get());
  if (!p) return std::nullopt;
  if (p->received > rx_kernel_bytes_) {
    // Bytes from the target, though no read has taken them yet (the rest of a long data
    // segment arriving at the pace of a slow link): the target is alive, and so is the
    // command whose data they are.
    rx_kernel_bytes_ = p->received;
    rx_kernel_ms_ = now;
    if (rx_phase_ == RxPhase::Data && rx_into_task_)
      if (const auto* d = std::get_if<is::DataInPdu>(&rx_pdu_))
        if (Task* t = task_for(d->itt)) t->moved_ms = now;
  }
  // The kernel's queue passed on (the target acknowledged) bytes it held at the last tick:
  // the commands whose PDUs were among them are moving, at the link's pace. (Bytes handed to
  // it since were counted as moving when it took them.)
  const uint64_t passed = tx_bytes_ - std::min<uint64_t>(p->queued, tx_bytes_);
  if (passed > tx_passed_) {
    for (uint32_t i = 0; i < kMaxTasks; ++i) {
      Task& t = tasks_[i];
      if (t.state == TaskState::Issued && t.tx_mark > tx_passed_ && t.tx_mark <= tx_sampled_) output_moved(t, now);
    }
    tx_passed_ = passed;
  }
  tx_sampled_ = tx_bytes_;
  return p;
}

uint64_t Session::last_moved(Task& t, uint64_t now) {
  uint64_t last = t.moved_ms;
  uint32_t before = 0, now_ahead = 0;
  for (uint32_t i = 0; i < kMaxTasks; ++i) {
    const Task& u = tasks_[i];
    if (u.state != TaskState::Issued || &u == &t) continue;
    if (u.seq < t.checked_ahead) ++before;
    if (u.seq < t.ahead) {
      ++now_ahead;
      last = std::max(last, u.moved_ms);
    }
  }
  // Fewer of those counted at the last check are out: some were answered since (a reissue
  // counts too: the target answered an abort). When is not known; the check is at most a
  // tick late.
  if (before < t.older) last = now;
  t.older = now_ahead;
  t.checked_ahead = t.ahead;
  return last;
}

void Session::maybe_reconnect() {
  if (state_ == State::Down && !tearing_down_ && !sock_ && !closing_ && now_ms() >= reconnect_at_ms_)
    start_connect();
}

// ---------------------------------------------------------------------------------------------
// Event loop

void Session::handle_cqe(uint64_t ud, int res) {
  const auto op = static_cast<Op>(ud >> 56);
  const auto gen = static_cast<uint32_t>(ud);
  if (op == Op::Cancel) return;
  if (op == Op::Lookup) {
    lookup_reads_ -= lookup_reads_ > 0;
    if (gen != lookup_gen_) return;  // an earlier lookup's, given up
    lookup_armed_ = false;
    if (resolving_ && state_ == State::Connecting && !tearing_down_ && !closing_ && lookup_ && lookup_->done())
      on_resolved();
    return;
  }
  if (op == Op::Timer) {
    timer_armed_ = false;
    if (closing_) return;
    arm_timer_read();
    on_timer();
    return;
  }
  if (ops_in_flight_ > 0) --ops_in_flight_;
  if (gen != conn_gen_ || tearing_down_) {
    if (op == Op::Send) send_in_flight_ = false;
    if (op == Op::Recv) recv_in_flight_ = false;
    if (tearing_down_ && ops_in_flight_ == 0) finish_teardown();
    return;
  }
  switch (op) {
    case Op::Connect: on_connected(res); break;
    case Op::Send: on_sent(res); break;
    case Op::Recv: on_received(res); break;
    default: break;
  }
}

int Session::poll() {
  const uint64_t before = completed_;
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0, n = 0;
  // Handlers may queue new SQEs (never reap): collect, advance, then handle.
  std::array<std::pair<uint64_t, int>, 64> batch;
  for (;;) {
    n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (n == batch.size()) break;
      batch[n++] = {cqe->user_data, cqe->res};
    }
    if (n == 0) break;
    io_uring_cq_advance(&ring_, n);
    for (unsigned i = 0; i < n; ++i) handle_cqe(batch[i].first, batch[i].second);
  }
  if (!closing_) {
    maybe_reconnect();
    pump();
  }
  if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
  return static_cast<int>(completed_ - before);
}

void Session::commit() {
  pump();
  if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
}

void Session::wait_event(uint32_t timeout_ms) {
  pollfd pfd{ring_.ring_fd, POLLIN, 0};
  (void)::poll(&pfd, 1, static_cast<int>(timeout_ms));
}

int Session::wait_logged_in() {
  // Every portal may take its whole login timeout before the next is tried.
  const uint64_t until = now_ms() + uint64_t{cfg_.login_timeout_ms} * portal_count(cfg_) + 1000;
  while (state_ != State::FullFeature && state_ != State::Failed && now_ms() < until) {
    poll();
    if (state_ == State::FullFeature || state_ == State::Failed) break;
    wait_event(50);
  }
  if (state_ == State::FullFeature) return 0;
  if (error_.empty()) error_ = "no login to " + where() + " (timed out)";
  return error_code_ ? error_code_ : -EIO;
}

uint32_t Session::run_until_idle(uint32_t timeout_ms) {
  const uint64_t until = now_ms() + timeout_ms;
  commit();
  while (in_flight_ > 0 && now_ms() < until) {
    if (poll() == 0 && in_flight_ > 0) wait_event(20);
  }
  return in_flight_;
}

void Session::logout(uint32_t timeout_ms) {
  if (state_ == State::FullFeature && tx_has_room(1) && !async_logout_sent_) {
    send_logout_request();
    state_ = State::LoggingOut;
    const uint64_t until = now_ms() + timeout_ms;
    while (!logout_done_ && state_ == State::LoggingOut && now_ms() < until) {
      poll();
      if (!logout_done_) wait_event(20);
    }
  }
  closing_ = true;
  logout_done_ = true;
  if (stats_.receives > 0)
    VCP_LOG_INFO("{}: {} PDUs received in {} receives ({:.2f} per receive), {} sends, {} NOP-Out pings sent; "
                 "{} target NOP-In pings answered, {} reconnects, {} retries ({} BUSY/TASK SET FULL), {} command timeouts put "
                 "off (the command or one it waits behind moving), {} aborts, {} LUN resets, {} redirects, "
                 "{} commands completed ({} failed, {} of them idle TEST UNIT READYs), {} queue depth reductions "
                 "(limit now {})",
                 name_, stats_.pdus_received, stats_.receives, double(stats_.pdus_received) / double(stats_.receives),
                 stats_.sends, stats_.nops_sent, stats_.nop_ins_answered, stats_.reconnects, stats_.retries, stats_.busy, stats_.timeouts_extended, stats_.aborts,
                 stats_.lun_resets, stats_.redirects, completed_, stats_.failed, stats_.idle_polls,
                 stats_.depth_reductions,
                 depth_limit_ ? std::to_string(depth_limit_) : std::string("none"));
  if (!tearing_down_ && sock_) connection_failed("logged out");
  const uint64_t until = now_ms() + 1000;
  while (tearing_down_ && now_ms() < until) {
    poll();
    if (tearing_down_) wait_event(20);
  }
  state_ = State::Failed;
  if (error_.empty()) error_ = "logged out";
}

}  // namespace vcp::backends::iscsi

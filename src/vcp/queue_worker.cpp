#include "vcp/queue_worker.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "base/clock.hpp"
#include "base/cpu.hpp"
#include "base/log.hpp"

namespace vcp {
namespace {

// Resets an eventfd that poll/epoll reported readable. One read: a kick fd is the frontend's,
// and should it be a blocking descriptor of another kind, a second read could block.
void clear_eventfd(int fd) {
  uint64_t v;
  (void)!read(fd, &v, sizeof(v));
}

uint8_t to_virtio_status(int status) {
  if (status == 0) return VIRTIO_BLK_S_OK;
  if (status == -EOPNOTSUPP) return VIRTIO_BLK_S_UNSUPP;
  return VIRTIO_BLK_S_IOERR;
}

}  // namespace

QueueWorker::QueueWorker(unsigned index, const BlkDeviceShared& shared, WorkerOptions opts)
    : index_(index), shared_(shared), opts_(std::move(opts)), wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  thread_ = std::thread([this] { thread_main(); });
}

QueueWorker::~QueueWorker() {
  if (thread_.joinable()) {
    post(Cmd::shutdown);
    thread_.join();
  }
}

int QueueWorker::wait_ready() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return ready_ <= 0; });
  return ready_;
}

int QueueWorker::post(Cmd c, const vhost::QueueStart* q, int fd, const vhost::DirtyLogState* d) {
  std::unique_lock lk(mu_);
  cmd_ = c;
  if (q) cmd_queue_ = *q;
  if (d) cmd_dirty_ = *d;
  cmd_fd_ = fd;
  uint64_t seq = ++cmd_seq_;
  command_pending_.store(true, std::memory_order_release);
  uint64_t one = 1;
  // Wakes the thread if it sleeps in epoll; a full counter only means it is already awake.
  (void)!write(wake_fd_.get(), &one, sizeof(one));
  cv_.notify_all();
  cv_.wait(lk, [&] { return done_seq_ >= seq; });
  return cmd_result_;
}

int QueueWorker::start(const vhost::QueueStart& q) { return post(Cmd::start, &q); }
uint16_t QueueWorker::stop() { return static_cast<uint16_t>(post(Cmd::stop)); }
void QueueWorker::pause() { post(Cmd::pause); }
void QueueWorker::resume() { post(Cmd::resume); }
void QueueWorker::set_call_fd(int fd) { post(Cmd::set_call, nullptr, fd); }
void QueueWorker::set_dirty_log(const vhost::DirtyLogState& s) { post(Cmd::set_log, nullptr, -1, &s); }
void QueueWorker::log_backend_status() { post(Cmd::status); }

void QueueWorker::thread_main() {
  name_current_thread(opts_.name);
  if (opts_.cpu >= 0) {
    int rc = pin_current_thread(opts_.cpu);
    if (rc < 0) VCP_LOG_WARN("{}: cannot pin to CPU {}: {}", opts_.name, opts_.cpu, errno_str(rc));
  }
  int ready = 0;
  auto q = shared_.backend->open_queue(index_);
  if (!q) {
    VCP_LOG_ERROR("{}: cannot open backend queue: {}", opts_.name, errno_str(q.error()));
    ready = -q.error();
  } else {
    bq_ = std::move(q.value());
  }
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (ready == 0 && !epoll_fd_) ready = -errno;
  seg_capacity_ = shared_.max_segments + 8;  // data + header + status, and region splits
  segs_ = std::make_unique<virtio::Segment[]>(seg_capacity_);
  {
    std::lock_guard lk(mu_);
    ready_ = ready;
    cv_.notify_all();
  }

  uint64_t last_work = now_ns();
  const uint64_t spin_ns = uint64_t{opts_.spin_us} * 1000;
  for (;;) {
    if (command_pending_.load(std::memory_order_acquire)) {
      if (!take_command()) return;
      last_work = now_ns();
      continue;
    }
    State st = state_.load(std::memory_order_relaxed);
    if (st != State::running) {
      // Idle or paused: nothing to serve; wait for the next command. A backend with a life of
      // its own goes on meanwhile: an iSCSI session answers its target's NOP-In pings, sends
      // its own and reconnects, so that a target dropping silent initiators keeps it for the
      // next front-end (before, vcp target ended it after nop_interval + nop_timeout).
      if (bq_ && bq_->wait_fd() >= 0) {
        idle_with_backend();
        continue;
      }
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return command_pending_.load(std::memory_order_relaxed); });
      continue;
    }
    if (dq_.broken()) {
      // The driver corrupted its ring: serve nothing until it restarts the queue.
      drain();
      sleep_until_work(-1);
      continue;
    }

    int work = process_available();
    if (bq_) {
      bq_->commit();
      const int done = bq_->poll();
      if (done > 0) {
        kick_wait_expired_ = false;
        if (opts_.kick_wait_us) last_completion_ns_ = now_ns();
      }
      work += done;
    }
    publish();
    if (work > 0) {
      last_work = 0;  // recomputed lazily below: reading the clock per request costs
      continue;
    }
    if (opts_.poll_mode == PollMode::always) {
      cpu_relax();
      continue;
    }
    uint64_t t = now_ns();
    if (last_work == 0) last_work = t;
    if (opts_.poll_mode == PollMode::adaptive && t - last_work < spin_ns) {
      cpu_relax();
      continue;
    }
    // A backend that completes only from poll() and has no fd cannot be slept on.
    if (bq_->in_flight() > 0 && bq_->wait_fd() < 0) continue;
    sleep_until_work(call_deadline_ns());
    last_work = now_ns();
  }
}

bool QueueWorker::take_command() {
  std::unique_lock lk(mu_);
  command_pending_.store(false, std::memory_order_relaxed);
  Cmd c = cmd_;
  if (c == Cmd::shutdown) {
    lk.unlock();
    drain();
    lk.lock();
    done_seq_ = cmd_seq_;
    cv_.notify_all();
    return false;
  }
  lk.unlock();
  run_command();
  lk.lock();
  done_seq_ = cmd_seq_;
  cv_.notify_all();
  return true;
}

void QueueWorker::run_command() {
  // Reads of cmd_* without the lock are fine: the poster waits until we signal completion.
  State st = state_.load(std::memory_order_relaxed);
  switch (cmd_) {
    case Cmd::start:
      if (st != State::idle) {
        drain();
        dq_.stop();
      }
      cmd_result_ = do_start();
      break;
    case Cmd::stop:
      if (st != State::idle) {
        drain();
        cmd_result_ = dq_.last_avail_idx();
        dq_.stop();
      } else {
        cmd_result_ = cur_.last_avail_idx;
      }
      if (epoll_fd_ && cur_.kick_fd >= 0) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, cur_.kick_fd, nullptr);
      if (st != State::idle) log_stats("queue stopped");
      if (abandoned_)
        VCP_LOG_WARN("{}: {} request(s) given up unanswered: the front-end is gone and the backend could not "
                     "answer them soon (a front-end reconnecting with its inflight region resubmits them)",
                     opts_.name, abandoned_);
      abandoned_ = 0;
      cur_.last_avail_idx = static_cast<uint16_t>(cmd_result_);
      state_.store(State::idle, std::memory_order_relaxed);
      break;
    case Cmd::pause:
      if (st == State::running) {
        drain();
        state_.store(State::paused, std::memory_order_relaxed);
      }
      cmd_result_ = 0;
      break;
    case Cmd::resume:
      if (st == State::paused) state_.store(State::running, std::memory_order_relaxed);
      cmd_result_ = 0;
      break;
    case Cmd::set_call:
      call_fd_ = cmd_fd_;
      cur_.call_fd = cmd_fd_;
      cmd_result_ = 0;
      break;
    case Cmd::set_log:
      // Between two passes: what completes from now on is marked in the new log (or not at all).
      apply_dirty_log(cmd_dirty_);
      cmd_result_ = 0;
      break;
    case Cmd::status:
      if (bq_) {
        if (const std::string s = bq_->status(); !s.empty()) VCP_LOG_INFO("{}: {}", opts_.name, s);
      }
      cmd_result_ = 0;
      break;
    case Cmd::none:
    case Cmd::shutdown:
      break;
  }
}

int QueueWorker::do_start() {
  if (ready_ < 0) return ready_;
  abandon_.store(false, std::memory_order_release);
  const vhost::QueueStart& q = cmd_queue_;
  int rc = dq_.start(q.memory, q.layout, q.event_idx, q.last_avail_idx, q.inflight);
  if (rc < 0) return rc;
  if (cur_.kick_fd >= 0) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, cur_.kick_fd, nullptr);
  cur_ = q;
  call_fd_ = q.call_fd;
  apply_dirty_log(q.dirty);
  slots_.clear();
  slots_.resize(q.layout.size);
  for (auto& s : slots_) {
    s.worker = this;
    s.iov = std::make_unique<iovec[]>(shared_.max_segments);
    s.req.iov = s.iov.get();
    s.req.ctx = &s;
    s.req.done = &QueueWorker::on_backend_done;
  }
  in_flight_ = 0;
  pending_publish_ = false;
  call_owed_ = false;
  done_since_call_ = 0;
  stats_.clear();

  // The epoll set: kick (requests), backend completions, and our own wake-up for commands.
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (q.kick_fd >= 0) {
    ev.data.fd = q.kick_fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, q.kick_fd, &ev) != 0 && errno != EEXIST) return -errno;
  }
  for (int fd : {wake_fd_.get(), bq_->wait_fd()}) {
    if (fd < 0) continue;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) return -errno;
  }
  // Kicks are unnecessary while we poll; sleep_until_work() turns them back on.
  dq_.set_notification(opts_.poll_mode == PollMode::never);
  state_.store(State::running, std::memory_order_relaxed);
  VCP_LOG_INFO("{}: queue started (size {}, event_idx {}, last_avail {}, poll {}, coalescing {}, kick wait {})",
               opts_.name, q.layout.size, q.event_idx, q.last_avail_idx, to_string(opts_.poll_mode),
               opts_.coalescing.usecs ? fmt::format("{} us, {} completions, depth {}", opts_.coalescing.usecs,
                                                    opts_.coalescing.max_completions, opts_.coalescing.depth)
                                      : std::string("off"),
               opts_.kick_wait_us ? fmt::format("{} us", opts_.kick_wait_us) : std::string("off"));
  return 0;
}

// Completes what is in flight without taking anything new. Called before the ring or the
// memory it lives in may change.
void QueueWorker::drain() {
  while (in_flight_ > 0 && bq_) {
    if (abandon_.load(std::memory_order_acquire)) bq_->abandon();
    bq_->commit();
    if (bq_->poll() == 0 && in_flight_ > 0) {
      if (bq_->wait_fd() >= 0) {
        pollfd pfd{bq_->wait_fd(), POLLIN, 0};
        if (::poll(&pfd, 1, 10) > 0) bq_->clear_wait_fd();
      } else {
        cpu_relax();
      }
    }
  }
  publish();
}

int QueueWorker::process_available() {
  int n = 0;
  // Bounded per pass so completions and commands get their turn under a flood of requests.
  const uint32_t budget = dq_.size() ? dq_.size() : 1;
  while (static_cast<uint32_t>(n) < budget) {
    virtio::DescriptorChain chain;
    auto r = dq_.pop(&chain, segs_.get(), seg_capacity_);
    if (r == virtio::DeviceQueue::Pop::empty) break;
    if (r == virtio::DeviceQueue::Pop::broken) {
      VCP_LOG_ERROR("{}: the driver's avail ring is corrupt; queue stopped until it is restarted", opts_.name);
      QueueStats::bump(stats_.bad_requests);
      break;
    }
    ++n;
    if (r == virtio::DeviceQueue::Pop::bad_chain) {
      QueueStats::bump(stats_.bad_requests);
      if (log_this_refusal())
        VCP_LOG_ERROR("{}: refused descriptor chain at head {}: {}", opts_.name, chain.head,
                      virtio::to_string(chain.error));
      dq_.push(chain.head, 0);
      pending_publish_ = true;
      continue;
    }
    handle_chain(chain);
  }
  return n;
}

void QueueWorker::handle_chain(virtio::DescriptorChain& chain) {
  QueueStats::bump(stats_.requests);
  VCP_LOG_DEBUG("{}: chain head {}: {} readable segments ({} bytes), {} writable ({} bytes)", opts_.name, chain.head,
                chain.num_readable, chain.readable_bytes, chain.num_writable, chain.writable_bytes);
  if (chain.head >= slots_.size() || slots_[chain.head].busy) {
    // A head the driver handed us again while we still hold it: answering would complete it twice.
    QueueStats::bump(stats_.bad_requests);
    if (log_this_refusal()) VCP_LOG_ERROR("{}: head {} is already in flight; request dropped", opts_.name, chain.head);
    return;
  }
  Slot& s = slots_[chain.head];
  s.head = chain.head;
  s.status = nullptr;
  virtio::BlkRequestView v;
  int rc = virtio::parse_blk_request(chain, &v);
  if (rc < 0) {
    QueueStats::bump(stats_.bad_requests);
    if (log_this_refusal())
      VCP_LOG_ERROR("{}: malformed virtio-blk request at head {}: {}", opts_.name, chain.head, errno_str(rc));
    if (v.status) {
      *v.status = VIRTIO_BLK_S_IOERR;
      mark_dirty(v.status, 1);
      dq_.push(chain.head, 1);
    } else {
      dq_.push(chain.head, 0);
    }
    pending_publish_ = true;
    return;
  }
  s.busy = true;
  s.status = v.status;
  ++in_flight_;
  const BackendInfo& info = *shared_.info;
  const uint64_t capacity = shared_.capacity_bytes->load(std::memory_order_relaxed);
  BlockRequest& req = s.req;
  req.fua = false;
  req.unmap = false;
  req.iovcnt = 0;
  req.length = 0;

  auto in_range = [&](uint64_t sector, uint64_t bytes, uint64_t* offset) {
    if (sector > (UINT64_MAX >> 9)) return false;
    *offset = sector << 9;
    return (*offset % info.block_size) == 0 && (bytes % info.block_size) == 0 && *offset <= capacity &&
           bytes <= capacity - *offset;
  };

  switch (v.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      const bool write = v.type == VIRTIO_BLK_T_OUT;
      if (write && info.read_only) return finish(s, VIRTIO_BLK_S_IOERR);
      if (v.data_len == 0 && v.sector <= (capacity >> 9)) {
        // No data: nothing to move (SeaBIOS probes with such a read). Done, successfully.
        s.written = 1;
        return finish(s, VIRTIO_BLK_S_OK);
      }
      if (v.num_data > shared_.max_segments || v.data_len == 0 ||
          (info.max_transfer_bytes && v.data_len > info.max_transfer_bytes) ||
          !in_range(v.sector, v.data_len, &req.offset)) {
        return refuse(s, v, "outside the device, not whole blocks, empty or too many segments");
      }
      for (uint16_t i = 0; i < v.num_data; ++i) s.iov[i] = {v.data[i].addr, v.data[i].len};
      req.op = write ? BlockOp::write : BlockOp::read;
      req.iovcnt = v.num_data;
      req.length = v.data_len;
      s.written = write ? 1 : v.data_len + 1;
      QueueStats::bump(write ? stats_.bytes_written : stats_.bytes_read, v.data_len);
      break;
    }
    case VIRTIO_BLK_T_FLUSH:
      req.op = BlockOp::flush;
      req.offset = 0;
      s.written = 1;
      break;
    case VIRTIO_BLK_T_GET_ID: {
      // At most 20 bytes, NUL-padded when the serial is shorter (virtio 1.x, 5.2.6).
      char id[VIRTIO_BLK_ID_BYTES] = {};
      std::memcpy(id, info.serial.data(), std::min<size_t>(info.serial.size(), sizeof(id)));
      uint32_t copied = 0;
      for (uint16_t i = 0; i < v.num_data && copied < sizeof(id); ++i) {
        uint32_t n = std::min<uint32_t>(v.data[i].len, sizeof(id) - copied);
        std::memcpy(v.data[i].addr, id + copied, n);
        mark_dirty(v.data[i].addr, n);
        copied += n;
      }
      s.written = copied + 1;
      return finish(s, VIRTIO_BLK_S_OK);
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      const bool wz = v.type == VIRTIO_BLK_T_WRITE_ZEROES;
      if ((wz ? !info.write_zeroes : !info.discard)) {
        QueueStats::bump(stats_.unsupported);
        return finish(s, VIRTIO_BLK_S_UNSUPP);
      }
      if (info.read_only) return finish(s, VIRTIO_BLK_S_IOERR);
      virtio::BlkRange range;
      uint32_t count = 0;
      rc = virtio::parse_blk_ranges(v, wz, &range, 1, &count);
      if (rc == -EOPNOTSUPP) {
        QueueStats::bump(stats_.unsupported);
        return finish(s, VIRTIO_BLK_S_UNSUPP);
      }
      uint64_t bytes = uint64_t{range.num_sectors} << 9;
      uint32_t limit = wz ? info.max_write_zeroes_bytes : info.max_discard_bytes;
      if (rc < 0 || count != 1 || bytes == 0 || (limit && bytes > limit) || !in_range(range.sector, bytes, &req.offset)) {
        return refuse(s, v, "not one range inside the device and its limits");
      }
      req.op = wz ? BlockOp::write_zeroes : BlockOp::discard;
      req.unmap = wz && (range.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
      req.length = bytes;
      s.written = 1;
      break;
    }
    default:
      QueueStats::bump(stats_.unsupported);
      s.written = 1;
      return finish(s, VIRTIO_BLK_S_UNSUPP);
  }
  bq_->submit(&req);
}

void QueueWorker::on_backend_done(BlockRequest* req, int status) {
  auto* s = static_cast<Slot*>(req->ctx);
  if (status == -ECANCELED && s->worker->abandon_.load(std::memory_order_acquire)) {
    // Given up for a front-end that is gone: nothing written to its memory or rings.
    s->busy = false;
    --s->worker->in_flight_;
    ++s->worker->abandoned_;
    return;
  }
  uint8_t st = to_virtio_status(status);
  if (status != 0) {
    QueueStats::bump(st == VIRTIO_BLK_S_UNSUPP ? s->worker->stats_.unsupported : s->worker->stats_.io_errors);
    VCP_LOG_DEBUG("{}: {} at {} failed: {}", s->worker->opts_.name, to_string(req->op), req->offset, errno_str(status));
  }
  s->worker->finish(*s, st);
}

void QueueWorker::apply_dirty_log(const vhost::DirtyLogState& d) {
  cur_.dirty = d;
  dq_.set_used_log(d.log && d.log_used ? d.log : nullptr, d.used_gpa);
}

void QueueWorker::finish(Slot& s, uint8_t status) {
  *s.status = status;
  if (cur_.dirty.log) {
    // After the writes (the backend completed): data of a read, then the status byte.
    if (s.req.op == BlockOp::read)
      for (uint32_t i = 0; i < s.req.iovcnt; ++i) mark_dirty(s.iov[i].iov_base, s.iov[i].iov_len);
    mark_dirty(s.status, 1);
  }
  dq_.push(s.head, status == VIRTIO_BLK_S_OK ? s.written : 1);
  s.busy = false;
  --in_flight_;
  ++done_since_call_;
  pending_publish_ = true;
}

void QueueWorker::publish() {
  if (pending_publish_) {
    pending_publish_ = false;
    // The driver asked to be told (EVENT_IDX's used_event passed, or interrupts not
    // suppressed): one call is owed, however many more completions come before it goes out.
    if (dq_.publish_used() && !call_owed_) {
      call_owed_ = true;
      if (opts_.coalescing.usecs) owed_since_ns_ = now_ns();
    }
  }
  if (call_owed_ && call_deadline_ns() == 0) call_driver();
}

// Nanoseconds until the owed call must go out (0: now), or -1 when none is owed.
int64_t QueueWorker::call_deadline_ns() const {
  if (!call_owed_) return -1;
  const Coalescing& c = opts_.coalescing;
  if (c.usecs == 0 || in_flight_ == 0 || (c.max_completions && done_since_call_ >= c.max_completions) ||
      (c.depth && uint64_t{done_since_call_} * c.depth >= uint64_t{in_flight_} + done_since_call_))
    return 0;
  const uint64_t waited = now_ns() - owed_since_ns_;
  const uint64_t limit = uint64_t{c.usecs} * 1000;
  return waited >= limit ? 0 : static_cast<int64_t>(limit - waited);
}

void QueueWorker::call_driver() {
  call_owed_ = false;
  done_since_call_ = 0;
  if (call_fd_ < 0) return;  // no call fd (yet): the driver polls
  uint64_t one = 1;
  if (write(call_fd_, &one, sizeof(one)) == sizeof(one)) QueueStats::bump(stats_.notifications);
}

void QueueWorker::idle_with_backend() {
  // post() sets command_pending_ before it writes wake_fd_: a command posted after the loop
  // looked wakes this poll.
  pollfd p[2] = {{wake_fd_.get(), POLLIN, 0}, {bq_->wait_fd(), POLLIN, 0}};
  if (::poll(p, 2, -1) <= 0) return;
  if (p[0].revents & POLLIN) clear_eventfd(wake_fd_.get());
  if (p[1].revents & POLLIN) bq_->clear_wait_fd();
  bq_->poll();
  bq_->commit();
}

void QueueWorker::sleep_until_work(int64_t timeout_ns) {
  // Kick moderation (WorkerOptions): while the backend completes requests, whose completions
  // wake us, sleep without asking for kicks, at most kick_wait_us. (Bounds shorter than the
  // scheduler tick measured dearer than the kicks they save on these VMs: docs/performance.md.)
  const bool kick_free = opts_.kick_wait_us > 0 && !kick_wait_expired_ && !dq_.broken() && bq_->in_flight() > 0 &&
                         bq_->wait_fd() >= 0 && now_ns() - last_completion_ns_ < kRecentCompletionNs;
  bool kick_deadline = false;
  if (kick_free) {
    dq_.set_notification(false);
    const int64_t limit = int64_t{opts_.kick_wait_us} * 1000;
    if (timeout_ns < 0 || timeout_ns > limit) {
      timeout_ns = limit;
      kick_deadline = true;
    }
    QueueStats::bump(stats_.kick_free);
  } else {
    // Ask for kicks, then look once more: a request that arrived before the driver saw our
    // request for kicks would otherwise sleep with us (the fence is in set_notification).
    dq_.set_notification(true);
    if (!dq_.broken() && dq_.has_available()) {
      dq_.set_notification(false);
      return;
    }
  }
  epoll_event evs[4];
  timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
  int n = epoll_pwait2(epoll_fd_.get(), evs, 4, timeout_ns >= 0 ? &ts : nullptr, nullptr);
  if (n == 0 && kick_deadline) kick_wait_expired_ = true;
  for (int i = 0; i < n; ++i) {
    // One read resets an eventfd (kick, wake-up); a second one would only return EAGAIN. The
    // backend's descriptor is the backend's to reset.
    const int fd = evs[i].data.fd;
    if (fd == bq_->wait_fd())
      bq_->clear_wait_fd();
    else
      clear_eventfd(fd);
  }
  QueueStats::bump(stats_.wakeups);
  if (opts_.poll_mode != PollMode::never) dq_.set_notification(false);
}

// A misbehaving driver must not be able to flood the log (log::thin).
bool QueueWorker::log_this_refusal() const { return log::thin(stats_.bad_requests.load(std::memory_order_relaxed)); }

void QueueWorker::refuse(Slot& s, const virtio::BlkRequestView& v, const char* why) {
  QueueStats::bump(stats_.bad_requests);
  const uint64_t n = stats_.bad_requests.load(std::memory_order_relaxed);
  if (log_this_refusal())
    VCP_LOG_WARN("{}: {} at sector {} ({} bytes in {} segments) refused: {} [{} refused so far]", opts_.name,
                 virtio::blk_type_name(v.type), v.sector, v.data_len, v.num_data, why, n);
  finish(s, VIRTIO_BLK_S_IOERR);
}

void QueueWorker::log_stats(const char* what) const {
  auto ld = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  VCP_LOG_INFO("{}: {}: {} requests, {:.1f} MiB read, {:.1f} MiB written, {} I/O errors, {} unsupported, "
               "{} refused, {} interrupts sent, {} wake-ups, {} sleeps without asking for a kick",
               opts_.name, what, ld(stats_.requests), ld(stats_.bytes_read) / 1048576.0,
               ld(stats_.bytes_written) / 1048576.0, ld(stats_.io_errors), ld(stats_.unsupported),
               ld(stats_.bad_requests), ld(stats_.notifications), ld(stats_.wakeups), ld(stats_.kick_free));
}

std::optional<PollMode> parse_poll_mode(const std::string& s) {
  if (s == "always") return PollMode::always;
  if (s == "adaptive") return PollMode::adaptive;
  if (s == "never") return PollMode::never;
  return std::nullopt;
}

const char* to_string(PollMode m) {
  switch (m) {
    case PollMode::always: return "always";
    case PollMode::adaptive: return "adaptive";
    case PollMode::never: return "never";
  }
  return "?";
}

}  // namespace vcp

#include "target/server.hpp"

#include <arpa/inet.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

#include "base/acceptor.hpp"
#include "base/clock.hpp"
#include "base/cpu.hpp"
#include "base/log.hpp"
#include "base/tcp_progress.hpp"
#include "iscsi/names.hpp"
#include "iscsi/sendtargets.hpp"
#include "target/connection.hpp"
#include "target/scsi/lun.hpp"
#include "target/scsi/pr_store.hpp"

namespace vcp::target {

namespace {

// io_uring user_data: a pointer (8-aligned) or an index, with the kind in the low 3 bits.
enum Kind : uint64_t { kRecv = 1, kSend = 2, kWake = 3, kTimer = 4, kLunPoll = 5, kWritable = 6, kCancel = 7 };
uint64_t tag(const void* p, Kind k) { return reinterpret_cast<uint64_t>(p) | k; }
uint64_t tag(uint64_t index, Kind k) { return index << 3 | k; }


// The address of our end of a connection (an IPv4 peer of a dual-stack IPv6 listener as plain
// IPv4); family 0 when the socket cannot say.
IpAddress local_address(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof(sa);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return {};
  return ip_address_of(reinterpret_cast<sockaddr*>(&sa), len);
}

// The port of our end of a connection (0 when the socket cannot say).
uint16_t local_port(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof(sa);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return 0;
  return ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
}

// The numeric address of our end of a connection, or nothing when the socket cannot say.
std::optional<std::string> local_host(int fd) {
  const IpAddress a = local_address(fd);
  if (a.family == 0) return std::nullopt;
  return to_string(a);
}

// Whether the peer of a connection is on this machine: a loopback address, or the connection's
// own (an initiator that reached us through one of our addresses). Unknown: no.
bool same_machine(int fd, const IpAddress& peer) {
  if (peer.family == 0) return false;
  if (is_loopback(peer)) return true;
  const IpAddress local = local_address(fd);
  return local.family == peer.family && local.bytes == peer.bytes;
}

// iovecs per send: a 256 KiB read in 32 KiB Data-In PDUs is 8 headers and 8 data segments.
constexpr size_t kTxIov = 64;

// Sends made in one go for a connection whose output holds file ranges (send_inline), before
// the thread turns to its other connections: a 256 KiB read in 32 KiB Data-In PDUs takes 16.
constexpr int kInlineSends = 64;

// Connections beyond max_connections that are still let in, to be told so at login.
constexpr uint32_t kRefusingConnections = 32;

// "LUN 3", or "LUN 3 of IQN" for a LUN of any target but the first.
std::string lun_name(const LunSpec& l, const TargetSpec& t, size_t target_index) {
  return "LUN " + std::to_string(l.number) + (target_index ? " of " + t.iqn : "");
}

// lun_name() and its backend spec: "LUN 3 of IQN 'ram:size=64M'", for what names the disk.
std::string lun_and_spec(const LunSpec& l, const TargetSpec& t, size_t target_index) {
  return lun_name(l, t, target_index) + " '" + l.backend + "'";
}

// The state directory (state_dir): made if missing (with its parents), and it must be a
// directory this process can write in.
bool prepare_state_dir(const std::string& dir, std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    *error = "state_dir " + dir + ": cannot create it: " + ec.message();
    return false;
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = "state_dir " + dir + ": not a directory";
    return false;
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    *error = "state_dir " + dir + ": cannot write in it: " + errno_str(errno);
    return false;
  }
  return true;
}

// A logical unit's shared state. With a state directory its persistent reservations are kept
// there through restarts when an initiator asks (APTPL), and what was kept is taken back now;
// a file that cannot be read fails the LUN (name: lun_and_spec()).
std::shared_ptr<scsi::SharedLuState> make_lu_state(const TargetSettings& s, const TargetSpec& t, const LunSpec& l,
                                                   const std::string& name, const BlockBackend& b,
                                                   std::string* error) {
  auto state = std::make_shared<scsi::SharedLuState>(scsi::ModePages{b.info().volatile_cache});
  if (s.state_dir.empty()) return state;
  auto store = std::make_unique<scsi::PrStore>(scsi::pr_store_path(s.state_dir, t.iqn, l.number), b.info().serial);
  std::string note;
  if (!state->keep_reservations(std::move(store), error, &note)) {
    *error = name + ": " + *error;
    return nullptr;
  }
  if (note.find("not restored") != std::string::npos)
    VCP_LOG_WARN("target: {}: {}", name, note);
  else if (!note.empty())
    VCP_LOG_INFO("target: {}: {}", name, note);
  return state;
}

}  // namespace

bool identity_clash(const std::string& name, const BlockBackend& b, const std::vector<NamedBackend>& others,
                    std::string* error) {
  const BackendInfo& mine = b.info();
  for (const auto& [other_name, other] : others) {
    const BackendInfo& theirs = other->info();
    if (theirs.serial != mine.serial || (!mine.storage.empty() && theirs.storage == mine.storage)) continue;
    *error = name + ": serial '" + mine.serial + "' is already that of " + other_name +
             ", another disk (multipath and /dev/disk/by-id would take the two for one): give it a serial= "
             "of its own";
    return true;
  }
  return false;
}

// A LUN added while the target runs (TargetServer::add_luns), as one I/O thread takes it: the
// backend (the server's) and this thread's queue on it, opened beforehand so that taking it
// cannot fail.
struct NewLun {
  size_t target = 0;  // index among the targets served (TargetServer::targets_)
  uint32_t number = 0;
  BlockBackend* backend = nullptr;
  std::shared_ptr<scsi::SharedLuState> state;
  std::unique_ptr<BackendQueue> queue;
};

// A LUN removed while the target runs (TargetServer::remove_luns): its backend, closed once
// every I/O thread has let go of its Lun there (the last one to do so closes it).
struct Retirement {
  std::string name;  // "LUN 3", "LUN 3 of IQN"
  std::unique_ptr<BlockBackend> backend;
  std::atomic<size_t> left{0};  // I/O threads still holding a Lun of it
  void done() {
    if (left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    backend.reset();
    VCP_LOG_INFO("vcp target: {} closed: its last commands have ended", name);
  }
};

// A LUN to remove, as one I/O thread takes it.
struct GoneLun {
  size_t target = 0;
  uint32_t number = 0;
  std::shared_ptr<Retirement> retirement;
};

// Counts the I/O threads that have taken a change, for the thread that posted it to wait on.
struct ChangeLatch {
  std::mutex mu;
  std::condition_variable cv;
  size_t left = 0;
  void done() {
    std::lock_guard lock(mu);
    if (--left == 0) cv.notify_all();
  }
};

// A LUN whose backend grew (TargetServer::grow_luns): its new capacity.
struct GrownLun {
  size_t target = 0;
  uint32_t number = 0;
  uint64_t capacity_bytes = 0;
};

// A change to the LUNs an I/O thread serves, taken in the order posted: LUNs removed, then
// LUNs added (to a target new to the thread, first added after the others, when `target` is
// set: IQN, alias).
struct LunBatch {
  std::optional<std::pair<std::string, std::string>> target;
  std::vector<NewLun> luns;
  std::vector<GoneLun> gone;
  std::shared_ptr<ChangeLatch> latch;
  std::optional<std::pair<size_t, std::string>> alias;  // a target's new alias (TargetAlias at login)
  std::vector<GrownLun> grown;
};

// A status report being gathered (TargetServer::status): each I/O thread fills its slot.
struct StatusRequest {
  std::mutex mu;
  std::condition_variable cv;
  size_t left = 0;
  std::vector<std::vector<std::string>> lines;  // per thread
  void put(size_t thread, std::vector<std::string> l) {
    std::lock_guard lock(mu);
    lines[thread] = std::move(l);
    if (--left == 0) cv.notify_all();
  }
};

class IoThread {
 public:
  IoThread(unsigned index, int cpu, const TargetSettings& settings, const LimitsHolder& limits,
           const AccessHolder& access, SessionRegistry& sessions,
           std::vector<std::unique_ptr<BlockBackend>>& backends,
           const std::vector<std::shared_ptr<scsi::SharedLuState>>& lu_states, std::atomic<uint32_t>& connections)
      : index_(index), cpu_(cpu), settings_(settings), limits_(limits), access_(access), sessions_(sessions), backends_(backends),
        lu_states_(lu_states), connections_(connections) {
    wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  }

  // Opens the ring, the backend queues and the Luns (on the I/O thread itself), then loops.
  void start() {
    thread_ = std::thread([this] { loop(); });
    std::unique_lock lock(mu_);
    ready_cv_.wait(lock, [this] { return ready_; });
  }
  bool failed() const { return !error_.empty(); }
  // Connections handed over and not yet closed (the accept thread picks the thread with the
  // fewest).
  uint32_t connection_count() const { return thread_connections_.load(std::memory_order_relaxed); }
  const std::string& error() const { return error_; }

  // A new connection; `refuse`: the target has no room for it (max_connections), its login is
  // answered "out of resources". Either way it counts in the server's connections until closed.
  void hand_over(int fd, bool refuse) {
    thread_connections_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      incoming_.push_back({fd, refuse});
    }
    wake();
  }
  void stop() {
    stop_.store(true, std::memory_order_release);
    wake();
  }
  // A status report (from another thread): this thread's part at the loop's next turn.
  void report(std::shared_ptr<StatusRequest> req) {
    {
      std::lock_guard lock(mu_);
      if (!exited_) {
        reports_.push_back(std::move(req));
        req = nullptr;
      }
    }
    if (req) req->put(index_, {"I/O thread " + std::to_string(index_) + ": stopped"});
    wake();
  }
  // LUNs for this thread to add (from another thread), taken at the loop's next turn, then
  // latch->done(); with `target`, to a target new to it, added first (after the others).
  void add_luns(std::vector<NewLun> luns, std::shared_ptr<ChangeLatch> latch,
                std::optional<std::pair<std::string, std::string>> target = std::nullopt, std::vector<GoneLun> gone = {}) {
    post_change({std::move(target), std::move(luns), std::move(gone), std::move(latch), std::nullopt, {}});
  }
  // LUNs for this thread to remove (from another thread), in turn with additions: at the
  // loop's next turn they leave their targets (latch->done()); each one's Lun goes once no
  // command of this thread's connections is in it or holds its data (retirement->done()).
  void remove_luns(std::vector<GoneLun> luns, std::shared_ptr<ChangeLatch> latch) {
    post_change({std::nullopt, {}, std::move(luns), std::move(latch), std::nullopt, {}});
  }
  // A target's alias for logins from the loop's next turn on.
  void set_alias(size_t target, std::string alias, std::shared_ptr<ChangeLatch> latch) {
    post_change({std::nullopt, {}, {}, std::move(latch), std::pair{target, std::move(alias)}, {}});
  }
  // LUNs whose backends grew: their Luns take the new capacity at the loop's next turn.
  void grow_luns(std::vector<GrownLun> grown, std::shared_ptr<ChangeLatch> latch) {
    post_change({std::nullopt, {}, {}, std::move(latch), std::nullopt, std::move(grown)});
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  void wake() {
    uint64_t one = 1;
    ssize_t rc = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)rc;
  }

 private:
  struct Conn {
    Conn(std::atomic<uint32_t>& n, std::atomic<uint32_t>& here) : count(n), thread_count(here) {}
    ~Conn() {
      count.fetch_sub(1, std::memory_order_relaxed);
      thread_count.fetch_sub(1, std::memory_order_relaxed);
    }
    std::atomic<uint32_t>& count;         // the server's connections
    std::atomic<uint32_t>& thread_count;  // this thread's (IoThread::connection_count)
    UniqueFd fd;
    std::unique_ptr<TargetConnection> c;
    bool recv_pending = false;
    bool send_pending = false;
    bool eof = false;        // the socket is done (peer closed or an error)
    bool shut = false;       // we shut it down after the last output
    uint64_t stuck_since_ms = 0;  // closing, its last output still not taken by the peer
    // What a pending sendmsg/recvmsg reads: kept here until its completion.
    iovec tx_iov[kTxIov];
    msghdr tx_msg{};
    iovec rx_iov[TargetConnection::kRxIov];
    msghdr rx_msg{};
  };

  void post_change(LunBatch b) {
    std::shared_ptr<ChangeLatch> latch = b.latch;
    {
      std::lock_guard lock(mu_);
      if (!exited_) {
        changes_.push_back(std::move(b));
        latch = nullptr;
      }
    }
    if (latch) {
      // The loop is over: nothing changes. A removed LUN's Lun here goes with this thread,
      // its backend with the last holder (kept_ outlives slots_).
      std::lock_guard lock(mu_);
      for (auto& g : b.gone) kept_.push_back(std::move(g.retirement));
    }
    if (latch) latch->done();
    wake();
  }

  bool setup() {
    if (cpu_ >= 0) {
      if (int rc = pin_current_thread(cpu_); rc < 0) {
        error_ = "cannot pin to CPU " + std::to_string(cpu_) + ": " + errno_str(rc);
        return false;
      }
    }
    name_current_thread("vcp-target-" + std::to_string(index_));
    // sendfile(2) has no MSG_NOSIGNAL: a peer gone raises SIGPIPE in the sending thread. Blocked
    // here, it stays pending on this thread and the call fails with EPIPE, as sendmsg does.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    if (int rc = io_uring_queue_init(512, &ring_, 0); rc < 0) {
      error_ = "io_uring_queue_init: " + errno_str(rc);
      return false;
    }
    ring_ok_ = true;
    ctx_.settings = &settings_;
    ctx_.limits = &limits_;
    ctx_.access = &access_;
    ctx_.sessions = &sessions_;
    ctx_.wake = [this] { wake(); };
    ctx_.buffers.budget = settings_.buffer_bytes / std::max<size_t>(1, settings_.cpus.size());
    // Every target's LUNs, in order: backends_ and lu_states_ follow the same order.
    const std::vector<TargetSpec> targets = settings_.all_targets();
    ctx_.served.resize(targets.size());
    size_t k = 0;
    for (size_t ti = 0; ti < targets.size(); ++ti) {
      const TargetSpec& spec = targets[ti];
      ThreadContext::Target& tt = ctx_.served[ti];
      tt.iqn = spec.iqn;
      tt.alias = spec.alias;
      for (const auto& l : spec.luns) tt.lun_numbers.push_back(l.number);
      std::sort(tt.lun_numbers.begin(), tt.lun_numbers.end());
      for (const LunSpec& l : spec.luns) {
        auto q = backends_[k]->open_queue(index_);
        if (!q) {
          error_ = lun_name(l, spec, ti) + ": cannot open a backend queue: " + errno_str(q.error());
          return false;
        }
        add_lun(ti, l.number, *backends_[k], std::move(*q), lu_states_[k]);
        ++k;
      }
    }
    return true;
  }

  // Makes this thread's Lun of a LUN and puts it into its target's inventory (setup, and a LUN
  // added while running).
  void add_lun(size_t ti, uint32_t number, BlockBackend& backend, std::unique_ptr<BackendQueue> queue,
               std::shared_ptr<scsi::SharedLuState> state) {
    ThreadContext::Target& tt = ctx_.served[ti];
    scsi::LunConfig cfg;
    cfg.lun = number;
    cfg.target_name = tt.iqn;
    cfg.relative_port = settings_.portal_group_tag;
    cfg.max_transfer_blocks = settings_.max_transfer_bytes / backend.info().block_size;
    cfg.max_tasks = settings_.max_tasks;
    auto free = std::find_if(slots_.begin(), slots_.end(), [](const LunSlot& s) { return !s.lun && !s.poll_pending; });
    LunSlot& slot = free != slots_.end() ? *free : slots_.emplace_back();
    slot.queue = std::move(queue);
    slot.lun = std::make_unique<scsi::Lun>(cfg, backend, *slot.queue, std::move(state));
    slot.closing = false;
    slot.lun->set_wake([this] { wake(); });  // resets from the other I/O threads
    slot.lun->set_reported_luns(tt.lun_numbers, false);
    tt.luns.insert(std::upper_bound(tt.luns.begin(), tt.luns.end(), number,
                                    [](uint32_t n, const ThreadContext::LunEntry& e) { return n < e.number; }),
                   {number, slot.lun.get()});
  }

  void answer_reports(uint64_t now) {
    std::vector<std::shared_ptr<StatusRequest>> reqs;
    {
      std::lock_guard lock(mu_);
      reqs.swap(reports_);
    }
    if (reqs.empty()) return;
    const ThreadBufferRoom& room = ctx_.buffers;
    std::vector<std::string> lines;
    lines.push_back(fmt::format("I/O thread {}{}: {} connections; buffer room {} KiB of {} MiB in use ({} KiB kept "
                                "for reuse, {} KiB more by small commands), {} connections waiting for it",
                                index_, cpu_ >= 0 ? " (CPU " + std::to_string(cpu_) + ")" : std::string(),
                                conns_.size(), room.used() >> 10, room.budget >> 20, room.kept >> 10,
                                room.small >> 10, room.waiting.size()));
    if (!retiring_.empty()) {
      uint32_t commands = 0;
      for (const auto& r : retiring_) commands += slots_[r.slot].lun ? slots_[r.slot].lun->in_flight() : 0;
      lines.push_back(fmt::format("  {} removed LUNs not yet closed here ({} commands still in them)", retiring_.size(),
                                  commands));
    }
    for (const auto& c : conns_) lines.push_back("  " + c->c->describe(now));
    for (auto& r : reqs) r->put(index_, lines);
  }

  // LUNs added or removed while running: each target's inventory changes, and its other LUNs
  // report REPORTED LUNS DATA HAS CHANGED to every I_T nexus (raised once, by thread 0, on the
  // state the threads share). A removed LUN's commands still here run to their end
  // (retire_lun).
  void take_changes() {
    std::vector<LunBatch> batches;
    {
      std::lock_guard lock(mu_);
      batches.swap(changes_);
    }
    for (auto& [target, luns, gone, latch, alias, grown] : batches) {
      if (alias) ctx_.served.at(alias->first).alias = std::move(alias->second);
      for (const auto& g : grown)  // CAPACITY DATA HAS CHANGED: raised once, by thread 0
        if (scsi::Lun* lu = ctx_.served.at(g.target).find_lun(g.number)) lu->set_capacity(g.capacity_bytes, index_ == 0);
      if (target) {  // a target new to the server: no session knows its LUNs yet (no UA)
        ThreadContext::Target& tt = ctx_.served.emplace_back();
        tt.iqn = target->first;
        tt.alias = target->second;
      }
      std::vector<size_t> changed;
      std::vector<scsi::Lun*> old;  // there before: they raise the unit attention
      auto touch = [&](size_t ti) {
        if (std::find(changed.begin(), changed.end(), ti) != changed.end()) return;
        changed.push_back(ti);
        for (auto& e : ctx_.served.at(ti).luns) old.push_back(e.lun);
      };
      for (auto& g : gone) {
        touch(g.target);
        if (scsi::Lun* lu = retire_lun(g)) std::erase(old, lu);
      }
      for (auto& n : luns) {
        touch(n.target);
        ThreadContext::Target& tt = ctx_.served.at(n.target);
        tt.lun_numbers.insert(std::upper_bound(tt.lun_numbers.begin(), tt.lun_numbers.end(), uint64_t{n.number}),
                              n.number);
        add_lun(n.target, n.number, *n.backend, std::move(n.queue), std::move(n.state));
      }
      for (size_t ti : changed)
        for (auto& e : ctx_.served[ti].luns)
          e.lun->set_reported_luns(ctx_.served[ti].lun_numbers,
                                   index_ == 0 && std::find(old.begin(), old.end(), e.lun) != old.end());
      latch->done();
    }
  }

  // A removed LUN leaves its target: commands to its number from now on find no LUN, and those
  // of this thread's connections still collecting their data will too (forget_lun). Its Lun
  // stays, polled as before, until reap_retired() finds it let go of. Returns it, or nullptr
  // (not here: the retirement counts this thread as done).
  scsi::Lun* retire_lun(const GoneLun& g) {
    ThreadContext::Target& tt = ctx_.served.at(g.target);
    auto e = std::find_if(tt.luns.begin(), tt.luns.end(), [&](const auto& x) { return x.number == g.number; });
    std::erase(tt.lun_numbers, uint64_t{g.number});
    if (e == tt.luns.end()) {
      g.retirement->done();
      return nullptr;
    }
    scsi::Lun* lu = e->lun;
    tt.luns.erase(e);
    tt.draining.push_back(lu);
    for (auto& c : conns_) c->c->forget_lun(lu);
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].lun.get() == lu) retiring_.push_back({i, g.target, g.retirement});
    return lu;
  }

  // Removed LUNs' Luns that no command is in any more, no connection's output holds data of
  // and no task management function waits on: their read on the wait_fd is cancelled, then
  // the Lun and its queue go, and the retirement is told.
  void reap_retired() {
    for (size_t k = 0; k < retiring_.size();) {
      LunSlot& s = slots_[retiring_[k].slot];
      if (!s.closing) {
        const scsi::Lun* lu = s.lun.get();
        if (lu->in_flight() > 0 ||
            std::any_of(conns_.begin(), conns_.end(), [lu](const auto& c) { return c->c->uses_lun(lu); })) {
          ++k;
          continue;
        }
        s.closing = true;
        if (s.poll_pending) {
          io_uring_sqe* sqe = get_sqe();
          io_uring_prep_cancel64(sqe, tag(uint64_t{retiring_[k].slot}, kLunPoll), 0);
          io_uring_sqe_set_data64(sqe, tag(uint64_t{0}, kCancel));
        }
      }
      if (s.poll_pending) {  // the read's completion (cancelled) is still to come
        ++k;
        continue;
      }
      std::erase(ctx_.served.at(retiring_[k].target).draining, s.lun.get());
      s.lun.reset();
      s.queue.reset();
      s.closing = false;
      retiring_[k].retirement->done();
      retiring_.erase(retiring_.begin() + static_cast<long>(k));
    }
  }

  void loop() {
    bool ok = setup();
    {
      std::lock_guard lock(mu_);
      ready_ = true;
    }
    ready_cv_.notify_all();
    if (!ok) {
      if (ring_ok_) io_uring_queue_exit(&ring_);
      return;
    }
    arm_wake();
    arm_timer();
    bool stopping = false;
    uint64_t stop_deadline = 0;
    for (;;) {
      io_uring_submit_and_wait(&ring_, 1);
      const uint64_t now = coarse_now_ms();  // ms resolution is plenty for timers
      bool ticked = false;
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        on_cqe(cqe->user_data, cqe->res, now, &ticked);
      }
      io_uring_cq_advance(&ring_, seen);

      if (!stopping && stop_.load(std::memory_order_acquire)) {
        stopping = true;
        stop_deadline = now + 2000;
        for (auto& c : conns_) c->c->shutdown();
      }
      for (auto& s : slots_)
        if (s.lun) s.lun->poll();
      if (ticked) {
        for (auto& c : conns_) {
          if (c->c->wants_peer_progress())
            if (const auto p = tcp_progress(c->fd.get())) c->c->note_peer_progress(*p, now);
          c->c->tick(now);
        }
      }
      service_connections(now);
      for (auto& s : slots_)
        if (s.lun) s.lun->commit();
      if (!retiring_.empty()) reap_retired();
      arm_lun_polls();
      if (stopping && (conns_.empty() || now > stop_deadline)) break;
    }
    {
      std::lock_guard lock(mu_);
      exited_ = true;
    }
    take_changes();  // whatever came in the meantime, so that no one waits for it
    answer_reports(coarse_now_ms());
    // A connection whose tasks are still inside a backend cannot be freed safely: it is left to
    // the process exit (only after the 2 s grace period).
    for (auto& c : conns_)
      if (!c->c->finished()) c->c.release();
    conns_.clear();
    io_uring_queue_exit(&ring_);
  }

  void on_cqe(uint64_t ud, int res, uint64_t now, bool* ticked) {
    const uint64_t kind = ud & 7;
    if (kind == kWake) {
      take_incoming(now);
      take_changes();
      answer_reports(now);
      arm_wake();
      *ticked = true;  // reinstatement requests are noticed by tick()
      return;
    }
    if (kind == kTimer) {
      *ticked = true;
      arm_timer();
      return;
    }
    if (kind == kCancel) return;  // a Lun's read being cancelled: its own completion follows
    if (kind == kLunPoll) {
      slots_[ud >> 3].poll_pending = false;
      return;
    }
    Conn* c = reinterpret_cast<Conn*>(ud & ~uint64_t{7});
    if (kind == kWritable) {  // send_inline() goes on (an error shows in its next send)
      c->send_pending = false;
      return;
    }
    if (kind == kRecv) {
      c->recv_pending = false;
      if (res > 0) {
        c->c->rx_commit(static_cast<size_t>(res), now);
      } else if (res != -EAGAIN && res != -EINTR) {
        c->eof = true;
        c->c->shutdown();
      }
    } else if (kind == kSend) {
      c->send_pending = false;
      if (res >= 0) {
        c->c->output_sent(static_cast<size_t>(res));
      } else if (res != -EAGAIN && res != -EINTR) {
        // A peer that went away is ordinary; anything else is worth a line. EFAULT: Data-In sent
        // in place from a file LUN's mapping (read_view) past the end of a file that shrank.
        send_failed(*c, res);
      }
    }
  }

  void send_failed(Conn& c, int err) {
    // A peer that went away is ordinary; anything else is worth a line. EFAULT: Data-In sent in
    // place from a file LUN's mapping (read_view) past the end of a file that shrank; ENODATA
    // (ours): sendfile from the file found nothing there.
    if (err != -EPIPE && err != -ECONNRESET)
      VCP_LOG_WARN("target: send failed: {}; connection closed",
                   err == -ENODATA ? std::string("a file LUN's file ended before the data to send (it shrank under a read?)")
                   : err == -EFAULT ? errno_str(err) + " (a file LUN shrank under a read?)"
                                    : errno_str(err));
    c.eof = true;
    c.c->shutdown();
  }

  // Output that holds Data-In read in place from a file LUN goes out from here, in non-blocking
  // calls: headers with sendmsg, data with sendfile(2) from the file (io_uring has no such
  // operation), which hands the page cache pages to the socket rather than copying them. When
  // the socket is full, or after kInlineSends calls, a POLLOUT poll brings the loop back.
  void send_inline(Conn& c) {
    TargetConnection& tc = *c.c;
    for (int k = 0; k < kInlineSends && tc.has_output(); ++k) {
      ssize_t r;
      size_t want = 0;
      if (auto f = tc.output_file()) {
        off_t off = static_cast<off_t>(f->offset);
        want = f->len;
        r = ::sendfile(c.fd.get(), f->fd, &off, want);
        if (r == 0) return send_failed(c, -ENODATA);
      } else {
        const size_t n = tc.output_iov(c.tx_iov);
        for (size_t i = 0; i < n; ++i) want += c.tx_iov[i].iov_len;
        msghdr m{};
        m.msg_iov = c.tx_iov;
        m.msg_iovlen = n;
        // More to come at once (the file data after these headers): no packet for them alone.
        r = ::sendmsg(c.fd.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT | (tc.file_output_queued() ? MSG_MORE : 0));
      }
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return send_failed(c, -errno);
      }
      tc.output_sent(static_cast<size_t>(r));
      if (static_cast<size_t>(r) < want) break;  // the socket is full
    }
    if (!tc.has_output()) return;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_poll_add(sqe, c.fd.get(), POLLOUT);
    io_uring_sqe_set_data64(sqe, tag(&c, kWritable));
    c.send_pending = true;
  }

  void service_connections(uint64_t now) {
    for (size_t i = 0; i < conns_.size();) {
      Conn& c = *conns_[i];
      TargetConnection& tc = *c.c;
      if (!c.eof && !c.send_pending && tc.has_output()) {
        if (tc.file_output_queued()) {
          send_inline(c);
        } else if (const size_t n = tc.output_iov(c.tx_iov); n > 0) {
          // Headers from the connection's output buffer, Data-In straight from task buffers.
          io_uring_sqe* sqe = get_sqe();
          if (n == 1) {
            io_uring_prep_send(sqe, c.fd.get(), c.tx_iov[0].iov_base, c.tx_iov[0].iov_len, MSG_NOSIGNAL | MSG_WAITALL);
          } else {
            c.tx_msg = {};
            c.tx_msg.msg_iov = c.tx_iov;
            c.tx_msg.msg_iovlen = n;
            io_uring_prep_sendmsg(sqe, c.fd.get(), &c.tx_msg, MSG_NOSIGNAL | MSG_WAITALL);
          }
          io_uring_sqe_set_data64(sqe, tag(&c, kSend));
          c.send_pending = true;
        }
      }
      if (!c.eof && !c.recv_pending && tc.wants_input()) {
        // The staging buffer, or the rest of a data segment into its task's buffer first.
        const size_t n = tc.rx_iov(c.rx_iov);
        io_uring_sqe* sqe = get_sqe();
        if (n == 1) {
          io_uring_prep_recv(sqe, c.fd.get(), c.rx_iov[0].iov_base, c.rx_iov[0].iov_len, 0);
        } else {
          c.rx_msg = {};
          c.rx_msg.msg_iov = c.rx_iov;
          c.rx_msg.msg_iovlen = n;
          io_uring_prep_recvmsg(sqe, c.fd.get(), &c.rx_msg, 0);
        }
        io_uring_sqe_set_data64(sqe, tag(&c, kRecv));
        c.recv_pending = true;
      }
      if (tc.closing() && !c.shut && !c.send_pending && (c.eof || !tc.has_output())) {
        ::shutdown(c.fd.get(), SHUT_RDWR);  // ends a receive still pending
        c.shut = true;
      } else if (tc.closing() && !c.shut && c.send_pending && tc.superseded()) {
        // Its session was reinstated: the initiator does not read here any more (a path that
        // went down, say), and the new login waits for this connection to be gone. Shut now
        // (ends the send) rather than after nop_timeout.
        ::shutdown(c.fd.get(), SHUT_RDWR);
        c.shut = true;
      } else if (tc.closing() && !c.shut && c.send_pending) {
        // The last output waits for a peer that does not read (the session ended because it
        // did not answer, say): given nop_timeout_ms more, then the socket is shut, which
        // ends the send (EPIPE) and frees the connection and its buffers. Otherwise such a
        // peer would hold them for as long as it keeps the connection open.
        if (!c.stuck_since_ms) {
          c.stuck_since_ms = now;
        } else if (now - c.stuck_since_ms > tc.settings().nop_timeout_ms) {
          VCP_LOG_DEBUG("target: closing connection: {} KiB of output not taken in {} ms; shut",
                        tc.unsent_bytes() >> 10, now - c.stuck_since_ms);
          ::shutdown(c.fd.get(), SHUT_RDWR);
          c.shut = true;
        }
      }
      if (c.shut && !c.recv_pending && !c.send_pending && tc.finished()) {
        VCP_LOG_DEBUG("target: connection closed ({})", tc.close_reason());
        conns_[i] = std::move(conns_.back());
        conns_.pop_back();
        continue;
      }
      ++i;
    }
    // A connection gone with buffers still counted (its output unsent) leaves room behind.
    if (!ctx_.buffers.waiting.empty()) TargetConnection::pump_thread_room(ctx_);
  }

  void take_incoming(uint64_t now) {
    uint64_t v;
    while (::read(wake_fd_.get(), &v, sizeof(v)) > 0) {
    }
    std::vector<Incoming> fds;
    {
      std::lock_guard lock(mu_);
      fds.swap(incoming_);
    }
    for (auto [fd, refuse] : fds) {
      auto c = std::make_unique<Conn>(connections_, thread_connections_);
      c->fd.reset(fd);
      if (stop_.load(std::memory_order_acquire)) continue;  // closes it
      c->c = std::make_unique<TargetConnection>(ctx_, now);
      const TargetSettings& lim = c->c->settings();  // the limits it keeps to
      if (refuse)
        c->c->refuse_login("too many connections (max_connections " + std::to_string(lim.max_connections) + ")");
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof(peer);
      IpAddress peer_ip;
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0)
        peer_ip = ip_address_of(reinterpret_cast<sockaddr*>(&peer), peer_len);
      c->c->set_peer_address(peer_ip);
      const bool sendfile = lim.sendfile == TargetSettings::Sendfile::On ||
                            (lim.sendfile == TargetSettings::Sendfile::Auto && !same_machine(fd, peer_ip));
      c->c->set_sendfile(sendfile);
      // For the sends this thread makes itself (send_inline: sendfile has no flag for it);
      // io_uring's operations wait for the socket whatever the flag says.
      if (sendfile) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      if (access_.load()->wildcard_portal) {
        // Through a wildcard portal, SendTargets names the address this connection reached.
        if (auto host = local_host(fd)) {
          c->c->set_target_address(iscsi::target_address(*host, local_port(fd), settings_.portal_group_tag));
        }
      }
      conns_.push_back(std::move(c));
    }
  }

  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }
  void arm_wake() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_poll_add(sqe, wake_fd_.get(), POLLIN);
    io_uring_sqe_set_data64(sqe, tag(uint64_t{0}, kWake));
  }
  void arm_timer() {
    timer_.tv_sec = 0;
    timer_.tv_nsec = 250'000'000;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_timeout(sqe, &timer_, 0, 0);
    io_uring_sqe_set_data64(sqe, tag(uint64_t{0}, kTimer));
  }
  // A backend's wait_fd is an eventfd it signals and never drains: reading it (rather than
  // polling it) both waits for completions and resets it, in one operation.
  void arm_lun_polls() {
    for (size_t i = 0; i < slots_.size(); ++i) {
      LunSlot& s = slots_[i];
      if (!s.lun || s.poll_pending || s.closing) continue;
      int fd = s.lun->wait_fd();
      if (fd < 0) continue;
      io_uring_sqe* sqe = get_sqe();
      io_uring_prep_read(sqe, fd, &s.wait_count, sizeof(uint64_t), 0);
      io_uring_sqe_set_data64(sqe, tag(uint64_t{i}, kLunPoll));
      s.poll_pending = true;
    }
  }

  unsigned index_;
  int cpu_;
  const TargetSettings& settings_;  // the LUNs, buffer_bytes, max_tasks: as the process started
  const LimitsHolder& limits_;       // what connections take when they come
  const AccessHolder& access_;
  SessionRegistry& sessions_;
  std::vector<std::unique_ptr<BlockBackend>>& backends_;
  const std::vector<std::shared_ptr<scsi::SharedLuState>>& lu_states_;  // one per LUN, all threads
  std::atomic<uint32_t>& connections_;
  std::atomic<uint32_t> thread_connections_{0};
  std::thread thread_;
  UniqueFd wake_fd_;
  std::mutex mu_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  std::string error_;
  struct Incoming {
    int fd;
    bool refuse;
  };
  std::vector<Incoming> incoming_;
  std::vector<LunBatch> changes_;  // in the order posted: a LUN removed, then one of its number added
  std::vector<std::shared_ptr<StatusRequest>> reports_;
  bool exited_ = false;  // the loop is over (under mu_)
  std::atomic<bool> stop_{false};

  // Owned by the I/O thread.
  io_uring ring_{};
  bool ring_ok_ = false;
  __kernel_timespec timer_{};
  ThreadContext ctx_;
  // Removed LUNs whose Lun is still here (its commands run to their end); declared before
  // slots_ so that what is left at exit goes after the Luns.
  struct Retiring {
    size_t slot;
    size_t target;  // whose `draining` lists it
    std::shared_ptr<Retirement> retirement;
  };
  std::vector<Retiring> retiring_;
  std::vector<std::shared_ptr<Retirement>> kept_;  // removed after the loop ended (under mu_)
  // A Lun and this thread's queue on its backend, with the read pending on its wait_fd; a slot
  // stays in place (the read's completion names it by index), freed slots are used again.
  struct LunSlot {
    std::unique_ptr<BackendQueue> queue;
    std::unique_ptr<scsi::Lun> lun;  // after queue: destroyed first
    bool poll_pending = false;
    bool closing = false;  // removed and let go of: its pending read is being cancelled
    uint64_t wait_count = 0;  // the read's target
  };
  std::deque<LunSlot> slots_;
  std::vector<std::unique_ptr<Conn>> conns_;
};

std::unique_ptr<TargetServer> TargetServer::create(TargetSettings settings, std::string* error) {
  if (!validate(settings, error)) return nullptr;
  std::unique_ptr<TargetServer> s(new TargetServer());
  if (!settings.state_dir.empty() && !prepare_state_dir(settings.state_dir, error)) return nullptr;
  const std::vector<TargetSpec> targets = settings.all_targets();
  std::vector<NamedBackend> named;
  for (size_t ti = 0; ti < targets.size(); ++ti) {
    for (const auto& l : targets[ti].luns) {
      std::string why;
      auto b = make_backend(l.backend, &why);
      const std::string name = lun_and_spec(l, targets[ti], ti);
      if (!b) {
        *error = name + ": " + why;
        return nullptr;
      }
      if (identity_clash(name, *b, named, error)) return nullptr;
      named.emplace_back(name, b.get());
      auto state = make_lu_state(settings, targets[ti], l, name, *b, error);
      if (!state) return nullptr;
      s->lu_states_.push_back(std::move(state));
      s->backends_.push_back(std::move(b));
    }
  }
  // Every portal listens before anything runs: one that cannot fails the start, with its
  // address in the error. Port 0 takes one the kernel picks (written back to the settings).
  std::vector<Portal> portals = settings.portals();
  for (Portal& p : portals) {
    auto l = listen_on(p, error);
    if (!l) return nullptr;
    p = l->bound;
    s->listeners_.push_back(std::move(l));
  }
  settings.port = portals[0].port;
  settings.more_portals.assign(portals.begin() + 1, portals.end());
  for (size_t ti = 0, k = 0; ti < targets.size(); ++ti) {
    s->inventory_.emplace_back();
    for (const auto& l : targets[ti].luns) s->inventory_.back().push_back({l, s->backends_[k++].get()});
  }
  s->stop_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  s->portals_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_fd_ || !s->portals_fd_) {
    *error = "eventfd: " + errno_str(errno);
    return nullptr;
  }
  s->settings_ = std::move(settings);
  s->limits_.store(std::make_shared<const TargetSettings>(s->settings_));
  s->targets_ = s->settings_.all_targets();
  s->removed_.assign(s->targets_.size(), false);
  s->access_.store(std::make_shared<const AccessSettings>(AccessSettings::of(s->settings_)));
  return s;
}

TargetServer::~TargetServer() {
  stop();
  for (auto& t : threads_) t->join();
}

std::shared_ptr<TargetServer::Listener> TargetServer::listen_on(const Portal& p, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* ai = nullptr;
  const std::string port = std::to_string(p.port);
  if (int rc = getaddrinfo(p.host.c_str(), port.c_str(), &hints, &ai); rc != 0) {
    *error = "portal " + p.host + ": " + gai_strerror(rc) + " (give a numeric address)";
    return nullptr;
  }
  UniqueFd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  if (fd) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (!fd || bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd.get(), 128) != 0) {
    *error = "cannot listen on " + iscsi::host_port(p.host, p.port) + ": " + errno_str(errno);
    freeaddrinfo(ai);
    return nullptr;
  }
  freeaddrinfo(ai);
  auto l = std::make_shared<Listener>();
  l->configured = p;
  l->bound = {p.host, local_port(fd.get())};
  l->fd = std::move(fd);
  return l;
}

std::string TargetServer::address() const { return addresses()[0]; }

std::vector<std::string> TargetServer::addresses() const {
  std::lock_guard lock(portals_mu_);
  std::vector<std::string> out;
  for (const auto& l : listeners_) out.push_back(iscsi::host_port(l->bound.host, l->bound.port));
  return out;
}

void TargetServer::fill_portals(AccessSettings& a) const {
  std::vector<Portal> bound;
  for (const auto& l : listeners_) bound.push_back(l->bound);
  a.set_portals(bound, settings_.portal_group_tag);
}

bool TargetServer::set_portals(const std::vector<Portal>& wanted, std::vector<std::string>* added,
                               std::vector<std::string>* removed, std::string* error) {
  std::unique_lock lock(portals_mu_);
  std::vector<std::shared_ptr<Listener>> now = listeners_, next;
  std::vector<std::shared_ptr<Listener>> opened;
  for (const Portal& p : wanted) {
    // A portal already listening keeps its socket: given as before, or by the port it got
    // (HOST:0 at start, HOST:PORT now). Each is matched once: two "HOST:0" are two.
    auto same = std::find_if(now.begin(), now.end(), [&](const auto& l) { return l && l->configured == p; });
    if (same == now.end() && p.port != 0)
      same = std::find_if(now.begin(), now.end(), [&](const auto& l) { return l && l->bound == p; });
    if (same != now.end()) {
      next.push_back(std::move(*same));
      continue;
    }
    auto l = listen_on(p, error);
    if (!l) return false;  // what was opened closes with `opened`
    opened.push_back(l);
    next.push_back(std::move(l));
  }
  for (const auto& l : opened) added->push_back(iscsi::host_port(l->bound.host, l->bound.port));
  for (const auto& l : now)
    if (l) removed->push_back(iscsi::host_port(l->bound.host, l->bound.port));
  listeners_ = std::move(next);
  ++listeners_gen_;
  AccessSettings a = *access_.load();
  fill_portals(a);
  access_.store(std::make_shared<const AccessSettings>(std::move(a)));
  lock.unlock();
  const uint64_t one = 1;
  (void)!::write(portals_fd_.get(), &one, sizeof one);
  return true;
}

void TargetServer::stop() {
  stopping_.store(true, std::memory_order_release);
  uint64_t one = 1;
  if (stop_fd_) {
    ssize_t rc = ::write(stop_fd_.get(), &one, sizeof(one));
    (void)rc;
  }
}

std::vector<std::string> TargetServer::set_limits(const TargetSettings& from) {
  std::lock_guard lock(change_mu_);  // one reload's limits at a time
  auto next = std::make_shared<TargetSettings>(*limits_.load());
  std::vector<std::string> changed = take_live_limits(*next, from);
  if (!changed.empty()) limits_.store(std::move(next));
  return changed;
}

void TargetServer::set_access(AccessSettings a) {
  std::lock_guard lock(portals_mu_);  // the portals as they are, never an older list
  fill_portals(a);
  access_.store(std::make_shared<const AccessSettings>(std::move(a)));
}

int TargetServer::run() {
  std::vector<int> cpus = settings_.cpus;
  if (cpus.empty()) cpus.push_back(-1);
  std::unique_lock change(change_mu_);  // add_luns() sees all threads or none
  for (size_t i = 0; i < cpus.size(); ++i) {
    threads_.push_back(std::make_unique<IoThread>(static_cast<unsigned>(i), cpus[i], settings_, limits_, access_, sessions_, backends_,
                                                  lu_states_, connections_));
    threads_.back()->start();
    if (threads_.back()->failed()) {
      VCP_LOG_ERROR("vcp target: {}", threads_.back()->error());
      for (auto& t : threads_) {
        t->stop();
        t->join();
      }
      threads_.clear();
      return EIO;
    }
  }
  change.unlock();
  size_t next = 0;
  uint64_t shed = 0;
  // The listeners polled, taken again when set_portals() changes them: those it removed are
  // closed here, when `active` lets go of them, never while a poll may still wait on them.
  std::vector<std::shared_ptr<Listener>> active;
  std::vector<Acceptor> acceptors;
  std::vector<pollfd> fds;
  uint64_t gen = UINT64_MAX;
  constexpr size_t kFirst = 2;  // fds: stop, portals changed, then one per listener
  auto take_listeners = [&] {
    std::lock_guard lock(portals_mu_);
    if (gen == listeners_gen_) return;
    gen = listeners_gen_;
    active = listeners_;
    acceptors.clear();
    fds = {{stop_fd_.get(), POLLIN, 0}, {portals_fd_.get(), POLLIN, 0}};
    for (const auto& l : active) {
      acceptors.emplace_back(l->fd.get(), "vcp target");
      fds.push_back({l->fd.get(), POLLIN, 0});
    }
  };
  size_t turn = 0;  // the portal looked at first: in turn, so that a busy one cannot starve another
  while (!stopping_.load(std::memory_order_acquire)) {
    take_listeners();
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    if (fds[1].revents) {
      uint64_t v;
      (void)!::read(portals_fd_.get(), &v, sizeof v);
      continue;
    }
    size_t from = acceptors.size();
    for (size_t k = 0; k < acceptors.size(); ++k) {
      const size_t i = (turn + k) % acceptors.size();
      if (fds[kFirst + i].revents & POLLIN) {
        from = i;
        break;
      }
    }
    if (from == acceptors.size()) continue;
    turn = (from + 1) % acceptors.size();
    UniqueFd conn = acceptors[from].accept();  // out of descriptors: sheds the connection, never spins
    if (!conn) continue;
    // Beyond max_connections a connection is told so at login ("out of resources"); beyond a
    // few dozen more it is closed at once (a flood must not hold descriptors for 15 s each).
    const uint32_t n = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
    const uint32_t max_connections = limits_.load()->max_connections;
    const bool refuse = n > max_connections;
    if (n > max_connections + kRefusingConnections) {
      connections_.fetch_sub(1, std::memory_order_relaxed);
      if (log::thin(++shed))
        VCP_LOG_WARN("vcp target: {} connections already (max_connections {}): new ones closed at once ({} so far)",
                     n - 1, max_connections, shed);
      continue;
    }
    const int fd = conn.release();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    // Room for a few whole Data-In bursts: a send that stops half way waits for the peer's
    // ACKs, which a reading initiator delays (it has nothing to send back).
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    // To the I/O thread with the fewest connections (with connections coming and going, turns
    // alone could pile them onto one thread and leave another idle); among equals, in turn.
    size_t to = next;
    for (size_t k = 1; k < threads_.size(); ++k) {
      const size_t i = (next + k) % threads_.size();
      if (threads_[i]->connection_count() < threads_[to]->connection_count()) to = i;
    }
    threads_[to]->hand_over(fd, refuse);
    next = (to + 1) % threads_.size();
  }
  for (auto& t : threads_) t->stop();
  for (auto& t : threads_) t->join();
  change.lock();
  threads_.clear();
  return 0;
}

bool TargetServer::add_target(const TargetSpec& spec, std::string* error) {
  std::lock_guard lock(change_mu_);
  for (size_t i = 0; i < targets_.size(); ++i)
    if (!removed_[i] && iscsi::same_iscsi_name(targets_[i].iqn, spec.iqn)) {
      *error = "a target named " + targets_[i].iqn + " exists";
      return false;
    }
  if (!post_luns(targets_.size(), spec, spec.luns, Post::new_target, error)) return false;
  targets_.push_back(spec);
  removed_.push_back(false);
  return true;
}

bool TargetServer::add_luns(size_t target, const std::vector<LunSpec>& luns, std::string* error) {
  std::lock_guard lock(change_mu_);
  if (target >= targets_.size() || removed_[target]) {
    *error = "no target " + std::to_string(target);
    return false;
  }
  return post_luns(target, targets_[target], luns, Post::add, error);
}

bool TargetServer::replace_luns(size_t target, const std::vector<LunSpec>& luns, std::string* error) {
  std::lock_guard lock(change_mu_);
  if (target >= targets_.size() || removed_[target]) {
    *error = "no target " + std::to_string(target);
    return false;
  }
  return post_luns(target, targets_[target], luns, Post::replace, error);
}

bool TargetServer::remove_luns(size_t target, const std::vector<uint32_t>& numbers, std::string* error) {
  std::lock_guard lock(change_mu_);
  return remove_luns_locked(target, numbers, error);
}

bool TargetServer::remove_target(size_t target, std::string* error) {
  std::lock_guard lock(change_mu_);
  if (target >= targets_.size() || removed_[target]) {
    *error = "no target " + std::to_string(target);
    return false;
  }
  std::vector<uint32_t> numbers;
  for (const auto& [l, b] : inventory_[target]) numbers.push_back(l.number);
  if (!numbers.empty() && !remove_luns_locked(target, numbers, error)) return false;
  removed_[target] = true;
  return true;
}

bool TargetServer::remove_luns_locked(size_t target, const std::vector<uint32_t>& numbers, std::string* error) {
  if (threads_.empty()) {
    *error = "the target is not running";
    return false;
  }
  if (target >= targets_.size() || removed_[target]) {
    *error = "no target " + std::to_string(target);
    return false;
  }
  auto& inv = inventory_[target];
  for (uint32_t n : numbers)
    if (std::none_of(inv.begin(), inv.end(), [n](const auto& e) { return e.first.number == n; })) {
      *error = "LUN " + std::to_string(n) + (target ? " of " + targets_[target].iqn : "") + " does not exist";
      return false;
    }
  std::vector<std::vector<GoneLun>> posts(threads_.size());
  for (uint32_t n : numbers) {
    auto r = retire(target, n);
    for (size_t i = 0; i < threads_.size(); ++i) posts[i].push_back(GoneLun{target, n, r});
  }
  on_every_thread([&](size_t i, std::shared_ptr<ChangeLatch> latch) {
    threads_[i]->remove_luns(std::move(posts[i]), std::move(latch));
  });
  return true;
}

// Under change_mu_: takes an existing LUN out of the inventory, its backend and state into a
// Retirement for the I/O threads to close once they all let go of it.
std::shared_ptr<Retirement> TargetServer::retire(size_t target, uint32_t number) {
  auto& inv = inventory_[target];
  auto e = std::find_if(inv.begin(), inv.end(), [number](const auto& x) { return x.first.number == number; });
  auto r = std::make_shared<Retirement>();
  r->name = lun_name(e->first, targets_[target], target);
  r->left = threads_.size();
  auto b = std::find_if(backends_.begin(), backends_.end(), [&](const auto& p) { return p.get() == e->second; });
  const auto k = b - backends_.begin();
  r->backend = std::move(*b);
  backends_.erase(b);
  lu_states_.erase(lu_states_.begin() + k);
  inv.erase(e);
  return r;
}

bool TargetServer::set_alias(size_t target, const std::string& alias, std::string* error) {
  std::lock_guard lock(change_mu_);
  if (threads_.empty() || target >= targets_.size() || removed_[target]) {
    *error = threads_.empty() ? "the target is not running" : "no target " + std::to_string(target);
    return false;
  }
  on_every_thread([&](size_t i, std::shared_ptr<ChangeLatch> latch) { threads_[i]->set_alias(target, alias, std::move(latch)); });
  targets_[target].alias = alias;
  return true;
}

std::vector<std::string> TargetServer::grow_luns() {
  std::lock_guard lock(change_mu_);
  std::vector<std::string> said;
  std::vector<GrownLun> grown;
  for (size_t ti = 0; ti < targets_.size(); ++ti) {
    if (removed_[ti]) continue;
    for (auto& [l, b] : inventory_[ti]) {
      const uint64_t was = b->info().capacity_bytes;
      bool shrunk = false;
      const uint64_t now = b->grow(&shrunk);
      const std::string name = lun_name(l, targets_[ti], ti);
      if (now > was) {
        grown.push_back({ti, l.number, now});
        said.push_back(fmt::format("{} grew from {} to {} bytes ({})", name, was, now, l.backend));
      } else if (shrunk) {
        said.push_back(fmt::format("{} ({}) is smaller than the {} bytes it serves: not shrunk (reads past its end fail)",
                                   name, l.backend, was));
      }
    }
  }
  if (!grown.empty() && !threads_.empty())
    on_every_thread([&](size_t i, std::shared_ptr<ChangeLatch> latch) { threads_[i]->grow_luns(grown, std::move(latch)); });
  return said;
}

// Under change_mu_: post(i, latch) hands a change to I/O thread i; returns once every thread
// has taken its change (latch->done()).
void TargetServer::on_every_thread(const std::function<void(size_t, std::shared_ptr<ChangeLatch>)>& post) {
  auto latch = std::make_shared<ChangeLatch>();
  latch->left = threads_.size();
  for (size_t i = 0; i < threads_.size(); ++i) post(i, latch);
  std::unique_lock wait(latch->mu);
  latch->cv.wait(wait, [&] { return latch->left == 0; });
}

// add_luns() and add_target(), under change_mu_: LUNs for target `target`, new or not.
bool TargetServer::post_luns(size_t target, const TargetSpec& spec, const std::vector<LunSpec>& luns, Post how,
                             std::string* error) {
  if (threads_.empty()) {
    *error = "the target is not running";
    return false;
  }
  const bool new_target = how == Post::new_target, replace = how == Post::replace;
  std::vector<uint32_t> numbers, seen;
  if (!new_target)
    for (const auto& [l, b] : inventory_[target]) numbers.push_back(l.number);
  for (const auto& l : luns) {
    const bool exists = std::find(numbers.begin(), numbers.end(), l.number) != numbers.end();
    if (exists != replace || std::find(seen.begin(), seen.end(), l.number) != seen.end()) {
      *error = lun_name(l, spec, target) + (exists ? " exists" : " does not exist");
      return false;
    }
    seen.push_back(l.number);
  }
  // Everything that can fail first (the backends, a queue per thread); then the threads take
  // them, which cannot.
  std::vector<std::unique_ptr<BlockBackend>> made;
  std::vector<std::shared_ptr<scsi::SharedLuState>> states;
  std::vector<std::vector<NewLun>> posts(threads_.size());
  // The disks served now, but for those being replaced: no new one may go by one's identity.
  std::vector<NamedBackend> named;
  for (size_t ti = 0; ti < inventory_.size(); ++ti) {
    if (removed_[ti]) continue;
    for (const auto& [l, b] : inventory_[ti]) {
      if (replace && ti == target && std::find(seen.begin(), seen.end(), l.number) != seen.end()) continue;
      named.emplace_back(lun_and_spec(l, targets_[ti], ti), b);
    }
  }
  for (const auto& l : luns) {
    std::string why;
    auto b = make_backend(l.backend, &why);
    const std::string name = lun_and_spec(l, spec, target);
    if (!b) {
      *error = name + ": " + why;
      return false;
    }
    if (identity_clash(name, *b, named, error)) return false;
    named.emplace_back(name, b.get());
    auto state = make_lu_state(settings_, spec, l, name, *b, error);
    if (!state) return false;
    for (size_t i = 0; i < threads_.size(); ++i) {
      auto q = b->open_queue(static_cast<unsigned>(i));
      if (!q) {
        *error = lun_name(l, spec, target) + ": cannot open a backend queue: " + errno_str(q.error());
        return false;
      }
      posts[i].push_back(NewLun{target, l.number, b.get(), state, std::move(*q)});
    }
    made.push_back(std::move(b));
    states.push_back(std::move(state));
  }
  // Replaced: the old LUNs leave in the same turn of each thread as the new ones come.
  std::vector<std::vector<GoneLun>> gone(threads_.size());
  if (replace)
    for (const auto& l : luns) {
      auto r = retire(target, l.number);
      for (size_t i = 0; i < threads_.size(); ++i) gone[i].push_back(GoneLun{target, l.number, r});
    }
  on_every_thread([&](size_t i, std::shared_ptr<ChangeLatch> latch) {
    std::optional<std::pair<std::string, std::string>> t;
    if (new_target) t.emplace(spec.iqn, spec.alias);
    threads_[i]->add_luns(std::move(posts[i]), std::move(latch), std::move(t), std::move(gone[i]));
  });
  if (new_target) inventory_.emplace_back();
  for (size_t i = 0; i < made.size(); ++i) {
    inventory_[target].push_back({luns[i], made[i].get()});
    backends_.push_back(std::move(made[i]));
  }
  for (auto& st : states) lu_states_.push_back(std::move(st));
  return true;
}

std::vector<std::string> TargetServer::status() {
  std::lock_guard lock(change_mu_);
  std::vector<std::string> out;
  std::string portals;
  for (const std::string& a : addresses()) portals += (portals.empty() ? "" : ", ") + a;
  const auto lim = limits_.load();
  out.push_back(fmt::format("status: {} connections (max_connections {}), {} I/O threads, sendfile {} (READs from {} KiB), "
                            "portals {}",
                            connections_.load(), lim->max_connections, threads_.size(), to_string(lim->sendfile),
                            lim->sendfile_min >> 10, portals));
  out.push_back(fmt::format("status: new sessions get MaxRecvDataSegmentLength {}, MaxBurstLength {}, FirstBurstLength {}, "
                            "InitialR2T {}, ImmediateData {}, a window of {} commands",
                            lim->limits.max_recv_data_segment_length, lim->limits.max_burst_length,
                            lim->limits.first_burst_length, lim->limits.initial_r2t ? "Yes" : "No",
                            lim->limits.immediate_data ? "Yes" : "No", lim->cmd_window));
  const auto access = this->access();
  const std::vector<TargetSpec>& targets = targets_;
  for (size_t ti = 0; ti < targets.size(); ++ti) {
    if (removed_[ti]) continue;
    std::string luns;
    auto sorted = inventory_[ti];
    std::sort(sorted.begin(), sorted.end(), [](auto& x, auto& y) { return x.first.number < y.first.number; });
    for (const auto& [l, b] : sorted) {
      const BackendInfo& info = b->info();
      // Its shared state: lu_states_ follows backends_.
      std::string pr;
      for (size_t k = 0; k < backends_.size(); ++k)
        if (backends_[k].get() == b) pr = lu_states_[k]->reservations_summary();
      luns += fmt::format("{}LUN {} {} ({} MiB{}{})", luns.empty() ? "" : "; ", l.number, l.backend,
                          info.capacity_bytes >> 20, info.read_only ? ", read-only" : "", pr.empty() ? "" : ", " + pr);
    }
    const TargetAccess* a = ti < access->targets.size() ? &access->targets[ti] : nullptr;
    out.push_back(fmt::format("target {}{}: {}; access: {} initiator names, {} address ranges (none: any), CHAP {}",
                              targets[ti].iqn, targets[ti].alias.empty() ? "" : " (" + targets[ti].alias + ")", luns,
                              a ? a->acl.names.size() : 0, a ? a->acl.addresses.size() : 0,
                              a && a->chap ? (a->mutual_chap ? "mutual" : "on") : "off"));
  }
  if (threads_.empty()) return out;
  auto req = std::make_shared<StatusRequest>();
  req->left = threads_.size();
  req->lines.resize(threads_.size());
  for (auto& t : threads_) t->report(req);
  std::unique_lock wait(req->mu);
  (void)req->cv.wait_for(wait, std::chrono::seconds(5), [&] { return req->left == 0; });
  for (size_t i = 0; i < req->lines.size(); ++i) {
    if (req->lines[i].empty()) out.push_back("I/O thread " + std::to_string(i) + ": no answer within 5 s");
    for (auto& l : req->lines[i]) out.push_back(std::move(l));
  }
  return out;
}

}  // namespace vcp::target

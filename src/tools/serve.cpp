// `vcp serve`: a VCP serving one block device as a vhost-user-blk backend on a unix socket.
//
// The control thread (this one) accepts one frontend at a time and feeds its vhost-user
// messages to the protocol layer; queue threads do the I/O. A frontend that goes away (or
// misbehaves and is disconnected) leaves the device reset and the socket listening for the
// next one: a QEMU with reconnect=1 comes back to the same VCP.
//
// SIGHUP reads the backend's size again (a file or device grown since); a backend can also
// report a change itself (an iSCSI LUN's CAPACITY DATA HAS CHANGED). A larger size is served
// at once and the front-end is told over the vhost-user back-end channel (CONFIG_CHANGE_MSG),
// so a guest's disk grows with nothing restarted. SIGUSR1 logs a status report.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iterator>

#include "backends/block_backend.hpp"
#include "base/acceptor.hpp"
#include "base/cpu.hpp"
#include "base/log.hpp"
#include "base/parse.hpp"
#include "base/service_notify.hpp"
#include "tools/commands.hpp"
#include "vcp/blk_device.hpp"
#include "vhost/backend.hpp"

namespace vcp::tools {
namespace {

struct ServeArgs {
  std::string socket;
  std::string backend;
  uint16_t queues = 1;
  uint16_t queue_size = 1024;
  std::string cpus;
  std::string poll = "adaptive";
  uint32_t spin_us = 50;
  uint32_t coalesce_us = BlkDeviceOptions{}.coalescing.usecs;
  uint32_t coalesce_count = BlkDeviceOptions{}.coalescing.max_completions;
  uint32_t coalesce_depth = BlkDeviceOptions{}.coalescing.depth;
  uint32_t kick_wait_us = BlkDeviceOptions{}.kick_wait_us;
};

Result<UniqueFd> listen_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return Err(ENAMETOOLONG);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Err(errno);
  // A socket file left by a VCP that died is in the way; anything else at that path is not ours.
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Err(EEXIST);
    unlink(path.c_str());
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Err(errno);
  if (listen(fd.get(), 4) != 0) return Err(errno);
  return fd;
}

int run_serve(const ServeArgs& a) {
  // Blocked before any thread exists (backends and queue workers start threads): threads inherit
  // the mask, so SIGINT/SIGTERM reach only the signalfd below and shut down cleanly.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);

  std::string error;
  auto backend = make_backend(a.backend, &error);
  if (!backend) {
    std::fprintf(stderr, "vcp serve: bad --backend '%s': %s\n", a.backend.c_str(), error.c_str());
    return 2;
  }
  BlkDeviceOptions opts;
  opts.num_queues = a.queues;
  opts.max_queue_size = a.queue_size;
  opts.spin_us = a.spin_us;
  opts.coalescing = {a.coalesce_us, a.coalesce_count, a.coalesce_depth};
  opts.kick_wait_us = a.kick_wait_us;
  auto mode = parse_poll_mode(a.poll);
  if (!mode) {
    std::fprintf(stderr, "vcp serve: --poll must be always, adaptive or never\n");
    return 2;
  }
  opts.poll_mode = *mode;
  if (!a.cpus.empty()) {
    auto cpus = parse_cpu_list(a.cpus);
    if (!cpus) {
      std::fprintf(stderr, "vcp serve: bad --cpu '%s' (expected a list such as 1 or 0-3,6)\n", a.cpus.c_str());
      return 2;
    }
    for (int c : *cpus) {
      if (c >= online_cpus()) {
        std::fprintf(stderr, "vcp serve: --cpu %d: this machine has CPUs 0-%d\n", c, online_cpus() - 1);
        return 2;
      }
    }
    opts.cpus = *cpus;
  }
  const std::string desc = backend->info().description;
  auto device = BlkDevice::create(std::move(backend), opts, &error);
  if (!device) {
    std::fprintf(stderr, "vcp serve: %s\n", error.c_str());
    return 1;
  }

  signal(SIGPIPE, SIG_IGN);
  UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC));

  auto lfd = listen_unix(a.socket);
  if (!lfd) {
    std::fprintf(stderr, "vcp serve: cannot listen on %s: %s\n", a.socket.c_str(), errno_str(lfd.error()).c_str());
    return 1;
  }
  VCP_LOG_INFO("serving {} on {} ({} queue{}, poll {})", desc, a.socket, a.queues, a.queues > 1 ? "s" : "",
               a.poll);
  std::printf("vcp: ready on %s\n", a.socket.c_str());
  std::fflush(stdout);
  // The socket listens: a front-end started from now on connects (systemd's Type=notify).
  const std::string serving = "serving " + desc + " on " + a.socket;
  notify_service_manager_or_warn("READY=1\nSTATUS=" + serving + ", no front-end", "vcp serve");
  bool reloading = false;  // a SIGHUP's size read under way: READY=1 when it ends

  std::unique_ptr<vhost::VhostUserBackend> conn;
  // SIGHUP, or the backend noticed by itself: the size is read again on a thread of its own
  // (an iSCSI probe can take seconds, and this thread answers the front-end meanwhile).
  auto grow = [&](const char* why) {
    VCP_LOG_INFO("{}: reading the size again{}", why, device->growing() ? " after the read under way" : "");
    device->start_grow();
  };
  // The size read: if the device grew, the front-end is told, and its driver reads the new
  // capacity (a Linux guest logs "new size" and resizes vda).
  auto grown = [&] {
    const bool grew = device->finish_grow();
    if (reloading && !device->growing()) {  // the SIGHUP's size read, and any asked after it, done
      reloading = false;
      notify_service_manager_or_warn("READY=1", "vcp serve");
    }
    if (!grew) {
      if (!device->growing()) VCP_LOG_INFO("the size is unchanged ({} bytes)", device->capacity_bytes());
      return;
    }
    if (!conn) return;  // the next front-end reads the new capacity when it connects
    int r = conn->config_changed();
    if (r == -ENOTCONN)
      VCP_LOG_WARN("the front-end has no back-end channel (BACKEND_REQ, CONFIG): it sees the new size only when "
                   "it reads the config again");
    else if (r == 0)
      VCP_LOG_INFO("front-end told of the new capacity");
  };
  Acceptor acceptor(lfd->get(), "vcp serve");
  int rc = 0;
  for (;;) {
    pollfd fds[4 + vhost::VhostUserBackend::kPollFds] = {{sfd.get(), POLLIN, 0},
                                                         {lfd->get(), POLLIN, 0},
                                                         {device->resize_fd(), POLLIN, 0},
                                                         {device->grow_fd(), POLLIN, 0}};
    if (conn)
      conn->poll_fds(&fds[4]);
    else
      fds[4] = fds[5] = {-1, 0, 0};
    if (::poll(fds, std::size(fds), -1) < 0) {
      if (errno == EINTR) continue;
      rc = 1;
      break;
    }
    if (fds[0].revents) {
      signalfd_siginfo si{};
      const bool got = ::read(sfd.get(), &si, sizeof si) == sizeof si;
      if (got && si.ssi_signo == SIGHUP) {
        notify_service_manager_or_warn(reloading_state(), "vcp serve");
        reloading = true;
        grow("SIGHUP");
        continue;
      }
      if (got && si.ssi_signo == SIGUSR1) {
        VCP_LOG_INFO("status: serving {} on {}: capacity {} bytes, {} queue{}, front-end {}", desc, a.socket,
                     device->capacity_bytes(), a.queues, a.queues > 1 ? "s" : "",
                     !conn ? "none" : conn->has_backend_channel() ? "connected" : "connected (no back-end channel)");
        for (unsigned i = 0; i < a.queues; ++i) {
          QueueWorker& w = device->worker(i);
          w.log_stats(w.running() ? "running" : "stopped");
          w.log_backend_status();
        }
        continue;
      }
      VCP_LOG_INFO("signal received; shutting down");
      notify_service_manager_or_warn("STOPPING=1", "vcp serve");
      break;
    }
    if (fds[2].revents) {
      uint64_t v;
      (void)!::read(fds[2].fd, &v, sizeof v);
      grow("the backend reported a size change");
    }
    if (fds[3].revents) grown();
    if (conn) {
      int r = conn->on_ready(&fds[4]);
      if (r < 0) {
        if (r == -ECONNRESET)
          VCP_LOG_INFO("frontend disconnected");
        else
          VCP_LOG_ERROR("frontend dropped: {}", errno_str(r));
        conn.reset();
        device->reset();
        notify_service_manager_or_warn("STATUS=" + serving + ", no front-end", "vcp serve");
      }
    }
    if (fds[1].revents) {
      UniqueFd cfd = acceptor.accept();  // out of descriptors: sheds the connection, never spins
      if (!cfd) continue;
      if (conn) {
        // One frontend owns the device at a time; a second one is told no by a closed socket.
        VCP_LOG_WARN("refusing a second frontend while one is connected");
        continue;
      }
      VCP_LOG_INFO("frontend connected");
      conn = std::make_unique<vhost::VhostUserBackend>(*device, std::move(cfd));
      notify_service_manager_or_warn("STATUS=" + serving + ", front-end connected", "vcp serve");
    }
  }
  conn.reset();
  device->reset();
  unlink(a.socket.c_str());
  return rc;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  auto* sub = app.add_subcommand("serve", "Serve a block device as a vhost-user-blk VCP on a unix socket");
  sub->add_option("--socket", args->socket, "unix socket path to listen on")->required();
  sub->add_option("--backend", args->backend,
                  "null:size=SIZE | ram:size=SIZE | file:path=PATH[,direct=on][,ro=on] (block_size=N for all)")
      ->required();
  sub->add_option("--queues", args->queues, "number of virtqueues (one thread each)")->check(CLI::Range(1, 64));
  sub->add_option("--queue-size", args->queue_size, "largest virtqueue size accepted (power of two)");
  sub->add_option("--cpu", args->cpus, "CPUs for the queue threads, e.g. 1 or 0-1 (queue i on the i-th)");
  sub->add_option("--poll", args->poll, "always | adaptive | never")->check(CLI::IsMember({"always", "adaptive", "never"}));
  sub->add_option("--spin-us", args->spin_us, "adaptive polling: microseconds to spin before sleeping");
  sub->add_option("--coalesce-us", args->coalesce_us,
                  "interrupt coalescing: longest a completion waits for its call while other requests are in "
                  "flight (0: call at once)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  sub->add_option("--coalesce-count", args->coalesce_count,
                  "interrupt coalescing: call at the latest after this many completions (0: no limit)")
      ->check(CLI::Range(0, 65536));
  sub->add_option("--coalesce-depth", args->coalesce_depth,
                  "interrupt coalescing: call once the completions owed are 1/N of the requests outstanding "
                  "(0: no such rule)")
      ->check(CLI::Range(0, 65536))
      ->capture_default_str();
  sub->add_option("--kick-wait-us", args->kick_wait_us,
                  "kick moderation: while the backend completes requests, sleep without asking the driver for "
                  "kicks, new requests being taken at the next completion or after this many microseconds (0: off)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  sub->footer(
      "Signals: SIGHUP reads the backend's size again (a file grown since start-up) and, when it grew, serves "
      "the new size and tells the front-end (a guest's disk grows); SIGUSR1 logs a status report (the device, "
      "the front-end, each queue's counters); SIGINT and SIGTERM stop.");
  return [args] { return run_serve(*args); };
}

}  // namespace vcp::tools

// The floor under the channel, measured on this machine in the same run as what it anchors:
//  - CacheLinePingPong: a round trip of one cache line between two threads on two CPUs, the
//    least any shared-memory request/response across CPUs can cost;
//  - IoUringNop: the kernel's own asynchronous queue pair doing nothing, batched (qd 128) and
//    one at a time (submit and wait);
//  - EventfdWake: what a notification costs its sender: an eventfd write that wakes a thread
//    asleep (in poll) on the other CPU, whose CPU has gone idle, against one that wakes nobody.
//    A call to a sleeping client and a kick to a sleeping VCP are such writes; on a VM each
//    wake of an idle virtual CPU may be an exit to the hypervisor, paid by the writer.
// CPUs: the measuring thread on CPU 1, the echo thread on CPU 0 (VCP_BENCH_CPUS="a,b" to change).
#include <benchmark/benchmark.h>
#include <liburing.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "base/cpu.hpp"

namespace {

std::pair<int, int> bench_cpus() {
  if (const char* e = std::getenv("VCP_BENCH_CPUS")) {
    std::string s(e);
    auto comma = s.find(',');
    if (comma != std::string::npos) return {std::atoi(s.c_str()), std::atoi(s.c_str() + comma + 1)};
  }
  return {1, 0};  // client side, echo/VCP side
}

struct alignas(64) Line {
  std::atomic<uint64_t> v{0};
};

void CacheLinePingPong(benchmark::State& state) {
  auto [mine, theirs] = bench_cpus();
  vcp::pin_current_thread(mine);
  Line ping, pong;
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    vcp::pin_current_thread(theirs);
    uint64_t last = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      uint64_t v = ping.v.load(std::memory_order_acquire);
      if (v != last) {
        last = v;
        pong.v.store(v, std::memory_order_release);
      }
    }
  });
  uint64_t i = 0;
  for (auto _ : state) {
    ++i;
    ping.v.store(i, std::memory_order_release);
    while (pong.v.load(std::memory_order_acquire) != i) {
    }
  }
  stop = true;
  echo.join();
  // Time per iteration is the round trip.
}
BENCHMARK(CacheLinePingPong)->UseRealTime()->MinTime(1.0);

void IoUringNopBatch(benchmark::State& state) {
  auto [mine, theirs] = bench_cpus();
  (void)theirs;
  vcp::pin_current_thread(mine);
  const unsigned batch = static_cast<unsigned>(state.range(0));
  io_uring ring;
  if (io_uring_queue_init(batch, &ring, 0) < 0) {
    state.SkipWithError("io_uring_queue_init failed");
    return;
  }
  uint64_t ops = 0;
  for (auto _ : state) {
    for (unsigned i = 0; i < batch; ++i) io_uring_prep_nop(io_uring_get_sqe(&ring));
    io_uring_submit_and_wait(&ring, batch);
    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring, head, cqe) ++n;
    io_uring_cq_advance(&ring, n);
    ops += n;
  }
  io_uring_queue_exit(&ring);
  state.counters["ops_per_s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
}
BENCHMARK(IoUringNopBatch)->Arg(1)->Arg(128)->UseRealTime()->MinTime(1.0);

double thread_cpu_us() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

double mono_us() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

// Arg 1: the other thread sleeps in poll() on the eventfd (and answers on a second one, so
// each write finds it asleep again after a 50 us pause); Arg 0: nobody waits on it. The time
// per iteration is the write's CPU time on the writer's thread (manual time), the counter
// waker_cpu_us the same in microseconds.
void EventfdWake(benchmark::State& state) {
  auto [mine, theirs] = bench_cpus();
  vcp::pin_current_thread(mine);
  const bool sleeper = state.range(0) != 0;
  const int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int answer = eventfd(0, EFD_CLOEXEC);
  if (kick < 0 || answer < 0) {
    state.SkipWithError("eventfd failed");
    return;
  }
  std::atomic<bool> stop{false};
  std::thread other;
  if (sleeper) {
    other = std::thread([&] {
      vcp::pin_current_thread(theirs);
      uint64_t v = 0, one = 1;
      for (;;) {
        pollfd p{kick, POLLIN, 0};
        (void)::poll(&p, 1, -1);
        (void)!::read(kick, &v, sizeof v);
        if (stop.load(std::memory_order_acquire)) break;
        (void)!::write(answer, &one, sizeof one);
      }
    });
  }
  double spent = 0;
  uint64_t n = 0, one = 1, v = 0;
  for (auto _ : state) {
    const double a = thread_cpu_us();
    if (::write(kick, &one, sizeof one) != sizeof one) {
      state.SkipWithError("eventfd write failed");
      break;
    }
    const double d = thread_cpu_us() - a;
    state.SetIterationTime(d / 1e6);
    spent += d;
    ++n;
    if (sleeper) {
      (void)!::read(answer, &v, sizeof v);
      const double until = mono_us() + 50;  // the other thread and its CPU go back to sleep
      while (mono_us() < until) {
      }
    } else {
      (void)!::read(kick, &v, sizeof v);
    }
  }
  if (sleeper) {
    stop.store(true, std::memory_order_release);
    (void)!::write(kick, &one, sizeof one);
    other.join();
  }
  ::close(kick);
  ::close(answer);
  state.counters["waker_cpu_us"] = n ? spent / static_cast<double>(n) : 0;
}
BENCHMARK(EventfdWake)->Arg(0)->Arg(1)->UseManualTime()->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();

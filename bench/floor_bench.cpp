// The floor under the channel, measured on this machine in the same run as what it anchors:
//  - CacheLinePingPong: a round trip of one cache line between two threads on two CPUs, the
//    least any shared-memory request/response across CPUs can cost;
//  - IoUringNop: the kernel's own asynchronous queue pair doing nothing, batched (qd 128) and
//    one at a time (submit and wait).
// CPUs: the measuring thread on CPU 1, the echo thread on CPU 0 (VCP_BENCH_CPUS="a,b" to change).
#include <benchmark/benchmark.h>
#include <liburing.h>

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

}  // namespace

BENCHMARK_MAIN();

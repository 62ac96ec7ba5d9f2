// `vcp bench`: fio-like load through libvcp against any vhost-user-blk back-end (a VCP,
// qemu-storage-daemon ...). One queue per job thread; a progress line each second; at the end
// IOPS, MB/s, latency percentiles and the CPU time this process used.
#include <sys/resource.h>
#include <time.h>

#include <cinttypes>
#include <cstdio>
#include <thread>
#include <vector>

#include "base/clock.hpp"
#include "base/cpu.hpp"
#include "base/parse.hpp"
#include "tools/bench_backend_engine.hpp"
#include "tools/bench_load.hpp"
#include "tools/commands.hpp"
#include "vcp/client.hpp"

namespace vcp::tools {
namespace {

using bench::Engine;
using bench::EngineQueue;

// The channel engine: requests go through libvcp to whatever serves the socket.
class ChannelQueue final : public EngineQueue {
 public:
  ChannelQueue(client::Client& c, client::Queue& q) : c_(c), q_(q) {}
  ~ChannelQueue() override {
    if (mem_) c_.free(mem_);
  }
  uint8_t* buffers(size_t len) override {
    mem_ = c_.alloc(len);
    return static_cast<uint8_t*>(mem_);
  }
  int submit(bool write, uint64_t offset, uint8_t* buf, uint32_t len, uint32_t tag) override {
    void* user = reinterpret_cast<void*>(uintptr_t{tag});
    return write ? q_.write(offset, buf, len, user) : q_.read(offset, buf, len, user);
  }
  int reap(Done* out, unsigned max, unsigned min) override {
    client::Completion c[256];
    const int n = q_.wait(c, std::min(max, 256u), min);
    for (int i = 0; i < n; ++i) out[i] = {static_cast<uint32_t>(reinterpret_cast<uintptr_t>(c[i].user)), c[i].result};
    return n;
  }

 private:
  client::Client& c_;
  client::Queue& q_;
  void* mem_ = nullptr;
};

class ChannelEngine final : public Engine {
 public:
  explicit ChannelEngine(std::unique_ptr<client::Client> c) : c_(std::move(c)) {}
  uint64_t capacity() const override { return c_->info().capacity_bytes; }
  uint32_t block_size() const override { return c_->info().block_size; }
  unsigned max_queues() const override { return c_->num_queues(); }
  std::unique_ptr<EngineQueue> open_queue(unsigned i) override {
    return std::make_unique<ChannelQueue>(*c_, c_->queue(i));
  }

 private:
  std::unique_ptr<client::Client> c_;
};

struct BenchArgs {
  std::string socket;
  std::string backend;  // in-process instead of a socket
  std::string rw = "randread";
  std::string bs = "4k";
  unsigned qd = 32;
  unsigned batch = 1;
  unsigned jobs = 1;
  double time_s = 10;
  std::string size;
  bool verify = false;
  bool json = false;
  std::string cpus;
  std::string poll = "adaptive";
  unsigned read_percent = 50;
};

double now_s() { return double(now_ns()) * 1e-9; }

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

uint16_t queue_size_for(unsigned qd) {
  uint16_t s = 16;
  while (s < qd && s < 1024) s = static_cast<uint16_t>(s * 2);
  return s;
}

std::string human_rate(double v) {
  char b[32];
  if (v >= 1e6)
    std::snprintf(b, sizeof(b), "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(b, sizeof(b), "%.1fk", v / 1e3);
  else
    std::snprintf(b, sizeof(b), "%.0f", v);
  return b;
}

struct Totals {
  uint64_t ios = 0, bytes = 0, errors = 0, verified = 0;
  int first_error = 0;
  bool verify_failed = false;
  std::string message;
  bench::Histogram hist;
};

Totals add_up(const std::vector<std::unique_ptr<bench::JobResult>>& results) {
  Totals t;
  for (const auto& r : results) {
    t.ios += r->ios.load();
    t.bytes += r->bytes.load();
    t.errors += r->errors;
    t.verified += r->verified_blocks;
    if (!t.first_error) t.first_error = r->first_error;
    if (r->verify_failed && !t.verify_failed) {
      t.verify_failed = true;
      t.message = r->message;
    }
    t.hist.merge(r->hist);
  }
  return t;
}

void report(const BenchArgs& a, const Totals& t, double secs, double cpu, uint32_t bs) {
  const double iops = double(t.ios) / secs, mbs = double(t.bytes) / secs / 1e6;
  const double p50 = double(t.hist.quantile(0.5)) / 1e3, p99 = double(t.hist.quantile(0.99)) / 1e3,
               p999 = double(t.hist.quantile(0.999)) / 1e3;
  const double cpu_per_io_us = t.ios ? cpu / double(t.ios) * 1e6 : 0;
  if (a.json) {
    std::printf(
        "{\"rw\":\"%s\",\"bs\":%u,\"qd\":%u,\"batch\":%u,\"jobs\":%u,\"seconds\":%.3f,\"ios\":%" PRIu64
        ",\"iops\":%.1f,\"mb_per_s\":%.2f,\"lat_us\":{\"p50\":%.2f,\"p99\":%.2f,\"p99_9\":%.2f},"
        "\"client_cpu_s\":%.3f,\"client_cpu_us_per_io\":%.3f,\"errors\":%" PRIu64 ",\"verify\":%s,"
        "\"verified_blocks\":%" PRIu64 ",\"verify_failed\":%s}\n",
        a.rw.c_str(), bs, a.qd, a.batch, a.jobs, secs, t.ios, iops, mbs, p50, p99, p999, cpu, cpu_per_io_us, t.errors,
        a.verify ? "true" : "false", t.verified, t.verify_failed ? "true" : "false");
  } else {
    std::printf("%s bs=%u qd=%u batch=%u jobs=%u: %s IOPS, %.1f MB/s, latency us p50 %.2f p99 %.2f p99.9 %.2f\n",
                a.rw.c_str(), bs, a.qd, a.batch, a.jobs, human_rate(iops).c_str(), mbs, p50, p99, p999);
    std::printf("client CPU %.3f s (%.3f us per I/O), %" PRIu64 " I/Os in %.2f s, %" PRIu64 " errors\n", cpu,
                cpu_per_io_us, t.ios, secs, t.errors);
    if (a.verify) std::printf("verify: %" PRIu64 " blocks checked, %s\n", t.verified, t.verify_failed ? "FAILED" : "ok");
  }
  if (t.errors) std::fprintf(stderr, "vcp bench: %" PRIu64 " I/O errors (first: %s)\n", t.errors, errno_str(t.first_error).c_str());
  if (t.verify_failed) std::fprintf(stderr, "vcp bench: verify failed: %s\n", t.message.c_str());
}

int run_load(Engine& engine, const BenchArgs& a, const std::vector<bench::JobConfig>& cfgs) {
  std::vector<std::unique_ptr<EngineQueue>> queues;
  std::vector<std::unique_ptr<bench::JobResult>> results;
  for (unsigned j = 0; j < a.jobs; ++j) {
    queues.push_back(engine.open_queue(j));
    results.push_back(std::make_unique<bench::JobResult>());
  }
  std::atomic<bool> stop{false};
  std::atomic<unsigned> setup_failed{0};
  const double cpu0 = cpu_seconds(), t0 = now_s();
  std::vector<std::thread> threads;
  for (unsigned j = 0; j < a.jobs; ++j)
    threads.emplace_back([&, j] {
      name_current_thread("bench-" + std::to_string(j));
      if (!bench::run_job(*queues[j], cfgs[j], &stop, results[j].get())) setup_failed.fetch_add(1);
      // Closed on the thread that used it: io_uring cancels a thread's requests when it exits.
      queues[j].reset();
    });
  uint64_t last_ios = 0;
  double last_t = t0;
  for (int tick = 1; now_s() - t0 < a.time_s; ++tick) {
    const double wake = t0 + std::min(double(tick), a.time_s);
    while (now_s() < wake) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      bool failed = setup_failed.load() > 0;
      for (auto& r : results) failed = failed || r->verify_failed || r->errors > 0;
      if (failed) break;
    }
    uint64_t ios = 0, bytes = 0;
    for (auto& r : results) {
      ios += r->ios.load(std::memory_order_relaxed);
      bytes += r->bytes.load(std::memory_order_relaxed);
    }
    const double t = now_s();
    std::fprintf(stderr, "[%5.1fs] %s IOPS, %.1f MB/s (total %" PRIu64 " I/Os, %.1f MB)\n", t - t0,
                 human_rate(double(ios - last_ios) / (t - last_t)).c_str(),
                 double(ios - last_ios) * double(cfgs[0].bs) / (t - last_t) / 1e6, ios, double(bytes) / 1e6);
    last_ios = ios;
    last_t = t;
    bool failed = setup_failed.load() > 0;
    for (auto& r : results) failed = failed || r->verify_failed || r->errors > 0;
    if (failed) break;
  }
  stop = true;
  for (auto& t : threads) t.join();
  const double secs = now_s() - t0, cpu = cpu_seconds() - cpu0;
  for (auto& r : results)
    if (!r->message.empty() && !r->verify_failed) {
      std::fprintf(stderr, "vcp bench: %s\n", r->message.c_str());
      return 1;
    }
  const Totals t = add_up(results);
  report(a, t, secs, cpu, cfgs[0].bs);
  return t.errors || t.verify_failed ? 1 : 0;
}

int run_bench(const BenchArgs& a) {
  bench::Pattern pattern;
  if (!bench::parse_pattern(a.rw, &pattern)) {
    std::fprintf(stderr, "vcp bench: --rw must be read, write, randread, randwrite or randrw\n");
    return 2;
  }
  auto bs = parse_size(a.bs);
  if (!bs || *bs < 512 || *bs > (64u << 20) || *bs % 512) {
    std::fprintf(stderr, "vcp bench: --bs must be a multiple of 512 up to 64M\n");
    return 2;
  }
  client::ClientOptions co;
  if (!client::parse_poll_mode(a.poll, &co.poll)) {
    std::fprintf(stderr, "vcp bench: --poll must be always, adaptive or never\n");
    return 2;
  }
  std::vector<int> cpus;
  if (!a.cpus.empty()) {
    auto c = parse_cpu_list(a.cpus);
    if (!c) {
      std::fprintf(stderr, "vcp bench: bad --cpu '%s'\n", a.cpus.c_str());
      return 2;
    }
    cpus = *c;
  }
  if (a.qd == 0 || a.qd > 1024 || a.jobs == 0 || a.jobs > 64 || a.time_s <= 0 || a.batch == 0 || a.batch > a.qd) {
    std::fprintf(stderr, "vcp bench: --qd 1..1024, --batch 1..qd, --jobs 1..64, --time > 0\n");
    return 2;
  }
  if (a.socket.empty() == a.backend.empty()) {
    std::fprintf(stderr, "vcp bench: give either --socket or --backend\n");
    return 2;
  }
  std::unique_ptr<Engine> engine_ptr;
  std::string why;
  if (!a.backend.empty()) {
    engine_ptr = bench::make_backend_engine(a.backend, co.poll, co.spin_us, a.jobs, &why);
    if (!engine_ptr) {
      std::fprintf(stderr, "vcp bench: bad --backend '%s': %s\n", a.backend.c_str(), why.c_str());
      return 1;
    }
  } else {
    co.num_queues = static_cast<uint16_t>(a.jobs);
    co.queue_size = queue_size_for(a.qd);
    co.buffer_bytes = size_t{a.jobs} * a.qd * *bs + (1u << 20);
    std::unique_ptr<client::Client> c;
    if (int rc = client::Client::connect(a.socket, co, &c, &why); rc < 0) {
      std::fprintf(stderr, "vcp bench: %s\n", why.c_str());
      return 1;
    }
    engine_ptr = std::make_unique<ChannelEngine>(std::move(c));
  }
  Engine& engine = *engine_ptr;
  if (*bs % engine.block_size()) {
    std::fprintf(stderr, "vcp bench: --bs must be a multiple of the device's block size %u\n", engine.block_size());
    return 2;
  }
  uint64_t size = engine.capacity();
  if (!a.size.empty()) {
    auto s = parse_size(a.size);
    if (!s || *s == 0) {
      std::fprintf(stderr, "vcp bench: bad --size\n");
      return 2;
    }
    size = std::min(size, *s);
  }
  std::vector<bench::JobConfig> cfgs(a.jobs);
  const uint64_t per_job = size / a.jobs / *bs * *bs;
  for (unsigned j = 0; j < a.jobs; ++j) {
    auto& cfg = cfgs[j];
    cfg.pattern = pattern;
    cfg.bs = static_cast<uint32_t>(*bs);
    cfg.qd = a.qd;
    cfg.batch = a.batch;
    cfg.region_start = per_job * j;
    cfg.region_len = per_job;
    cfg.verify = a.verify;
    cfg.read_percent = a.read_percent;
    cfg.seed = 0x5eed0000 + j * 7919 + static_cast<uint64_t>(time(nullptr));
    cfg.cpu = cpus.empty() ? -1 : cpus[j % cpus.size()];
  }
  if (!a.json)
    std::printf("vcp bench: %s, %s bs=%" PRIu64 " qd=%u jobs=%u over %" PRIu64 " MiB for %.0f s, poll %s%s\n",
                a.socket.empty() ? a.backend.c_str() : a.socket.c_str(), a.rw.c_str(), *bs, a.qd, a.jobs, size >> 20, a.time_s, a.poll.c_str(),
                a.verify ? ", verify" : "");
  return run_load(engine, a, cfgs);
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand("bench", "Drive a vhost-user-blk device (or a backend in-process) with a fio-like load");
  auto* socket = sub->add_option("--socket", a->socket, "vhost-user socket of the device");
  sub->add_option("--backend", a->backend, "a backend spec (as for vcp serve), driven in this process")
      ->excludes(socket);
  sub->add_option("--rw", a->rw, "read | write | randread | randwrite | randrw");
  sub->add_option("--bs", a->bs, "block size per request (4k, 64k ...)");
  sub->add_option("--qd", a->qd, "requests in flight per job");
  sub->add_option("--batch", a->batch,
                  "completions to reap before issuing more (default 1; as fio's iodepth_batch_complete_min)");
  sub->add_option("--jobs", a->jobs, "job threads, one queue each");
  sub->add_option("--time", a->time_s, "seconds to run");
  sub->add_option("--size", a->size, "bytes of the device to use (default: all)");
  sub->add_option("--rwmixread", a->read_percent, "randrw: percent of reads")->check(CLI::Range(0, 100));
  sub->add_flag("--verify", a->verify, "stamp written blocks with LBA and generation, check every read");
  sub->add_flag("--json", a->json, "print the result as one JSON object");
  sub->add_option("--cpu", a->cpus, "CPUs for the job threads (job i on the i-th)");
  sub->add_option("--poll", a->poll, "always | adaptive | never");
  return [a] { return run_bench(*a); };
}

}  // namespace vcp::tools

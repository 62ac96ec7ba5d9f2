// The channel measured end to end: libvcp on one CPU, a vhost-user-blk back-end process on
// another, null requests (512-byte reads of a device that moves no data).
//  - ChannelRoundTrip/polling: qd 1, `vcp serve --poll always` and the client polling always;
//  - ChannelRoundTrip/interrupts: qd 1, both sides sleeping on eventfds (--poll never);
//  - ChannelBatch128/vcp: batches of 128 against `vcp serve --backend null --poll always`;
//  - ChannelBatch128/qsd: the same client against qemu-storage-daemon's null-co node exported
//    over vhost-user-blk (its defaults), so the back-end is the only difference.
// CPUs: the client on CPU 0, the back-end process on CPU 1 (VCP_BENCH_CPUS="client,server").
// Counters: server_cpu_ns_per_op and ops_per_server_cpu_s come from /proc/<pid>/stat (utime +
// stime of the whole server process); client_cpu_ns_per_op from getrusage(RUSAGE_THREAD).
#include <benchmark/benchmark.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/cpu.hpp"
#include "vcp/client.hpp"

namespace {

using vcp::client::Client;
using vcp::client::ClientOptions;
using vcp::client::Completion;

std::pair<int, int> bench_cpus() {
  if (const char* e = std::getenv("VCP_BENCH_CPUS")) {
    std::string s(e);
    auto comma = s.find(',');
    if (comma != std::string::npos) return {std::atoi(s.c_str()), std::atoi(s.c_str() + comma + 1)};
  }
  return {0, 1};  // client, server
}

// A back-end process pinned to the server CPU, serving on a socket in a temporary folder.
class Server {
 public:
  Server(const std::vector<std::string>& argv_template, int cpu) {
    char d[] = "/tmp/vcp-bench-XXXXXX";
    dir_ = mkdtemp(d) ? d : "/tmp";
    socket = dir_ + "/sock";
    std::vector<std::string> args;
    for (const auto& a : argv_template) {
      std::string s = a;
      for (size_t p; (p = s.find("@SOCK@")) != std::string::npos;) s.replace(p, 6, socket);
      args.push_back(s);
    }
    pid_ = fork();
    if (pid_ == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof(set), &set);
      std::vector<char*> av;
      for (auto& a : args) av.push_back(a.data());
      av.push_back(nullptr);
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execvp(av[0], av.data());
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      struct stat st {};
      if (stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return;
      usleep(20000);
    }
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    unlink(socket.c_str());
    rmdir(dir_.c_str());
  }
  // utime + stime of the whole process, seconds.
  double cpu_seconds() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
    std::string line;
    std::getline(f, line);
    const auto rp = line.rfind(')');
    if (rp == std::string::npos) return 0;
    std::vector<std::string> fields;
    std::string tok;
    for (size_t i = rp + 2; i <= line.size(); ++i) {
      if (i == line.size() || line[i] == ' ') {
        fields.push_back(tok);
        tok.clear();
      } else {
        tok += line[i];
      }
    }
    // Fields after the command: state is [0]; utime is field 14 of the whole line, i.e. [11].
    if (fields.size() < 13) return 0;
    return double(std::stoull(fields[11]) + std::stoull(fields[12])) / double(sysconf(_SC_CLK_TCK));
  }
  bool up() const { return pid_ > 0 && kill(pid_, 0) == 0; }

  std::string socket;

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

double thread_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

std::unique_ptr<Server> start_vcp(const char* poll) {
  return std::make_unique<Server>(std::vector<std::string>{VCP_BIN_PATH, "serve", "--socket", "@SOCK@", "--backend",
                                                           "null:size=1G", "--poll", poll},
                                  bench_cpus().second);
}

std::unique_ptr<Server> start_qsd() {
  return std::make_unique<Server>(
      std::vector<std::string>{"qemu-storage-daemon", "--blockdev", "driver=null-co,node-name=n0,size=1073741824",
                               "--export",
                               "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=@SOCK@,writable=on"},
      bench_cpus().second);
}

// Connects, runs `body` on a client pinned to the client CPU, and records the CPU both sides
// used per operation.
template <class Body>
void run_against(benchmark::State& state, Server& server, vcp::client::PollMode mode, Body body) {
  vcp::pin_current_thread(bench_cpus().first);
  if (!server.up()) {
    state.SkipWithError("the server did not start");
    return;
  }
  ClientOptions co;
  co.poll = mode;
  co.queue_size = 256;
  co.buffer_bytes = 1 << 20;
  std::unique_ptr<Client> client;
  std::string why;
  if (Client::connect(server.socket, co, &client, &why) < 0) {
    state.SkipWithError(why.c_str());
    return;
  }
  auto* buf = static_cast<uint8_t*>(client->alloc(128 * 512));
  const double s0 = server.cpu_seconds(), c0 = thread_cpu_seconds();
  uint64_t ops = 0;
  for (auto _ : state) {
    const int n = body(client->queue(0), buf);
    if (n < 0) {
      state.SkipWithError("request failed");
      break;
    }
    ops += static_cast<uint64_t>(n);
  }
  const double server_cpu = server.cpu_seconds() - s0, client_cpu = thread_cpu_seconds() - c0;
  state.SetItemsProcessed(static_cast<int64_t>(ops));
  state.counters["server_cpu_s"] = server_cpu;
  state.counters["server_cpu_ns_per_op"] = ops ? server_cpu * 1e9 / double(ops) : 0;
  state.counters["ops_per_server_cpu_s"] = server_cpu > 0 ? double(ops) / server_cpu : 0;
  state.counters["client_cpu_ns_per_op"] = ops ? client_cpu * 1e9 / double(ops) : 0;
  client.reset();
}

int one_round_trip(vcp::client::Queue& q, uint8_t* buf) {
  if (q.read(0, buf, 512, nullptr) != 0) return -1;
  Completion c;
  return q.wait(&c, 1, 1) == 1 && c.result == 0 ? 1 : -1;
}

int one_batch(vcp::client::Queue& q, uint8_t* buf) {
  for (unsigned i = 0; i < 128; ++i)
    if (q.read(uint64_t{i} * 512, buf + i * 512, 512, nullptr) != 0) return -1;
  Completion c[128];
  for (unsigned got = 0; got < 128;) {
    const int n = q.wait(c, 128, 128 - got);
    if (n <= 0) return -1;
    for (int k = 0; k < n; ++k)
      if (c[k].result != 0) return -1;
    got += static_cast<unsigned>(n);
  }
  return 128;
}

void ChannelRoundTrip_polling(benchmark::State& state) {
  auto server = start_vcp("always");
  run_against(state, *server, vcp::client::PollMode::always, one_round_trip);
}
BENCHMARK(ChannelRoundTrip_polling)->UseRealTime()->MinTime(2.0);

void ChannelRoundTrip_interrupts(benchmark::State& state) {
  auto server = start_vcp("never");
  run_against(state, *server, vcp::client::PollMode::never, one_round_trip);
}
BENCHMARK(ChannelRoundTrip_interrupts)->UseRealTime()->MinTime(2.0);

void ChannelBatch128_vcp(benchmark::State& state) {
  auto server = start_vcp("always");
  run_against(state, *server, vcp::client::PollMode::always, one_batch);
}
BENCHMARK(ChannelBatch128_vcp)->UseRealTime()->MinTime(2.0);

void ChannelBatch128_qsd(benchmark::State& state) {
  auto server = start_qsd();
  run_against(state, *server, vcp::client::PollMode::always, one_batch);
}
BENCHMARK(ChannelBatch128_qsd)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
